//! Versioned schema migrations (docs/storage.md), applied at start-up or by `migrate`.
//!
//! Every migration runs in its own transaction under an advisory lock, and is recorded in
//! `schema_migrations`, so running them again (or from two collectors at once) is a no-op.
//! The flavor (TimescaleDB or plain PostgreSQL) is chosen once, when the schema is first
//! created, and remembered in `tapwire_settings`.

use tokio_postgres::Client;

use super::{Flavor, StorageError};

/// Serializes migrations between collectors sharing one database.
const MIGRATION_LOCK: i64 = 0x7461_7077_6972_6501;

/// One schema version.
struct Migration {
    version: i32,
    name: &'static str,
    timescaledb: &'static str,
    postgres: &'static str,
}

const RR_PAIRS_COLUMNS: &str = r#"
    time            timestamptz NOT NULL,
    id              uuid        NOT NULL,
    is_inbound      boolean     NOT NULL,
    node            text        NOT NULL DEFAULT '',
    namespace       text        NOT NULL DEFAULT '',
    service         text        NOT NULL DEFAULT '',
    pod             text        NOT NULL DEFAULT '',
    container_id    text        NOT NULL DEFAULT '',
    pid             integer     NOT NULL,
    comm            text        NOT NULL,
    protocol        text        NOT NULL,
    method          text        NOT NULL,
    scheme          text        NOT NULL,
    authority       text        NOT NULL,
    path            text        NOT NULL,
    endpoint        text        NOT NULL,
    status          integer     NOT NULL,
    grpc_status     integer,
    is_error        boolean     NOT NULL,
    duration_ns     bigint      NOT NULL,
    request_size    bigint      NOT NULL,
    response_size   bigint      NOT NULL,
    local_addr      text        NOT NULL,
    remote_addr     text        NOT NULL,
    remote_service  text        NOT NULL DEFAULT '',
    tls             boolean     NOT NULL,
    complete        boolean     NOT NULL,
    truncated       boolean     NOT NULL,
    partial_headers boolean     NOT NULL,
    lost_events     boolean     NOT NULL,
    segment_key     text        NOT NULL,
    segment_offset  bigint      NOT NULL,
    segment_length  integer     NOT NULL,
    PRIMARY KEY (time, id)
"#;

const ROLLUP_COLUMNS: &str = r#"
    bucket          timestamptz NOT NULL,
    node            text        NOT NULL,
    namespace       text        NOT NULL,
    service         text        NOT NULL,
    remote_service  text        NOT NULL,
    protocol        text        NOT NULL,
    method          text        NOT NULL,
    endpoint        text        NOT NULL,
    is_inbound      boolean     NOT NULL,
    status_class    smallint    NOT NULL,
    grpc_error      boolean     NOT NULL,
    count           bigint      NOT NULL,
    errors          bigint      NOT NULL,
    duration_sum_ns bigint      NOT NULL,
    %LATENCY%
    PRIMARY KEY (bucket, node, namespace, service, remote_service, protocol, method,
                 endpoint, is_inbound, status_class, grpc_error)
"#;

const COMMON_OBJECTS: &str = r#"
CREATE INDEX rr_pairs_service_time ON rr_pairs (service, time DESC);
CREATE INDEX rr_pairs_direction_time ON rr_pairs (is_inbound, time DESC);
CREATE INDEX rr_pairs_id ON rr_pairs (id);
-- Element-wise sum of two dense latency histograms (version 1; version 2 makes them sparse).
CREATE FUNCTION tapwire_hist_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i)
    FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i)
$$;
"#;

fn migrations() -> Vec<Migration> {
    vec![
        Migration {
            version: 1,
            name: "rr_pairs and rr_rollup_1m",
            timescaledb: concat!(
                "CREATE EXTENSION IF NOT EXISTS timescaledb;\n",
                "CREATE TABLE rr_pairs (%PAIRS%);\n",
                // No default `time` index: the primary key (time, id) already serves it.
                "SELECT create_hypertable('rr_pairs', by_range('time', INTERVAL '1 hour'), ",
                "create_default_indexes => false);\n",
                "CREATE TABLE rr_rollup_1m (%ROLLUP%);\n",
                "SELECT create_hypertable('rr_rollup_1m', by_range('bucket', INTERVAL '1 day'), ",
                "create_default_indexes => false);\n",
                "%COMMON%"
            ),
            postgres: concat!(
                "CREATE TABLE rr_pairs (%PAIRS%) PARTITION BY RANGE (time);\n",
                "CREATE TABLE rr_rollup_1m (%ROLLUP%) PARTITION BY RANGE (bucket);\n",
                // Same origin as TimescaleDB's time_bucket, so buckets agree on both flavors.
                "CREATE FUNCTION time_bucket(bucket_width interval, ts timestamptz) ",
                "RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE AS ",
                "$$ SELECT date_bin(bucket_width, ts, TIMESTAMPTZ '2000-01-03 00:00:00+00') $$;\n",
                "%COMMON%"
            ),
        },
        // Charts over days read an hour's aggregates instead of sixty minutes' worth, and
        // histograms keep only their non-empty buckets: most rows fill a few of the 160.
        Migration {
            version: 2,
            name: "sparse latency histograms; rr_rollup_1h",
            timescaledb: concat!(
                "%SPARSE_1M%",
                "CREATE TABLE rr_rollup_1h (%ROLLUP_V2%);\n",
                "SELECT create_hypertable('rr_rollup_1h', by_range('bucket', INTERVAL '7 days'), ",
                "create_default_indexes => false);\n",
                "%BACKFILL_1H%"
            ),
            postgres: concat!(
                "%SPARSE_1M%",
                "CREATE TABLE rr_rollup_1h (%ROLLUP_V2%) PARTITION BY RANGE (bucket);\n",
                "%PARTITIONS_1H%",
                "%BACKFILL_1H%"
            ),
        },
    ]
}

/// Version 2's histogram: `latency_buckets`, the non-empty buckets of the dense
/// `latency_hist` as `bucket << 48 | count` entries in bucket order (docs/storage.md).
const LATENCY_V1: &str = "latency_hist    bigint[]    NOT NULL,";
const LATENCY_V2: &str = "latency_buckets bigint[]    NOT NULL,";

/// Converts `rr_rollup_1m` to sparse histograms and redefines the histogram sum for them.
const SPARSE_1M: &str = r#"
ALTER TABLE rr_rollup_1m ADD COLUMN latency_buckets bigint[];
UPDATE rr_rollup_1m SET latency_buckets = (
    SELECT coalesce(array_agg(((i - 1) << 48) | h ORDER BY i), '{}')
    FROM unnest(latency_hist) WITH ORDINALITY AS u(h, i) WHERE h > 0);
ALTER TABLE rr_rollup_1m DROP COLUMN latency_hist;
ALTER TABLE rr_rollup_1m ALTER COLUMN latency_buckets SET NOT NULL;
DROP FUNCTION tapwire_hist_add(bigint[], bigint[]);
-- The sum of two sparse histograms (NULL counts as empty), for rollup upserts.
CREATE FUNCTION tapwire_hist_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg((k << 48) | c ORDER BY k), '{}')
    FROM (SELECT e >> 48 AS k, sum(e & 281474976710655)::bigint AS c
          FROM unnest(coalesce(a, '{}') || coalesce(b, '{}')) AS e GROUP BY 1) AS g
$$;
CREATE AGGREGATE tapwire_hist_sum(bigint[]) (SFUNC = tapwire_hist_add, STYPE = bigint[]);
"#;

/// Builds `rr_rollup_1h` from the minutes already stored, so a schema upgraded in place
/// answers long ranges as before.
const BACKFILL_1H: &str = r#"
INSERT INTO rr_rollup_1h (bucket, node, namespace, service, remote_service, protocol, method,
    endpoint, is_inbound, status_class, grpc_error, count, errors, duration_sum_ns,
    latency_buckets)
SELECT time_bucket(INTERVAL '1 hour', bucket), node, namespace, service, remote_service,
    protocol, method, endpoint, is_inbound, status_class, grpc_error, sum(count)::bigint,
    sum(errors)::bigint, sum(duration_sum_ns)::bigint, tapwire_hist_sum(latency_buckets)
FROM rr_rollup_1m
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11;
"#;

/// On plain PostgreSQL, the daily partitions the backfill needs (the partition manager
/// makes the later ones).
const PARTITIONS_1H: &str = r#"
DO $$
DECLARE d date;
BEGIN
    FOR d IN SELECT DISTINCT (bucket AT TIME ZONE 'UTC')::date FROM rr_rollup_1m LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF rr_rollup_1h FOR VALUES FROM (%L) TO (%L)',
            'rr_rollup_1h_p' || to_char(d, 'YYYYMMDD'), d::text || ' 00:00:00+00',
            (d + 1)::text || ' 00:00:00+00');
    END LOOP;
END $$;
"#;

fn render(template: &str) -> String {
    template
        .replace("%PAIRS%", RR_PAIRS_COLUMNS)
        .replace("%ROLLUP%", &ROLLUP_COLUMNS.replace("%LATENCY%", LATENCY_V1))
        .replace(
            "%ROLLUP_V2%",
            &ROLLUP_COLUMNS.replace("%LATENCY%", LATENCY_V2),
        )
        .replace("%SPARSE_1M%", SPARSE_1M)
        .replace("%COMMON%", COMMON_OBJECTS)
        .replace("%BACKFILL_1H%", BACKFILL_1H)
        .replace("%PARTITIONS_1H%", PARTITIONS_1H)
}

fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StorageError {
    move |source| StorageError::Database { context, source }
}

/// Applies every pending migration and returns the schema's flavor.
pub async fn migrate(client: &mut Client) -> Result<Flavor, StorageError> {
    migrate_to(client, i32::MAX).await
}

/// Applies the pending migrations up to version `last` (to test upgrades from an older
/// schema) and returns the schema's flavor.
pub async fn migrate_to(client: &mut Client, last: i32) -> Result<Flavor, StorageError> {
    let tx = client.transaction().await.map_err(db("begin migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db("take the migration lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE IF NOT EXISTS tapwire_settings (key text PRIMARY KEY, value text NOT NULL);",
    )
    .await
    .map_err(db("create schema_migrations"))?;

    let flavor = match tx
        .query_opt(
            "SELECT value FROM tapwire_settings WHERE key = 'flavor'",
            &[],
        )
        .await
        .map_err(db("read the schema flavor"))?
    {
        Some(row) => match row.get::<_, &str>(0) {
            "timescaledb" => Flavor::TimescaleDb,
            _ => Flavor::Postgres,
        },
        None => {
            let flavor = detect_flavor(&tx).await?;
            let name = match flavor {
                Flavor::TimescaleDb => "timescaledb",
                Flavor::Postgres => "postgres",
            };
            tx.execute(
                "INSERT INTO tapwire_settings (key, value) VALUES ('flavor', $1)",
                &[&name],
            )
            .await
            .map_err(db("record the schema flavor"))?;
            flavor
        }
    };

    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .map_err(db("read applied migrations"))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for migration in migrations() {
        if applied.contains(&migration.version) || migration.version > last {
            continue;
        }
        let sql = render(match flavor {
            Flavor::TimescaleDb => migration.timescaledb,
            Flavor::Postgres => migration.postgres,
        });
        tx.batch_execute(&sql)
            .await
            .map_err(db("apply a schema migration"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await
        .map_err(db("record a schema migration"))?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            ?flavor,
            "applied migration"
        );
    }
    tx.commit().await.map_err(db("commit migrations"))?;
    Ok(flavor)
}

/// TimescaleDB is used when the server can load it (installed and preloaded).
async fn detect_flavor(tx: &tokio_postgres::Transaction<'_>) -> Result<Flavor, StorageError> {
    let row = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
                    AND current_setting('shared_preload_libraries') LIKE '%timescaledb%'",
            &[],
        )
        .await
        .map_err(db("detect TimescaleDB"))?;
    Ok(if row.get::<_, bool>(0) {
        Flavor::TimescaleDb
    } else {
        Flavor::Postgres
    })
}

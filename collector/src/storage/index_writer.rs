//! Writes a batch's index rows and their rollups in one transaction.
//!
//! A fresh batch goes by binary COPY straight into `rr_pairs`. When that hits the primary
//! key (a resend), the rows go by binary COPY into a session-local staging table instead,
//! and `INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING id` moves them over: a resent
//! pair conflicts on `(time, id)` and is not returned, so the rollups, updated from the
//! new rows only, never count a pair twice.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::pin_mut;
use tokio_postgres::{binary_copy::BinaryCopyInWriter, error::SqlState, types::Type};
use uuid::Uuid;

use super::{StorageError, histogram, index_row::IndexRow};

/// The `rr_pairs` columns written at ingest, in COPY order.
pub(crate) const COLUMNS: &str = "time, id, is_inbound, node, namespace, service, pod, container_id, pid, \
    comm, protocol, method, scheme, authority, path, endpoint, status, grpc_status, is_error, \
    duration_ns, request_size, response_size, local_addr, remote_addr, remote_service, tls, \
    complete, truncated, partial_headers, lost_events, segment_key, segment_offset, segment_length";

/// The COPY types of [`COLUMNS`].
pub(crate) const TYPES: [Type; 33] = [
    Type::TIMESTAMPTZ,
    Type::UUID,
    Type::BOOL,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT4,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT4,
    Type::INT4,
    Type::BOOL,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::BOOL,
    Type::BOOL,
    Type::BOOL,
    Type::BOOL,
    Type::BOOL,
    Type::TEXT,
    Type::INT8,
    Type::INT4,
];

/// A rollup table and the width of its buckets.
#[derive(Debug, Clone, Copy)]
struct Rollup {
    table: &'static str,
    width_secs: i64,
}

/// Per-minute aggregates: charts over hours, and every filter the rollups keep.
const ROLLUP_1M: Rollup = Rollup {
    table: "rr_rollup_1m",
    width_secs: 60,
};
/// Per-hour aggregates: charts over days.
const ROLLUP_1H: Rollup = Rollup {
    table: "rr_rollup_1h",
    width_secs: 3600,
};

impl Rollup {
    /// The upsert of a batch's aggregates, one row per array element, ordered like the
    /// keys so concurrent batches take row locks in the same order.
    fn upsert_sql(&self) -> String {
        let t = self.table;
        format!(
            "INSERT INTO {t} (bucket, node, namespace, service, remote_service, protocol, method,
    endpoint, is_inbound, status_class, grpc_error, count, errors, duration_sum_ns,
    latency_buckets)
SELECT u.bucket, u.node, u.namespace, u.service, u.remote_service, u.protocol, u.method,
    u.endpoint, u.is_inbound, u.status_class, u.grpc_error, u.count, u.errors, u.duration_sum_ns,
    ($15::bigint[])[u.first_entry : u.last_entry]
FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::text[], $8::text[], $9::bool[], $10::int2[], $11::bool[], $12::int8[], $13::int8[],
    $14::int8[], $16::int4[], $17::int4[])
    WITH ORDINALITY AS u(bucket, node, namespace, service, remote_service, protocol, method,
        endpoint, is_inbound, status_class, grpc_error, count, errors, duration_sum_ns,
        first_entry, last_entry, ord)
ORDER BY u.ord
ON CONFLICT (bucket, node, namespace, service, remote_service, protocol, method, endpoint,
    is_inbound, status_class, grpc_error) DO UPDATE SET
    count = {t}.count + EXCLUDED.count,
    errors = {t}.errors + EXCLUDED.errors,
    duration_sum_ns = {t}.duration_sum_ns + EXCLUDED.duration_sum_ns,
    latency_buckets = tapwire_hist_add({t}.latency_buckets, EXCLUDED.latency_buckets)"
        )
    }
}

fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StorageError {
    move |source| StorageError::Database { context, source }
}

/// The dimensions of one rollup row; ordered so concurrent batches lock rollup rows in the
/// same order and cannot deadlock.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RollupKey {
    /// The bucket's start, Unix seconds.
    bucket: i64,
    node: String,
    namespace: String,
    service: String,
    remote_service: String,
    protocol: String,
    method: String,
    endpoint: String,
    is_inbound: bool,
    status_class: i16,
    grpc_error: bool,
}

#[derive(Debug, Clone)]
struct RollupValue {
    count: i64,
    errors: i64,
    duration_sum_ns: i64,
    hist: Vec<i64>,
}

/// Inserts the rows, skipping those already stored, updates the rollups for the new ones,
/// and commits; returns the indexes (into `rows`) of the rows newly stored.
pub async fn insert_rows(
    client: &mut deadpool_postgres::Client,
    rows: &[IndexRow],
) -> Result<Vec<usize>, StorageError> {
    let mut tx = client.transaction().await.map_err(db("begin batch"))?;
    let new_rows = if copy_fresh(&mut tx, rows).await? {
        (0..rows.len()).collect()
    } else {
        insert_deduplicated(&tx, rows).await?
    };
    upsert_rollups(&tx, rows, &new_rows).await?;
    tx.commit().await.map_err(db("commit batch"))?;
    Ok(new_rows)
}

/// The fast path for the common case, a batch never seen before: COPY straight into
/// `rr_pairs` inside a savepoint. A resent (or repeated) pair violates the primary key;
/// then the savepoint is rolled back and the batch takes the deduplicating path.
async fn copy_fresh(
    tx: &mut deadpool_postgres::Transaction<'_>,
    rows: &[IndexRow],
) -> Result<bool, StorageError> {
    let savepoint = tx
        .savepoint("tapwire_fresh_rows")
        .await
        .map_err(db("create a savepoint"))?;
    let sink = savepoint
        .copy_in(&format!(
            "COPY rr_pairs ({COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await
        .map_err(db("start COPY"))?;
    match copy_rows(sink, rows).await {
        Ok(()) => {
            savepoint
                .commit()
                .await
                .map_err(db("release the savepoint"))?;
            Ok(true)
        }
        Err(StorageError::Database { source, .. })
            if source.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
        {
            savepoint
                .rollback()
                .await
                .map_err(db("roll back to the savepoint"))?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Staging COPY, then `INSERT … ON CONFLICT DO NOTHING RETURNING id`: returns the indexes
/// of the rows that were not stored before.
async fn insert_deduplicated(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[IndexRow],
) -> Result<Vec<usize>, StorageError> {
    tx.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS rr_pairs_stage (LIKE rr_pairs INCLUDING DEFAULTS) \
         ON COMMIT DELETE ROWS",
    )
    .await
    .map_err(db("create the staging table"))?;
    let sink = tx
        .copy_in(&format!(
            "COPY rr_pairs_stage ({COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await
        .map_err(db("start COPY"))?;
    copy_rows(sink, rows).await?;
    let inserted = tx
        .query(
            &format!(
                "INSERT INTO rr_pairs ({COLUMNS}) SELECT {COLUMNS} FROM rr_pairs_stage \
                 ON CONFLICT DO NOTHING RETURNING id"
            ),
            &[],
        )
        .await
        .map_err(db("insert index rows"))?;
    let mut by_id: HashMap<Uuid, usize> = HashMap::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        by_id.entry(r.id).or_insert(i);
    }
    let mut new_rows: Vec<usize> = inserted
        .iter()
        .filter_map(|row| by_id.get(&row.get::<_, Uuid>(0)).copied())
        .collect();
    new_rows.sort_unstable();
    new_rows.dedup();
    Ok(new_rows)
}

/// Streams `rows` into an open binary `COPY … FROM STDIN` of [`COLUMNS`].
pub(crate) async fn copy_rows(
    sink: tokio_postgres::CopyInSink<bytes::Bytes>,
    rows: &[IndexRow],
) -> Result<(), StorageError> {
    let writer = BinaryCopyInWriter::new(sink, &TYPES);
    pin_mut!(writer);
    for r in rows {
        let offset = i64::try_from(r.location.offset).unwrap_or(i64::MAX);
        let length = i32::try_from(r.location.length).unwrap_or(i32::MAX);
        writer
            .as_mut()
            .write(&[
                &r.time,
                &r.id,
                &r.is_inbound,
                &r.node,
                &r.namespace,
                &r.service,
                &r.pod,
                &r.container_id,
                &r.pid,
                &r.comm,
                &r.protocol,
                &r.method,
                &r.scheme,
                &r.authority,
                &r.path,
                &r.endpoint,
                &r.status,
                &r.grpc_status,
                &r.is_error,
                &r.duration_ns,
                &r.request_size,
                &r.response_size,
                &r.local_addr,
                &r.remote_addr,
                &r.remote_service,
                &r.tls,
                &r.complete,
                &r.truncated,
                &r.partial_headers,
                &r.lost_events,
                &r.location.key,
                &offset,
                &length,
            ])
            .await
            .map_err(db("COPY a row"))?;
    }
    writer.finish().await.map_err(db("finish COPY"))?;
    Ok(())
}

async fn upsert_rollups(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[IndexRow],
    new_rows: &[usize],
) -> Result<(), StorageError> {
    let mut groups: BTreeMap<RollupKey, RollupValue> = BTreeMap::new();
    for &i in new_rows {
        let r = &rows[i];
        let key = RollupKey {
            bucket: r.time_secs - r.time_secs.rem_euclid(ROLLUP_1M.width_secs),
            node: r.node.clone(),
            namespace: r.namespace.clone(),
            service: r.service.clone(),
            remote_service: r.remote_service.clone(),
            protocol: r.protocol.clone(),
            method: r.method.clone(),
            endpoint: r.endpoint.clone(),
            is_inbound: r.is_inbound,
            status_class: i16::try_from(r.status / 100).unwrap_or(i16::MAX),
            grpc_error: r.grpc_status.is_some_and(|g| g != 0),
        };
        let value = groups.entry(key).or_insert_with(|| RollupValue {
            count: 0,
            errors: 0,
            duration_sum_ns: 0,
            hist: vec![0; histogram::BUCKETS],
        });
        value.count += 1;
        value.errors += i64::from(r.is_error);
        value.duration_sum_ns = value.duration_sum_ns.saturating_add(r.duration_ns);
        value.hist[histogram::bucket_of(r.duration_ns)] += 1;
    }
    if groups.is_empty() {
        return Ok(());
    }
    let mut hours: BTreeMap<RollupKey, RollupValue> = BTreeMap::new();
    for (key, value) in &groups {
        let hour = RollupKey {
            bucket: key.bucket - key.bucket.rem_euclid(ROLLUP_1H.width_secs),
            ..key.clone()
        };
        match hours.get_mut(&hour) {
            Some(sum) => sum.add(value),
            None => {
                hours.insert(hour, value.clone());
            }
        }
    }
    // Minutes before hours in every transaction, so no two batches wait on each other.
    upsert(tx, ROLLUP_1M, &groups).await?;
    upsert(tx, ROLLUP_1H, &hours).await
}

impl RollupValue {
    fn add(&mut self, other: &RollupValue) {
        self.count += other.count;
        self.errors += other.errors;
        self.duration_sum_ns = self.duration_sum_ns.saturating_add(other.duration_sum_ns);
        for (a, b) in self.hist.iter_mut().zip(&other.hist) {
            *a += b;
        }
    }
}

/// Upserts one rollup table's rows for a batch.
async fn upsert(
    tx: &deadpool_postgres::Transaction<'_>,
    rollup: Rollup,
    groups: &BTreeMap<RollupKey, RollupValue>,
) -> Result<(), StorageError> {
    let n = groups.len();
    let mut buckets = Vec::with_capacity(n);
    let mut text_cols: [Vec<&str>; 7] = Default::default();
    let (mut inbound, mut class, mut grpc_error) = (Vec::new(), Vec::new(), Vec::new());
    let (mut count, mut errors, mut sums) = (Vec::new(), Vec::new(), Vec::new());
    // Every group's histogram entries back to back; each row slices out its own
    // (1-based, inclusive bounds, as SQL array slices take them).
    let mut entries: Vec<i64> = Vec::with_capacity(n * 8);
    let (mut first, mut last) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (k, v) in groups {
        buckets.push(UNIX_EPOCH + Duration::from_secs(k.bucket.unsigned_abs()));
        for (col, value) in text_cols.iter_mut().zip([
            &k.node,
            &k.namespace,
            &k.service,
            &k.remote_service,
            &k.protocol,
            &k.method,
            &k.endpoint,
        ]) {
            col.push(value.as_str());
        }
        inbound.push(k.is_inbound);
        class.push(k.status_class);
        grpc_error.push(k.grpc_error);
        count.push(v.count);
        errors.push(v.errors);
        sums.push(v.duration_sum_ns);
        first.push(entries.len() as i32 + 1);
        entries.extend(
            v.hist
                .iter()
                .enumerate()
                .filter(|&(_, &c)| c > 0)
                .map(|(b, &c)| histogram::sparse_entry(b, c)),
        );
        last.push(entries.len() as i32);
    }
    let buckets: Vec<SystemTime> = buckets;
    let statement = tx
        .prepare_cached(&rollup.upsert_sql())
        .await
        .map_err(db("prepare the rollup upsert"))?;
    let [
        nodes,
        namespaces,
        services,
        remotes,
        protocols,
        methods,
        endpoints,
    ] = &text_cols;
    tx.execute(
        &statement,
        &[
            &buckets,
            nodes,
            namespaces,
            services,
            remotes,
            protocols,
            methods,
            endpoints,
            &inbound,
            &class,
            &grpc_error,
            &count,
            &errors,
            &sums,
            &entries,
            &first,
            &last,
        ],
    )
    .await
    .map_err(db("upsert rollups"))?;
    Ok(())
}

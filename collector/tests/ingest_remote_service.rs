//! `remote_service` is computed at ingest: an outbound pair names the observed service
//! listening at its remote address (learned from inbound pairs), else its authority's host,
//! else its remote address; an inbound pair names the observed client calling from its
//! remote address, else nothing. Learned within a batch, across batches, and, after a
//! restart, from the stored rows. Real pairs through the real collector and TimescaleDB.

mod ingest_harness;

use std::time::{Duration, SystemTime};

use ingest_harness::{Backend, Collector, CollectorOptions, TestDatabase, TestResult, pairs, push};
use tapwire_proto::v1::Pair;

/// The server `orders` listens here; `frontend` calls it from `CLIENT`.
const SERVER: &str = "10.0.0.5:8080";
const CLIENT: &str = "10.0.0.9:51000";

/// Pair `i` with the given direction, service and addresses (and no agent-side
/// `remote_service`).
fn pair(
    i: u64,
    is_inbound: bool,
    service: &str,
    local: &str,
    remote: &str,
    authority: &str,
) -> Pair {
    let mut p = pairs::pair(i, SystemTime::now() - Duration::from_secs(60));
    p.is_inbound = is_inbound;
    p.service = service.into();
    p.local_addr = local.into();
    p.remote_addr = remote.into();
    p.authority = authority.into();
    p.remote_service = String::new();
    p
}

async fn remote_service_of(
    db: &tokio_postgres::Client,
    pair: &Pair,
) -> Result<String, ingest_harness::Error> {
    let id = uuid::Uuid::parse_str(&pair.id)?;
    Ok(db
        .query_one("SELECT remote_service FROM rr_pairs WHERE id = $1", &[&id])
        .await?
        .get(0))
}

async fn remote_service(backend: Backend) -> TestResult {
    if !ingest_harness::require(
        ingest_harness::backend_available(backend),
        &format!("{backend:?}"),
    ) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let database = TestDatabase::create(backend).await?;
    let mut collector = Collector::start(
        dir.path(),
        CollectorOptions {
            backend,
            database_url: database.url.clone(),
            extra_args: vec![],
            env: vec![],
        },
    )?;

    // One batch holding both ends of a call, the client's end first: the batch's inbound
    // pairs teach before its outbound ones are resolved.
    let client_end = pair(1, false, "frontend", CLIENT, SERVER, "orders.shop.svc:8080");
    let server_end = pair(2, true, "orders", SERVER, CLIENT, "orders.shop.svc:8080");
    // Nobody observed serves these: the authority's host, else the remote address.
    let external = pair(
        3,
        false,
        "frontend",
        CLIENT,
        "93.184.216.34:443",
        "API.Example.com.:443",
    );
    let no_authority = pair(4, false, "frontend", "10.0.0.9:51002", "10.9.9.9:6379", "");
    // A caller nobody observed: no remote service.
    let unknown_caller = pair(5, true, "orders", SERVER, "10.0.3.3:40000", "orders:8080");
    // What the agent already knew is kept.
    let mut from_agent = pair(6, false, "frontend", CLIENT, SERVER, "orders:8080");
    from_agent.remote_service = "payments".into();
    let first = vec![
        client_end.clone(),
        external.clone(),
        no_authority.clone(),
        unknown_caller.clone(),
        from_agent.clone(),
        server_end.clone(),
    ];
    // A later batch: another client of the same server, and a call from a caller seen
    // calling from that address in the first batch.
    let second_client = pair(
        7,
        false,
        "billing",
        "10.0.0.11:52000",
        SERVER,
        "10.0.0.5:8080",
    );
    let second_server = pair(8, true, "orders", SERVER, CLIENT, "");
    let second = vec![second_client.clone(), second_server.clone()];

    let mut client = collector.client().await?;
    let acks = push(
        &mut client,
        vec![pairs::batch(1, first), pairs::batch(2, second)],
    )
    .await?;
    assert_eq!(acks.iter().map(|a| a.stored).sum::<u32>(), 8);

    let db = collector.db().await?;
    for (pair, want) in [
        (&client_end, "orders"),
        (&server_end, "frontend"),
        (&external, "api.example.com"),
        (&no_authority, "10.9.9.9:6379"),
        (&unknown_caller, ""),
        (&from_agent, "payments"),
        (&second_client, "orders"),
        (&second_server, "frontend"),
    ] {
        assert_eq!(
            remote_service_of(&db, pair).await?,
            want,
            "remote_service of {} ({} → {})",
            pair.service,
            pair.local_addr,
            pair.remote_addr
        );
    }
    // The rollups group by it too: the Dependencies edge frontend → orders is there.
    let edge: i64 = db
        .query_one(
            "SELECT coalesce(sum(count), 0)::bigint FROM rr_rollup_1m \
             WHERE service = 'frontend' AND remote_service = 'orders' AND NOT is_inbound",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(edge, 1);
    drop(db);

    // After a restart the maps are empty: they are seeded from the stored rows.
    let status = collector.stop()?;
    assert!(status.success(), "collector exit: {status}");
    collector.restart()?;
    let after_client = pair(9, false, "search", "10.0.0.12:53000", SERVER, "orders:8080");
    let after_server = pair(10, true, "orders", SERVER, CLIENT, "orders:8080");
    let mut client = collector.client().await?;
    let acks = push(
        &mut client,
        vec![pairs::batch(
            3,
            vec![after_client.clone(), after_server.clone()],
        )],
    )
    .await?;
    assert_eq!(acks.iter().map(|a| a.stored).sum::<u32>(), 2);
    let db = collector.db().await?;
    assert_eq!(remote_service_of(&db, &after_client).await?, "orders");
    assert_eq!(remote_service_of(&db, &after_server).await?, "frontend");
    assert!(
        collector.log_text().contains("remote services seeded"),
        "{}",
        collector.log_text()
    );
    // GetPair shows the computed value too, not the agent's empty one in the payload.
    let channel = tonic::transport::Channel::from_shared(collector.endpoint())?
        .connect()
        .await?;
    let shown = tapwire_proto::v1::query_client::QueryClient::new(channel)
        .get_pair(tapwire_proto::v1::GetPairRequest {
            id: after_client.id.clone(),
            decode: false,
        })
        .await?
        .into_inner()
        .pair
        .ok_or("GetPair returned no pair")?;
    assert_eq!(shown.remote_service, "orders");

    drop(db);
    let status = collector.stop()?;
    assert!(status.success(), "collector exit: {status}");
    database.drop_database().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_service_timescaledb() -> TestResult {
    remote_service(Backend::TimescaleDb).await
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_service_postgres15() -> TestResult {
    remote_service(Backend::Postgres15).await
}

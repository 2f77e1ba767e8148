//! Delivery under faults, end to end: while clients make requests, the collector is
//! killed (SIGKILL) and restarted, the agent is restarted, or the collector's managed
//! database is killed (SIGKILL) and brought back by the collector. Afterwards every request
//! made while the agent was running is stored exactly once per side: nothing lost, nothing
//! doubled. Checked through the query API against the client's own list of requests.

mod support;

use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::json::{flag, text};
use support::{Scratch, postgres_root_args, preflight};
use tapwire_e2e::peers::{self, PythonHttpServer};
use tapwire_e2e::stack::{Agent, Cli, Collector};

/// The agent's flags that capture only connections to or from `port` (the test server's).
/// These tests are about delivery, not coverage: traffic of other processes on the
/// machine (a benchmark running next to the tests can fill the kernel ring) must not
/// decide whether the test's own pairs are captured.
fn only_port(port: &str) -> [&str; 2] {
    ["--include-port", port]
}

/// Makes requests `range` against `server`, each with its own path; returns the paths.
fn requests(server: &PythonHttpServer, tag: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range
        .map(|i| {
            let path = format!("/hello.txt?{tag}={i}");
            peers::curl(&[&format!("http://{}{path}", server.addr)]).expect("the request succeeds");
            std::thread::sleep(Duration::from_millis(20));
            path
        })
        .collect()
}

#[test]
fn collector_crash_and_agent_restart_lose_and_double_nothing() {
    let Some(bins) = preflight("faults") else {
        return;
    };
    let scratch = Scratch::new("faults");
    let dir = &scratch.dir;
    let root_args = postgres_root_args();
    let root_args: Vec<&str> = root_args.iter().map(String::as_str).collect();
    let mut collector = Collector::start(&bins, &dir.join("collector"), dir, &root_args).unwrap();
    let server = PythonHttpServer::start(&dir.join("http")).unwrap();
    let state = dir.join("agent");
    let port = server.addr.port().to_string();
    let only_server = only_port(&port);
    let mut agent = Agent::start(&bins, &collector.url(), &state, dir, &only_server).unwrap();
    let tag = format!("f{}", std::process::id());

    let mut sent = requests(&server, &tag, 0..40);
    // The collector crashes with batches in flight; the agent keeps capturing into its
    // spool and resends what was not acknowledged.
    collector.kill();
    sent.extend(requests(&server, &tag, 40..80));
    collector.restart().unwrap();
    sent.extend(requests(&server, &tag, 80..120));
    // The agent restarts: what it spooled but had not delivered is sent by the next one.
    assert!(agent.stop(), "the agent stops cleanly");
    drop(agent);
    let _agent = Agent::start(&bins, &collector.url(), &state, dir, &only_server).unwrap();
    sent.extend(requests(&server, &tag, 120..160));

    let cli = Cli::new(&bins, &collector.url()).unwrap();
    let args = [
        "pairs", "list", "--since", "10m", "--text", &tag, "--limit", "1000",
    ];
    let rows = cli
        .wait_for(&args, Duration::from_secs(60), |rows| {
            rows.len() >= 2 * sent.len()
        })
        .unwrap();
    assert_each_once_per_side(&rows, &sent);
}

/// Fails unless `rows` hold exactly one outbound and one inbound pair for each path of
/// `sent`, and nothing else.
fn assert_each_once_per_side(rows: &[Value], sent: &[String]) {
    let mut seen: HashMap<(String, bool), usize> = HashMap::new();
    for row in rows {
        *seen
            .entry((text(row, "path").to_string(), flag(row, "is_inbound")))
            .or_default() += 1;
    }
    let mut wrong = Vec::new();
    for path in sent {
        for inbound in [false, true] {
            let n = seen.get(&(path.clone(), inbound)).copied().unwrap_or(0);
            if n != 1 {
                // Which process and socket each stored row came from tells a doubled
                // resend (same id) from a mislabelled connection (another pid or port).
                let stored: Vec<String> = rows
                    .iter()
                    .filter(|r| text(r, "path") == path.as_str())
                    .map(|r| {
                        format!(
                            "{} inbound={} pid={} comm={} local={} remote={}",
                            text(r, "id"),
                            flag(r, "is_inbound"),
                            r["pid"],
                            text(r, "comm"),
                            text(r, "local_addr"),
                            text(r, "remote_addr"),
                        )
                    })
                    .collect();
                wrong.push(format!(
                    "{path} (inbound: {inbound}) stored {n} times; rows: {stored:?}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} requests not stored exactly once per side: {:#?}",
        wrong.len(),
        sent.len(),
        &wrong[..wrong.len().min(20)]
    );
    assert_eq!(
        rows.len(),
        2 * sent.len(),
        "nothing beyond the requests made"
    );
}

/// Clients making requests against a server from background threads, each request with
/// its own path, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    made: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    /// Starts `clients` threads, each running curl after curl against `server`.
    fn start(server: &PythonHttpServer, tag: &str, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let made = Arc::new(AtomicUsize::new(0));
        let threads = (0..clients)
            .map(|client| {
                let (stop, made) = (Arc::clone(&stop), Arc::clone(&made));
                let url = format!("http://{}/hello.txt?{tag}={client}-", server.addr);
                std::thread::spawn(move || {
                    let mut paths = Vec::new();
                    for i in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let full = format!("{url}{i}");
                        peers::curl(&[&full]).expect("the request succeeds");
                        let path = full
                            .split_once("/hello.txt")
                            .map(|(_, rest)| format!("/hello.txt{rest}"))
                            .expect("the URL has the path");
                        paths.push(path);
                        made.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    paths
                })
            })
            .collect();
        Self {
            stop,
            made,
            threads,
        }
    }

    /// Requests completed so far.
    fn made(&self) -> usize {
        self.made.load(Ordering::Relaxed)
    }

    /// Stops the clients; returns every request's path.
    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .flat_map(|t| t.join().expect("a client thread panicked"))
            .collect()
    }
}

/// True when a process `pid` exists.
fn alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn database_killed_during_load_loses_and_doubles_nothing() {
    let Some(bins) = preflight("faults-database") else {
        return;
    };
    let scratch = Scratch::new("faults-database");
    let dir = &scratch.dir;
    let root_args = postgres_root_args();
    let root_args: Vec<&str> = root_args.iter().map(String::as_str).collect();
    let collector = Collector::start(&bins, &dir.join("collector"), dir, &root_args).unwrap();
    let server = PythonHttpServer::start(&dir.join("http")).unwrap();
    let port = server.addr.port().to_string();
    let mut agent = Agent::start(
        &bins,
        &collector.url(),
        &dir.join("agent"),
        dir,
        &only_port(&port),
    )
    .unwrap();
    let cli = Cli::new(&bins, &collector.url()).unwrap();
    let tag = format!("d{}", std::process::id());
    let filter = ["--since", "10m", "--text", tag.as_str()];

    let load = Load::start(&server, &tag, 2);
    // Pairs are flowing into the database before it dies, so the kill lands with
    // batches being written, not on an idle collector.
    let flowing = Instant::now() + Duration::from_secs(30);
    while cli
        .json(&[
            "pairs", "list", "--limit", "1", "--since", "10m", "--text", &tag,
        ])
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < flowing, "no pair stored within 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let postmaster = collector.postmaster().unwrap().pid;
    assert!(
        alive(postmaster),
        "the managed postmaster {postmaster} runs"
    );
    let made_before_kill = load.made();
    // SAFETY: kill(2) on the postmaster of the database this test's collector manages.
    assert_eq!(unsafe { libc::kill(postmaster, libc::SIGKILL) }, 0);

    // The collector notices and starts the server again: a new postmaster that has
    // finished its crash recovery. Meanwhile the clients keep going and the agent keeps
    // sending; the query API may answer Unavailable until then.
    let killed = Instant::now();
    let restarted = killed + Duration::from_secs(60);
    loop {
        match collector.postmaster() {
            Ok(p) if p.pid != postmaster && p.ready && alive(p.pid) => break,
            _ => {}
        }
        assert!(
            Instant::now() < restarted,
            "the collector did not restart its database within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let made_while_down = load.made() - made_before_kill;
    eprintln!(
        "database back after {:?}; requests before the kill: {made_before_kill}, \
         while down: {made_while_down}",
        killed.elapsed()
    );
    // Requests after the database is back, through reconnected pools.
    std::thread::sleep(Duration::from_secs(3));
    let sent = load.finish();
    assert!(
        made_while_down > 0,
        "no request was made while the database was down; the fault missed the load"
    );

    // Until the collector's pools have reconnected, a query may still fail: retry, and
    // fail with the last error only at the deadline.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match cli.all_pairs(&filter) {
            Ok(rows) if rows.len() >= 2 * sent.len() => break,
            Ok(_) => {}
            Err(e) if Instant::now() > deadline => panic!("the query API still fails: {e:#}"),
            Err(e) => eprintln!("query failed, retrying: {e:#}"),
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // The agent flushes and resends whatever is unacknowledged when it stops: a pair
    // doubled by a resend would show up after that, so count only then.
    assert!(agent.stop(), "the agent stops cleanly");
    let rows = cli.all_pairs(&filter).unwrap();
    assert_each_once_per_side(&rows, &sent);
}

//! Delivery under faults, end to end: while clients make requests, the collector is
//! killed (SIGKILL) and restarted, and the agent is restarted. Afterwards every request made
//! while the agent was running is stored exactly once per side: nothing lost, nothing
//! doubled. Checked through the query API against the client's own list of requests.

mod support;

use std::collections::HashMap;
use std::time::Duration;
use support::json::{flag, text};
use support::{Scratch, postgres_root_args, preflight};
use tapwire_e2e::peers::{self, PythonHttpServer};
use tapwire_e2e::stack::{Agent, Cli, Collector};

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
    let mut agent = Agent::start(&bins, &collector.url(), &state, dir, &[]).unwrap();
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
    let _agent = Agent::start(&bins, &collector.url(), &state, dir, &[]).unwrap();
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
    let mut seen: HashMap<(String, bool), usize> = HashMap::new();
    for row in &rows {
        *seen
            .entry((text(row, "path").to_string(), flag(row, "is_inbound")))
            .or_default() += 1;
    }
    for path in &sent {
        for inbound in [false, true] {
            assert_eq!(
                seen.get(&(path.clone(), inbound)).copied().unwrap_or(0),
                1,
                "{path} (inbound: {inbound}) must be stored exactly once"
            );
        }
    }
    assert_eq!(
        rows.len(),
        2 * sent.len(),
        "nothing beyond the requests made"
    );
}

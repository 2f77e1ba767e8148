//! The per-CPU event rings on real traffic: a client and a server that move between CPUs
//! after every message, so each connection's records are spread over both rings, must
//! still come out of the agent complete and in order. Needs root and two CPUs.

mod support;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Command, Stdio},
};

use support::{AgentOutput, Guard, free_port, have, run, wait_for_port};

const MESSAGES: usize = 1000;

/// The message `i` both sides send (the server echoes it).
fn message(i: usize) -> String {
    format!("message {i:05}\n")
}

fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Python that pins the calling thread to CPU `i % 2` before message `i`.
const HOP: &str = "hop=lambda i: os.sched_setaffinity(0, {i % 2})";

#[test]
fn a_connection_whose_threads_move_between_cpus_stays_in_order() {
    require!(support::is_root(), "needs root to load eBPF");
    require!(have("python3"), "needs python3");
    require!(online_cpus() >= 2, "needs two CPUs, this machine has one");
    let port = free_port();
    let server = [
        "import os,socket",
        HOP,
        "s=socket.socket()",
        "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)",
        &format!("s.bind(('127.0.0.1',{port}))"),
        "s.listen(8)",
        // The first connection is the test's readiness probe, which sends nothing.
        "while True:",
        "    c,_=s.accept()",
        "    f=c.makefile('rb')",
        "    i=0",
        "    while line:=f.readline():",
        "        i+=1",
        "        hop(i)",
        "        c.sendall(line)",
        "    c.close()",
    ]
    .join("\n");
    let _server = Guard(
        Command::new("python3")
            .args(["-c", &server])
            .spawn()
            .expect("python server"),
    );
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let agent = start_agent!(&[
        "--include-port",
        &port.to_string(),
        "--metrics-addr",
        &metrics_addr,
    ]);
    let client = [
        "import os,socket",
        HOP,
        &format!("c=socket.create_connection(('127.0.0.1',{port}))"),
        "f=c.makefile('rb')",
        &format!("for i in range({MESSAGES}):"),
        "    hop(i)",
        "    c.sendall(b'message %05d\\n' % i)",
        "    assert f.readline() == b'message %05d\\n' % i",
        "print(c.getsockname()[1], flush=True)",
    ]
    .join("\n");
    let mut child = Command::new("python3")
        .args(["-c", &client])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python client");
    let mut lines = BufReader::new(child.stdout.take().expect("client stdout")).lines();
    let local_port: u16 = lines
        .next()
        .expect("the client finishes")
        .expect("client output")
        .trim()
        .parse()
        .expect("the client's port");
    assert!(child.wait().expect("client exit").success());
    // Past the reorder wait, so nothing is still held when the metrics are read.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let metrics = run(Command::new("curl").args(["-s", &format!("http://{metrics_addr}/metrics")]));
    let out = agent.stop();
    assert!(out.exit_ok, "{}", out.stderr);

    let expected: String = (0..MESSAGES).map(message).collect();
    let client_side = out.by_local(&format!("127.0.0.1:{local_port}"));
    let server_side: Vec<_> = out
        .by_local(&format!("127.0.0.1:{port}"))
        .into_iter()
        .filter(|c| c.remote == format!("127.0.0.1:{local_port}"))
        .collect();
    for (side, chunks) in [("client", &client_side), ("server", &server_side)] {
        assert!(!chunks.is_empty(), "{side} side captured");
        for direction in ["egress", "ingress"] {
            let stream = AgentOutput::stream(chunks, direction);
            assert!(
                stream == expected.as_bytes(),
                "{side} {direction}: {} of {} bytes, starting {:?}",
                stream.len(),
                expected.len(),
                String::from_utf8_lossy(&stream[..stream.len().min(64)])
            );
        }
        assert!(
            chunks.windows(2).all(|w| w[0].seq < w[1].seq),
            "{side}: sequence numbers in order"
        );
        assert!(
            chunks.iter().all(|c| !c.events_lost),
            "{side}: nothing lost"
        );
    }
    let reordered = metric(&metrics, "tapwire_agent_events_reordered_total");
    assert!(
        reordered > 0.0,
        "the records did come from both rings out of order (else this test proves nothing)\n{metrics}"
    );
    assert_eq!(metric(&metrics, "tapwire_agent_events_lost_total"), 0.0);
}

fn metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{exposition}"))
}

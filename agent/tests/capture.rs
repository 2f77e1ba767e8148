//! Real capture tests: the real agent binary, real kernel programs, real servers and
//! clients on loopback (or in a network namespace), byte-for-byte assertions on
//! `--output raw`. Need root (CI runs them as root; elsewhere they skip when not root).

mod support;

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    process::{Command, Stdio},
};

use support::{
    AgentOutput, Guard, RawChunk, TempDir, USER_AGENT, assert_stream_accounts_for, connection_of,
    curl, curl_request, free_port, have, nginx_tls_config, python_http_server, run, wait_for_port,
};

#[test]
fn plain_http_both_sides_with_roles_tuples_and_pids() {
    require!(support::is_root(), "needs root to load eBPF");
    require!(have("curl") && have("python3"), "needs curl and python3");
    let dir = TempDir::new("plain");
    std::fs::write(dir.path().join("hello.txt"), b"hello from tapwire\n").unwrap();
    let port = free_port();
    let server = python_http_server(dir.path(), "127.0.0.1", port);
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let agent = start_agent!(&[
        "--include-port",
        &port.to_string(),
        "--metrics-addr",
        &metrics_addr
    ]);

    let url = format!("http://127.0.0.1:{port}/hello.txt");
    let curl_pid = curl(&[&url]);
    let metrics = run(Command::new("curl").args(["-s", &format!("http://{metrics_addr}/metrics")]));
    let health = run(Command::new("curl").args(["-s", &format!("http://{metrics_addr}/healthz")]));
    let out = agent.stop();
    assert!(out.exit_ok, "agent exits 0 on SIGINT:\n{}", out.stderr);

    let host = format!("127.0.0.1:{port}");
    let request = curl_request("/hello.txt", &host);
    let client = connection_of(&out, "curl", curl_pid);
    let server_chunks = connection_of(&out, "python3", server.0.id());
    let client_local = client[0].local.clone();
    for c in &client {
        assert_eq!(
            (c.role.as_str(), c.remote.as_str(), c.tls),
            ("client", host.as_str(), false)
        );
        assert_eq!(c.local, client_local);
    }
    for c in &server_chunks {
        assert_eq!(
            (c.role.as_str(), c.local.as_str()),
            ("server", host.as_str())
        );
        assert_eq!(
            c.remote, client_local,
            "the server sees the client's address"
        );
    }
    assert_eq!(AgentOutput::stream(&client, "egress"), request);
    assert_eq!(AgentOutput::stream(&server_chunks, "ingress"), request);
    let response = AgentOutput::stream(&server_chunks, "egress");
    assert_eq!(AgentOutput::stream(&client, "ingress"), response);
    assert!(response.starts_with(b"HTTP/1.0 200 OK\r\n"));
    assert!(response.ends_with(b"\r\n\r\nhello from tapwire\n"));
    assert!(
        out.chunks
            .iter()
            .all(|c| c.bytes_lost == 0 && !c.events_lost)
    );
    // curl and the server run in this test's cgroup: the id the kernel reports is the
    // inode of its directory, which is how user space finds it for events without it.
    let own_cgroup = own_cgroup_v2_id();
    assert!(
        client
            .iter()
            .chain(&server_chunks)
            .all(|c| c.cgroup_id == own_cgroup),
        "cgroup ids {:?}, expected {own_cgroup}",
        client.iter().map(|c| c.cgroup_id).collect::<Vec<_>>()
    );

    assert_eq!(health.trim(), "ok");
    assert!(
        metrics.contains("tapwire_agent_events_total{kind=\"data\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tapwire_agent_probes_attached"),
        "{metrics}"
    );
}

/// The cgroup v2 id of this process: the inode of its cgroup's directory.
fn own_cgroup_v2_id() -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line");
    std::fs::metadata(format!("/sys/fs/cgroup{path}"))
        .unwrap()
        .ino()
}

#[test]
fn tls_curl_to_nginx_yields_plaintext_and_no_ciphertext() {
    require!(support::is_root(), "needs root to load eBPF");
    require!(
        have("curl") && have("nginx") && have("openssl"),
        "needs curl, nginx, openssl"
    );
    let dir = TempDir::new("tls");
    let port = free_port();
    let conf = nginx_tls_config(dir.path(), port);
    let nginx = support::nginx(&conf, dir.path());
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
    let agent = start_agent!(&["--include-port", &port.to_string()]);
    let curl_pid = curl(&["-k", &format!("https://127.0.0.1:{port}/tls-path")]);
    let out = agent.stop();
    assert!(out.exit_ok, "{}", out.stderr);

    let host = format!("127.0.0.1:{port}");
    let request = curl_request("/tls-path", &host);
    let client = connection_of(&out, "curl", curl_pid);
    let server = connection_of(&out, "nginx", nginx.0.id());
    assert!(
        client.iter().chain(server.iter()).all(|c| c.tls),
        "no ciphertext chunk: {:?}",
        out.chunks
    );
    assert!(
        out.chunks.iter().all(|c| c.tls),
        "nothing but plaintext on the TLS port"
    );
    assert!(
        client
            .iter()
            .all(|c| c.role == "client" && c.remote == host)
    );
    assert!(server.iter().all(|c| c.role == "server" && c.local == host));
    assert_eq!(AgentOutput::stream(&client, "egress"), request);
    assert_eq!(AgentOutput::stream(&server, "ingress"), request);
    let response = AgentOutput::stream(&server, "egress");
    assert_eq!(AgentOutput::stream(&client, "ingress"), response);
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(response.ends_with(b"\r\n\r\ntls hello body\n"));
}

#[test]
fn connection_opened_before_the_agent_is_captured_with_its_tuple() {
    require!(support::is_root(), "needs root to load eBPF");
    require!(have("python3"), "needs python3");
    let dir = TempDir::new("before");
    std::fs::write(dir.path().join("a.txt"), b"early bird\n").unwrap();
    let port = free_port();
    let _server = python_http_server(dir.path(), "127.0.0.1", port);
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
    // Connects now, sends only after a line on stdin.
    let script = [
        "import http.client,sys",
        &format!("c=http.client.HTTPConnection('127.0.0.1',{port})"),
        "c.connect()",
        "print(c.sock.getsockname()[1],flush=True)",
        "sys.stdin.readline()",
        &format!("c.request('GET','/a.txt',headers={{'User-Agent':'{USER_AGENT}'}})"),
        "r=c.getresponse()",
        "print(r.status,len(r.read()),flush=True)",
    ]
    .join("\n");
    let mut client = Guard(
        Command::new("python3")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python client"),
    );
    let mut lines = BufReader::new(client.0.stdout.take().unwrap()).lines();
    let local_port: u16 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    let agent = start_agent!(&["--include-port", &port.to_string()]);
    client.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    assert_eq!(lines.next().unwrap().unwrap().trim(), "200 11");
    let out = agent.stop();
    assert!(out.exit_ok, "{}", out.stderr);

    let local = format!("127.0.0.1:{local_port}");
    let host = format!("127.0.0.1:{port}");
    let chunks = out.by_local(&local);
    assert!(!chunks.is_empty(), "client chunks: {:?}", out.chunks);
    assert!(
        chunks
            .iter()
            .all(|c| c.remote == host && c.role == "unknown")
    );
    let request = AgentOutput::stream(&chunks, "egress");
    assert!(
        request.starts_with(b"GET /a.txt HTTP/1.1\r\n"),
        "{}",
        String::from_utf8_lossy(&request)
    );
    let server: Vec<&RawChunk> = out
        .by_local(&host)
        .into_iter()
        .filter(|c| c.remote == local)
        .collect();
    assert_eq!(AgentOutput::stream(&server, "ingress"), request);
    assert!(AgentOutput::stream(&chunks, "ingress").ends_with(b"early bird\n"));
}

#[test]
fn two_hundred_short_connections_each_have_their_tuple() {
    require!(support::is_root(), "needs root to load eBPF");
    require!(have("python3"), "needs python3");
    let dir = TempDir::new("short");
    let port = free_port();
    // A server that answers one line per connection and closes.
    let server_script = [
        "import socket",
        "s=socket.socket()",
        "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)",
        &format!("s.bind(('127.0.0.1',{port}))"),
        "s.listen(512)",
        "while True:",
        "  c,a=s.accept()",
        "  d=c.recv(100)",
        "  c.sendall(b'pong '+d)",
        "  c.close()",
    ]
    .join("\n");
    let _server = Guard(
        Command::new("python3")
            .args(["-c", &server_script])
            .spawn()
            .unwrap(),
    );
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
    let agent = start_agent!(&["--include-port", &port.to_string()]);
    let client_script = [
        "import socket",
        "for i in range(200):",
        &format!("  c=socket.create_connection(('127.0.0.1',{port}))"),
        "  c.sendall(b'ping %d' % i)",
        "  assert c.recv(100)==b'pong ping %d' % i",
        "  print(c.getsockname()[1])",
        "  c.close()",
    ]
    .join("\n");
    let ports = run(Command::new("python3")
        .args(["-c", &client_script])
        .current_dir(dir.path()));
    let out = agent.stop();
    assert!(out.exit_ok, "{}", out.stderr);

    let host = format!("127.0.0.1:{port}");
    let ports: Vec<&str> = ports.lines().collect();
    assert_eq!(ports.len(), 200);
    for (i, p) in ports.iter().enumerate() {
        let local = format!("127.0.0.1:{p}");
        let client = out.by_local(&local);
        assert!(
            client.iter().any(|c| c.remote == host
                && c.direction == "egress"
                && c.data == format!("ping {i}").as_bytes()),
            "connection {i} from {local} missing: {client:?}"
        );
        let server = out.by_local(&host);
        assert!(
            server.iter().any(|c| c.remote == local
                && c.direction == "egress"
                && c.data == format!("pong ping {i}").as_bytes()),
            "server side of connection {i} ({local}) missing"
        );
    }

    // The kernel hands a freed `struct sock` to the next socket at once, so these
    // connections reuse each other's socket addresses while the previous one's last
    // events may still be unread in another CPU's ring: each connection id must still
    // hold exactly one connection's bytes, with the role of its side.
    let mut by_id: std::collections::BTreeMap<u64, Vec<&RawChunk>> = Default::default();
    for chunk in &out.chunks {
        by_id.entry(chunk.connection_id).or_default().push(chunk);
    }
    let index_of: std::collections::HashMap<String, usize> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("127.0.0.1:{p}"), i))
        .collect();
    for (id, chunks) in &by_id {
        let server_side = chunks[0].local == host;
        let peer = if server_side {
            &chunks[0].remote
        } else {
            &chunks[0].local
        };
        let Some(&i) = index_of.get(peer) else {
            continue;
        };
        let (role, ingress, egress) = if server_side {
            ("server", format!("ping {i}"), format!("pong ping {i}"))
        } else {
            ("client", format!("pong ping {i}"), format!("ping {i}"))
        };
        assert!(
            chunks.iter().all(|c| c.role == role),
            "connection {id} ({peer}) is not all {role}: {chunks:?}"
        );
        assert_eq!(
            AgentOutput::stream(chunks, "ingress"),
            ingress.as_bytes(),
            "connection {id} ({peer}, {role}) received exactly its own bytes"
        );
        assert_eq!(
            AgentOutput::stream(chunks, "egress"),
            egress.as_bytes(),
            "connection {id} ({peer}, {role}) sent exactly its own bytes"
        );
    }
}

macro_rules! require_or_none {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            let why = format!($($why)+);
            if support::in_ci() {
                panic!("required in CI: {why}");
            }
            eprintln!("skipping: {why}");
            return None;
        }
    };
}

/// Serves 1 MiB to curl under `agent_args`; returns the bytes lost (server, client).
fn one_mebibyte_response(extra_args: &[&str]) -> Option<(u64, u64)> {
    require_or_none!(support::is_root(), "needs root to load eBPF");
    require_or_none!(have("curl") && have("python3"), "needs curl and python3");
    let dir = TempDir::new("big");
    let body: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.path().join("big.bin"), &body).unwrap();
    let port = free_port();
    let server = python_http_server(dir.path(), "127.0.0.1", port);
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
    let port_arg = port.to_string();
    let mut args = vec!["--include-port", port_arg.as_str()];
    args.extend_from_slice(extra_args);
    let agent = match support::Agent::start(&args) {
        Ok(agent) => agent,
        Err(why) if support::in_ci() => panic!("eBPF capture must work in CI: {why}"),
        Err(why) => {
            eprintln!("skipping: {why}");
            return None;
        }
    };
    let curl_pid = curl(&[&format!("http://127.0.0.1:{port}/big.bin")]);
    let out = agent.stop();
    assert!(out.exit_ok, "{}", out.stderr);

    let client = connection_of(&out, "curl", curl_pid);
    let server = connection_of(&out, "python3", server.0.id());
    let first = &server
        .iter()
        .find(|c| c.direction == "egress")
        .expect("response")
        .data;
    let header_end = first
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers in first write")
        + 4;
    let mut expected = first[..header_end].to_vec();
    expected.extend_from_slice(&body);
    let lost_server = assert_stream_accounts_for(&server, "egress", &expected);
    let lost_client = assert_stream_accounts_for(&client, "ingress", &expected);
    eprintln!("1 MiB response: server side lost {lost_server} bytes, client side {lost_client}");
    Some((lost_server, lost_client))
}

#[test]
fn one_mebibyte_response_with_default_cap_counts_every_uncaptured_byte() {
    // 32 KiB per syscall: python sends 64 KiB per call, so half of each is a counted gap.
    if let Some((server, _client)) = one_mebibyte_response(&[]) {
        assert!(server > 0, "the default cap truncates 64 KiB writes");
    }
}

#[test]
fn one_mebibyte_response_with_raised_cap_is_captured_completely() {
    if let Some(lost) = one_mebibyte_response(&["--capture-bytes", "262144"]) {
        assert_eq!(lost, (0, 0), "every byte captured");
    }
}

/// A network namespace with a veth pair, removed on drop.
struct NetNs {
    name: String,
    host_if: String,
}

impl NetNs {
    fn create(name: &str, host_addr: &str, ns_addr: &str) -> Option<Self> {
        let host_if = format!("{name}h");
        let ns_if = format!("{name}n");
        let sh = |cmd: String| {
            Command::new("sh")
                .args(["-c", &cmd])
                .status()
                .is_ok_and(|s| s.success())
        };
        let _ = sh(format!(
            "ip netns del {name} 2>/dev/null; ip link del {host_if} 2>/dev/null"
        ));
        let ok = sh(format!("ip netns add {name}"))
            && sh(format!("ip link add {host_if} type veth peer name {ns_if}"))
            && sh(format!("ip link set {ns_if} netns {name}"))
            && sh(format!(
                "ip addr add {host_addr}/24 dev {host_if} && ip link set {host_if} up"
            ))
            && sh(format!(
                "ip -n {name} addr add {ns_addr}/24 dev {ns_if} && ip -n {name} link set {ns_if} up && ip -n {name} link set lo up"
            ));
        let ns = Self {
            name: name.to_string(),
            host_if,
        };
        ok.then_some(ns)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn traffic_inside_a_network_namespace_is_captured() {
    require!(
        support::is_root(),
        "needs root to load eBPF and create namespaces"
    );
    require!(
        have("ip") && have("curl") && have("python3"),
        "needs ip, curl, python3"
    );
    let name = format!("tw{}", std::process::id() % 100_000);
    let ns = NetNs::create(&name, "10.231.7.1", "10.231.7.2");
    require!(ns.is_some(), "could not create network namespace {name}");
    let dir = TempDir::new("netns");
    std::fs::write(dir.path().join("ns.txt"), b"inside the namespace\n").unwrap();
    let port = free_port();
    let _server = Guard(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &name,
                "python3",
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "10.231.7.2",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(SocketAddr::from(([10, 231, 7, 2], port)));
    let agent = start_agent!(&["--include-port", &port.to_string()]);
    let curl_pid = curl(&[&format!("http://10.231.7.2:{port}/ns.txt")]);
    let out = agent.stop();
    assert!(out.exit_ok, "{}", out.stderr);

    let server_addr = format!("10.231.7.2:{port}");
    let client = connection_of(&out, "curl", curl_pid);
    assert!(
        client
            .iter()
            .all(|c| c.remote == server_addr && c.local.starts_with("10.231.7.1:"))
    );
    let server = out.by_local(&server_addr);
    assert!(
        !server.is_empty(),
        "the server in the namespace is captured: {:?}",
        out.chunks
    );
    assert!(
        server
            .iter()
            .all(|c| c.role == "server" && c.remote == client[0].local)
    );
    let request = curl_request("/ns.txt", &server_addr);
    assert_eq!(AgentOutput::stream(&client, "egress"), request);
    assert_eq!(AgentOutput::stream(&server, "ingress"), request);
    assert!(AgentOutput::stream(&server, "egress").ends_with(b"inside the namespace\n"));
}

#[test]
fn jsonl_output_pairs_requests_with_responses_and_identity() {
    require!(support::is_root(), "needs root to load eBPF");
    require!(have("curl") && have("python3"), "needs curl and python3");
    let dir = TempDir::new("jsonl");
    std::fs::write(dir.path().join("p.txt"), b"paired\n").unwrap();
    let port = free_port();
    let server = python_http_server(dir.path(), "127.0.0.1", port);
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
    let agent = start_agent!(&["--output", "jsonl", "--include-port", &port.to_string()]);
    let curl_pid = curl(&[&format!("http://127.0.0.1:{port}/p.txt")]);
    let out = agent.stop();
    assert!(out.exit_ok, "{}", out.stderr);

    let pairs: Vec<serde_json::Value> = out
        .lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("pair JSON"))
        .collect();
    assert_eq!(pairs.len(), 2, "one pair per side: {pairs:?}");
    for pair in &pairs {
        assert_eq!(pair["method"], "GET");
        assert_eq!(pair["path"], "/p.txt");
        assert_eq!(pair["status"], 200);
        assert_eq!(pair["complete"], true);
    }
    let inbound = pairs
        .iter()
        .find(|p| p["is_inbound"] == true)
        .expect("server side pair");
    assert_eq!(inbound["pid"], server.0.id());
    assert_eq!(inbound["local_addr"], format!("127.0.0.1:{port}"));
    let outbound = pairs
        .iter()
        .find(|p| p["is_inbound"] != true)
        .expect("client side pair");
    assert_eq!(outbound["pid"], curl_pid);
    assert_eq!(outbound["comm"], "curl");
    assert_eq!(outbound["remote_addr"], format!("127.0.0.1:{port}"));
}

#[test]
fn tls_library_loaded_after_start_is_attached_within_a_second() {
    require!(support::is_root(), "needs root to load eBPF");
    require!(
        have("nginx") && have("openssl") && have("python3"),
        "needs nginx, openssl, python3"
    );
    let system_libssl = std::path::Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
    require!(system_libssl.exists(), "needs {}", system_libssl.display());
    let dir = TempDir::new("late-tls");
    // A copy is a new file (new inode): nothing has probed it when the agent starts.
    let lib_dir = dir.path().join("lib");
    std::fs::create_dir_all(&lib_dir).unwrap();
    std::fs::copy(system_libssl, lib_dir.join("libssl.so.3")).unwrap();
    let port = free_port();
    let conf = nginx_tls_config(dir.path(), port);
    let _nginx = support::nginx(&conf, dir.path());
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
    let agent = start_agent!(&["--include-port", &port.to_string()]);
    let script = [
        "import ssl,time,http.client",
        "time.sleep(1.0)",
        &format!("c=http.client.HTTPSConnection('127.0.0.1',{port},context=ssl._create_unverified_context())"),
        &format!("c.request('GET','/late',headers={{'User-Agent':'{USER_AGENT}'}})"),
        "r=c.getresponse()",
        "print(r.status,r.read())",
        "maps=open('/proc/self/maps').read()",
        "print('copy' if '/lib/libssl.so.3' in maps and 'late-tls' in maps else 'system')",
    ]
    .join("\n");
    let printed = run(Command::new("python3")
        .args(["-c", &script])
        .env("LD_LIBRARY_PATH", &lib_dir));
    let out = agent.stop();
    assert!(out.exit_ok, "{}", out.stderr);
    assert!(printed.contains("200 b'tls hello body\\n'"), "{printed}");
    require!(
        printed.trim_end().ends_with("copy"),
        "python did not load the libssl copy: {printed}"
    );

    assert!(
        out.stderr
            .contains(&format!("{}", lib_dir.join("libssl.so.3").display())),
        "the copy was attached after start:\n{}",
        out.stderr
    );
    let client: Vec<&RawChunk> = out
        .chunks
        .iter()
        .filter(|c| c.comm.starts_with("python"))
        .collect();
    assert!(
        !client.is_empty(),
        "python's connection captured: {:?}",
        out.chunks
    );
    assert!(
        client.iter().all(|c| c.tls),
        "plaintext only, no ciphertext"
    );
    assert!(AgentOutput::stream(&client, "egress").starts_with(b"GET /late HTTP/1.1\r\n"));
    assert!(AgentOutput::stream(&client, "ingress").ends_with(b"tls hello body\n"));
}

#[test]
fn in_kernel_filters_exclude_a_pid_and_unlisted_ports() {
    require!(support::is_root(), "needs root to load eBPF");
    require!(have("curl") && have("python3"), "needs curl and python3");
    let dir = TempDir::new("filters");
    std::fs::write(dir.path().join("f.txt"), b"filtered\n").unwrap();
    let port = free_port();
    let other_port = free_port();
    let server = python_http_server(dir.path(), "127.0.0.1", port);
    let _other = python_http_server(dir.path(), "127.0.0.1", other_port);
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], other_port)));
    let server_pid = server.0.id().to_string();
    let agent = start_agent!(&[
        "--include-port",
        &port.to_string(),
        "--exclude-pid",
        &server_pid
    ]);
    let curl_pid = curl(&[&format!("http://127.0.0.1:{port}/f.txt")]);
    let other_curl = curl(&[&format!("http://127.0.0.1:{other_port}/f.txt")]);
    let out = agent.stop();
    assert!(out.exit_ok, "{}", out.stderr);

    let client = connection_of(&out, "curl", curl_pid);
    assert!(AgentOutput::stream(&client, "ingress").ends_with(b"filtered\n"));
    assert!(
        out.chunks.iter().all(|c| c.pid != server.0.id()),
        "excluded pid not captured"
    );
    assert!(
        out.chunks.iter().all(|c| c.pid != other_curl),
        "unlisted port not captured"
    );
    let other = format!(":{other_port}");
    assert!(
        out.chunks
            .iter()
            .all(|c| !c.local.ends_with(&other) && !c.remote.ends_with(&other))
    );
}

/// Starts the agent with `args`, makes one curl request against a plain HTTP server
/// and checks both sides were captured byte for byte; returns the agent's stderr, or
/// `None` when eBPF is unavailable outside CI (skipped).
fn captures_one_plain_request_with(args: &[&str]) -> Option<String> {
    let dir = TempDir::new("hooks");
    std::fs::write(dir.path().join("h.txt"), b"hooked\n").unwrap();
    let port = free_port();
    let server = python_http_server(dir.path(), "127.0.0.1", port);
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
    let port_arg = port.to_string();
    let mut all = vec!["--include-port", port_arg.as_str()];
    all.extend_from_slice(args);
    let agent = start_agent!(&all, else None);
    let curl_pid = curl(&[&format!("http://127.0.0.1:{port}/h.txt")]);
    let out = agent.stop();
    assert!(out.exit_ok, "{}", out.stderr);
    let client = connection_of(&out, "curl", curl_pid);
    let request = curl_request("/h.txt", &format!("127.0.0.1:{port}"));
    assert_eq!(AgentOutput::stream(&client, "egress"), request, "{args:?}");
    assert!(AgentOutput::stream(&client, "ingress").ends_with(b"hooked\n"));
    let served: Vec<&RawChunk> = out
        .chunks
        .iter()
        .filter(|c| c.pid == server.0.id() && c.role == "server")
        .collect();
    assert_eq!(AgentOutput::stream(&served, "ingress"), request, "{args:?}");
    Some(out.stderr)
}

#[test]
fn raw_sys_exit_tracepoint_captures_like_the_per_syscall_ones() {
    require!(support::is_root(), "needs root to load eBPF");
    require!(have("curl") && have("python3"), "needs curl and python3");
    let Some(stderr) = captures_one_plain_request_with(&["--syscall-hook", "raw-tracepoint"])
    else {
        return;
    };
    // Attached itself, not fallen back to the per-syscall tracepoints.
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("[ok]") && l.contains("raw_tracepoint/sys_exit")),
        "{stderr}"
    );
    assert!(!stderr.contains("syscalls/sys_exit_read"), "{stderr}");
}

#[test]
fn per_syscall_tracepoints_capture_like_the_socket_ones() {
    require!(support::is_root(), "needs root to load eBPF");
    require!(have("curl") && have("python3"), "needs curl and python3");
    let Some(stderr) = captures_one_plain_request_with(&["--syscall-hook", "tracepoints"]) else {
        return;
    };
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("[ok]") && l.contains("syscalls/sys_exit_read")),
        "{stderr}"
    );
    assert!(!stderr.contains("tp_btf/sock_send_length"), "{stderr}");
}

#[test]
fn socket_tracepoints_are_the_default_hook() {
    require!(support::is_root(), "needs root to load eBPF");
    require!(have("curl") && have("python3"), "needs curl and python3");
    let Some(stderr) = captures_one_plain_request_with(&[]) else {
        return;
    };
    // Attached themselves, not fallen back; and no syscall tracepoint is attached.
    for hook in ["tp_btf/sock_send_length", "tp_btf/sock_recv_length"] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("[ok]") && l.contains(hook)),
            "{hook}: {stderr}"
        );
    }
    assert!(!stderr.contains("syscalls/"), "{stderr}");
}

#[test]
fn without_tls_probes_plain_traffic_is_still_captured() {
    require!(support::is_root(), "needs root to load eBPF");
    require!(have("curl") && have("python3"), "needs curl and python3");
    // The loaded programs used to be dropped with the TLS watcher, which `--no-tls`
    // does not start: every program was detached right after start-up.
    let _ = captures_one_plain_request_with(&["--no-tls"]);
}

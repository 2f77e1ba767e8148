//! Proves the documented minimal capability set suffices: the agent runs as user
//! `nobody` with only CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE and
//! still captures plain and TLS (OpenSSL) traffic. Needs root (to hand out exactly
//! those capabilities) and `setpriv`.

mod support;

use std::{net::SocketAddr, process::Command};

use tapwire_agent::host_setup::TRACEFS;

use support::{
    Agent, AgentOutput, TempDir, connection_of, curl, free_port, have, nginx_tls_config,
    python_http_server, wait_for_port,
};

/// The set documented for running without root.
const CAPS: &str = "-all,+bpf,+perfmon,+dac_read_search,+sys_ptrace";

#[test]
fn minimal_capability_set_suffices_for_plain_and_tls_capture() {
    require!(support::is_root(), "needs root to grant the capability set");
    require!(
        have("setpriv") && have("curl") && have("python3") && have("nginx"),
        "needs setpriv, curl, python3, nginx"
    );
    // Without CAP_SYS_ADMIN the agent cannot mount tracefs itself; the DaemonSet gets
    // the host's mount through a hostPath (docs/deployment.md), so do what the host
    // would have done, as root, before dropping to the capability set.
    if let Err(why) = tapwire_agent::host_setup::mount_if_absent("tracefs", TRACEFS) {
        panic!("tracefs must be mounted at {TRACEFS} for the capability test: {why}");
    }
    let dir = TempDir::new("caps");
    std::fs::write(dir.path().join("c.txt"), b"caps only\n").unwrap();
    let plain_port = free_port();
    let _server = python_http_server(dir.path(), "127.0.0.1", plain_port);
    let tls_port = free_port();
    let conf = nginx_tls_config(dir.path(), tls_port);
    let _nginx = support::nginx(&conf, dir.path());
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], plain_port)));
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], tls_port)));

    let mut command = Command::new("setpriv");
    command.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &format!("--inh-caps={CAPS}"),
        &format!("--ambient-caps={CAPS}"),
        &format!("--bounding-set={CAPS}"),
        env!("CARGO_BIN_EXE_tapwire-agent"),
    ]);
    let agent = match Agent::start_with(
        command,
        &[
            "--include-port",
            &plain_port.to_string(),
            "--include-port",
            &tls_port.to_string(),
        ],
    ) {
        Ok(agent) => agent,
        Err(why) => panic!("the agent must run with {CAPS} as nobody: {why}"),
    };
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap_or_default();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "runs as nobody"
    );

    let plain_curl = curl(&[&format!("http://127.0.0.1:{plain_port}/c.txt")]);
    let tls_curl = curl(&["-k", &format!("https://127.0.0.1:{tls_port}/caps")]);
    let out = agent.stop();
    assert!(out.exit_ok, "{}", out.stderr);

    let plain = connection_of(&out, "curl", plain_curl);
    assert!(AgentOutput::stream(&plain, "ingress").ends_with(b"caps only\n"));
    assert!(plain.iter().all(|c| !c.tls));
    let tls = connection_of(&out, "curl", tls_curl);
    assert!(
        tls.iter().all(|c| c.tls),
        "TLS plaintext via uprobe.multi without CAP_SYS_ADMIN"
    );
    assert!(AgentOutput::stream(&tls, "egress").starts_with(b"GET /caps HTTP/1.1\r\n"));
    assert!(AgentOutput::stream(&tls, "ingress").ends_with(b"tls hello body\n"));
}

//! Every socket call the agent hooks, under every hook mode: a real python process moves
//! known bytes over a loopback connection with write/read, send/recv (sendto/recvfrom),
//! sendmsg/recvmsg and writev/readv (`support/socket_calls.py`), and both sides' streams
//! must come out of `--output raw` byte for byte. Iovec calls walk their vectors: empty
//! segments, receive buffers larger than what arrived (only the bytes really moved
//! count), and a writev of more segments than the programs walk, whose tail must be a
//! counted gap, not lost silently or filled with other bytes.

mod support;

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use support::{Guard, assert_stream_accounts_for, free_port, have, one_connection};
use tapwire_agent_common::{MAX_IOV_SEGMENTS, MAX_IOV_SEGMENTS_MULTI_RECORD};

/// Segments of the script's long writev, and bytes per segment (`NN-segment;`).
const LONG_WRITEV_SEGMENTS: u64 = 40;
const LONG_WRITEV_SEGMENT_BYTES: u64 = 11;

/// Runs the script with the agent (options `hook_args`) capturing its port, and checks
/// both directions on both sides; `hook` is a program the attach plan must report
/// attached (not fallen back from), and vector calls walk `walked` segments.
fn every_call_is_captured_with(hook_args: &[&str], hook: &str, walked: u32) {
    require!(support::is_root(), "needs root to load eBPF");
    require!(have("python3"), "needs python3");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/socket_calls.py");
    let port = free_port();
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting socket_calls.py");
    let mut stdin = child.stdin.take().expect("script stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("script stdout"));
    let script_guard = Guard(child);
    let mut line = String::new();
    stdout.read_line(&mut line).expect("script output");
    assert_eq!(line.trim(), "listening");

    let port_arg = port.to_string();
    let mut args = vec!["--include-port", port_arg.as_str()];
    args.extend_from_slice(hook_args);
    let agent = start_agent!(&args);
    writeln!(stdin, "go").expect("starting the script's calls");
    line.clear();
    stdout.read_line(&mut line).expect("script result");
    let report: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("script said {line:?}: {e}"));
    drop(script_guard);
    let out = agent.stop();
    assert!(out.exit_ok, "{}", out.stderr);
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains("[ok]") && l.contains(hook)),
        "{hook} attached: {}",
        out.stderr
    );

    let pid = report["pid"].as_u64().expect("pid") as u32;
    let sent = |side: &str| {
        STANDARD
            .decode(report[side].as_str().expect("sent bytes"))
            .expect("base64")
    };
    let (client_sent, server_sent) = (sent("client"), sent("server"));
    let side = |role: &str| {
        one_connection(&out, &format!("the {role} side, {hook_args:?}"), |c| {
            c.pid == pid && c.role == role
        })
    };
    let (client, server) = (side("client"), side("server"));

    let lost = assert_stream_accounts_for;
    assert_eq!(lost(&client, "egress", &client_sent), 0, "{hook_args:?}");
    assert_eq!(lost(&server, "ingress", &client_sent), 0, "{hook_args:?}");
    assert_eq!(lost(&client, "ingress", &server_sent), 0, "{hook_args:?}");
    // Only the long writev's segments past the walked ones go uncaptured.
    let unwalked = LONG_WRITEV_SEGMENTS.saturating_sub(u64::from(walked));
    assert_eq!(
        lost(&server, "egress", &server_sent),
        unwalked * LONG_WRITEV_SEGMENT_BYTES,
        "{hook_args:?}"
    );
}

#[test]
fn every_socket_call_on_the_socket_tracepoints() {
    every_call_is_captured_with(&[], "tp_btf/sock_send_length", MAX_IOV_SEGMENTS);
}

#[test]
fn every_socket_call_on_the_per_syscall_tracepoints() {
    every_call_is_captured_with(
        &["--syscall-hook", "tracepoints"],
        "syscalls/sys_exit_writev",
        MAX_IOV_SEGMENTS,
    );
}

#[test]
fn every_socket_call_on_the_raw_sys_exit_tracepoint() {
    every_call_is_captured_with(
        &["--syscall-hook", "raw-tracepoint"],
        "raw_tracepoint/sys_exit",
        MAX_IOV_SEGMENTS,
    );
}

/// A cap above one record's payload sends long buffers as several records, and the
/// vector walk is shorter there (the programs must still pass the verifier).
#[test]
fn every_socket_call_with_a_cap_of_several_records_per_call() {
    every_call_is_captured_with(
        &["--capture-bytes", "262144"],
        "tp_btf/sock_send_length",
        MAX_IOV_SEGMENTS_MULTI_RECORD,
    );
}

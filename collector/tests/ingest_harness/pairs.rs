//! Synthetic pairs with realistic sizes and every field set.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tapwire_proto::{
    Timestamp,
    v1::{Batch, Header, Message, Pair, StreamMessage},
};

fn ts(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Pair number `i` started at `start`.
pub fn pair(i: u64, start: SystemTime) -> Pair {
    let grpc = i % 5 == 4;
    let duration = Duration::from_micros(300 + (i * 7919) % 200_000);
    let ms = start
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let mut random = [0x5au8; 10];
    random[..8].copy_from_slice(&i.to_be_bytes());
    let id = uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid();
    let body = Bytes::from(format!(
        "{{\"order\":{i},\"items\":[{}]}}",
        "\"x\",".repeat((i % 50) as usize) + "\"y\""
    ));
    let request = Message {
        headers: vec![
            Header {
                name: "content-type".into(),
                value: "application/json".into(),
            },
            Header {
                name: "user-agent".into(),
                value: "curl/7.88.1".into(),
            },
        ],
        body_size: body.len() as u64,
        body: body.clone(),
        body_truncated: false,
        content_encoding: String::new(),
        trailers: vec![],
    };
    let response_body = Bytes::from(vec![b'r'; 200 + (i % 1500) as usize]);
    let response = Message {
        headers: vec![Header {
            name: "content-length".into(),
            value: response_body.len().to_string(),
        }],
        body_size: response_body.len() as u64 + if i.is_multiple_of(11) { 10_000 } else { 0 },
        body_truncated: i.is_multiple_of(11),
        body: response_body,
        content_encoding: if i.is_multiple_of(3) {
            "gzip".into()
        } else {
            String::new()
        },
        trailers: if grpc {
            vec![Header {
                name: "grpc-status".into(),
                value: "0".into(),
            }]
        } else {
            vec![]
        },
    };
    Pair {
        id: id.to_string(),
        start_time: Some(ts(start)),
        end_time: Some(ts(start + duration)),
        request_end_time: Some(ts(start + duration / 4)),
        response_start_time: Some(ts(start + duration / 2)),
        duration_ns: duration.as_nanos() as u64,
        is_inbound: i.is_multiple_of(2),
        protocol: if grpc { "grpc".into() } else { "http1".into() },
        request: Some(request),
        response: Some(response),
        method: if grpc {
            "POST".into()
        } else {
            ["GET", "POST", "PUT"][(i % 3) as usize].into()
        },
        scheme: "http".into(),
        authority: "orders.shop.svc:8080".into(),
        path: if grpc {
            "/shop.Orders/Get".into()
        } else {
            format!("/orders/{i}/items?page={}", i % 4)
        },
        status: if i.is_multiple_of(13) { 503 } else { 200 },
        grpc_status: grpc.then_some(if i % 10 == 9 { 14 } else { 0 }),
        grpc_message: String::new(),
        messages: if grpc {
            vec![StreamMessage {
                from_client: true,
                time: Some(ts(start)),
                compressed: false,
                data: Bytes::from_static(b"\x0a\x03abc"),
                size: 5,
                truncated: false,
                kind: String::new(),
            }]
        } else {
            vec![]
        },
        local_addr: "10.0.0.5:8080".into(),
        remote_addr: format!("10.0.1.{}:{}", i % 200, 40000 + i % 20000),
        tls: i.is_multiple_of(4),
        tls_library: if i.is_multiple_of(4) {
            "openssl".into()
        } else {
            String::new()
        },
        pid: 4242,
        comm: "orders".into(),
        exe: "/usr/bin/orders".into(),
        container_id: "c0ffee".into(),
        cgroup_id: 1234,
        node: String::new(),
        namespace: "shop".into(),
        pod: "orders-7d9f-abcde".into(),
        service: "orders".into(),
        remote_service: if i.is_multiple_of(2) {
            String::new()
        } else {
            "payments".into()
        },
        complete: !i.is_multiple_of(11),
        truncated: i.is_multiple_of(11),
        partial_headers: false,
        lost_events: i.is_multiple_of(97),
        bytes_lost: if i.is_multiple_of(11) { 10_000 } else { 0 },
        connection_id: i / 3,
        stream_id: 0,
        note: String::new(),
    }
}

/// `count` pairs numbered from `first`, one every `spacing` from `start`.
pub fn pairs(first: u64, count: u64, start: SystemTime, spacing: Duration) -> Vec<Pair> {
    (0..count)
        .map(|k| pair(first + k, start + spacing * k as u32))
        .collect()
}

/// A batch of pairs from the test agent.
pub fn batch(sequence: u64, pairs: Vec<Pair>) -> Batch {
    Batch {
        sequence,
        agent_id: "test-agent".into(),
        node: "node-a".into(),
        pairs,
    }
}

//! `Export`, `GetPair` and `Tail`: the calls that read full pairs or follow new ones.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use tapwire_proto::v1::{ExportFormat, ExportRequest, Filter, GetPairRequest, Pair, TailRequest};
use tokio_stream::StreamExt;

use super::super::Backend;
use super::super::expect::{self, range_filter};
use super::super::pairs::{Rng, pair_at, pairs_between, uuid_v7};
use super::hours_ago;

/// Export streams every matching pair, oldest first, as JSON lines and as HAR 1.2.
pub async fn export_formats(b: &impl Backend, sent: &[Pair]) {
    let start = hours_ago(20.0);
    let filter = Filter {
        service: "shop".into(),
        ..range_filter(start, start + Duration::from_secs(3600))
    };
    let mut want = expect::list_ids(&filter, sent);
    want.reverse();
    let mut client = b.query();
    let read = |format: ExportFormat, limit: u64| {
        let mut client = client.clone();
        let filter = filter.clone();
        async move {
            let mut stream = client
                .export(ExportRequest {
                    filter: Some(filter),
                    format: format as i32,
                    limit,
                })
                .await
                .unwrap()
                .into_inner();
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk.unwrap().data);
            }
            out
        }
    };
    let jsonl = read(ExportFormat::Jsonl, 0).await;
    let lines: Vec<Pair> = String::from_utf8(jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line is a Pair"))
        .collect();
    assert_eq!(lines.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), want);
    let original = sent.iter().find(|p| p.id == lines[0].id).unwrap();
    assert_eq!(
        lines[0].request, original.request,
        "the full pair is exported"
    );

    let har: serde_json::Value =
        serde_json::from_slice(&read(ExportFormat::Har, 0).await).expect("HAR is JSON");
    assert_eq!(har["log"]["version"], "1.2");
    let entries = har["log"]["entries"].as_array().unwrap();
    assert_eq!(
        entries
            .iter()
            .map(|e| e["_tapwire"]["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>(),
        want
    );
    for e in entries {
        for field in [
            "startedDateTime",
            "time",
            "request",
            "response",
            "cache",
            "timings",
        ] {
            assert!(!e[field].is_null(), "HAR entry without {field}");
        }
        let url = e["request"]["url"].as_str().unwrap();
        assert!(url.starts_with("http://"), "{url}");
        assert!(e["response"]["content"]["size"].is_u64());
    }
    let limited = read(ExportFormat::Jsonl, 7).await;
    assert_eq!(String::from_utf8(limited).unwrap().lines().count(), 7);
    let _ = client.clone();
    client = b.query();
    let bad = client
        .export(ExportRequest {
            filter: Some(Filter {
                direction: 9,
                ..filter
            }),
            format: 0,
            limit: 0,
        })
        .await;
    assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
}

/// A large export: every one of `count` pairs exactly once, in order, in bounded chunks.
pub async fn export_many(b: &impl Backend, count: usize) -> Duration {
    // A region of its own: no other check stores pairs 30 h ago.
    let start = hours_ago(30.0);
    let pairs = pairs_between(start, Duration::from_secs(3000), count, 51);
    for batch in pairs.chunks(2000) {
        b.ingest(batch).await.expect("ingest");
    }
    let filter = range_filter(start, start + Duration::from_secs(3000));
    let mut want: HashSet<String> = pairs.iter().map(|p| p.id.clone()).collect();
    let began = std::time::Instant::now();
    let mut stream = b
        .query()
        .export(ExportRequest {
            filter: Some(filter),
            format: ExportFormat::Jsonl as i32,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut rest = Vec::new();
    let mut last_us = 0;
    while let Some(chunk) = stream.next().await {
        let data = chunk.expect("chunk").data;
        assert!(data.len() < 1 << 20, "chunks stay small");
        rest.extend_from_slice(&data);
        let mut consumed = 0;
        while let Some(nl) = rest[consumed..].iter().position(|c| *c == b'\n') {
            let pair: Pair = serde_json::from_slice(&rest[consumed..consumed + nl]).unwrap();
            let t = expect::time_us(&pair);
            assert!(t >= last_us, "oldest first");
            last_us = t;
            assert!(
                want.remove(&pair.id),
                "exported twice or unknown: {}",
                pair.id
            );
            consumed += nl + 1;
        }
        rest.drain(..consumed);
    }
    assert!(
        want.is_empty(),
        "{} pairs missing from the export",
        want.len()
    );
    began.elapsed()
}

/// `GetPair` reads the stored pair back, decodes content encodings and gRPC messages, and
/// refuses bad and unknown ids clearly.
pub async fn get_pair_decodes(b: &impl Backend, sent: &mut Vec<Pair>) {
    use prost::Message as _;
    use std::io::Write;
    let text = br#"{"items":[1,2,3],"note":"decoded"}"#.to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&text).unwrap();
    let encodings: Vec<(&str, Vec<u8>)> = vec![
        ("gzip", gz.finish().unwrap()),
        ("zstd", zstd::encode_all(&text[..], 3).unwrap()),
        ("", text.clone()),
    ];
    let mut rng = Rng::new(61);
    let at = hours_ago(10.0);
    let mut made = Vec::new();
    for (i, (encoding, body)) in encodings.iter().enumerate() {
        let mut p = pair_at(at + Duration::from_millis(i as u64 * 10), &mut rng);
        let response = p.response.get_or_insert_with(Default::default);
        response.body = body.clone().into();
        response.body_size = body.len() as u64;
        response.content_encoding = (*encoding).into();
        made.push(p);
    }
    // A gRPC call whose messages are protobuf (a tapwire Header), one of them gzip-compressed.
    let mut grpc = pair_at(at + Duration::from_millis(100), &mut rng);
    grpc.protocol = "grpc".into();
    grpc.path = "/tapwire.v1.Query/GetPair".into();
    let header = tapwire_proto::v1::Header {
        name: "k".into(),
        value: "v".into(),
    }
    .encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&header).unwrap();
    grpc.response
        .get_or_insert_with(Default::default)
        .content_encoding = "gzip".into();
    grpc.messages = vec![
        tapwire_proto::v1::StreamMessage {
            from_client: true,
            data: header.clone().into(),
            size: header.len() as u64,
            ..Default::default()
        },
        tapwire_proto::v1::StreamMessage {
            from_client: false,
            compressed: true,
            data: gz.finish().unwrap().into(),
            ..Default::default()
        },
    ];
    made.push(grpc);
    // A call of a service whose schema the collector was given (`--descriptor-set` with
    // grpc.health.v1): its messages come back with field names.
    let mut health = pair_at(at + Duration::from_millis(200), &mut rng);
    health.protocol = "grpc".into();
    health.path = "/grpc.health.v1.Health/Check".into();
    let ask = tonic_health::pb::HealthCheckRequest {
        service: "cart".into(),
    };
    let answer = tonic_health::pb::HealthCheckResponse { status: 1 };
    health.messages = vec![
        tapwire_proto::v1::StreamMessage {
            from_client: true,
            data: ask.encode_to_vec().into(),
            ..Default::default()
        },
        tapwire_proto::v1::StreamMessage {
            from_client: false,
            data: answer.encode_to_vec().into(),
            ..Default::default()
        },
    ];
    made.push(health);
    b.ingest(&made).await.expect("ingest");
    sent.extend(made.iter().cloned());

    let mut client = b.query();
    for p in &made[..3] {
        let plain = client
            .get_pair(GetPairRequest {
                id: p.id.clone(),
                decode: false,
            })
            .await
            .unwrap()
            .into_inner();
        let stored = plain.pair.unwrap();
        assert_eq!(
            stored.response, p.response,
            "the stored pair comes back as sent"
        );
        assert!(plain.response_body.is_none());
        let decoded = client
            .get_pair(GetPairRequest {
                id: p.id.clone(),
                decode: true,
            })
            .await
            .unwrap()
            .into_inner();
        let body = decoded.response_body.unwrap();
        assert_eq!(body.error, "");
        assert_eq!(body.data.to_vec(), text);
    }
    let decoded = client
        .get_pair(GetPairRequest {
            id: made[3].id.clone(),
            decode: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decoded.messages_json.len(), 2);
    for json in &decoded.messages_json {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"1": "k", "2": "v"}),
            "schemaless by field number"
        );
    }
    let decoded = client
        .get_pair(GetPairRequest {
            id: made[4].id.clone(),
            decode: true,
        })
        .await
        .unwrap()
        .into_inner();
    let named: Vec<serde_json::Value> = decoded
        .messages_json
        .iter()
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
    assert_eq!(
        named,
        vec![
            serde_json::json!({"service": "cart"}),
            serde_json::json!({"status": "SERVING"})
        ],
        "named by the registered schema"
    );
    let unknown = uuid_v7(at, &mut rng);
    let err = client
        .get_pair(GetPairRequest {
            id: unknown,
            decode: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    let err = client
        .get_pair(GetPairRequest {
            id: "not-an-id".into(),
            decode: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
}

/// `Tail` streams the new pairs that match its filter, and only those.
pub async fn tail_follows(b: &impl Backend, sent: &mut Vec<Pair>) {
    let filter = Filter {
        service: "payments".into(),
        direction: 1,
        ..Default::default()
    };
    let mut stream = b
        .query()
        .tail(TailRequest {
            filter: Some(filter.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    // The subscription is live once the call returned; give the server task a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let now = SystemTime::now();
    let pairs = pairs_between(
        now - Duration::from_secs(5),
        Duration::from_secs(5),
        200,
        71,
    );
    b.ingest(&pairs).await.expect("ingest");
    sent.extend(pairs.iter().cloned());
    let mut want: HashSet<String> = pairs
        .iter()
        .filter(|p| p.service == "payments" && p.is_inbound)
        .map(|p| p.id.clone())
        .collect();
    assert!(!want.is_empty());
    while !want.is_empty() {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("tail delivered nothing for 10 s")
            .expect("tail ended")
            .expect("tail failed");
        assert!(
            want.remove(&next.id),
            "tail sent a pair outside its filter: {next:?}"
        );
    }
}

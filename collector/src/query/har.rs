//! HAR 1.2 (<http://www.softwareishard.com/blog/har-12-spec/>) entries from pairs, so an
//! export opens in browser dev tools and HAR-aware tools. tapwire's own fields are `_`-prefixed
//! as the spec asks for custom fields.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tapwire_proto::v1::{Header, Message, Pair};

use super::body_decode::decode_body;
use super::filter::{micros, to_system_time};

/// What comes before the first entry.
pub fn prologue() -> String {
    format!(
        "{{\"log\":{{\"version\":\"1.2\",\"creator\":{{\"name\":\"tapwire\",\"version\":\"{}\"}},\"entries\":[",
        env!("CARGO_PKG_VERSION")
    )
}

/// What comes after the last entry.
pub const EPILOGUE: &str = "]}}\n";

fn iso8601(ts: Option<&tapwire_proto::Timestamp>) -> String {
    let t = ts
        .and_then(|t| to_system_time(t, "time").ok())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    // pbjson serializes RFC 3339 (`+00:00`), the ISO 8601 form HAR asks for.
    serde_json::to_value(crate::query::filter::to_timestamp(t))
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn millis_between(
    a: Option<&tapwire_proto::Timestamp>,
    b: Option<&tapwire_proto::Timestamp>,
) -> f64 {
    match (
        a.and_then(|t| to_system_time(t, "time").ok()),
        b.and_then(|t| to_system_time(t, "time").ok()),
    ) {
        (Some(a), Some(b)) => ((micros(b) - micros(a)).max(0) as f64) / 1000.0,
        _ => 0.0,
    }
}

fn headers(list: &[Header]) -> Value {
    Value::Array(
        list.iter()
            .map(|h| json!({ "name": h.name, "value": h.value }))
            .collect(),
    )
}

fn header<'a>(message: Option<&'a Message>, name: &str) -> Option<&'a str> {
    message?
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// The body as HAR text: decoded content as UTF-8 text, or base64 with `encoding`.
fn content(message: Option<&Message>) -> (Value, usize) {
    let Some(m) = message else {
        return (json!({ "size": 0, "mimeType": "" }), 0);
    };
    let decoded = decode_body(&m.body, &m.content_encoding, m.body_truncated);
    let mime = header(Some(m), "content-type").unwrap_or("");
    let mut c = json!({
        "size": decoded.data.len(),
        "mimeType": mime,
    });
    match std::str::from_utf8(&decoded.data) {
        Ok(text) => c["text"] = Value::String(text.to_owned()),
        Err(_) => {
            c["text"] = Value::String(STANDARD.encode(&decoded.data));
            c["encoding"] = Value::String("base64".into());
        }
    }
    if !decoded.error.is_empty() {
        c["comment"] = Value::String(decoded.error);
    }
    (c, decoded.data.len())
}

fn http_version(pair: &Pair) -> &'static str {
    match pair.protocol.as_str() {
        "http2" | "grpc" => "HTTP/2.0",
        _ => "HTTP/1.1",
    }
}

fn query_string(path: &str) -> Value {
    let Some((_, query)) = path.split_once('?') else {
        return json!([]);
    };
    Value::Array(
        query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (name, value) = p.split_once('=').unwrap_or((p, ""));
                json!({ "name": name, "value": value })
            })
            .collect(),
    )
}

/// One HAR entry for `pair`.
pub fn entry(pair: &Pair) -> Value {
    let scheme = if pair.scheme.is_empty() {
        "http"
    } else {
        &pair.scheme
    };
    let url = format!("{scheme}://{}{}", pair.authority, pair.path);
    let (request_content, _) = content(pair.request.as_ref());
    let (response_content, _) = content(pair.response.as_ref());
    let body_size = |m: Option<&Message>| m.map_or(0, |m| m.body_size as i64);
    let mut request = json!({
        "method": pair.method,
        "url": url,
        "httpVersion": http_version(pair),
        "cookies": [],
        "headers": headers(pair.request.as_ref().map_or(&[][..], |m| &m.headers)),
        "queryString": query_string(&pair.path),
        "headersSize": -1,
        "bodySize": body_size(pair.request.as_ref()),
    });
    if pair.request.as_ref().is_some_and(|m| !m.body.is_empty()) {
        request["postData"] = json!({
            "mimeType": request_content["mimeType"],
            "text": request_content["text"],
        });
        if let Some(encoding) = request_content.get("encoding") {
            request["postData"]["_encoding"] = encoding.clone();
        }
    }
    let start = pair.start_time.as_ref();
    let send = millis_between(start, pair.request_end_time.as_ref());
    let wait = millis_between(
        pair.request_end_time.as_ref(),
        pair.response_start_time.as_ref(),
    );
    let receive = millis_between(pair.response_start_time.as_ref(), pair.end_time.as_ref());
    json!({
        "startedDateTime": iso8601(start),
        "time": pair.duration_ns as f64 / 1e6,
        "request": request,
        "response": {
            "status": pair.status,
            "statusText": "",
            "httpVersion": http_version(pair),
            "cookies": [],
            "headers": headers(pair.response.as_ref().map_or(&[][..], |m| &m.headers)),
            "content": response_content,
            "redirectURL": header(pair.response.as_ref(), "location").unwrap_or(""),
            "headersSize": -1,
            "bodySize": body_size(pair.response.as_ref()),
        },
        "cache": {},
        "timings": { "send": send, "wait": wait, "receive": receive },
        "serverIPAddress": server_ip(pair),
        "connection": pair.connection_id.to_string(),
        "_tapwire": {
            "id": pair.id,
            "direction": if pair.is_inbound { "inbound" } else { "outbound" },
            "protocol": pair.protocol,
            "grpc_status": pair.grpc_status,
            "service": pair.service,
            "namespace": pair.namespace,
            "pod": pair.pod,
            "node": pair.node,
            "complete": pair.complete,
            "truncated": pair.truncated,
        },
    })
}

/// The server's IP (without port): the remote end for outbound pairs, the local one inbound.
fn server_ip(pair: &Pair) -> String {
    let addr = if pair.is_inbound {
        &pair.local_addr
    } else {
        &pair.remote_addr
    };
    match addr.rsplit_once(':') {
        Some((ip, _)) => ip.trim_start_matches('[').trim_end_matches(']').to_owned(),
        None => addr.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapwire_proto::Timestamp;

    fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    #[test]
    fn an_entry_has_what_har_1_2_requires() {
        let body = zstd::encode_all(&b"{\"ok\":true}"[..], 1).unwrap();
        let pair = Pair {
            id: "id-1".into(),
            start_time: at(1_764_000_000, 0),
            request_end_time: at(1_764_000_000, 1_000_000),
            response_start_time: at(1_764_000_000, 4_000_000),
            end_time: at(1_764_000_000, 5_000_000),
            duration_ns: 5_000_000,
            protocol: "http2".into(),
            method: "POST".into(),
            scheme: "https".into(),
            authority: "api.local".into(),
            path: "/v1/items?x=1&y".into(),
            status: 201,
            remote_addr: "[::1]:443".into(),
            request: Some(Message {
                headers: vec![Header {
                    name: "content-type".into(),
                    value: "application/json".into(),
                }],
                body: b"{}".to_vec().into(),
                body_size: 2,
                ..Default::default()
            }),
            response: Some(Message {
                headers: vec![Header {
                    name: "Content-Type".into(),
                    value: "application/json".into(),
                }],
                body: body.into(),
                content_encoding: "zstd".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = entry(&pair);
        assert_eq!(e["startedDateTime"], "2025-11-24T16:00:00+00:00");
        assert_eq!(e["time"], 5.0);
        assert_eq!(e["request"]["url"], "https://api.local/v1/items?x=1&y");
        assert_eq!(e["request"]["httpVersion"], "HTTP/2.0");
        assert_eq!(e["request"]["queryString"][1]["name"], "y");
        assert_eq!(e["request"]["postData"]["text"], "{}");
        assert_eq!(e["response"]["content"]["text"], "{\"ok\":true}");
        assert_eq!(e["response"]["content"]["mimeType"], "application/json");
        assert_eq!(
            e["timings"],
            serde_json::json!({"send": 1.0, "wait": 3.0, "receive": 1.0})
        );
        assert_eq!(e["serverIPAddress"], "::1");
        // The whole document parses.
        let doc = format!("{}{}{}", prologue(), e, EPILOGUE);
        let v: Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["log"]["entries"].as_array().map(Vec::len), Some(1));
    }
}

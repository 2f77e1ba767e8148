use tapwire_proto::v1::Message;

use super::*;

fn h(name: &str, value: &str) -> Header {
    Header {
        name: name.into(),
        value: value.into(),
    }
}

fn pair_with(request: Message, response: Message) -> Pair {
    Pair {
        path: "/login?user=bob&access_token=abc123&Password=x".into(),
        request: Some(request),
        response: Some(response),
        ..Pair::default()
    }
}

#[test]
fn headers_query_and_json_body() {
    let body = br#"{"user":"bob","password":"hunter2","nested":{"api_key":"k"}}"#;
    let request = Message {
        headers: vec![
            h("Authorization", "Bearer xyz"),
            h("Cookie", "sid=1"),
            h("Content-Type", "application/json; charset=utf-8"),
            h("X-Custom-Secret", "zzz"),
        ],
        body: body.to_vec().into(),
        body_size: body.len() as u64,
        ..Message::default()
    };
    let response = Message {
        headers: vec![h("set-cookie", "sid=2"), h("X-Request-Id", "42")],
        ..Message::default()
    };
    let redactor = Redactor::new(&RedactionConfig {
        headers: vec!["X-Custom-Secret".into()],
        ..Default::default()
    })
    .expect("valid config");
    let mut pair = pair_with(request, response);
    redactor.redact(&mut pair);
    let req = pair.request.as_ref().expect("request");
    let values: Vec<_> = req.headers.iter().map(|h| h.value.as_str()).collect();
    assert_eq!(
        values,
        [
            "[REDACTED]",
            "[REDACTED]",
            "application/json; charset=utf-8",
            "[REDACTED]"
        ]
    );
    assert_eq!(
        std::str::from_utf8(&req.body).expect("utf-8"),
        r#"{"user":"bob","password":"[REDACTED]","nested":{"api_key":"[REDACTED]"}}"#
    );
    assert_eq!(req.body_size, body.len() as u64, "the wire size is kept");
    assert_eq!(
        pair.path,
        "/login?user=bob&access_token=[REDACTED]&Password=[REDACTED]"
    );
    let res = pair.response.as_ref().expect("response");
    assert_eq!(res.headers[0].value, "[REDACTED]");
    assert_eq!(res.headers[1].value, "42");
}

#[test]
fn encoded_bodies_are_left_alone() {
    let body = br#"{"password":"x"}"#;
    let request = Message {
        headers: vec![h("Content-Type", "application/json")],
        body: body.to_vec().into(),
        content_encoding: "gzip".into(),
        ..Message::default()
    };
    let mut pair = pair_with(request, Message::default());
    Redactor::default().redact(&mut pair);
    assert_eq!(&pair.request.as_ref().expect("request").body[..], body);
}

#[test]
fn form_bodies_and_patterns() {
    let request = Message {
        headers: vec![
            h("Content-Type", "application/x-www-form-urlencoded"),
            h("X-Note", "card 4111-1111-1111-1111"),
        ],
        body: b"user=a&client_secret=s3&card=4111-1111-1111-1111"
            .to_vec()
            .into(),
        ..Message::default()
    };
    let config = RedactionConfig {
        patterns: vec![r"\d{4}-\d{4}-\d{4}-\d{4}".into()],
        ..Default::default()
    };
    let redactor = Redactor::new(&config).expect("valid pattern");
    let mut pair = pair_with(request, Message::default());
    redactor.redact(&mut pair);
    let req = pair.request.as_ref().expect("request");
    assert_eq!(
        &req.body[..],
        b"user=a&client_secret=[REDACTED]&card=[REDACTED]"
    );
    assert_eq!(req.headers[1].value, "card [REDACTED]");
}

#[test]
fn bad_pattern_is_an_error() {
    let config = RedactionConfig {
        patterns: vec!["(".into()],
        ..Default::default()
    };
    assert!(Redactor::new(&config).is_err());
}

#[test]
fn websocket_text_messages() {
    let mut pair = Pair {
        messages: vec![tapwire_proto::v1::StreamMessage {
            kind: "text".into(),
            data: br#"{"token":"t"}"#.to_vec().into(),
            ..Default::default()
        }],
        ..Pair::default()
    };
    Redactor::default().redact(&mut pair);
    assert_eq!(&pair.messages[0].data[..], br#"{"token":"[REDACTED]"}"#);
}

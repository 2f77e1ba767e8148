//! gRPC framing: arbitrary DATA payloads cut at arbitrary points (with losses) through
//! the message framer, and the same bytes as a gRPC stream through the HTTP/2 parser.
//! Nothing may panic; kept data never exceeds the cap; sizes add up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapwire_protocols::grpc::{MessageFramer, parse_path, percent_decode};
use tapwire_protocols::hpack::Encoder;
use tapwire_protocols::http2::{HttpTwoParser, PREFACE, flag, kind, write_header};
use tapwire_protocols::{Chunk, Direction, Limits, ProtocolParser, Role};

fn frame(kind: u8, flags: u8, sid: u32, payload: &[u8], dst: &mut Vec<u8>) {
    write_header(payload.len(), kind, flags, sid, dst);
    dst.extend_from_slice(payload);
}

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    let _ = percent_decode(&text);
    let _ = parse_path(&text);

    // The framer alone.
    let mut framer = MessageFramer::new(true);
    let mut msgs = Vec::new();
    let mut data = input;
    while let Some((&len, tail)) = data.split_first() {
        let n = usize::from(len & 0x3f).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        if len & 0x40 != 0 {
            framer.lost(u64::from(len & 0x0f));
        }
        framer.push(bytes, 1, 32, &mut msgs);
        data = next;
    }
    framer.finish(&mut msgs);
    for m in &msgs {
        assert!(m.data.len() <= 32);
        assert!(m.data.len() as u64 <= m.size);
    }

    // The same bytes as a server-streaming call's response DATA.
    let limits = Limits {
        max_body_bytes: 32,
        stream_flush_bytes: 128,
        ..Limits::default()
    };
    let mut parser = HttpTwoParser::new(Role::Client, limits);
    let mut enc_c = Encoder::new(true);
    let mut enc_s = Encoder::new(true);
    let mut client = PREFACE.to_vec();
    let mut block = Vec::new();
    enc_c.encode(
        [
            (":method", "POST"),
            (":path", "/f.S/M"),
            ("content-type", "application/grpc"),
        ],
        &mut block,
    );
    frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &block,
        &mut client,
    );
    let mut server = Vec::new();
    let mut block = Vec::new();
    enc_s.encode(
        [(":status", "200"), ("content-type", "application/grpc")],
        &mut block,
    );
    frame(kind::HEADERS, flag::END_HEADERS, 1, &block, &mut server);
    for piece in input.chunks(100) {
        frame(kind::DATA, 0, 1, piece, &mut server);
    }
    let mut block = Vec::new();
    enc_s.encode([("grpc-status", "0")], &mut block);
    frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &block,
        &mut server,
    );
    let mut out = Vec::new();
    let chunk = |direction, data| Chunk {
        direction,
        data,
        time_ns: 1,
        lost_before: 0,
        events_lost: false,
    };
    parser.on_chunk(&chunk(Direction::Egress, &client), &mut out);
    for piece in server.chunks(usize::from(input.first().copied().unwrap_or(7)).max(1)) {
        parser.on_chunk(&chunk(Direction::Ingress, piece), &mut out);
    }
    parser.on_close(2, &mut out);
    let body: u64 = out
        .iter()
        .filter_map(|p| p.response.as_ref())
        .map(|m| m.body_size)
        .sum();
    assert_eq!(body, input.len() as u64);
    assert!(
        out.last()
            .is_some_and(|p| p.complete && p.grpc_status == Some(0))
    );
});

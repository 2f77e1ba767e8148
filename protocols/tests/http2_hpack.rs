//! HPACK decoding: the RFC 7541 Appendix C examples, size updates, joining a
//! connection mid-way, and round trips through the encoder.

use proptest::prelude::*;
use tapwire_proto::v1::Header;
use tapwire_protocols::hpack::{Decoder, Encoder, HpackError, Indexing, UNKNOWN_NAME, huffman};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn decode(d: &mut Decoder, block: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let summary = d.decode(block, usize::MAX, &mut out).unwrap();
    assert_eq!(summary.unknown_refs, 0);
    out.into_iter().map(|h| (h.name, h.value)).collect()
}

fn list(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// C.3 (plain) and C.4 (Huffman): three requests sharing one dynamic table.
fn check_requests(blocks: [&str; 3]) {
    let mut d = Decoder::new(64 * 1024);
    let base = [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ];
    assert_eq!(decode(&mut d, &hex(blocks[0])), list(&base));
    assert_eq!((d.table_len(), d.table_size()), (1, 57));
    let mut second = base.to_vec();
    second.push(("cache-control", "no-cache"));
    assert_eq!(decode(&mut d, &hex(blocks[1])), list(&second));
    assert_eq!((d.table_len(), d.table_size()), (2, 110));
    let third = [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ];
    assert_eq!(decode(&mut d, &hex(blocks[2])), list(&third));
    assert_eq!((d.table_len(), d.table_size()), (3, 164));
}

#[test]
fn rfc7541_c3_requests_without_huffman() {
    check_requests([
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ]);
}

#[test]
fn rfc7541_c4_requests_with_huffman() {
    check_requests([
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ]);
}

/// C.5 (plain) and C.6 (Huffman): three responses with a 256-byte table, so entries
/// are evicted.
fn check_responses(blocks: [&str; 3]) {
    let mut d = Decoder::new(64 * 1024);
    d.set_max_table_size(256);
    let first = [
        (":status", "302"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ];
    assert_eq!(decode(&mut d, &hex(blocks[0])), list(&first));
    assert_eq!((d.table_len(), d.table_size()), (4, 222));
    let mut second = first;
    second[0] = (":status", "307");
    assert_eq!(decode(&mut d, &hex(blocks[1])), list(&second));
    assert_eq!((d.table_len(), d.table_size()), (4, 222));
    let third = [
        (":status", "200"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
        ("location", "https://www.example.com"),
        ("content-encoding", "gzip"),
        (
            "set-cookie",
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
        ),
    ];
    assert_eq!(decode(&mut d, &hex(blocks[2])), list(&third));
    assert_eq!((d.table_len(), d.table_size()), (3, 215));
}

#[test]
fn rfc7541_c5_responses_without_huffman() {
    check_responses([
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
         6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
         54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
         5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
         3d31",
    ]);
}

#[test]
fn rfc7541_c6_responses_with_huffman() {
    check_responses([
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
         9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ]);
}

#[test]
fn rfc7541_c2_literal_representations() {
    // C.2.1 with indexing, C.2.2 without, C.2.3 never indexed, C.2.4 indexed.
    let mut d = Decoder::new(4096);
    assert_eq!(
        decode(
            &mut d,
            &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572")
        ),
        list(&[("custom-key", "custom-header")])
    );
    assert_eq!(d.table_size(), 55);
    assert_eq!(
        decode(&mut d, &hex("040c 2f73 616d 706c 652f 7061 7468")),
        list(&[(":path", "/sample/path")])
    );
    assert_eq!(
        decode(&mut d, &hex("1008 7061 7373 776f 7264 0673 6563 7265 74")),
        list(&[("password", "secret")])
    );
    assert_eq!(decode(&mut d, &hex("82")), list(&[(":method", "GET")]));
    assert_eq!(d.table_len(), 1);
}

#[test]
fn size_updates_evict_and_resize() {
    let mut enc = Encoder::new(true);
    let mut d = Decoder::new(64 * 1024);
    let mut block = Vec::new();
    enc.encode([("x-a", "1"), ("x-b", "2"), ("x-c", "3")], &mut block);
    assert_eq!(decode(&mut d, &block).len(), 3);
    assert_eq!(d.table_len(), 3);
    // Shrink to one entry's worth: the two oldest are evicted.
    enc.set_max_table_size(40);
    let mut block = Vec::new();
    enc.encode([("x-c", "3")], &mut block);
    assert_eq!(block[0] & 0xe0, 0x20, "block starts with a size update");
    assert_eq!(decode(&mut d, &block), list(&[("x-c", "3")]));
    assert_eq!(d.max_table_size(), Some(40));
    assert_eq!(d.table_len(), 1);
    // Size zero empties the table.
    enc.set_max_table_size(0);
    let mut block = Vec::new();
    enc.encode([("x-d", "4")], &mut block);
    assert_eq!(decode(&mut d, &block), list(&[("x-d", "4")]));
    assert_eq!(d.table_len(), 0);
}

#[test]
fn joined_midway_emits_placeholders_then_learns() {
    let mut enc = Encoder::new(true);
    // Blocks sent before the decoder started watching.
    let mut early = Vec::new();
    enc.encode(
        [("user-agent", "grpc-go/1.60"), ("x-tenant", "acme")],
        &mut early,
    );
    // The first block the late decoder sees references both unseen entries, and
    // teaches it a new one.
    let mut seen = Vec::new();
    enc.encode(
        [
            (":method", "POST"),
            ("user-agent", "grpc-go/1.60"),
            ("x-request-id", "r1"),
        ],
        &mut seen,
    );
    let mut d = Decoder::joined_midway(64 * 1024);
    let mut out = Vec::new();
    let summary = d.decode(&seen, usize::MAX, &mut out).unwrap();
    assert_eq!(summary.unknown_refs, 1);
    assert_eq!(
        out[0],
        Header {
            name: ":method".into(),
            value: "POST".into()
        }
    );
    assert_eq!(out[1].name, UNKNOWN_NAME);
    assert_eq!(
        out[2],
        Header {
            name: "x-request-id".into(),
            value: "r1".into()
        }
    );
    // The learnt entry decodes; the unseen ones stay placeholders.
    let mut later = Vec::new();
    enc.encode([("x-request-id", "r1"), ("x-tenant", "acme")], &mut later);
    let mut out = Vec::new();
    let summary = d.decode(&later, usize::MAX, &mut out).unwrap();
    assert_eq!(summary.unknown_refs, 1);
    assert_eq!(out[0].value, "r1");
    assert_eq!(out[1].name, UNKNOWN_NAME);
    // Once every referenced entry was learnt, blocks decode fully.
    let mut full = Vec::new();
    enc.encode([("x-request-id", "r1")], &mut full);
    assert_eq!(decode(&mut d, &full), list(&[("x-request-id", "r1")]));
}

#[test]
fn literal_with_unknown_name_is_learnt_as_partial() {
    let mut enc = Encoder::new(false);
    let mut early = Vec::new();
    enc.encode([("x-trace", "a")], &mut early);
    let mut seen = Vec::new();
    // Name indexed from the unseen entry, value literal, incrementally indexed.
    enc.literal("x-trace", "b", Indexing::Incremental, &mut seen);
    let mut d = Decoder::joined_midway(4096);
    let mut out = Vec::new();
    assert_eq!(
        d.decode(&seen, usize::MAX, &mut out).unwrap().unknown_refs,
        1
    );
    assert_eq!(
        out[0],
        Header {
            name: UNKNOWN_NAME.into(),
            value: "b".into()
        }
    );
    let mut again = Vec::new();
    enc.encode([("x-trace", "b")], &mut again);
    let mut out = Vec::new();
    // The learnt entry still has an unknown name, and says so.
    assert_eq!(
        d.decode(&again, usize::MAX, &mut out).unwrap().unknown_refs,
        1
    );
    assert_eq!(out[0].value, "b");
}

#[test]
fn errors_reset_the_table() {
    let mut d = Decoder::new(4096);
    let mut enc = Encoder::new(false);
    let mut block = Vec::new();
    enc.encode([("x-a", "1")], &mut block);
    decode(&mut d, &block);
    assert_eq!(d.table_len(), 1);
    let mut out = Vec::new();
    assert_eq!(
        d.decode(&[0x80], usize::MAX, &mut out),
        Err(HpackError::ZeroIndex)
    );
    assert_eq!(d.table_len(), 0);
    assert_eq!(d.max_table_size(), None);
    assert_eq!(
        d.decode(&[0x41, 0x05, b'a'], usize::MAX, &mut out),
        Err(HpackError::Truncated)
    );
    assert_eq!(
        d.decode(
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            usize::MAX,
            &mut out
        ),
        Err(HpackError::IntegerOverflow)
    );
}

#[test]
fn list_cap_drops_fields_but_keeps_the_table() {
    let mut enc = Encoder::new(false);
    let mut block = Vec::new();
    enc.encode(
        [("a", "1"), ("big", &"x".repeat(100)), ("c", "3")],
        &mut block,
    );
    let mut d = Decoder::new(4096);
    let mut out = Vec::new();
    let summary = d.decode(&block, 10, &mut out).unwrap();
    assert_eq!(summary.dropped, 1);
    assert_eq!(out.len(), 2);
    assert_eq!(d.table_len(), 3);
}

proptest! {
    #[test]
    fn encoder_decoder_round_trip(
        blocks in prop::collection::vec(
            prop::collection::vec(("[a-z-]{1,12}", "[ -~]{0,40}"), 0..8), 1..8),
        huff in any::<bool>(),
        size in prop::option::of(0usize..600),
    ) {
        let mut enc = Encoder::new(huff);
        let mut d = Decoder::new(64 * 1024);
        for (n, fields) in blocks.iter().enumerate() {
            if n == 1 && let Some(size) = size {
                enc.set_max_table_size(size);
            }
            let mut block = Vec::new();
            enc.encode(fields.iter().map(|(a, b)| (a.as_str(), b.as_str())), &mut block);
            let got = decode(&mut d, &block);
            prop_assert_eq!(got, fields.clone());
        }
    }

    #[test]
    fn huffman_round_trip(data in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut enc = Vec::new();
        huffman::encode(&data, &mut enc);
        let mut dec = Vec::new();
        prop_assert!(huffman::decode(&enc, &mut dec).is_ok());
        prop_assert_eq!(dec, data);
    }

    #[test]
    fn decoder_never_panics(data in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut d = Decoder::joined_midway(4096);
        let mut out = Vec::new();
        let _ = d.decode(&data, 1024, &mut out);
        prop_assert!(out.iter().map(|h| h.name.len() + h.value.len()).sum::<usize>() <= 1024);
    }
}

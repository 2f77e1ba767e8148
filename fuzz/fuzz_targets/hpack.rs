//! HPACK: arbitrary header blocks through fresh and mid-way decoders (never panic,
//! caps respected), Huffman decoding, and encoder→decoder round trips of arbitrary
//! field lists (what is encoded must decode to the same list).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapwire_protocols::hpack::{Decoder, Encoder, huffman};

fuzz_target!(|input: &[u8]| {
    let Some((&control, rest)) = input.split_first() else {
        return;
    };
    // Arbitrary blocks, cut where the input says, through both kinds of decoder.
    let mut fresh = Decoder::new(4096);
    let mut late = Decoder::joined_midway(4096);
    let mut data = rest;
    while let Some((&len, tail)) = data.split_first() {
        let n = usize::from(len).min(tail.len());
        let (block, next) = tail.split_at(n);
        for d in [&mut fresh, &mut late] {
            let mut out = Vec::new();
            let _ = d.decode(block, 512, &mut out);
            let kept: usize = out.iter().map(|h| h.name.len() + h.value.len()).sum();
            assert!(kept <= 512);
            assert!(d.table_size() <= 4096 + 64 * 1024);
        }
        data = next;
    }
    let mut plain = Vec::new();
    let _ = huffman::decode(rest, &mut plain);

    // Round trip: fields made from the input's bytes.
    let text = String::from_utf8_lossy(rest);
    let fields: Vec<(&str, &str)> = text
        .split('\n')
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| !n.is_empty())
        .take(32)
        .collect();
    let mut enc = Encoder::new(control & 1 != 0);
    let mut dec = Decoder::new(64 * 1024);
    if control & 2 != 0 {
        enc.set_max_table_size(usize::from(control) * 4);
    }
    for half in fields.chunks(8) {
        let mut block = Vec::new();
        enc.encode(half.iter().copied(), &mut block);
        let mut out = Vec::new();
        let summary = dec
            .decode(&block, usize::MAX, &mut out)
            .expect("own encoding decodes");
        assert_eq!(summary.unknown_refs, 0);
        let got: Vec<(&str, &str)> = out
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(got, half);
    }
});

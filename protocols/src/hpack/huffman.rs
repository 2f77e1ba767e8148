//! HPACK's static Huffman code (RFC 7541 §5.2, Appendix B).
//!
//! The code is canonical (codes of one length are consecutive, and shorter codes sort
//! before longer ones), so decoding needs no tree: a 30-bit window compared against one
//! limit per code length finds each symbol.

#[path = "huffman_table.rs"]
mod table;

use table::CODES;

/// The longest code (EOS and a few rare bytes) in bits.
const MAX_LEN: usize = 30;
const EOS: u16 = 256;

/// Why a Huffman-coded string could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HuffmanError {
    /// The string contained the EOS symbol, which RFC 7541 forbids.
    #[error("huffman string contains EOS")]
    Eos,
    /// The final bits were not a prefix of EOS, or longer than 7 bits.
    #[error("invalid huffman padding")]
    Padding,
}

/// The canonical decoding tables, derived from [`CODES`] at compile time.
struct Canonical {
    /// Symbols in code order.
    symbols: [u16; 257],
    /// Per length: the numerically first code of that length.
    first: [u32; MAX_LEN + 1],
    /// Per length: index in `symbols` of the first code of that length.
    offset: [u16; MAX_LEN + 1],
    /// Per length: exclusive bound of all codes up to that length, left-justified to
    /// `MAX_LEN` bits (0 for lengths without codes).
    limit: [u32; MAX_LEN + 1],
}

const fn build() -> Canonical {
    let mut symbols = [0u16; 257];
    let mut first = [0u32; MAX_LEN + 1];
    let mut offset = [0u16; MAX_LEN + 1];
    let mut limit = [0u32; MAX_LEN + 1];
    let mut n = 0usize;
    let mut len = 1usize;
    let mut bound = 0u32;
    while len <= MAX_LEN {
        let mut count = 0u32;
        let mut sym = 0usize;
        offset[len] = n as u16;
        while sym < 257 {
            if CODES[sym].1 as usize == len {
                if count == 0 {
                    first[len] = CODES[sym].0;
                }
                symbols[n] = sym as u16;
                n += 1;
                count += 1;
            }
            sym += 1;
        }
        if count > 0 {
            bound = (first[len] + count) << (MAX_LEN - len);
        }
        limit[len] = bound;
        len += 1;
    }
    Canonical {
        symbols,
        first,
        offset,
        limit,
    }
}

static CANONICAL: Canonical = build();

/// The shortest code length; no window is compared below it.
const MIN_LEN: usize = 5;

/// Decodes a Huffman-coded string, appending the bytes to `dst`.
pub fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let t = &CANONICAL;
    dst.reserve(src.len() + src.len() / 2);
    // `acc` holds `bits` unread bits, right-aligned.
    let mut acc: u64 = 0;
    let mut bits: usize = 0;
    let mut input = src.iter();
    loop {
        while bits <= 56 {
            match input.next() {
                Some(&b) => {
                    acc = (acc << 8) | u64::from(b);
                    bits += 8;
                }
                None => break,
            }
        }
        if bits == 0 {
            return Ok(());
        }
        // Left-justify the next MAX_LEN bits, padding with ones past the end (the
        // padding HPACK uses is the EOS prefix, all ones).
        let window = if bits >= MAX_LEN {
            ((acc >> (bits - MAX_LEN)) & ((1 << MAX_LEN) - 1)) as u32
        } else {
            let ones = (1u64 << (MAX_LEN - bits)) - 1;
            (((acc & ((1 << bits) - 1)) << (MAX_LEN - bits)) | ones) as u32
        };
        let mut len = MIN_LEN;
        while len < MAX_LEN && window >= t.limit[len] {
            len += 1;
        }
        if len > bits {
            // Fewer bits remain than the code needs: they are padding, which must be
            // all ones and shorter than a byte.
            let rest = acc & ((1 << bits) - 1);
            return if bits < 8 && rest == (1 << bits) - 1 {
                Ok(())
            } else {
                Err(HuffmanError::Padding)
            };
        }
        let code = window >> (MAX_LEN - len);
        let index = usize::from(t.offset[len]) + code.wrapping_sub(t.first[len]) as usize;
        let sym = t.symbols.get(index).copied().unwrap_or(EOS);
        if sym == EOS {
            return Err(HuffmanError::Eos);
        }
        dst.push(sym as u8);
        bits -= len;
        acc &= (1u64 << bits).wrapping_sub(1);
    }
}

/// Huffman-encodes `src`, appending to `dst`. The agent never encodes; tests, fuzz
/// seeds and benches use this to build realistic HPACK blocks.
pub fn encode(src: &[u8], dst: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in src {
        let (code, len) = CODES[usize::from(b)];
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            dst.push((acc >> bits) as u8);
        }
        acc &= (1u64 << bits) - 1;
    }
    if bits > 0 {
        let pad = 8 - bits;
        dst.push(((acc << pad) | ((1 << pad) - 1)) as u8);
    }
}

/// The length `src` would have Huffman-encoded, in bytes.
pub fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src
        .iter()
        .map(|&b| usize::from(CODES[usize::from(b)].1))
        .sum();
    bits.div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255u8).collect();
        let mut enc = Vec::new();
        encode(&all, &mut enc);
        assert_eq!(enc.len(), encoded_len(&all));
        let mut dec = Vec::new();
        decode(&enc, &mut dec).unwrap();
        assert_eq!(dec, all);
    }

    #[test]
    fn rfc7541_c4_www_example_com() {
        let enc = [
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        let mut dec = Vec::new();
        decode(&enc, &mut dec).unwrap();
        assert_eq!(dec, b"www.example.com");
    }

    #[test]
    fn rejects_eos_and_bad_padding() {
        // EOS: 30 ones, padded with ones to 32 bits.
        assert_eq!(decode(&[0xff; 4], &mut Vec::new()), Err(HuffmanError::Eos));
        // '0' is 00000; padding of zeros is invalid.
        assert_eq!(decode(&[0x00], &mut Vec::new()), Err(HuffmanError::Padding));
        // A full byte of padding is too long.
        assert_eq!(decode(&[0xff], &mut Vec::new()), Err(HuffmanError::Padding));
    }

    #[test]
    fn empty_is_empty() {
        let mut dec = Vec::new();
        decode(&[], &mut dec).unwrap();
        assert!(dec.is_empty());
    }
}

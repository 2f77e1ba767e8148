//! Standard base64 (RFC 4648, padded) for the raw output, with an AVX2 path.
//!
//! The raw output base64-encodes every captured byte: at saturation (wrk -> nginx)
//! the `base64` crate's scalar engine was the largest item of the agent's CPU time
//! (about 0.9 us per request). The AVX2 path is Muła and Lemire's ("Faster Base64
//! Encoding and Decoding using AVX2 Instructions", 2018): 24 input bytes become 32
//! characters per step; the tail (fewer than 28 bytes, starting at a multiple of 3)
//! and CPUs without AVX2 use the crate.

use base64::{Engine as _, engine::general_purpose::STANDARD};

/// Appends the base64 encoding of `input` to `out`.
pub fn encode_into(input: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + input.len().div_ceil(3) * 4, 0);
    let dst = &mut out[start..];
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available (checked just above).
        done = unsafe { avx2::encode_blocks(input, dst) };
    }
    let written = STANDARD
        .encode_slice(&input[done..], &mut dst[done / 3 * 4..])
        .expect("the output was sized for the whole input");
    debug_assert_eq!(done / 3 * 4 + written, dst.len());
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Encodes whole 24-byte blocks of `input` while at least 28 bytes are left (each
    /// step loads 16 bytes at the block start and 16 at +12); returns the input bytes
    /// consumed (a multiple of 24). `out` holds at least 4/3 of `input`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn encode_blocks(input: &[u8], out: &mut [u8]) -> usize {
        let mut i = 0;
        let mut o = 0;
        while i + 28 <= input.len() {
            debug_assert!(o + 32 <= out.len());
            // SAFETY: i + 28 <= input.len() bounds both 16-byte loads; the output has
            // room for 32 bytes at o (4 characters per 3 input bytes, i + 24 <= len).
            unsafe {
                let lo = _mm_loadu_si128(input.as_ptr().add(i).cast());
                let hi = _mm_loadu_si128(input.as_ptr().add(i + 12).cast());
                let v = _mm256_set_m128i(hi, lo);
                let chars = translate(reshuffle(v));
                _mm256_storeu_si256(out.as_mut_ptr().add(o).cast(), chars);
            }
            i += 24;
            o += 32;
        }
        i
    }

    /// Spreads each 3-byte group (bytes 0..12 of both lanes) over 4 bytes and extracts
    /// the four 6-bit values into the low bits of each byte.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn reshuffle(v: __m256i) -> __m256i {
        let v = _mm256_shuffle_epi8(
            v,
            _mm256_setr_epi8(
                1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10, //
                1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10,
            ),
        );
        let t0 = _mm256_and_si256(v, _mm256_set1_epi32(0x0fc0_fc00));
        let t1 = _mm256_mulhi_epu16(t0, _mm256_set1_epi32(0x0400_0040));
        let t2 = _mm256_and_si256(v, _mm256_set1_epi32(0x003f_03f0));
        let t3 = _mm256_mullo_epi16(t2, _mm256_set1_epi32(0x0100_0010));
        _mm256_or_si256(t1, t3)
    }

    /// Maps 6-bit values to the standard alphabet: an offset per range
    /// (A-Z, a-z, 0-9, '+', '/') picked with one byte shuffle.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn translate(v: __m256i) -> __m256i {
        let offsets = _mm256_setr_epi8(
            65, 71, -4, -4, -4, -4, -4, -4, -4, -4, -4, -4, -19, -16, 0, 0, //
            65, 71, -4, -4, -4, -4, -4, -4, -4, -4, -4, -4, -19, -16, 0, 0,
        );
        let mut index = _mm256_subs_epu8(v, _mm256_set1_epi8(51));
        let letters_lower = _mm256_cmpgt_epi8(v, _mm256_set1_epi8(25));
        index = _mm256_sub_epi8(index, letters_lower);
        _mm256_add_epi8(v, _mm256_shuffle_epi8(offsets, index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_base64_crate_for_every_length_and_byte() {
        // A simple generator: every byte value appears, at every offset mod 3.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let data: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .chain(0..=255)
            .collect();
        for len in (0..300).chain([1000, 1023, 1024, 1025, 4340]) {
            for offset in [0, 1, 5] {
                let input = &data[offset..offset + len];
                let mut out = b"prefix".to_vec();
                encode_into(input, &mut out);
                assert_eq!(&out[..6], b"prefix");
                assert_eq!(
                    std::str::from_utf8(&out[6..]).unwrap(),
                    STANDARD.encode(input),
                    "length {len}, offset {offset}"
                );
            }
        }
    }
}

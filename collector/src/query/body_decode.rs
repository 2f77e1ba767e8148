//! Undoing HTTP content encodings (gzip, deflate, br, zstd) and gRPC message compression,
//! with a cap on the decoded size so a small hostile body cannot exhaust memory.

use std::io::Read;

/// The largest decoded body or message.
pub const MAX_DECODED: usize = 16 << 20;

/// A decoded body, or the reason it could not be decoded (with what was decoded before).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// The decoded bytes (a prefix when `error` is set and decoding stopped midway).
    pub data: Vec<u8>,
    /// Why decoding failed or stopped; empty on success.
    pub error: String,
}

/// Undoes `content_encoding` (a comma-separated list, applied in order, so undone in reverse).
/// `truncated` says the body holds only a prefix, which makes a decoder's early end expected.
pub fn decode_body(body: &[u8], content_encoding: &str, truncated: bool) -> Decoded {
    let mut data = body.to_vec();
    let encodings: Vec<String> = content_encoding
        .split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e != "identity")
        .collect();
    for encoding in encodings.iter().rev() {
        match decode_one(&data, encoding) {
            Ok(out) => data = out,
            Err((partial, why)) => {
                let error = if truncated {
                    format!("{encoding}: body truncated by the capture, decoded a prefix ({why})")
                } else {
                    format!("{encoding}: {why}")
                };
                return Decoded {
                    data: partial,
                    error,
                };
            }
        }
    }
    Decoded {
        data,
        error: String::new(),
    }
}

/// Decodes one encoding; on failure returns what was decoded so far and why it stopped.
pub fn decode_one(data: &[u8], encoding: &str) -> Result<Vec<u8>, (Vec<u8>, String)> {
    match encoding {
        "gzip" | "x-gzip" => read_capped(flate2::read::MultiGzDecoder::new(data)),
        // "deflate" is zlib-wrapped by the RFC, raw deflate in practice often enough.
        "deflate" => read_capped(flate2::read::ZlibDecoder::new(data))
            .or_else(|_| read_capped(flate2::read::DeflateDecoder::new(data))),
        "br" => read_capped(brotli::Decompressor::new(data, 64 << 10)),
        "zstd" => match zstd::stream::read::Decoder::new(data) {
            Ok(decoder) => read_capped(decoder),
            Err(e) => Err((Vec::new(), e.to_string())),
        },
        other => Err((
            Vec::new(),
            format!("unsupported content encoding {other:?}"),
        )),
    }
}

fn read_capped(reader: impl Read) -> Result<Vec<u8>, (Vec<u8>, String)> {
    let mut out = Vec::new();
    let mut limited = reader.take(MAX_DECODED as u64 + 1);
    match limited.read_to_end(&mut out) {
        Ok(_) if out.len() > MAX_DECODED => {
            out.truncate(MAX_DECODED);
            Err((out, format!("decoded size exceeds {MAX_DECODED} bytes")))
        }
        Ok(_) => Ok(out),
        Err(e) => Err((out, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TEXT: &[u8] = b"{\"hello\":\"world\",\"n\":[1,2,3,4,5,6,7,8,9,10]}";

    #[test]
    fn every_supported_encoding_round_trips() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(TEXT).unwrap();
        let gz = gz.finish().unwrap();
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zl.write_all(TEXT).unwrap();
        let zl = zl.finish().unwrap();
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        raw.write_all(TEXT).unwrap();
        let raw = raw.finish().unwrap();
        let mut br = Vec::new();
        brotli::CompressorWriter::new(&mut br, 4096, 5, 22)
            .write_all(TEXT)
            .unwrap();
        let zs = zstd::encode_all(TEXT, 3).unwrap();
        for (data, enc) in [
            (gz.clone(), "gzip"),
            (zl, "deflate"),
            (raw, "deflate"),
            (br, "br"),
            (zs, "zstd"),
        ] {
            let d = decode_body(&data, enc, false);
            assert_eq!(d.error, "", "{enc}");
            assert_eq!(d.data, TEXT, "{enc}");
        }
        // Stacked encodings are undone in reverse order.
        let twice = zstd::encode_all(&gz[..], 1).unwrap();
        assert_eq!(decode_body(&twice, "gzip, zstd", false).data, TEXT);
        assert_eq!(decode_body(TEXT, "identity", false).data, TEXT);
    }

    #[test]
    fn garbage_and_truncation_are_reported_not_fatal() {
        let d = decode_body(b"not gzip at all", "gzip", false);
        assert!(d.error.starts_with("gzip:"), "{}", d.error);
        let zs = zstd::encode_all(&[7u8; 100_000][..], 3).unwrap();
        let d = decode_body(&zs[..zs.len() / 2], "zstd", true);
        assert!(d.error.contains("truncated"), "{}", d.error);
        assert!(
            decode_body(b"x", "compress", false)
                .error
                .contains("unsupported")
        );
    }

    #[test]
    fn bombs_stop_at_the_cap() {
        let bomb = zstd::encode_all(&vec![0u8; MAX_DECODED + 10][..], 19).unwrap();
        let d = decode_body(&bomb, "zstd", false);
        assert_eq!(d.data.len(), MAX_DECODED);
        assert!(d.error.contains("exceeds"));
    }
}

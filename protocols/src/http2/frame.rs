//! The HTTP/2 frame layer (RFC 9113 §4 and §6): headers, types, flags, and the
//! plausibility checks used to find frames in a stream joined mid-way.

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Every frame starts with this many bytes.
pub const HEADER_LEN: usize = 9;

/// Frames longer than this are not believed when looking for frames in unknown bytes:
/// 1 MiB is far above what peers configure (16 KiB default), and it rejects TLS
/// records and HTTP/1 text, whose first bytes read as larger lengths.
const PLAUSIBLE_MAX_LEN: usize = 1 << 20;

/// Frame types (RFC 9113 §6).
pub mod kind {
    #![allow(missing_docs)] // The names are RFC 9113's.
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags (RFC 9113 §6).
pub mod flag {
    #![allow(missing_docs)] // The names are RFC 9113's.
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// A parsed 9-byte frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length in bytes (24 bits).
    pub length: usize,
    /// The frame type, one of [`kind`] (or an extension type, which is skipped).
    pub kind: u8,
    /// Type-specific flags, see [`flag`].
    pub flags: u8,
    /// The stream (31 bits); 0 for connection-level frames.
    pub stream_id: u32,
    /// The reserved bit: peers send 0.
    pub reserved: bool,
}

impl FrameHeader {
    /// Parses the first 9 bytes of `data`, if there are that many.
    pub fn parse(data: &[u8]) -> Option<Self> {
        let h: &[u8; HEADER_LEN] = data.get(..HEADER_LEN)?.try_into().ok()?;
        let length = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let sid = u32::from_be_bytes([h[5], h[6], h[7], h[8]]);
        Some(Self {
            length,
            kind: h[3],
            flags: h[4],
            stream_id: sid & 0x7fff_ffff,
            reserved: sid & 0x8000_0000 != 0,
        })
    }

    /// True when `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// True when the header looks like one a real peer would send: known type, only
    /// that type's flags, the right stream (zero or not), a length the type allows.
    pub fn is_plausible(&self) -> bool {
        use kind::*;
        if self.reserved || self.length > PLAUSIBLE_MAX_LEN {
            return false;
        }
        let on_stream = self.stream_id != 0;
        let (allowed_flags, stream_ok, length_ok) = match self.kind {
            DATA => (0x09, on_stream, true),
            HEADERS => (0x2d, on_stream, true),
            PRIORITY => (0, on_stream, self.length == 5),
            RST_STREAM => (0, on_stream, self.length == 4),
            SETTINGS => (
                0x01,
                !on_stream,
                if self.has(flag::ACK) {
                    self.length == 0
                } else {
                    self.length.is_multiple_of(6)
                },
            ),
            PUSH_PROMISE => (0x0c, on_stream, self.length >= 4),
            PING => (0x01, !on_stream, self.length == 8),
            GOAWAY => (0, !on_stream, self.length >= 8),
            WINDOW_UPDATE => (0, true, self.length == 4),
            CONTINUATION => (0x04, on_stream, true),
            _ => return false,
        };
        self.flags & !allowed_flags == 0 && stream_ok && length_ok
    }
}

/// True when `data` plausibly starts with HTTP/2 frames: used to recognise a connection
/// joined mid-way. The first frame header must be plausible, and so must each following
/// header that lies within `data` (up to four frames are checked).
pub fn looks_like_frames(data: &[u8]) -> bool {
    let mut pos = 0usize;
    for checked in 0..4 {
        let Some(header) = data.get(pos..).and_then(FrameHeader::parse) else {
            // The first header must be complete; a later one may be cut by the chunk.
            return checked > 0;
        };
        if !header.is_plausible() {
            return false;
        }
        pos += HEADER_LEN + header.length;
        if pos >= data.len() {
            return true;
        }
    }
    true
}

/// True when `data` starts with a server's connection preface: a SETTINGS frame (not an
/// ACK) on stream 0. A server may write it as soon as it accepts, so on h2c with prior
/// knowledge it can be the first thing captured, before the client's `PRI *` preface.
pub fn is_server_preface(data: &[u8]) -> bool {
    FrameHeader::parse(data)
        .is_some_and(|h| h.kind == kind::SETTINGS && !h.has(flag::ACK) && h.is_plausible())
}

/// Finds the first offset in `data` from which [`looks_like_frames`] holds, used to
/// resynchronise after lost bytes.
pub fn find_frame_start(data: &[u8]) -> Option<usize> {
    (0..data.len().saturating_sub(HEADER_LEN - 1)).find(|&i| {
        looks_like_frames(&data[i..])
            // A lone frame header at the very end proves little; wait for more.
            && (data.len() - i > HEADER_LEN || i == 0)
    })
}

/// Removes padding (RFC 9113 §6.1): returns the payload without the pad-length byte
/// and the padding, or `None` when the padding is longer than the frame.
pub fn strip_padding<'a>(header: &FrameHeader, payload: &'a [u8]) -> Option<&'a [u8]> {
    if !header.has(flag::PADDED) {
        return Some(payload);
    }
    let (&pad, rest) = payload.split_first()?;
    rest.len()
        .checked_sub(usize::from(pad))
        .map(|end| &rest[..end])
}

/// Writes a frame header; tests, benches and fuzz seeds build streams with it.
pub fn write_header(length: usize, kind: u8, flags: u8, stream_id: u32, dst: &mut Vec<u8>) {
    dst.extend_from_slice(&(length as u32).to_be_bytes()[1..]);
    dst.push(kind);
    dst.push(flags);
    dst.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        write_header(payload.len(), kind, flags, sid, &mut v);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn recognises_frames_and_rejects_other_protocols() {
        let mut d = frame(kind::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
        d.extend(frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 0xff, 0xff]));
        d.extend(frame(kind::HEADERS, 0x5, 1, &[0x82]));
        assert!(looks_like_frames(&d));
        assert!(looks_like_frames(&d[..12]));
        assert!(!looks_like_frames(&d[..8]));
        assert!(!looks_like_frames(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!looks_like_frames(b"HTTP/1.1 200 OK\r\n\r\n"));
        assert!(!looks_like_frames(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0, 0, 0, 0
        ]));
        assert!(!looks_like_frames(&frame(kind::PING, 0, 1, &[0; 8])));
        assert!(!looks_like_frames(&frame(0x42, 0, 1, &[0; 8])));
        // A plausible first frame followed by garbage is rejected.
        let mut bad = frame(kind::PING, 0, 0, &[0; 8]);
        bad.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert!(!looks_like_frames(&bad));
    }

    #[test]
    fn server_preface_is_a_settings_frame() {
        assert!(is_server_preface(&frame(
            kind::SETTINGS,
            0,
            0,
            &[0, 3, 0, 0, 0, 100]
        )));
        assert!(is_server_preface(&frame(kind::SETTINGS, 0, 0, &[])));
        assert!(!is_server_preface(&frame(
            kind::SETTINGS,
            flag::ACK,
            0,
            &[]
        )));
        assert!(!is_server_preface(&frame(kind::PING, 0, 0, &[0; 8])));
        assert!(!is_server_preface(b"HTTP/1.1 200 OK\r\n"));
    }

    #[test]
    fn finds_the_next_frame_after_garbage() {
        let mut d = b"\x00garbage-bytes".to_vec();
        let start = d.len();
        d.extend(frame(kind::PING, 0, 0, &[1; 8]));
        d.extend(frame(kind::HEADERS, 0x5, 3, &[0x82]));
        assert_eq!(find_frame_start(&d), Some(start));
    }

    #[test]
    fn padding() {
        let h = FrameHeader::parse(&frame(kind::DATA, flag::PADDED, 1, &[])).unwrap();
        assert_eq!(strip_padding(&h, &[2, b'a', b'b', 0, 0]), Some(&b"ab"[..]));
        assert_eq!(strip_padding(&h, &[5, b'a']), None);
        assert_eq!(strip_padding(&h, &[]), None);
    }
}

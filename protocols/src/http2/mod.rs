//! HTTP/2 (RFC 9113): both directions' frames in, one [`crate::Pair`] per stream out.
//!
//! [`HttpTwoParser`] reads frames as they arrive (a DATA payload is passed on without
//! being buffered whole), decodes header blocks with one HPACK decoder per direction,
//! and keeps each stream's request and response until the response ends, the stream
//! is reset, the connection goes away, or the stream idles out. gRPC streams (by
//! content type) additionally have their length-prefixed messages cut out.
//!
//! Header lists keep the pseudo-headers (`:method`, `:path`, `:status`…) in wire order;
//! they are also mapped to the pair's method, scheme, authority, path and status.

mod blocks;
mod frame;
mod parser;
mod stream;

pub use frame::{
    FrameHeader, PREFACE, find_frame_start, flag, is_server_preface, kind, looks_like_frames,
    write_header,
};
pub use parser::HttpTwoParser;

//! HPACK (RFC 7541): header compression for HTTP/2.
//!
//! Each direction of an HTTP/2 connection has its own [`Decoder`] and dynamic table.
//! The decoder is built to join connections mid-way: what cannot be decoded becomes a
//! placeholder and is reported, and the table is learnt from later blocks instead of
//! giving up on the connection.

mod decoder;
mod encoder;
pub mod huffman;
mod table;

pub use decoder::{BlockSummary, DEFAULT_TABLE_SIZE, Decoder, HpackError, UNKNOWN_NAME};
pub use encoder::{Encoder, Indexing, encode_int};

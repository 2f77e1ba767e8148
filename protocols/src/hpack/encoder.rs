//! A small HPACK encoder. The agent only decodes; tests, fuzz seeds and benches use
//! this to produce the header blocks a real HTTP/2 peer would send.

use super::decoder::DEFAULT_TABLE_SIZE;
use super::huffman;
use super::table::{DynamicTable, Entry, Lookup, STATIC};

/// How a literal field is represented (RFC 7541 §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indexing {
    /// Added to the dynamic table (`01xxxxxx`).
    Incremental,
    /// Not added (`0000xxxx`).
    Without,
    /// Not added, and intermediaries must not index it (`0001xxxx`).
    Never,
}

/// An HPACK encoder with its own dynamic table.
#[derive(Debug)]
pub struct Encoder {
    table: DynamicTable,
    huffman: bool,
    pending_size_update: Option<usize>,
}

impl Encoder {
    /// An encoder with the default 4096-byte table; `huffman` codes strings when shorter.
    pub fn new(huffman: bool) -> Self {
        Self {
            table: DynamicTable::new(Some(DEFAULT_TABLE_SIZE), usize::MAX),
            huffman,
            pending_size_update: None,
        }
    }

    /// Changes the table size; the update is signalled at the start of the next block.
    pub fn set_max_table_size(&mut self, size: usize) {
        self.table.set_max_size(size);
        self.pending_size_update = Some(size);
    }

    /// Encodes a header list as one block: exact table matches as indexed fields, the
    /// rest as literals with incremental indexing.
    pub fn encode<'a, I>(&mut self, headers: I, dst: &mut Vec<u8>)
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        self.flush_size_update(dst);
        for (name, value) in headers {
            if let Some(index) = self.find_exact(name, value) {
                encode_int(index, 7, 0x80, dst);
            } else {
                self.literal(name, value, Indexing::Incremental, dst);
            }
        }
    }

    /// Encodes one literal field with the given representation.
    pub fn literal(&mut self, name: &str, value: &str, indexing: Indexing, dst: &mut Vec<u8>) {
        self.flush_size_update(dst);
        let (prefix, flags) = match indexing {
            Indexing::Incremental => (6, 0x40),
            Indexing::Without => (4, 0x00),
            Indexing::Never => (4, 0x10),
        };
        match self.find_name(name) {
            Some(index) => encode_int(index, prefix, flags, dst),
            None => {
                encode_int(0, prefix, flags, dst);
                self.string(name, dst);
            }
        }
        self.string(value, dst);
        if indexing == Indexing::Incremental {
            self.table.insert(Entry {
                name: name.to_owned(),
                value: value.to_owned(),
                partial: false,
            });
        }
    }

    fn flush_size_update(&mut self, dst: &mut Vec<u8>) {
        if let Some(size) = self.pending_size_update.take() {
            encode_int(size, 5, 0x20, dst);
        }
    }

    fn find_exact(&self, name: &str, value: &str) -> Option<usize> {
        (1..=STATIC.len() + self.table.len()).find(|&i| match self.table.get(i) {
            Some(Lookup::Static(n, v)) => n == name && v == value,
            Some(Lookup::Dynamic(e)) => e.name == name && e.value == value,
            _ => false,
        })
    }

    fn find_name(&self, name: &str) -> Option<usize> {
        (1..=STATIC.len() + self.table.len()).find(|&i| match self.table.get(i) {
            Some(Lookup::Static(n, _)) => n == name,
            Some(Lookup::Dynamic(e)) => e.name == name,
            _ => false,
        })
    }

    fn string(&self, s: &str, dst: &mut Vec<u8>) {
        let bytes = s.as_bytes();
        let coded_len = huffman::encoded_len(bytes);
        if self.huffman && coded_len < bytes.len() {
            encode_int(coded_len, 7, 0x80, dst);
            huffman::encode(bytes, dst);
        } else {
            encode_int(bytes.len(), 7, 0x00, dst);
            dst.extend_from_slice(bytes);
        }
    }
}

/// Encodes an HPACK integer with an N-bit prefix; `flags` fills the bits above it.
pub fn encode_int(mut value: usize, prefix: u8, flags: u8, dst: &mut Vec<u8>) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        dst.push(flags | value as u8);
        return;
    }
    dst.push(flags | mask as u8);
    value -= mask;
    while value >= 0x80 {
        dst.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    dst.push(value as u8);
}

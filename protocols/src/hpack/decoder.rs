//! The HPACK decoder: header blocks in, ordered header fields out.

use super::huffman::{self, HuffmanError};
use super::table::{DynamicTable, Entry, Lookup};
use tapwire_proto::v1::Header;

/// The name given to a field whose name came from a table entry that was never seen.
/// `<` and `>` cannot occur in a real header name, so it cannot be mistaken for one.
pub const UNKNOWN_NAME: &str = "<unknown>";

/// HTTP/2's initial header table size (RFC 7540 §6.5.2).
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// Integers longer than this many continuation bytes overflow anything HPACK uses.
const MAX_INT_BYTES: usize = 5;

/// Why a header block could not be decoded to the end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    /// The block ended inside a field.
    #[error("header block truncated")]
    Truncated,
    /// An integer exceeded what HPACK allows.
    #[error("integer overflow")]
    IntegerOverflow,
    /// Index 0 is not a valid reference.
    #[error("index 0 referenced")]
    ZeroIndex,
    /// A Huffman-coded string was malformed.
    #[error("huffman: {0}")]
    Huffman(#[from] HuffmanError),
}

/// What decoding one block found, besides the fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockSummary {
    /// Fields that referenced dynamic entries never seen (placeholders were emitted).
    pub unknown_refs: usize,
    /// Fields dropped because the decoded list exceeded the caller's cap.
    pub dropped: usize,
}

/// One direction's HPACK decoder with its dynamic table.
///
/// A decoder created with [`Decoder::new`] watched the connection from its start and
/// knows the table exactly. One created with [`Decoder::joined_midway`] knows nothing:
/// references to unseen entries decode to a placeholder field named [`UNKNOWN_NAME`]
/// (counted in [`BlockSummary::unknown_refs`]) while every literal with incremental
/// indexing teaches it the table, so later blocks decode fully.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    scratch: Vec<u8>,
}

impl Decoder {
    /// A decoder for a connection watched from its first byte; its table may hold at
    /// most `memory_cap` bytes whatever the encoder announces.
    pub fn new(memory_cap: usize) -> Self {
        Self {
            table: DynamicTable::new(Some(DEFAULT_TABLE_SIZE), memory_cap),
            scratch: Vec::new(),
        }
    }

    /// A decoder for a connection whose earlier header blocks were not seen.
    pub fn joined_midway(memory_cap: usize) -> Self {
        Self {
            table: DynamicTable::new(None, memory_cap),
            scratch: Vec::new(),
        }
    }

    /// Forgets the table because blocks were lost: from here on it learns again, as if
    /// joined mid-way.
    pub fn reset_unknown(&mut self) {
        self.table.reset_unknown();
    }

    /// Sets the table's maximum size without a size update instruction: the size the
    /// decoder's side allowed in SETTINGS, which RFC 7541's examples also assume.
    pub fn set_max_table_size(&mut self, size: usize) {
        self.table.set_max_size(size);
    }

    /// Entries currently known in the dynamic table.
    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    /// The dynamic table's size in RFC 7541 terms.
    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    /// The encoder's maximum table size, when known.
    pub fn max_table_size(&self) -> Option<usize> {
        self.table.max_size()
    }

    /// Decodes one complete header block (HEADERS/PUSH_PROMISE plus CONTINUATIONs),
    /// appending its fields in order to `out`; at most `max_list_bytes` of names and
    /// values are kept (the table is still updated past it).
    ///
    /// On error, the fields decoded so far stay in `out` and the table is forgotten
    /// ([`Decoder::reset_unknown`]): its state no longer matches the encoder's.
    pub fn decode(
        &mut self,
        block: &[u8],
        max_list_bytes: usize,
        out: &mut Vec<Header>,
    ) -> Result<BlockSummary, HpackError> {
        let mut summary = BlockSummary::default();
        let mut list_bytes = 0usize;
        let mut pos = 0usize;
        let result = loop {
            let Some(&first) = block.get(pos) else {
                break Ok(summary);
            };
            let field = if first & 0x80 != 0 {
                match self.indexed(block, &mut pos) {
                    Ok(f) => f,
                    Err(e) => break Err(e),
                }
            } else if first & 0xc0 == 0x40 {
                match self.literal(block, &mut pos, 6, true) {
                    Ok(f) => f,
                    Err(e) => break Err(e),
                }
            } else if first & 0xe0 == 0x20 {
                match decode_int(block, &mut pos, 5) {
                    Ok(size) => self.table.set_max_size(size),
                    Err(e) => break Err(e),
                }
                continue;
            } else {
                // 0001xxxx never indexed, 0000xxxx without indexing.
                match self.literal(block, &mut pos, 4, false) {
                    Ok(f) => f,
                    Err(e) => break Err(e),
                }
            };
            let (header, unknown) = field;
            if unknown {
                summary.unknown_refs += 1;
            }
            let bytes = header.name.len() + header.value.len();
            if list_bytes + bytes > max_list_bytes {
                summary.dropped += 1;
            } else {
                list_bytes += bytes;
                out.push(header);
            }
        };
        if result.is_err() {
            self.table.reset_unknown();
        }
        result
    }

    fn indexed(&mut self, block: &[u8], pos: &mut usize) -> Result<(Header, bool), HpackError> {
        let index = decode_int(block, pos, 7)?;
        match self.table.get(index) {
            None => Err(HpackError::ZeroIndex),
            Some(Lookup::Static(name, value)) => Ok((header(name.into(), value.into()), false)),
            Some(Lookup::Dynamic(e)) => Ok((header(e.name.clone(), e.value.clone()), e.partial)),
            Some(Lookup::Unknown) => Ok((header(UNKNOWN_NAME.into(), String::new()), true)),
        }
    }

    fn literal(
        &mut self,
        block: &[u8],
        pos: &mut usize,
        prefix: u8,
        index_it: bool,
    ) -> Result<(Header, bool), HpackError> {
        let name_index = decode_int(block, pos, prefix)?;
        let (name, partial) = if name_index == 0 {
            (self.string(block, pos)?, false)
        } else {
            match self.table.get(name_index) {
                None => return Err(HpackError::ZeroIndex),
                Some(Lookup::Static(name, _)) => (name.to_owned(), false),
                Some(Lookup::Dynamic(e)) => (e.name.clone(), e.partial),
                Some(Lookup::Unknown) => (UNKNOWN_NAME.to_owned(), true),
            }
        };
        let value = self.string(block, pos)?;
        if index_it {
            self.table.insert(Entry {
                name: name.clone(),
                value: value.clone(),
                partial,
            });
        }
        Ok((header(name, value), partial))
    }

    fn string(&mut self, block: &[u8], pos: &mut usize) -> Result<String, HpackError> {
        let huffman_coded = block.get(*pos).is_some_and(|b| b & 0x80 != 0);
        let len = decode_int(block, pos, 7)?;
        let end = pos.checked_add(len).ok_or(HpackError::Truncated)?;
        let raw = block.get(*pos..end).ok_or(HpackError::Truncated)?;
        *pos = end;
        if huffman_coded {
            self.scratch.clear();
            huffman::decode(raw, &mut self.scratch)?;
            Ok(text(&self.scratch))
        } else {
            Ok(text(raw))
        }
    }
}

fn header(name: String, value: String) -> Header {
    Header { name, value }
}

/// Header values that are not UTF-8 keep their valid parts (the proto carries strings).
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Decodes an HPACK integer with an N-bit prefix (RFC 7541 §5.1) at `*pos`.
pub(super) fn decode_int(buf: &[u8], pos: &mut usize, prefix: u8) -> Result<usize, HpackError> {
    let mask = (1usize << prefix) - 1;
    let first = usize::from(*buf.get(*pos).ok_or(HpackError::Truncated)?) & mask;
    *pos += 1;
    if first < mask {
        return Ok(first);
    }
    let mut value = mask;
    let mut shift = 0u32;
    for _ in 0..MAX_INT_BYTES {
        let b = *buf.get(*pos).ok_or(HpackError::Truncated)?;
        *pos += 1;
        value = value
            .checked_add(usize::from(b & 0x7f) << shift)
            .ok_or(HpackError::IntegerOverflow)?;
        if b & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
    }
    Err(HpackError::IntegerOverflow)
}

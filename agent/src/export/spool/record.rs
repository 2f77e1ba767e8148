//! One spool record: `[magic u32][len u32][sequence u64][pairs u32][crc32 u32][len bytes]`,
//! little-endian. The CRC covers sequence, pairs and data, so a record torn by a crash or
//! damaged on disk is recognized and never sent.

/// Marks the start of every record ("TWSP").
pub(super) const MAGIC: u32 = u32::from_le_bytes(*b"TWSP");
/// Bytes before a record's data.
pub(super) const HEADER_LEN: u64 = 24;

/// The bytes of one record holding `data`.
pub(super) fn encode_record(sequence: u64, pairs: u32, data: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER_LEN as usize + data.len());
    record.extend_from_slice(&MAGIC.to_le_bytes());
    record.extend_from_slice(&(data.len() as u32).to_le_bytes());
    record.extend_from_slice(&sequence.to_le_bytes());
    record.extend_from_slice(&pairs.to_le_bytes());
    record.extend_from_slice(&record_crc(sequence, pairs, data).to_le_bytes());
    record.extend_from_slice(data);
    record
}

/// The checksum of a record: sequence, pair count and data.
pub(super) fn record_crc(sequence: u64, pairs: u32, data: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&sequence.to_le_bytes());
    hasher.update(&pairs.to_le_bytes());
    hasher.update(data);
    hasher.finalize()
}

/// Parses the record at `offset`; `None` at the end or at a torn/corrupt record.
pub(super) fn parse_record(data: &[u8], offset: usize) -> Option<(u64, u32, &[u8])> {
    let header = data.get(offset..offset.checked_add(HEADER_LEN as usize)?)?;
    let field = |at: usize, n: usize| header.get(at..at + n);
    let magic = u32::from_le_bytes(field(0, 4)?.try_into().ok()?);
    let len = u32::from_le_bytes(field(4, 4)?.try_into().ok()?) as usize;
    let sequence = u64::from_le_bytes(field(8, 8)?.try_into().ok()?);
    let pairs = u32::from_le_bytes(field(16, 4)?.try_into().ok()?);
    let crc = u32::from_le_bytes(field(20, 4)?.try_into().ok()?);
    let start = offset + HEADER_LEN as usize;
    let body = data.get(start..start.checked_add(len)?)?;
    (magic == MAGIC && record_crc(sequence, pairs, body) == crc).then_some((sequence, pairs, body))
}

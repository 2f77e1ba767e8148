//! The bounded queue of encoded batches that are not yet acknowledged: on disk (segment
//! files of checksummed, length-prefixed records plus an fsync'd watermark) so an agent
//! restart resends what the collector never acknowledged, or in memory only when no spool
//! folder is configured. When full, the oldest data is dropped and counted: the capture
//! path never waits for the collector.
//!
//! Layout of a spool folder:
//! - `<first sequence, 20 digits>.seg`: records `[magic u32][len u32][sequence u64]
//!   [pairs u32][crc32 u32][len bytes: an encoded `Batch`]`, little-endian; the CRC covers
//!   sequence, pairs and data, so a record torn by a crash is detected and cut off.
//! - `acked`: the lowest sequence not yet acknowledged (8 bytes, replaced atomically).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use record::{HEADER_LEN, encode_record, parse_record};

mod record;

const WATERMARK_FILE: &str = "acked";
const SEGMENT_SUFFIX: &str = ".seg";

/// Errors of the spool; every one names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file or folder operation failed.
    #[error("spool {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A record read back does not match what was written.
    #[error("spool record {sequence} in {path} is corrupt")]
    Corrupt {
        /// The record's sequence.
        sequence: u64,
        /// Its segment file.
        path: PathBuf,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Bounds of a spool.
#[derive(Debug, Clone)]
pub struct SpoolLimits {
    /// Total bytes held (disk files, or memory without a folder).
    pub max_bytes: u64,
    /// A segment file is closed once it reaches this size.
    pub segment_bytes: u64,
    /// Bytes of spooled batches also kept in memory for sending.
    pub memory_cache_bytes: u64,
}

impl SpoolLimits {
    /// Limits derived from a total size: segments of 1/16 of it (64 KiB–64 MiB, at most a
    /// quarter of it), so dropping the oldest segment when full loses a small share.
    pub fn for_total(max_bytes: u64, memory_cache_bytes: u64) -> Self {
        Self {
            max_bytes,
            segment_bytes: (max_bytes / 16)
                .clamp(64 << 10, 64 << 20)
                .min(max_bytes / 4)
                .max(1),
            memory_cache_bytes,
        }
    }
}

/// One spooled batch, ready to send.
#[derive(Debug, Clone)]
pub struct SpooledBatch {
    /// The batch's sequence (also encoded inside `data`).
    pub sequence: u64,
    /// Pairs in the batch.
    pub pairs: u32,
    /// The encoded `Batch` message.
    pub data: Bytes,
}

/// What an append cost: data dropped to make room, or the batch itself when it cannot fit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The appended batch's sequence, `None` when it was too large for the spool.
    pub sequence: Option<u64>,
    /// Unacknowledged batches dropped (oldest first) to make room.
    pub dropped_batches: u64,
    /// Pairs in those batches (plus the batch itself when it did not fit).
    pub dropped_pairs: u64,
}

#[derive(Debug)]
struct Entry {
    segment: u64,
    offset: u64,
    len: u32,
    pairs: u32,
    cached: Option<Bytes>,
}

#[derive(Debug, Default)]
struct Segment {
    bytes: u64,
    live: usize,
}

#[derive(Debug)]
struct ActiveSegment {
    id: u64,
    file: File,
    len: u64,
}

/// The spool: unacknowledged batches by sequence, bounded, persisted when it has a folder.
#[derive(Debug)]
pub struct Spool {
    dir: Option<PathBuf>,
    limits: SpoolLimits,
    /// Unacknowledged batches; acknowledged ones leave the map at once.
    entries: BTreeMap<u64, Entry>,
    segments: BTreeMap<u64, Segment>,
    active: Option<ActiveSegment>,
    total_bytes: u64,
    cached_bytes: u64,
    next_sequence: u64,
    /// Persisted lowest unacknowledged sequence.
    watermark: u64,
}

impl Spool {
    /// A spool that lives in memory only.
    pub fn in_memory(limits: SpoolLimits) -> Self {
        Self {
            dir: None,
            limits,
            entries: BTreeMap::new(),
            segments: BTreeMap::new(),
            active: None,
            total_bytes: 0,
            cached_bytes: 0,
            next_sequence: 1,
            watermark: 1,
        }
    }

    /// Opens (or creates) the spool in `dir`, recovering every unacknowledged batch and
    /// cutting off a record torn by a crash.
    pub fn open(dir: &Path, limits: SpoolLimits) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let mut spool = Self::in_memory(limits);
        spool.dir = Some(dir.to_path_buf());
        spool.watermark = read_watermark(dir)?.unwrap_or(1).max(1);
        spool.next_sequence = spool.watermark;

        let mut ids = Vec::new();
        for dirent in fs::read_dir(dir).map_err(io_err("list", dir))? {
            let dirent = dirent.map_err(io_err("list", dir))?;
            let name = dirent.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            ids.push(id);
        }
        ids.sort_unstable();
        for id in ids {
            spool.recover_segment(id)?;
        }
        spool.enforce_limit_after_recovery()?;
        spool.persist_watermark()?;
        Ok(spool)
    }

    fn segment_path(&self, id: u64) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{id:020}{SEGMENT_SUFFIX}")))
    }

    fn recover_segment(&mut self, id: u64) -> Result<(), SpoolError> {
        let Some(path) = self.segment_path(id) else {
            return Ok(());
        };
        let data = fs::read(&path).map_err(io_err("read", &path))?;
        let mut offset = 0u64;
        let mut segment = Segment::default();
        while let Some((sequence, pairs, body)) = parse_record(&data, offset as usize) {
            let len = body.len() as u32;
            self.next_sequence = self.next_sequence.max(sequence + 1);
            if sequence >= self.watermark {
                let cached = (self.cached_bytes + u64::from(len) <= self.limits.memory_cache_bytes)
                    .then(|| Bytes::copy_from_slice(body));
                if let Some(c) = &cached {
                    self.cached_bytes += c.len() as u64;
                }
                self.entries.insert(
                    sequence,
                    Entry {
                        segment: id,
                        offset,
                        len,
                        pairs,
                        cached,
                    },
                );
                segment.live += 1;
            }
            offset += HEADER_LEN + u64::from(len);
        }
        if offset < data.len() as u64 {
            tracing::warn!(
                path = %path.display(),
                valid = offset,
                size = data.len(),
                "spool segment has a torn or corrupt tail (agent crashed mid-write?); cutting it off"
            );
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err("open", &path))?;
            file.set_len(offset).map_err(io_err("truncate", &path))?;
            file.sync_all().map_err(io_err("fsync", &path))?;
        }
        if segment.live == 0 {
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
            return Ok(());
        }
        segment.bytes = offset;
        self.total_bytes += offset;
        self.segments.insert(id, segment);
        Ok(())
    }

    fn enforce_limit_after_recovery(&mut self) -> Result<(), SpoolError> {
        let mut dropped = AppendOutcome::default();
        while self.total_bytes > self.limits.max_bytes {
            if !self.drop_oldest(&mut dropped)? {
                break;
            }
        }
        if dropped.dropped_pairs > 0 {
            tracing::warn!(
                batches = dropped.dropped_batches,
                pairs = dropped.dropped_pairs,
                "spool larger than its limit after restart: dropped the oldest data"
            );
        }
        Ok(())
    }

    /// The next sequence `append` will assign (the batcher encodes it into the batch).
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// The oldest unacknowledged batch's sequence.
    pub fn first_pending(&self) -> Option<u64> {
        self.entries.keys().next().copied()
    }

    /// Unacknowledged batches held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when every batch has been acknowledged (or dropped).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held (files on disk, or memory without a folder).
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Pairs in unacknowledged batches.
    pub fn pending_pairs(&self) -> u64 {
        self.entries.values().map(|e| u64::from(e.pairs)).sum()
    }

    /// Appends an encoded batch under `next_sequence()`, durably (fsync) when on disk.
    /// Drops the oldest batches first when the spool would exceed its limit.
    pub fn append(&mut self, data: Bytes, pairs: u32) -> Result<AppendOutcome, SpoolError> {
        let mut outcome = AppendOutcome::default();
        let record_len = HEADER_LEN + data.len() as u64;
        if record_len > self.limits.max_bytes || data.len() > u32::MAX as usize {
            outcome.dropped_pairs = u64::from(pairs);
            return Ok(outcome);
        }
        while self.total_bytes + record_len > self.limits.max_bytes {
            if !self.drop_oldest(&mut outcome)? {
                break;
            }
        }
        // A fully acknowledged active segment may still hold bytes: start afresh.
        if self.total_bytes + record_len > self.limits.max_bytes {
            self.rotate()?;
        }
        let sequence = self.next_sequence;
        let (segment, offset) = match self.dir.is_some() {
            true => self.write_record(sequence, pairs, &data)?,
            false => (sequence, 0),
        };
        self.next_sequence += 1;
        let in_memory = self.dir.is_none();
        let cache =
            in_memory || self.cached_bytes + data.len() as u64 <= self.limits.memory_cache_bytes;
        if cache {
            self.cached_bytes += data.len() as u64;
        }
        if in_memory {
            self.total_bytes += record_len;
            self.segments.insert(
                sequence,
                Segment {
                    bytes: record_len,
                    live: 1,
                },
            );
        }
        self.entries.insert(
            sequence,
            Entry {
                segment,
                offset,
                len: data.len() as u32,
                pairs,
                cached: cache.then_some(data),
            },
        );
        outcome.sequence = Some(sequence);
        Ok(outcome)
    }

    fn write_record(
        &mut self,
        sequence: u64,
        pairs: u32,
        data: &[u8],
    ) -> Result<(u64, u64), SpoolError> {
        let record_len = HEADER_LEN + data.len() as u64;
        if self
            .active
            .as_ref()
            .is_some_and(|a| a.len > 0 && a.len + record_len > self.limits.segment_bytes)
        {
            self.rotate()?;
        }
        if self.active.is_none() {
            let path = self.segment_path(sequence).ok_or_else(|| SpoolError::Io {
                op: "create segment in",
                path: PathBuf::new(),
                source: io::Error::other("spool has no folder"),
            })?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err("create", &path))?;
            self.sync_dir()?;
            self.segments.insert(sequence, Segment::default());
            self.active = Some(ActiveSegment {
                id: sequence,
                file,
                len: 0,
            });
        }
        let path = self
            .segment_path(self.active.as_ref().map_or(0, |a| a.id))
            .unwrap_or_default();
        let Some(active) = self.active.as_mut() else {
            return Err(io_err("write", &path)(io::Error::other(
                "no active segment",
            )));
        };
        let record = encode_record(sequence, pairs, data);
        let offset = active.len;
        let written = active
            .file
            .write_all(&record)
            .and_then(|()| active.file.sync_data());
        if let Err(e) = written {
            // Leave no half record behind: the next append would follow garbage.
            let _ = active.file.set_len(offset);
            return Err(io_err("write", &path)(e));
        }
        active.len += record_len;
        let id = active.id;
        self.total_bytes += record_len;
        let segment = self.segments.entry(id).or_default();
        segment.bytes += record_len;
        segment.live += 1;
        Ok((id, offset))
    }

    /// Closes the active segment; it is deleted now if nothing in it is unacknowledged.
    fn rotate(&mut self) -> Result<(), SpoolError> {
        if let Some(active) = self.active.take() {
            drop(active.file);
            if self.segments.get(&active.id).is_some_and(|s| s.live == 0) {
                self.remove_segment(active.id)?;
            }
        }
        Ok(())
    }

    fn remove_segment(&mut self, id: u64) -> Result<(), SpoolError> {
        if let Some(segment) = self.segments.remove(&id) {
            self.total_bytes -= segment.bytes;
        }
        if self.active.as_ref().is_some_and(|a| a.id == id) {
            self.active = None;
        }
        if let Some(path) = self.segment_path(id) {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &path)(e)),
            }
        }
        Ok(())
    }

    /// Drops the oldest segment (one batch in memory), counting what was lost; false when
    /// there was nothing left to drop.
    fn drop_oldest(&mut self, outcome: &mut AppendOutcome) -> Result<bool, SpoolError> {
        let Some(&id) = self.segments.keys().next() else {
            return Ok(false);
        };
        let doomed: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.segment == id)
            .map(|(&s, _)| s)
            .collect();
        for sequence in doomed {
            if let Some(entry) = self.entries.remove(&sequence) {
                outcome.dropped_batches += 1;
                outcome.dropped_pairs += u64::from(entry.pairs);
                if let Some(c) = entry.cached {
                    self.cached_bytes -= c.len() as u64;
                }
            }
        }
        self.remove_segment(id)?;
        self.persist_watermark()?;
        Ok(true)
    }

    /// The first unacknowledged batch at or after `from`, read from memory or disk.
    pub fn next_from(&self, from: u64) -> Result<Option<SpooledBatch>, SpoolError> {
        let Some((&sequence, entry)) = self.entries.range(from..).next() else {
            return Ok(None);
        };
        let data = match &entry.cached {
            Some(data) => data.clone(),
            None => self.read_record(sequence, entry)?,
        };
        Ok(Some(SpooledBatch {
            sequence,
            pairs: entry.pairs,
            data,
        }))
    }

    fn read_record(&self, sequence: u64, entry: &Entry) -> Result<Bytes, SpoolError> {
        let path = self.segment_path(entry.segment).unwrap_or_default();
        let mut file = File::open(&path).map_err(io_err("open", &path))?;
        file.seek(SeekFrom::Start(entry.offset))
            .map_err(io_err("seek", &path))?;
        let mut record = vec![0u8; (HEADER_LEN + u64::from(entry.len)) as usize];
        file.read_exact(&mut record)
            .map_err(io_err("read", &path))?;
        match parse_record(&record, 0) {
            Some((s, _, body)) if s == sequence => Ok(Bytes::copy_from_slice(body)),
            _ => Err(SpoolError::Corrupt { sequence, path }),
        }
    }

    /// Marks a batch acknowledged: it leaves the spool, its segment goes when empty and the
    /// watermark advances (fsync'd). Returns the batch's pair count if it was still held.
    pub fn ack(&mut self, sequence: u64) -> Result<Option<u32>, SpoolError> {
        let Some(entry) = self.entries.remove(&sequence) else {
            return Ok(None);
        };
        if let Some(c) = &entry.cached {
            self.cached_bytes -= c.len() as u64;
        }
        let is_active = self.active.as_ref().is_some_and(|a| a.id == entry.segment);
        let empty = match self.segments.get_mut(&entry.segment) {
            Some(segment) => {
                segment.live = segment.live.saturating_sub(1);
                segment.live == 0
            }
            None => false,
        };
        if empty && !is_active {
            self.remove_segment(entry.segment)?;
        }
        self.persist_watermark()?;
        Ok(Some(entry.pairs))
    }

    /// Drops one batch without it being acknowledged (a batch the collector keeps refusing).
    pub fn discard(&mut self, sequence: u64) -> Result<Option<u32>, SpoolError> {
        self.ack(sequence)
    }

    fn persist_watermark(&mut self) -> Result<(), SpoolError> {
        let watermark = self
            .entries
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_sequence);
        if watermark == self.watermark
            && self
                .dir
                .as_ref()
                .is_none_or(|d| d.join(WATERMARK_FILE).exists())
        {
            return Ok(());
        }
        self.watermark = watermark;
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let tmp = dir.join(format!("{WATERMARK_FILE}.tmp"));
        let path = dir.join(WATERMARK_FILE);
        let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
        file.write_all(&watermark.to_le_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io_err("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), SpoolError> {
        if let Some(dir) = &self.dir {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("fsync", dir))?;
        }
        Ok(())
    }
}

fn read_watermark(dir: &Path) -> Result<Option<u64>, SpoolError> {
    let path = dir.join(WATERMARK_FILE);
    match fs::read(&path) {
        Ok(bytes) => match <[u8; 8]>::try_from(bytes.as_slice()) {
            Ok(b) => Ok(Some(u64::from_le_bytes(b))),
            Err(_) => {
                // Written atomically, so this is damage from outside: resend everything.
                tracing::warn!(path = %path.display(), "spool watermark unreadable; resending all spooled batches");
                Ok(None)
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", &path)(e)),
    }
}

#[cfg(test)]
mod tests;

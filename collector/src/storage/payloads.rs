//! Payload segments in an object store (docs/storage.md).
//!
//! A segment is one object holding a sequence of frames; each frame is one protobuf `Pair`
//! compressed on its own with zstd, so the index row's offset and length read back one pair
//! with a ranged GET. Keys are `segments/YYYY/MM/DD/HH/<uuidv7>.seg` by the pairs' hour,
//! so retention deletes whole hours.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{
    ObjectStore, ObjectStoreExt, PutPayload,
    aws::{AmazonS3Builder, AmazonS3ConfigKey},
    local::LocalFileSystem,
    path::Path,
    prefix::PrefixStore,
};
use prost::Message;
use tapwire_proto::v1::Pair;

use super::{StorageError, hour::CivilHour};

/// zstd level for frames. Frames are small (one pair each), so a frame's cost is mostly
/// fixed: at level 1 building the literals' Huffman table alone was 13% of the collector's
/// ingest CPU. Negative levels skip it. Measured on 0.5-4 KiB chunks of JSON and HTML:
/// level -1 compresses 30% faster than level 1 (15 vs 21 us per frame on the loaded
/// 2-core machine) to 2.0x instead of 2.6x; in `bench ingest` the collector's CPU per pair
/// fell by 22%. Segments grow by about a quarter on text: object storage is the cheaper
/// resource than ingest CPU. Reading is unchanged (any level decodes the same way).
const FRAME_ZSTD_LEVEL: i32 = -1;
/// A frame never decompresses to more than this (a `Pair` is bounded by the batch size).
const MAX_FRAME_DECODED: usize = 256 * 1024 * 1024;

/// Where full pairs live: a local folder or an S3-compatible bucket.
#[derive(Clone, Debug)]
pub struct PayloadStore {
    store: Arc<dyn ObjectStore>,
    /// The folder of a local store: written segments are fsynced there, because an ack
    /// promises durability and the local object store only writes to the page cache.
    local_root: Option<std::path::PathBuf>,
}

/// A batch's compressed frames, back to back in one buffer.
#[derive(Debug, Clone, Default)]
pub struct Frames {
    buf: Bytes,
    /// Where each frame ends in `buf`.
    ends: Vec<usize>,
}

impl Frames {
    /// How many frames there are.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The byte range of frame `i` in [`Frames::buf`].
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        start..self.ends[i]
    }

    /// All frames, back to back.
    pub fn buf(&self) -> &Bytes {
        &self.buf
    }
}

/// Where one pair's frame was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameLocation {
    /// The segment's object key.
    pub key: String,
    /// Byte offset of the frame in the segment.
    pub offset: u64,
    /// Byte length of the frame.
    pub length: u32,
}

impl PayloadStore {
    /// Opens the store named by `url`: `file:///DIR` (created if missing) or
    /// `s3://bucket/prefix` (endpoint, region and credentials from the usual `AWS_*`
    /// environment variables, e.g. `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_ALLOW_HTTP`).
    pub fn open(url: &str) -> Result<Self, StorageError> {
        if url.starts_with("s3://") {
            return Self::open_s3(url, &[]);
        }
        let Some(dir) = url.strip_prefix("file://") else {
            return Err(StorageError::Config(format!(
                "unsupported payload store {url:?}: use file:///DIR or s3://bucket/prefix"
            )));
        };
        std::fs::create_dir_all(dir).map_err(|e| {
            StorageError::Config(format!("cannot create payload folder {dir}: {e}"))
        })?;
        let local =
            LocalFileSystem::new_with_prefix(dir).map_err(|source| StorageError::ObjectStore {
                context: format!("open payload folder {dir}"),
                source,
            })?;
        Ok(Self {
            store: Arc::new(local),
            local_root: Some(std::path::PathBuf::from(dir)),
        })
    }

    /// Opens `s3://bucket/prefix` with the `AWS_*` environment variables overridden by
    /// `options` (keys as `AmazonS3ConfigKey` names them, e.g. `aws_endpoint`,
    /// `aws_access_key_id`, `aws_allow_http`).
    pub fn open_s3(url: &str, options: &[(&str, String)]) -> Result<Self, StorageError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| StorageError::Config(format!("not an s3:// URL: {url}")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StorageError::Config(format!("no bucket in {url}")));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (key, value) in options {
            let key: AmazonS3ConfigKey = key
                .parse()
                .map_err(|_| StorageError::Config(format!("unknown S3 setting {key}")))?;
            builder = builder.with_config(key, value);
        }
        let s3 = builder
            .build()
            .map_err(|source| StorageError::ObjectStore {
                context: format!("configure S3 for {url}"),
                source,
            })?;
        let prefix = prefix.trim_matches('/');
        Ok(Self {
            store: if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(PrefixStore::new(s3, prefix))
            },
            local_root: None,
        })
    }

    /// Compresses pairs into frames, one per pair, packed into one buffer (one allocation
    /// per batch instead of one per pair, and segments are written from it without copying).
    /// Reuses one zstd context: creating a context per frame costs more than compressing a
    /// small pair.
    pub fn encode_frames<'a>(
        pairs: impl IntoIterator<Item = &'a Pair>,
    ) -> Result<Frames, StorageError> {
        let failed = |e: std::io::Error| StorageError::CorruptPayload {
            key: String::new(),
            offset: 0,
            reason: format!("zstd compression failed: {e}"),
        };
        let mut compressor = zstd::bulk::Compressor::new(FRAME_ZSTD_LEVEL).map_err(failed)?;
        let pairs = pairs.into_iter();
        let mut encoded = Vec::new();
        let mut compressed = Vec::new();
        let mut buf = Vec::new();
        let mut ends = Vec::with_capacity(pairs.size_hint().0);
        for pair in pairs {
            encoded.clear();
            pair.encode(&mut encoded)
                .map_err(|e| StorageError::CorruptPayload {
                    key: String::new(),
                    offset: 0,
                    reason: format!("protobuf encoding failed: {e}"),
                })?;
            compressed.clear();
            compressed.reserve(zstd::zstd_safe::compress_bound(encoded.len()));
            compressor
                .compress_to_buffer(&encoded, &mut compressed)
                .map_err(failed)?;
            buf.extend_from_slice(&compressed);
            ends.push(buf.len());
        }
        Ok(Frames {
            buf: Bytes::from(buf),
            ends,
        })
    }

    /// Writes one segment for the hour starting at `hour_secs` from `parts` (frames back to
    /// back) whose frames are `frame_lengths` long, and returns where each frame landed (in
    /// order).
    pub async fn write_segment(
        &self,
        hour_secs: i64,
        parts: Vec<Bytes>,
        frame_lengths: &[u32],
    ) -> Result<Vec<FrameLocation>, StorageError> {
        let c = CivilHour::from_unix(hour_secs);
        let key = format!(
            "segments/{:04}/{:02}/{:02}/{:02}/{}.seg",
            c.year,
            c.month,
            c.day,
            c.hour,
            uuid::Uuid::now_v7()
        );
        let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let framed: u64 = frame_lengths.iter().map(|&l| u64::from(l)).sum();
        if total != framed {
            return Err(StorageError::CorruptPayload {
                key,
                offset: 0,
                reason: format!("{total} bytes given for frames of {framed} bytes"),
            });
        }
        let mut locations = Vec::with_capacity(frame_lengths.len());
        let mut offset = 0u64;
        for &length in frame_lengths {
            locations.push(FrameLocation {
                key: key.clone(),
                offset,
                length,
            });
            offset += u64::from(length);
        }
        self.store
            .put(
                &Path::from(key.as_str()),
                parts.into_iter().collect::<PutPayload>(),
            )
            .await
            .map_err(|source| StorageError::ObjectStore {
                context: format!("write segment {key}"),
                source,
            })?;
        if let Some(root) = &self.local_root {
            let file = root.join(&key);
            tokio::task::spawn_blocking(move || sync_file_and_folder(&file))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r)
                .map_err(|e| StorageError::CorruptPayload {
                    key: key.clone(),
                    offset: 0,
                    reason: format!("fsync failed: {e}"),
                })?;
        }
        Ok(locations)
    }

    /// Reads one pair back with a ranged read of its segment.
    pub async fn read_pair(
        &self,
        key: &str,
        offset: u64,
        length: u32,
    ) -> Result<Pair, StorageError> {
        let range = offset..offset + u64::from(length);
        let frame: Bytes = self
            .store
            .get_range(&Path::from(key), range)
            .await
            .map_err(|source| StorageError::ObjectStore {
                context: format!("read {key} at {offset}+{length}"),
                source,
            })?;
        let corrupt = |reason: String| StorageError::CorruptPayload {
            key: key.to_owned(),
            offset,
            reason,
        };
        let mut decoder = zstd::stream::read::Decoder::new(frame.as_ref())
            .map_err(|e| corrupt(format!("zstd: {e}")))?;
        let mut decoded = Vec::new();
        // Bounded read: a corrupt frame cannot make us allocate without limit.
        std::io::Read::read_to_end(
            &mut std::io::Read::take(&mut decoder, MAX_FRAME_DECODED as u64),
            &mut decoded,
        )
        .map_err(|e| corrupt(format!("zstd: {e}")))?;
        Pair::decode(decoded.as_slice()).map_err(|e| corrupt(format!("protobuf: {e}")))
    }

    /// Deletes every segment of the hours that end at or before `cutoff_secs`, and returns
    /// how many objects were removed.
    pub async fn delete_segments_before(&self, cutoff_secs: i64) -> Result<u64, StorageError> {
        let cutoff = CivilHour::from_unix(super::hour::hour_start(cutoff_secs));
        // Keys sort like times (fixed-width fields), so comparing the hour folder to the
        // cutoff's folder as strings is comparing hours.
        let cutoff_dir = format!(
            "segments/{:04}/{:02}/{:02}/{:02}/",
            cutoff.year, cutoff.month, cutoff.day, cutoff.hour
        );
        let prefix = Path::from("segments");
        let mut stale = Vec::new();
        let mut listing = self.store.list(Some(&prefix));
        while let Some(meta) =
            listing
                .try_next()
                .await
                .map_err(|source| StorageError::ObjectStore {
                    context: "list segments".into(),
                    source,
                })?
        {
            let key = meta.location.to_string();
            let hour_dir = key.as_bytes().get(..cutoff_dir.len());
            if hour_dir.is_some_and(|dir| dir < cutoff_dir.as_bytes()) {
                stale.push(meta.location);
            }
        }
        let mut removed = 0;
        for location in stale {
            self.store
                .delete(&location)
                .await
                .map_err(|source| StorageError::ObjectStore {
                    context: format!("delete {location}"),
                    source,
                })?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// Flushes a new file and its folder entry to disk.
fn sync_file_and_folder(file: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    if let Some(folder) = file.parent() {
        std::fs::File::open(folder)?.sync_all()?;
    }
    Ok(())
}

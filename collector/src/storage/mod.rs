//! Storage: the PostgreSQL/TimescaleDB index (`rr_pairs`, `rr_rollup_1m`), the payload
//! segments in an object store, the live feed of new rows, and their maintenance.
//! docs/storage.md is the contract.

pub mod copy_baseline;
pub mod endpoint;
pub mod histogram;
pub mod hour;
pub mod index_row;
pub mod index_writer;
pub mod partitions;
pub mod payloads;
pub mod retention;
pub mod schema;

use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

pub use payloads::PayloadStore;

/// How many live rows a slow `Tail` subscriber may lag behind before it misses some.
const LIVE_FEED_CAPACITY: usize = 8192;
/// Database connections per collector: ingest streams and queries share them.
const POOL_SIZE: usize = 16;

/// Which schema the database holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Hypertables (the server has the TimescaleDB extension).
    TimescaleDb,
    /// Native range partitions and a `time_bucket` SQL function over `date_bin`.
    Postgres,
}

/// Everything the query side needs to read what ingest wrote.
pub struct Stores {
    /// The index database.
    pub db: Pool,
    /// The schema's flavor.
    pub flavor: Flavor,
    /// The payload segments.
    pub payloads: PayloadStore,
    /// Every newly stored pair's index row, as it is committed (for `Tail`).
    pub live: tokio::sync::broadcast::Sender<Arc<tapwire_proto::v1::PairSummary>>,
}

/// What can go wrong reading or writing storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A database statement failed.
    #[error("database: {context}: {source}")]
    Database {
        /// What was being done.
        context: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// No database connection could be had.
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The object store failed.
    #[error("object store: {context}: {source}")]
    ObjectStore {
        /// What was being done.
        context: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// A payload frame could not be encoded or decoded.
    #[error("payload frame {key} at {offset}: {reason}")]
    CorruptPayload {
        /// The segment.
        key: String,
        /// The frame's offset.
        offset: u64,
        /// Why.
        reason: String,
    },
    /// A pair from an agent cannot be stored as sent.
    #[error("invalid pair {id:?}: {reason}")]
    InvalidPair {
        /// The pair's id (cut to 64 characters).
        id: String,
        /// Why.
        reason: String,
    },
    /// A setting is unusable.
    #[error("configuration: {0}")]
    Config(String),
}

impl StorageError {
    /// True when retrying later may succeed (database or store unavailable), as opposed to
    /// a request that can never be stored.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::InvalidPair { .. } | Self::Config(_))
    }
}

/// Builds a connection pool for `database_url` (a `postgres://` URL or key=value string).
pub fn connect_pool(database_url: &str) -> Result<Pool, StorageError> {
    let config: tokio_postgres::Config = database_url
        .parse()
        .map_err(|e| StorageError::Config(format!("bad database URL: {e}")))?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .build()
        .map_err(|e| StorageError::Config(format!("cannot build the database pool: {e}")))
}

impl Stores {
    /// Connects to the database, applies pending migrations, and opens the payload store
    /// (`file:///DIR` or `s3://bucket/prefix`).
    pub async fn open(database_url: &str, payload_store: &str) -> Result<Self, StorageError> {
        let db = connect_pool(database_url)?;
        let flavor = {
            let mut client = db.get().await?;
            schema::migrate(&mut client).await?
        };
        let payloads = PayloadStore::open(payload_store)?;
        let (live, _) = tokio::sync::broadcast::channel(LIVE_FEED_CAPACITY);
        Ok(Self {
            db,
            flavor,
            payloads,
            live,
        })
    }
}

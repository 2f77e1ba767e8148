//! The ingest benchmark's baseline: the same index rows binary-COPied straight into
//! `rr_pairs`, without staging, deduplication, rollups or payloads. It is the practical
//! upper bound of the database side; the benchmark reports ingest as a ratio of it.

use super::{
    StorageError,
    index_row::IndexRow,
    index_writer::{COLUMNS, copy_rows},
};

/// COPYs `rows` into `rr_pairs` in one transaction. The rows must not be stored yet (a
/// plain COPY has no `ON CONFLICT`), and on plain PostgreSQL their partitions must exist.
/// Takes a plain client so the benchmark can use it on its own connection (a pooled
/// client derefs to one).
pub async fn bare_copy(
    client: &mut tokio_postgres::Client,
    rows: &[IndexRow],
) -> Result<(), StorageError> {
    let db = |context| move |source| StorageError::Database { context, source };
    let tx = client
        .transaction()
        .await
        .map_err(db("begin baseline COPY"))?;
    let sink = tx
        .copy_in(&format!(
            "COPY rr_pairs ({COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await
        .map_err(db("start baseline COPY"))?;
    copy_rows(sink, rows).await?;
    tx.commit().await.map_err(db("commit baseline COPY"))?;
    Ok(())
}

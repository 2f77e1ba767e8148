//! `Tail`: new pairs matching a filter, from the collector's live feed, as they are stored.

use std::sync::Arc;

use tapwire_proto::v1::{Filter, PairSummary};
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use super::error::QueryError;
use super::filter::validate;
use super::matcher::matches;
use crate::storage::Stores;

/// The receiving end of a tail, ready to be returned as a tonic stream.
pub type TailStream = tokio_stream::wrappers::ReceiverStream<Result<PairSummary, Status>>;

/// Pairs buffered for one slow client before it is told it lagged.
const BUFFER: usize = 256;

/// Starts following the live feed with `filter`.
pub fn tail(stores: &Stores, filter: Filter) -> Result<TailStream, QueryError> {
    validate(&filter)?;
    let mut live = stores.live.subscribe();
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        loop {
            let pair: Arc<PairSummary> = tokio::select! {
                received = live.recv() => match received {
                    Ok(pair) => pair,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // The client cannot keep up; say so rather than silently skip.
                        tracing::warn!(missed, "tail client lagged behind the live feed");
                        let status = Status::resource_exhausted(format!(
                            "tail fell behind: {missed} pairs were skipped; narrow the filter"
                        ));
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = tx.closed() => return,
            };
            if matches(&filter, &pair) && tx.send(Ok((*pair).clone())).await.is_err() {
                return;
            }
        }
    });
    Ok(TailStream::new(rx))
}

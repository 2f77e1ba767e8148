//! What can go wrong answering a query, and the gRPC status each case becomes.

use tonic::Status;

/// An error of the query service; each variant maps to one gRPC status code.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A filter field has a value that cannot be meant (`InvalidArgument`).
    #[error("bad filter: {0}")]
    BadFilter(String),
    /// A cursor that this server did not produce, or that was damaged (`InvalidArgument`).
    #[error("bad cursor: {0}")]
    BadCursor(String),
    /// An argument other than the filter is wrong (`InvalidArgument`).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The asked range would produce too large an answer (`InvalidArgument`).
    #[error("range too large: {0}")]
    RangeTooLarge(String),
    /// No pair has this id (`NotFound`).
    #[error("unknown id: no pair with id {0}")]
    UnknownId(String),
    /// The index database failed or is unreachable (`Unavailable`).
    #[error("index database: {0}")]
    Database(String),
    /// The payload store failed (`Internal`).
    #[error("payload store: {0}")]
    Payload(String),
    /// A registered FileDescriptorSet could not be read.
    #[error("descriptor set: {0}")]
    DescriptorSet(String),
}

impl From<tokio_postgres::Error> for QueryError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The driver's Display hides the server's message; the source has it.
        let detail = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        };
        QueryError::Database(detail)
    }
}

impl From<deadpool_postgres::PoolError> for QueryError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        QueryError::Database(format!("no connection: {e}"))
    }
}

impl From<QueryError> for Status {
    fn from(e: QueryError) -> Self {
        let message = e.to_string();
        match e {
            QueryError::BadFilter(_)
            | QueryError::BadCursor(_)
            | QueryError::BadRequest(_)
            | QueryError::RangeTooLarge(_)
            | QueryError::DescriptorSet(_) => Status::invalid_argument(message),
            QueryError::UnknownId(_) => Status::not_found(message),
            QueryError::Database(_) => {
                tracing::warn!(error = %message, "query failed in the index database");
                Status::unavailable(message)
            }
            QueryError::Payload(_) => {
                tracing::warn!(error = %message, "query failed reading a payload");
                Status::internal(message)
            }
        }
    }
}

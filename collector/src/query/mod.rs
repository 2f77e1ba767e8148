//! The Query service of the collector: lists, charts, maps, single pairs, live tail and export
//! over what ingest stored (index rows in PostgreSQL/TimescaleDB, payloads in the object store).
//!
//! Each call lives in its own module; this one only wires them to the generated tonic trait
//! and turns [`QueryError`]s into gRPC statuses.

pub mod aggregates;
pub mod body_decode;
pub mod cursor;
pub mod error;
pub mod export;
pub mod filter;
pub mod get;
pub mod grpc_json;
pub mod har;
pub mod histogram;
pub mod list;
pub mod matcher;
pub mod summary;
pub mod tail;
pub mod throughput;
pub mod tiling;

use std::sync::Arc;
use std::time::SystemTime;

use tapwire_proto::v1::query_server::Query;
use tapwire_proto::v1::{
    DependenciesRequest, DependenciesResponse, EndpointsRequest, EndpointsResponse, ExportRequest,
    GetPairRequest, GetPairResponse, ListPairsRequest, ListPairsResponse, ServicesRequest,
    ServicesResponse, TailRequest, ThroughputRequest, ThroughputResponse,
};
use tonic::{Request, Response, Status};

pub use error::QueryError;
pub use grpc_json::Schemas;

use crate::storage::Stores;

/// The gRPC Query service (`tapwire.v1.Query`), serving what [`Stores`] holds.
#[derive(Clone)]
pub struct QueryService {
    stores: Arc<Stores>,
    schemas: Arc<Schemas>,
}

impl QueryService {
    /// A service over `stores`.
    pub fn new(stores: Arc<Stores>) -> QueryService {
        QueryService {
            stores,
            schemas: Arc::new(Schemas::default()),
        }
    }

    /// Registers an encoded `FileDescriptorSet` (e.g. from a `--descriptor-set FILE` option), so
    /// `GetPair` with `decode` shows the gRPC messages of its services with field names.
    pub fn with_descriptor_set(mut self, descriptor_set: &[u8]) -> Result<Self, QueryError> {
        let mut schemas = (*self.schemas).clone();
        schemas.register(descriptor_set)?;
        self.schemas = Arc::new(schemas);
        Ok(self)
    }
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn list_pairs(
        &self,
        request: Request<ListPairsRequest>,
    ) -> Result<Response<ListPairsResponse>, Status> {
        let answer = list::list_pairs(&self.stores, request.get_ref(), SystemTime::now()).await?;
        Ok(Response::new(answer))
    }

    async fn get_pair(
        &self,
        request: Request<GetPairRequest>,
    ) -> Result<Response<GetPairResponse>, Status> {
        let answer = get::get_pair(&self.stores, &self.schemas, request.get_ref()).await?;
        Ok(Response::new(answer))
    }

    async fn throughput(
        &self,
        request: Request<ThroughputRequest>,
    ) -> Result<Response<ThroughputResponse>, Status> {
        let answer =
            throughput::throughput(&self.stores, request.get_ref(), SystemTime::now()).await?;
        Ok(Response::new(answer))
    }

    async fn endpoints(
        &self,
        request: Request<EndpointsRequest>,
    ) -> Result<Response<EndpointsResponse>, Status> {
        let answer =
            aggregates::endpoints(&self.stores, request.get_ref(), SystemTime::now()).await?;
        Ok(Response::new(answer))
    }

    async fn dependencies(
        &self,
        request: Request<DependenciesRequest>,
    ) -> Result<Response<DependenciesResponse>, Status> {
        let answer =
            aggregates::dependencies(&self.stores, request.get_ref(), SystemTime::now()).await?;
        Ok(Response::new(answer))
    }

    async fn services(
        &self,
        request: Request<ServicesRequest>,
    ) -> Result<Response<ServicesResponse>, Status> {
        let answer =
            aggregates::services(&self.stores, request.get_ref(), SystemTime::now()).await?;
        Ok(Response::new(answer))
    }

    type TailStream = tail::TailStream;

    async fn tail(
        &self,
        request: Request<TailRequest>,
    ) -> Result<Response<Self::TailStream>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        Ok(Response::new(tail::tail(&self.stores, filter)?))
    }

    type ExportStream = export::ExportStream;

    async fn export(
        &self,
        request: Request<ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let stream = export::export(self.stores.clone(), request.get_ref(), SystemTime::now())?;
        Ok(Response::new(stream))
    }
}

//! `Endpoints`, `Dependencies` and `Services`: grouped counts, errors and latency percentiles
//! over the raw rows of a time range.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use tapwire_proto::v1::{
    DependenciesRequest, DependenciesResponse, Dependency, Endpoint, EndpointsRequest,
    EndpointsResponse, Filter, ServiceVolume, ServicesRequest, ServicesResponse,
};

use super::error::QueryError;
use super::filter::{DEFAULT_RANGE, SqlWhere, pairs_where, time_range};
use super::histogram::{Histogram, sql_bucket_expr};
use crate::storage::Stores;

/// The longest range grouped from raw rows in one call.
pub const MAX_RANGE: Duration = Duration::from_secs(31 * 86_400);
/// Endpoints returned when the request does not say.
pub const DEFAULT_ENDPOINTS: u32 = 100;
/// The most endpoints one answer may have.
pub const MAX_ENDPOINTS: u32 = 10_000;

/// Counts, errors and latency of one group.
#[derive(Default)]
struct Group {
    count: u64,
    errors: u64,
    latency: Histogram,
}

fn checked_where(filter: &Filter, now: SystemTime) -> Result<SqlWhere, QueryError> {
    let range = time_range(filter, now, DEFAULT_RANGE)?;
    if range.length() > MAX_RANGE {
        return Err(QueryError::RangeTooLarge(format!(
            "{} days exceed the limit of {} days for grouped queries",
            range.length().as_secs() / 86_400,
            MAX_RANGE.as_secs() / 86_400
        )));
    }
    pairs_where(filter, &range)
}

/// Runs `SELECT <keys>, is_error, <hist bucket>, count(*) … GROUP BY` and folds the rows into
/// one [`Group`] per key (the key columns are text, except booleans rendered by `key_of`).
async fn grouped<K: std::hash::Hash + Ord>(
    stores: &Stores,
    keys: &str,
    key_count: usize,
    w: &SqlWhere,
    key_of: impl Fn(&tokio_postgres::Row) -> Result<K, QueryError>,
) -> Result<Vec<(K, Group)>, QueryError> {
    let sql = format!(
        "SELECT {keys}, is_error, {} AS h, count(*) FROM rr_pairs {} GROUP BY {}",
        sql_bucket_expr("duration_ns"),
        w.clause(),
        (1..=key_count + 2)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let client = stores.db.get().await?;
    let rows = client
        .query(&client.prepare_cached(&sql).await?, &w.params())
        .await?;
    let mut groups: HashMap<K, Group> = HashMap::new();
    for row in &rows {
        let n = row.try_get::<_, i64>(key_count + 2)?.max(0) as u64;
        let is_error: bool = row.try_get(key_count)?;
        let g = groups.entry(key_of(row)?).or_default();
        g.count += n;
        if is_error {
            g.errors += n;
        }
        g.latency
            .add(i64::from(row.try_get::<_, i32>(key_count + 1)?), n);
    }
    let mut out: Vec<(K, Group)> = groups.into_iter().collect();
    out.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
    Ok(out)
}

/// Answers `Endpoints`: per service, direction, protocol, method and normalized endpoint,
/// most requested first.
pub async fn endpoints(
    stores: &Stores,
    request: &EndpointsRequest,
    now: SystemTime,
) -> Result<EndpointsResponse, QueryError> {
    let filter = request.filter.clone().unwrap_or_default();
    let w = checked_where(&filter, now)?;
    let limit = match request.limit {
        0 => DEFAULT_ENDPOINTS,
        n => n.min(MAX_ENDPOINTS),
    } as usize;
    let groups = grouped(
        stores,
        "service, is_inbound, protocol, method, endpoint",
        5,
        &w,
        |row| {
            Ok((
                row.try_get::<_, String>(0)?,
                row.try_get::<_, bool>(1)?,
                row.try_get::<_, String>(2)?,
                row.try_get::<_, String>(3)?,
                row.try_get::<_, String>(4)?,
            ))
        },
    )
    .await?;
    let endpoints = groups
        .into_iter()
        .take(limit)
        .map(|((service, is_inbound, protocol, method, endpoint), g)| {
            let p = g.latency.percentiles();
            Endpoint {
                service,
                is_inbound,
                protocol,
                method,
                endpoint,
                count: g.count,
                errors: g.errors,
                p50_ns: p.p50,
                p95_ns: p.p95,
                p99_ns: p.p99,
            }
        })
        .collect();
    Ok(EndpointsResponse { endpoints })
}

/// Answers `Dependencies`: edges of outbound pairs from `service` to the peer's service, else
/// the authority, else the remote address.
pub async fn dependencies(
    stores: &Stores,
    request: &DependenciesRequest,
    now: SystemTime,
) -> Result<DependenciesResponse, QueryError> {
    let filter = request.filter.clone().unwrap_or_default();
    let mut w = checked_where(&filter, now)?;
    w.push_raw("NOT is_inbound");
    let groups = grouped(
        stores,
        "service, coalesce(nullif(remote_service, ''), nullif(authority, ''), remote_addr), \
         protocol",
        3,
        &w,
        |row| {
            Ok((
                row.try_get::<_, String>(0)?,
                row.try_get::<_, String>(1)?,
                row.try_get::<_, String>(2)?,
            ))
        },
    )
    .await?;
    let edges = groups
        .into_iter()
        .map(|((from_service, to, protocol), g)| {
            let p = g.latency.percentiles();
            Dependency {
                from_service,
                to,
                protocol,
                count: g.count,
                errors: g.errors,
                p50_ns: p.p50,
                p95_ns: p.p95,
                p99_ns: p.p99,
            }
        })
        .collect();
    Ok(DependenciesResponse { edges })
}

/// Answers `Services`: each service and namespace seen, with its volumes, busiest first.
pub async fn services(
    stores: &Stores,
    request: &ServicesRequest,
    now: SystemTime,
) -> Result<ServicesResponse, QueryError> {
    let filter = request.filter.clone().unwrap_or_default();
    let w = checked_where(&filter, now)?;
    let sql = format!(
        "SELECT service, namespace, count(*) FILTER (WHERE is_inbound), \
         count(*) FILTER (WHERE NOT is_inbound), count(*) FILTER (WHERE is_error) \
         FROM rr_pairs {} GROUP BY 1, 2 ORDER BY count(*) DESC, 1, 2",
        w.clause()
    );
    let client = stores.db.get().await?;
    let rows = client
        .query(&client.prepare_cached(&sql).await?, &w.params())
        .await?;
    let services = rows
        .iter()
        .map(|row| {
            Ok(ServiceVolume {
                service: row.try_get(0)?,
                namespace: row.try_get(1)?,
                inbound: row.try_get::<_, i64>(2)?.max(0) as u64,
                outbound: row.try_get::<_, i64>(3)?.max(0) as u64,
                errors: row.try_get::<_, i64>(4)?.max(0) as u64,
            })
        })
        .collect::<Result<Vec<_>, QueryError>>()?;
    Ok(ServicesResponse { services })
}

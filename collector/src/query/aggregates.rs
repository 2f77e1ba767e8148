//! `Endpoints`, `Dependencies` and `Services`: grouped counts, errors and latency percentiles
//! over a time range, read from the rollups for its whole minutes and hours and from the raw
//! rows for the rest ([`super::tiling`]), so a day costs about as much as an hour.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use tapwire_proto::v1::{
    DependenciesRequest, DependenciesResponse, Dependency, Endpoint, EndpointsRequest,
    EndpointsResponse, Filter, ServiceVolume, ServicesRequest, ServicesResponse,
};

use super::error::QueryError;
use super::filter::{
    DEFAULT_RANGE, SqlWhere, TimeRange, pairs_where, rollup_can_answer, rollup_where, time_range,
    validate,
};
use super::histogram::{Histogram, sql_bucket_expr};
use super::tiling::{Source, tile};
use crate::storage::Stores;

/// The longest range grouped in one call.
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

/// What a grouped query groups by, as SQL over the raw rows and over the rollups (the same
/// values, column for column), plus conditions both sides share.
struct Grouping<'a> {
    raw_keys: &'a str,
    rollup_keys: &'a str,
    key_count: usize,
    condition: Option<&'a str>,
}

fn checked_range(filter: &Filter, now: SystemTime) -> Result<TimeRange, QueryError> {
    validate(filter)?;
    let range = time_range(filter, now, DEFAULT_RANGE)?;
    if range.length() > MAX_RANGE {
        return Err(QueryError::RangeTooLarge(format!(
            "{} days exceed the limit of {} days for grouped queries",
            range.length().as_secs() / 86_400,
            MAX_RANGE.as_secs() / 86_400
        )));
    }
    Ok(range)
}

/// Groups the pairs matching `filter` in `now`'s default range by `grouping`, one
/// [`Group`] per key (made by `key_of` from the key columns), busiest first.
async fn grouped<K: std::hash::Hash + Ord>(
    stores: &Stores,
    filter: &Filter,
    now: SystemTime,
    grouping: Grouping<'_>,
    key_of: impl Fn(&tokio_postgres::Row) -> Result<K, QueryError>,
) -> Result<Vec<(K, Group)>, QueryError> {
    let range = checked_range(filter, now)?;
    let k = grouping.key_count;
    let client = stores.db.get().await?;
    let mut groups: HashMap<K, Group> = HashMap::new();
    for piece in tile(&range, rollup_can_answer(filter)) {
        let mut w: SqlWhere = match piece.source {
            Source::Raw => pairs_where(filter, &piece.range)?,
            Source::Minutes | Source::Hours => rollup_where(filter, &piece.range)?,
        };
        if let Some(condition) = grouping.condition {
            w.push_raw(condition);
        }
        let sql = match piece.source {
            Source::Raw => format!(
                "SELECT {}, count(*), count(*) FILTER (WHERE is_error), {} AS h \
                 FROM rr_pairs {} GROUP BY 1, {}",
                grouping.raw_keys,
                sql_bucket_expr("duration_ns"),
                w.clause(),
                (2..=k)
                    .chain([k + 3])
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            // Rollup rows are few (one per dimension combination and bucket): they are
            // summed here rather than unnested into SQL rows.
            rollup => format!(
                "SELECT {}, count, errors, latency_buckets FROM {} {}",
                grouping.rollup_keys,
                rollup.table(),
                w.clause()
            ),
        };
        let rows = client
            .query(&client.prepare_cached(&sql).await?, &w.params())
            .await?;
        for row in &rows {
            let g = groups.entry(key_of(row)?).or_default();
            let n = row.try_get::<_, i64>(k)?.max(0) as u64;
            g.count += n;
            g.errors += row.try_get::<_, i64>(k + 1)?.max(0) as u64;
            match piece.source {
                Source::Raw => g.latency.add(i64::from(row.try_get::<_, i32>(k + 2)?), n),
                _ => g.latency.add_sparse(&row.try_get::<_, Vec<i64>>(k + 2)?),
            }
        }
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
    let limit = match request.limit {
        0 => DEFAULT_ENDPOINTS,
        n => n.min(MAX_ENDPOINTS),
    } as usize;
    let keys = "service, is_inbound, protocol, method, endpoint";
    let grouping = Grouping {
        raw_keys: keys,
        rollup_keys: keys,
        key_count: 5,
        condition: None,
    };
    let groups = grouped(stores, &filter, now, grouping, |row| {
        Ok((
            row.try_get::<_, String>(0)?,
            row.try_get::<_, bool>(1)?,
            row.try_get::<_, String>(2)?,
            row.try_get::<_, String>(3)?,
            row.try_get::<_, String>(4)?,
        ))
    })
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

/// Answers `Dependencies`: edges of outbound pairs from `service` to `remote_service`, which
/// ingest fills for every outbound pair (the observed server at the remote address, else
/// the authority's host, else the remote address). Rows stored before it did have an empty
/// target: the rollups cannot recover one, and raw rows must agree with them.
pub async fn dependencies(
    stores: &Stores,
    request: &DependenciesRequest,
    now: SystemTime,
) -> Result<DependenciesResponse, QueryError> {
    let filter = request.filter.clone().unwrap_or_default();
    let grouping = Grouping {
        raw_keys: "service, remote_service, protocol",
        rollup_keys: "service, remote_service, protocol",
        key_count: 3,
        condition: Some("NOT is_inbound"),
    };
    let groups = grouped(stores, &filter, now, grouping, |row| {
        Ok((
            row.try_get::<_, String>(0)?,
            row.try_get::<_, String>(1)?,
            row.try_get::<_, String>(2)?,
        ))
    })
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
    let keys = "service, namespace, is_inbound";
    let grouping = Grouping {
        raw_keys: keys,
        rollup_keys: keys,
        key_count: 3,
        condition: None,
    };
    let groups = grouped(stores, &filter, now, grouping, |row| {
        Ok((
            row.try_get::<_, String>(0)?,
            row.try_get::<_, String>(1)?,
            row.try_get::<_, bool>(2)?,
        ))
    })
    .await?;
    let mut volumes: HashMap<(String, String), ServiceVolume> = HashMap::new();
    for ((service, namespace, is_inbound), g) in groups {
        let v = volumes
            .entry((service.clone(), namespace.clone()))
            .or_insert_with(|| ServiceVolume {
                service,
                namespace,
                ..Default::default()
            });
        if is_inbound {
            v.inbound += g.count;
        } else {
            v.outbound += g.count;
        }
        v.errors += g.errors;
    }
    let mut services: Vec<ServiceVolume> = volumes.into_values().collect();
    services.sort_by(|a, b| {
        (b.inbound + b.outbound)
            .cmp(&(a.inbound + a.outbound))
            .then_with(|| (&a.service, &a.namespace).cmp(&(&b.service, &b.namespace)))
    });
    Ok(ServicesResponse { services })
}

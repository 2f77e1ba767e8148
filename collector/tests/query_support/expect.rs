//! Expected answers computed directly from the pairs a test sent, independently of the
//! collector's SQL: filters, bucket edges, histograms and groupings re-implemented plainly.

use std::collections::BTreeMap;
use std::time::SystemTime;

use tapwire_proto::v1::{Filter, Pair};

use super::pairs::{micros, time_of};

/// `time_bucket`'s origin (2000-01-03 00:00 UTC) in microseconds.
pub const ORIGIN_US: i64 = 946_857_600_000_000;

/// The pair's `time` in microseconds (PostgreSQL keeps microseconds).
pub fn time_us(p: &Pair) -> i64 {
    micros(time_of(p.start_time.as_ref().unwrap()))
}

/// The documented error rule.
pub fn is_error(p: &Pair) -> bool {
    p.status >= 500 || p.status == 0 || p.grpc_status.is_some_and(|g| g != 0)
}

/// The normalized endpoint of the synthetic paths (numbers collapse to `{id}`).
pub fn endpoint(p: &Pair) -> String {
    if p.protocol == "grpc" {
        return p.path.clone();
    }
    let path = p.path.split('?').next().unwrap_or("");
    path.split('/')
        .map(|seg| {
            if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
                "{id}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The filter's meaning over one pair (the time range given explicitly).
pub fn matches(f: &Filter, start_us: i64, end_us: i64, p: &Pair) -> bool {
    let t = time_us(p);
    let eq = |want: &str, have: &str| want.is_empty() || want == have;
    t >= start_us
        && t < end_us
        && eq(&f.node, &p.node)
        && eq(&f.namespace, &p.namespace)
        && eq(&f.service, &p.service)
        && eq(&f.pod, &p.pod)
        && eq(&f.protocol, &p.protocol)
        && eq(&f.method, &p.method)
        && eq(&f.remote_service, &p.remote_service)
        && (f.endpoint.is_empty() || f.endpoint == endpoint(p))
        && match f.direction {
            1 => p.is_inbound,
            2 => !p.is_inbound,
            _ => true,
        }
        && p.path.starts_with(&f.path_prefix)
        && (f.status == 0 || f.status == p.status)
        && (f.status_class == 0 || f.status_class == p.status / 100)
        && (f.grpc_status.is_none() || f.grpc_status == p.grpc_status)
        && f.min_duration.as_ref().is_none_or(|d| {
            p.duration_ns as i128 >= d.seconds as i128 * 1_000_000_000 + d.nanos as i128
        })
        && (f.text.is_empty()
            || p.authority.to_lowercase().contains(&f.text.to_lowercase())
            || p.path.to_lowercase().contains(&f.text.to_lowercase()))
        && (!f.errors_only || is_error(p))
        && (f.pid == 0 || f.pid == p.pid)
}

/// The filter's explicit range in microseconds.
pub fn range_us(f: &Filter) -> (i64, i64) {
    (
        micros(time_of(f.start.as_ref().unwrap())),
        micros(time_of(f.end.as_ref().unwrap())),
    )
}

/// Ids newest first, as `ListPairs` must return them.
pub fn list_ids(f: &Filter, pairs: &[Pair]) -> Vec<String> {
    let (s, e) = range_us(f);
    let mut rows: Vec<(i64, uuid::Uuid)> = pairs
        .iter()
        .filter(|p| matches(f, s, e, p))
        .map(|p| (time_us(p), uuid::Uuid::parse_str(&p.id).unwrap()))
        .collect();
    rows.sort();
    rows.reverse();
    rows.into_iter().map(|(_, id)| id.to_string()).collect()
}

/// The histogram bucket: floor(4 · log2(max(d, 1))) capped to 159.
pub fn hist_bucket(d: u64) -> usize {
    ((4.0 * (d.max(1) as f64).log2()).floor() as usize).min(159)
}

/// p50/p95/p99 of durations by the documented rule.
pub fn percentiles(durations: &[u64]) -> (u64, u64, u64) {
    if durations.is_empty() {
        return (0, 0, 0);
    }
    let mut counts = [0u64; 160];
    for d in durations {
        counts[hist_bucket(*d)] += 1;
    }
    let at = |q: f64| {
        let rank = (q * durations.len() as f64).ceil().max(1.0) as u64;
        let mut cum = 0;
        for (b, c) in counts.iter().enumerate() {
            cum += c;
            if cum >= rank {
                return (2f64.powf((b as f64 + 0.5) / 4.0)).round() as u64;
            }
        }
        unreachable!()
    };
    (at(0.5), at(0.95), at(0.99))
}

/// One expected throughput bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Bucket start, microseconds.
    pub start_us: i64,
    /// Counts.
    pub inbound: u64,
    /// Counts.
    pub outbound: u64,
    /// Errors.
    pub inbound_errors: u64,
    /// Errors.
    pub outbound_errors: u64,
    /// Percentiles.
    pub p: (u64, u64, u64),
}

/// Expected `Throughput` buckets: whole buckets covering the filter's range.
pub fn throughput(f: &Filter, interval_us: i64, pairs: &[Pair]) -> Vec<Bucket> {
    let (s, e) = range_us(f);
    let align = |t: i64| ORIGIN_US + (t - ORIGIN_US).div_euclid(interval_us) * interval_us;
    let first = align(s);
    let end = align(e - 1) + interval_us;
    let mut out = Vec::new();
    let mut b = first;
    while b < end {
        let inside: Vec<&Pair> = pairs
            .iter()
            .filter(|p| matches(f, b, b + interval_us, p))
            .collect();
        let durations: Vec<u64> = inside.iter().map(|p| p.duration_ns).collect();
        out.push(Bucket {
            start_us: b,
            inbound: inside.iter().filter(|p| p.is_inbound).count() as u64,
            outbound: inside.iter().filter(|p| !p.is_inbound).count() as u64,
            inbound_errors: inside
                .iter()
                .filter(|p| p.is_inbound && is_error(p))
                .count() as u64,
            outbound_errors: inside
                .iter()
                .filter(|p| !p.is_inbound && is_error(p))
                .count() as u64,
            p: percentiles(&durations),
        });
        b += interval_us;
    }
    out
}

/// Grouped counts: key → (count, errors, percentiles).
pub type Groups = BTreeMap<Vec<String>, (u64, u64, (u64, u64, u64))>;

fn group_by(pairs: Vec<&Pair>, key: impl Fn(&Pair) -> Vec<String>) -> Groups {
    let mut groups: BTreeMap<Vec<String>, Vec<&Pair>> = BTreeMap::new();
    for p in pairs {
        groups.entry(key(p)).or_default().push(p);
    }
    groups
        .into_iter()
        .map(|(k, ps)| {
            let durations: Vec<u64> = ps.iter().map(|p| p.duration_ns).collect();
            let errors = ps.iter().filter(|p| is_error(p)).count() as u64;
            (k, (ps.len() as u64, errors, percentiles(&durations)))
        })
        .collect()
}

/// Expected `Endpoints` keyed by [service, inbound, protocol, method, endpoint].
pub fn endpoints(f: &Filter, pairs: &[Pair]) -> Groups {
    let (s, e) = range_us(f);
    group_by(
        pairs.iter().filter(|p| matches(f, s, e, p)).collect(),
        |p| {
            vec![
                p.service.clone(),
                p.is_inbound.to_string(),
                p.protocol.clone(),
                p.method.clone(),
                endpoint(p),
            ]
        },
    )
}

/// Expected `Dependencies` keyed by [from, to, protocol].
pub fn dependencies(f: &Filter, pairs: &[Pair]) -> Groups {
    let (s, e) = range_us(f);
    group_by(
        pairs
            .iter()
            .filter(|p| !p.is_inbound && matches(f, s, e, p))
            .collect(),
        |p| {
            let to = [&p.remote_service, &p.authority, &p.remote_addr]
                .into_iter()
                .find(|v| !v.is_empty())
                .cloned()
                .unwrap_or_default();
            vec![p.service.clone(), to, p.protocol.clone()]
        },
    )
}

/// Expected `Services` keyed by [service, namespace] → (inbound, outbound, errors).
pub fn services(f: &Filter, pairs: &[Pair]) -> BTreeMap<Vec<String>, (u64, u64, u64)> {
    let (s, e) = range_us(f);
    let mut out: BTreeMap<Vec<String>, (u64, u64, u64)> = BTreeMap::new();
    for p in pairs.iter().filter(|p| matches(f, s, e, p)) {
        let v = out
            .entry(vec![p.service.clone(), p.namespace.clone()])
            .or_default();
        if p.is_inbound {
            v.0 += 1;
        } else {
            v.1 += 1;
        }
        if is_error(p) {
            v.2 += 1;
        }
    }
    out
}

/// A filter over `[start, end)` with everything else empty.
pub fn range_filter(start: SystemTime, end: SystemTime) -> Filter {
    Filter {
        start: Some(super::pairs::ts(start)),
        end: Some(super::pairs::ts(end)),
        ..Default::default()
    }
}

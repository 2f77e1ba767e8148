//! Turns a `Filter` of the query API into a checked time range and a parameterized SQL
//! `WHERE` clause over `rr_pairs` (or a rollup table, for the fields the rollups keep).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tapwire_proto::v1::{Direction, Filter};
use tokio_postgres::types::ToSql;

use super::error::QueryError;

/// The range a list or chart covers when the filter gives no start.
pub const DEFAULT_RANGE: Duration = Duration::from_secs(3600);

/// A SQL parameter owned by the statement being built.
pub type Param = Box<dyn ToSql + Sync + Send>;

/// A `WHERE` clause under construction: conditions joined by `AND`, with `$n` parameters.
#[derive(Default)]
pub struct SqlWhere {
    conditions: Vec<String>,
    params: Vec<Param>,
}

impl SqlWhere {
    /// Adds a parameter and returns its placeholder (`$n`).
    pub fn param(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    /// Adds a condition; `{}` in `template` is replaced by the placeholder of `value`.
    pub fn push(&mut self, template: &str, value: impl ToSql + Sync + Send + 'static) {
        let placeholder = self.param(value);
        self.conditions.push(template.replace("{}", &placeholder));
    }

    /// Adds a condition without a parameter.
    pub fn push_raw(&mut self, condition: impl Into<String>) {
        self.conditions.push(condition.into());
    }

    /// `WHERE a AND b …`, or nothing.
    pub fn clause(&self) -> String {
        if self.conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.conditions.join(" AND "))
        }
    }

    /// The parameters in placeholder order, as tokio-postgres wants them.
    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// A time range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// Inclusive.
    pub start: SystemTime,
    /// Exclusive.
    pub end: SystemTime,
}

impl TimeRange {
    /// The range's length.
    pub fn length(&self) -> Duration {
        self.end.duration_since(self.start).unwrap_or_default()
    }
}

/// Converts a protobuf timestamp, refusing ones out of range.
pub fn to_system_time(ts: &tapwire_proto::Timestamp, what: &str) -> Result<SystemTime, QueryError> {
    let bad = || QueryError::BadFilter(format!("{what} is not a valid timestamp"));
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(bad());
    }
    let secs = u64::try_from(ts.seconds).map_err(|_| bad())?;
    UNIX_EPOCH
        .checked_add(Duration::new(secs, ts.nanos as u32))
        .ok_or_else(bad)
}

/// Converts a time to a protobuf timestamp (times before 1970 are clamped to the epoch:
/// nothing tapwire records is older).
pub fn to_timestamp(t: SystemTime) -> tapwire_proto::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    tapwire_proto::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Microseconds since the epoch (PostgreSQL's timestamp resolution).
pub fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The inverse of [`micros`].
pub fn from_micros(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us.max(0) as u64)
}

/// The filter's time range: unset start means `end - default_range`, unset end means now.
pub fn time_range(
    filter: &Filter,
    now: SystemTime,
    default_range: Duration,
) -> Result<TimeRange, QueryError> {
    let end = match &filter.end {
        Some(ts) => to_system_time(ts, "filter.end")?,
        None => now,
    };
    let start = match &filter.start {
        Some(ts) => to_system_time(ts, "filter.start")?,
        None => end.checked_sub(default_range).unwrap_or(UNIX_EPOCH),
    };
    if start >= end {
        return Err(QueryError::BadFilter(
            "filter.start must be before filter.end".into(),
        ));
    }
    Ok(TimeRange { start, end })
}

/// The filter's direction as `Some(is_inbound)`, or `None` for any.
pub fn direction(filter: &Filter) -> Result<Option<bool>, QueryError> {
    match Direction::try_from(filter.direction) {
        Ok(Direction::Any) => Ok(None),
        Ok(Direction::Inbound) => Ok(Some(true)),
        Ok(Direction::Outbound) => Ok(Some(false)),
        Err(_) => Err(QueryError::BadFilter(format!(
            "filter.direction {} is not a known direction",
            filter.direction
        ))),
    }
}

/// Checks the fields whose values can be wrong (the text fields are free-form).
pub fn validate(filter: &Filter) -> Result<(), QueryError> {
    direction(filter)?;
    if filter.status != 0 && !(100..=999).contains(&filter.status) {
        return Err(QueryError::BadFilter(format!(
            "filter.status {} is not an HTTP status (100..999)",
            filter.status
        )));
    }
    if filter.status_class > 5 {
        return Err(QueryError::BadFilter(format!(
            "filter.status_class {} is not a class 1..5",
            filter.status_class
        )));
    }
    if let Some(g) = filter.grpc_status
        && g > 16
    {
        return Err(QueryError::BadFilter(format!(
            "filter.grpc_status {g} is not a gRPC status code (0..16)"
        )));
    }
    if let Some(d) = &filter.min_duration
        && (d.seconds < 0 || d.nanos < 0)
    {
        return Err(QueryError::BadFilter(
            "filter.min_duration must not be negative".into(),
        ));
    }
    Ok(())
}

/// The minimum duration in nanoseconds, when set.
pub fn min_duration_ns(filter: &Filter) -> Option<i64> {
    filter.min_duration.as_ref().map(|d| {
        d.seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(d.nanos))
    })
}

/// Escapes `%`, `_` and `\` for a `LIKE` pattern.
fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The conditions of `filter` over `rr_pairs`, time range included.
pub fn pairs_where(filter: &Filter, range: &TimeRange) -> Result<SqlWhere, QueryError> {
    validate(filter)?;
    let mut w = SqlWhere::default();
    w.push("time >= {}", range.start);
    w.push("time < {}", range.end);
    push_rollup_dimensions(&mut w, filter)?;
    push_text_eq(&mut w, "pod", &filter.pod);
    if !filter.path_prefix.is_empty() {
        w.push("starts_with(path, {})", filter.path_prefix.clone());
    }
    if filter.status != 0 {
        w.push("status = {}", filter.status as i32);
    }
    if filter.status_class != 0 {
        w.push("status / 100 = {}", filter.status_class as i32);
    }
    if let Some(g) = filter.grpc_status {
        w.push("grpc_status = {}", g as i32);
    }
    if let Some(ns) = min_duration_ns(filter) {
        w.push("duration_ns >= {}", ns);
    }
    if !filter.text.is_empty() {
        let pattern = format!("%{}%", like_escape(&filter.text));
        let p = w.param(pattern);
        w.push_raw(format!("(authority ILIKE {p} OR path ILIKE {p})"));
    }
    if filter.errors_only {
        w.push_raw("is_error");
    }
    if filter.pid != 0 {
        w.push("pid = {}", filter.pid as i32);
    }
    Ok(w)
}

/// The conditions on the dimensions `rr_pairs` and the rollups share, with the same columns
/// in both: one list, so the raw and rollup parts of an answer always filter alike.
fn push_rollup_dimensions(w: &mut SqlWhere, filter: &Filter) -> Result<(), QueryError> {
    push_text_eq(w, "node", &filter.node);
    push_text_eq(w, "namespace", &filter.namespace);
    push_text_eq(w, "service", &filter.service);
    push_text_eq(w, "protocol", &filter.protocol);
    push_text_eq(w, "method", &filter.method);
    push_text_eq(w, "endpoint", &filter.endpoint);
    push_text_eq(w, "remote_service", &filter.remote_service);
    if let Some(inbound) = direction(filter)? {
        w.push("is_inbound = {}", inbound);
    }
    Ok(())
}

fn push_text_eq(w: &mut SqlWhere, column: &str, value: &str) {
    if !value.is_empty() {
        w.push(&format!("{column} = {{}}"), value.to_owned());
    }
}

/// True when the rollups (`rr_rollup_1m`, `rr_rollup_1h`) keep every dimension the filter
/// uses.
pub fn rollup_can_answer(filter: &Filter) -> bool {
    filter.pod.is_empty()
        && filter.path_prefix.is_empty()
        && filter.status == 0
        && filter.grpc_status.is_none()
        && filter.min_duration.is_none()
        && filter.text.is_empty()
        && !filter.errors_only
        && filter.pid == 0
}

/// The conditions of `filter` over a rollup table for whole buckets `[start, end)`.
/// Only valid when [`rollup_can_answer`] holds.
pub fn rollup_where(filter: &Filter, range: &TimeRange) -> Result<SqlWhere, QueryError> {
    validate(filter)?;
    let mut w = SqlWhere::default();
    w.push("bucket >= {}", range.start);
    w.push("bucket < {}", range.end);
    push_rollup_dimensions(&mut w, filter)?;
    if filter.status_class != 0 {
        w.push("status_class = {}", filter.status_class as i16);
    }
    Ok(w)
}

//! The `Filter` applied in memory to one `PairSummary`, for `Tail` (new pairs never pass
//! through SQL). Its meaning is the same as the SQL of `filter::pairs_where`.

use tapwire_proto::v1::{Filter, PairSummary};

use super::filter::{direction, min_duration_ns, to_system_time};

/// True when `pair` passes `filter` (which must have passed `filter::validate`).
pub fn matches(filter: &Filter, pair: &PairSummary) -> bool {
    let text_eq = |want: &str, have: &str| want.is_empty() || want == have;
    if let Some(time) = pair
        .time
        .as_ref()
        .and_then(|t| to_system_time(t, "time").ok())
    {
        if let Some(start) = filter
            .start
            .as_ref()
            .and_then(|t| to_system_time(t, "start").ok())
            && time < start
        {
            return false;
        }
        if let Some(end) = filter
            .end
            .as_ref()
            .and_then(|t| to_system_time(t, "end").ok())
            && time >= end
        {
            return false;
        }
    }
    let errors = pair.status >= 500 || pair.status == 0 || pair.grpc_status.is_some_and(|g| g != 0);
    text_eq(&filter.node, &pair.node)
        && text_eq(&filter.namespace, &pair.namespace)
        && text_eq(&filter.service, &pair.service)
        && text_eq(&filter.pod, &pair.pod)
        && text_eq(&filter.protocol, &pair.protocol)
        && text_eq(&filter.method, &pair.method)
        && text_eq(&filter.endpoint, &pair.endpoint)
        && text_eq(&filter.remote_service, &pair.remote_service)
        && direction(filter)
            .ok()
            .flatten()
            .is_none_or(|inbound| inbound == pair.is_inbound)
        && pair.path.starts_with(&filter.path_prefix)
        && (filter.status == 0 || filter.status == pair.status)
        && (filter.status_class == 0 || filter.status_class == pair.status / 100)
        && filter
            .grpc_status
            .is_none_or(|g| pair.grpc_status == Some(g))
        && min_duration_ns(filter).is_none_or(|ns| pair.duration_ns as i64 >= ns)
        && (filter.text.is_empty()
            || contains_ci(&pair.authority, &filter.text)
            || contains_ci(&pair.path, &filter.text))
        && (!filter.errors_only || errors)
        && (filter.pid == 0 || filter.pid == pair.pid)
}

fn contains_ci(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_field_filters() {
        let pair = PairSummary {
            service: "shop".into(),
            path: "/Users/42?x=1".into(),
            authority: "api.local".into(),
            status: 503,
            is_inbound: true,
            duration_ns: 5_000,
            ..Default::default()
        };
        let f = |edit: fn(&mut Filter)| {
            let mut f = Filter::default();
            edit(&mut f);
            matches(&f, &pair)
        };
        assert!(f(|_| {}));
        assert!(f(|f| f.service = "shop".into()));
        assert!(!f(|f| f.service = "cart".into()));
        assert!(f(|f| f.text = "users".into()));
        assert!(f(|f| f.text = "API".into()));
        assert!(!f(|f| f.text = "orders".into()));
        assert!(f(|f| f.status_class = 5));
        assert!(!f(|f| f.status = 500));
        assert!(f(|f| f.errors_only = true));
        assert!(!f(|f| f.direction = 2));
        assert!(f(|f| f.path_prefix = "/Users/".into()));
        assert!(!f(|f| f.grpc_status = Some(0)));
        assert!(!f(|f| f.min_duration = Some(tapwire_proto::Duration {
            seconds: 1,
            nanos: 0
        })));
    }
}

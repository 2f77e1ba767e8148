//! `Throughput` (raw and rollup), `Endpoints`, `Dependencies` and `Services`.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use tapwire_proto::v1::{
    DependenciesRequest, EndpointsRequest, Filter, Pair, ServicesRequest, ThroughputRequest,
};

use super::super::Backend;
use super::super::expect::{self, range_filter};
use super::super::pairs::{micros, pairs_between, time_of};
use super::{duration, hours_ago};

fn check_buckets(name: &str, got: &[tapwire_proto::v1::ThroughputBucket], want: &[expect::Bucket]) {
    assert_eq!(got.len(), want.len(), "{name}: bucket count");
    for (g, w) in got.iter().zip(want) {
        let got = expect::Bucket {
            start_us: micros(time_of(g.time.as_ref().unwrap())),
            inbound: g.inbound,
            outbound: g.outbound,
            inbound_errors: g.inbound_errors,
            outbound_errors: g.outbound_errors,
            p: (g.p50_ns, g.p95_ns, g.p99_ns),
        };
        assert_eq!(&got, w, "{name}");
    }
}

/// `Throughput` buckets: edges aligned like `time_bucket` in UTC, partial ranges widened to
/// whole buckets, empty buckets present, counts/errors/percentiles exact.
pub async fn throughput_buckets(b: &impl Backend, sent: &mut Vec<Pair>) {
    let start = hours_ago(17.0);
    let pairs = pairs_between(start, Duration::from_secs(90 * 60), 3000, 31);
    b.ingest(&pairs).await.expect("ingest");
    sent.extend(pairs);
    let mut client = b.query();
    let odd_start = start + Duration::from_micros(30_000_123);
    // A minute-aligned hour with nothing in it: exactly 60 empty buckets.
    let past = UNIX_EPOCH
        + Duration::from_secs(
            hours_ago(60.0)
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
                / 60
                * 60,
        );
    let cases: Vec<(&str, Filter, i64)> = vec![
        (
            "1m unaligned",
            range_filter(odd_start, start + Duration::from_secs(61 * 60)),
            60,
        ),
        (
            "7m",
            range_filter(start, start + Duration::from_secs(90 * 60)),
            7 * 60,
        ),
        (
            "1h",
            range_filter(start, start + Duration::from_secs(90 * 60)),
            3600,
        ),
        (
            "1s",
            range_filter(
                start + Duration::from_secs(600),
                start + Duration::from_secs(720),
            ),
            1,
        ),
        (
            "1d",
            range_filter(
                start - Duration::from_secs(86_400),
                start + Duration::from_secs(86_400),
            ),
            86_400,
        ),
        (
            "empty past",
            range_filter(past, past + Duration::from_secs(3600)),
            60,
        ),
        (
            "filtered",
            Filter {
                service: "cart".into(),
                errors_only: true,
                ..range_filter(start, start + Duration::from_secs(5400))
            },
            300,
        ),
    ];
    for (name, filter, secs) in cases {
        let answer = client
            .throughput(ThroughputRequest {
                filter: Some(filter.clone()),
                interval: Some(duration(secs, 0)),
            })
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .into_inner();
        // Ranges of an hour or more, in whole minutes, with a filter the rollups keep, are
        // served from the coarsest rollup whose buckets tile the interval.
        let source = match name {
            "1h" | "1d" => "rollup_1h",
            "1m unaligned" | "7m" | "empty past" => "rollup_1m",
            _ => "raw",
        };
        assert_eq!(answer.source, source, "{name}");
        let expected = expect::throughput(&filter, secs * 1_000_000, sent);
        check_buckets(name, &answer.buckets, &expected);
        // The raw rows give the same answer (a no-op `min_duration` forces them).
        let raw = client
            .throughput(ThroughputRequest {
                filter: Some(Filter {
                    min_duration: Some(duration(0, 0)),
                    ..filter.clone()
                }),
                interval: Some(duration(secs, 0)),
            })
            .await
            .unwrap_or_else(|e| panic!("{name} raw: {e}"))
            .into_inner();
        assert_eq!(raw.source, "raw", "{name}");
        check_buckets(name, &raw.buckets, &expected);
        if name == "empty past" {
            assert_eq!(answer.buckets.len(), 60);
            assert!(answer.buckets.iter().all(|b| b.inbound + b.outbound == 0));
        }
    }
    // Too many buckets is refused with a clear status.
    let err = client
        .throughput(ThroughputRequest {
            filter: Some(range_filter(hours_ago(24.0 * 6.0), hours_ago(0.5))),
            interval: Some(duration(1, 0)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("range too large"),
        "{}",
        err.message()
    );
}

/// Long ranges come from the rollup and equal the raw answer (forced with a no-op
/// `min_duration`, which the rollup cannot answer) and the expectation.
pub async fn rollup_equals_raw(b: &impl Backend, sent: &mut Vec<Pair>) {
    let start = hours_ago(15.0);
    let pairs = pairs_between(start, Duration::from_secs(8 * 3600), 4000, 41);
    b.ingest(&pairs).await.expect("ingest");
    sent.extend(pairs);
    let mut client = b.query();
    let base = range_filter(start, start + Duration::from_secs(8 * 3600 + 17));
    let variants = vec![
        ("all", base.clone()),
        (
            "cart inbound",
            Filter {
                service: "cart".into(),
                direction: 1,
                ..base.clone()
            },
        ),
        (
            "5xx",
            Filter {
                status_class: 5,
                ..base.clone()
            },
        ),
        (
            "grpc endpoint",
            Filter {
                endpoint: "/shop.Cart/Add".into(),
                ..base.clone()
            },
        ),
    ];
    for (name, filter) in variants {
        for secs in [300, 3600] {
            let ask = |f: Filter| ThroughputRequest {
                filter: Some(f),
                interval: Some(duration(secs, 0)),
            };
            let rollup = client
                .throughput(ask(filter.clone()))
                .await
                .unwrap()
                .into_inner();
            let forced = Filter {
                min_duration: Some(duration(0, 0)),
                ..filter.clone()
            };
            let raw = client.throughput(ask(forced)).await.unwrap().into_inner();
            let table = if secs % 3600 == 0 {
                "rollup_1h"
            } else {
                "rollup_1m"
            };
            assert_eq!(rollup.source, table, "{name} {secs}s");
            assert_eq!(raw.source, "raw", "{name}");
            assert_eq!(
                rollup.buckets, raw.buckets,
                "{name} {secs}s: rollup and raw differ"
            );
            check_buckets(
                name,
                &rollup.buckets,
                &expect::throughput(&filter, secs * 1_000_000, sent),
            );
        }
    }
}

/// `Endpoints`, `Dependencies` and `Services` equal the groupings of the sent pairs.
pub async fn groupings(b: &impl Backend, sent: &[Pair]) {
    // The region of `list_filters_and_pages`.
    let start = hours_ago(20.0);
    let mut client = b.query();
    for filter in [
        range_filter(start, start + Duration::from_secs(3600)),
        Filter {
            namespace: "web".into(),
            ..range_filter(start, start + Duration::from_secs(1200))
        },
        // Whole hours and minutes come from the rollups, the ragged ends from raw rows.
        range_filter(
            hours_ago(30.0) + Duration::from_millis(1234),
            hours_ago(0.2) - Duration::from_millis(4321),
        ),
    ] {
        let got = client
            .endpoints(EndpointsRequest {
                filter: Some(filter.clone()),
                limit: 1000,
            })
            .await
            .unwrap()
            .into_inner()
            .endpoints;
        assert!(
            got.windows(2).all(|w| w[0].count >= w[1].count),
            "busiest first"
        );
        let got: expect::Groups = got
            .into_iter()
            .map(|e| {
                (
                    vec![
                        e.service,
                        e.is_inbound.to_string(),
                        e.protocol,
                        e.method,
                        e.endpoint,
                    ],
                    (e.count, e.errors, (e.p50_ns, e.p95_ns, e.p99_ns)),
                )
            })
            .collect();
        assert_eq!(got, expect::endpoints(&filter, sent), "Endpoints");

        let got: expect::Groups = client
            .dependencies(DependenciesRequest {
                filter: Some(filter.clone()),
            })
            .await
            .unwrap()
            .into_inner()
            .edges
            .into_iter()
            .map(|e| {
                (
                    vec![e.from_service, e.to, e.protocol],
                    (e.count, e.errors, (e.p50_ns, e.p95_ns, e.p99_ns)),
                )
            })
            .collect();
        let want = expect::dependencies(&filter, sent);
        assert!(
            want.keys().any(|k| k[1] == "api.example.com") && want.keys().any(|k| k[1] == "search")
        );
        assert_eq!(got, want, "Dependencies");

        let got: BTreeMap<Vec<String>, (u64, u64, u64)> = client
            .services(ServicesRequest {
                filter: Some(filter.clone()),
            })
            .await
            .unwrap()
            .into_inner()
            .services
            .into_iter()
            .map(|s| {
                (
                    vec![s.service, s.namespace],
                    (s.inbound, s.outbound, s.errors),
                )
            })
            .collect();
        assert_eq!(got, expect::services(&filter, sent), "Services");
    }
    // Nothing in range: empty answers, not errors.
    let empty = range_filter(hours_ago(70.0), hours_ago(69.0));
    let e = client
        .endpoints(EndpointsRequest {
            filter: Some(empty.clone()),
            limit: 0,
        })
        .await
        .unwrap();
    assert!(e.into_inner().endpoints.is_empty());
    let s = client
        .services(ServicesRequest {
            filter: Some(empty),
        })
        .await
        .unwrap();
    assert!(s.into_inner().services.is_empty());
}

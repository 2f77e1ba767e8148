//! `ListPairs` paging and filters, and the statuses of wrong requests.

use std::time::Duration;

use tapwire_proto::v1::{Filter, ListPairsRequest, Pair, ServicesRequest};

use super::super::Backend;
use super::super::expect::{self, range_filter};
use super::super::pairs::{micros, pairs_between, time_of};
use super::{duration, hours_ago};

/// Pages through `ListPairs` with `next_cursor` and returns the ids in order.
pub async fn page_all(b: &impl Backend, filter: &Filter, limit: u32) -> Vec<String> {
    let mut client = b.query();
    let mut ids = Vec::new();
    let mut cursor = String::new();
    for _ in 0..100_000 {
        let page = client
            .list_pairs(ListPairsRequest {
                filter: Some(filter.clone()),
                limit,
                cursor: cursor.clone(),
            })
            .await
            .expect("ListPairs")
            .into_inner();
        assert!(
            page.pairs.len() <= limit as usize,
            "page larger than its limit"
        );
        assert!(
            !page.prev_cursor.is_empty(),
            "a page always has a way to newer pairs"
        );
        ids.extend(page.pairs.into_iter().map(|p| p.id));
        if page.next_cursor.is_empty() {
            return ids;
        }
        cursor = page.next_cursor;
    }
    panic!("paging did not end");
}

/// Filters exercising every `Filter` field.
pub fn filter_variants(base: &Filter) -> Vec<(&'static str, Filter)> {
    let with = |edit: &dyn Fn(&mut Filter)| {
        let mut f = base.clone();
        edit(&mut f);
        f
    };
    vec![
        ("none", base.clone()),
        ("service", with(&|f| f.service = "cart".into())),
        ("namespace", with(&|f| f.namespace = "billing".into())),
        ("node", with(&|f| f.node = "node-b".into())),
        ("pod", with(&|f| f.pod = "shop-1".into())),
        ("inbound", with(&|f| f.direction = 1)),
        ("outbound", with(&|f| f.direction = 2)),
        ("protocol", with(&|f| f.protocol = "grpc".into())),
        ("method", with(&|f| f.method = "DELETE".into())),
        ("path_prefix", with(&|f| f.path_prefix = "/users/".into())),
        (
            "endpoint",
            with(&|f| f.endpoint = "/users/{id}/orders".into()),
        ),
        ("status", with(&|f| f.status = 404)),
        ("status_class", with(&|f| f.status_class = 5)),
        ("grpc_status", with(&|f| f.grpc_status = Some(14))),
        ("grpc_ok", with(&|f| f.grpc_status = Some(0))),
        (
            "min_duration",
            with(&|f| f.min_duration = Some(duration(1, 0))),
        ),
        ("text", with(&|f| f.text = "EXAMPLE.com".into())),
        ("text_path", with(&|f| f.text = "q=term3".into())),
        ("errors_only", with(&|f| f.errors_only = true)),
        ("pid", with(&|f| f.pid = 102)),
        (
            "remote_service",
            with(&|f| f.remote_service = "search".into()),
        ),
        (
            "combined",
            with(&|f| {
                f.service = "shop".into();
                f.direction = 2;
                f.errors_only = true;
            }),
        ),
    ]
}

/// `ListPairs` returns exactly the matching pairs, newest first, across pages, for every
/// filter field.
pub async fn list_filters_and_pages(b: &impl Backend, sent: &mut Vec<Pair>) {
    let start = hours_ago(20.0);
    let pairs = pairs_between(start, Duration::from_secs(40 * 60), 3000, 11);
    b.ingest(&pairs).await.expect("ingest");
    sent.extend(pairs);
    let base = range_filter(start, start + Duration::from_secs(3600));
    for (name, filter) in filter_variants(&base) {
        let want = expect::list_ids(&filter, sent);
        assert!(
            name == "none" || want.len() < 3000,
            "{name}: the filter filters"
        );
        assert!(!want.is_empty(), "{name}: the data covers the filter");
        let got = page_all(b, &filter, 97).await;
        assert_eq!(got, want, "ListPairs with filter {name}");
    }
    // The largest page, and the default one.
    assert_eq!(
        page_all(b, &base, 1000).await,
        expect::list_ids(&base, sent)
    );
    let first = b
        .query()
        .list_pairs(ListPairsRequest {
            filter: Some(base.clone()),
            limit: 0,
            cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.pairs.len(), 50);
    // Summaries carry the row's fields.
    let newest = &first.pairs[0];
    let pair = sent.iter().find(|p| p.id == newest.id).unwrap();
    assert_eq!(newest.path, pair.path);
    assert_eq!(newest.endpoint, expect::endpoint(pair));
    assert_eq!(newest.duration_ns, pair.duration_ns);
    assert_eq!(newest.status, pair.status);
    assert_eq!(newest.service, pair.service);
    assert_eq!(
        micros(time_of(newest.time.as_ref().unwrap())),
        expect::time_us(pair)
    );
}

/// Cursors neither skip nor repeat while newer pairs arrive, and `prev_cursor` finds them.
pub async fn paging_while_pairs_arrive(b: &impl Backend, sent: &mut Vec<Pair>) {
    let start = hours_ago(18.0);
    let old = pairs_between(start, Duration::from_secs(600), 600, 21);
    b.ingest(&old).await.expect("ingest");
    sent.extend(old.iter().cloned());
    let filter = range_filter(start, start + Duration::from_secs(1800));
    let mut client = b.query();
    let ask = |cursor: String| ListPairsRequest {
        filter: Some(filter.clone()),
        limit: 100,
        cursor,
    };
    let first = client
        .list_pairs(ask(String::new()))
        .await
        .unwrap()
        .into_inner();
    let mut seen: Vec<String> = first.pairs.iter().map(|p| p.id.clone()).collect();

    // Newer pairs arrive while the user scrolls down.
    let newer = pairs_between(
        start + Duration::from_secs(600),
        Duration::from_secs(600),
        300,
        22,
    );
    b.ingest(&newer).await.expect("ingest");
    sent.extend(newer.iter().cloned());
    let mut cursor = first.next_cursor.clone();
    while !cursor.is_empty() {
        let page = client.list_pairs(ask(cursor)).await.unwrap().into_inner();
        seen.extend(page.pairs.iter().map(|p| p.id.clone()));
        cursor = page.next_cursor;
    }
    assert_eq!(
        seen,
        expect::list_ids(&filter, &old),
        "scrolling down skipped or repeated"
    );

    // Scrolling up from the first page reaches every newer pair exactly once.
    let mut up: Vec<String> = Vec::new();
    let mut cursor = first.prev_cursor.clone();
    loop {
        let page = client
            .list_pairs(ask(cursor.clone()))
            .await
            .unwrap()
            .into_inner();
        assert!(page.pairs.len() <= 100);
        if page.pairs.is_empty() {
            assert_eq!(page.prev_cursor, cursor, "an empty page keeps its place");
            break;
        }
        // Pages come newest first; scrolling up prepends them.
        let mut ids: Vec<String> = page.pairs.iter().map(|p| p.id.clone()).collect();
        ids.extend(up);
        up = ids;
        cursor = page.prev_cursor;
    }
    assert_eq!(up, expect::list_ids(&filter, &newer), "scrolling up");

    // And what arrives later still shows up from the last place reached.
    let later = pairs_between(
        start + Duration::from_secs(1500),
        Duration::from_secs(10),
        5,
        23,
    );
    b.ingest(&later).await.expect("ingest");
    sent.extend(later.iter().cloned());
    let page = client.list_pairs(ask(cursor)).await.unwrap().into_inner();
    let ids: Vec<String> = page.pairs.iter().map(|p| p.id.clone()).collect();
    assert_eq!(ids, expect::list_ids(&filter, &later));
    // The next cursor of an upward page goes back down without repeating it.
    let down = client
        .list_pairs(ask(page.next_cursor))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        down.pairs.first().map(|p| p.id.clone()),
        expect::list_ids(&filter, &newer).first().cloned()
    );
}

/// Wrong requests get statuses that say what was wrong.
pub async fn clear_statuses(b: &impl Backend) {
    let mut client = b.query();
    let list = |filter: Filter, cursor: &str| ListPairsRequest {
        filter: Some(filter),
        limit: 10,
        cursor: cursor.into(),
    };
    let cases = [
        (list(Filter::default(), "garbage!"), "bad cursor"),
        (
            list(Filter::default(), "AQAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            "bad cursor",
        ),
        (
            list(
                Filter {
                    direction: 7,
                    ..Default::default()
                },
                "",
            ),
            "bad filter",
        ),
        (
            list(
                Filter {
                    status_class: 9,
                    ..Default::default()
                },
                "",
            ),
            "bad filter",
        ),
        (
            list(range_filter(hours_ago(1.0), hours_ago(2.0)), ""),
            "bad filter",
        ),
        (
            list(
                Filter {
                    min_duration: Some(duration(-1, 0)),
                    ..Default::default()
                },
                "",
            ),
            "bad filter",
        ),
    ];
    for (request, what) in cases {
        let err = client.list_pairs(request.clone()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{request:?}");
        assert!(err.message().starts_with(what), "{what}: {}", err.message());
    }
    let err = client
        .services(ServicesRequest {
            filter: Some(range_filter(hours_ago(24.0 * 90.0), hours_ago(1.0))),
        })
        .await
        .unwrap_err();
    assert!(
        err.message().starts_with("range too large"),
        "{}",
        err.message()
    );
}

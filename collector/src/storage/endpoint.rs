//! Endpoint normalization: the `endpoint` column groups requests that differ only by ids.

/// Longest endpoint kept; longer paths are cut (on a character boundary) so one odd
/// request cannot blow up the rollup key space or the index.
const MAX_ENDPOINT_LEN: usize = 512;
/// Hex strings at least this long are treated as ids (hashes, object ids).
const MIN_HEX_ID_LEN: usize = 16;

/// Normalizes a request path into an endpoint (docs/storage.md): the query and fragment
/// are removed, and path segments that are numbers, UUIDs or long hex strings become
/// `{id}` (`/users/42/orders?x=1` → `/users/{id}/orders`). gRPC paths
/// (`/pkg.Service/Method`) are kept as they are.
pub fn normalize_endpoint(protocol: &str, path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if path.is_empty() {
        return "/".to_owned();
    }
    let normalized = if protocol == "grpc" {
        path.to_owned()
    } else {
        path.split('/')
            .map(|segment| if is_id(segment) { "{id}" } else { segment })
            .collect::<Vec<_>>()
            .join("/")
    };
    truncate_on_char_boundary(normalized, MAX_ENDPOINT_LEN)
}

fn is_id(segment: &str) -> bool {
    if segment.is_empty() {
        return false;
    }
    let all_digits = segment.bytes().all(|b| b.is_ascii_digit());
    let long_hex =
        segment.len() >= MIN_HEX_ID_LEN && segment.bytes().all(|b| b.is_ascii_hexdigit());
    all_digits || long_hex || is_uuid(segment)
}

fn is_uuid(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn truncate_on_char_boundary(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::normalize_endpoint;

    #[test]
    fn collapses_ids_and_strips_queries() {
        assert_eq!(
            normalize_endpoint("http1", "/users/42/orders"),
            "/users/{id}/orders"
        );
        assert_eq!(
            normalize_endpoint("http1", "/users/42/orders?x=1#f"),
            "/users/{id}/orders"
        );
        assert_eq!(
            normalize_endpoint("http2", "/o/0190e4c5-7a3b-7c1d-8e2f-0123456789ab/x"),
            "/o/{id}/x"
        );
        assert_eq!(
            normalize_endpoint("http1", "/blob/deadbeefdeadbeef00"),
            "/blob/{id}"
        );
        assert_eq!(normalize_endpoint("http1", "/v1/cafe"), "/v1/cafe");
        assert_eq!(normalize_endpoint("http1", ""), "/");
        assert_eq!(normalize_endpoint("http1", "?q=1"), "/");
        assert_eq!(normalize_endpoint("http1", "/"), "/");
        assert_eq!(
            normalize_endpoint("grpc", "/pkg.Service/Method"),
            "/pkg.Service/Method"
        );
    }

    #[test]
    fn bounds_length_without_splitting_characters() {
        let long = format!("/{}", "é".repeat(600));
        let e = normalize_endpoint("http1", &long);
        assert!(e.len() <= 512);
        assert!(e.starts_with("/é"));
    }
}

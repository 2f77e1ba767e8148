//! Redacting `name=value` parameters: URL query strings and form-encoded bodies.

/// Replaces the value of each `&`- or `;`-separated parameter whose (lower-cased) name
/// `is_sensitive`. Returns `None` when nothing was replaced.
pub(crate) fn redact_params(
    params: &str,
    replacement: &str,
    is_sensitive: impl Fn(&str) -> bool,
) -> Option<String> {
    let mut out = String::with_capacity(params.len());
    let mut changed = false;
    let mut rest = params;
    loop {
        let end = rest.find(['&', ';']).unwrap_or(rest.len());
        let param = &rest[..end];
        match param.split_once('=') {
            Some((name, value)) if !value.is_empty() && is_sensitive(&decode_name(name)) => {
                out.push_str(name);
                out.push('=');
                out.push_str(replacement);
                changed = true;
            }
            _ => out.push_str(param),
        }
        match rest[end..].chars().next() {
            Some(sep) => {
                out.push(sep);
                rest = &rest[end + sep.len_utf8()..];
            }
            None => break,
        }
    }
    changed.then_some(out)
}

/// Redacts the query part of a request target, keeping the path and any fragment.
pub(crate) fn redact_target(
    target: &str,
    replacement: &str,
    is_sensitive: impl Fn(&str) -> bool,
) -> Option<String> {
    let (path, query) = target.split_once('?')?;
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let redacted = redact_params(query, replacement, is_sensitive)?;
    let mut out = format!("{path}?{redacted}");
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    Some(out)
}

/// A parameter name with `+` and the common percent-escapes of `_` and `-` undone, so
/// `api%5Fkey` is recognised as `api_key`.
fn decode_name(name: &str) -> String {
    name.replace('+', " ")
        .replace("%5F", "_")
        .replace("%5f", "_")
        .replace("%2D", "-")
        .replace("%2d", "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sensitive(name: &str) -> bool {
        name.to_ascii_lowercase().contains("token") || name.eq_ignore_ascii_case("api_key")
    }

    #[test]
    fn redacts_query_values_only() {
        assert_eq!(
            redact_target(
                "/a?x=1&access_token=abc&API%5FKEY=k;y=2#top",
                "[REDACTED]",
                sensitive
            )
            .as_deref(),
            Some("/a?x=1&access_token=[REDACTED]&API%5FKEY=[REDACTED];y=2#top")
        );
        assert_eq!(
            redact_target("/a?x=1&token=", "[REDACTED]", sensitive),
            None
        );
        assert_eq!(redact_target("/token/abc", "[REDACTED]", sensitive), None);
    }
}

//! Redacting JSON object members by name without parsing the document into a tree: the
//! bytes are scanned once and only sensitive values are replaced, so formatting is kept
//! and truncated bodies (a prefix of a document) are handled too.

/// Replaces the value of every object member whose name `is_sensitive` with
/// `replacement`. Returns `None` when nothing was replaced.
pub(crate) fn redact_members(
    input: &[u8],
    replacement: &[u8],
    is_sensitive: impl Fn(&str) -> bool,
) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'"' {
            i += 1;
            continue;
        }
        let end = string_end(input, i);
        let after = skip_ws(input, end);
        if input.get(after) != Some(&b':') {
            i = end;
            continue;
        }
        let name = String::from_utf8_lossy(&input[i + 1..end.saturating_sub(1).max(i + 1)]);
        let value_start = skip_ws(input, after + 1);
        if !is_sensitive(&name) || value_start >= input.len() {
            i = after + 1;
            continue;
        }
        let value_end = value_end(input, value_start);
        let buf = out.get_or_insert_with(|| Vec::with_capacity(input.len()));
        buf.extend_from_slice(&input[copied..value_start]);
        buf.extend_from_slice(replacement);
        copied = value_end;
        i = value_end;
    }
    let mut buf = out?;
    buf.extend_from_slice(&input[copied..]);
    Some(buf)
}

/// The index just past the string starting at `start` (a quote), or the input's end.
fn string_end(input: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < input.len() {
        match input[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    input.len()
}

fn skip_ws(input: &[u8], mut i: usize) -> usize {
    while matches!(input.get(i), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        i += 1;
    }
    i
}

/// The index just past the JSON value starting at `start`.
fn value_end(input: &[u8], start: usize) -> usize {
    match input[start] {
        b'"' => string_end(input, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            while i < input.len() {
                match input[i] {
                    b'"' => {
                        i = string_end(input, i);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            input.len()
        }
        _ => {
            let len = input[start..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'))
                .unwrap_or(input.len() - start);
            start + len
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(input: &str) -> Option<String> {
        redact_members(input.as_bytes(), b"\"[REDACTED]\"", |n| {
            n.eq_ignore_ascii_case("password") || n.eq_ignore_ascii_case("token")
        })
        .map(|b| String::from_utf8(b).expect("utf-8"))
    }

    #[test]
    fn replaces_scalars_objects_and_keeps_layout() {
        let out = redact(
            r#"{"user": "bob", "password" : "s\"3cret", "n": {"token": 12, "x": [1]}, "token": {"a": "}"}}"#,
        );
        assert_eq!(
            out.as_deref(),
            Some(
                r#"{"user": "bob", "password" : "[REDACTED]", "n": {"token": "[REDACTED]", "x": [1]}, "token": "[REDACTED]"}"#
            )
        );
    }

    #[test]
    fn values_named_like_keys_are_not_keys() {
        assert_eq!(redact(r#"["password", "token"]"#), None);
        assert_eq!(redact(r#"{"a": "password"}"#), None);
    }

    #[test]
    fn truncated_documents_are_handled() {
        assert_eq!(
            redact(r#"{"password": "abc"#).as_deref(),
            Some(r#"{"password": "[REDACTED]""#)
        );
        assert_eq!(redact(r#"{"password":"#), None);
        assert_eq!(redact("\""), None);
    }
}

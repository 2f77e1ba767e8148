//! gRPC over HTTP/2: length-prefixed message framing, status and path helpers.
//!
//! The HTTP/2 parser owns the streams; this module only knows gRPC's own layer:
//! which content types are gRPC, how `:path` names the method, how messages are framed
//! inside DATA frames, and how `grpc-message` is escaped.

mod framing;

pub use framing::{MessageFramer, PREFIX_LEN};

/// True for `application/grpc` and its `+proto`/`+json`/… variants.
pub fn is_grpc_content_type(content_type: &str) -> bool {
    let Some(rest) = content_type
        .get(..16)
        .filter(|p| p.eq_ignore_ascii_case("application/grpc"))
        .map(|_| &content_type[16..])
    else {
        return false;
    };
    rest.is_empty() || rest.starts_with('+') || rest.starts_with(';')
}

/// The service and method named by a gRPC `:path` (`/package.Service/Method`).
pub fn parse_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((service, method))
}

/// Decodes `grpc-message`'s percent-encoding (gRPC over HTTP/2 spec); invalid escapes
/// are kept as they are, and bytes that are not UTF-8 are replaced.
pub fn percent_decode(value: &str) -> String {
    if !value.contains('%') {
        return value.to_owned();
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|&c| hex(c)),
                bytes.get(i + 2).and_then(|&c| hex(c)),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parses `grpc-status`; anything but a plain decimal number is no status.
pub fn parse_status(value: &str) -> Option<u32> {
    value.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert!(is_grpc_content_type("application/grpc"));
        assert!(is_grpc_content_type("application/grpc+proto"));
        assert!(is_grpc_content_type("Application/GRPC+json"));
        assert!(!is_grpc_content_type("application/grpc-web"));
        assert!(!is_grpc_content_type("application/json"));
        assert!(!is_grpc_content_type("appl"));
        assert!(!is_grpc_content_type("application/grpcé"));
    }

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("/helloworld.Greeter/SayHello"),
            Some(("helloworld.Greeter", "SayHello"))
        );
        assert_eq!(parse_path("/a/b/c"), None);
        assert_eq!(parse_path("/nomethod"), None);
        assert_eq!(parse_path("//m"), None);
    }

    #[test]
    fn percent() {
        assert_eq!(percent_decode("no escapes"), "no escapes");
        assert_eq!(percent_decode("a%20b%25c"), "a b%c");
        assert_eq!(percent_decode("%E2%82%AC"), "€");
        assert_eq!(percent_decode("bad %zz and %4"), "bad %zz and %4");
        assert_eq!(parse_status(" 14"), Some(14));
        assert_eq!(parse_status("x"), None);
    }
}

//! Authentication shared by the ingest and query services: a bearer token checked by an
//! interceptor, and the server's TLS (optionally mutual) settings.

use std::{path::Path, sync::Arc};

use tonic::{
    Request, Status,
    service::Interceptor,
    transport::{Certificate, Identity, ServerTlsConfig},
};

/// TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct TlsFileError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// Compares without an early exit, so response timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks `authorization: Bearer <token>`; an interceptor usable by both services.
/// With no token configured every request passes (allowed on loopback only, see config).
pub fn token_interceptor(token: Option<String>) -> impl Interceptor + Clone {
    let expected: Option<Arc<str>> = token.map(Arc::from);
    move |request: Request<()>| -> Result<Request<()>, Status> {
        let Some(expected) = expected.as_deref() else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated("invalid bearer token")),
            None => Err(Status::unauthenticated("missing bearer token")),
        }
    }
}

/// Selects ring as rustls' process-wide crypto provider. Needed because the dependency
/// tree enables more than one provider, and rustls then refuses to guess; idempotent.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError {
        path: path.display().to_string(),
        source,
    })
}

/// The server's TLS settings from PEM files; with `client_ca`, clients must present a
/// certificate signed by it (mutual TLS).
pub fn server_tls_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerTlsConfig, TlsFileError> {
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(token: Option<&str>, header: Option<&str>) -> Result<(), tonic::Code> {
        let mut interceptor = token_interceptor(token.map(str::to_owned));
        let mut request = Request::new(());
        if let Some(h) = header {
            request.metadata_mut().insert(
                "authorization",
                h.parse().map_err(|_| tonic::Code::Internal)?,
            );
        }
        interceptor.call(request).map(|_| ()).map_err(|s| s.code())
    }

    #[test]
    fn accepts_only_the_right_token() {
        assert_eq!(check(None, None), Ok(()));
        assert_eq!(check(Some("s3cret"), Some("Bearer s3cret")), Ok(()));
        assert_eq!(
            check(Some("s3cret"), Some("Bearer s3cre")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            check(Some("s3cret"), Some("s3cret")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            check(Some("s3cret"), None),
            Err(tonic::Code::Unauthenticated)
        );
    }
}

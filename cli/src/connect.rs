//! The gRPC channel to the collector: plaintext or TLS (optionally mutual), with the bearer
//! token on every call.

use anyhow::{Context, Result};
use tapwire_proto::v1::query_client::QueryClient;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::settings::Settings;

/// Adds `authorization: Bearer <token>` when a token is set.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The Query client type every command uses.
pub type Client = QueryClient<InterceptedService<Channel, BearerToken>>;

/// Connects to the collector.
pub async fn connect(settings: &Settings) -> Result<Client> {
    let mut endpoint = Endpoint::from_shared(settings.server.clone())
        .with_context(|| format!("bad server address {:?}", settings.server))?
        .connect_timeout(std::time::Duration::from_secs(10));
    if settings.server.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        match &settings.ca {
            Some(ca) => {
                let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            None => anyhow::bail!("an https server needs --ca (the collector's CA certificate)"),
        }
        if let Some((cert, key)) = &settings.identity {
            let cert =
                std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
            let key = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(tls).context("TLS settings")?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", settings.server))?;
    let token = match &settings.token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .context("the token has characters a header cannot carry")?,
        ),
        None => None,
    };
    Ok(QueryClient::with_interceptor(channel, BearerToken(token))
        .max_decoding_message_size(256 << 20))
}

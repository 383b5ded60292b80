//! Client-side code for Rust programs that talk to a chatsync server: connecting with a token
//! ([`connect`]) and keeping a local SQLite mirror of a session ([`mirror`]).
//!
//! Like the CLI, this module is a client: it speaks the generated `pb` types over gRPC and never
//! reaches the server's storage, services or sources (checked by `src/layers.rs`).
pub mod mirror;

use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::grpc::pb;
use pb::chat_sync_service_client::ChatSyncServiceClient;

/// The generated client with the bearer token interceptor.
pub type Client = ChatSyncServiceClient<InterceptedService<Channel, Auth>>;

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Auth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Where a client connects, and with what credentials.
#[derive(Debug, Clone)]
pub struct Server {
    /// The server's URL, `http://…` or `https://…` (e.g. `http://127.0.0.1:50051`).
    pub url: String,
    /// API token, sent as `authorization: Bearer TOKEN`.
    pub token: Option<String>,
    /// For an `https://` server: a PEM CA certificate to trust besides the public roots.
    pub ca_cert_pem: Option<Vec<u8>>,
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL or the TLS settings are not usable.
    #[error("bad server address {url}: {error}")]
    Address {
        /// The URL given.
        url: String,
        /// What tonic said of it.
        error: tonic::transport::Error,
    },
    /// The server did not answer (refused, unreachable, TLS handshake failed, 5 s timeout).
    #[error("cannot reach chatsync at {url}: {error}")]
    Unreachable {
        /// The URL given.
        url: String,
        /// The transport's error.
        error: tonic::transport::Error,
    },
    /// The token cannot be put into an HTTP header.
    #[error("the token holds characters a header cannot carry")]
    Token,
}

/// Connects to `server` (5 s connect timeout) and returns the generated client, which adds the
/// token to every call.
pub async fn connect(server: &Server) -> Result<Client, ConnectError> {
    let address = |error| ConnectError::Address {
        url: server.url.clone(),
        error,
    };
    let mut endpoint = Endpoint::from_shared(server.url.clone())
        .map_err(address)?
        .connect_timeout(Duration::from_secs(5));
    if server.url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_webpki_roots();
        if let Some(pem) = &server.ca_cert_pem {
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(address)?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| ConnectError::Unreachable {
            url: server.url.clone(),
            error,
        })?;
    let auth = match &server.token {
        Some(token) => Some(
            format!("Bearer {token}")
                .parse()
                .map_err(|_| ConnectError::Token)?,
        ),
        None => None,
    };
    Ok(ChatSyncServiceClient::with_interceptor(channel, Auth(auth)))
}

//! The server: one listener serving native gRPC (h2c), grpc-web over HTTP/1.1 with CORS,
//! the health service (tonic-health, a status per service), reflection, the web console's
//! page ([`console`]) and the Prometheus metrics (`GET /metrics`, [`crate::metrics`]).
//!
//! Start-up: [`Application::build`] connects storage (running migrations), builds the
//! sources and binds the listener, so a test can bind `127.0.0.1:0` and read
//! [`Application::local_addr`] before [`Application::run_until_stopped`].
//!
//! Transport settings (TLS, keepalives, streams per connection, message sizes, the unary
//! deadline) come from [`Config`] and are applied in one block of `run_until_stopped`.
//!
//! Shutdown is graceful: health turns NOT_SERVING, open subscriptions and SyncChats streams
//! are ended from the server side with UNAVAILABLE, running sync runs are persisted
//! INTERRUPTED, and the server stops within [`SHUTDOWN_GRACE`] even if a client keeps a
//! connection open.
pub mod console;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::LayerExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::Tokens;
use crate::config::Config;
use crate::grpc::{Api, AuthInterceptor, pb};
use crate::model::SourceState;
use crate::service::ChatSync;
use crate::storage::Store;
use tonic_health::ServingStatus;

/// The health service name of a session's entry: this prefix and the session id. It is
/// NOT_SERVING while the session's live source is down (or still connecting).
pub const SESSION_HEALTH_PREFIX: &str = "chatsync.session.";

/// The longest a shutdown waits for connections to close before the server stops anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How long shutdown waits, after the connections, for running sync runs to persist their
/// INTERRUPTED state. Normally milliseconds: the aborted import's transaction rolls back and
/// one row is written. It is longer than [`SHUTDOWN_GRACE`] because a run that misses it is
/// only marked INTERRUPTED at the next start, without its progress.
pub const SYNC_STOP_GRACE: Duration = Duration::from_secs(10);

/// The longest a client may take to complete its TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A built, bound server.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: Config,
    tokens: Arc<Tokens>,
    tls: Option<ServerTlsConfig>,
    service: ChatSync,
    /// Cancelled when the server starts shutting down: open streams, live loops and sync
    /// runs stop on it.
    shutdown: CancellationToken,
    /// Cancels `shutdown` when the application is dropped without being run to the end.
    _stop_on_drop: tokio_util::sync::DropGuard,
}

impl Application {
    /// Connects storage, builds the sessions' sources and binds the listen address.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        crate::samples::prepare(&config)?;
        let tokens = Arc::new(Tokens::from_config(&config.tokens)?);
        let tls = tls_config(&config)?;
        if let Some(tls) = &tls {
            // Parses the certificate and key now, so a bad file fails the start.
            Server::builder()
                .tls_config(tls.clone())
                .map_err(|e| anyhow::anyhow!("invalid TLS certificate or key: {e}"))?;
        }
        if !tokens.is_empty() && tls.is_none() && !config.listen.ip().is_loopback() {
            tracing::warn!(
                address = %config.listen,
                "allow_insecure_tokens: API tokens are accepted without TLS and cross the network in clear text"
            );
        }
        let store = Store::connect_with(
            &config.database_url,
            config.database_max_connections,
            Duration::from_secs(config.lease_secs),
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot open database {}: {e}", redact(&config.database_url))
        })?;
        let shutdown = CancellationToken::new();
        let service = ChatSync::new(&config, store, shutdown.clone()).await?;
        raise_fd_limit();
        let listener = listen(config.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
            config,
            tokens,
            tls,
            service,
            _stop_on_drop: shutdown.clone().drop_guard(),
            shutdown,
        })
    }

    /// The address the server listens on (with the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    pub async fn run_until_stopped(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<pb::chat_sync_service_server::ChatSyncServiceServer<Api>>()
            .await;
        // One health entry per session, `chatsync.session.<session_id>`: NOT_SERVING while
        // its live source is down or still connecting.
        for (session_id, mut state) in self.service.source_states() {
            let reporter = health_reporter.clone();
            let shutdown = self.shutdown.clone();
            tokio::spawn(async move {
                let name = format!("{SESSION_HEALTH_PREFIX}{session_id}");
                loop {
                    let serving = match &*state.borrow_and_update() {
                        SourceState::NotLive | SourceState::Up => ServingStatus::Serving,
                        SourceState::Connecting | SourceState::Down(_) => ServingStatus::NotServing,
                    };
                    reporter.set_service_status(&name, serving).await;
                    tokio::select! {
                        changed = state.changed() => if changed.is_err() { return },
                        _ = shutdown.cancelled() => {
                            reporter.set_service_status(&name, ServingStatus::NotServing).await;
                            return;
                        }
                    }
                }
            });
        }
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        // Authentication is one interceptor in front of the API (and of reflection when
        // `reflection_requires_token`); health stays open. The metrics layer counts every
        // call to the API, refused ones included.
        let auth = AuthInterceptor::new(self.tokens.clone());
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new(self.service.clone()));
        let api = metrics.rpc_layer().named_layer(InterceptedService::new(
            pb::chat_sync_service_server::ChatSyncServiceServer::new(Api::new(
                self.service.clone(),
                self.config.max_subscriptions,
            ))
            .max_decoding_message_size(self.config.max_request_bytes)
            .max_encoding_message_size(self.config.max_response_bytes),
            auth.clone(),
        ));

        let shutdown = self.shutdown.clone();
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
        let reporter = health_reporter.clone();
        tokio::spawn(async move {
            signal.await;
            tracing::info!("shutting down: health NOT_SERVING, ending open streams");
            reporter
                .set_not_serving::<pb::chat_sync_service_server::ChatSyncServiceServer<Api>>()
                .await;
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            shutdown.cancel();
            let _ = stopped_tx.send(());
        });
        let mut stopped = stopped_rx;
        let grace = async move {
            let _ = (&mut stopped).await;
        };

        tracing::info!(
            address = %self.local_addr,
            database = %redact(&self.config.database_url),
            sessions = ?self.service.session_ids(),
            "chatsync listening"
        );
        // grpc-web wraps the gRPC routes inside `console::routes`, behind the web console's
        // page; CORS stays the outermost layer.
        let mut grpc = tonic::service::Routes::new(health_service).add_service(api);
        grpc = if self.config.reflection_requires_token {
            grpc.add_service(InterceptedService::new(reflection, auth))
        } else {
            grpc.add_service(reflection)
        };
        let config = &self.config;
        // ---- transport: TLS, keepalives, streams per connection, unary deadline ----
        // (configuration keys on `Config`; message sizes are set on the API service above)
        let mut builder = connection_settings(Server::builder())
            .accept_http1(true)
            .http2_keepalive_interval(Some(Duration::from_secs(
                config.http2_keepalive_interval_secs,
            )))
            .http2_keepalive_timeout(Some(Duration::from_secs(
                config.http2_keepalive_timeout_secs,
            )))
            .max_concurrent_streams(config.max_concurrent_streams)
            // Covers a call until its handler answers: all of a unary RPC, only the start of
            // a streaming one (its stream then runs without a deadline).
            .timeout(Duration::from_secs(config.unary_timeout_secs));
        if let Some(tls) = self.tls.clone() {
            builder = builder.tls_config(tls)?;
        }
        let incoming = tonic::transport::server::TcpIncoming::from(self.listener)
            // No Nagle delay: small frames (events, unary answers) go out at once.
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(config.tcp_keepalive_secs)));
        // ---- end of transport ----
        let serve = builder
            .layer(cors_layer(&self.config.cors_allowed_origins)?)
            .add_routes(webhooks::with_webhooks(
                crate::metrics::with_endpoint(console::routes(grpc), metrics, self.tokens.clone()),
                self.service.clone(),
                Duration::from_secs(self.config.unary_timeout_secs) / 2,
            ))
            .serve_with_incoming_shutdown(incoming, grace);
        let shutdown_seen = self.shutdown.clone();
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => result?,
            _ = async {
                shutdown_seen.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::warn!("connections still open after the grace period; stopping anyway");
            }
        }
        // Sync runs are persisted INTERRUPTED (resumable) before the process exits.
        if tokio::time::timeout(SYNC_STOP_GRACE, self.service.sync_runs_stopped())
            .await
            .is_err()
        {
            tracing::warn!("sync runs still stopping after the grace period");
        }
        tracing::info!("chatsync stopped");
        Ok(())
    }
}

/// The TLS settings of `config` (rustls), reading its PEM files; `None` without
/// `tls_cert_file`. With `tls_client_ca_file`, clients must present a certificate it signed.
fn tls_config(config: &Config) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path, key: &str| {
        std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read {key} {}: {e}", path.display()))
    };
    let mut tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read(cert, "tls_cert_file")?,
            read(key, "tls_key_file")?,
        ))
        // A connection that does not finish its handshake does not hold memory for long.
        .timeout(TLS_HANDSHAKE_TIMEOUT);
    if let Some(ca) = &config.tls_client_ca_file {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca, "tls_client_ca_file")?));
    }
    Ok(Some(tls))
}

/// Pending connections the listen socket queues before the accept loop takes them (the
/// kernel caps it at `net.core.somaxconn`). tokio's default is 1,024, which a burst of
/// thousands of clients connecting at once overflows.
pub const LISTEN_BACKLOG: u32 = 8_192;

/// Binds `address` with [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (as `TcpListener::bind` does).
fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit: every connection
/// is a file descriptor, and a soft limit of 1,024 (a common default) would cap the server
/// near 1,000 connections. Returns the limit in force, or `None` if it cannot be read.
#[cfg(unix)]
pub fn raise_fd_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::debug!(
                from = limit.rlim_cur,
                to = raised.rlim_cur,
                "raised the open-file limit"
            );
            return Some(raised.rlim_cur);
        }
        tracing::warn!(limit = limit.rlim_cur, "cannot raise the open-file limit");
    }
    Some(limit.rlim_cur)
}

/// Not on this platform.
#[cfg(not(unix))]
pub fn raise_fd_limit() -> Option<u64> {
    None
}

// ---- Per-connection HTTP/2 settings (the connections/fan-out work owns this spot) ----------
// Limits that are configuration keys (keepalive, streams per connection, message sizes) live
// in the config; these are fixed tunings, measured in BENCHMARKS.md ("10,000 subscribers").

/// HTTP/2 flow-control window the server grants each stream for what the client sends, in
/// bytes. Clients send small requests, so the default 64 KiB is kept.
pub const STREAM_WINDOW_BYTES: u32 = 65_535;
/// HTTP/2 flow-control window for a whole connection, in bytes (the protocol default).
pub const CONNECTION_WINDOW_BYTES: u32 = 65_535;

/// Applies the per-connection tunings above to the server builder.
fn connection_settings<L>(builder: Server<L>) -> Server<L> {
    builder
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .http2_adaptive_window(Some(false))
}
// ---- end of the per-connection HTTP/2 settings ---------------------------------------------

/// CORS for grpc-web from other origins: only the configured origins, with the gRPC
/// trailers exposed so browsers can read statuses.
fn cors_layer(origins: &[String]) -> anyhow::Result<CorsLayer> {
    let origins = origins
        .iter()
        .map(|origin| http::HeaderValue::from_str(origin))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("invalid CORS origin: {e}"))?;
    let header = HeaderName::from_static;
    Ok(CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([http::Method::POST, http::Method::GET, http::Method::OPTIONS])
        .allow_headers([
            header("content-type"),
            header("x-grpc-web"),
            header("x-user-agent"),
            header("grpc-timeout"),
            header("authorization"),
            header("connect-protocol-version"),
        ])
        .expose_headers([
            header("grpc-status"),
            header("grpc-message"),
            header("grpc-status-details-bin"),
        ])
        .max_age(Duration::from_secs(600)))
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

//! Configuration: a TOML file (`chatsync.toml`), then environment overrides.
//!
//! Layers, later wins (figment):
//! 1. built-in defaults ([`Config::default`]: a SQLite file in the [data directory](data_dir)
//!    and the `demo` sessions over the sample exports embedded in the binary, extracted to
//!    [`samples_dir`] when the server starts; used when no file is found);
//! 2. the TOML file: `--config PATH`, else `./chatsync.toml` when it exists;
//! 3. `CHATSYNC_LISTEN`, `CHATSYNC_DATABASE_URL`, `CHATSYNC_HEARTBEAT_SECS`,
//!    `CHATSYNC_LEASE_SECS`, `CHATSYNC_LOG_FORMAT`.
//!
//! Export paths come only from here, never from a request. Secrets (API tokens) can come from
//! the environment or a file instead of the configuration itself ([`TokenConfig`]).
pub mod webhooks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use crate::sources::SessionConfig;

/// The whole server configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on for gRPC, grpc-web and the health service. Default
    /// `127.0.0.1:50051`. Without tokens only loopback addresses are allowed.
    pub listen: SocketAddr,
    /// `sqlite://FILE` (created when missing) or `postgres://USER@HOST/DB`. Default
    /// `sqlite://DATA_DIR/chatsync.db` in the [data directory](data_dir), whatever the
    /// working directory.
    pub database_url: String,
    /// PostgreSQL connections this process opens at most (plus one listening connection).
    /// Budget them across replicas against the server's `max_connections`. Default 16.
    pub database_max_connections: u32,
    /// Seconds between heartbeats on subscriptions. Default 15.
    pub heartbeat_secs: u64,
    /// Seconds a replica's lease on a session's sync run or live-source loop lasts without a
    /// renewal; the holder renews it every third of that. When a replica dies, another takes
    /// over within this time. Default 10, at most 15.
    pub lease_secs: u64,
    /// Origins allowed to call the API from a browser (CORS), e.g. `https://app.example`.
    /// Default none: only same-origin pages and non-browser clients.
    pub cors_allowed_origins: Vec<String>,
    /// The most bytes of one export file's text that an export source reads: a WhatsApp
    /// `.txt`, the uncompressed `_chat.txt` inside a zip, or a Telegram `result.json`. A larger
    /// export is one CHAT_FAILED (the run goes on). Default 1 GiB (1073741824).
    pub max_export_bytes: u64,
    /// The most a zipped export may inflate, in uncompressed bytes per compressed byte,
    /// checked once an entry is past 1 MiB. An entry beyond it (a zip bomb) is one
    /// CHAT_FAILED. Default 100; plain chat text compresses about 3 to 10 times.
    pub max_export_compression_ratio: u64,
    /// API tokens. Empty: no auth, and the server listens on loopback only. On a non-loopback
    /// address tokens need TLS (`tls_cert_file`), or `allow_insecure_tokens = true`.
    pub tokens: Vec<TokenConfig>,
    /// Accept tokens over plain HTTP/2 on a non-loopback address (tokens then cross the network
    /// in clear text; a warning is logged at start). Default false.
    pub allow_insecure_tokens: bool,
    /// Whether gRPC reflection needs a token (any configured token) when tokens are
    /// configured. Health is always open. Default true.
    pub reflection_requires_token: bool,
    /// PEM certificate chain for TLS (rustls). With `tls_key_file`, the listener speaks TLS
    /// only: gRPC, grpc-web and the console alike. Default none (plain HTTP/2 and HTTP/1.1).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificate(s): when set, every client must present a certificate signed by
    /// one of them (mutual TLS). Needs `tls_cert_file`. Default none.
    pub tls_client_ca_file: Option<PathBuf>,
    /// Open SubscribeMessages streams the server holds at most; one more is
    /// RESOURCE_EXHAUSTED. A stream's slot is freed when it ends. Default 20,000.
    pub max_subscriptions: u32,
    /// Seconds between HTTP/2 PING frames on an idle connection. Default 30.
    pub http2_keepalive_interval_secs: u64,
    /// Seconds to wait for a PING's answer before closing the connection. Default 10.
    pub http2_keepalive_timeout_secs: u64,
    /// Seconds of idleness before TCP keepalive probes start (`SO_KEEPALIVE`). Default 60.
    pub tcp_keepalive_secs: u64,
    /// Concurrent HTTP/2 streams (calls) per connection. Default 1,000.
    pub max_concurrent_streams: u32,
    /// Largest request message the server decodes, in bytes; a larger one is refused with
    /// OUT_OF_RANGE. Default 4 MiB (4,194,304).
    pub max_request_bytes: usize,
    /// Largest response message the server encodes, in bytes. Default 4 MiB, what a default
    /// gRPC client accepts; listings cap their pages to fit it.
    pub max_response_bytes: usize,
    /// Default deadline of unary RPCs, in seconds, when the client sets a longer one or none
    /// (`grpc-timeout`); streaming RPCs have none. Default 30.
    pub unary_timeout_secs: u64,
    /// The directory of the blob store: the bytes of message attachments (export media,
    /// Matrix files), one file per SHA-256 as `ab/cdef…`, each stored once. Default
    /// `DATA_DIR/blobs` in the [data directory](data_dir), whatever the database.
    pub blob_dir: PathBuf,
    /// The sessions this server serves.
    pub sessions: Vec<SessionConfig>,
    /// How log lines on stderr are written: `"text"` (for people; coloured only when stderr
    /// is a terminal) or `"json"` (one object per line with `timestamp`, `level`, `message`,
    /// the event's fields, `target` and the enclosing `spans`). Default `"text"`. `RUST_LOG`
    /// sets the levels (default `info`). Read by `chatsync serve`, which installs the
    /// logger ([`crate::logging`]); a server built in-process logs through its host's.
    pub log_format: LogFormat,
    /// Webhook endpoints (`[[webhooks]]`): every change of their sessions is POSTed to each,
    /// in seq order, signed, at least once ([`crate::service::webhooks`]). Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<webhooks::WebhookConfig>,
}

/// The format of log lines ([`Config::log_format`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Config {
    /// The bounds on export files, from `max_export_bytes` and `max_export_compression_ratio`.
    pub fn export_limits(&self) -> crate::sources::ExportLimits {
        crate::sources::ExportLimits {
            max_bytes: self.max_export_bytes,
            max_compression_ratio: self.max_export_compression_ratio,
        }
    }
}

/// One API token, checked from `authorization: Bearer TOKEN`. The secret comes from exactly
/// one of `token`, `token_env` and `token_file`; it is at least 8 characters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret itself, written in the configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The name of an environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// A file holding the secret (surrounding whitespace, such as a final newline, is
    /// ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Session ids this token may use; `["*"]` means all sessions.
    pub sessions: Vec<String>,
    /// Open SubscribeMessages streams this token may hold at once; beyond it,
    /// RESOURCE_EXHAUSTED. Default none: only the server-wide `max_subscriptions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_subscriptions: Option<u32>,
}

impl TokenConfig {
    /// A token with an inline secret for `sessions`.
    pub fn inline(secret: &str, sessions: &[&str]) -> Self {
        Self {
            token: Some(secret.into()),
            sessions: sessions.iter().map(|s| (*s).to_owned()).collect(),
            ..Self::default()
        }
    }

    /// Whether the token may act on `session_id`.
    pub fn allows(&self, session_id: &str) -> bool {
        self.sessions.iter().any(|s| s == "*" || s == session_id)
    }

    /// Reads the secret from where it is configured. `Invalid` when not exactly one source is
    /// given, the variable is unset, the file unreadable, or the secret under 8 characters.
    pub fn secret(&self) -> Result<String, ConfigError> {
        let secret = match (&self.token, &self.token_env, &self.token_file) {
            (Some(token), None, None) => token.clone(),
            (None, Some(name), None) => std::env::var(name).map_err(|_| {
                ConfigError::Invalid(format!(
                    "token_env names {name:?}, which is not set (or not UTF-8)"
                ))
            })?,
            (None, None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| {
                    ConfigError::Invalid(format!("cannot read token_file {}: {e}", path.display()))
                })?
                .trim()
                .to_owned(),
            _ => {
                return Err(ConfigError::Invalid(
                    "every [[tokens]] entry needs exactly one of token, token_env and token_file"
                        .into(),
                ));
            }
        };
        if secret.chars().count() < 8 {
            return Err(ConfigError::Invalid(
                "every token must be at least 8 characters".into(),
            ));
        }
        Ok(secret)
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The directory for chatsync's own files when the configuration names none (the default
/// SQLite database and the demo samples): `$CHATSYNC_DATA_DIR`, else
/// `$XDG_DATA_HOME/chatsync`, else `$HOME/.local/share/chatsync`, else the working directory.
pub fn data_dir() -> PathBuf {
    data_dir_from(|name| std::env::var_os(name))
}

/// [`data_dir`] with the environment given as a lookup.
pub fn data_dir_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let absolute = |name: &str| {
        var(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    if let Some(dir) = var("CHATSYNC_DATA_DIR").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir);
    }
    // The XDG Base Directory specification: a relative value is invalid and ignored.
    if let Some(dir) = absolute("XDG_DATA_HOME") {
        return dir.join("chatsync");
    }
    if let Some(home) = absolute("HOME") {
        return home.join(".local/share/chatsync");
    }
    PathBuf::from(".")
}

/// Where the demo sessions read the sample exports: `DATA_DIR/samples`. The samples are
/// embedded in the binary and written there when a server that uses them starts
/// ([`crate::samples`]).
pub fn samples_dir() -> PathBuf {
    data_dir().join("samples")
}

impl Default for Config {
    fn default() -> Self {
        let samples = samples_dir();
        let session = |id: &str, source: &str, path: Option<PathBuf>| {
            let mut settings = serde_json::Map::new();
            if let Some(path) = path {
                settings.insert("path".into(), path.display().to_string().into());
            }
            SessionConfig {
                id: id.into(),
                source: source.into(),
                settings,
            }
        };
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: format!("sqlite://{}", data_dir().join("chatsync.db").display()),
            database_max_connections: crate::storage::DEFAULT_POOL_SIZE,
            heartbeat_secs: 15,
            lease_secs: 10,
            cors_allowed_origins: Vec::new(),
            max_export_bytes: crate::sources::ExportLimits::default().max_bytes,
            max_export_compression_ratio: crate::sources::ExportLimits::default()
                .max_compression_ratio,
            tokens: Vec::new(),
            allow_insecure_tokens: false,
            reflection_requires_token: true,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            max_subscriptions: 20_000,
            http2_keepalive_interval_secs: 30,
            http2_keepalive_timeout_secs: 10,
            tcp_keepalive_secs: 60,
            max_concurrent_streams: 1_000,
            max_request_bytes: 4 << 20,
            max_response_bytes: 4 << 20,
            unary_timeout_secs: 30,
            log_format: LogFormat::Text,
            webhooks: Vec::new(),
            blob_dir: data_dir().join("blobs"),
            sessions: vec![
                session("demo", "whatsapp-export", Some(samples.join("whatsapp"))),
                session(
                    "demo-telegram",
                    "telegram-export",
                    Some(samples.join("telegram")),
                ),
                session("notes", "local", None),
            ],
        }
    }
}

impl Config {
    /// Loads the configuration: defaults, then `path` (or `./chatsync.toml` if it exists),
    /// then the environment. A file that names no `[[sessions]]` keeps the default ones.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let file = match path {
            Some(path) if !path.exists() => return Err(ConfigError::Missing(path.to_owned())),
            Some(path) => Some(path.to_owned()),
            None => Some(PathBuf::from("chatsync.toml")).filter(|p| p.exists()),
        };
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = &file {
            // Sessions are a list: a file that declares them replaces the defaults rather
            // than merging into them.
            let declares_sessions = Figment::from(Toml::file(file)).contains("sessions");
            if declares_sessions {
                figment =
                    figment.merge(Serialized::default("sessions", Vec::<SessionConfig>::new()));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("CHATSYNC_").only(&[
            "listen",
            "database_url",
            "heartbeat_secs",
            "lease_secs",
            "log_format",
        ]));
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types cannot: unique session ids, a sane heartbeat, readable tokens (each
    /// from exactly one source), TLS files in pairs, positive limits, that a server without
    /// tokens listens on loopback only, and that tokens on a non-loopback address have TLS
    /// (or `allow_insecure_tokens`). Reads `token_env` variables and `token_file` files.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for session in &self.sessions {
            if session.id.is_empty() || session.id.len() > 128 {
                return Err(ConfigError::Invalid(format!(
                    "session id {:?} must be 1 to 128 characters",
                    session.id
                )));
            }
            if !seen.insert(session.id.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "session id {:?} is declared twice",
                    session.id
                )));
            }
        }
        if self.heartbeat_secs == 0 {
            return Err(ConfigError::Invalid(
                "heartbeat_secs must be at least 1".into(),
            ));
        }
        if !(1..=15).contains(&self.lease_secs) {
            return Err(ConfigError::Invalid(
                "lease_secs must be between 1 and 15".into(),
            ));
        }
        if self.max_export_bytes == 0 || self.max_export_compression_ratio == 0 {
            return Err(ConfigError::Invalid(
                "max_export_bytes and max_export_compression_ratio must be at least 1".into(),
            ));
        }
        for token in &self.tokens {
            token.secret()?;
            if token.max_subscriptions == Some(0) {
                return Err(ConfigError::Invalid(
                    "a token's max_subscriptions must be at least 1 (leave it out for no limit \
                     of its own)"
                        .into(),
                ));
            }
        }
        self.validate_transport()?;
        let session_ids: Vec<&str> = self.sessions.iter().map(|s| s.id.as_str()).collect();
        webhooks::validate(&self.webhooks, &session_ids)?;
        if self.tokens.is_empty() && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "refusing to listen on {} without API tokens: anyone on the network could read \
                 and send messages. Add [[tokens]] to the configuration, or listen on a \
                 loopback address such as 127.0.0.1",
                self.listen
            )));
        }
        if !self.tokens.is_empty()
            && !self.listen.ip().is_loopback()
            && !self.tls()
            && !self.allow_insecure_tokens
        {
            return Err(ConfigError::Invalid(format!(
                "refusing to accept API tokens on {} without TLS: they would cross the network \
                 in clear text. Set tls_cert_file and tls_key_file, or allow_insecure_tokens = \
                 true (for a TLS-terminating proxy on a trusted network)",
                self.listen
            )));
        }
        Ok(())
    }

    /// Whether the listener speaks TLS.
    pub fn tls(&self) -> bool {
        self.tls_cert_file.is_some()
    }

    /// TLS files come in pairs; limits are positive.
    fn validate_transport(&self) -> Result<(), ConfigError> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "tls_cert_file and tls_key_file go together".into(),
                ));
            }
            _ => {}
        }
        if self.tls_client_ca_file.is_some() && self.tls_cert_file.is_none() {
            return Err(ConfigError::Invalid(
                "tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file".into(),
            ));
        }
        for (key, value) in [
            ("max_subscriptions", self.max_subscriptions as u64),
            (
                "http2_keepalive_interval_secs",
                self.http2_keepalive_interval_secs,
            ),
            (
                "http2_keepalive_timeout_secs",
                self.http2_keepalive_timeout_secs,
            ),
            ("tcp_keepalive_secs", self.tcp_keepalive_secs),
            ("max_concurrent_streams", self.max_concurrent_streams as u64),
            ("max_request_bytes", self.max_request_bytes as u64),
            ("max_response_bytes", self.max_response_bytes as u64),
            ("unary_timeout_secs", self.unary_timeout_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{key} must be at least 1")));
            }
        }
        if self.max_response_bytes < MIN_RESPONSE_BYTES {
            return Err(ConfigError::Invalid(format!(
                "max_response_bytes must be at least {MIN_RESPONSE_BYTES} (1 MiB): a listing \
                 page or a message must fit"
            )));
        }
        Ok(())
    }
}

/// The smallest `max_response_bytes` accepted: a listing page holds at least one message of
/// up to `service::MAX_TEXT_BYTES` and its fields.
pub const MIN_RESPONSE_BYTES: usize = 1 << 20;

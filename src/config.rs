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
//! Export paths come only from here, never from a request.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

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
    /// API tokens. Empty: no auth, and the server listens on loopback only.
    pub tokens: Vec<TokenConfig>,
    /// The sessions this server serves.
    pub sessions: Vec<SessionConfig>,
    /// How log lines on stderr are written: `"text"` (for people; coloured only when stderr
    /// is a terminal) or `"json"` (one object per line with `timestamp`, `level`, `message`,
    /// the event's fields, `target` and the enclosing `spans`). Default `"text"`. `RUST_LOG`
    /// sets the levels (default `info`). Read by `chatsync serve`, which installs the
    /// logger ([`crate::logging`]); a server built in-process logs through its host's.
    pub log_format: LogFormat,
}

/// The format of log lines ([`Config::log_format`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// One API token, checked from `authorization: Bearer TOKEN`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret itself.
    pub token: String,
    /// Session ids this token may use; `["*"]` means all sessions.
    pub sessions: Vec<String>,
}

impl TokenConfig {
    /// Whether the token may act on `session_id`.
    pub fn allows(&self, session_id: &str) -> bool {
        self.sessions.iter().any(|s| s == "*" || s == session_id)
    }
}

/// One `[[sessions]]` entry: an id, a source kind, and the source's own settings (all other
/// keys of the table, read by the source's factory).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionConfig {
    /// The session id clients use. 1 to 128 characters.
    pub id: String,
    /// The source kind: `whatsapp-export`, `telegram-export`, `local` or `matrix`.
    pub source: String,
    /// Source settings, e.g. `path`, `timezone`, `date_order` (exports), or `homeserver`,
    /// `user_id`, `access_token_env` / `access_token_file` (matrix).
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
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
            tokens: Vec::new(),
            log_format: LogFormat::Text,
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

    /// Checks what types cannot: unique session ids, a sane heartbeat, and that a server
    /// without tokens listens on loopback only.
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
        if self.tokens.iter().any(|t| t.token.len() < 8) {
            return Err(ConfigError::Invalid(
                "every token must be at least 8 characters".into(),
            ));
        }
        if self.tokens.is_empty() && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "refusing to listen on {} without API tokens: anyone on the network could read \
                 and send messages. Add [[tokens]] to the configuration, or listen on a \
                 loopback address such as 127.0.0.1",
                self.listen
            )));
        }
        Ok(())
    }
}

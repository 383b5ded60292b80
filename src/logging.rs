//! Log lines on stderr through `tracing`, as text or as JSON ([`LogFormat`]).
//!
//! - Levels come from `RUST_LOG` (an `EnvFilter`), default `info` with sqlx and SeaORM at
//!   `warn`.
//! - `text` is for people. It is coloured only when stderr is a terminal (and `NO_COLOR` is
//!   unset), so a file or a journal never holds ANSI escapes.
//! - `json` writes one object per line: `timestamp`, `level`, `message` and the event's other
//!   fields at the top level, then `target`, and the enclosing spans (`span`, `spans`) with
//!   their fields, such as `session_id`.
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The filter when `RUST_LOG` is unset or invalid.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,sea_orm=warn";

/// Installs the process's subscriber. A second call (a subscriber is already set) changes
/// nothing.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
        LogFormat::Text => builder.with_ansi(colour_on_stderr()).try_init(),
    };
}

/// Whether text logs may use ANSI colours: stderr is a terminal and `NO_COLOR` is unset or
/// empty (<https://no-color.org>).
fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

//! The command line's shape: the clap definitions of every command and its options.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// chatsync: mirror chat accounts into SQL and keep clients in step.
#[derive(Debug, Parser)]
#[command(name = "chatsync", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (gRPC, grpc-web, health and reflection on one port).
    Serve(ServeArgs),
    /// Sync a session's chats from its source, with a progress bar.
    Sync(SyncArgs),
    /// Print a consistent snapshot of a session: each chat, newest first, with its last
    /// messages and unread count, and the head seq to subscribe after
    /// (`chatsync subscribe SESSION --after-seq HEAD`).
    Snapshot(SnapshotArgs),
    /// Print a session's changes as they happen.
    Subscribe(SubscribeArgs),
    /// Send a text message, optionally with files (`--attach`) or as a reply (`--reply-to`).
    Send(SendArgs),
    /// Set the session's own reaction to a message; an empty emoji ("") removes it.
    React(ReactArgs),
    /// Replace the text of one of the session's own messages (the earlier text is kept).
    Edit(EditArgs),
    /// Delete one of the session's own messages for everyone.
    Delete(DeleteArgs),
    /// Show a session's sync status.
    Status(SessionArgs),
    /// List a session's chats.
    Chats(SessionArgs),
    /// List a session's messages in seq order.
    Messages(MessagesArgs),
    /// Search a session's messages, best matches first, with the matches highlighted
    /// (reverse video on a terminal, `[` `]` otherwise).
    Search(SearchArgs),
    /// Show each webhook endpoint's delivery per session (cursor, lag, last attempt, state),
    /// or move an endpoint's cursor with `--replay-after`.
    Webhooks(WebhooksArgs),
    /// Keep a local SQLite file in step with a session (a local-first client's own store):
    /// a snapshot on the first run, then every change from the stored seq, resumable after
    /// any crash. Schema: the guide's "Local-first clients" page.
    Mirror(MirrorArgs),
}

/// `chatsync serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file. Default: ./chatsync.toml if it exists, else the built-in
    /// default (SQLite file chatsync.db and demo sessions over the embedded samples, both
    /// in the data directory: $CHATSYNC_DATA_DIR, else $XDG_DATA_HOME/chatsync, else
    /// ~/.local/share/chatsync).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// `chatsync sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    pub session: String,
    /// The most recent messages to take per chat (default 100).
    #[arg(long, conflicts_with = "all")]
    pub limit_per_chat: Option<u32>,
    /// Take the whole history of every chat.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub window: Window,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `chatsync snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    pub session: String,
    /// The most recent messages per chat (default 50, at most 1,000; 0: none).
    #[arg(long)]
    pub limit_per_chat: Option<u32>,
    /// Only these chats (repeatable).
    #[arg(long = "chat")]
    pub chats: Vec<String>,
    #[command(flatten)]
    pub window: Window,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `chatsync subscribe`.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    pub session: String,
    /// Replay every change after this seq first.
    #[arg(long)]
    pub after_seq: Option<u64>,
    /// Only these chats (repeatable).
    #[arg(long = "chat")]
    pub chats: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `chatsync send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    pub session: String,
    pub chat: String,
    pub text: String,
    /// Idempotency key: retrying with the same key never sends twice.
    #[arg(long)]
    pub client_message_id: Option<String>,
    /// The server id of a message of the chat to reply to (quote).
    #[arg(long)]
    pub reply_to: Option<u64>,
    /// A file to send with the message (repeatable); its MIME type is guessed by the server
    /// from the file name's extension.
    #[arg(long = "attach", value_name = "PATH")]
    pub attachments: Vec<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `chatsync react`.
#[derive(Debug, Args)]
pub struct ReactArgs {
    pub session: String,
    /// The message's server id.
    pub message_id: u64,
    /// The emoji; "" removes the session's reaction.
    pub emoji: String,
    /// Idempotency key: a retry with the same key changes nothing.
    #[arg(long)]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `chatsync edit`.
#[derive(Debug, Args)]
pub struct EditArgs {
    pub session: String,
    /// The message's server id.
    pub message_id: u64,
    /// The new text.
    pub text: String,
    /// Idempotency key: a retry with the same key changes nothing.
    #[arg(long)]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `chatsync delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    pub session: String,
    /// The message's server id.
    pub message_id: u64,
    /// Idempotency key: a retry with the same key changes nothing.
    #[arg(long)]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `chatsync status` and `chatsync chats`: a session and nothing else.
#[derive(Debug, Args)]
pub struct SessionArgs {
    pub session: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `chatsync webhooks`.
#[derive(Debug, Args)]
pub struct WebhooksArgs {
    /// Only this endpoint.
    #[arg(long)]
    pub webhook: Option<String>,
    /// Only this session.
    #[arg(long)]
    pub session: Option<String>,
    /// Move the cursor of `--webhook` for `--session`: delivery continues after this seq
    /// (earlier replays, later skips ahead).
    #[arg(long, requires_all = ["webhook", "session"])]
    pub replay_after: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `chatsync messages`.
#[derive(Debug, Args)]
pub struct MessagesArgs {
    pub session: String,
    /// Only this chat.
    #[arg(long)]
    pub chat: Option<String>,
    /// Start after this seq.
    #[arg(long, default_value_t = 0)]
    pub after_seq: u64,
    /// At most this many messages (default: all).
    #[arg(long)]
    pub limit: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `chatsync search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    pub session: String,
    pub query: String,
    /// Only these chats (repeatable).
    #[arg(long = "chat")]
    pub chats: Vec<String>,
    /// At most this many hits (default 20).
    #[arg(long, default_value_t = 20)]
    pub limit: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `chatsync mirror`.
#[derive(Debug, Args)]
pub struct MirrorArgs {
    pub session: String,
    /// The local SQLite file (created with the schema when missing).
    #[arg(long, value_name = "FILE.db")]
    pub to: PathBuf,
    /// For the first snapshot: the most recent messages per chat (default 50, at most 1,000).
    /// Older history comes in with --backfill.
    #[arg(long)]
    pub limit_per_chat: Option<u32>,
    /// For the first snapshot: only messages sent in the last N days.
    #[arg(long)]
    pub days: Option<u32>,
    /// Stop once the file has reached the server's head instead of staying live.
    #[arg(long)]
    pub once: bool,
    /// Page the whole older history of this chat into the file (ListMessages before_seq),
    /// then stop. Needs a file that already mirrors the session.
    #[arg(long, value_name = "CHAT")]
    pub backfill: Option<String>,
    /// Fetch attachments' bytes (GetMedia) into this folder, one file per SHA-256.
    #[arg(long, value_name = "DIR")]
    pub media: Option<PathBuf>,
    /// With --media: files larger than this are not fetched.
    #[arg(long, default_value_t = 64 * 1024 * 1024, requires = "media")]
    pub media_max_bytes: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options every client command takes.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server's URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:50051",
        env = "CHATSYNC_SERVER"
    )]
    pub server: String,
    /// API token, sent as `authorization: Bearer TOKEN`.
    #[arg(long, env = "CHATSYNC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// For an `https://` server: a PEM CA certificate to trust besides the public roots
    /// (for a server certificate of your own CA).
    #[arg(long, env = "CHATSYNC_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// One JSON object per line, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// A time window: only messages sent at or after an instant.
#[derive(Debug, Args)]
pub struct Window {
    /// Only messages sent at or after this instant (RFC 3339, e.g. 2026-11-24T00:00:00Z).
    #[arg(long, conflicts_with = "days")]
    pub since: Option<String>,
    /// Only messages sent in the last N days (N × 24 hours before now).
    #[arg(long)]
    pub days: Option<u32>,
}

impl Window {
    /// The window's start as a protobuf timestamp, if one was given.
    pub fn since(&self) -> anyhow::Result<Option<pbjson_types::Timestamp>> {
        let instant = match (&self.since, self.days) {
            (Some(text), _) => chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| anyhow::anyhow!("--since {text:?} is not an RFC 3339 instant: {e}"))?
                .to_utc(),
            (None, Some(days)) => chrono::Duration::try_days(i64::from(days))
                .and_then(|window| chrono::Utc::now().checked_sub_signed(window))
                .ok_or_else(|| anyhow::anyhow!("--days {days} reaches before the earliest date"))?,
            (None, None) => return Ok(None),
        };
        Ok(Some(pbjson_types::Timestamp {
            seconds: instant.timestamp(),
            nanos: instant.timestamp_subsec_nanos() as i32,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_reaching_past_the_earliest_date_is_an_error_not_a_panic() {
        let far = Window {
            since: None,
            days: Some(100_000_000),
        };
        assert!(far.since().is_err());
        let week = Window {
            since: None,
            days: Some(7),
        };
        let start = week.since().expect("a week").expect("a start");
        let ago = chrono::Utc::now().timestamp() - start.seconds;
        assert!((7 * 86_400..7 * 86_400 + 60).contains(&ago), "{ago} s ago");
    }
}

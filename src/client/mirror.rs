//! A local-first mirror: one session of a chatsync server kept in a SQLite file of the
//! client's own, resumable after any crash. `chatsync mirror` is this module behind a command
//! line; any Rust program can use it the same way:
//!
//! ```no_run
//! # async fn example() -> Result<(), chatsync::client::mirror::MirrorError> {
//! use chatsync::client::{Server, mirror::{Mirror, MirrorOptions}};
//! let server = Server { url: "http://127.0.0.1:50051".into(), token: None, ca_cert_pem: None };
//! let mut options = MirrorOptions::new("notes", "notes.db");
//! options.once = true; // stop at the head instead of staying live
//! let mut mirror = Mirror::open(server, options).await?;
//! let outcome = mirror.run(&mut |progress| eprintln!("{progress:?}")).await?;
//! println!("at seq {}", outcome.head_seq);
//! # Ok(()) }
//! ```
//!
//! # The local file
//!
//! The schema ([`SCHEMA`], `PRAGMA user_version` [`SCHEMA_VERSION`]) is documented in the guide
//! (`docs/src/local-first.md`); applications read the file with any SQLite library while the
//! mirror writes it (WAL). Times are Unix milliseconds; server ids and seqs are the server's.
//!
//! # How it stays exact
//!
//! - **First run:** GetSnapshot (window and limit as given) and the session's contacts and
//!   participants are written in one local transaction together with `sync_state.head_seq` =
//!   the snapshot's head. Then SubscribeMessages continues after that head.
//! - **Every batch of events is applied in one local transaction together with the seq it
//!   reaches.** A crash at any point leaves the file at some seq N with every change up to N
//!   applied and none after; the next run subscribes after N: no gap, no duplicate. Every write
//!   is an upsert keyed by the server's ids, so applying a change twice changes nothing.
//! - **Later runs** subscribe after the stored seq, with no snapshot.
//! - **A cursor the server cannot continue from** (SubscribeMessages answers `OUT_OF_RANGE`, or
//!   the server's head is behind the file's seq, as after its database was replaced) is
//!   reported ([`Progress::Resnapshot`]) and the file is rebuilt from a new snapshot; changes
//!   are never skipped silently.
//! - Transient failures (server down, `UNAVAILABLE`, a dropped stream) are retried with
//!   exponential backoff (0.2 s doubling to 30 s).
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous,
};
use sea_orm::sqlx::{self, Connection, Row, SqliteExecutor};
use tokio::sync::mpsc;
use tonic::Code;

use super::{Client, ConnectError, Server, connect};
use crate::grpc::pb;
use crate::model::now_ms;
use pb::subscribe_messages_response::Event;

/// The local schema's version, kept in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// The local schema, created on first open (see `docs/src/local-first.md`).
pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS sync_state (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    session_id       TEXT    NOT NULL,
    server_url       TEXT    NOT NULL,
    head_seq         INTEGER NOT NULL,
    snapshot_seq     INTEGER NOT NULL,
    snapshots        INTEGER NOT NULL,
    events_applied   INTEGER NOT NULL,
    limit_per_chat   INTEGER,
    since_ms         INTEGER,
    updated_at_ms    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chats (
    chat_id          TEXT    PRIMARY KEY,
    name             TEXT    NOT NULL,
    seq              INTEGER NOT NULL,
    older_before_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
    id                           INTEGER PRIMARY KEY,
    chat_id                      TEXT    NOT NULL,
    seq                          INTEGER NOT NULL,
    provider_message_id          TEXT    NOT NULL,
    client_message_id            TEXT    NOT NULL,
    sender                       TEXT    NOT NULL,
    text                         TEXT    NOT NULL,
    kind                         TEXT    NOT NULL,
    status                       TEXT    NOT NULL,
    sent_at_ms                   INTEGER,
    from_me                      INTEGER NOT NULL,
    reply_to_provider_message_id TEXT,
    reply_to_message_id          INTEGER,
    forwarded                    INTEGER NOT NULL,
    frequently_forwarded         INTEGER NOT NULL,
    forwarded_from               TEXT    NOT NULL,
    edited                       INTEGER NOT NULL,
    edited_at_ms                 INTEGER,
    deleted_by                   TEXT,
    deleted_at_ms                INTEGER,
    changed_seq                  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_chat ON messages (chat_id, seq);
CREATE TABLE IF NOT EXISTS attachments (
    message_id INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    file_name  TEXT    NOT NULL,
    mime_type  TEXT    NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256     TEXT    NOT NULL,
    stored     INTEGER NOT NULL,
    PRIMARY KEY (message_id, position)
);
CREATE INDEX IF NOT EXISTS attachments_by_sha256 ON attachments (sha256);
CREATE TABLE IF NOT EXISTS earlier_texts (
    message_id     INTEGER NOT NULL,
    position       INTEGER NOT NULL,
    text           TEXT    NOT NULL,
    replaced_at_ms INTEGER,
    PRIMARY KEY (message_id, position)
);
CREATE TABLE IF NOT EXISTS reactions (
    message_id     INTEGER NOT NULL,
    position       INTEGER NOT NULL,
    emoji          TEXT    NOT NULL,
    sender         TEXT    NOT NULL,
    reacted_at_ms  INTEGER,
    PRIMARY KEY (message_id, position)
);
CREATE TABLE IF NOT EXISTS receipts (
    message_id      INTEGER NOT NULL,
    position        INTEGER NOT NULL,
    recipient       TEXT    NOT NULL,
    delivered_at_ms INTEGER,
    read_at_ms      INTEGER,
    PRIMARY KEY (message_id, position)
);
CREATE TABLE IF NOT EXISTS contacts (
    contact_id   TEXT    PRIMARY KEY,
    display_name TEXT    NOT NULL,
    phone        TEXT    NOT NULL,
    matrix_id    TEXT    NOT NULL,
    seq          INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS participants (
    chat_id      TEXT    NOT NULL,
    contact_id   TEXT    NOT NULL,
    joined_at_ms INTEGER,
    left_at_ms   INTEGER,
    seq          INTEGER NOT NULL,
    PRIMARY KEY (chat_id, contact_id)
);
CREATE TABLE IF NOT EXISTS media (
    sha256        TEXT    PRIMARY KEY,
    size_bytes    INTEGER NOT NULL,
    fetched_at_ms INTEGER NOT NULL
);
"#;

/// Sets the schema's version (kept equal to [`SCHEMA_VERSION`] by a unit test).
const SET_VERSION: &str = "PRAGMA user_version = 1";

/// What a new snapshot empties (every table but `sync_state` and `media`).
const CLEAR_DATA: &[&str] = &[
    "DELETE FROM chats",
    "DELETE FROM messages",
    "DELETE FROM attachments",
    "DELETE FROM earlier_texts",
    "DELETE FROM reactions",
    "DELETE FROM receipts",
    "DELETE FROM contacts",
    "DELETE FROM participants",
];

/// What a message's upsert replaces: its rows in the child tables.
const CLEAR_CHILDREN: &[&str] = &[
    "DELETE FROM attachments WHERE message_id = ?",
    "DELETE FROM earlier_texts WHERE message_id = ?",
    "DELETE FROM reactions WHERE message_id = ?",
    "DELETE FROM receipts WHERE message_id = ?",
];

/// At most this many events go into one local transaction (a catch-up applies whatever the
/// stream has already delivered, up to this many, at once).
const BATCH: usize = 512;

/// Page size of the listings the mirror reads (the server's maximum).
const PAGE: u32 = 1000;

/// The first and the longest wait before reconnecting.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// With `once`, how many failed attempts in a row end the run with the last error.
const ONCE_ATTEMPTS: u32 = 5;

/// What to mirror, and how.
#[derive(Debug, Clone)]
pub struct MirrorOptions {
    /// The session to mirror.
    pub session_id: String,
    /// The local SQLite file; created with the schema when missing.
    pub file: PathBuf,
    /// For a snapshot: the most recent messages per chat. `None`: the server's default (50);
    /// at most 1,000. Older history is paged in with [`Mirror::backfill`].
    pub limit_per_chat: Option<u32>,
    /// For a snapshot: only messages sent at or after this instant.
    pub since: Option<pbjson_types::Timestamp>,
    /// Stop once the file has reached the server's head instead of staying live.
    pub once: bool,
    /// Fetch attachments' bytes with GetMedia, when set.
    pub media: Option<MediaOptions>,
}

impl MirrorOptions {
    /// Options with the defaults: 50 messages per chat, no window, live, no media.
    pub fn new(session_id: impl Into<String>, file: impl Into<PathBuf>) -> Self {
        Self {
            session_id: session_id.into(),
            file: file.into(),
            limit_per_chat: None,
            since: None,
            once: false,
            media: None,
        }
    }
}

/// Where attachments' bytes go.
#[derive(Debug, Clone)]
pub struct MediaOptions {
    /// The folder; each file is named by its SHA-256 (64 hex digits), as `attachments.sha256`.
    pub dir: PathBuf,
    /// Files larger than this many bytes are not fetched.
    pub max_bytes: u64,
}

/// What the mirror reports while it works (for a progress bar or a log).
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A snapshot began: it has `n_chats` chats.
    SnapshotStarted { n_chats: u64 },
    /// One more chat of the snapshot is read (`done` of `n_chats`; `messages` so far).
    SnapshotChat {
        done: u64,
        n_chats: u64,
        messages: u64,
    },
    /// The snapshot is committed at `head_seq`.
    SnapshotDone { head_seq: u64, messages: u64 },
    /// Subscribed after `after_seq`; the server's head was `server_head`.
    Subscribed { after_seq: u64, server_head: u64 },
    /// A batch of `events` is committed; the file is at `head_seq`.
    Applied { head_seq: u64, events: usize },
    /// The file reached the server's head (the end of the replay) at `head_seq`.
    CaughtUp { head_seq: u64 },
    /// The stored cursor cannot be continued: the file is rebuilt from a new snapshot.
    Resnapshot { reason: String },
    /// A transient failure; the next attempt is in `delay`.
    Reconnecting { error: String, delay: Duration },
    /// A backfill page of `messages` older messages of `chat_id` is committed.
    Backfilled { chat_id: String, messages: u64 },
    /// An attachment's bytes are in the media folder.
    MediaFetched { sha256: String, size_bytes: u64 },
    /// An attachment's bytes could not be fetched (it is retried on the next run).
    MediaFailed { sha256: String, error: String },
}

/// How a [`Mirror::run`] ended (only with `once`; a live run ends only by an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The seq the file is at.
    pub head_seq: u64,
    /// Whether this run took a snapshot.
    pub snapshot: bool,
    /// Events applied by this run.
    pub events: u64,
}

/// The file's `sync_state` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncState {
    /// The session the file mirrors.
    pub session_id: String,
    /// The server it was last snapshotted from.
    pub server_url: String,
    /// Every change up to this seq is in the file, none after it.
    pub head_seq: u64,
    /// The head seq of the last snapshot.
    pub snapshot_seq: u64,
    /// How many snapshots the file was built from (1 after the first run; more after a
    /// re-snapshot).
    pub snapshots: u64,
    /// Events applied from subscriptions, in all runs.
    pub events_applied: u64,
}

/// Why the mirror stopped.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The local file could not be opened, created or written.
    #[error("local file {path}: {error}")]
    Local {
        /// The local file.
        path: PathBuf,
        /// What SQLite (through sqlx) said.
        error: sqlx::Error,
    },
    /// Another mirror holds the file.
    #[error("the local file {0} is in use by another mirror")]
    Locked(PathBuf),
    /// The file mirrors another session.
    #[error("the local file mirrors session {found:?}, not {wanted:?}")]
    OtherSession {
        /// The session in the file's `sync_state`.
        found: String,
        /// The session asked for.
        wanted: String,
    },
    /// The file was made by a newer version of chatsync.
    #[error("the local file has schema version {0}; this chatsync knows {SCHEMA_VERSION}")]
    Schema(i64),
    /// The server could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The server answered with an error.
    #[error("the server answered {:?}: {}", .0.code(), .0.message())]
    Server(tonic::Status),
    /// A backfill named a chat the file does not hold.
    #[error("the local file holds no chat {0:?}")]
    UnknownChat(String),
    /// The media folder could not be written.
    #[error("media folder {path}: {error}")]
    Media {
        /// The file or folder.
        path: PathBuf,
        /// What the file system said.
        error: std::io::Error,
    },
    /// The server broke the protocol (a snapshot at a seq behind the file, …).
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
}

impl MirrorError {
    /// Whether a later attempt may succeed (the server is down or restarting).
    pub fn is_transient(&self) -> bool {
        match self {
            MirrorError::Connect(ConnectError::Unreachable { .. }) => true,
            MirrorError::Server(status) => matches!(
                status.code(),
                Code::Unavailable
                    | Code::Unknown
                    | Code::Aborted
                    | Code::Internal
                    | Code::Cancelled
                    | Code::DeadlineExceeded
                    | Code::ResourceExhausted
            ),
            _ => false,
        }
    }
}

type Result<T, E = MirrorError> = std::result::Result<T, E>;

/// One session mirrored into one local file. The file is locked (`FILE.lock`, `flock`) while
/// the `Mirror` lives.
pub struct Mirror {
    server: Server,
    options: MirrorOptions,
    db: SqliteConnection,
    _lock: std::fs::File,
    /// Media that failed in this process, not retried until the next run.
    media_failed: HashSet<String>,
}

impl Mirror {
    /// Opens (or creates) the local file, locks it and checks that it mirrors
    /// `options.session_id`. Nothing is read from the server yet.
    pub async fn open(server: Server, options: MirrorOptions) -> Result<Self> {
        let path = options.file.clone();
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|error| MirrorError::Media {
                path: lock_path.clone(),
                error,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(MirrorError::Locked(path)),
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(MirrorError::Media {
                    path: lock_path,
                    error,
                });
            }
        }
        let local = |error| MirrorError::Local {
            path: path.clone(),
            error,
        };
        let connect_options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(local)?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses no committed transaction when the process dies; only a
            // power loss may drop the last ones (never half of one).
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let mut db = SqliteConnection::connect_with(&connect_options)
            .await
            .map_err(local)?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut db)
            .await
            .map_err(local)?;
        if version > SCHEMA_VERSION {
            return Err(MirrorError::Schema(version));
        }
        sqlx::raw_sql(SCHEMA)
            .execute(&mut db)
            .await
            .map_err(local)?;
        sqlx::raw_sql(SET_VERSION)
            .execute(&mut db)
            .await
            .map_err(local)?;
        let mut mirror = Self {
            server,
            options,
            db,
            _lock: lock,
            media_failed: HashSet::new(),
        };
        if let Some(state) = mirror.state().await?
            && state.session_id != mirror.options.session_id
        {
            return Err(MirrorError::OtherSession {
                found: state.session_id,
                wanted: mirror.options.session_id.clone(),
            });
        }
        Ok(mirror)
    }

    fn local(&self) -> impl Fn(sqlx::Error) -> MirrorError + use<> {
        let path = self.options.file.clone();
        move |error| MirrorError::Local {
            path: path.clone(),
            error,
        }
    }

    /// The file's `sync_state`, `None` before the first snapshot.
    pub async fn state(&mut self) -> Result<Option<SyncState>> {
        read_state(&mut self.db).await.map_err(self.local())
    }

    /// Brings the file up to date and, unless `once`, keeps it so: a snapshot when the file
    /// has none (or its cursor cannot be continued), then the subscription from the stored
    /// seq. Transient failures are retried with backoff (with `once`, up to 5 attempts in a
    /// row). Returns (only with `once`) when the file has reached the server's head.
    pub async fn run(&mut self, progress: &mut dyn FnMut(Progress)) -> Result<Outcome> {
        let mut outcome = Outcome {
            head_seq: 0,
            snapshot: false,
            events: 0,
        };
        let mut delay = BACKOFF_FIRST;
        let mut failures = 0;
        loop {
            let before = (outcome.events, outcome.head_seq);
            let result = self.attempt(&mut outcome, progress).await;
            if (outcome.events, outcome.head_seq) != before {
                // It got somewhere: the next failure starts the backoff afresh.
                delay = BACKOFF_FIRST;
                failures = 0;
            }
            match result {
                Ok(()) => return Ok(outcome),
                Err(error) if error.is_transient() => {
                    failures += 1;
                    if self.options.once && failures >= ONCE_ATTEMPTS {
                        return Err(error);
                    }
                    progress(Progress::Reconnecting {
                        error: error.to_string(),
                        delay,
                    });
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One connection: snapshot if needed, then subscribe and apply until the head (`once`)
    /// or an error. Resets the backoff once events flow.
    async fn attempt(
        &mut self,
        outcome: &mut Outcome,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        let mut api = connect(&self.server).await?;
        let status = api
            .get_sync_status(pb::GetSyncStatusRequest {
                session_id: self.options.session_id.clone(),
            })
            .await
            .map_err(MirrorError::Server)?
            .into_inner();
        let mut state = self.state().await?;
        if let Some(current) = &state
            && status.head_seq < current.head_seq
        {
            progress(Progress::Resnapshot {
                reason: format!(
                    "the server's head seq {} is behind this file's seq {} (was the \
                     server's database replaced?)",
                    status.head_seq, current.head_seq
                ),
            });
            state = None;
        }
        let after_seq = match state {
            Some(state) => state.head_seq,
            None => {
                let head = self.snapshot(&mut api, progress).await?;
                outcome.snapshot = true;
                head
            }
        };
        outcome.head_seq = after_seq;
        self.fetch_media(&mut api, progress).await?;
        let result = self
            .follow(&mut api, after_seq, status.head_seq, outcome, progress)
            .await;
        match result {
            Err(MirrorError::Server(status)) if status.code() == Code::OutOfRange => {
                progress(Progress::Resnapshot {
                    reason: format!(
                        "the server cannot replay after seq {after_seq}: {}",
                        status.message()
                    ),
                });
                self.snapshot(&mut api, progress).await?;
                outcome.snapshot = true;
                // The next attempt subscribes from the new snapshot.
                Err(MirrorError::Server(tonic::Status::unavailable(
                    "re-subscribing after a new snapshot",
                )))
            }
            other => other,
        }
    }

    /// Reads a snapshot and the session's contacts and participants, and replaces the file's
    /// contents with them in one transaction, with `head_seq` = the snapshot's head.
    async fn snapshot(
        &mut self,
        api: &mut Client,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<u64> {
        let local = self.local();
        let session_id = self.options.session_id.clone();
        let mut stream = api
            .get_snapshot(pb::GetSnapshotRequest {
                session_id: session_id.clone(),
                chat_ids: Vec::new(),
                limit_per_chat: self.options.limit_per_chat,
                since: self.options.since,
            })
            .await
            .map_err(MirrorError::Server)?
            .into_inner();
        let mut tx = self.db.begin().await.map_err(&local)?;
        for statement in CLEAR_DATA {
            sqlx::query(*statement)
                .execute(&mut *tx)
                .await
                .map_err(&local)?;
        }
        let mut head_seq = None;
        let mut done = 0u64;
        let mut messages = 0u64;
        while let Some(frame) = stream.message().await.map_err(MirrorError::Server)? {
            if head_seq.is_none() {
                progress(Progress::SnapshotStarted {
                    n_chats: u64::from(frame.n_chats),
                });
            }
            if head_seq.is_some_and(|h| h != frame.head_seq) {
                return Err(MirrorError::Protocol(
                    "snapshot frames at different head seqs".into(),
                ));
            }
            head_seq = Some(frame.head_seq);
            let Some(chat) = &frame.chat else { continue };
            // Where a backfill starts. A snapshot's messages are the newest by `sent_at`, which
            // need not be the newest by seq (history synced after newer messages), so a
            // backfill pages from the head down: it re-reads what the snapshot holds (an
            // upsert) but cannot miss a message. With a window, older messages may exist
            // outside it even when `has_more` is false.
            let older_before_seq =
                if frame.has_more || self.options.since.is_some() || frame.messages.is_empty() {
                    frame.head_seq + 1
                } else {
                    0
                };
            upsert_chat(&mut *tx, chat, Some(older_before_seq))
                .await
                .map_err(&local)?;
            for message in &frame.messages {
                // The tables were emptied above and a snapshot holds each message once.
                upsert_message_rows(&mut tx, message, message.seq, false)
                    .await
                    .map_err(&local)?;
            }
            done += 1;
            messages += frame.messages.len() as u64;
            progress(Progress::SnapshotChat {
                done,
                n_chats: u64::from(frame.n_chats),
                messages,
            });
        }
        let head_seq = head_seq.ok_or_else(|| {
            MirrorError::Protocol("a snapshot with no frame (not even its head)".into())
        })?;
        // Contacts and participants as stored now (at or after the head): each row carries the
        // seq of its last change, and a row is only replaced by one as new or newer, so the
        // replay after the head cannot take any of them back.
        let mut after_seq = 0;
        loop {
            let page = api
                .list_contacts(pb::ListContactsRequest {
                    session_id: session_id.clone(),
                    after_seq,
                    limit: PAGE,
                })
                .await
                .map_err(MirrorError::Server)?
                .into_inner();
            for contact in &page.contacts {
                upsert_contact(&mut *tx, contact).await.map_err(&local)?;
            }
            after_seq = page.next_seq;
            if !page.has_more {
                break;
            }
        }
        let mut after_seq = 0;
        loop {
            let page = api
                .list_participants(pb::ListParticipantsRequest {
                    session_id: session_id.clone(),
                    chat_id: String::new(),
                    after_seq,
                    limit: PAGE,
                })
                .await
                .map_err(MirrorError::Server)?
                .into_inner();
            for participant in &page.participants {
                upsert_participant(&mut *tx, &participant.chat_id, participant)
                    .await
                    .map_err(&local)?;
            }
            after_seq = page.next_seq;
            if !page.has_more {
                break;
            }
        }
        sqlx::query(
            "INSERT INTO sync_state (id, session_id, server_url, head_seq, snapshot_seq, \
             snapshots, events_applied, limit_per_chat, since_ms, updated_at_ms) \
             VALUES (1, ?, ?, ?, ?, 1, 0, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET server_url = excluded.server_url, \
             head_seq = excluded.head_seq, snapshot_seq = excluded.snapshot_seq, \
             snapshots = sync_state.snapshots + 1, limit_per_chat = excluded.limit_per_chat, \
             since_ms = excluded.since_ms, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(&session_id)
        .bind(&self.server.url)
        .bind(head_seq as i64)
        .bind(head_seq as i64)
        .bind(self.options.limit_per_chat.map(i64::from))
        .bind(ms(&self.options.since))
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(&local)?;
        tx.commit().await.map_err(&local)?;
        progress(Progress::SnapshotDone { head_seq, messages });
        Ok(head_seq)
    }

    /// Subscribes after `after_seq` and applies every event, a batch per transaction, until
    /// the head (`once`) or an error.
    async fn follow(
        &mut self,
        api: &mut Client,
        after_seq: u64,
        server_head: u64,
        outcome: &mut Outcome,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        let local = self.local();
        let stream = api
            .subscribe_messages(pb::SubscribeMessagesRequest {
                session_id: self.options.session_id.clone(),
                chat_ids: Vec::new(),
                after_seq: Some(after_seq),
            })
            .await
            .map_err(MirrorError::Server)?
            .into_inner();
        progress(Progress::Subscribed {
            after_seq,
            server_head,
        });
        // A reader task keeps the stream flowing while a batch commits; the writer takes
        // whatever has arrived (up to BATCH events) into its next transaction.
        let (events, mut received) =
            mpsc::channel::<Result<pb::SubscribeMessagesResponse, tonic::Status>>(BATCH * 2);
        let reader = tokio::spawn(async move {
            let mut stream = stream;
            loop {
                let item = match stream.message().await {
                    Ok(Some(event)) => Ok(event),
                    Ok(None) => Err(tonic::Status::unavailable("the subscription ended")),
                    Err(status) => Err(status),
                };
                let end = item.is_err();
                if events.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        let _abort = AbortOnDrop(reader);
        let mut cursor = after_seq;
        loop {
            let Some(first) = received.recv().await else {
                return Err(MirrorError::Server(tonic::Status::unavailable(
                    "the subscription ended",
                )));
            };
            let mut batch = Vec::new();
            let mut failure = None;
            match first {
                Ok(event) => batch.push(event),
                Err(status) => failure = Some(status),
            }
            while failure.is_none() && batch.len() < BATCH {
                match received.try_recv() {
                    Ok(Ok(event)) => batch.push(event),
                    Ok(Err(status)) => failure = Some(status),
                    Err(_) => break,
                }
            }
            let ready = batch
                .iter()
                .any(|e| matches!(e.event, Some(Event::Ready(_))));
            let applied = batch
                .iter()
                .filter(|e| e.seq > cursor && changes_data(e))
                .count();
            let (reached, attachments) = apply_batch(&mut self.db, cursor, &batch)
                .await
                .map_err(&local)?;
            if reached > cursor {
                cursor = reached;
                outcome.events += applied as u64;
                outcome.head_seq = cursor;
                progress(Progress::Applied {
                    head_seq: cursor,
                    events: applied,
                });
            }
            if attachments {
                self.fetch_media(api, progress).await?;
            }
            if ready {
                progress(Progress::CaughtUp { head_seq: cursor });
                if self.options.once {
                    return Ok(());
                }
            }
            if let Some(status) = failure {
                return Err(MirrorError::Server(status));
            }
        }
    }

    /// Pages older history of `chat_id` into the file with ListMessages `before_seq`, one page
    /// (up to 1,000 messages) per transaction with the chat's `older_before_seq`, until the
    /// chat's first message or `max_messages`. Returns the messages added. A chat the file does
    /// not hold is [`MirrorError::UnknownChat`].
    pub async fn backfill(
        &mut self,
        chat_id: &str,
        max_messages: Option<u64>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<u64> {
        let local = self.local();
        let mut api = connect(&self.server).await?;
        let mut added = 0u64;
        loop {
            let before: Option<i64> =
                sqlx::query_scalar("SELECT older_before_seq FROM chats WHERE chat_id = ?")
                    .bind(chat_id)
                    .fetch_optional(&mut self.db)
                    .await
                    .map_err(&local)?;
            let before = before.ok_or_else(|| MirrorError::UnknownChat(chat_id.to_owned()))?;
            let left = max_messages.map_or(u64::MAX, |m| m.saturating_sub(added));
            if before == 0 || left == 0 {
                return Ok(added);
            }
            let page = api
                .list_messages(pb::ListMessagesRequest {
                    session_id: self.options.session_id.clone(),
                    chat_id: chat_id.to_owned(),
                    after_seq: 0,
                    limit: left.min(u64::from(PAGE)) as u32,
                    before_seq: before as u64,
                })
                .await
                .map_err(MirrorError::Server)?
                .into_inner();
            let mut tx = self.db.begin().await.map_err(&local)?;
            let head: i64 = sqlx::query_scalar("SELECT head_seq FROM sync_state")
                .fetch_one(&mut *tx)
                .await
                .map_err(&local)?;
            for message in &page.messages {
                // Not newer than the file: a message changed after the file's seq is brought
                // up to date by the events after it.
                upsert_message(&mut tx, message, head as u64)
                    .await
                    .map_err(&local)?;
            }
            let next = if page.has_more && !page.messages.is_empty() {
                page.next_seq as i64
            } else {
                0
            };
            sqlx::query("UPDATE chats SET older_before_seq = ? WHERE chat_id = ?")
                .bind(next)
                .bind(chat_id)
                .execute(&mut *tx)
                .await
                .map_err(&local)?;
            tx.commit().await.map_err(&local)?;
            added += page.messages.len() as u64;
            progress(Progress::Backfilled {
                chat_id: chat_id.to_owned(),
                messages: page.messages.len() as u64,
            });
            if page.messages.iter().any(|m| !m.attachments.is_empty()) {
                self.fetch_media(&mut api, progress).await?;
            }
        }
    }

    /// Fetches the bytes of every stored attachment within the size cap that the media folder
    /// does not hold yet (when media are on).
    async fn fetch_media(
        &mut self,
        api: &mut Client,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        let Some(media) = self.options.media.clone() else {
            return Ok(());
        };
        let local = self.local();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| MirrorError::Media {
                path: path.clone(),
                error,
            }
        };
        let rows = sqlx::query(
            "SELECT DISTINCT a.sha256, a.size_bytes FROM attachments a \
             LEFT JOIN media m ON m.sha256 = a.sha256 \
             WHERE a.stored = 1 AND m.sha256 IS NULL AND a.size_bytes <= ?",
        )
        .bind(media.max_bytes.min(i64::MAX as u64) as i64)
        .fetch_all(&mut self.db)
        .await
        .map_err(&local)?;
        let pending: Vec<(String, i64)> = rows
            .iter()
            .map(|row| (row.get::<String, _>(0), row.get::<i64, _>(1)))
            .filter(|(sha, _)| !self.media_failed.contains(sha))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let tmp = media.dir.join("tmp");
        tokio::fs::create_dir_all(&tmp).await.map_err(io(&tmp))?;
        for (sha256, _) in pending {
            if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.media_failed.insert(sha256);
                continue;
            }
            match fetch_one(api, &self.options.session_id, &sha256, &media, &tmp).await {
                Ok(size) => {
                    sqlx::query(
                        "INSERT INTO media (sha256, size_bytes, fetched_at_ms) VALUES (?, ?, ?) \
                         ON CONFLICT (sha256) DO NOTHING",
                    )
                    .bind(&sha256)
                    .bind(size as i64)
                    .bind(now_ms())
                    .execute(&mut self.db)
                    .await
                    .map_err(&local)?;
                    progress(Progress::MediaFetched {
                        sha256,
                        size_bytes: size,
                    });
                }
                Err(FetchError::Io(path, error)) => {
                    return Err(MirrorError::Media { path, error });
                }
                Err(FetchError::Server(status)) if is_transient_status(&status) => {
                    return Err(MirrorError::Server(status));
                }
                Err(FetchError::Server(status)) => {
                    progress(Progress::MediaFailed {
                        sha256: sha256.clone(),
                        error: format!("{:?}: {}", status.code(), status.message()),
                    });
                    self.media_failed.insert(sha256);
                }
                Err(FetchError::TooLarge) => {
                    progress(Progress::MediaFailed {
                        sha256: sha256.clone(),
                        error: "over the size cap".into(),
                    });
                    self.media_failed.insert(sha256);
                }
            }
        }
        Ok(())
    }
}

fn is_transient_status(status: &tonic::Status) -> bool {
    MirrorError::Server(status.clone()).is_transient()
}

enum FetchError {
    Io(PathBuf, std::io::Error),
    Server(tonic::Status),
    TooLarge,
}

/// GetMedia into `tmp/`, synced, then renamed to `dir/SHA256`; returns the size.
async fn fetch_one(
    api: &mut Client,
    session_id: &str,
    sha256: &str,
    media: &MediaOptions,
    tmp: &Path,
) -> Result<u64, FetchError> {
    use tokio::io::AsyncWriteExt;
    let mut stream = api
        .get_media(pb::GetMediaRequest {
            session_id: session_id.to_owned(),
            sha256: sha256.to_owned(),
        })
        .await
        .map_err(FetchError::Server)?
        .into_inner();
    let part = tmp.join(format!("{sha256}.{}", std::process::id()));
    let io = |e| FetchError::Io(part.clone(), e);
    let mut file = tokio::fs::File::create(&part).await.map_err(io)?;
    let mut size = 0u64;
    loop {
        let chunk = match stream.message().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(status) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(FetchError::Server(status));
            }
        };
        size += chunk.data.len() as u64;
        if size > media.max_bytes {
            drop(file);
            let _ = tokio::fs::remove_file(&part).await;
            return Err(FetchError::TooLarge);
        }
        file.write_all(&chunk.data).await.map_err(io)?;
    }
    file.sync_all().await.map_err(io)?;
    drop(file);
    let target = media.dir.join(sha256);
    tokio::fs::rename(&part, &target)
        .await
        .map_err(|e| FetchError::Io(target.clone(), e))?;
    Ok(size)
}

/// Aborts a task when dropped (the subscription's reader, when the writer stops).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether an event changes rows (not a `ready` or a heartbeat).
fn changes_data(event: &pb::SubscribeMessagesResponse) -> bool {
    !matches!(
        event.event,
        None | Some(Event::Ready(_)) | Some(Event::Heartbeat(_))
    )
}

/// Applies the events after `cursor` in one transaction and moves `sync_state.head_seq` to
/// the last seq reached. Returns that seq and whether any message with attachments came.
async fn apply_batch(
    db: &mut SqliteConnection,
    cursor: u64,
    batch: &[pb::SubscribeMessagesResponse],
) -> Result<(u64, bool), sqlx::Error> {
    let mut reached = cursor;
    let mut events = 0i64;
    let mut attachments = false;
    let mut tx = db.begin().await?;
    for event in batch {
        // Already in the file (a replay after a reconnect can only start after the cursor,
        // but an event at or below it would change nothing anyway).
        if event.seq <= reached {
            continue;
        }
        reached = event.seq;
        let seq = event.seq;
        match &event.event {
            Some(Event::MessageCreated(message)) | Some(Event::MessageUpdated(message)) => {
                attachments |= !message.attachments.is_empty();
                upsert_message(&mut tx, message, seq).await?;
            }
            Some(Event::StatusUpdated(update)) => {
                sqlx::query("UPDATE messages SET status = ?, changed_seq = ? WHERE id = ?")
                    .bind(status_name(update.status))
                    .bind(seq as i64)
                    .bind(update.message_id as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            Some(Event::ChatUpdated(chat)) => {
                upsert_chat(&mut *tx, chat, None).await?;
            }
            Some(Event::ContactUpdated(update)) => {
                if let Some(contact) = &update.contact {
                    upsert_contact(&mut *tx, contact).await?;
                }
            }
            Some(Event::ParticipantsChanged(change)) => {
                for participant in &change.participants {
                    upsert_participant(&mut *tx, &change.chat_id, participant).await?;
                }
            }
            // The end of a sync run changes no row; its seq moves the cursor.
            Some(Event::SyncRunFinished(_)) => {}
            Some(Event::Ready(_)) | Some(Event::Heartbeat(_)) | None => continue,
        }
        events += 1;
    }
    if reached > cursor {
        sqlx::query(
            "UPDATE sync_state SET head_seq = ?, events_applied = events_applied + ?, \
             updated_at_ms = ?",
        )
        .bind(reached as i64)
        .bind(events)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok((reached, attachments))
}

async fn read_state(db: &mut SqliteConnection) -> Result<Option<SyncState>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT session_id, server_url, head_seq, snapshot_seq, snapshots, events_applied \
         FROM sync_state WHERE id = 1",
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| SyncState {
        session_id: row.get(0),
        server_url: row.get(1),
        head_seq: row.get::<i64, _>(2) as u64,
        snapshot_seq: row.get::<i64, _>(3) as u64,
        snapshots: row.get::<i64, _>(4) as u64,
        events_applied: row.get::<i64, _>(5) as u64,
    }))
}

/// A chat: a new one, or a new name and seq for a stored one (its `older_before_seq` is set
/// only by a snapshot or a backfill).
async fn upsert_chat<'c>(
    db: impl SqliteExecutor<'c>,
    chat: &pb::Chat,
    older_before_seq: Option<u64>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO chats (chat_id, name, seq, older_before_seq) VALUES (?, ?, ?, ?) \
         ON CONFLICT (chat_id) DO UPDATE SET name = excluded.name, seq = excluded.seq, \
         older_before_seq = CASE WHEN ? THEN excluded.older_before_seq \
         ELSE chats.older_before_seq END \
         WHERE excluded.seq >= chats.seq",
    )
    .bind(&chat.chat_id)
    .bind(&chat.name)
    .bind(chat.seq as i64)
    .bind(older_before_seq.unwrap_or(0) as i64)
    .bind(older_before_seq.is_some())
    .execute(db)
    .await?;
    Ok(())
}

async fn upsert_contact<'c>(
    db: impl SqliteExecutor<'c>,
    contact: &pb::Contact,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO contacts (contact_id, display_name, phone, matrix_id, seq) \
         VALUES (?, ?, ?, ?, ?) ON CONFLICT (contact_id) DO UPDATE SET \
         display_name = excluded.display_name, phone = excluded.phone, \
         matrix_id = excluded.matrix_id, seq = excluded.seq WHERE excluded.seq >= contacts.seq",
    )
    .bind(&contact.contact_id)
    .bind(&contact.display_name)
    .bind(&contact.phone)
    .bind(&contact.matrix_id)
    .bind(contact.seq as i64)
    .execute(db)
    .await?;
    Ok(())
}

async fn upsert_participant<'c>(
    db: impl SqliteExecutor<'c>,
    chat_id: &str,
    participant: &pb::Participant,
) -> Result<(), sqlx::Error> {
    let chat_id = if participant.chat_id.is_empty() {
        chat_id
    } else {
        &participant.chat_id
    };
    sqlx::query(
        "INSERT INTO participants (chat_id, contact_id, joined_at_ms, left_at_ms, seq) \
         VALUES (?, ?, ?, ?, ?) ON CONFLICT (chat_id, contact_id) DO UPDATE SET \
         joined_at_ms = excluded.joined_at_ms, left_at_ms = excluded.left_at_ms, \
         seq = excluded.seq WHERE excluded.seq >= participants.seq",
    )
    .bind(chat_id)
    .bind(&participant.contact_id)
    .bind(ms(&participant.joined_at))
    .bind(ms(&participant.left_at))
    .bind(participant.seq as i64)
    .execute(db)
    .await?;
    Ok(())
}

/// A message as the server has it now, with its attachments, earlier texts, reactions and
/// receipts (which replace the stored ones). `changed_seq` is the seq of the change it
/// carries (its creation seq from a snapshot).
async fn upsert_message(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    m: &pb::Message,
    changed_seq: u64,
) -> Result<(), sqlx::Error> {
    upsert_message_rows(tx, m, changed_seq, true).await
}

/// [`upsert_message`]; `replace` false skips deleting child rows that cannot exist (a snapshot
/// writes into emptied tables).
async fn upsert_message_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    m: &pb::Message,
    changed_seq: u64,
    replace: bool,
) -> Result<(), sqlx::Error> {
    let (reply_provider, reply_id) = match &m.reply_to {
        Some(reply) => (
            Some(reply.provider_message_id.as_str()),
            (reply.message_id != 0).then_some(reply.message_id as i64),
        ),
        None => (None, None),
    };
    let (deleted_by, deleted_at) = match &m.deletion {
        Some(deletion) => (Some(deletion.deleted_by.as_str()), ms(&deletion.deleted_at)),
        None => (None, None),
    };
    sqlx::query(
        "INSERT INTO messages (id, chat_id, seq, provider_message_id, client_message_id, sender, \
         text, kind, status, sent_at_ms, from_me, reply_to_provider_message_id, \
         reply_to_message_id, forwarded, frequently_forwarded, forwarded_from, edited, \
         edited_at_ms, deleted_by, deleted_at_ms, changed_seq) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET chat_id = excluded.chat_id, seq = excluded.seq, \
         provider_message_id = excluded.provider_message_id, \
         client_message_id = excluded.client_message_id, sender = excluded.sender, \
         text = excluded.text, kind = excluded.kind, status = excluded.status, \
         sent_at_ms = excluded.sent_at_ms, from_me = excluded.from_me, \
         reply_to_provider_message_id = excluded.reply_to_provider_message_id, \
         reply_to_message_id = excluded.reply_to_message_id, forwarded = excluded.forwarded, \
         frequently_forwarded = excluded.frequently_forwarded, \
         forwarded_from = excluded.forwarded_from, edited = excluded.edited, \
         edited_at_ms = excluded.edited_at_ms, deleted_by = excluded.deleted_by, \
         deleted_at_ms = excluded.deleted_at_ms, \
         changed_seq = max(messages.changed_seq, excluded.changed_seq)",
    )
    .bind(m.id as i64)
    .bind(&m.chat_id)
    .bind(m.seq as i64)
    .bind(&m.provider_message_id)
    .bind(&m.client_message_id)
    .bind(&m.sender)
    .bind(&m.text)
    .bind(kind_name(m.kind))
    .bind(status_name(m.status))
    .bind(ms(&m.sent_at))
    .bind(m.from_me)
    .bind(reply_provider)
    .bind(reply_id)
    .bind(m.forwarded)
    .bind(m.frequently_forwarded)
    .bind(&m.forwarded_from)
    .bind(m.edited)
    .bind(ms(&m.edited_at))
    .bind(deleted_by)
    .bind(deleted_at)
    .bind(changed_seq as i64)
    .execute(&mut **tx)
    .await?;
    for statement in CLEAR_CHILDREN.iter().filter(|_| replace) {
        sqlx::query(*statement)
            .bind(m.id as i64)
            .execute(&mut **tx)
            .await?;
    }
    for (position, a) in m.attachments.iter().enumerate() {
        sqlx::query(
            "INSERT INTO attachments (message_id, position, file_name, mime_type, size_bytes, \
             sha256, stored) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(m.id as i64)
        .bind(position as i64)
        .bind(&a.file_name)
        .bind(&a.mime_type)
        .bind(a.size_bytes as i64)
        .bind(&a.sha256)
        .bind(a.stored)
        .execute(&mut **tx)
        .await?;
    }
    for (position, e) in m.earlier_texts.iter().enumerate() {
        sqlx::query(
            "INSERT INTO earlier_texts (message_id, position, text, replaced_at_ms) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(m.id as i64)
        .bind(position as i64)
        .bind(&e.text)
        .bind(ms(&e.replaced_at))
        .execute(&mut **tx)
        .await?;
    }
    let reactors = m
        .reactions
        .iter()
        .flat_map(|r| r.reactors.iter().map(move |who| (&r.emoji, who)));
    for (position, (emoji, who)) in reactors.enumerate() {
        sqlx::query(
            "INSERT INTO reactions (message_id, position, emoji, sender, reacted_at_ms) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(m.id as i64)
        .bind(position as i64)
        .bind(emoji)
        .bind(&who.sender)
        .bind(ms(&who.reacted_at))
        .execute(&mut **tx)
        .await?;
    }
    for (position, r) in m.receipts.iter().enumerate() {
        sqlx::query(
            "INSERT INTO receipts (message_id, position, recipient, delivered_at_ms, read_at_ms) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(m.id as i64)
        .bind(position as i64)
        .bind(&r.recipient)
        .bind(ms(&r.delivered_at))
        .bind(ms(&r.read_at))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// A kind as the file stores it: `TEXT`, `SYSTEM`, `MEDIA`, `DELETED` (`UNSPECIFIED`).
fn kind_name(kind: i32) -> &'static str {
    pb::MessageKind::try_from(kind)
        .unwrap_or(pb::MessageKind::Unspecified)
        .as_str_name()
        .trim_start_matches("MESSAGE_KIND_")
}

/// A status as the file stores it: `PENDING`, `SENT`, `DELIVERED`, `READ`, `FAILED`.
fn status_name(status: i32) -> &'static str {
    pb::MessageStatus::try_from(status)
        .unwrap_or(pb::MessageStatus::Unspecified)
        .as_str_name()
        .trim_start_matches("MESSAGE_STATUS_")
}

/// A timestamp as Unix milliseconds.
fn ms(at: &Option<pbjson_types::Timestamp>) -> Option<i64> {
    at.as_ref()
        .map(|t| t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000))
}

fn timestamp(ms: Option<i64>) -> Option<pbjson_types::Timestamp> {
    ms.map(|ms| pbjson_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    })
}

/// Reads a mirror file back: its `sync_state`, chats (by seq), messages (by seq, with their
/// attachments, earlier texts, reactions and receipts, as the server lists them), contacts and
/// participants (by seq). For applications and tests that want the generated types rather
/// than SQL; opens the file read-only and works while a mirror writes it.
pub async fn read_file(path: &Path) -> Result<LocalContents, sqlx::Error> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(Duration::from_secs(10));
    let mut db = SqliteConnection::connect_with(&options).await?;
    let state = read_state(&mut db).await?;
    let session_id = state
        .as_ref()
        .map(|s| s.session_id.clone())
        .unwrap_or_default();
    let mut tx = db.begin().await?;
    let chats = sqlx::query("SELECT chat_id, name, seq FROM chats ORDER BY seq, chat_id")
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| pb::Chat {
            chat_id: row.get(0),
            name: row.get(1),
            seq: row.get::<i64, _>(2) as u64,
        })
        .collect();
    let contacts = sqlx::query(
        "SELECT contact_id, display_name, phone, matrix_id, seq FROM contacts \
         ORDER BY seq, contact_id",
    )
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|row| pb::Contact {
        contact_id: row.get(0),
        display_name: row.get(1),
        phone: row.get(2),
        matrix_id: row.get(3),
        seq: row.get::<i64, _>(4) as u64,
    })
    .collect();
    let participants = sqlx::query(
        "SELECT chat_id, contact_id, joined_at_ms, left_at_ms, seq FROM participants \
         ORDER BY seq, chat_id, contact_id",
    )
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|row| pb::Participant {
        chat_id: row.get(0),
        contact_id: row.get(1),
        joined_at: timestamp(row.get(2)),
        left_at: timestamp(row.get(3)),
        seq: row.get::<i64, _>(4) as u64,
    })
    .collect();
    let mut attachments: HashMap<i64, Vec<pb::Attachment>> = HashMap::new();
    for row in sqlx::query(
        "SELECT message_id, file_name, mime_type, size_bytes, sha256, stored FROM attachments \
         ORDER BY message_id, position",
    )
    .fetch_all(&mut *tx)
    .await?
    {
        attachments
            .entry(row.get(0))
            .or_default()
            .push(pb::Attachment {
                file_name: row.get(1),
                mime_type: row.get(2),
                size_bytes: row.get::<i64, _>(3) as u64,
                sha256: row.get(4),
                stored: row.get(5),
            });
    }
    let mut earlier: HashMap<i64, Vec<pb::EarlierText>> = HashMap::new();
    for row in sqlx::query(
        "SELECT message_id, text, replaced_at_ms FROM earlier_texts \
         ORDER BY message_id, position",
    )
    .fetch_all(&mut *tx)
    .await?
    {
        earlier
            .entry(row.get(0))
            .or_default()
            .push(pb::EarlierText {
                text: row.get(1),
                replaced_at: timestamp(row.get(2)),
            });
    }
    let mut reactions: HashMap<i64, Vec<pb::Reaction>> = HashMap::new();
    for row in sqlx::query(
        "SELECT message_id, emoji, sender, reacted_at_ms FROM reactions \
         ORDER BY message_id, position",
    )
    .fetch_all(&mut *tx)
    .await?
    {
        let list = reactions.entry(row.get(0)).or_default();
        let emoji: String = row.get(1);
        let reactor = pb::Reactor {
            sender: row.get(2),
            reacted_at: timestamp(row.get(3)),
        };
        match list.last_mut() {
            Some(last) if last.emoji == emoji => last.reactors.push(reactor),
            _ => list.push(pb::Reaction {
                emoji,
                reactors: vec![reactor],
            }),
        }
    }
    let mut receipts: HashMap<i64, Vec<pb::Receipt>> = HashMap::new();
    for row in sqlx::query(
        "SELECT message_id, recipient, delivered_at_ms, read_at_ms FROM receipts \
         ORDER BY message_id, position",
    )
    .fetch_all(&mut *tx)
    .await?
    {
        receipts.entry(row.get(0)).or_default().push(pb::Receipt {
            recipient: row.get(1),
            delivered_at: timestamp(row.get(2)),
            read_at: timestamp(row.get(3)),
        });
    }
    let rows = sqlx::query(
        "SELECT id, chat_id, seq, provider_message_id, client_message_id, sender, text, kind, \
         status, sent_at_ms, from_me, reply_to_provider_message_id, reply_to_message_id, \
         forwarded, frequently_forwarded, forwarded_from, edited, edited_at_ms, deleted_by, \
         deleted_at_ms FROM messages ORDER BY seq, id",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let messages = rows
        .iter()
        .map(|row| {
            let id: i64 = row.get(0);
            let kind: String = row.get(7);
            let status: String = row.get(8);
            let reply_provider: Option<String> = row.get(11);
            let reply_id: Option<i64> = row.get(12);
            let deleted_by: Option<String> = row.get(18);
            pb::Message {
                id: id as u64,
                session_id: session_id.clone(),
                chat_id: row.get(1),
                seq: row.get::<i64, _>(2) as u64,
                provider_message_id: row.get(3),
                client_message_id: row.get(4),
                sender: row.get(5),
                text: row.get(6),
                kind: pb::MessageKind::from_str_name(&format!("MESSAGE_KIND_{kind}"))
                    .unwrap_or_default() as i32,
                status: pb::MessageStatus::from_str_name(&format!("MESSAGE_STATUS_{status}"))
                    .unwrap_or_default() as i32,
                sent_at: timestamp(row.get(9)),
                from_me: row.get(10),
                attachments: attachments.remove(&id).unwrap_or_default(),
                reply_to: reply_provider.map(|provider_message_id| pb::ReplyTo {
                    provider_message_id,
                    message_id: reply_id.unwrap_or(0) as u64,
                }),
                forwarded: row.get(13),
                frequently_forwarded: row.get(14),
                forwarded_from: row.get(15),
                edited: row.get(16),
                edited_at: timestamp(row.get(17)),
                earlier_texts: earlier.remove(&id).unwrap_or_default(),
                reactions: reactions.remove(&id).unwrap_or_default(),
                receipts: receipts.remove(&id).unwrap_or_default(),
                deletion: deleted_by.map(|deleted_by| pb::Deletion {
                    deleted_by,
                    deleted_at: timestamp(row.get(19)),
                }),
            }
        })
        .collect();
    Ok(LocalContents {
        state,
        chats,
        messages,
        contacts,
        participants,
    })
}

/// What a mirror file holds, in the generated types (see [`read_file`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LocalContents {
    /// `sync_state`; `None` before the first snapshot.
    pub state: Option<SyncState>,
    /// Chats by seq (then id), as ListChats orders them.
    pub chats: Vec<pb::Chat>,
    /// Messages by creation seq, as ListMessages orders them, `session_id` filled in.
    pub messages: Vec<pb::Message>,
    /// Contacts by seq (then id).
    pub contacts: Vec<pb::Contact>,
    /// Participants by seq (then chat and contact).
    pub participants: Vec<pb::Participant>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_pragma_sets_the_schema_version() {
        assert_eq!(
            SET_VERSION,
            format!("PRAGMA user_version = {SCHEMA_VERSION}")
        );
    }

    #[test]
    fn times_round_trip_through_milliseconds() {
        let at = Some(pbjson_types::Timestamp {
            seconds: -1,
            nanos: 5_000_000,
        });
        assert_eq!(ms(&at), Some(-995));
        assert_eq!(timestamp(ms(&at)), at);
        assert_eq!(kind_name(pb::MessageKind::Deleted as i32), "DELETED");
        assert_eq!(status_name(pb::MessageStatus::Read as i32), "READ");
    }
}

//! Storage: the only module that talks to the database.
//!
//! Contract:
//! - Every write runs in one transaction that first reserves its seqs with
//!   `UPDATE sessions SET head_seq = head_seq + n ... RETURNING head_seq`. On SQLite the
//!   transaction is `BEGIN IMMEDIATE`; on PostgreSQL the row lock on the session does the same.
//!   Either way writers of one session are serialised, so commit order equals seq order and the
//!   committed seqs of a session always form a prefix: a reader that has seen seq N can read
//!   `seq > N` later and never miss a change.
//! - Bulk imports insert in multi-row statements of at most [`ROWS_PER_INSERT`] rows (below
//!   SQLite's 32,766 bound-variable limit), never row by row.
//! - After each commit the new head seq is published on the [`Store::heads`] watch channel of
//!   the session. The channel only announces; readers always read the rows from storage.
pub mod entities;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::sea_query::{Expr, ExprTrait, InsertStatement, OnConflict, Query};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::model::{
    Change, Chat, Message, MessageKind, MessageStatus, NewMessage, StatusUpdate, now_ms,
};
use entities::{change, chat, message, session};

/// Rows per multi-row INSERT: 12 message columns × 2,000 rows = 24,000 bound variables, under
/// SQLite's limit of 32,766.
pub const ROWS_PER_INSERT: usize = 2_000;

/// Which end of a seq range a listing takes when the range holds more than its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    Oldest,
    Newest,
}

/// One chat of an import batch ([`Store::import`]).
#[derive(Debug, Clone, Copy)]
pub struct ImportChat<'a> {
    pub chat_id: &'a str,
    /// The name as the source gives it now; a different stored name is a rename.
    pub name: &'a str,
    /// Messages not yet stored, oldest first.
    pub messages: &'a [NewMessage],
}

/// The persisted state of a session's sync runs (`sessions.sync_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    NeverSynced = 1,
    Running = 2,
    Succeeded = 3,
    Failed = 4,
    Interrupted = 5,
}

impl SyncState {
    fn from_i16(value: i16) -> Self {
        match value {
            2 => Self::Running,
            3 => Self::Succeeded,
            4 => Self::Failed,
            5 => Self::Interrupted,
            _ => Self::NeverSynced,
        }
    }
}

/// What [`Store::save_sync_state`] persists about the current or last sync run.
#[derive(Debug, Clone, Copy)]
pub struct SyncRecord<'a> {
    pub state: SyncState,
    pub sync_id: &'a str,
    /// Unix milliseconds.
    pub started_at_ms: i64,
    /// Unix milliseconds; `None` while running.
    pub finished_at_ms: Option<i64>,
    pub error: Option<&'a str>,
    /// The last progress frame, as JSON.
    pub progress_json: &'a str,
}

/// A session row, as GetSyncStatus needs it.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: String,
    pub source: String,
    pub head_seq: u64,
    pub sync_state: SyncState,
    pub sync_id: Option<String>,
    pub sync_started_at_ms: Option<i64>,
    pub sync_finished_at_ms: Option<i64>,
    pub sync_error: Option<String>,
    /// The last progress frame, as JSON written by the sync service.
    pub sync_progress: Option<String>,
}

/// Identifies one message of a session.
#[derive(Debug, Clone)]
pub enum MessageRef {
    /// The server id.
    Id(i64),
    /// The source's id within a chat.
    Provider {
        chat_id: String,
        provider_message_id: String,
    },
}

impl std::fmt::Display for MessageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => write!(f, "message {id}"),
            Self::Provider {
                chat_id,
                provider_message_id,
            } => write!(f, "message {provider_message_id:?} in chat {chat_id:?}"),
        }
    }
}

/// An upstream change to a stored message's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageEdit<'a> {
    /// `editor` edited the text to `text`; it only counts when `editor` is the sender.
    Text { text: &'a str, editor: &'a str },
    /// The message was deleted: kind DELETED, no text.
    Deleted,
}

/// The database handle plus the per-session head-seq announcements.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    heads: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
    /// SQLite only: writers queue here, in process, instead of meeting in `BEGIN IMMEDIATE`,
    /// where SQLite's busy handler would make them sleep and retry.
    sqlite_writer: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// The in-process writer lock of a SQLite store, held until the transaction ends.
type WriterGuard = Option<tokio::sync::OwnedMutexGuard<()>>;

impl Store {
    /// Connects to `url` (`sqlite://FILE` or `postgres://...`) and runs the migrations.
    ///
    /// SQLite files are created when missing and opened in WAL mode with
    /// `synchronous = NORMAL` and a 10 s busy timeout, with a pool of readers; writers are
    /// queued in process.
    pub async fn connect(url: &str) -> Result<Self> {
        let mut options = ConnectOptions::new(url.to_owned());
        options.sqlx_logging(false);
        let sqlite = url.starts_with("sqlite:");
        if sqlite {
            options
                .max_connections(8)
                .min_connections(1)
                // A local file cannot drop a connection: no ping before every query.
                .test_before_acquire(false)
                .map_sqlx_sqlite_opts(|opts| {
                    opts.create_if_missing(true)
                        .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                        .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                        .busy_timeout(Duration::from_secs(10))
                });
        } else {
            options.max_connections(16);
        }
        let db = Database::connect(options).await?;
        <migrations::Migrator as migrations::MigratorTrait>::up(&db, None).await?;
        Ok(Self {
            db,
            heads: Arc::default(),
            sqlite_writer: sqlite.then(Arc::default),
        })
    }

    /// Creates the session row if missing and records its source kind.
    pub async fn ensure_session(&self, session_id: &str, source: &str) -> Result<()> {
        let row = session::ActiveModel {
            id: Set(session_id.to_owned()),
            source: Set(source.to_owned()),
            head_seq: Set(0),
            sync_state: Set(SyncState::NeverSynced as i16),
            sync_id: Set(None),
            sync_started_at: Set(None),
            sync_finished_at: Set(None),
            sync_error: Set(None),
            sync_progress: Set(None),
            source_cursor: Set(None),
        };
        session::Entity::insert(row)
            .on_conflict(
                OnConflict::column(session::Column::Id)
                    .update_column(session::Column::Source)
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// Marks runs left RUNNING by a crash as INTERRUPTED. Called once at start-up.
    pub async fn mark_interrupted_runs(&self) -> Result<u64> {
        let result = session::Entity::update_many()
            .col_expr(
                session::Column::SyncState,
                Expr::value(SyncState::Interrupted as i16),
            )
            .col_expr(
                session::Column::SyncError,
                Expr::value("the server stopped while the run was in progress"),
            )
            .filter(session::Column::SyncState.eq(SyncState::Running as i16))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected)
    }

    /// The session row, or `NotFound`.
    pub async fn session(&self, session_id: &str) -> Result<SessionRecord> {
        let row = session::Entity::find_by_id(session_id.to_owned())
            .one(&self.db)
            .await?
            .ok_or_else(|| Error::NotFound(format!("session {session_id:?}")))?;
        Ok(SessionRecord {
            id: row.id,
            source: row.source,
            head_seq: row.head_seq as u64,
            sync_state: SyncState::from_i16(row.sync_state),
            sync_id: row.sync_id,
            sync_started_at_ms: row.sync_started_at,
            sync_finished_at_ms: row.sync_finished_at,
            sync_error: row.sync_error,
            sync_progress: row.sync_progress,
        })
    }

    /// Persists the sync-run state of a session.
    pub async fn save_sync_state(&self, session_id: &str, record: &SyncRecord<'_>) -> Result<()> {
        session::Entity::update_many()
            .col_expr(session::Column::SyncState, Expr::value(record.state as i16))
            .col_expr(session::Column::SyncId, Expr::value(record.sync_id))
            .col_expr(
                session::Column::SyncStartedAt,
                Expr::value(record.started_at_ms),
            )
            .col_expr(
                session::Column::SyncFinishedAt,
                Expr::value(record.finished_at_ms),
            )
            .col_expr(
                session::Column::SyncError,
                Expr::value(record.error.map(str::to_owned)),
            )
            .col_expr(
                session::Column::SyncProgress,
                Expr::value(record.progress_json),
            )
            .filter(session::Column::Id.eq(session_id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// The number of chats and messages stored for a session.
    pub async fn counts(&self, session_id: &str) -> Result<(u64, u64)> {
        let chats = chat::Entity::find()
            .filter(chat::Column::SessionId.eq(session_id))
            .count(&self.db)
            .await?;
        let messages = message::Entity::find()
            .filter(message::Column::SessionId.eq(session_id))
            .count(&self.db)
            .await?;
        Ok((chats, messages))
    }

    /// A watch channel carrying the session's committed head seq. It starts at the stored
    /// head and only moves forward.
    pub async fn heads(&self, session_id: &str) -> Result<watch::Receiver<u64>> {
        if let Some(sender) = self.lock_heads().get(session_id) {
            return Ok(sender.subscribe());
        }
        let head = self.session(session_id).await?.head_seq;
        let mut heads = self.lock_heads();
        let sender = heads
            .entry(session_id.to_owned())
            .or_insert_with(|| watch::channel(head).0);
        Ok(sender.subscribe())
    }

    fn lock_heads(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        // A poisoned lock only means another thread panicked while holding a plain map.
        self.heads
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn announce(&self, session_id: &str, head: u64) {
        let heads = self.lock_heads();
        if let Some(sender) = heads.get(session_id) {
            sender.send_if_modified(|current| {
                if head > *current {
                    *current = head;
                    true
                } else {
                    false
                }
            });
        }
    }

    /// Begins a write transaction. Keep the guard until the transaction ends.
    async fn begin_write(&self) -> Result<(DatabaseTransaction, WriterGuard)> {
        let writer = match &self.sqlite_writer {
            Some(lock) => Some(lock.clone().lock_owned().await),
            None => None,
        };
        let txn = self
            .db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await?;
        Ok((txn, writer))
    }

    /// Ends a write that changes one stored message: takes the next seq, sets `columns` (and
    /// `updated_at`) on the message's row, logs the change (`kind`, with `status` for a status
    /// change), commits `txn` and announces the new head.
    async fn commit_message_change(
        &self,
        txn: DatabaseTransaction,
        session_id: &str,
        row: &message::Model,
        kind: i16,
        status: Option<i16>,
        columns: Vec<(message::Column, Expr)>,
    ) -> Result<()> {
        let seq = Self::reserve_seqs(&txn, session_id, 1).await?;
        let now = now_ms();
        let mut update =
            message::Entity::update_many().col_expr(message::Column::UpdatedAt, Expr::value(now));
        for (column, value) in columns {
            update = update.col_expr(column, value);
        }
        update
            .filter(message::Column::Id.eq(row.id))
            .exec(&txn)
            .await?;
        let change = change_row(
            session_id,
            seq,
            kind,
            row.chat_id.clone(),
            Some(row.id),
            status,
            now,
        );
        change::Entity::insert(change)
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
        self.announce(session_id, seq);
        Ok(())
    }

    /// Reserves `n` seqs for `session_id` inside `txn`; returns the first one.
    async fn reserve_seqs(txn: &DatabaseTransaction, session_id: &str, n: u64) -> Result<u64> {
        let rows = session::Entity::update_many()
            .col_expr(
                session::Column::HeadSeq,
                Expr::col(session::Column::HeadSeq).add(n as i64),
            )
            .filter(session::Column::Id.eq(session_id))
            .exec_with_returning(txn)
            .await?;
        let head = rows
            .first()
            .ok_or_else(|| Error::NotFound(format!("session {session_id:?}")))?
            .head_seq as u64;
        Ok(head + 1 - n)
    }

    /// The chat, if stored.
    pub async fn find_chat(&self, session_id: &str, chat_id: &str) -> Result<Option<Chat>> {
        Ok(chat::Entity::find()
            .filter(chat::Column::SessionId.eq(session_id))
            .filter(chat::Column::ChatId.eq(chat_id))
            .one(&self.db)
            .await?
            .map(chat_from_row))
    }

    /// The provider message ids already stored for these chats, by chat id (chats with none
    /// are absent): what an import must skip. One query per 500 chats.
    pub async fn provider_ids(
        &self,
        session_id: &str,
        chat_ids: &[&str],
    ) -> Result<HashMap<String, HashSet<String>>> {
        let mut known: HashMap<String, HashSet<String>> = HashMap::new();
        // 500 ids a query keeps the statement far below any bound-variable limit.
        for ids in chat_ids.chunks(500) {
            let rows: Vec<(String, String)> = message::Entity::find()
                .select_only()
                .column(message::Column::ChatId)
                .column(message::Column::ProviderMessageId)
                .filter(message::Column::SessionId.eq(session_id))
                .filter(message::Column::ChatId.is_in(ids.iter().copied()))
                .into_tuple()
                .all(&self.db)
                .await?;
            for (chat_id, provider_message_id) in rows {
                known
                    .entry(chat_id)
                    .or_default()
                    .insert(provider_message_id);
            }
        }
        Ok(known)
    }

    /// Which of these provider ids are stored in the chat: one indexed query per 500 ids,
    /// reading only those rows (unlike [`Store::provider_ids`], which reads a whole chat's).
    pub async fn stored_provider_ids(
        &self,
        session_id: &str,
        chat_id: &str,
        provider_message_ids: &[&str],
    ) -> Result<HashSet<String>> {
        let mut stored = HashSet::new();
        for ids in provider_message_ids.chunks(500) {
            let rows: Vec<String> = message::Entity::find()
                .select_only()
                .column(message::Column::ProviderMessageId)
                .filter(message::Column::SessionId.eq(session_id))
                .filter(message::Column::ChatId.eq(chat_id))
                .filter(message::Column::ProviderMessageId.is_in(ids.iter().copied()))
                .into_tuple()
                .all(&self.db)
                .await?;
            stored.extend(rows);
        }
        Ok(stored)
    }

    /// Stores a batch of chats and their new messages in one transaction, in order: each chat
    /// that is new or renamed takes a seq (a `chat_updated` change), then its messages take
    /// consecutive seqs. The caller leaves out messages already stored
    /// ([`Store::provider_ids`]); a duplicate provider id fails the whole batch, which then
    /// stores nothing. Returns, per chat, the number of messages stored.
    ///
    /// Rows go in multi-row INSERTs of at most [`ROWS_PER_INSERT`] rows, so a batch of many
    /// small chats costs a handful of statements, not a few per chat.
    pub async fn import(&self, session_id: &str, chats: &[ImportChat<'_>]) -> Result<Vec<u64>> {
        let counts: Vec<u64> = chats.iter().map(|c| c.messages.len() as u64).collect();
        if chats.is_empty() {
            return Ok(counts);
        }
        let (txn, _writer) = self.begin_write().await?;
        let mut ids: Vec<&str> = chats.iter().map(|c| c.chat_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let stored: HashMap<String, String> = chat::Entity::find()
            .filter(chat::Column::SessionId.eq(session_id))
            .filter(chat::Column::ChatId.is_in(ids))
            .all(&txn)
            .await?
            .into_iter()
            .map(|row| (row.chat_id, row.name))
            .collect();

        // Plan: which chats change (new or renamed), in batch order.
        let clean_names: Vec<Cow<'_, str>> = chats.iter().map(|c| storable(c.name)).collect();
        let mut names: HashMap<&str, &str> = stored
            .iter()
            .map(|(id, name)| (id.as_str(), name.as_str()))
            .collect();
        let mut changes_chat = Vec::with_capacity(chats.len());
        for (chat, name) in chats.iter().zip(&clean_names) {
            let changed = names.get(chat.chat_id) != Some(&name.as_ref());
            if changed {
                names.insert(chat.chat_id, name);
            }
            changes_chat.push(changed);
        }
        let total = changes_chat.iter().filter(|c| **c).count() as u64 + counts.iter().sum::<u64>();
        if total == 0 {
            txn.rollback().await?;
            return Ok(counts);
        }

        let mut seq = Self::reserve_seqs(&txn, session_id, total).await?;
        let now = now_ms();
        let mut new_chats = Vec::new();
        let mut renamed = Vec::new();
        let mut change_rows = Vec::new();
        let mut message_rows: Vec<(&str, &NewMessage, u64)> = Vec::new();
        let mut inserted: HashSet<&str> = HashSet::new();
        for ((chat, changed), name) in chats.iter().zip(&changes_chat).zip(&clean_names) {
            if *changed {
                if stored.contains_key(chat.chat_id) || inserted.contains(chat.chat_id) {
                    renamed.push((chat.chat_id, name.as_ref(), seq));
                } else {
                    inserted.insert(chat.chat_id);
                    new_chats.push(chat::ActiveModel {
                        id: NotSet,
                        session_id: Set(session_id.to_owned()),
                        chat_id: Set(chat.chat_id.to_owned()),
                        name: Set(name.to_string()),
                        seq: Set(seq as i64),
                        created_at: Set(now),
                    });
                }
                change_rows.push(change_row(
                    session_id,
                    seq,
                    change::KIND_CHAT,
                    chat.chat_id.to_owned(),
                    None,
                    None,
                    now,
                ));
                seq += 1;
            }
            for message in chat.messages {
                message_rows.push((chat.chat_id, message, seq));
                seq += 1;
            }
        }
        // 6 and 7 columns: well under the bound-variable limit at ROWS_PER_INSERT rows.
        for rows in new_chats.chunks(ROWS_PER_INSERT) {
            chat::Entity::insert_many(rows.to_vec())
                .exec_without_returning(&txn)
                .await?;
        }
        for (chat_id, name, seq) in renamed {
            chat::Entity::update_many()
                .col_expr(chat::Column::Name, Expr::value(name))
                .col_expr(chat::Column::Seq, Expr::value(seq as i64))
                .filter(chat::Column::SessionId.eq(session_id))
                .filter(chat::Column::ChatId.eq(chat_id))
                .exec(&txn)
                .await?;
        }
        for rows in change_rows.chunks(ROWS_PER_INSERT) {
            change::Entity::insert_many(rows.to_vec())
                .exec_without_returning(&txn)
                .await?;
        }
        for rows in message_rows.chunks(ROWS_PER_INSERT) {
            txn.execute(&messages_insert(session_id, rows, now)).await?;
        }
        txn.commit().await?;
        self.announce(session_id, seq - 1);
        Ok(counts)
    }

    /// The message stored under this idempotency key, if any.
    pub async fn find_by_client_id(
        &self,
        session_id: &str,
        client_message_id: &str,
    ) -> Result<Option<Message>> {
        Ok(message::Entity::find()
            .filter(message::Column::SessionId.eq(session_id))
            .filter(message::Column::ClientMessageId.eq(client_message_id))
            .one(&self.db)
            .await?
            .map(message_from_row))
    }

    /// Stores one outgoing message. If the idempotency key is already taken (a concurrent
    /// retry), returns the stored message and `false`.
    pub async fn insert_outgoing(
        &self,
        session_id: &str,
        chat_id: &str,
        new: &NewMessage,
    ) -> Result<(Message, bool)> {
        let (txn, _writer) = self.begin_write().await?;
        if let Some(client_id) = &new.client_message_id {
            let existing = message::Entity::find()
                .filter(message::Column::SessionId.eq(session_id))
                .filter(message::Column::ClientMessageId.eq(client_id.as_str()))
                .one(&txn)
                .await?;
            if let Some(existing) = existing {
                txn.rollback().await?;
                return Ok((message_from_row(existing), false));
            }
        }
        let seq = Self::reserve_seqs(&txn, session_id, 1).await?;
        let row = message::Entity::insert(new_message_row(session_id, chat_id, new, seq, now_ms()))
            .exec_with_returning(&txn)
            .await?;
        txn.commit().await?;
        self.announce(session_id, seq);
        Ok((message_from_row(row), true))
    }

    /// Moves a message's status forward. A status that is not ahead of the stored one
    /// (see [`MessageStatus::advances_to`]) changes nothing and returns `false`. A change
    /// takes a seq and is logged as a `status_updated` event. `provider_message_id`, when
    /// given, replaces the stored one (a source's id assigned at send time).
    pub async fn update_status(
        &self,
        session_id: &str,
        reference: &MessageRef,
        status: MessageStatus,
        provider_message_id: Option<&str>,
    ) -> Result<(Message, bool)> {
        let (txn, _writer) = self.begin_write().await?;
        let Some(row) = message_query(session_id, reference).one(&txn).await? else {
            txn.rollback().await?;
            return Err(Error::NotFound(reference.to_string()));
        };
        let current = MessageStatus::from_i16(row.status);
        if !current.advances_to(status) {
            txn.rollback().await?;
            return Ok((message_from_row(row), false));
        }
        let mut columns = vec![(message::Column::Status, Expr::value(status.as_i16()))];
        if let Some(provider_id) = provider_message_id {
            columns.push((message::Column::ProviderMessageId, Expr::value(provider_id)));
        }
        let status_code = Some(status.as_i16());
        self.commit_message_change(
            txn,
            session_id,
            &row,
            change::KIND_STATUS,
            status_code,
            columns,
        )
        .await?;
        let mut message = message_from_row(row);
        message.status = status;
        if let Some(provider_id) = provider_message_id {
            message.provider_message_id = provider_id.to_owned();
        }
        Ok((message, true))
    }

    /// Settles the messages chatsync sent that these upstream messages echo: an incoming
    /// message whose `client_message_id` is stored already is the stored message coming back
    /// (Matrix `unsigned.transaction_id`). A PENDING or FAILED one becomes SENT (the echo
    /// proves it went out; a `status_updated` change) and takes the echo's provider id and
    /// time. Returns the idempotency keys that were found: those messages must not be stored
    /// again.
    pub async fn settle_echoes(
        &self,
        session_id: &str,
        messages: &[&NewMessage],
    ) -> Result<HashSet<String>> {
        let mut found = HashSet::new();
        for echo in messages {
            let Some(key) = echo.client_message_id.as_deref() else {
                continue;
            };
            let (txn, _writer) = self.begin_write().await?;
            let Some(row) = message::Entity::find()
                .filter(message::Column::SessionId.eq(session_id))
                .filter(message::Column::ClientMessageId.eq(key))
                .one(&txn)
                .await?
            else {
                txn.rollback().await?;
                continue;
            };
            found.insert(key.to_owned());
            let status = MessageStatus::from_i16(row.status);
            if !matches!(status, MessageStatus::Pending | MessageStatus::Failed) {
                txn.rollback().await?;
                continue;
            }
            let sent = MessageStatus::Sent.as_i16();
            let columns = vec![
                (message::Column::Status, Expr::value(sent)),
                (
                    message::Column::ProviderMessageId,
                    Expr::value(echo.provider_message_id.as_str()),
                ),
                (message::Column::SentAt, Expr::value(echo.sent_at_ms)),
            ];
            self.commit_message_change(
                txn,
                session_id,
                &row,
                change::KIND_STATUS,
                Some(sent),
                columns,
            )
            .await?;
        }
        Ok(found)
    }

    /// Whether a message with this provider id is stored in the chat.
    pub async fn has_message(
        &self,
        session_id: &str,
        chat_id: &str,
        provider_message_id: &str,
    ) -> Result<bool> {
        let reference = MessageRef::Provider {
            chat_id: chat_id.to_owned(),
            provider_message_id: provider_message_id.to_owned(),
        };
        Ok(message_query(session_id, &reference)
            .count(&self.db)
            .await?
            > 0)
    }

    /// Applies an upstream edit or deletion to a stored message: one seq, logged as a
    /// `message_updated` change. Returns the message as stored now, or `None` when it is not
    /// stored, or when nothing changes (the same text, a message already deleted, or an edit
    /// by someone other than the sender).
    pub async fn edit_message(
        &self,
        session_id: &str,
        reference: &MessageRef,
        edit: MessageEdit<'_>,
    ) -> Result<Option<Message>> {
        let (txn, _writer) = self.begin_write().await?;
        let Some(row) = message_query(session_id, reference).one(&txn).await? else {
            txn.rollback().await?;
            return Ok(None);
        };
        let (text, kind) = match edit {
            MessageEdit::Text { editor, .. } if editor != row.sender => {
                txn.rollback().await?;
                return Ok(None);
            }
            MessageEdit::Text { text, .. } => (storable(text), MessageKind::from_i16(row.kind)),
            MessageEdit::Deleted => (Cow::Borrowed(""), MessageKind::Deleted),
        };
        let deleted = row.kind == MessageKind::Deleted.as_i16();
        if deleted || (row.text == text.as_ref() && row.kind == kind.as_i16()) {
            txn.rollback().await?;
            return Ok(None);
        }
        let columns = vec![
            (message::Column::Text, Expr::value(text.as_ref())),
            (message::Column::Kind, Expr::value(kind.as_i16())),
        ];
        self.commit_message_change(txn, session_id, &row, change::KIND_MESSAGE, None, columns)
            .await?;
        let mut message = message_from_row(row);
        message.text = text.into_owned();
        message.kind = kind;
        Ok(Some(message))
    }

    /// A read receipt up to a message: every message of the session's own account in that
    /// chat sent at or before it (by `sent_at`, the upstream's timeline time), whose status is
    /// SENT or DELIVERED, becomes READ, each change taking a seq. When the message is not
    /// stored (a receipt on an event that is not a message, such as an edit or a reaction),
    /// `read_at_ms` (Unix ms) is the bound instead. Returns how many changed.
    pub async fn mark_read_up_to(
        &self,
        session_id: &str,
        reference: &MessageRef,
        read_at_ms: Option<i64>,
    ) -> Result<u64> {
        let (txn, _writer) = self.begin_write().await?;
        let (chat_id, up_to) = match message_query(session_id, reference).one(&txn).await? {
            Some(target) => (target.chat_id, target.sent_at),
            None => match (reference, read_at_ms) {
                (MessageRef::Provider { chat_id, .. }, Some(at)) => (chat_id.clone(), at),
                _ => {
                    txn.rollback().await?;
                    return Ok(0);
                }
            },
        };
        let ahead: Vec<i16> = [MessageStatus::Sent, MessageStatus::Delivered]
            .iter()
            .map(|s| s.as_i16())
            .collect();
        let rows: Vec<(i64, String)> = message::Entity::find()
            .select_only()
            .column(message::Column::Id)
            .column(message::Column::ChatId)
            .filter(message::Column::SessionId.eq(session_id))
            .filter(message::Column::ChatId.eq(chat_id.as_str()))
            .filter(message::Column::FromMe.eq(true))
            .filter(message::Column::SentAt.lte(up_to))
            .filter(message::Column::Status.is_in(ahead))
            .order_by_asc(message::Column::Seq)
            .into_tuple()
            .all(&txn)
            .await?;
        if rows.is_empty() {
            txn.rollback().await?;
            return Ok(0);
        }
        let first = Self::reserve_seqs(&txn, session_id, rows.len() as u64).await?;
        let now = now_ms();
        let read = MessageStatus::Read.as_i16();
        let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
        for chunk in ids.chunks(ROWS_PER_INSERT) {
            message::Entity::update_many()
                .col_expr(message::Column::Status, Expr::value(read))
                .col_expr(message::Column::UpdatedAt, Expr::value(now))
                .filter(message::Column::Id.is_in(chunk.iter().copied()))
                .exec(&txn)
                .await?;
        }
        let changes: Vec<change::ActiveModel> = rows
            .into_iter()
            .enumerate()
            .map(|(i, (id, chat_id))| {
                let seq = first + i as u64;
                change_row(
                    session_id,
                    seq,
                    change::KIND_STATUS,
                    chat_id,
                    Some(id),
                    Some(read),
                    now,
                )
            })
            .collect();
        let changed = changes.len() as u64;
        for chunk in changes.chunks(ROWS_PER_INSERT) {
            change::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        self.announce(session_id, first + changed - 1);
        Ok(changed)
    }

    /// The live source's saved cursor, if any.
    pub async fn source_cursor(&self, session_id: &str) -> Result<Option<String>> {
        Ok(session::Entity::find_by_id(session_id)
            .one(&self.db)
            .await?
            .ok_or_else(|| Error::NotFound(format!("session {session_id:?}")))?
            .source_cursor)
    }

    /// Saves the live source's cursor (after the events it covers are stored).
    pub async fn save_source_cursor(&self, session_id: &str, cursor: &str) -> Result<()> {
        let (txn, _writer) = self.begin_write().await?;
        session::Entity::update_many()
            .col_expr(session::Column::SourceCursor, Expr::value(cursor))
            .filter(session::Column::Id.eq(session_id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Chats with `seq > after_seq`, in seq order, at most `limit`.
    pub async fn list_chats(
        &self,
        session_id: &str,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<Chat>> {
        Ok(chat::Entity::find()
            .filter(chat::Column::SessionId.eq(session_id))
            .filter(chat::Column::Seq.gt(after_seq as i64))
            .order_by_asc(chat::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(chat_from_row)
            .collect())
    }

    /// Messages with `after_seq < seq < before_seq` (`None`: no upper bound), optionally of
    /// one chat, returned in ascending seq order. At most `limit`: the oldest of the range
    /// with [`Take::Oldest`] (paging forwards), the newest with [`Take::Newest`] (paging
    /// backwards).
    pub async fn list_messages(
        &self,
        session_id: &str,
        chat_id: Option<&str>,
        after_seq: u64,
        before_seq: Option<u64>,
        take: Take,
        limit: u64,
    ) -> Result<Vec<Message>> {
        let seq = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        let mut query = message::Entity::find()
            .filter(message::Column::SessionId.eq(session_id))
            .filter(message::Column::Seq.gt(seq(after_seq)));
        if let Some(before_seq) = before_seq {
            query = query.filter(message::Column::Seq.lt(seq(before_seq)));
        }
        if let Some(chat_id) = chat_id {
            query = query.filter(message::Column::ChatId.eq(chat_id));
        }
        query = match take {
            Take::Oldest => query.order_by_asc(message::Column::Seq),
            Take::Newest => query.order_by_desc(message::Column::Seq),
        };
        let mut messages: Vec<Message> = query
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(message_from_row)
            .collect();
        if take == Take::Newest {
            messages.reverse();
        }
        Ok(messages)
    }

    /// The changes with `after_seq < seq <= up_to`, in seq order, at most about `limit`,
    /// optionally only of some chats. Returns them with the seq the read reached: every
    /// change up to that seq has been returned (or filtered out), so the next read starts
    /// there. It equals `up_to` when nothing is left.
    pub async fn changes(
        &self,
        session_id: &str,
        chat_ids: &[String],
        after_seq: u64,
        up_to: u64,
        limit: u64,
    ) -> Result<(Vec<Change>, u64)> {
        if up_to <= after_seq {
            return Ok((Vec::new(), after_seq));
        }
        let mut created = message::Entity::find()
            .filter(message::Column::SessionId.eq(session_id))
            .filter(message::Column::Seq.gt(after_seq as i64))
            .filter(message::Column::Seq.lte(up_to as i64));
        let mut logged = change::Entity::find()
            .filter(change::Column::SessionId.eq(session_id))
            .filter(change::Column::Seq.gt(after_seq as i64))
            .filter(change::Column::Seq.lte(up_to as i64));
        if !chat_ids.is_empty() {
            created = created.filter(message::Column::ChatId.is_in(chat_ids.iter().cloned()));
            logged = logged.filter(change::Column::ChatId.is_in(chat_ids.iter().cloned()));
        }
        let created = created
            .order_by_asc(message::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?;
        let logged = logged
            .order_by_asc(change::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?;
        // A full page may have more rows behind it: only changes up to the smaller page end
        // are known to be complete.
        let mut reached = up_to;
        if created.len() as u64 == limit
            && let Some(last) = created.last()
        {
            reached = std::cmp::Ord::min(reached, last.seq as u64);
        }
        if logged.len() as u64 == limit
            && let Some(last) = logged.last()
        {
            reached = std::cmp::Ord::min(reached, last.seq as u64);
        }

        let status_message_ids: Vec<i64> = logged
            .iter()
            .filter(|row| row.kind == change::KIND_STATUS)
            .filter_map(|row| row.message_id)
            .collect();
        let updated_ids: Vec<i64> = logged
            .iter()
            .filter(|row| row.kind == change::KIND_MESSAGE)
            .filter_map(|row| row.message_id)
            .collect();
        // A message update carries the message as stored now.
        let updated: HashMap<i64, Message> = if updated_ids.is_empty() {
            HashMap::new()
        } else {
            message::Entity::find()
                .filter(message::Column::Id.is_in(updated_ids))
                .all(&self.db)
                .await?
                .into_iter()
                .map(|row| (row.id, message_from_row(row)))
                .collect()
        };
        let provider_ids: HashMap<i64, String> = if status_message_ids.is_empty() {
            HashMap::new()
        } else {
            message::Entity::find()
                .select_only()
                .column(message::Column::Id)
                .column(message::Column::ProviderMessageId)
                .filter(message::Column::Id.is_in(status_message_ids))
                .into_tuple::<(i64, String)>()
                .all(&self.db)
                .await?
                .into_iter()
                .collect()
        };
        let chat_ids_changed: Vec<String> = logged
            .iter()
            .filter(|row| row.kind == change::KIND_CHAT)
            .map(|row| row.chat_id.clone())
            .collect();
        let chat_names: HashMap<String, String> = if chat_ids_changed.is_empty() {
            HashMap::new()
        } else {
            chat::Entity::find()
                .filter(chat::Column::SessionId.eq(session_id))
                .filter(chat::Column::ChatId.is_in(chat_ids_changed))
                .all(&self.db)
                .await?
                .into_iter()
                .map(|row| (row.chat_id, row.name))
                .collect()
        };

        let mut changes: Vec<Change> = created
            .into_iter()
            .filter(|row| row.seq as u64 <= reached)
            .map(|row| Change::MessageCreated(message_from_row(row)))
            .collect();
        for row in logged.into_iter().filter(|row| row.seq as u64 <= reached) {
            let seq = row.seq as u64;
            let change = match row.kind {
                change::KIND_STATUS => Change::StatusUpdated(StatusUpdate {
                    seq,
                    message_id: row.message_id.unwrap_or_default(),
                    provider_message_id: row
                        .message_id
                        .and_then(|id| provider_ids.get(&id).cloned())
                        .unwrap_or_default(),
                    chat_id: row.chat_id,
                    status: MessageStatus::from_i16(row.status.unwrap_or_default()),
                    updated_at_ms: row.at,
                }),
                change::KIND_MESSAGE => {
                    let Some(message) = row.message_id.and_then(|id| updated.get(&id)) else {
                        continue;
                    };
                    Change::MessageUpdated {
                        seq,
                        message: message.clone(),
                    }
                }
                _ => Change::ChatUpdated(Chat {
                    name: chat_names.get(&row.chat_id).cloned().unwrap_or_default(),
                    chat_id: row.chat_id,
                    seq,
                }),
            };
            changes.push(change);
        }
        changes.sort_by_key(Change::seq);
        Ok((changes, reached))
    }
}

/// Text as storage writes it: PostgreSQL text cannot hold NUL, and a NUL from a source is never
/// meant, so it becomes U+FFFD on every backend alike.
fn storable(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// One row of the change log.
fn change_row(
    session_id: &str,
    seq: u64,
    kind: i16,
    chat_id: String,
    message_id: Option<i64>,
    status: Option<i16>,
    at: i64,
) -> change::ActiveModel {
    change::ActiveModel {
        session_id: Set(session_id.to_owned()),
        seq: Set(seq as i64),
        kind: Set(kind),
        chat_id: Set(chat_id),
        message_id: Set(message_id),
        status: Set(status),
        at: Set(at),
    }
}

fn message_query(session_id: &str, reference: &MessageRef) -> sea_orm::Select<message::Entity> {
    let query = message::Entity::find().filter(message::Column::SessionId.eq(session_id));
    match reference {
        MessageRef::Id(id) => query.filter(message::Column::Id.eq(*id)),
        MessageRef::Provider {
            chat_id,
            provider_message_id,
        } => query
            .filter(message::Column::ChatId.eq(chat_id.as_str()))
            .filter(message::Column::ProviderMessageId.eq(provider_message_id.as_str())),
    }
}

fn new_message_row(
    session_id: &str,
    chat_id: &str,
    new: &NewMessage,
    seq: u64,
    now: i64,
) -> message::ActiveModel {
    message::ActiveModel {
        id: NotSet,
        session_id: Set(session_id.to_owned()),
        chat_id: Set(chat_id.to_owned()),
        provider_message_id: Set(new.provider_message_id.clone()),
        client_message_id: Set(new.client_message_id.clone()),
        sender: Set(new.sender.clone()),
        text: Set(new.text.clone()),
        kind: Set(new.kind.as_i16()),
        status: Set(new.status.as_i16()),
        from_me: Set(new.from_me),
        sent_at: Set(new.sent_at_ms),
        seq: Set(seq as i64),
        updated_at: Set(now),
    }
}

/// One multi-row INSERT of `messages` (at most [`ROWS_PER_INSERT`] rows), the i-th row taking
/// seq `first_seq + i`. Built with sea-query directly: the same columns and values as
/// [`new_message_row`], without going through an `ActiveModel` per row.
fn messages_insert(
    session_id: &str,
    rows: &[(&str, &NewMessage, u64)],
    now: i64,
) -> InsertStatement {
    debug_assert!(rows.len() <= ROWS_PER_INSERT);
    let mut insert = Query::insert();
    insert.into_table(message::Entity).columns([
        message::Column::SessionId,
        message::Column::ChatId,
        message::Column::ProviderMessageId,
        message::Column::ClientMessageId,
        message::Column::Sender,
        message::Column::Text,
        message::Column::Kind,
        message::Column::Status,
        message::Column::FromMe,
        message::Column::SentAt,
        message::Column::Seq,
        message::Column::UpdatedAt,
    ]);
    for (chat_id, new, seq) in rows {
        insert.values_panic([
            Expr::value(session_id),
            Expr::value(*chat_id),
            Expr::value(new.provider_message_id.as_str()),
            Expr::value(new.client_message_id.clone()),
            Expr::value(storable(&new.sender).as_ref()),
            Expr::value(storable(&new.text).as_ref()),
            Expr::value(new.kind.as_i16()),
            Expr::value(new.status.as_i16()),
            Expr::value(new.from_me),
            Expr::value(new.sent_at_ms),
            Expr::value(*seq as i64),
            Expr::value(now),
        ]);
    }
    insert
}

fn message_from_row(row: message::Model) -> Message {
    Message {
        id: row.id,
        session_id: row.session_id,
        chat_id: row.chat_id,
        provider_message_id: row.provider_message_id,
        client_message_id: row.client_message_id,
        sender: row.sender,
        text: row.text,
        kind: MessageKind::from_i16(row.kind),
        status: MessageStatus::from_i16(row.status),
        from_me: row.from_me,
        sent_at_ms: row.sent_at,
        seq: row.seq as u64,
    }
}

fn chat_from_row(row: chat::Model) -> Chat {
    Chat {
        chat_id: row.chat_id,
        name: row.name,
        seq: row.seq as u64,
    }
}

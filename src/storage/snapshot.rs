//! Snapshots: a session's chats, newest first, each with its last messages and unread count,
//! all read in ONE read transaction so that they are consistent at the head seq read first.
//!
//! On PostgreSQL the transaction is `REPEATABLE READ, READ ONLY` (one MVCC snapshot for every
//! statement); on SQLite a deferred transaction on one connection reads one WAL snapshot from
//! its first SELECT on. The head seq is that first read, so every row with a seq up to it is
//! visible, none after it (committed seqs form a prefix, see [`super::write`]), and statuses
//! are as of the head. [`Snapshot`] holds the transaction while the caller streams it chat by
//! chat, so only the chat list (ids, names, unread counts) is in memory at once.
use std::collections::HashMap;

use sea_orm::{
    AccessMode, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    IsolationLevel, QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
};

use super::Store;
use super::entities::message;
use super::rows::message_from_row;
use crate::error::{Error, Result};
use crate::model::{Chat, Message, MessageKind, MessageStatus};

/// One chat of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChat {
    pub chat: Chat,
    /// The chat's newest messages within the window, oldest first (ascending seq).
    pub messages: Vec<Message>,
    /// Older messages within the window exist beyond `messages`.
    pub has_more: bool,
    /// Incoming, non-system messages below READ sent after the newest incoming READ one.
    pub unread: u64,
}

/// An open snapshot of a session: a read transaction and the chats still to read, in order.
pub struct Snapshot {
    txn: DatabaseTransaction,
    session_id: String,
    head_seq: u64,
    n_chats: usize,
    chats: std::vec::IntoIter<Chat>,
    unread: HashMap<String, u64>,
    since_ms: Option<i64>,
}

/// How long a PostgreSQL snapshot transaction may sit idle before the server ends it: longer
/// than the service's stall limit (`service::SNAPSHOT_STALL`, 30 s), so only a replica that
/// stopped (paused, cut off) loses it.
const SNAPSHOT_IDLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

impl Store {
    /// Opens a snapshot of `session_id` (only `chat_ids`, when not empty) whose messages are
    /// those sent at or after `since_ms`, when given. Reads the head seq, the chat list in
    /// snapshot order (the `sent_at` of each chat's newest message, newest first; chats
    /// without messages last; ties by chat seq, newest first) and the unread counts.
    ///
    /// Errors: `NotFound` for an unknown session or a named chat that is not stored;
    /// `Storage` on a database failure.
    pub async fn snapshot(
        &self,
        session_id: &str,
        chat_ids: &[String],
        since_ms: Option<i64>,
    ) -> Result<Snapshot> {
        let backend = self.db.get_database_backend();
        let txn = if backend == DbBackend::Postgres {
            let txn = self
                .db
                .begin_with_config(
                    Some(IsolationLevel::RepeatableRead),
                    Some(AccessMode::ReadOnly),
                )
                .await?;
            // A snapshot's read transaction waits on its client between frames (the service
            // ends it after a 30 s stall), longer than the connection's idle limit of one
            // lease; it takes no lock a writer waits for.
            txn.execute_unprepared(&format!(
                "SET LOCAL idle_in_transaction_session_timeout = {}",
                SNAPSHOT_IDLE_LIMIT.as_millis()
            ))
            .await?;
            txn
        } else {
            // Deferred: the WAL snapshot is taken by the first read, the head.
            self.db.begin().await?
        };
        let statement = |sql: &str, values: Vec<sea_orm::Value>| {
            Statement::from_sql_and_values(backend, sql, values)
        };
        let head_seq = txn
            .query_one_raw(statement(
                "SELECT head_seq FROM sessions WHERE id = $1",
                vec![session_id.into()],
            ))
            .await?
            .ok_or_else(|| Error::NotFound(format!("session {session_id:?}")))?
            .try_get::<i64>("", "head_seq")? as u64;

        let rows = txn
            .query_all_raw(statement(
                "SELECT c.chat_id, c.name, c.seq FROM chats c \
                 LEFT JOIN (SELECT chat_id, MAX(sent_at) AS last_at FROM messages \
                 WHERE session_id = $1 GROUP BY chat_id) l ON l.chat_id = c.chat_id \
                 WHERE c.session_id = $1 \
                 ORDER BY CASE WHEN l.last_at IS NULL THEN 1 ELSE 0 END, l.last_at DESC, \
                 c.seq DESC, c.chat_id",
                vec![session_id.into()],
            ))
            .await?;
        let mut chats = Vec::with_capacity(rows.len());
        for row in rows {
            chats.push(Chat {
                chat_id: row.try_get("", "chat_id")?,
                name: row.try_get("", "name")?,
                seq: row.try_get::<i64>("", "seq")? as u64,
            });
        }
        if !chat_ids.is_empty() {
            let known: std::collections::HashSet<&str> =
                chats.iter().map(|chat| chat.chat_id.as_str()).collect();
            if let Some(missing) = chat_ids.iter().find(|id| !known.contains(id.as_str())) {
                return Err(Error::NotFound(format!("chat {missing:?}")));
            }
            chats.retain(|chat| chat_ids.contains(&chat.chat_id));
        }

        let rows = txn
            .query_all_raw(statement(
                "SELECT m.chat_id, COUNT(*) AS unread FROM messages m \
                 LEFT JOIN (SELECT chat_id, MAX(sent_at) AS read_at FROM messages \
                 WHERE session_id = $1 AND from_me = $2 AND status = $3 GROUP BY chat_id) r \
                 ON r.chat_id = m.chat_id \
                 WHERE m.session_id = $1 AND m.from_me = $2 AND m.kind <> $4 \
                 AND m.status IN ($5, $6, $7) AND (r.read_at IS NULL OR m.sent_at > r.read_at) \
                 GROUP BY m.chat_id",
                vec![
                    session_id.into(),
                    false.into(),
                    MessageStatus::Read.as_i16().into(),
                    MessageKind::System.as_i16().into(),
                    MessageStatus::Pending.as_i16().into(),
                    MessageStatus::Sent.as_i16().into(),
                    MessageStatus::Delivered.as_i16().into(),
                ],
            ))
            .await?;
        let mut unread = HashMap::with_capacity(rows.len());
        for row in rows {
            let chat_id: String = row.try_get("", "chat_id")?;
            let count: i64 = row.try_get("", "unread")?;
            unread.insert(chat_id, count as u64);
        }
        Ok(Snapshot {
            txn,
            session_id: session_id.to_owned(),
            head_seq,
            n_chats: chats.len(),
            chats: chats.into_iter(),
            unread,
            since_ms,
        })
    }
}

impl Snapshot {
    /// The head seq the snapshot is consistent at.
    pub fn head_seq(&self) -> u64 {
        self.head_seq
    }

    /// How many chats the snapshot has in all.
    pub fn n_chats(&self) -> usize {
        self.n_chats
    }

    /// The next chat with its newest `limit` messages within the window (`has_more` says
    /// whether older ones exist), or `None` after the last chat.
    ///
    /// Errors: `Storage` on a database failure.
    pub async fn next_chat(&mut self, limit: u64) -> Result<Option<SnapshotChat>> {
        let Some(chat) = self.chats.next() else {
            return Ok(None);
        };
        let (messages, has_more) = if limit == 0 {
            (Vec::new(), false)
        } else {
            let mut query = message::Entity::find()
                .filter(message::Column::SessionId.eq(self.session_id.as_str()))
                .filter(message::Column::ChatId.eq(chat.chat_id.as_str()));
            if let Some(since_ms) = self.since_ms {
                query = query.filter(message::Column::SentAt.gte(since_ms));
            }
            // Newest by when they were sent, as the chats are ordered: seq is the order of
            // storing, and history backfilled after live messages takes higher seqs.
            let mut messages: Vec<Message> = query
                .order_by_desc(message::Column::SentAt)
                .order_by_desc(message::Column::Seq)
                .limit(limit + 1)
                .all(&self.txn)
                .await?
                .into_iter()
                .map(message_from_row)
                .collect();
            let has_more = messages.len() as u64 > limit;
            messages.truncate(limit as usize);
            messages.reverse();
            super::lifecycle::fill(&self.txn, &mut messages).await?;
            (messages, has_more)
        };
        let unread = self.unread.get(&chat.chat_id).copied().unwrap_or(0);
        Ok(Some(SnapshotChat {
            chat,
            messages,
            has_more,
            unread,
        }))
    }

    /// Ends the read transaction.
    ///
    /// Errors: `Storage` on a database failure.
    pub async fn close(self) -> Result<()> {
        self.txn.commit().await?;
        Ok(())
    }
}

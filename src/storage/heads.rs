//! Head announcements: per session, a watch channel carrying the committed head seq.
//!
//! A committing [`super::WriteTxn`] announces its new head here, in process
//! ([`Heads::committed`]). On PostgreSQL the head also goes to this process's outbox, whose
//! task sends `NOTIFY chatsync_heads, '<session_id> <head_seq>'` after the commit, without the
//! writer waiting for it (the latest head of each session, all waiting sessions in one
//! statement), and every process runs one listener (sqlx `PgListener`) that announces what it
//! hears. A notification only wakes: subscribers read `seq > cursor` from the tables. A
//! notification can be lost: the listening connection drops (the listener reconnects and
//! re-reads every watched session's head), or a replica dies between its commit and its
//! NOTIFY, or the NOTIFY fails (every process re-reads its watched heads every
//! [`HEAD_REREAD_INTERVAL`]). Either way a lost notification costs latency, never an event.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::sqlx;
use sea_orm::sqlx::postgres::PgListener;
use sea_orm::{DatabaseConnection, EntityTrait, QuerySelect};
use tokio::sync::watch;

use super::entities::session;

/// The PostgreSQL channel that carries `'<session_id> <head_seq>'` on every commit.
pub const HEADS_CHANNEL: &str = "chatsync_heads";

/// How often each process re-reads the heads of the sessions it watches (PostgreSQL): the
/// longest a subscriber waits for a commit whose NOTIFY was never sent. One query per
/// process per interval, over all its watched sessions.
pub const HEAD_REREAD_INTERVAL: Duration = Duration::from_secs(1);

/// The sessions' head-seq watch channels.
#[derive(Clone, Default)]
pub struct Heads {
    senders: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
    /// Per session, a counter bumped whenever its sync-run state is saved (on PostgreSQL,
    /// by any replica: `chatsync_runs`).
    runs: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
    /// The heads committed here and not yet sent to the cluster (PostgreSQL only).
    outbox: Option<Arc<Outbox>>,
}

/// Per session, the latest head committed by this process that its NOTIFY task has not sent
/// yet; `ready` wakes the task (a permit is kept when it is busy, so no wake-up is lost).
#[derive(Default)]
struct Outbox {
    pending: Mutex<HashMap<String, u64>>,
    ready: tokio::sync::Notify,
}

impl Heads {
    /// The heads of a PostgreSQL store: starts this process's listener on `chatsync_heads` and
    /// `chatsync_runs`, its re-read of the watched heads every [`HEAD_REREAD_INTERVAL`], and
    /// the task that sends this process's commits' NOTIFYs. They run until the runtime ends.
    pub fn listening(db: DatabaseConnection) -> Self {
        let heads = Heads {
            outbox: Some(Arc::default()),
            ..Heads::default()
        };
        spawn_listener(db.clone(), heads.clone());
        if let Some(outbox) = heads.outbox.clone() {
            tokio::spawn(send_notifications(db, outbox));
        }
        heads
    }

    /// A commit of this process moved the session's head to `head`: announces it here and,
    /// on PostgreSQL, queues its NOTIFY (sent by another task: the caller does not wait).
    pub fn committed(&self, session_id: &str, head: u64) {
        self.announce(session_id, head);
        if let Some(outbox) = &self.outbox {
            let mut pending = outbox
                .pending
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            advance(pending.entry(session_id.to_owned()).or_default(), head);
            drop(pending);
            outbox.ready.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        // A poisoned lock only means another thread panicked while holding a plain map.
        self.senders
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// A receiver of the session's channel, if it has one.
    pub fn subscribe(&self, session_id: &str) -> Option<watch::Receiver<u64>> {
        self.lock().get(session_id).map(watch::Sender::subscribe)
    }

    /// A receiver of the session's channel, creating it at `head` when missing.
    pub fn subscribe_from(&self, session_id: &str, head: u64) -> watch::Receiver<u64> {
        let mut senders = self.lock();
        let sender = senders
            .entry(session_id.to_owned())
            .or_insert_with(|| watch::channel(head).0);
        // Created meanwhile from an older read: only ever move forward.
        sender.send_if_modified(|current| advance(current, head));
        sender.subscribe()
    }

    /// Moves the session's head forward to `head` (never back). Sessions nobody watches are
    /// ignored: a later subscriber starts from the stored head.
    pub fn announce(&self, session_id: &str, head: u64) {
        if let Some(sender) = self.lock().get(session_id) {
            sender.send_if_modified(|current| advance(current, head));
        }
    }

    /// The sessions somebody watches.
    fn watched(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock_runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        self.runs
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// A receiver that changes whenever the session's sync-run state is saved.
    pub fn subscribe_runs(&self, session_id: &str) -> watch::Receiver<u64> {
        self.lock_runs()
            .entry(session_id.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wakes the followers of the session's sync run.
    pub fn run_changed(&self, session_id: &str) {
        if let Some(sender) = self.lock_runs().get(session_id) {
            sender.send_modify(|count| *count += 1);
        }
    }

    /// Wakes every follower of a sync run (after a lost connection).
    fn all_runs_changed(&self) {
        for sender in self.lock_runs().values() {
            sender.send_modify(|count| *count += 1);
        }
    }
}

fn advance(current: &mut u64, head: u64) -> bool {
    if head > *current {
        *current = head;
        true
    } else {
        false
    }
}

/// Parses a `chatsync_heads` payload, `'<session_id> <head_seq>'`.
pub fn parse_payload(payload: &str) -> Option<(&str, u64)> {
    let (session_id, head) = payload.rsplit_once(' ')?;
    Some((session_id, head.parse().ok()?))
}

/// Sends the outbox's heads, as they come, each batch in one statement: `SELECT
/// pg_notify('chatsync_heads', payload) FROM unnest($1::text[])`, outside any write
/// transaction. PostgreSQL queues a transaction's notifications under one server-wide lock held
/// through its commit: sent inside the writes' transactions, they made every session's commits
/// wait on each other (pgbench, 30 clients on 30 sessions: 370 commits/s with the NOTIFY
/// inside, 1,170 after; BENCHMARKS.md). A batch that fails is logged and dropped: replicas
/// see those commits at their next head re-read.
async fn send_notifications(db: DatabaseConnection, outbox: Arc<Outbox>) {
    let pool = db.get_postgres_connection_pool();
    loop {
        outbox.ready.notified().await;
        let payloads: Vec<String> = std::mem::take(
            &mut *outbox
                .pending
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()),
        )
        .into_iter()
        .map(|(session_id, head)| format!("{session_id} {head}"))
        .collect();
        if payloads.is_empty() {
            continue;
        }
        if let Err(error) =
            sqlx::query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload")
                .bind(HEADS_CHANNEL)
                .bind(&payloads)
                .execute(pool)
                .await
        {
            tracing::warn!(%error, sessions = payloads.len(), "the heads NOTIFY failed; replicas see these commits at their next head re-read");
        }
    }
}

/// Starts the PostgreSQL listener of this process, and its re-read of the watched heads every
/// [`HEAD_REREAD_INTERVAL`]. Both run until the runtime ends.
fn spawn_listener(db: DatabaseConnection, heads: Heads) {
    {
        let (db, heads) = (db.clone(), heads.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEAD_REREAD_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                reread_heads(&db, &heads).await;
            }
        });
    }
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match listen(&db, &heads).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(error) => {
                    tracing::warn!(%error, retry_ms = backoff.as_millis() as u64, "head listener lost its connection");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
}

/// Listens until the connection fails for good. Every (re)connection is followed by a
/// re-read of the watched heads, so nothing committed while not listening is missed.
async fn listen(db: &DatabaseConnection, heads: &Heads) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(db.get_postgres_connection_pool()).await?;
    listener
        .listen_all([HEADS_CHANNEL, super::sessions::RUNS_CHANNEL])
        .await?;
    reread(db, heads).await;
    loop {
        // `None`: the connection dropped and was re-established (and re-listened).
        match listener.try_recv().await? {
            Some(notification) if notification.channel() == HEADS_CHANNEL => {
                if let Some((session_id, head)) = parse_payload(notification.payload()) {
                    heads.announce(session_id, head);
                }
            }
            Some(notification) => heads.run_changed(notification.payload()),
            None => {
                tracing::info!("head listener reconnected; re-reading heads");
                reread(db, heads).await;
            }
        }
    }
}

/// Announces every watched session's stored head, and wakes every sync-run follower.
async fn reread(db: &DatabaseConnection, heads: &Heads) {
    heads.all_runs_changed();
    reread_heads(db, heads).await;
}

/// Announces every watched session's stored head.
async fn reread_heads(db: &DatabaseConnection, heads: &Heads) {
    let watched = heads.watched();
    if watched.is_empty() {
        return;
    }
    use sea_orm::{ColumnTrait, QueryFilter};
    let rows: Result<Vec<(String, i64)>, _> = session::Entity::find()
        .select_only()
        .column(session::Column::Id)
        .column(session::Column::HeadSeq)
        .filter(session::Column::Id.is_in(watched))
        .into_tuple()
        .all(db)
        .await;
    match rows {
        Ok(rows) => {
            for (session_id, head) in rows {
                heads.announce(&session_id, head as u64);
            }
        }
        Err(error) => tracing::warn!(%error, "cannot re-read the heads"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_with_spaces_in_the_session_id() {
        assert_eq!(parse_payload("demo 42"), Some(("demo", 42)));
        assert_eq!(parse_payload("my session 7"), Some(("my session", 7)));
        assert_eq!(parse_payload("demo x"), None);
        assert_eq!(parse_payload("demo"), None);
    }

    #[test]
    fn heads_only_move_forward() {
        let heads = Heads::default();
        let receiver = heads.subscribe_from("s", 5);
        heads.announce("s", 3);
        assert_eq!(*receiver.borrow(), 5);
        heads.announce("s", 9);
        assert_eq!(*receiver.borrow(), 9);
        let again = heads.subscribe_from("s", 4);
        assert_eq!(*again.borrow(), 9);
    }
}

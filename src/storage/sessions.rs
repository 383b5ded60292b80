//! Session rows: the sync-run state, the live source's cursor, counts, and leases.
//!
//! A **lease** (`leases` table) names the replica that holds a session's sync run
//! ([`LeaseKind::Sync`]) or live-source loop ([`LeaseKind::Live`]) until an expiry time; the
//! holder renews it by heartbeat, and any replica may take an expired one. Every lease change
//! runs in a [`super::WriteTxn`], under the session's lock, so two replicas never both win.
//! Expiry is judged by the clock of the replica that reads it, so replicas' clocks must agree
//! to well within the lease time (NTP does).
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, Statement,
    TransactionTrait,
};

use super::Store;
use super::entities::{change, chat, lease, message, session};
use crate::error::{Error, Result};
use crate::model::{SyncState, now_ms};

/// The PostgreSQL channel that carries a session id whenever its sync-run state is saved.
pub const RUNS_CHANNEL: &str = "chatsync_runs";

impl SyncState {
    /// The state stored as `value` (`sessions.sync_state`, `changes.status` of a run end).
    pub(super) fn from_i16(value: i16) -> Self {
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

/// What a lease is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseKind {
    /// The session's one sync run in the cluster.
    Sync,
    /// The session's one live-source loop in the cluster (the Matrix `/sync` loop).
    Live,
    /// The session's one webhook deliverer of an endpoint in the cluster: the lease's kind,
    /// `webhook:<endpoint id>` (see `service::webhooks`).
    Webhook(&'static str),
}

impl LeaseKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Live => "live",
            Self::Webhook(kind) => kind,
        }
    }
}

/// The outcome of [`Store::claim_sync_run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunClaim {
    /// This replica now holds the run's lease, under this fence; the run is persisted as
    /// RUNNING.
    Started(Fence),
    /// Another replica holds a live run with this id.
    Running { sync_id: String },
}

/// A lease as its holder took it: the fencing token that every write made as the holder
/// carries (see [`Store::fenced`]). The lease row's epoch grows by one for each new holder,
/// so a (holder, epoch) pair names one tenure: after another replica took over, or after the
/// lease lapsed, the former holder's fence never matches again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub kind: LeaseKind,
    /// The holding replica's id.
    pub holder: String,
    pub epoch: i64,
}

/// Why a run that stopped holding its lease is INTERRUPTED.
pub const LEASE_EXPIRED: &str = "the replica running the sync run stopped (its lease expired)";

/// The holder of the sync lease of a run that a source pushes in chunks (the WhatsApp Cloud
/// API's `history` webhooks, see `service::sync::pushed`): no replica runs it, so no replica's
/// start-up interrupts it while its lease holds.
pub const PUSHED_RUN_HOLDER: &str = "pushed-run";

/// Why a pushed run whose lease lapsed is INTERRUPTED.
pub const PUSHED_RUN_IDLE_EXPIRED: &str =
    "no chunk of the pushed history came within its lease; a later chunk starts a new run";

impl Store {
    /// Creates the session row if missing and records its source kind.
    pub async fn ensure_session(&self, session_id: &str, source: &str) -> Result<()> {
        // The row is the session's lock, so creating it cannot take that lock; the upsert is
        // atomic on its own.
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

    /// Marks the session's run INTERRUPTED if it is RUNNING and nobody holds its lease any
    /// more. On SQLite (one process, see [`Store::connect`]) every RUNNING run found at start
    /// is a dead one, so `at_start` interrupts it whatever its lease says, except a pushed run
    /// ([`PUSHED_RUN_HOLDER`]), which is no process's and stays while its lease holds. Returns
    /// whether the run was interrupted.
    ///
    /// A lease still held is seen without the session's lock, so a live run's holder that
    /// stalls inside a write transaction never makes this wait.
    pub async fn interrupt_if_expired(&self, session_id: &str, at_start: bool) -> Result<bool> {
        // On SQLite at start, the file lock proves that every earlier process is gone.
        let dead_process = at_start && !self.is_postgres();
        if !dead_process && self.lease_held(session_id, LeaseKind::Sync).await? {
            return Ok(false);
        }
        let mut txn = self.write(session_id).await?;
        let Some(row) = session::Entity::find_by_id(session_id)
            .one(txn.conn())
            .await?
        else {
            return Ok(false);
        };
        if SyncState::from_i16(row.sync_state) != SyncState::Running {
            return Ok(false);
        }
        let lease = lease::Entity::find_by_id((session_id.to_owned(), "sync".to_owned()))
            .one(txn.conn())
            .await?;
        let held = lease
            .as_ref()
            .is_some_and(|lease| lease.expires_at > now_ms());
        let pushed = lease
            .as_ref()
            .is_some_and(|lease| lease.holder == PUSHED_RUN_HOLDER);
        // A pushed run is no process's: a restart leaves it running while its lease holds.
        if held && (!dead_process || pushed) {
            return Ok(false);
        }
        let finished_at_ms = now_ms();
        let reason = if pushed {
            PUSHED_RUN_IDLE_EXPIRED
        } else if dead_process {
            "the server stopped while the run was in progress"
        } else {
            LEASE_EXPIRED
        };
        session::Entity::update_many()
            .col_expr(
                session::Column::SyncState,
                Expr::value(SyncState::Interrupted as i16),
            )
            .col_expr(session::Column::SyncError, Expr::value(reason))
            .col_expr(session::Column::SyncFinishedAt, Expr::value(finished_at_ms))
            .filter(session::Column::Id.eq(session_id))
            .exec(txn.conn())
            .await?;
        self.vacate_lease(&txn, session_id, LeaseKind::Sync, None)
            .await?;
        log_run_end(&mut txn, session_id, SyncState::Interrupted, finished_at_ms).await?;
        self.notify_run(&txn, session_id).await?;
        txn.commit().await?;
        self.heads.run_changed(session_id);
        Ok(true)
    }

    /// Whether a replica holds the session's `kind` lease now (its expiry is in the future).
    /// A plain read: it never waits for the session's lock.
    async fn lease_held(&self, session_id: &str, kind: LeaseKind) -> Result<bool> {
        lease_held_in(&self.db, session_id, kind).await
    }

    /// Marks runs left RUNNING by a crash as INTERRUPTED: on SQLite at start-up
    /// (`at_start`) all of them, otherwise those whose lease expired (another replica may be
    /// running the others). Called at start-up, and on PostgreSQL by the service's sweeper
    /// every third of a lease. Returns how many were interrupted.
    pub async fn mark_interrupted_runs(&self, at_start: bool) -> Result<u64> {
        let running: Vec<String> = session::Entity::find()
            .filter(session::Column::SyncState.eq(SyncState::Running as i16))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| row.id)
            .collect();
        let mut interrupted = 0;
        for session_id in running {
            if self.interrupt_if_expired(&session_id, at_start).await? {
                interrupted += 1;
            }
        }
        Ok(interrupted)
    }

    /// The session row, or `NotFound`.
    pub async fn session(&self, session_id: &str) -> Result<SessionRecord> {
        session_in(&self.db, session_id).await
    }

    /// The session row and whether a replica holds its sync lease, read together (one read
    /// transaction: PostgreSQL's REPEATABLE READ, SQLite's deferred one). A plain read: it
    /// never waits for the session's lock. A run RUNNING with no lease held is one whose
    /// replica stopped.
    pub async fn session_and_sync_lease(&self, session_id: &str) -> Result<(SessionRecord, bool)> {
        let txn = if self.is_postgres() {
            self.db
                .begin_with_config(
                    Some(sea_orm::IsolationLevel::RepeatableRead),
                    Some(sea_orm::AccessMode::ReadOnly),
                )
                .await?
        } else {
            self.db.begin().await?
        };
        let record = session_in(&txn, session_id).await?;
        let held = lease_held_in(&txn, session_id, LeaseKind::Sync).await?;
        txn.commit().await?;
        Ok((record, held))
    }

    /// Starts a sync run for `holder` unless another replica holds a live one: under the
    /// session's lock, reads the run state and its lease; when no live lease is held by
    /// another, takes the lease for `lease_ms` and persists `record` (state RUNNING).
    pub async fn claim_sync_run(
        &self,
        session_id: &str,
        holder: &str,
        lease_ms: i64,
        record: &SyncRecord<'_>,
    ) -> Result<RunClaim> {
        let txn = self.write(session_id).await?;
        let row = session::Entity::find_by_id(session_id)
            .one(txn.conn())
            .await?
            .ok_or_else(|| Error::NotFound(format!("session {session_id:?}")))?;
        let lease = lease::Entity::find_by_id((session_id.to_owned(), "sync".to_owned()))
            .one(txn.conn())
            .await?;
        if SyncState::from_i16(row.sync_state) == SyncState::Running
            && let Some(lease) = lease
            && lease.expires_at > now_ms()
            && let Some(sync_id) = row.sync_id
        {
            return Ok(RunClaim::Running { sync_id });
        }
        let fence = self
            .put_lease(&txn, session_id, LeaseKind::Sync, holder, lease_ms)
            .await?;
        self.write_sync_state(&txn, session_id, record, false)
            .await?;
        self.notify_run(&txn, session_id).await?;
        txn.commit().await?;
        self.heads.run_changed(session_id);
        Ok(RunClaim::Started(fence))
    }

    /// Persists the sync-run state of the session's run `record.sync_id`. A run that is no
    /// longer the session's current one (it was interrupted and replaced) changes nothing.
    /// A final state (`finished_at_ms` set) also releases the run's lease (`fence`). Call it
    /// on a store [`Store::fenced`] by that lease, so that a former holder changes nothing.
    pub async fn save_sync_state(
        &self,
        session_id: &str,
        record: &SyncRecord<'_>,
        fence: &Fence,
    ) -> Result<()> {
        let mut txn = self.write(session_id).await?;
        let changed = self
            .write_sync_state(&txn, session_id, record, true)
            .await?;
        if let (true, Some(finished_at_ms)) = (changed, record.finished_at_ms) {
            self.vacate_lease(&txn, session_id, LeaseKind::Sync, Some(fence))
                .await?;
            log_run_end(&mut txn, session_id, record.state, finished_at_ms).await?;
        }
        self.notify_run(&txn, session_id).await?;
        txn.commit().await?;
        self.heads.run_changed(session_id);
        Ok(())
    }

    async fn write_sync_state(
        &self,
        txn: &super::WriteTxn,
        session_id: &str,
        record: &SyncRecord<'_>,
        same_run_only: bool,
    ) -> Result<bool> {
        let mut update = session::Entity::update_many()
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
            .filter(session::Column::Id.eq(session_id));
        if same_run_only {
            update = update
                .filter(session::Column::SyncId.eq(record.sync_id))
                .filter(session::Column::SyncState.eq(SyncState::Running as i16));
        }
        Ok(update.exec(txn.conn()).await?.rows_affected > 0)
    }

    /// Takes a lease for `holder` for `lease_ms` when nobody else holds an unexpired one: its
    /// fence (a new epoch when the holder changes or the lease had lapsed), or `None`.
    pub async fn acquire_lease(
        &self,
        session_id: &str,
        kind: LeaseKind,
        holder: &str,
        lease_ms: i64,
    ) -> Result<Option<Fence>> {
        let txn = self.write(session_id).await?;
        let current = lease::Entity::find_by_id((session_id.to_owned(), kind.as_str().to_owned()))
            .one(txn.conn())
            .await?;
        if let Some(current) = current
            && current.holder != holder
            && current.expires_at > now_ms()
        {
            return Ok(None);
        }
        let fence = self
            .put_lease(&txn, session_id, kind, holder, lease_ms)
            .await?;
        txn.commit().await?;
        Ok(Some(fence))
    }

    /// Renews the lease `fence` names for `lease_ms`. Returns `false` when that tenure is over:
    /// another holder took the lease, or it lapsed (a lapsed lease is never renewed: someone
    /// may have seen it expire). A renewal changes only the lease row and decides nothing, so
    /// on PostgreSQL it does not queue for the session's lock: a holder renews on time even
    /// while a long import holds that lock. On SQLite, where every write needs the file's one
    /// write lock, it takes its turn in the writer queue (which is fair), so that back to back
    /// import transactions never starve it.
    pub async fn renew_lease(
        &self,
        session_id: &str,
        fence: &Fence,
        lease_ms: i64,
    ) -> Result<bool> {
        let _turn = if self.is_postgres() {
            None
        } else {
            Some(self.writers.turn(session_id).await?)
        };
        let now = now_ms();
        Ok(lease::Entity::update_many()
            .col_expr(lease::Column::ExpiresAt, Expr::value(now + lease_ms))
            .filter(lease::Column::SessionId.eq(session_id))
            .filter(lease::Column::Kind.eq(fence.kind.as_str()))
            .filter(lease::Column::Holder.eq(fence.holder.as_str()))
            .filter(lease::Column::Epoch.eq(fence.epoch))
            .filter(lease::Column::ExpiresAt.gt(now))
            .exec(&self.db)
            .await?
            .rows_affected
            > 0)
    }

    /// Gives up the lease `fence` names, if that tenure still holds it.
    pub async fn release_lease(&self, session_id: &str, fence: &Fence) -> Result<()> {
        let txn = self.write(session_id).await?;
        self.vacate_lease(&txn, session_id, fence.kind, Some(fence))
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Gives the lease to `holder` for `lease_ms`: the same epoch when `holder` holds it
    /// unexpired already, the next one otherwise.
    async fn put_lease(
        &self,
        txn: &super::WriteTxn,
        session_id: &str,
        kind: LeaseKind,
        holder: &str,
        lease_ms: i64,
    ) -> Result<Fence> {
        let now = now_ms();
        let current = lease::Entity::find_by_id((session_id.to_owned(), kind.as_str().to_owned()))
            .one(txn.conn())
            .await?;
        let epoch = match current {
            Some(current) if current.holder == holder && current.expires_at > now => current.epoch,
            Some(current) => current.epoch + 1,
            None => 1,
        };
        let row = lease::ActiveModel {
            session_id: Set(session_id.to_owned()),
            kind: Set(kind.as_str().to_owned()),
            holder: Set(holder.to_owned()),
            expires_at: Set(now + lease_ms),
            epoch: Set(epoch),
        };
        lease::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([lease::Column::SessionId, lease::Column::Kind])
                    .update_columns([
                        lease::Column::Holder,
                        lease::Column::ExpiresAt,
                        lease::Column::Epoch,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(txn.conn())
            .await?;
        Ok(Fence {
            kind,
            holder: holder.to_owned(),
            epoch,
        })
    }

    /// Ends a lease (only the tenure `fence` names, when given): the row stays, with no holder
    /// and expired, so its epoch only grows.
    async fn vacate_lease(
        &self,
        txn: &super::WriteTxn,
        session_id: &str,
        kind: LeaseKind,
        fence: Option<&Fence>,
    ) -> Result<()> {
        let mut vacate = lease::Entity::update_many()
            .col_expr(lease::Column::Holder, Expr::value(""))
            .col_expr(lease::Column::ExpiresAt, Expr::value(0i64))
            .filter(lease::Column::SessionId.eq(session_id))
            .filter(lease::Column::Kind.eq(kind.as_str()));
        if let Some(fence) = fence {
            vacate = vacate
                .filter(lease::Column::Holder.eq(fence.holder.as_str()))
                .filter(lease::Column::Epoch.eq(fence.epoch));
        }
        vacate.exec(txn.conn()).await?;
        Ok(())
    }

    /// On PostgreSQL, wakes the other replicas' followers of this session's sync run.
    async fn notify_run(&self, txn: &super::WriteTxn, session_id: &str) -> Result<()> {
        if self.is_postgres() {
            txn.conn()
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_notify($1, $2)",
                    [RUNS_CHANNEL.into(), session_id.into()],
                ))
                .await?;
        }
        Ok(())
    }

    /// A watch channel that changes whenever the session's sync-run state is saved, on any
    /// replica: followers of a run on another replica re-read the state then.
    pub fn run_changes(&self, session_id: &str) -> tokio::sync::watch::Receiver<u64> {
        self.heads.subscribe_runs(session_id)
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
        let txn = self.write(session_id).await?;
        session::Entity::update_many()
            .col_expr(session::Column::SourceCursor, Expr::value(cursor))
            .filter(session::Column::Id.eq(session_id))
            .exec(txn.conn())
            .await?;
        txn.commit().await?;
        Ok(())
    }
}

async fn session_in(db: &impl ConnectionTrait, session_id: &str) -> Result<SessionRecord> {
    let row = session::Entity::find_by_id(session_id.to_owned())
        .one(db)
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

async fn lease_held_in(
    db: &impl ConnectionTrait,
    session_id: &str,
    kind: LeaseKind,
) -> Result<bool> {
    Ok(
        lease::Entity::find_by_id((session_id.to_owned(), kind.as_str().to_owned()))
            .one(db)
            .await?
            .is_some_and(|lease| lease.expires_at > now_ms()),
    )
}

/// Fails unless the lease `fence` names is still that tenure's and unexpired: checked inside
/// a write transaction, under the session's lock, by every write of a [`Store::fenced`]
/// store. `LeaseLost` otherwise.
pub(super) async fn check_fence(
    db: &impl ConnectionTrait,
    session_id: &str,
    fence: &Fence,
) -> Result<()> {
    let current =
        lease::Entity::find_by_id((session_id.to_owned(), fence.kind.as_str().to_owned()))
            .one(db)
            .await?;
    match current {
        Some(current)
            if current.holder == fence.holder
                && current.epoch == fence.epoch
                && current.expires_at > now_ms() =>
        {
            Ok(())
        }
        current => Err(Error::LeaseLost(format!(
            "this replica no longer holds the session's {} lease (epoch {}; the lease is at epoch {}): it lapsed, or another replica took over",
            fence.kind.as_str(),
            fence.epoch,
            current.map_or(0, |current| current.epoch)
        ))),
    }
}

/// Logs the end of a sync run in the change feed (kind [`change::KIND_RUN`], one seq), in the
/// transaction that persists it: subscribers and webhooks see `sync_run_finished`.
async fn log_run_end(
    txn: &mut super::WriteTxn,
    session_id: &str,
    state: SyncState,
    finished_at_ms: i64,
) -> Result<()> {
    let seq = txn.next_seq();
    change::Entity::insert(change::ActiveModel {
        session_id: Set(session_id.to_owned()),
        seq: Set(seq as i64),
        kind: Set(change::KIND_RUN),
        chat_id: Set(String::new()),
        message_id: Set(None),
        status: Set(Some(state as i16)),
        at: Set(finished_at_ms),
        what: Set(None),
        contact_id: Set(None),
        error_code: Set(None),
        error_title: Set(None),
    })
    .exec(txn.conn())
    .await?;
    Ok(())
}

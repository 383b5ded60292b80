//! Webhook delivery cursors (`webhook_cursors`): where each (endpoint, session) pair stands.
//!
//! Every write is a [`super::WriteTxn`] on the session, so it takes the session's lock and,
//! on a [`Store::fenced`] store (the deliverer's, under its lease), checks the fence first: a
//! replica that lost the delivery lease can never move a cursor. The deliverer's writes also
//! require the cursor's `generation` it read, so an operator's move of the cursor
//! ([`Store::move_webhook_cursor`]) always wins over a delivery in flight.
//!
//! The one exception is the deliverer's hot path, a 2xx ([`Store::acknowledge_webhook`]):
//! acknowledgements of every pair waiting at the same moment share one transaction (group
//! commit across sessions), and each checks its fence and generation in its own `UPDATE`'s
//! `WHERE` instead of under the session's lock, so delivery never queues behind the session's
//! writers. Anything it cannot write goes the checked way above, which says why.
use std::sync::Mutex;

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait, UpdateMany};
use tokio::sync::oneshot;

use super::Store;
use super::entities::{lease, session, webhook_cursor};
use super::sessions::Fence;
use crate::error::{Error, Result};
use crate::model::now_ms;

pub use webhook_cursor::Model as WebhookCursor;

/// A delivered change, acknowledged by its deliverer: the (endpoint, session) cursor moves to
/// `seq` if it is still at `generation`, and the attempt (Unix ms, HTTP status) is recorded.
#[derive(Debug, Clone)]
pub struct Ack {
    pub webhook_id: String,
    pub session_id: String,
    pub generation: i64,
    pub seq: u64,
    pub at_ms: i64,
    pub status: u16,
}

/// The acknowledgements waiting for the next shared cursor transaction.
#[derive(Default)]
pub(super) struct Acks {
    queue: Mutex<AckQueue>,
}

#[derive(Default)]
struct AckQueue {
    waiting: Vec<(Ack, Fence, oneshot::Sender<bool>)>,
    /// Whether a leader task is running.
    leading: bool,
}

/// The writer queue key of the shared cursor transactions: one queue for the whole file on
/// SQLite (where it is every writer's); on PostgreSQL a queue of their own, not a session's.
const ACK_QUEUE: &str = "webhook acknowledgements";

/// `update` plus a 2xx attempt at `at_ms` with `status`: the cursor's failing state clears.
fn record_delivery(
    update: UpdateMany<webhook_cursor::Entity>,
    at_ms: i64,
    status: u16,
) -> UpdateMany<webhook_cursor::Entity> {
    update
        .col_expr(webhook_cursor::Column::LastAttemptAt, Expr::value(at_ms))
        .col_expr(
            webhook_cursor::Column::LastStatus,
            Expr::value(status as i32),
        )
        .col_expr(webhook_cursor::Column::LastError, Expr::value(""))
        .col_expr(
            webhook_cursor::Column::FailingSince,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(webhook_cursor::Column::Failures, Expr::value(0i64))
}

impl Store {
    /// Creates the (endpoint, session) cursor at the session's current head when it has none:
    /// a new endpoint gets the changes committed from now on (ReplayWebhook replays earlier
    /// ones). The head is read under the session's lock, so no commit falls in between.
    /// Returns the stored cursor.
    pub async fn ensure_webhook_cursor(
        &self,
        webhook_id: &str,
        session_id: &str,
    ) -> Result<WebhookCursor> {
        if let Some(cursor) = self.webhook_cursor(webhook_id, session_id).await? {
            return Ok(cursor);
        }
        let txn = self.write(session_id).await?;
        let head = session::Entity::find_by_id(session_id.to_owned())
            .one(txn.conn())
            .await?
            .ok_or_else(|| Error::NotFound(format!("session {session_id:?}")))?
            .head_seq;
        let row = webhook_cursor::ActiveModel {
            webhook_id: Set(webhook_id.to_owned()),
            session_id: Set(session_id.to_owned()),
            seq: Set(head),
            generation: Set(0),
            last_attempt_at: Set(None),
            last_status: Set(0),
            last_error: Set(String::new()),
            failing_since: Set(None),
            failures: Set(0),
        };
        webhook_cursor::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([
                    webhook_cursor::Column::WebhookId,
                    webhook_cursor::Column::SessionId,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(txn.conn())
            .await?;
        txn.commit().await?;
        self.webhook_cursor(webhook_id, session_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("webhook cursor {webhook_id:?}")))
    }

    /// The (endpoint, session) cursor, if any.
    pub async fn webhook_cursor(
        &self,
        webhook_id: &str,
        session_id: &str,
    ) -> Result<Option<WebhookCursor>> {
        Ok(
            webhook_cursor::Entity::find_by_id((webhook_id.to_owned(), session_id.to_owned()))
                .one(&self.db)
                .await?,
        )
    }

    /// Every stored cursor, by endpoint then session.
    pub async fn webhook_cursors(&self) -> Result<Vec<WebhookCursor>> {
        Ok(webhook_cursor::Entity::find()
            .order_by_asc(webhook_cursor::Column::WebhookId)
            .order_by_asc(webhook_cursor::Column::SessionId)
            .all(&self.db)
            .await?)
    }

    /// The deliverer's move: every change up to `seq` is acknowledged (or filtered out).
    /// `delivered` is the acknowledged attempt (Unix ms, HTTP status), recorded as the last
    /// attempt, which clears the failing state. `false` (nothing written) when the cursor's
    /// generation is no longer `generation`: an operator moved it; read it again.
    pub async fn advance_webhook_cursor(
        &self,
        webhook_id: &str,
        session_id: &str,
        generation: i64,
        seq: u64,
        delivered: Option<(i64, u16)>,
    ) -> Result<bool> {
        let txn = self.write(session_id).await?;
        let mut update = webhook_cursor::Entity::update_many()
            .col_expr(webhook_cursor::Column::Seq, Expr::value(seq as i64));
        if let Some((at_ms, status)) = delivered {
            update = record_delivery(update, at_ms, status);
        }
        let moved = update
            .filter(webhook_cursor::Column::WebhookId.eq(webhook_id))
            .filter(webhook_cursor::Column::SessionId.eq(session_id))
            .filter(webhook_cursor::Column::Generation.eq(generation))
            .exec(txn.conn())
            .await?
            .rows_affected
            > 0;
        txn.commit().await?;
        Ok(moved)
    }

    /// The deliverer's fast path for a 2xx: [`Store::advance_webhook_cursor`] with
    /// `delivered`, in a transaction shared with every other acknowledgement waiting at that
    /// moment (any endpoint, any session), with this fenced store's fence checked in the
    /// `UPDATE` itself. `true` when written. `false` when not, for whatever reason: the
    /// generation moved, the fence no longer holds, the store is not fenced, or the shared
    /// transaction failed; then [`Store::advance_webhook_cursor`] tells which (and stops a
    /// former holder's work). Never writes what the checked path would refuse.
    pub async fn acknowledge_webhook(&self, ack: Ack) -> bool {
        let Some(fenced) = &self.fence else {
            return false;
        };
        let (answer, answered) = oneshot::channel();
        let lead = {
            let mut queue = self.acks.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.waiting.push((ack, fenced.fence.clone(), answer));
            !std::mem::replace(&mut queue.leading, true)
        };
        if lead {
            tokio::spawn(self.clone().lead_acks());
        }
        answered.await.unwrap_or(false)
    }

    /// The leader: writes the waiting acknowledgements, one transaction at a time, while any
    /// wait. A failed transaction answers its acknowledgements `false` (nothing written).
    async fn lead_acks(self) {
        loop {
            let turn = self.writers.turn(ACK_QUEUE).await;
            let group = {
                let mut queue = self.acks.queue.lock().unwrap_or_else(|p| p.into_inner());
                if queue.waiting.is_empty() {
                    queue.leading = false;
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            let (acks, answers): (Vec<_>, Vec<_>) = group
                .into_iter()
                .map(|(ack, fence, answer)| ((ack, fence), answer))
                .unzip();
            let written = match turn {
                Ok(_turn) => self.write_acks(&acks).await.unwrap_or_else(|error| {
                    tracing::warn!(%error, acks = acks.len(), "a shared webhook cursor transaction failed; each goes the checked way");
                    vec![false; acks.len()]
                }),
                Err(_) => vec![false; acks.len()],
            };
            for (answer, written) in answers.into_iter().zip(written) {
                let _ = answer.send(written);
            }
        }
    }

    async fn write_acks(&self, acks: &[(Ack, Fence)]) -> Result<Vec<bool>> {
        let txn = self
            .db
            .begin_with_options(sea_orm::TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await?;
        let now = now_ms();
        let mut written = Vec::with_capacity(acks.len());
        for (ack, fence) in acks {
            let holds = Query::select()
                .expr(Expr::value(1))
                .from(lease::Entity)
                .and_where(lease::Column::SessionId.eq(ack.session_id.as_str()))
                .and_where(lease::Column::Kind.eq(fence.kind.as_str()))
                .and_where(lease::Column::Holder.eq(fence.holder.as_str()))
                .and_where(lease::Column::Epoch.eq(fence.epoch))
                .and_where(lease::Column::ExpiresAt.gt(now))
                .to_owned();
            let update = webhook_cursor::Entity::update_many()
                .col_expr(webhook_cursor::Column::Seq, Expr::value(ack.seq as i64));
            let moved = record_delivery(update, ack.at_ms, ack.status)
                .filter(webhook_cursor::Column::WebhookId.eq(ack.webhook_id.as_str()))
                .filter(webhook_cursor::Column::SessionId.eq(ack.session_id.as_str()))
                .filter(webhook_cursor::Column::Generation.eq(ack.generation))
                .filter(Expr::exists(holds))
                .exec(&txn)
                .await?
                .rows_affected
                > 0;
            written.push(moved);
        }
        txn.commit().await?;
        Ok(written)
    }

    /// The deliverer's record of a failed attempt (the cursor stays): its time, HTTP status
    /// (0 for none) and error; the failing state starts at the first failure. `false` when
    /// the generation changed (see [`Store::advance_webhook_cursor`]).
    pub async fn record_webhook_failure(
        &self,
        webhook_id: &str,
        session_id: &str,
        generation: i64,
        at_ms: i64,
        status: u16,
        error: &str,
    ) -> Result<bool> {
        let txn = self.write(session_id).await?;
        let recorded = webhook_cursor::Entity::update_many()
            .col_expr(webhook_cursor::Column::LastAttemptAt, Expr::value(at_ms))
            .col_expr(
                webhook_cursor::Column::LastStatus,
                Expr::value(status as i32),
            )
            .col_expr(webhook_cursor::Column::LastError, Expr::value(error))
            .col_expr(
                webhook_cursor::Column::FailingSince,
                Expr::col(webhook_cursor::Column::FailingSince).if_null(at_ms),
            )
            .col_expr(
                webhook_cursor::Column::Failures,
                Expr::col(webhook_cursor::Column::Failures).add(1),
            )
            .filter(webhook_cursor::Column::WebhookId.eq(webhook_id))
            .filter(webhook_cursor::Column::SessionId.eq(session_id))
            .filter(webhook_cursor::Column::Generation.eq(generation))
            .exec(txn.conn())
            .await?
            .rows_affected
            > 0;
        txn.commit().await?;
        Ok(recorded)
    }

    /// The operator's move (ReplayWebhook): delivery continues after `after_seq` (earlier to
    /// replay, later to skip ahead), and the generation grows so that a delivery in flight
    /// does not overwrite it. Returns the cursor before the move. `NotFound` when the
    /// endpoint has no cursor for the session; `InvalidArgument` beyond the head.
    pub async fn move_webhook_cursor(
        &self,
        webhook_id: &str,
        session_id: &str,
        after_seq: u64,
    ) -> Result<u64> {
        let txn = self.write(session_id).await?;
        let head = session::Entity::find_by_id(session_id.to_owned())
            .one(txn.conn())
            .await?
            .ok_or_else(|| Error::NotFound(format!("session {session_id:?}")))?
            .head_seq as u64;
        if after_seq > head {
            return Err(Error::InvalidArgument(format!(
                "after_seq {after_seq} is beyond the session's head seq {head}"
            )));
        }
        let current =
            webhook_cursor::Entity::find_by_id((webhook_id.to_owned(), session_id.to_owned()))
                .one(txn.conn())
                .await?
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "webhook {webhook_id:?} delivers nothing for session {session_id:?}"
                    ))
                })?;
        webhook_cursor::Entity::update_many()
            .col_expr(webhook_cursor::Column::Seq, Expr::value(after_seq as i64))
            .col_expr(
                webhook_cursor::Column::Generation,
                Expr::value(current.generation + 1),
            )
            .filter(webhook_cursor::Column::WebhookId.eq(webhook_id))
            .filter(webhook_cursor::Column::SessionId.eq(session_id))
            .exec(txn.conn())
            .await?;
        txn.commit().await?;
        Ok(current.seq as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::{Ack, Store};
    use crate::storage::{Fence, LeaseKind};

    const KIND: LeaseKind = LeaseKind::Webhook("webhook:hook");

    fn ack(session_id: &str, generation: i64, seq: u64) -> Ack {
        Ack {
            webhook_id: "hook".into(),
            session_id: session_id.into(),
            generation,
            seq,
            at_ms: 1_700_000_000_000,
            status: 204,
        }
    }

    /// A store with `sessions` sessions `s0`, `s1`, …, each with a cursor for `hook`, and the
    /// fenced stores of their delivery leases, held by `a`.
    async fn fenced(dir: &std::path::Path, sessions: usize) -> (Store, Vec<(Store, Fence)>) {
        let store = Store::connect(&format!("sqlite://{}/c.db", dir.display()))
            .await
            .unwrap();
        let mut holders = Vec::new();
        for i in 0..sessions {
            let session_id = format!("s{i}");
            store.ensure_session(&session_id, "test").await.unwrap();
            store
                .ensure_webhook_cursor("hook", &session_id)
                .await
                .unwrap();
            let fence = store
                .acquire_lease(&session_id, KIND, "a", 60_000)
                .await
                .unwrap()
                .unwrap();
            holders.push((store.fenced(fence.clone(), Default::default()), fence));
        }
        (store, holders)
    }

    #[tokio::test]
    async fn acknowledgements_of_many_sessions_all_move_their_cursors() {
        let dir = tempfile::tempdir().unwrap();
        let (store, holders) = fenced(dir.path(), 40).await;
        let mut acks = tokio::task::JoinSet::new();
        for (i, (holder, _)) in holders.iter().enumerate() {
            let holder = holder.clone();
            acks.spawn(async move {
                holder
                    .acknowledge_webhook(ack(&format!("s{i}"), 0, 7))
                    .await
            });
        }
        while let Some(written) = acks.join_next().await {
            assert!(written.unwrap());
        }
        for i in 0..40 {
            let cursor = store
                .webhook_cursor("hook", &format!("s{i}"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!((cursor.seq, cursor.last_status), (7, 204));
        }
    }

    #[tokio::test]
    async fn an_acknowledgement_the_checked_path_would_refuse_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut holders) = fenced(dir.path(), 1).await;
        let (holder, fence) = holders.pop().unwrap();
        // Unfenced: not the deliverer's store.
        assert!(!store.acknowledge_webhook(ack("s0", 0, 3)).await);
        // An operator moved the cursor: generation 1.
        store.move_webhook_cursor("hook", "s0", 0).await.unwrap();
        assert!(!holder.acknowledge_webhook(ack("s0", 0, 3)).await);
        assert!(holder.acknowledge_webhook(ack("s0", 1, 3)).await);
        // Another replica took the lease over: the former fence no longer holds.
        store.release_lease("s0", &fence).await.unwrap();
        store
            .acquire_lease("s0", KIND, "b", 60_000)
            .await
            .unwrap()
            .unwrap();
        assert!(!holder.acknowledge_webhook(ack("s0", 1, 5)).await);
        let cursor = store.webhook_cursor("hook", "s0").await.unwrap().unwrap();
        assert_eq!((cursor.seq, cursor.generation), (3, 1));
    }
}

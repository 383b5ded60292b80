//! Webhook delivery cursors (`webhook_cursors`): where each (endpoint, session) pair stands.
//!
//! Every write is a [`super::WriteTxn`] on the session, so it takes the session's lock and,
//! on a [`Store::fenced`] store (the deliverer's, under its lease), checks the fence first: a
//! replica that lost the delivery lease can never move a cursor. The deliverer's writes also
//! require the cursor's `generation` it read, so an operator's move of the cursor
//! ([`Store::move_webhook_cursor`]) always wins over a delivery in flight.
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::Store;
use super::entities::{session, webhook_cursor};
use crate::error::{Error, Result};

pub use webhook_cursor::Model as WebhookCursor;

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
            update = update
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
                .col_expr(webhook_cursor::Column::Failures, Expr::value(0i64));
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

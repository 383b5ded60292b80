//! Claims (`send_claims`): which replica is doing a piece of upstream work that must not be
//! done twice at once, by (session, key), until when. A claim expires, so a replica that died
//! holding one holds the work up only until then. Two kinds of key share the table:
//!
//! - a send's idempotency key: a replica claims it before it posts the message upstream
//!   through a source that has no idempotency key of its own (the WhatsApp Cloud API), and
//!   drops the claim once the outcome is stored; a retry of the key on another replica while
//!   the claim holds posts nothing (see `service::send`);
//! - a webhook inbox item's key (`media:{wamid}:{n}`): the replica retrying a failed media
//!   download holds it, renewed before each try, so that the other replicas' inbox sweeps
//!   leave the retry to it until it dies (see `service::whatsapp_cloud`). A client could pick
//!   such a key as its own idempotency key; it would then only hold up its own send.
//!
//! These writes take no seq and decide nothing from what they read: one statement each,
//! straight to the pool (the `INSERT … ON CONFLICT DO UPDATE … WHERE` is atomic per row on
//! both backends).
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::Store;
use super::entities::send_claim;
use crate::error::Result;
use crate::model::now_ms;

impl Store {
    /// Claims `key` (a send's idempotency key, or an inbox item's key) in `session_id` for
    /// `holder` (a replica's id) for `claim_ms` milliseconds. `true` when `holder` has the
    /// claim now: nobody held it, its claim had expired, or `holder` held it already (then it
    /// is extended); `false` while another holder's claim is unexpired.
    pub async fn claim(
        &self,
        session_id: &str,
        key: &str,
        holder: &str,
        claim_ms: i64,
    ) -> Result<bool> {
        let now = now_ms();
        let row = send_claim::ActiveModel {
            session_id: Set(session_id.to_owned()),
            client_message_id: Set(key.to_owned()),
            holder: Set(holder.to_owned()),
            expires_at: Set(now.saturating_add(claim_ms)),
        };
        let claimed = send_claim::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([
                    send_claim::Column::SessionId,
                    send_claim::Column::ClientMessageId,
                ])
                .update_columns([send_claim::Column::Holder, send_claim::Column::ExpiresAt])
                .action_and_where(
                    Expr::col((send_claim::Entity, send_claim::Column::ExpiresAt))
                        .lte(now)
                        .or(Expr::col((send_claim::Entity, send_claim::Column::Holder)).eq(holder)),
                )
                .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(claimed > 0)
    }

    /// Drops `holder`'s claim of `key` (another holder's is left).
    pub async fn release_claim(&self, session_id: &str, key: &str, holder: &str) -> Result<()> {
        send_claim::Entity::delete_many()
            .filter(send_claim::Column::SessionId.eq(session_id))
            .filter(send_claim::Column::ClientMessageId.eq(key))
            .filter(send_claim::Column::Holder.eq(holder))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}

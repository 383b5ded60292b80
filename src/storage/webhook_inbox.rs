//! The webhook inbox: items of a pushed webhook (the `whatsapp-cloud` source) that could not
//! be applied when they arrived, kept durably before the webhook is acknowledged.
//!
//! - An item waiting for its message (a status for a `wamid` not stored yet) is kept with no
//!   error and applied later; once applied it is deleted.
//! - An item that could not be read is kept with its error, for an operator to look at.
//!
//! Rows are keyed by (session, item key), so a redelivered item stores nothing. These writes
//! take no seq and decide nothing from what they read, so they go straight to the pool, like
//! [`Store::ensure_session`].
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};

use super::Store;
use super::entities::webhook_inbox;
use crate::error::Result;
use crate::model::now_ms;

/// An item kept in the inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxItem {
    /// What makes a redelivery the same item.
    pub key: String,
    /// The item's JSON as received.
    pub payload: String,
    /// Why it could not be read; `None` while it waits to be applied.
    pub error: Option<String>,
    /// When it was kept (Unix ms); with `key`, its place in the inbox's order.
    pub received_at_ms: i64,
}

impl From<webhook_inbox::Model> for InboxItem {
    fn from(row: webhook_inbox::Model) -> Self {
        InboxItem {
            key: row.item_key,
            payload: row.payload,
            error: row.error,
            received_at_ms: row.received_at,
        }
    }
}

impl Store {
    /// Keeps a webhook item. Returns `false` when an item with this key is kept already (a
    /// redelivery): nothing is written then.
    pub async fn keep_webhook_item(
        &self,
        session_id: &str,
        key: &str,
        payload: &str,
        error: Option<&str>,
    ) -> Result<bool> {
        let row = webhook_inbox::ActiveModel {
            session_id: Set(session_id.to_owned()),
            item_key: Set(key.to_owned()),
            payload: Set(payload.to_owned()),
            error: Set(error.map(str::to_owned)),
            received_at: Set(now_ms()),
        };
        let inserted = webhook_inbox::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([
                    webhook_inbox::Column::SessionId,
                    webhook_inbox::Column::ItemKey,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(inserted > 0)
    }

    /// The session's items waiting to be applied (no error), oldest first (by
    /// `received_at_ms`, then `key`), at most `limit`, after `after` (the last item of the
    /// previous page; `None` from the start). Paging by the last item, not by an offset, so
    /// that items applied and dropped meanwhile move nothing past the reader.
    pub async fn waiting_webhook_items(
        &self,
        session_id: &str,
        after: Option<&InboxItem>,
        limit: u64,
    ) -> Result<Vec<InboxItem>> {
        let mut query = webhook_inbox::Entity::find()
            .filter(webhook_inbox::Column::SessionId.eq(session_id))
            .filter(webhook_inbox::Column::Error.is_null());
        if let Some(after) = after {
            query = query.filter(
                Condition::any()
                    .add(webhook_inbox::Column::ReceivedAt.gt(after.received_at_ms))
                    .add(
                        Condition::all()
                            .add(webhook_inbox::Column::ReceivedAt.eq(after.received_at_ms))
                            .add(webhook_inbox::Column::ItemKey.gt(after.key.as_str())),
                    ),
            );
        }
        Ok(query
            .order_by_asc(webhook_inbox::Column::ReceivedAt)
            .order_by_asc(webhook_inbox::Column::ItemKey)
            .paginate(&self.db, limit.max(1))
            .fetch_page(0)
            .await?
            .into_iter()
            .map(InboxItem::from)
            .collect())
    }

    /// The session's waiting items whose key starts with `prefix` (`status:WAMID:`, the
    /// statuses of one message), oldest first, at most `limit`.
    pub async fn waiting_webhook_items_with_prefix(
        &self,
        session_id: &str,
        prefix: &str,
        limit: u64,
    ) -> Result<Vec<InboxItem>> {
        Ok(webhook_inbox::Entity::find()
            .filter(webhook_inbox::Column::SessionId.eq(session_id))
            .filter(webhook_inbox::Column::ItemKey.starts_with(prefix))
            .filter(webhook_inbox::Column::Error.is_null())
            .order_by_asc(webhook_inbox::Column::ReceivedAt)
            .order_by_asc(webhook_inbox::Column::ItemKey)
            .paginate(&self.db, limit.max(1))
            .fetch_page(0)
            .await?
            .into_iter()
            .map(InboxItem::from)
            .collect())
    }

    /// How many of the session's items are kept with an error.
    pub async fn failed_webhook_items(&self, session_id: &str) -> Result<u64> {
        Ok(webhook_inbox::Entity::find()
            .filter(webhook_inbox::Column::SessionId.eq(session_id))
            .filter(webhook_inbox::Column::Error.is_not_null())
            .count(&self.db)
            .await?)
    }

    /// Deletes an applied item.
    pub async fn drop_webhook_item(&self, session_id: &str, key: &str) -> Result<()> {
        webhook_inbox::Entity::delete_many()
            .filter(webhook_inbox::Column::SessionId.eq(session_id))
            .filter(webhook_inbox::Column::ItemKey.eq(key))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}

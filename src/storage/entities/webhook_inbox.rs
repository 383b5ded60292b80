//! `webhook_inbox`: webhook items kept before the webhook is acknowledged, that could not be
//! applied yet (see `storage::webhook_inbox`). Primary key (session_id, item_key).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_inbox")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    /// What makes a redelivery the same item, e.g. `status:<wamid>:<status>:<recipient>`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub item_key: String,
    /// The item's JSON, as received.
    pub payload: String,
    /// Why the item could not be read; `None` for an item waiting to be applied.
    pub error: Option<String>,
    /// Unix milliseconds.
    pub received_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `receipts`: one row per (message, recipient), with when it was delivered to and read by
//! that recipient. The message is named by its creation seq within the session.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "receipts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub message_seq: i64,
    /// The recipient: the source's user id (a Matrix user id, a phone number).
    #[sea_orm(primary_key, auto_increment = false)]
    pub recipient: String,
    /// Unix ms; `None` until delivered.
    pub delivered_at: Option<i64>,
    /// Unix ms; `None` until read.
    pub read_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

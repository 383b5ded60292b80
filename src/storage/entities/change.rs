//! `changes`: the change log for everything that is not a message creation (those are
//! `messages.seq`): status updates, chat updates and message updates. Primary key (session_id, seq).
use sea_orm::entity::prelude::*;

/// `kind` value of a status update.
pub const KIND_STATUS: i16 = 1;
/// `kind` value of a chat added or renamed.
pub const KIND_CHAT: i16 = 2;
/// `kind` value of a message edited or deleted upstream (`message_id` names it).
pub const KIND_MESSAGE: i16 = 3;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "changes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub kind: i16,
    pub chat_id: String,
    pub message_id: Option<i64>,
    pub status: Option<i16>,
    pub at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

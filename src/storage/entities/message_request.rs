//! `message_requests`: the idempotency keys of ReactToMessage, EditMessage and DeleteMessage:
//! a retry under a stored key changes nothing and answers the message as stored now.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "message_requests")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub request_id: String,
    /// The server id of the message the request changed.
    pub message_id: i64,
    /// When the request was first applied (Unix ms).
    pub at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

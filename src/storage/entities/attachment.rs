//! `attachments`: the files of a message. Primary key (session_id, message_seq, ordinal).
//! See `storage::attachments`.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "attachments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    /// The creation seq of the message the file belongs to.
    #[sea_orm(primary_key, auto_increment = false)]
    pub message_seq: i64,
    /// Position within the message, from 0.
    #[sea_orm(primary_key, auto_increment = false)]
    pub ordinal: i32,
    #[sea_orm(column_type = "Text")]
    pub file_name: String,
    pub mime_type: String,
    /// Bytes; 0 when not stored.
    pub size: i64,
    /// 64 lowercase hex digits; empty when not stored.
    pub sha256: String,
    /// Whether the bytes are in the blob store.
    pub stored: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

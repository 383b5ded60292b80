//! `message_versions`: the earlier texts of an edited message, oldest first by `version`.
//! The message is named by its creation seq within the session.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "message_versions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub message_seq: i64,
    /// 0 for the original text, then 1, 2, ...
    #[sea_orm(primary_key, auto_increment = false)]
    pub version: i32,
    pub text: String,
    /// When the next text replaced this one (Unix ms).
    pub replaced_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

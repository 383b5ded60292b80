//! `participants`: one row per (session, chat, contact); `joined_at` / `left_at` are the
//! latest known join and leave (Unix ms); `seq` is the row's last change.
//! Primary key (session_id, chat_id, contact_id).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "participants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub chat_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub contact_id: String,
    pub joined_at: Option<i64>,
    pub left_at: Option<i64>,
    /// The seq of the row's last change.
    pub seq: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

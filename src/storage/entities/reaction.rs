//! `reactions`: one row per (message, sender, emoji). The message is named by its creation
//! seq within the session, as in `attachments`.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "reactions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub message_seq: i64,
    /// Who reacted: the source's user id (a Matrix user id), or the sender as shown.
    #[sea_orm(primary_key, auto_increment = false)]
    pub sender: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub emoji: String,
    /// When (Unix ms).
    pub at: i64,
    /// The source's id of the reaction event (a Matrix event id), when it has one.
    pub provider_reaction_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

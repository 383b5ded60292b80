//! `messages`: one row per message; `seq` is the seq at which it was created.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub session_id: String,
    pub chat_id: String,
    pub provider_message_id: String,
    pub client_message_id: Option<String>,
    pub sender: String,
    pub text: String,
    pub kind: i16,
    pub status: i16,
    pub from_me: bool,
    pub sent_at: i64,
    pub seq: i64,
    pub updated_at: i64,
    /// The quoted message's `provider_message_id` in the same chat.
    pub reply_to: Option<String>,
    /// `None` not forwarded, 1 forwarded, 2 forwarded many times ([`crate::model::Forwarded`]).
    pub forwarded: Option<i16>,
    pub forwarded_from: Option<String>,
    /// `Some(true)` when edited; `None` otherwise.
    pub edited: Option<bool>,
    pub edited_at: Option<i64>,
    pub deleted_by: Option<String>,
    pub deleted_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

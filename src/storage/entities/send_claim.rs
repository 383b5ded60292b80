//! `send_claims`: which replica is doing a piece of upstream work (sending a message,
//! retrying a media download), until when (see `storage::send_claims`). Primary key
//! (session_id, client_message_id).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "send_claims")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    /// The claim's key: a send's idempotency key, or a webhook inbox item's key
    /// (`media:{wamid}:{n}`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub client_message_id: String,
    /// The claiming replica's id (drawn at its start).
    pub holder: String,
    /// Unix milliseconds: after this, another replica may claim the key.
    pub expires_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

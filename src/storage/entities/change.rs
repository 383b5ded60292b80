//! `changes`: the change log for everything that is not a message creation (those are
//! `messages.seq`): status updates, chat updates, message updates, contact
//! updates, participant changes and sync runs that ended. Primary key (session_id, seq).
use sea_orm::entity::prelude::*;

/// `kind` value of a status update.
pub const KIND_STATUS: i16 = 1;
/// `kind` value of a chat added or renamed.
pub const KIND_CHAT: i16 = 2;
/// `kind` value of a message edited or deleted upstream (`message_id` names it).
pub const KIND_MESSAGE: i16 = 3;
/// `kind` value of a contact added or changed (`contact_id` names it; `chat_id` is empty).
pub const KIND_CONTACT: i16 = 4;
/// `kind` value of a participant of `chat_id` joined, left or first seen (`contact_id`
/// names it).
pub const KIND_PARTICIPANT: i16 = 5;
/// `kind` value of a sync run that ended: `status` holds its final `SyncState`, `at` when it
/// ended; `chat_id` is empty.
pub const KIND_RUN: i16 = 6;

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
    /// The contact of a `KIND_CONTACT` or `KIND_PARTICIPANT` change; `None` otherwise.
    pub contact_id: Option<String>,
    /// What a `KIND_MESSAGE` change changed ([`crate::model::MessageChange`]); `None` for
    /// other kinds and for message changes logged before the column existed (edits).
    pub what: Option<i16>,
    /// Why a message failed, on a `KIND_STATUS` change to FAILED whose source said why (the
    /// WhatsApp Cloud API's error code, e.g. `131047`); `None` otherwise.
    pub error_code: Option<i64>,
    /// The title of that error (`Re-engagement message`); `None` when `error_code` is.
    pub error_title: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `leases`: which replica holds a session's sync run or live-source loop, and until when.
//! Primary key (session_id, kind). A released lease keeps its row (holder `''`, expired), so
//! its epoch only grows.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "leases")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    /// `sync` or `live` (see `storage::LeaseKind`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub kind: String,
    /// The holding replica's id (a UUID drawn at start-up).
    pub holder: String,
    /// Unix milliseconds.
    pub expires_at: i64,
    /// The fencing token: one higher for each new holder (see `storage::Fence`).
    pub epoch: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

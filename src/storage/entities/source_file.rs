//! `source_files`: the fingerprint of each source file as it was when its chat was last
//! imported in full. Primary key (session_id, locator). See `storage::files`.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "source_files")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    /// The file as the source lists it (its path).
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub locator: String,
    pub chat_id: String,
    /// Bytes.
    pub size: i64,
    /// Unix nanoseconds.
    pub mtime_ns: i64,
    /// 64 lowercase hex digits.
    pub sha256: String,
    /// Unix milliseconds: when the file was looked at, before it was read.
    pub checked_at: i64,
    /// The run's per-chat limit; `None`: the whole history.
    pub limit_per_chat: Option<i64>,
    pub unplaced_lines: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

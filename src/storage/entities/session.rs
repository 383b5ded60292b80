//! `sessions`: one row per configured session, holding its head seq and sync-run state.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub source: String,
    pub head_seq: i64,
    pub sync_state: i16,
    pub sync_id: Option<String>,
    pub sync_started_at: Option<i64>,
    pub sync_finished_at: Option<i64>,
    pub sync_error: Option<String>,
    /// The last progress frame of the current or last run, as JSON.
    pub sync_progress: Option<String>,
    /// Where the live source resumes (Matrix: the `/sync` `since` token).
    pub source_cursor: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

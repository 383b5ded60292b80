//! `webhook_cursors`: the durable delivery cursor of one webhook endpoint for one session,
//! and the outcome of its last attempt. Primary key (webhook_id, session_id).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_cursors")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub webhook_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    /// Every change up to this seq was acknowledged (2xx) or filtered out.
    pub seq: i64,
    /// One higher for each operator move of the cursor (ReplayWebhook).
    pub generation: i64,
    /// Unix milliseconds of the last delivery attempt.
    pub last_attempt_at: Option<i64>,
    /// The HTTP status of the last attempt; 0 when it got none (timeout, connection error).
    pub last_status: i32,
    /// Why the last attempt failed; empty after a success.
    pub last_error: String,
    /// Unix milliseconds of the first failure since the last success.
    pub failing_since: Option<i64>,
    /// Failed attempts since the last success.
    pub failures: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

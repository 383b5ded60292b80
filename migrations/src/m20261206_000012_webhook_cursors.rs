//! Adds `webhook_cursors`: one row per (webhook endpoint, session), the durable cursor of
//! webhook delivery. `seq` is the last seq the endpoint acknowledged with a 2xx (or that its
//! filters skipped); delivery resumes after it, on any replica, after any crash. The row also
//! keeps the last attempt's outcome (time, HTTP status, error) and when the endpoint began
//! failing, so that every replica can report the endpoint's state. `generation` grows with
//! each operator move of the cursor (ReplayWebhook): the deliverer's own cursor writes require
//! the generation it read, so a replay is never overwritten by a delivery in flight.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookCursors::Table)
                    .if_not_exists()
                    .col(string(WebhookCursors::WebhookId))
                    .col(string(WebhookCursors::SessionId))
                    .col(big_integer(WebhookCursors::Seq))
                    .col(big_integer(WebhookCursors::Generation).default(0))
                    .col(big_integer_null(WebhookCursors::LastAttemptAt))
                    .col(integer(WebhookCursors::LastStatus).default(0))
                    .col(string(WebhookCursors::LastError).default(""))
                    .col(big_integer_null(WebhookCursors::FailingSince))
                    .col(big_integer(WebhookCursors::Failures).default(0))
                    .primary_key(
                        Index::create()
                            .col(WebhookCursors::WebhookId)
                            .col(WebhookCursors::SessionId),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WebhookCursors::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum WebhookCursors {
    Table,
    WebhookId,
    SessionId,
    Seq,
    Generation,
    LastAttemptAt,
    LastStatus,
    LastError,
    FailingSince,
    Failures,
}

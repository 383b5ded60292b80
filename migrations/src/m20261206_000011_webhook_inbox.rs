//! Adds `webhook_inbox`: webhook items a session could not apply yet, kept durably before the
//! webhook is acknowledged (the `whatsapp-cloud` source). One row per (session, item key):
//! a status whose message is not stored yet (`error` NULL, applied when the message or the
//! send's answer arrives, then deleted), or an item that could not be read (`error` says
//! why; kept for an operator). The key makes a redelivered item store nothing.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookInbox::Table)
                    .if_not_exists()
                    .col(string(WebhookInbox::SessionId))
                    .col(string(WebhookInbox::ItemKey))
                    .col(text(WebhookInbox::Payload))
                    .col(text_null(WebhookInbox::Error))
                    .col(big_integer(WebhookInbox::ReceivedAt))
                    .primary_key(
                        Index::create()
                            .col(WebhookInbox::SessionId)
                            .col(WebhookInbox::ItemKey),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WebhookInbox::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum WebhookInbox {
    Table,
    SessionId,
    ItemKey,
    Payload,
    Error,
    ReceivedAt,
}

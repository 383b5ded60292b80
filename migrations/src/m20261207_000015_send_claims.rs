//! Adds `send_claims`: which replica is sending a message upstream, by (session,
//! `client_message_id`), until when (Unix ms). A send through a source without an idempotency
//! key of its own (the WhatsApp Cloud API) claims its key here before it posts and drops the
//! row once the outcome is stored, so that a retry of the same key on another replica, while
//! the first is in flight, posts nothing. A claim of a replica that died expires.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SendClaims::Table)
                    .if_not_exists()
                    .col(string(SendClaims::SessionId))
                    .col(string(SendClaims::ClientMessageId))
                    .col(string(SendClaims::Holder))
                    .col(big_integer(SendClaims::ExpiresAt))
                    .primary_key(
                        Index::create()
                            .col(SendClaims::SessionId)
                            .col(SendClaims::ClientMessageId),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SendClaims::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum SendClaims {
    Table,
    SessionId,
    ClientMessageId,
    Holder,
    ExpiresAt,
}

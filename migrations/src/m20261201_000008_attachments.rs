//! Adds `attachments`: the files of a message (issue 11, media). Primary key
//! (session_id, message_seq, ordinal).
//!
//! - `message_seq`: the seq at which the message was created (unique per session and never
//!   changed, so it names the message; bulk imports insert messages without reading their ids
//!   back).
//! - `ordinal`: the attachment's position within the message, from 0.
//! - `file_name`, `mime_type`, `size` (bytes; 0 when not stored).
//! - `sha256`: 64 lowercase hex digits of the bytes, the key in the blob store; empty when the
//!   bytes are not stored.
//! - `stored`: whether the bytes are in the blob store.
//!
//! Index (session_id, sha256): GetMedia checks that a session references a blob.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Attachments::Table)
                    .if_not_exists()
                    .col(string(Attachments::SessionId))
                    .col(big_integer(Attachments::MessageSeq))
                    .col(integer(Attachments::Ordinal))
                    .col(text(Attachments::FileName))
                    .col(string(Attachments::MimeType))
                    .col(big_integer(Attachments::Size))
                    .col(string(Attachments::Sha256))
                    .col(boolean(Attachments::Stored))
                    .primary_key(
                        Index::create()
                            .col(Attachments::SessionId)
                            .col(Attachments::MessageSeq)
                            .col(Attachments::Ordinal),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_attachments_session_sha256")
                    .table(Attachments::Table)
                    .col(Attachments::SessionId)
                    .col(Attachments::Sha256)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Attachments::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Attachments {
    Table,
    SessionId,
    MessageSeq,
    Ordinal,
    FileName,
    MimeType,
    Size,
    Sha256,
    Stored,
}

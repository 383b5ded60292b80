//! Adds `source_files`: per session and source file, the fingerprint of the file as it was when
//! its chat was last imported in full (size, modification time, SHA-256 of its bytes), so a
//! sync run can skip files that have not changed. Primary key (session_id, locator).
//!
//! - `locator`: the file as the source lists it (its path).
//! - `chat_id`: the chat the file was imported into.
//! - `size` (bytes), `mtime_ns` (Unix nanoseconds), `sha256` (64 hex digits).
//! - `checked_at`: when the file was looked at (Unix milliseconds), before it was read.
//! - `limit_per_chat`: the run's per-chat limit; NULL for the whole history.
//! - `unplaced_lines`: what the import could not place, reported again when the file is
//!   skipped.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SourceFiles::Table)
                    .if_not_exists()
                    .col(string(SourceFiles::SessionId))
                    .col(text(SourceFiles::Locator))
                    .col(string(SourceFiles::ChatId))
                    .col(big_integer(SourceFiles::Size))
                    .col(big_integer(SourceFiles::MtimeNs))
                    .col(string(SourceFiles::Sha256))
                    .col(big_integer(SourceFiles::CheckedAt))
                    .col(big_integer_null(SourceFiles::LimitPerChat))
                    .col(big_integer(SourceFiles::UnplacedLines))
                    .primary_key(
                        Index::create()
                            .col(SourceFiles::SessionId)
                            .col(SourceFiles::Locator),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SourceFiles::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum SourceFiles {
    Table,
    SessionId,
    Locator,
    ChatId,
    Size,
    MtimeNs,
    Sha256,
    CheckedAt,
    LimitPerChat,
    UnplacedLines,
}

//! Adds `contacts` and `participants`, both versioned by seq, and `changes.contact_id`.
//!
//! - `contacts(session_id, contact_id, display_name, phone, matrix_id, seq, updated_at)`:
//!   one row per person a session's source knows; `seq` is the contact's last change.
//!   Primary key (session_id, contact_id).
//! - `participants(session_id, chat_id, contact_id, joined_at, left_at, seq, updated_at)`:
//!   one row per (chat, contact); `joined_at` / `left_at` are the latest known join and leave
//!   (Unix milliseconds, NULL when none is known); `seq` is the row's last change. Primary key
//!   (session_id, chat_id, contact_id).
//! - `changes.contact_id` (NULL for older kinds): the contact a `contact_updated` (kind 4) or
//!   `participants_changed` (kind 5) change names.
//!
//! It also empties `source_files`, so that the next sync reads every export again and stores
//! the people (and files) of chats imported before.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Contacts::Table)
                    .if_not_exists()
                    .col(string(Contacts::SessionId))
                    .col(string(Contacts::ContactId))
                    .col(text(Contacts::DisplayName))
                    .col(string_null(Contacts::Phone))
                    .col(string_null(Contacts::MatrixId))
                    .col(big_integer(Contacts::Seq))
                    .col(big_integer(Contacts::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(Contacts::SessionId)
                            .col(Contacts::ContactId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("contacts_session_seq")
                    .table(Contacts::Table)
                    .col(Contacts::SessionId)
                    .col(Contacts::Seq)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Participants::Table)
                    .if_not_exists()
                    .col(string(Participants::SessionId))
                    .col(string(Participants::ChatId))
                    .col(string(Participants::ContactId))
                    .col(big_integer_null(Participants::JoinedAt))
                    .col(big_integer_null(Participants::LeftAt))
                    .col(big_integer(Participants::Seq))
                    .col(big_integer(Participants::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(Participants::SessionId)
                            .col(Participants::ChatId)
                            .col(Participants::ContactId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("participants_session_seq")
                    .table(Participants::Table)
                    .col(Participants::SessionId)
                    .col(Participants::Seq)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Changes::Table)
                    .add_column(string_null(Changes::ContactId))
                    .to_owned(),
            )
            .await?;
        // Export files imported before this migration were read without their people (and
        // their files): forget their fingerprints so the next sync reads each once more.
        // Imports are idempotent, so that stores only what is new.
        manager
            .get_connection()
            .execute_unprepared("DELETE FROM source_files")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Changes::Table)
                    .drop_column(Changes::ContactId)
                    .to_owned(),
            )
            .await?;
        for table in [Participants::Table.into_iden(), Contacts::Table.into_iden()] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Contacts {
    Table,
    SessionId,
    ContactId,
    DisplayName,
    Phone,
    MatrixId,
    Seq,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Participants {
    Table,
    SessionId,
    ChatId,
    ContactId,
    JoinedAt,
    LeftAt,
    Seq,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Changes {
    Table,
    ContactId,
}

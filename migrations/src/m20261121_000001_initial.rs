//! The initial schema: sessions, chats, messages and the change log.
//!
//! Times are Unix milliseconds (BIGINT) so both backends store the same values. `seq` is per
//! session and assigned from `sessions.head_seq` inside the writing transaction.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    Source,
    HeadSeq,
    SyncState,
    SyncId,
    SyncStartedAt,
    SyncFinishedAt,
    SyncError,
    SyncProgress,
}

#[derive(DeriveIden)]
enum Chats {
    Table,
    Id,
    SessionId,
    ChatId,
    Name,
    Seq,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    SessionId,
    ChatId,
    ProviderMessageId,
    ClientMessageId,
    Sender,
    Text,
    Kind,
    Status,
    FromMe,
    SentAt,
    Seq,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Changes {
    Table,
    SessionId,
    Seq,
    Kind,
    ChatId,
    MessageId,
    Status,
    At,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .if_not_exists()
                    .col(string(Sessions::Id).primary_key())
                    .col(string(Sessions::Source))
                    .col(big_integer(Sessions::HeadSeq).default(0))
                    .col(small_integer(Sessions::SyncState).default(1))
                    .col(string_null(Sessions::SyncId))
                    .col(big_integer_null(Sessions::SyncStartedAt))
                    .col(big_integer_null(Sessions::SyncFinishedAt))
                    .col(text_null(Sessions::SyncError))
                    .col(text_null(Sessions::SyncProgress))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Chats::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Chats::Id))
                    .col(string(Chats::SessionId))
                    .col(string(Chats::ChatId))
                    .col(string(Chats::Name))
                    .col(big_integer(Chats::Seq))
                    .col(big_integer(Chats::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("chats_session_chat")
                    .table(Chats::Table)
                    .col(Chats::SessionId)
                    .col(Chats::ChatId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("chats_session_seq")
                    .table(Chats::Table)
                    .col(Chats::SessionId)
                    .col(Chats::Seq)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Messages::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Messages::Id))
                    .col(string(Messages::SessionId))
                    .col(string(Messages::ChatId))
                    .col(string(Messages::ProviderMessageId))
                    .col(string_null(Messages::ClientMessageId))
                    .col(text(Messages::Sender))
                    .col(text(Messages::Text))
                    .col(small_integer(Messages::Kind))
                    .col(small_integer(Messages::Status))
                    .col(boolean(Messages::FromMe))
                    .col(big_integer(Messages::SentAt))
                    .col(big_integer(Messages::Seq))
                    .col(big_integer(Messages::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("messages_session_seq")
                    .table(Messages::Table)
                    .col(Messages::SessionId)
                    .col(Messages::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("messages_session_chat_provider_id")
                    .table(Messages::Table)
                    .col(Messages::SessionId)
                    .col(Messages::ChatId)
                    .col(Messages::ProviderMessageId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("messages_session_client_id")
                    .table(Messages::Table)
                    .col(Messages::SessionId)
                    .col(Messages::ClientMessageId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Changes::Table)
                    .if_not_exists()
                    .col(string(Changes::SessionId))
                    .col(big_integer(Changes::Seq))
                    .col(small_integer(Changes::Kind))
                    .col(string(Changes::ChatId))
                    .col(big_integer_null(Changes::MessageId))
                    .col(small_integer_null(Changes::Status))
                    .col(big_integer(Changes::At))
                    .primary_key(Index::create().col(Changes::SessionId).col(Changes::Seq))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Changes::Table.into_iden(),
            Messages::Table.into_iden(),
            Chats::Table.into_iden(),
            Sessions::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

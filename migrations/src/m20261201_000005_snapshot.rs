//! Adds the index `messages_session_chat_seq` on `messages(session_id, chat_id, seq)`, so a
//! chat's messages by seq cursor (ListMessages with a chat) are an index range, not a scan of
//! the session; and `messages_session_chat_sent_at` on `messages(session_id, chat_id,
//! sent_at)`, so a chat's newest messages by send time (GetSnapshot reads them for every chat)
//! are one too.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("messages_session_chat_seq")
                    .table(Messages::Table)
                    .col(Messages::SessionId)
                    .col(Messages::ChatId)
                    .col(Messages::Seq)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("messages_session_chat_sent_at")
                    .table(Messages::Table)
                    .col(Messages::SessionId)
                    .col(Messages::ChatId)
                    .col(Messages::SentAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("messages_session_chat_sent_at")
                    .table(Messages::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("messages_session_chat_seq")
                    .table(Messages::Table)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    SessionId,
    ChatId,
    Seq,
    SentAt,
}

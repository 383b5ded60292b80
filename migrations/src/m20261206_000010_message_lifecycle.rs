//! A message's whole life (issue 17): relations, edits, deletions, reactions and
//! per-recipient receipts.
//!
//! New `messages` columns (all filled by sources that know them; defaults otherwise):
//! - `reply_to`: the quoted message's `provider_message_id` in the same chat, or NULL. Its
//!   server id is not stored: it is looked up when the message is read, so a reply stored
//!   before the message it quotes resolves once that message arrives.
//! - `forwarded`: NULL not forwarded, 1 forwarded, 2 forwarded many times.
//! - `forwarded_from`: the original sender's name, when the source gives it.
//! - `edited`: true when the text was edited (NULL otherwise); `edited_at`: when (Unix ms),
//!   NULL when the source does not say.
//!
//! Every new column is NULL for a message without that property, so a plain message stores no
//! byte more than before (PostgreSQL only sets bits of the row's null bitmap).
//! - `deleted_by` / `deleted_at`: who deleted the message for everyone, and when (Unix ms).
//!
//! New tables, keyed like `attachments` by (session_id, message_seq): the creation seq names a
//! message within its session and is known before a bulk insert reads ids back.
//! - `message_versions`: the earlier texts of an edited message; `replaced_at` (Unix ms) is
//!   when the next text replaced it. Key (session_id, message_seq, version), version from 0.
//! - `reactions`: one row per (message, sender, emoji); `at` (Unix ms); `provider_reaction_id`
//!   the source's id of the reaction event (a Matrix event id), so that its redaction finds it.
//! - `receipts`: one row per (message, recipient): `delivered_at`, `read_at` (Unix ms, NULL
//!   until known).
//! - `message_requests`: the idempotency keys of ReactToMessage, EditMessage and
//!   DeleteMessage, per session, with the message they changed.
//!
//! `changes.what`: for a message update (kind 3), what changed (1 edit, 2 deletion,
//! 3 reaction, 4 receipt); NULL for other changes and for updates logged before it existed.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        let columns = [
            text_null(Messages::ReplyTo),
            small_integer_null(Messages::Forwarded),
            text_null(Messages::ForwardedFrom),
            boolean_null(Messages::Edited),
            big_integer_null(Messages::EditedAt),
            text_null(Messages::DeletedBy),
            big_integer_null(Messages::DeletedAt),
        ];
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Messages::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Changes::Table)
                    .add_column(small_integer_null(Changes::What))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(MessageVersions::Table)
                    .if_not_exists()
                    .col(string(MessageVersions::SessionId))
                    .col(big_integer(MessageVersions::MessageSeq))
                    .col(integer(MessageVersions::Version))
                    .col(text(MessageVersions::Text))
                    .col(big_integer(MessageVersions::ReplacedAt))
                    .primary_key(
                        Index::create()
                            .col(MessageVersions::SessionId)
                            .col(MessageVersions::MessageSeq)
                            .col(MessageVersions::Version),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Reactions::Table)
                    .if_not_exists()
                    .col(string(Reactions::SessionId))
                    .col(big_integer(Reactions::MessageSeq))
                    .col(string(Reactions::Sender))
                    .col(string(Reactions::Emoji))
                    .col(big_integer(Reactions::At))
                    .col(string_null(Reactions::ProviderReactionId))
                    .primary_key(
                        Index::create()
                            .col(Reactions::SessionId)
                            .col(Reactions::MessageSeq)
                            .col(Reactions::Sender)
                            .col(Reactions::Emoji),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_reactions_session_provider_id")
                    .table(Reactions::Table)
                    .col(Reactions::SessionId)
                    .col(Reactions::ProviderReactionId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Receipts::Table)
                    .if_not_exists()
                    .col(string(Receipts::SessionId))
                    .col(big_integer(Receipts::MessageSeq))
                    .col(string(Receipts::Recipient))
                    .col(big_integer_null(Receipts::DeliveredAt))
                    .col(big_integer_null(Receipts::ReadAt))
                    .primary_key(
                        Index::create()
                            .col(Receipts::SessionId)
                            .col(Receipts::MessageSeq)
                            .col(Receipts::Recipient),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(MessageRequests::Table)
                    .if_not_exists()
                    .col(string(MessageRequests::SessionId))
                    .col(string(MessageRequests::RequestId))
                    .col(big_integer(MessageRequests::MessageId))
                    .col(big_integer(MessageRequests::At))
                    .primary_key(
                        Index::create()
                            .col(MessageRequests::SessionId)
                            .col(MessageRequests::RequestId),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            MessageRequests::Table.into_iden(),
            Receipts::Table.into_iden(),
            Reactions::Table.into_iden(),
            MessageVersions::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Changes::Table)
                    .drop_column(Changes::What)
                    .to_owned(),
            )
            .await?;
        for column in [
            Messages::ReplyTo,
            Messages::Forwarded,
            Messages::ForwardedFrom,
            Messages::Edited,
            Messages::EditedAt,
            Messages::DeletedBy,
            Messages::DeletedAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Messages::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    ReplyTo,
    Forwarded,
    ForwardedFrom,
    Edited,
    EditedAt,
    DeletedBy,
    DeletedAt,
}

#[derive(DeriveIden)]
enum Changes {
    Table,
    What,
}

#[derive(DeriveIden)]
enum MessageVersions {
    Table,
    SessionId,
    MessageSeq,
    Version,
    Text,
    ReplacedAt,
}

#[derive(DeriveIden)]
enum Reactions {
    Table,
    SessionId,
    MessageSeq,
    Sender,
    Emoji,
    At,
    ProviderReactionId,
}

#[derive(DeriveIden)]
enum Receipts {
    Table,
    SessionId,
    MessageSeq,
    Recipient,
    DeliveredAt,
    ReadAt,
}

#[derive(DeriveIden)]
enum MessageRequests {
    Table,
    SessionId,
    RequestId,
    MessageId,
    At,
}

//! Keeps why a message failed: `changes.error_code` and `changes.error_title`, set on a status
//! change (kind 1) to FAILED when the source says why (the WhatsApp Cloud API's
//! `statuses[].errors[0].code` and `.title`, for example `131047` and
//! `Re-engagement message`). NULL on every other change, and on failures the source gave no
//! reason for, so other rows store no byte more (PostgreSQL only sets bits of the row's null
//! bitmap).
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        let columns = [
            big_integer_null(Changes::ErrorCode),
            text_null(Changes::ErrorTitle),
        ];
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Changes::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Changes::ErrorCode, Changes::ErrorTitle] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Changes::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Changes {
    Table,
    ErrorCode,
    ErrorTitle,
}

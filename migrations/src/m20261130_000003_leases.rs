//! Adds `leases`: one row per (session, kind) naming the replica that holds a session's sync
//! run (`kind = 'sync'`) or live-source loop (`kind = 'live'`) until `expires_at` (Unix ms).
//! A holder renews its lease by heartbeat; any replica may take an expired one.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Leases::Table)
                    .if_not_exists()
                    .col(string(Leases::SessionId))
                    .col(string(Leases::Kind))
                    .col(string(Leases::Holder))
                    .col(big_integer(Leases::ExpiresAt))
                    .primary_key(Index::create().col(Leases::SessionId).col(Leases::Kind))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Leases::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Leases {
    Table,
    SessionId,
    Kind,
    Holder,
    ExpiresAt,
}

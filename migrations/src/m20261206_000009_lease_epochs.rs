//! Adds `leases.epoch`: the fencing token of a lease. A new holder (another replica, or the
//! same one after its lease lapsed) takes the lease with the epoch one higher; a renewal keeps
//! it. Every write made as a holder checks (holder, epoch) inside its own transaction, so a
//! replica that stalled past its lease can never write as the holder again. A released lease
//! keeps its row (holder `''`, expired), so epochs only grow.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Leases::Table)
                    .add_column(big_integer(Leases::Epoch).default(0))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Leases::Table)
                    .drop_column(Leases::Epoch)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Leases {
    Table,
    Epoch,
}

//! Schema migrations for chatsync, run at start-up by `Migrator::up`.
//!
//! One timestamped module per migration, each with `up` and `down`. Migrations are append-only:
//! a released migration is never edited, a new one is added.
pub use sea_orm_migration::prelude::*;

mod m20261121_000001_initial;
mod m20261121_000002_source_cursor;
mod m20261130_000003_leases;
mod m20261201_000004_source_files;
mod m20261201_000005_snapshot;
mod m20261201_000006_search;
mod m20261201_000007_contacts;
mod m20261201_000008_attachments;
mod m20261206_000009_lease_epochs;
mod m20261206_000010_message_lifecycle;
mod m20261206_000011_webhook_inbox;
mod m20261206_000012_webhook_cursors;
mod m20261206_000013_search_bulk;
mod m20261206_000014_status_errors;
mod m20261207_000015_send_claims;
mod m20261207_000016_search_ascii_pretest;
mod m20261207_000017_search_split_regexp;
mod m20261207_000018_client_id_partial_index;
mod m20261207_000019_search_index_by_writer;

pub use m20261201_000006_search::CJK_RANGES;

/// Every migration, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_initial::Migration),
            Box::new(m20261121_000002_source_cursor::Migration),
            Box::new(m20261130_000003_leases::Migration),
            Box::new(m20261201_000004_source_files::Migration),
            Box::new(m20261201_000005_snapshot::Migration),
            Box::new(m20261201_000006_search::Migration),
            Box::new(m20261201_000007_contacts::Migration),
            Box::new(m20261201_000008_attachments::Migration),
            Box::new(m20261206_000009_lease_epochs::Migration),
            Box::new(m20261206_000010_message_lifecycle::Migration),
            Box::new(m20261206_000011_webhook_inbox::Migration),
            Box::new(m20261206_000012_webhook_cursors::Migration),
            Box::new(m20261206_000013_search_bulk::Migration),
            Box::new(m20261206_000014_status_errors::Migration),
            Box::new(m20261207_000015_send_claims::Migration),
            Box::new(m20261207_000016_search_ascii_pretest::Migration),
            Box::new(m20261207_000017_search_split_regexp::Migration),
            Box::new(m20261207_000018_client_id_partial_index::Migration),
            Box::new(m20261207_000019_search_index_by_writer::Migration),
        ]
    }
}

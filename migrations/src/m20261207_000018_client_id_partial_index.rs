//! `messages_session_client_id`, the unique index on (session, idempotency key), holds only the
//! messages that have an idempotency key (`WHERE client_message_id IS NOT NULL`).
//!
//! Only messages sent through chatsync carry one; an imported or received message has none,
//! yet each put an entry with a NULL key into the index: one b-tree insert in six per imported
//! message on SQLite, for entries no lookup can find. Uniqueness is unchanged (NULLs were
//! never equal to each other), and every lookup by key (`client_message_id = ?` or `IN (…)`)
//! implies `IS NOT NULL`, so SQLite (<https://sqlite.org/partialindex.html>, "queries using
//! partial indexes") and PostgreSQL (predicate proof of a strict operator) still use it.
//!
//! Same statements on both backends; the down migration restores the full index.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const PARTIAL: &str = "DROP INDEX IF EXISTS messages_session_client_id;\n\
     CREATE UNIQUE INDEX messages_session_client_id ON messages (session_id, client_message_id) \
     WHERE client_message_id IS NOT NULL";

const FULL: &str = "DROP INDEX IF EXISTS messages_session_client_id;\n\
     CREATE UNIQUE INDEX messages_session_client_id ON messages (session_id, client_message_id)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(PARTIAL).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(FULL).await?;
        Ok(())
    }
}

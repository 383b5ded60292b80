//! SQLite: the search triggers test a text for CJK characters only when it is not pure ASCII.
//!
//! The triggers of `m20261201_000006_search` and `m20261206_000013_search_bulk` decide whether
//! a text goes into `messages_fts_trigram` with `text GLOB '*[…11 CJK ranges…]*'`. SQLite's
//! `patternCompare` runs that bracket expression at every character of every text written one
//! at a time: 9.9 % of all the server's instructions under `examples/load sends` (callgrind,
//! BENCHMARKS.md). Every trigger now first asks `length(CAST(text AS BLOB)) > length(text)`:
//! more bytes than characters, so at least one character outside ASCII (a blob's length is its
//! stored byte count; a text's is a count of its characters, up to a NUL if it holds one). A
//! text holding a CJK character always passes (each such character takes 3 or 4 bytes in
//! UTF-8), so the rows each index holds are exactly those it held before; the GLOB decides
//! only for the texts that pass. SQLite evaluates `AND` left to right and stops at the first
//! false operand.
//!
//! PostgreSQL: nothing (its partial trigram index has a condition of its own).
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

use crate::m20261201_000006_search::cjk_class;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// `{cjk}` stands for the bracket expression of the CJK ranges, `{has_cjk(x)}` for the pre-test
/// then the GLOB on `x.text`.
const SQLITE_UP: &[&str] = &[
    "DROP TRIGGER IF EXISTS messages_search_insert",
    "CREATE TRIGGER messages_search_insert AFTER INSERT ON messages \
     WHEN NOT EXISTS (SELECT 1 FROM messages_search_deferred) BEGIN \
       INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text); \
       INSERT INTO messages_fts_trigram(rowid, text) SELECT new.id, new.text \
         WHERE {has_cjk(new)}; \
     END",
    "DROP TRIGGER IF EXISTS messages_search_delete",
    "CREATE TRIGGER messages_search_delete AFTER DELETE ON messages BEGIN \
       INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text); \
       INSERT INTO messages_fts_trigram(messages_fts_trigram, rowid, text) \
         SELECT 'delete', old.id, old.text WHERE {has_cjk(old)}; \
     END",
    "DROP TRIGGER IF EXISTS messages_search_update",
    "CREATE TRIGGER messages_search_update AFTER UPDATE OF text ON messages BEGIN \
       INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text); \
       INSERT INTO messages_fts_trigram(messages_fts_trigram, rowid, text) \
         SELECT 'delete', old.id, old.text WHERE {has_cjk(old)}; \
       INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text); \
       INSERT INTO messages_fts_trigram(rowid, text) SELECT new.id, new.text \
         WHERE {has_cjk(new)}; \
     END",
];

/// The triggers as `m20261206_000013_search_bulk` left them.
const SQLITE_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS messages_search_insert",
    "CREATE TRIGGER messages_search_insert AFTER INSERT ON messages \
     WHEN NOT EXISTS (SELECT 1 FROM messages_search_deferred) BEGIN \
       INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text); \
       INSERT INTO messages_fts_trigram(rowid, text) SELECT new.id, new.text \
         WHERE new.text GLOB '*{cjk}*'; \
     END",
    "DROP TRIGGER IF EXISTS messages_search_delete",
    "CREATE TRIGGER messages_search_delete AFTER DELETE ON messages BEGIN \
       INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text); \
       INSERT INTO messages_fts_trigram(messages_fts_trigram, rowid, text) \
         SELECT 'delete', old.id, old.text WHERE old.text GLOB '*{cjk}*'; \
     END",
    "DROP TRIGGER IF EXISTS messages_search_update",
    "CREATE TRIGGER messages_search_update AFTER UPDATE OF text ON messages BEGIN \
       INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text); \
       INSERT INTO messages_fts_trigram(messages_fts_trigram, rowid, text) \
         SELECT 'delete', old.id, old.text WHERE old.text GLOB '*{cjk}*'; \
       INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text); \
       INSERT INTO messages_fts_trigram(rowid, text) SELECT new.id, new.text \
         WHERE new.text GLOB '*{cjk}*'; \
     END",
];

/// The script of `statements`, with `{has_cjk(new)}` and `{has_cjk(old)}` written out.
fn script(statements: &[&str]) -> String {
    let mut script = statements.join(";\n");
    for row in ["new", "old"] {
        script = script.replace(
            &format!("{{has_cjk({row})}}"),
            &format!("length(CAST({row}.text AS BLOB)) > length({row}.text) AND {row}.text GLOB '*{{cjk}}*'"),
        );
    }
    script.replace("{cjk}", &cjk_class())
}

async fn run(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    let db = manager.get_connection();
    if db.get_database_backend() == DbBackend::Postgres {
        return Ok(());
    }
    // One call, so one connection: see `m20261206_000013_search_bulk`.
    db.execute_unprepared(&script(statements)).await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, SQLITE_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, SQLITE_DOWN).await
    }
}

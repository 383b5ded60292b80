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

use crate::m20261201_000006_search::cjk_class;
use crate::m20261206_000013_search_bulk::run_on_sqlite;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The three triggers; `{has_cjk(new)}` and `{has_cjk(old)}` stand for the test on that row's
/// text: with the pre-test (up) or, as `m20261206_000013_search_bulk` left them, the GLOB alone
/// (down).
const SQLITE_TRIGGERS: &[&str] = &[
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

/// The triggers' script, with the ASCII pre-test before the GLOB or without it.
pub(crate) fn script(pretest: bool) -> String {
    let mut script = SQLITE_TRIGGERS.join(";\n");
    for row in ["new", "old"] {
        let glob = format!("{row}.text GLOB '*{}*'", cjk_class());
        let test = if pretest {
            format!("length(CAST({row}.text AS BLOB)) > length({row}.text) AND {glob}")
        } else {
            glob
        };
        script = script.replace(&format!("{{has_cjk({row})}}"), &test);
    }
    script
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on_sqlite(manager, &script(true)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on_sqlite(manager, &script(false)).await
    }
}

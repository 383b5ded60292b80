//! Full-text search over message texts (SearchMessages).
//!
//! SQLite: two FTS5 tables with external content (`content='messages'`, `content_rowid='id'`),
//! so they store only the index, not a second copy of the texts:
//! - `messages_fts`: tokenizer `unicode61 remove_diacritics 2` (words of any script that
//!   separates words; case and diacritics folded, so "cafe" finds "café");
//! - `messages_fts_trigram`: tokenizer `trigram` (substrings of 3+ characters: CJK, which has
//!   no spaces between words).
//!
//! Triggers on `messages` keep both in step inside the writing transaction: AFTER INSERT
//! indexes the new row, AFTER DELETE removes it, AFTER UPDATE OF text removes the old text and
//! indexes the new one (Matrix edits; redactions, which clear the text). Rows that exist when
//! the migration runs are indexed by FTS5's `rebuild`.
//!
//! PostgreSQL: `messages.search_vector`, a `tsvector` column GENERATED ALWAYS AS
//! `to_tsvector('simple', chatsync_search_fold(text))` STORED (so it is computed by every write
//! and by the migration's table rewrite for existing rows), with a GIN index.
//! `chatsync_search_fold(text)` is an IMMUTABLE wrapper around `unaccent` when that extension
//! can be created, and the identity otherwise (diacritics are then not folded). When `pg_trgm`
//! can be created, `messages_text_trigram` is a GIN trigram index on `text` that serves the
//! `ILIKE` substring matching used for CJK queries; without it those queries scan the session's
//! rows.
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const SQLITE_UP: &[&str] = &[
    "CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(text, content='messages', \
     content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    "CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts_trigram USING fts5(text, \
     content='messages', content_rowid='id', tokenize='trigram')",
    "CREATE TRIGGER IF NOT EXISTS messages_search_insert AFTER INSERT ON messages BEGIN \
       INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text); \
       INSERT INTO messages_fts_trigram(rowid, text) VALUES (new.id, new.text); \
     END",
    "CREATE TRIGGER IF NOT EXISTS messages_search_delete AFTER DELETE ON messages BEGIN \
       INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text); \
       INSERT INTO messages_fts_trigram(messages_fts_trigram, rowid, text) \
         VALUES ('delete', old.id, old.text); \
     END",
    "CREATE TRIGGER IF NOT EXISTS messages_search_update AFTER UPDATE OF text ON messages BEGIN \
       INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text); \
       INSERT INTO messages_fts_trigram(messages_fts_trigram, rowid, text) \
         VALUES ('delete', old.id, old.text); \
       INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text); \
       INSERT INTO messages_fts_trigram(rowid, text) VALUES (new.id, new.text); \
     END",
    "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
    "INSERT INTO messages_fts_trigram(messages_fts_trigram) VALUES ('rebuild')",
];

const SQLITE_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS messages_search_update",
    "DROP TRIGGER IF EXISTS messages_search_delete",
    "DROP TRIGGER IF EXISTS messages_search_insert",
    "DROP TABLE IF EXISTS messages_fts_trigram",
    "DROP TABLE IF EXISTS messages_fts",
];

/// Creates the extensions when this server has them and the role may (each attempt in its own
/// subtransaction, so a refusal leaves the migration going), then the fold function.
const POSTGRES_EXTENSIONS: &str = r#"
DO $do$
DECLARE
  unaccent_schema text;
  trgm_schema text;
BEGIN
  BEGIN
    CREATE EXTENSION IF NOT EXISTS unaccent;
  EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'chatsync search: unaccent unavailable (%), diacritics are not folded', SQLERRM;
  END;
  BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
  EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'chatsync search: pg_trgm unavailable (%), CJK queries scan', SQLERRM;
  END;
  SELECT n.nspname INTO unaccent_schema FROM pg_extension e
    JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'unaccent';
  IF unaccent_schema IS NULL THEN
    CREATE OR REPLACE FUNCTION chatsync_search_fold(t text) RETURNS text
      LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $f$ SELECT t $f$;
  ELSE
    EXECUTE format(
      'CREATE OR REPLACE FUNCTION chatsync_search_fold(t text) RETURNS text '
      'LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $f$ SELECT %I.unaccent(%L::regdictionary, t) $f$',
      unaccent_schema, unaccent_schema || '.unaccent');
  END IF;
  SELECT n.nspname INTO trgm_schema FROM pg_extension e
    JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm';
  IF trgm_schema IS NOT NULL THEN
    EXECUTE format(
      'CREATE INDEX IF NOT EXISTS messages_text_trigram ON messages USING gin (text %I.gin_trgm_ops)',
      trgm_schema);
  END IF;
END
$do$
"#;

const POSTGRES_UP: &[&str] = &[
    POSTGRES_EXTENSIONS,
    "ALTER TABLE messages ADD COLUMN IF NOT EXISTS search_vector tsvector \
     GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, chatsync_search_fold(text))) STORED",
    "CREATE INDEX IF NOT EXISTS messages_search_vector ON messages USING gin (search_vector)",
];

const POSTGRES_DOWN: &[&str] = &[
    "DROP INDEX IF EXISTS messages_search_vector",
    "DROP INDEX IF EXISTS messages_text_trigram",
    "ALTER TABLE messages DROP COLUMN IF EXISTS search_vector",
    "DROP FUNCTION IF EXISTS chatsync_search_fold(text)",
];

async fn run(manager: &SchemaManager<'_>, sqlite: &[&str], postgres: &[&str]) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let statements = match db.get_database_backend() {
        DbBackend::Postgres => postgres,
        _ => sqlite,
    };
    for statement in statements {
        db.execute_unprepared(statement).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, SQLITE_UP, POSTGRES_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, SQLITE_DOWN, POSTGRES_DOWN).await
    }
}

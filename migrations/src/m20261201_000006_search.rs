//! Full-text search over message texts (SearchMessages).
//!
//! SQLite: two FTS5 tables with external content (`content='messages'`, `content_rowid='id'`),
//! so they store only the index, not a second copy of the texts:
//! - `messages_fts`: tokenizer `unicode61 remove_diacritics 2` (words of any script that
//!   separates words; case and diacritics folded, so "cafe" finds "café");
//! - `messages_fts_trigram`: tokenizer `trigram` (substrings of 3+ characters: CJK, which has
//!   no spaces between words), over only the rows whose text holds a character of
//!   [`CJK_RANGES`] (so the cost of trigrams is paid only by texts that need them).
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
//! can be created, `messages_text_trigram` is a GIN trigram index on `text`, partial: `WHERE
//! chatsync_has_cjk(text)` (a text holding a character of [`CJK_RANGES`]); it serves the
//! `ILIKE` substring matching of CJK queries, which repeat that condition. Without `pg_trgm`
//! those queries scan the session's rows.
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The characters of scripts written without spaces between words (or, for Hangul, with
/// particles joined to words), as inclusive ranges: Hangul Jamo, CJK and Kangxi radicals,
/// Hiragana and Katakana, Hangul compatibility Jamo, Katakana extensions, CJK extension A,
/// CJK unified ideographs, Hangul syllables, CJK compatibility ideographs, half-width Katakana,
/// and CJK extensions B onwards. Only texts holding one of them go into the trigram indexes,
/// and only queries holding one of them are matched as substrings (`chatsync::search::is_cjk`
/// reads this list), so the two always agree. Part of this migration: never change it.
pub const CJK_RANGES: &[(char, char)] = &[
    ('\u{1100}', '\u{11FF}'),
    ('\u{2E80}', '\u{2FDF}'),
    ('\u{3040}', '\u{30FF}'),
    ('\u{3130}', '\u{318F}'),
    ('\u{31F0}', '\u{31FF}'),
    ('\u{3400}', '\u{4DBF}'),
    ('\u{4E00}', '\u{9FFF}'),
    ('\u{AC00}', '\u{D7AF}'),
    ('\u{F900}', '\u{FAFF}'),
    ('\u{FF66}', '\u{FF9F}'),
    ('\u{20000}', '\u{3FFFF}'),
];

/// `[a-b…]`: the ranges as a bracket expression (SQLite GLOB and PostgreSQL regex alike).
pub(crate) fn cjk_class() -> String {
    let mut class = String::from("[");
    for (from, to) in CJK_RANGES {
        class.push(*from);
        class.push('-');
        class.push(*to);
    }
    class.push(']');
    class
}

/// SQLite: `{cjk}` stands for the bracket expression of [`CJK_RANGES`].
const SQLITE_UP: &[&str] = &[
    "CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(text, content='messages', \
     content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    // Holds only the rows whose text has a CJK character (never `rebuild` it: that would
    // index every row).
    "CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts_trigram USING fts5(text, \
     content='messages', content_rowid='id', tokenize='trigram')",
    "CREATE TRIGGER IF NOT EXISTS messages_search_insert AFTER INSERT ON messages BEGIN \
       INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text); \
       INSERT INTO messages_fts_trigram(rowid, text) SELECT new.id, new.text \
         WHERE new.text GLOB '*{cjk}*'; \
     END",
    "CREATE TRIGGER IF NOT EXISTS messages_search_delete AFTER DELETE ON messages BEGIN \
       INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text); \
       INSERT INTO messages_fts_trigram(messages_fts_trigram, rowid, text) \
         SELECT 'delete', old.id, old.text WHERE old.text GLOB '*{cjk}*'; \
     END",
    "CREATE TRIGGER IF NOT EXISTS messages_search_update AFTER UPDATE OF text ON messages BEGIN \
       INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text); \
       INSERT INTO messages_fts_trigram(messages_fts_trigram, rowid, text) \
         SELECT 'delete', old.id, old.text WHERE old.text GLOB '*{cjk}*'; \
       INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text); \
       INSERT INTO messages_fts_trigram(rowid, text) SELECT new.id, new.text \
         WHERE new.text GLOB '*{cjk}*'; \
     END",
    "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
    "INSERT INTO messages_fts_trigram(rowid, text) SELECT id, text FROM messages \
     WHERE text GLOB '*{cjk}*'",
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
  CREATE OR REPLACE FUNCTION chatsync_has_cjk(t text) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $f$ SELECT t ~ '{cjk}' $f$;
  SELECT n.nspname INTO trgm_schema FROM pg_extension e
    JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm';
  IF trgm_schema IS NOT NULL THEN
    EXECUTE format(
      'CREATE INDEX IF NOT EXISTS messages_text_trigram ON messages '
      'USING gin (text %I.gin_trgm_ops) WHERE chatsync_has_cjk(text)',
      trgm_schema);
  END IF;
END
$do$
"#;

/// `chatsync_search_split(t)`: ASCII punctuation becomes spaces, so that PostgreSQL's parser
/// splits host names, e-mail addresses, file names and decimals (`example.com`,
/// `IMG-20240102-WA0001.jpg`, `3.14`) into the words SQLite's `unicode61` sees, which are the
/// terms a query is split into (`crate::search`). `translate` knows no locale: letters of any
/// script stay as they are. `m20261207_000017_search_split_regexp` redefines it with the same
/// results at a ninth of the cost; this text is what its `down` puts back.
pub(crate) const POSTGRES_SPLIT: &str = r##"
CREATE OR REPLACE FUNCTION chatsync_search_split(t text) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
  $f$ SELECT translate(t, $p$!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~$p$, repeat(' ', 32)) $f$
"##;

const POSTGRES_UP: &[&str] = &[
    POSTGRES_EXTENSIONS,
    POSTGRES_SPLIT,
    "ALTER TABLE messages ADD COLUMN IF NOT EXISTS search_vector tsvector \
     GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, \
     chatsync_search_split(chatsync_search_fold(text)))) STORED",
    "CREATE INDEX IF NOT EXISTS messages_search_vector ON messages USING gin (search_vector)",
];

const POSTGRES_DOWN: &[&str] = &[
    "DROP INDEX IF EXISTS messages_search_vector",
    "DROP INDEX IF EXISTS messages_text_trigram",
    "ALTER TABLE messages DROP COLUMN IF EXISTS search_vector",
    "DROP FUNCTION IF EXISTS chatsync_search_split(text)",
    "DROP FUNCTION IF EXISTS chatsync_search_fold(text)",
    "DROP FUNCTION IF EXISTS chatsync_has_cjk(text)",
];

async fn run(manager: &SchemaManager<'_>, sqlite: &[&str], postgres: &[&str]) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let statements = match db.get_database_backend() {
        DbBackend::Postgres => postgres,
        _ => sqlite,
    };
    let cjk = cjk_class();
    for statement in statements {
        db.execute_unprepared(&statement.replace("{cjk}", &cjk))
            .await?;
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

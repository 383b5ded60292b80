//! PostgreSQL: `chatsync_search_split(t)` replaces ASCII punctuation with one `regexp_replace`
//! instead of `translate`.
//!
//! The function (`m20261201_000006_search`) feeds `messages.search_vector`, the generated
//! `tsvector`, so every message written pays for it. `translate` compares each character of
//! the text with each of the 32 characters it replaces: on the chitchat corpus (258,145 texts)
//! it took 0.9 s of CPU, 2.6 µs a text, and a third of the search column's cost at import.
//! `regexp_replace` with the same 32 characters as a bracket expression of four code-point
//! ranges (`!-/`, `:-@`, `[-\``, `{-~`) took 0.12 s on the same texts (BENCHMARKS.md).
//!
//! The results are the same for every text, so the stored vectors and their index stay valid
//! and nothing is recomputed: PostgreSQL's regular expressions compare bracket ranges by code
//! point, whatever the collation. Checked before this migration was written, on every code
//! point from U+0001 to U+30D40 (surrogates excepted) and on the corpus, under the `C` and ICU
//! `und` collations; the api test `search::search_split_matches_translate_on_postgres` keeps
//! checking it on every character of the Basic Multilingual Plane and on texts in several
//! scripts.
//!
//! SQLite: nothing (its `unicode61` tokenizer splits at punctuation itself).
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::m20261201_000006_search::POSTGRES_SPLIT;
use crate::m20261206_000013_search_bulk::run_on;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The function after this migration: ASCII punctuation (U+0021..U+002F, U+003A..U+0040,
/// U+005B..U+0060, U+007B..U+007E) becomes spaces.
pub const SPLIT_REGEXP: &str = r#"
CREATE OR REPLACE FUNCTION chatsync_search_split(t text) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
  $f$ SELECT regexp_replace(t, '[!-/:-@\[-`{-~]', ' ', 'g') $f$
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on(manager, DbBackend::Postgres, SPLIT_REGEXP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on(manager, DbBackend::Postgres, POSTGRES_SPLIT).await
    }
}

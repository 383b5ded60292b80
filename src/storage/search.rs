//! SearchMessages' reads: ranked full-text matches of a session's messages.
//!
//! The indexes are kept by the database in the writing transaction (migration
//! `m20261201_000006_search`): on SQLite, FTS5 tables `messages_fts` (`unicode61
//! remove_diacritics 2`) and `messages_fts_trigram` (`trigram`) with external content, fed by
//! the transaction that inserts messages (`super::search_index`) and kept by triggers through
//! edits and deletions; on PostgreSQL, the generated `messages.search_vector` with a GIN index
//! (and a `pg_trgm` index on `text` when available). Reads take no lock.
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement, Value};

use super::Store;
use super::entities::message;
use super::rows::message_from_row;
use crate::error::Result;
use crate::model::{Message, MessageKind, SearchFilter};
use crate::search::{SearchMode, SearchQuery};

/// A matching message and its relevance (higher is better).
#[derive(Debug, Clone)]
pub struct ScoredMessage {
    pub message: Message,
    pub score: f64,
}

const COLUMNS: &str = "m.id, m.session_id, m.chat_id, m.provider_message_id, \
     m.client_message_id, m.sender, m.text, m.kind, m.status, m.from_me, m.sent_at, m.seq, \
     m.updated_at, m.reply_to, m.forwarded, m.forwarded_from, m.edited, m.edited_at, \
     m.deleted_by, m.deleted_at";

/// SQL text and its values, with placeholders in the backend's style.
struct Sql {
    backend: DbBackend,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    fn new(backend: DbBackend) -> Self {
        Self {
            backend,
            text: String::with_capacity(512),
            values: Vec::new(),
        }
    }

    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder bound to `value`.
    fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.values.push(value.into());
        match self.backend {
            DbBackend::Postgres => {
                let n = self.values.len();
                self.text.push_str(&format!("${n}"));
            }
            _ => self.text.push('?'),
        }
        self
    }
}

/// A term as an FTS5 string (terms hold only letters, digits and marks; quotes are doubled
/// anyway).
fn fts_phrase(term: &str) -> String {
    format!("\"{}\"", term.replace('"', "\"\""))
}

/// A term as a `LIKE` pattern matching it anywhere (terms hold no `%`, `_` or `\`, which are
/// not letters or digits).
fn anywhere(term: &str) -> String {
    format!("%{term}%")
}

impl Store {
    /// The largest message id of the whole store (0 when empty): the bound that keeps later
    /// pages of a search to the messages of its first page.
    pub async fn max_message_id(&self) -> Result<i64> {
        let backend = self.db.get_database_backend();
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                backend,
                "SELECT COALESCE(MAX(id), 0) AS max_id FROM messages",
            ))
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<i64>("", "max_id")?,
            None => 0,
        })
    }

    /// The session's messages matching `query` and `filter` (deleted messages never do), best
    /// first (ties: the larger id first), skipping `offset`, at most `limit`.
    pub async fn search(
        &self,
        session_id: &str,
        query: &SearchQuery,
        filter: &SearchFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<ScoredMessage>> {
        let backend = self.db.get_database_backend();
        let mut sql = Sql::new(backend);
        let postgres = backend == DbBackend::Postgres;
        sql.push("SELECT ").push(COLUMNS);
        match (query.mode, postgres) {
            (SearchMode::Words, false) => {
                let phrase: Vec<String> = query.terms.iter().map(|t| fts_phrase(t)).collect();
                sql.push(", -bm25(messages_fts) AS score FROM messages_fts f ")
                    .push("JOIN messages m ON m.id = f.rowid WHERE messages_fts MATCH ")
                    .bind(phrase.join(" "));
            }
            (SearchMode::Words, true) => {
                sql.push(", ts_rank(m.search_vector, q)::float8 AS score FROM messages m ")
                    .push("CROSS JOIN plainto_tsquery('simple'::regconfig, ")
                    .push("chatsync_search_split(chatsync_search_fold(")
                    .bind(query.terms.join(" "))
                    .push("))) AS q WHERE m.search_vector @@ q");
            }
            (SearchMode::Substrings, false) => {
                // Trigrams need 3 characters; shorter terms are matched with LIKE.
                let (long, short): (Vec<&String>, Vec<&String>) =
                    query.terms.iter().partition(|t| t.chars().count() >= 3);
                if long.is_empty() {
                    sql.push(", 0.0 AS score FROM messages m WHERE 1 = 1");
                } else {
                    let phrase: Vec<String> = long.iter().map(|t| fts_phrase(t)).collect();
                    sql.push(", -bm25(messages_fts_trigram) AS score FROM messages_fts_trigram f ")
                        .push("JOIN messages m ON m.id = f.rowid WHERE messages_fts_trigram MATCH ")
                        .bind(phrase.join(" "));
                }
                for term in short {
                    sql.push(" AND m.text LIKE ").bind(anywhere(term));
                }
            }
            (SearchMode::Substrings, true) => {
                // The condition of the partial trigram index, which every match meets (its
                // terms hold a CJK character), so the planner may use that index.
                sql.push(", 0::float8 AS score FROM messages m WHERE chatsync_has_cjk(m.text)");
                for term in &query.terms {
                    sql.push(" AND m.text ILIKE ").bind(anywhere(term));
                }
            }
        }
        sql.push(" AND m.session_id = ").bind(session_id);
        sql.push(" AND m.kind <> ")
            .bind(MessageKind::Deleted.as_i16());
        sql.push(" AND m.id <= ").bind(filter.max_id);
        if !filter.chat_ids.is_empty() {
            sql.push(" AND m.chat_id IN (");
            for (i, chat_id) in filter.chat_ids.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(chat_id.as_str());
            }
            sql.push(")");
        }
        if let Some(after) = filter.sent_after_ms {
            sql.push(" AND m.sent_at >= ").bind(after);
        }
        if let Some(before) = filter.sent_before_ms {
            sql.push(" AND m.sent_at < ").bind(before);
        }
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        sql.push(" ORDER BY score DESC, m.id DESC LIMIT ")
            .bind(clamp(limit))
            .push(" OFFSET ")
            .bind(clamp(offset));
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                backend, sql.text, sql.values,
            ))
            .await?;
        let mut hits = rows
            .into_iter()
            .map(|row| {
                let score = row.try_get::<f64>("", "score")?;
                let model = message::Model::from_query_result(&row, "")?;
                Ok(ScoredMessage {
                    message: message_from_row(model),
                    score,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.fill_details(hits.iter_mut().map(|hit| &mut hit.message))
            .await?;
        Ok(hits)
    }
}

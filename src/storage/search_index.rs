//! SQLite: the search indexes are fed by the transaction that inserts the messages (migration
//! `m20261207_000019_search_index_by_writer`, which dropped the per-row insert trigger). Every
//! path that inserts messages (an import, a send) calls [`WriteTxn::index_for_search`] after
//! its rows. Edits and deletions are still kept by the UPDATE and DELETE triggers.
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

use super::WriteTxn;
use crate::error::Result;
use crate::search::has_cjk;

/// Seqs per statement feeding `messages_fts_trigram`.
const TRIGRAM_SEQS_PER_STATEMENT: usize = 500;

impl WriteTxn {
    /// SQLite: puts messages this transaction inserted into the search indexes, given as
    /// `(seq, text)` of each, in any order: all of them into `messages_fts`, with one
    /// `INSERT … SELECT` over the seqs from the least to the greatest (through the unique
    /// `(session_id, seq)` index), and those whose text holds a CJK character ([`has_cjk`])
    /// into `messages_fts_trigram` too, by their seqs. So that range must hold no message but
    /// these: true of the seqs one insert took, since seqs are handed out in order by the
    /// session's one writer and a message's seq never changes. Nothing on PostgreSQL (each
    /// row's own statement fills its generated `tsvector`) or when `inserted` is empty.
    pub(super) async fn index_for_search(&self, inserted: &[(u64, &str)]) -> Result<()> {
        if self.conn().get_database_backend() != DbBackend::Sqlite {
            return Ok(());
        }
        let (Some(least), Some(greatest)) = (
            inserted.iter().map(|(seq, _)| *seq).min(),
            inserted.iter().map(|(seq, _)| *seq).max(),
        ) else {
            return Ok(());
        };
        let session_id = self.session_id();
        self.conn()
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "INSERT INTO messages_fts(rowid, text) SELECT id, text FROM messages \
                 WHERE session_id = ? AND seq BETWEEN ? AND ?",
                [
                    session_id.into(),
                    (least as i64).into(),
                    (greatest as i64).into(),
                ],
            ))
            .await?;
        // The trigram index holds only texts with a CJK character: the test the triggers made
        // with a GLOB over the same ranges, made here at a fraction of its cost.
        let cjk: Vec<i64> = inserted
            .iter()
            .filter(|(_, text)| has_cjk(text))
            .map(|(seq, _)| *seq as i64)
            .collect();
        for seqs in cjk.chunks(TRIGRAM_SEQS_PER_STATEMENT) {
            let mut sql = String::from(
                "INSERT INTO messages_fts_trigram(rowid, text) SELECT id, text FROM messages \
                 WHERE session_id = ? AND seq IN (",
            );
            for i in 0..seqs.len() {
                sql.push_str(if i == 0 { "?" } else { ", ?" });
            }
            sql.push_str(") ORDER BY id");
            let mut values: Vec<Value> = Vec::with_capacity(seqs.len() + 1);
            values.push(session_id.into());
            values.extend(seqs.iter().map(|&seq| seq.into()));
            self.conn()
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Sqlite,
                    sql,
                    values,
                ))
                .await?;
        }
        Ok(())
    }
}

//! Source-file fingerprints: what a sync run knows of each file it imported in full, so that a
//! later run can skip the files that have not changed (see `service::sync`).
//!
//! A record is written in the same transaction as the import it describes, so it never claims
//! more than what is stored.
use std::collections::HashMap;

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::entities::source_file;
use super::{Store, WriteTxn};
use crate::error::Result;

/// A file as it was when it was imported: size in bytes, modification time in Unix
/// nanoseconds, and the SHA-256 of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileFingerprint {
    pub size: u64,
    pub mtime_ns: i64,
    pub sha256: [u8; 32],
}

/// One stored fingerprint of a session's file (`source_files`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// The chat the file was imported into.
    pub chat_id: String,
    pub fingerprint: FileFingerprint,
    /// When the file's size and time were read, before its bytes were (Unix milliseconds).
    pub checked_at_ms: i64,
    /// The per-chat limit of the import; `None`: the whole history.
    pub limit_per_chat: Option<u64>,
    /// Lines the import could not place in any message.
    pub unplaced_lines: u64,
}

impl Store {
    /// The stored fingerprints of a session's files, by locator (the file's path).
    ///
    /// Errors: `Storage` on a database failure.
    pub async fn source_files(&self, session_id: &str) -> Result<HashMap<String, FileRecord>> {
        let rows = source_file::Entity::find()
            .filter(source_file::Column::SessionId.eq(session_id))
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let sha256 = from_hex(&row.sha256)?;
                let record = FileRecord {
                    chat_id: row.chat_id,
                    fingerprint: FileFingerprint {
                        size: row.size as u64,
                        mtime_ns: row.mtime_ns,
                        sha256,
                    },
                    checked_at_ms: row.checked_at,
                    limit_per_chat: row.limit_per_chat.map(|limit| limit as u64),
                    unplaced_lines: row.unplaced_lines as u64,
                };
                Some((row.locator, record))
            })
            .collect())
    }
}

/// Rows per multi-row upsert: 9 columns, well under SQLite's bound-variable limit.
const FILES_PER_INSERT: usize = 1_000;

impl WriteTxn {
    /// Stores (or replaces) the fingerprints of these files, by locator.
    pub(super) async fn record_files(&mut self, files: &[(&str, &FileRecord)]) -> Result<()> {
        for chunk in files.chunks(FILES_PER_INSERT) {
            let rows = chunk
                .iter()
                .map(|(locator, record)| source_file::ActiveModel {
                    session_id: Set(self.session_id().to_owned()),
                    locator: Set((*locator).to_owned()),
                    chat_id: Set(record.chat_id.clone()),
                    size: Set(record.fingerprint.size as i64),
                    mtime_ns: Set(record.fingerprint.mtime_ns),
                    sha256: Set(to_hex(&record.fingerprint.sha256)),
                    checked_at: Set(record.checked_at_ms),
                    limit_per_chat: Set(record.limit_per_chat.map(|limit| limit as i64)),
                    unplaced_lines: Set(record.unplaced_lines as i64),
                });
            source_file::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::columns([
                        source_file::Column::SessionId,
                        source_file::Column::Locator,
                    ])
                    .update_columns([
                        source_file::Column::ChatId,
                        source_file::Column::Size,
                        source_file::Column::MtimeNs,
                        source_file::Column::Sha256,
                        source_file::Column::CheckedAt,
                        source_file::Column::LimitPerChat,
                        source_file::Column::UnplacedLines,
                    ])
                    .to_owned(),
                )
                .exec_without_returning(self.conn())
                .await?;
        }
        Ok(())
    }
}

/// A digest as stored: lowercase hex.
fn to_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// A stored digest: 64 hex digits (either case), else `None`.
fn from_hex(text: &str) -> Option<[u8; 32]> {
    hex::FromHex::from_hex(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_other_text() {
        let digest: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(from_hex(&to_hex(&digest)), Some(digest));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex(&"zz".repeat(32)), None);
    }
}

//! Attachments: the files of messages (`attachments` table), written in the message's own
//! write transaction and read back in one query per page of messages.
//!
//! A message's attachments are keyed by its creation seq (unique per session, never changed),
//! so bulk imports need not read message ids back. Only `Media` messages carry attachments:
//! reads skip the lookup for a page without any.
use std::collections::HashMap;

use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{attachment, message};
use super::{Store, WriteTxn};
use crate::error::Result;
use crate::model::{Attachment, Message, MessageKind, NewMessage};

impl WriteTxn {
    /// Inserts the attachments of messages just inserted, given as `(seq, message)`.
    pub(super) async fn insert_attachments(&self, messages: &[(u64, &NewMessage)]) -> Result<()> {
        let rows: Vec<attachment::ActiveModel> = messages
            .iter()
            .flat_map(|(seq, message)| {
                message
                    .attachments
                    .iter()
                    .enumerate()
                    .map(move |(ordinal, file)| attachment::ActiveModel {
                        session_id: Set(self.session_id().to_owned()),
                        message_seq: Set(*seq as i64),
                        ordinal: Set(ordinal as i32),
                        file_name: Set(super::storable(&file.file_name).into_owned()),
                        mime_type: Set(super::storable(&file.mime_type).into_owned()),
                        size: Set(file.size_bytes.min(i64::MAX as u64) as i64),
                        sha256: Set(file.sha256.clone()),
                        stored: Set(file.stored),
                    })
            })
            .collect();
        self.insert_rows(&rows).await?;
        Ok(())
    }
}

/// Fills in the attachments of the `Media` messages among `messages`: one query per 500 such
/// messages of a session, none when there are none.
pub(super) async fn fill<'a>(
    db: &impl ConnectionTrait,
    messages: impl IntoIterator<Item = &'a mut Message>,
) -> Result<()> {
    let mut messages: Vec<&mut Message> = messages
        .into_iter()
        .filter(|message| message.kind == MessageKind::Media)
        .collect();
    let mut wanted: HashMap<String, Vec<i64>> = HashMap::new();
    for message in messages.iter() {
        if message.kind == MessageKind::Media {
            wanted
                .entry(message.session_id.clone())
                .or_default()
                .push(message.seq as i64);
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let mut found: HashMap<(String, u64), Vec<Attachment>> = HashMap::new();
    for (session_id, seqs) in wanted {
        for chunk in seqs.chunks(500) {
            let rows = attachment::Entity::find()
                .filter(attachment::Column::SessionId.eq(session_id.as_str()))
                .filter(attachment::Column::MessageSeq.is_in(chunk.iter().copied()))
                .order_by_asc(attachment::Column::MessageSeq)
                .order_by_asc(attachment::Column::Ordinal)
                .all(db)
                .await?;
            for row in rows {
                found
                    .entry((row.session_id.clone(), row.message_seq as u64))
                    .or_default()
                    .push(attachment_from_row(row));
            }
        }
    }
    for message in messages.iter_mut() {
        // A page of changes can hold one message more than once (created, then updated).
        if let Some(files) = found.get(&(message.session_id.clone(), message.seq)) {
            message.attachments = files.clone();
        }
    }
    Ok(())
}

fn attachment_from_row(row: attachment::Model) -> Attachment {
    Attachment {
        file_name: row.file_name,
        mime_type: row.mime_type,
        size_bytes: row.size.max(0) as u64,
        sha256: row.sha256,
        stored: row.stored,
    }
}

impl Store {
    /// The MIME type of a stored blob that an attachment of a message of this session
    /// references, or `None` when none does (a session never reads another session's blobs
    /// through it). Attachments of messages deleted upstream do not count.
    pub async fn session_media(&self, session_id: &str, sha256: &str) -> Result<Option<String>> {
        let rows: Vec<(i64, String)> = attachment::Entity::find()
            .select_only()
            .column(attachment::Column::MessageSeq)
            .column(attachment::Column::MimeType)
            .filter(attachment::Column::SessionId.eq(session_id))
            .filter(attachment::Column::Sha256.eq(sha256))
            .filter(attachment::Column::Stored.eq(true))
            .limit(100)
            .into_tuple()
            .all(&self.db)
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let shown: Option<i64> = message::Entity::find()
            .select_only()
            .column(message::Column::Seq)
            .filter(message::Column::SessionId.eq(session_id))
            .filter(message::Column::Seq.is_in(rows.iter().map(|(seq, _)| *seq)))
            .filter(message::Column::Kind.ne(MessageKind::Deleted.as_i16()))
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(shown.and_then(|seq| {
            rows.into_iter()
                .find(|(row_seq, _)| *row_seq == seq)
                .map(|(_, mime_type)| mime_type)
        }))
    }
}

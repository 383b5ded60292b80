//! Reads by seq cursor: chat and message listings, and the change feed that replay and live
//! delivery read (`seq > cursor`). Reads take no lock: committed seqs form a prefix.
use std::collections::HashMap;

use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{change, chat, message};
use super::rows::{chat_from_row, message_from_row};
use super::{Store, Take};
use crate::error::Result;
use crate::model::{
    Change, Chat, Message, MessageChange, MessageStatus, StatusError, StatusUpdate, SyncState,
};

impl Store {
    /// Chats with `seq > after_seq`, in seq order, at most `limit`.
    pub async fn list_chats(
        &self,
        session_id: &str,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<Chat>> {
        Ok(chat::Entity::find()
            .filter(chat::Column::SessionId.eq(session_id))
            .filter(chat::Column::Seq.gt(after_seq as i64))
            .order_by_asc(chat::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(chat_from_row)
            .collect())
    }

    /// Messages with `after_seq < seq < before_seq` (`None`: no upper bound), optionally of
    /// one chat, returned in ascending seq order. At most `limit`: the oldest of the range
    /// with [`Take::Oldest`] (paging forwards), the newest with [`Take::Newest`] (paging
    /// backwards).
    pub async fn list_messages(
        &self,
        session_id: &str,
        chat_id: Option<&str>,
        after_seq: u64,
        before_seq: Option<u64>,
        take: Take,
        limit: u64,
    ) -> Result<Vec<Message>> {
        let seq = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        let mut query = message::Entity::find()
            .filter(message::Column::SessionId.eq(session_id))
            .filter(message::Column::Seq.gt(seq(after_seq)));
        if let Some(before_seq) = before_seq {
            query = query.filter(message::Column::Seq.lt(seq(before_seq)));
        }
        if let Some(chat_id) = chat_id {
            query = query.filter(message::Column::ChatId.eq(chat_id));
        }
        query = match take {
            Take::Oldest => query.order_by_asc(message::Column::Seq),
            Take::Newest => query.order_by_desc(message::Column::Seq),
        };
        let mut messages: Vec<Message> = query
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(message_from_row)
            .collect();
        if take == Take::Newest {
            messages.reverse();
        }
        self.fill_details(&mut messages).await?;
        Ok(messages)
    }

    /// The changes with `after_seq < seq <= up_to`, in seq order, at most about `limit`,
    /// optionally only of some chats. Returns them with the seq the read reached: every
    /// change up to that seq has been returned (or filtered out), so the next read starts
    /// there. It equals `up_to` when nothing is left.
    pub async fn changes(
        &self,
        session_id: &str,
        chat_ids: &[String],
        after_seq: u64,
        up_to: u64,
        limit: u64,
    ) -> Result<(Vec<Change>, u64)> {
        if up_to <= after_seq {
            return Ok((Vec::new(), after_seq));
        }
        let mut created = message::Entity::find()
            .filter(message::Column::SessionId.eq(session_id))
            .filter(message::Column::Seq.gt(after_seq as i64))
            .filter(message::Column::Seq.lte(up_to as i64));
        let mut logged = change::Entity::find()
            .filter(change::Column::SessionId.eq(session_id))
            .filter(change::Column::Seq.gt(after_seq as i64))
            .filter(change::Column::Seq.lte(up_to as i64));
        if !chat_ids.is_empty() {
            created = created.filter(message::Column::ChatId.is_in(chat_ids.iter().cloned()));
            // Contacts and sync runs belong to no chat: they pass every filter
            // (`Change::passes`).
            logged = logged.filter(
                Condition::any()
                    .add(change::Column::ChatId.is_in(chat_ids.iter().cloned()))
                    .add(change::Column::Kind.is_in([change::KIND_CONTACT, change::KIND_RUN])),
            );
        }
        let created = created
            .order_by_asc(message::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?;
        let logged = logged
            .order_by_asc(change::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?;
        // A full page may have more rows behind it: only changes up to the smaller page end
        // are known to be complete.
        let mut reached = up_to;
        if created.len() as u64 == limit
            && let Some(last) = created.last()
        {
            reached = std::cmp::Ord::min(reached, last.seq as u64);
        }
        if logged.len() as u64 == limit
            && let Some(last) = logged.last()
        {
            reached = std::cmp::Ord::min(reached, last.seq as u64);
        }

        let status_message_ids: Vec<i64> = logged
            .iter()
            .filter(|row| row.kind == change::KIND_STATUS)
            .filter_map(|row| row.message_id)
            .collect();
        let updated_ids: Vec<i64> = logged
            .iter()
            .filter(|row| row.kind == change::KIND_MESSAGE)
            .filter_map(|row| row.message_id)
            .collect();
        // A message update carries the message as stored now.
        let updated: HashMap<i64, Message> = if updated_ids.is_empty() {
            HashMap::new()
        } else {
            message::Entity::find()
                .filter(message::Column::Id.is_in(updated_ids))
                .all(&self.db)
                .await?
                .into_iter()
                .map(|row| (row.id, message_from_row(row)))
                .collect()
        };
        let provider_ids: HashMap<i64, String> = if status_message_ids.is_empty() {
            HashMap::new()
        } else {
            message::Entity::find()
                .select_only()
                .column(message::Column::Id)
                .column(message::Column::ProviderMessageId)
                .filter(message::Column::Id.is_in(status_message_ids))
                .into_tuple::<(i64, String)>()
                .all(&self.db)
                .await?
                .into_iter()
                .collect()
        };
        let chat_ids_changed: Vec<String> = logged
            .iter()
            .filter(|row| row.kind == change::KIND_CHAT)
            .map(|row| row.chat_id.clone())
            .collect();
        let chat_names: HashMap<String, String> = if chat_ids_changed.is_empty() {
            HashMap::new()
        } else {
            chat::Entity::find()
                .filter(chat::Column::SessionId.eq(session_id))
                .filter(chat::Column::ChatId.is_in(chat_ids_changed))
                .all(&self.db)
                .await?
                .into_iter()
                .map(|row| (row.chat_id, row.name))
                .collect()
        };

        // Contacts and participants, as stored now.
        let contact_ids: Vec<String> = logged
            .iter()
            .filter(|row| row.kind == change::KIND_CONTACT)
            .filter_map(|row| row.contact_id.clone())
            .collect();
        let contacts = if contact_ids.is_empty() {
            HashMap::new()
        } else {
            self.contacts_by_id(session_id, &contact_ids).await?
        };
        let participant_keys: Vec<(String, String)> = logged
            .iter()
            .filter(|row| row.kind == change::KIND_PARTICIPANT)
            .filter_map(|row| Some((row.chat_id.clone(), row.contact_id.clone()?)))
            .collect();
        let participants = if participant_keys.is_empty() {
            HashMap::new()
        } else {
            self.participants_by_key(session_id, &participant_keys)
                .await?
        };

        let mut changes: Vec<Change> = created
            .into_iter()
            .filter(|row| row.seq as u64 <= reached)
            .map(|row| Change::MessageCreated(message_from_row(row)))
            .collect();
        for row in logged.into_iter().filter(|row| row.seq as u64 <= reached) {
            let seq = row.seq as u64;
            let change = match row.kind {
                change::KIND_STATUS => Change::StatusUpdated(StatusUpdate {
                    seq,
                    message_id: row.message_id.unwrap_or_default(),
                    provider_message_id: row
                        .message_id
                        .and_then(|id| provider_ids.get(&id).cloned())
                        .unwrap_or_default(),
                    chat_id: row.chat_id,
                    status: MessageStatus::from_i16(row.status.unwrap_or_default()),
                    updated_at_ms: row.at,
                    error: row.error_code.map(|code| StatusError {
                        code,
                        title: row.error_title.clone().unwrap_or_default(),
                    }),
                }),
                change::KIND_MESSAGE => {
                    let Some(message) = row.message_id.and_then(|id| updated.get(&id)) else {
                        continue;
                    };
                    Change::MessageUpdated {
                        seq,
                        message: message.clone(),
                        what: MessageChange::from_i16(row.what),
                    }
                }
                change::KIND_CONTACT => {
                    let Some(contact) = row.contact_id.and_then(|id| contacts.get(&id)) else {
                        continue;
                    };
                    Change::ContactUpdated {
                        seq,
                        contact: contact.clone(),
                    }
                }
                change::KIND_PARTICIPANT => {
                    let Some(participant) = row
                        .contact_id
                        .and_then(|id| participants.get(&(row.chat_id.clone(), id)))
                    else {
                        continue;
                    };
                    Change::ParticipantsChanged {
                        seq,
                        participant: participant.clone(),
                    }
                }
                change::KIND_CHAT => Change::ChatUpdated(Chat {
                    name: chat_names.get(&row.chat_id).cloned().unwrap_or_default(),
                    chat_id: row.chat_id,
                    seq,
                }),
                change::KIND_RUN => Change::SyncRunFinished {
                    seq,
                    state: SyncState::from_i16(row.status.unwrap_or_default()),
                    finished_at_ms: row.at,
                },
                // A kind a newer replica of the cluster writes: skipped (the cursor still
                // passes its seq), never shown as another kind.
                _ => continue,
            };
            changes.push(change);
        }
        changes.sort_by_key(Change::seq);
        self.fill_details(changes.iter_mut().filter_map(|change| match change {
            Change::MessageCreated(message) | Change::MessageUpdated { message, .. } => {
                Some(message)
            }
            _ => None,
        }))
        .await?;
        Ok((changes, reached))
    }
}

//! Message writes (sends, statuses, edits, read receipts) and single-message lookups.
//!
//! Each write is one [`WriteTxn`]: it reads the message under the session's lock, decides
//! (a status never goes backwards; an idempotency key is used once), and only then takes a seq.
use std::collections::{HashMap, HashSet};

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect};

use super::entities::{change, chat, message};
use super::group::{Answer, GroupedWrite};
use super::import::ImportChat;
use super::rows::{change_row, chat_from_row, message_from_row, message_query, new_message_row};
use super::{ROWS_PER_INSERT, Store, WriteTxn};
use crate::error::{Error, Result};
use crate::model::{
    Chat, Message, MessageChange, MessageRef, MessageStatus, MissingChat, NewMessage, StatusError,
    now_ms,
};

impl WriteTxn {
    /// Changes one stored message: takes the next seq, sets `columns` (and `updated_at`) on
    /// its row, and logs the change (`kind`, with `status` for a status change and `what` for
    /// a message update).
    pub(super) async fn change_message(
        &mut self,
        row: &message::Model,
        kind: i16,
        status: Option<i16>,
        what: Option<MessageChange>,
        columns: Vec<(message::Column, Expr)>,
    ) -> Result<()> {
        self.change_message_because(row, kind, status, what, None, columns)
            .await
    }

    /// [`change_message`](Self::change_message), logging `error` (why a message failed) on
    /// the change.
    async fn change_message_because(
        &mut self,
        row: &message::Model,
        kind: i16,
        status: Option<i16>,
        what: Option<MessageChange>,
        error: Option<&StatusError>,
        columns: Vec<(message::Column, Expr)>,
    ) -> Result<()> {
        let seq = self.next_seq();
        let now = now_ms();
        let mut update =
            message::Entity::update_many().col_expr(message::Column::UpdatedAt, Expr::value(now));
        for (column, value) in columns {
            update = update.col_expr(column, value);
        }
        update
            .filter(message::Column::Id.eq(row.id))
            .exec(self.conn())
            .await?;
        let mut change = change_row(
            self.session_id(),
            seq,
            kind,
            row.chat_id.clone(),
            Some(row.id),
            status,
            now,
        );
        change.what = sea_orm::ActiveValue::Set(what.map(MessageChange::as_i16));
        change.error_code = sea_orm::ActiveValue::Set(error.map(|error| error.code));
        change.error_title = sea_orm::ActiveValue::Set(error.map(|error| error.title.clone()));
        change::Entity::insert(change)
            .exec_without_returning(self.conn())
            .await?;
        Ok(())
    }
}

impl WriteTxn {
    /// The sends of a group ([`Store::insert_outgoing`] each), in order. Reads the group's
    /// idempotency keys and chats in one query each, decides every send, creates the missing
    /// chats, then inserts the new messages in multi-row statements with consecutive seqs.
    /// A send whose key is stored, or taken by an earlier send of the group, answers that
    /// message with `false`. The outer error is the transaction's; the inner ones each send's.
    pub(super) async fn insert_sends(
        &mut self,
        sends: &[(usize, &str, &NewMessage, MissingChat)],
    ) -> Result<Vec<Answer>> {
        let session_id = self.session_id().to_owned();
        let session_id = session_id.as_str();
        let mut keys: Vec<&str> = sends
            .iter()
            .filter_map(|(_, _, new, _)| new.client_message_id.as_deref())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut stored: HashMap<String, message::Model> = HashMap::new();
        for chunk in keys.chunks(500) {
            let rows = message::Entity::find()
                .filter(message::Column::SessionId.eq(session_id))
                .filter(message::Column::ClientMessageId.is_in(chunk.iter().copied()))
                .all(self.conn())
                .await?;
            stored.extend(
                rows.into_iter()
                    .filter_map(|row| Some((row.client_message_id.clone()?, row))),
            );
        }
        let mut chat_ids: Vec<&str> = sends.iter().map(|(_, chat_id, ..)| *chat_id).collect();
        chat_ids.sort_unstable();
        chat_ids.dedup();
        let mut chats: HashSet<String> = HashSet::new();
        for chunk in chat_ids.chunks(500) {
            let rows: Vec<String> = chat::Entity::find()
                .select_only()
                .column(chat::Column::ChatId)
                .filter(chat::Column::SessionId.eq(session_id))
                .filter(chat::Column::ChatId.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(self.conn())
                .await?;
            chats.extend(rows);
        }

        enum Decision {
            Done(Box<Answer>),
            /// The i-th new row.
            Insert(usize),
        }
        let mut decisions = Vec::with_capacity(sends.len());
        let mut inserts: Vec<(&str, &NewMessage)> = Vec::new();
        let mut new_chats: Vec<&str> = Vec::new();
        let mut keys_in_group: HashMap<&str, usize> = HashMap::new();
        for (_, chat_id, new, missing_chat) in sends {
            if let Some(key) = new.client_message_id.as_deref() {
                if let Some(row) = stored.get(key) {
                    decisions.push(Decision::Done(Box::new(Ok((
                        message_from_row(row.clone()),
                        false,
                    )))));
                    continue;
                }
                if let Some(&first) = keys_in_group.get(key) {
                    decisions.push(Decision::Insert(first));
                    continue;
                }
            }
            if !chats.contains(*chat_id) {
                if *missing_chat == MissingChat::Refuse {
                    let error = Error::NotFound(format!("chat {chat_id:?}"));
                    decisions.push(Decision::Done(Box::new(Err(error))));
                    continue;
                }
                chats.insert((*chat_id).to_owned());
                new_chats.push(chat_id);
            }
            if let Some(key) = new.client_message_id.as_deref() {
                keys_in_group.insert(key, inserts.len());
            }
            decisions.push(Decision::Insert(inserts.len()));
            inserts.push((chat_id, new));
        }

        if !new_chats.is_empty() {
            let chats: Vec<ImportChat> = new_chats
                .iter()
                .map(|chat_id| ImportChat {
                    chat_id,
                    name: chat_id,
                    messages: &[],
                    may_be_stored: false,
                    people: &crate::model::NO_PEOPLE,
                })
                .collect();
            self.import_chats(&chats).await?;
        }
        let first = self.take_seqs(inserts.len() as u64);
        let now = now_ms();
        let mut by_seq: HashMap<i64, message::Model> = HashMap::with_capacity(inserts.len());
        let rows: Vec<message::ActiveModel> = inserts
            .iter()
            .enumerate()
            .map(|(i, (chat_id, new))| {
                new_message_row(session_id, chat_id, new, first + i as u64, now)
            })
            .collect();
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            // RETURNING gives the rows in no set order: they are matched by seq.
            let returned = message::Entity::insert_many(chunk.to_vec())
                .exec_with_returning(self.conn())
                .await?;
            by_seq.extend(returned.into_iter().map(|row| (row.seq, row)));
        }
        let inserted: Vec<(u64, &str)> = inserts
            .iter()
            .enumerate()
            .map(|(i, (_, new))| (first + i as u64, new.text.as_str()))
            .collect();
        self.index_for_search(&inserted).await?;
        let with_details: Vec<(u64, &NewMessage)> = inserts
            .iter()
            .enumerate()
            .filter(|(_, (_, new))| !new.attachments.is_empty() || !new.reactions.is_empty())
            .map(|(i, (_, new))| (first + i as u64, *new))
            .collect();
        self.insert_attachments(&with_details).await?;
        self.insert_reactions(&with_details).await?;
        let mut first_answered: HashSet<usize> = HashSet::new();
        decisions
            .into_iter()
            .map(|decision| match decision {
                Decision::Done(answer) => Ok(*answer),
                Decision::Insert(i) => {
                    let seq = (first + i as u64) as i64;
                    let row = by_seq.get(&seq).cloned().ok_or_else(|| {
                        Error::Internal(format!("the insert of seq {seq} returned no row"))
                    })?;
                    // The first send under a key wrote it; a later one in the group is a retry.
                    let created = first_answered.insert(i);
                    Ok(Ok((message_from_row(row), created)))
                }
            })
            .collect()
    }

    /// The status changes of a group ([`Store::update_status_because`] each, none of them
    /// setting a provider id), in order, in a handful of statements whatever their number:
    /// one read of every message they name (per 500 names), then each change decided in
    /// order (a later change of the same message sees the earlier one; a status never goes
    /// backwards), then one `UPDATE` per resulting status value and one multi-row `INSERT` of
    /// the changes, each with its own seq. The outer error is the transaction's; the inner
    /// ones (`NotFound`) each change's, decided before anything is written.
    pub(super) async fn set_statuses(
        &mut self,
        writes: &[(&MessageRef, MessageStatus, Option<&StatusError>)],
    ) -> Result<Vec<Answer>> {
        let session_id = self.session_id().to_owned();
        let session_id = session_id.as_str();
        let ids: Vec<i64> = writes
            .iter()
            .filter_map(|(reference, ..)| match reference {
                MessageRef::Id(id) => Some(*id),
                MessageRef::Provider { .. } => None,
            })
            .collect();
        let providers: Vec<(&str, &str)> = writes
            .iter()
            .filter_map(|(reference, ..)| match reference {
                MessageRef::Id(_) => None,
                MessageRef::Provider {
                    chat_id,
                    provider_message_id,
                } => Some((chat_id.as_str(), provider_message_id.as_str())),
            })
            .collect();
        let mut rows: HashMap<i64, message::Model> = HashMap::new();
        for chunk in ids.chunks(500) {
            let found = message::Entity::find()
                .filter(message::Column::SessionId.eq(session_id))
                .filter(message::Column::Id.is_in(chunk.iter().copied()))
                .all(self.conn())
                .await?;
            rows.extend(found.into_iter().map(|row| (row.id, row)));
        }
        let mut by_provider: HashMap<(String, String), i64> = HashMap::new();
        for chunk in providers.chunks(500) {
            // Each term names the session itself, and nothing outside the OR does: with a
            // `session_id = ?` beside it, SQLite's planner scans the session's rows (an index
            // on `session_id` first) instead of one unique-index lookup per term.
            let mut any = sea_orm::Condition::any();
            for (chat_id, provider_message_id) in chunk {
                any = any.add(
                    sea_orm::Condition::all()
                        .add(message::Column::SessionId.eq(session_id))
                        .add(message::Column::ChatId.eq(*chat_id))
                        .add(message::Column::ProviderMessageId.eq(*provider_message_id)),
                );
            }
            let found = message::Entity::find().filter(any).all(self.conn()).await?;
            for row in found {
                by_provider.insert(
                    (row.chat_id.clone(), row.provider_message_id.clone()),
                    row.id,
                );
                rows.insert(row.id, row);
            }
        }
        let now = now_ms();
        let mut answers = Vec::with_capacity(writes.len());
        let mut changes = Vec::new();
        // The changed messages' final statuses.
        let mut finals: HashMap<i64, i16> = HashMap::new();
        for &(reference, status, error) in writes {
            let id = match reference {
                MessageRef::Id(id) => Some(*id),
                MessageRef::Provider {
                    chat_id,
                    provider_message_id,
                } => by_provider
                    .get(&(chat_id.clone(), provider_message_id.clone()))
                    .copied(),
            };
            let Some(row) = id.and_then(|id| rows.get_mut(&id)) else {
                answers.push(Err(Error::NotFound(reference.to_string())));
                continue;
            };
            if !MessageStatus::from_i16(row.status).advances_to(status) {
                answers.push(Ok((message_from_row(row.clone()), false)));
                continue;
            }
            row.status = status.as_i16();
            row.updated_at = now;
            finals.insert(row.id, row.status);
            let error = error.filter(|_| status == MessageStatus::Failed);
            let mut change = change_row(
                session_id,
                self.next_seq(),
                change::KIND_STATUS,
                row.chat_id.clone(),
                Some(row.id),
                Some(status.as_i16()),
                now,
            );
            change.error_code = sea_orm::ActiveValue::Set(error.map(|error| error.code));
            change.error_title = sea_orm::ActiveValue::Set(error.map(|error| error.title.clone()));
            changes.push(change);
            answers.push(Ok((message_from_row(row.clone()), true)));
        }
        let mut by_status: HashMap<i16, Vec<i64>> = HashMap::new();
        for (id, status) in finals {
            by_status.entry(status).or_default().push(id);
        }
        for (status, ids) in by_status {
            message::Entity::update_many()
                .col_expr(message::Column::Status, Expr::value(status))
                .col_expr(message::Column::UpdatedAt, Expr::value(now))
                .filter(message::Column::Id.is_in(ids))
                .exec(self.conn())
                .await?;
        }
        self.insert_rows(&changes).await?;
        Ok(answers)
    }

    /// The status change of [`Store::update_status_because`], inside this transaction. The
    /// outer error is the transaction's; the inner one (`NotFound`) this change's, decided
    /// before it writes anything. `error` is logged only on a change to FAILED.
    pub(super) async fn set_status(
        &mut self,
        reference: &MessageRef,
        status: MessageStatus,
        provider_message_id: Option<&str>,
        error: Option<&StatusError>,
    ) -> Result<Answer> {
        let query = message_query(self.session_id(), reference);
        let Some(row) = query.one(self.conn()).await? else {
            return Ok(Err(Error::NotFound(reference.to_string())));
        };
        let current = MessageStatus::from_i16(row.status);
        if !current.advances_to(status) {
            return Ok(Ok((message_from_row(row), false)));
        }
        let mut columns = vec![(message::Column::Status, Expr::value(status.as_i16()))];
        if let Some(provider_id) = provider_message_id {
            columns.push((message::Column::ProviderMessageId, Expr::value(provider_id)));
        }
        let error = error.filter(|_| status == MessageStatus::Failed);
        self.change_message_because(
            &row,
            change::KIND_STATUS,
            Some(status.as_i16()),
            None,
            error,
            columns,
        )
        .await?;
        let mut message = message_from_row(row);
        message.status = status;
        if let Some(provider_id) = provider_message_id {
            message.provider_message_id = provider_id.to_owned();
        }
        Ok(Ok((message, true)))
    }
}

impl Store {
    /// The chat, if stored.
    pub async fn find_chat(&self, session_id: &str, chat_id: &str) -> Result<Option<Chat>> {
        Ok(chat::Entity::find()
            .filter(chat::Column::SessionId.eq(session_id))
            .filter(chat::Column::ChatId.eq(chat_id))
            .one(&self.db)
            .await?
            .map(chat_from_row))
    }

    /// The stored chats among `chat_ids`, by chat id (one query per 512 ids).
    pub async fn find_chats(
        &self,
        session_id: &str,
        chat_ids: &[&str],
    ) -> Result<HashMap<String, Chat>> {
        let mut found = HashMap::new();
        for chunk in super::statement_chunks(chat_ids, 512) {
            let rows = chat::Entity::find()
                .filter(chat::Column::SessionId.eq(session_id))
                .filter(chat::Column::ChatId.is_in(chunk.iter().copied()))
                .all(&self.db)
                .await?;
            found.extend(
                rows.into_iter()
                    .map(|row| (row.chat_id.clone(), chat_from_row(row))),
            );
        }
        Ok(found)
    }

    /// Whether a message with this provider id is stored in the chat.
    pub async fn has_message(
        &self,
        session_id: &str,
        chat_id: &str,
        provider_message_id: &str,
    ) -> Result<bool> {
        let reference = MessageRef::Provider {
            chat_id: chat_id.to_owned(),
            provider_message_id: provider_message_id.to_owned(),
        };
        Ok(message_query(session_id, &reference)
            .count(&self.db)
            .await?
            > 0)
    }

    /// Stores one outgoing message under its idempotency key. Under the session's lock: if the
    /// key is taken (a retry, also one racing its original on another replica or in the same
    /// group), returns the stored message and `false`; if the chat is not stored, creates it
    /// (`MissingChat::Create`, a `chat_updated` change first) or answers `NotFound`. Otherwise
    /// stores `new` with the next seq and returns it with `true`.
    ///
    /// Concurrent calls for a session share a transaction ([`group`](super::group)).
    pub async fn insert_outgoing(
        &self,
        session_id: &str,
        chat_id: &str,
        new: &NewMessage,
        missing_chat: MissingChat,
    ) -> Result<(Message, bool)> {
        let write = GroupedWrite::Send {
            chat_id: chat_id.to_owned(),
            new: new.clone(),
            missing_chat,
        };
        let (mut message, created) = self.grouped(session_id, write).await?;
        if created && new.reactions.is_empty() {
            self.fill_created([&mut message]).await?;
        } else {
            self.fill_details([&mut message]).await?;
        }
        Ok((message, created))
    }

    /// Moves a message's status forward. A status that is not ahead of the stored one
    /// (see [`MessageStatus::advances_to`]) changes nothing and returns `false`. A change
    /// takes a seq and is logged as a `status_updated` event. `provider_message_id`, when
    /// given, replaces the stored one (a source's id assigned at send time).
    ///
    /// Concurrent calls for a session share a transaction ([`group`](super::group)).
    ///
    /// Errors: `NotFound` for an unknown message.
    pub async fn update_status(
        &self,
        session_id: &str,
        reference: &MessageRef,
        status: MessageStatus,
        provider_message_id: Option<&str>,
    ) -> Result<(Message, bool)> {
        self.update_status_because(session_id, reference, status, provider_message_id, None)
            .await
    }

    /// [`update_status`](Self::update_status), keeping `error` (why the message failed, as
    /// the source says it) on the logged change when `status` is FAILED: the
    /// `status_updated` event carries it. Ignored for other statuses.
    ///
    /// Errors: `NotFound` for an unknown message.
    pub async fn update_status_because(
        &self,
        session_id: &str,
        reference: &MessageRef,
        status: MessageStatus,
        provider_message_id: Option<&str>,
        error: Option<&StatusError>,
    ) -> Result<(Message, bool)> {
        let (mut message, changed) = self
            .advance_status(session_id, reference, status, provider_message_id, error)
            .await?;
        self.fill_details([&mut message]).await?;
        Ok((message, changed))
    }

    /// [`update_status_because`](Self::update_status_because) without reading the message's
    /// details back (attachments, reactions, receipts, earlier texts: several queries, round
    /// trips on PostgreSQL): the message as its row holds it, and whether the status changed
    /// (`true`) or was at or past `status` already (`false`). For a caller that needs only the
    /// outcome, such as a webhook's status.
    ///
    /// Errors: `NotFound` for an unknown message.
    pub async fn advance_status(
        &self,
        session_id: &str,
        reference: &MessageRef,
        status: MessageStatus,
        provider_message_id: Option<&str>,
        error: Option<&StatusError>,
    ) -> Result<(Message, bool)> {
        let write = GroupedWrite::Status {
            reference: reference.clone(),
            status,
            provider_message_id: provider_message_id.map(str::to_owned),
            error: error.cloned(),
        };
        self.grouped(session_id, write).await
    }
}

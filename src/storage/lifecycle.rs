//! A message's life after it is stored: edits (keeping the earlier texts), deletion for
//! everyone, reactions and per-recipient receipts; and [`fill`], which reads them (with the
//! attachments and the reply's server id) into a page of messages.
//!
//! Every change is one [`WriteTxn`] under the session's lock: it reads the message, decides,
//! and only then takes a seq and logs a `message_updated` change with what changed
//! ([`MessageChange`]). A receipt that moves the message's summary status also logs a
//! `status_updated` change (a second seq). The rows of a message's life are keyed, like its
//! attachments, by (session, creation seq).
use std::collections::{HashMap, HashSet};

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::entities::{
    attachment, change, message, message_request, message_version, participant, reaction, receipt,
};
use super::rows::{message_from_row, message_query};
use super::{Store, WriteTxn, storable};
use crate::error::{Error, Result};
use crate::model::{
    EarlierText, Message, MessageChange, MessageKind, MessageRef, MessageStatus, NewMessage,
    Reaction, ReactionChange, Receipt, ReceiptKind, now_ms,
};

/// A change to one stored message, from its source or from a client call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageOp {
    /// A new text. `editor`: who edited it upstream; an edit counts only by the message's own
    /// sender (Matrix's rule for `m.replace`). `None`: the session's own account (a client
    /// call, which checks `from_me` itself).
    Edit {
        text: String,
        editor: Option<String>,
        at_ms: i64,
    },
    /// Deleted for everyone by `by` (a user id, or the sender as shown): kind DELETED, and the
    /// text, earlier texts, files and reactions are dropped.
    Delete { by: String, at_ms: i64 },
    /// A reaction added, replaced or removed.
    React(ReactionChange),
    /// `recipient` received or read the message.
    Receipt {
        recipient: String,
        kind: ReceiptKind,
        at_ms: i64,
    },
}

/// What [`Store::update_message`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The message changed: a `message_updated` change was logged.
    Changed(MessageChange),
    /// The change was already so (the same text, reaction or receipt, a message already
    /// deleted, an edit by someone else): nothing was written.
    Unchanged,
    /// The request id was used before: nothing was written, the message is as stored now.
    Duplicate,
}

impl Store {
    /// Applies `op` to a stored message, as one write: one seq and a `message_updated` change
    /// when it changes something (a receipt that completes the summary status takes a second,
    /// `status_updated`). With `request_id` (an idempotency key, per session), a key used
    /// before answers [`Outcome::Duplicate`] and writes nothing; a new key is stored with the
    /// change (also when the change was already so). Returns the message as stored after.
    ///
    /// Errors: `NotFound` for a message that is not stored.
    pub async fn update_message(
        &self,
        session_id: &str,
        reference: &MessageRef,
        op: &MessageOp,
        request_id: Option<&str>,
    ) -> Result<(Message, Outcome)> {
        let mut txn = self.write(session_id).await?;
        if let Some(request_id) = request_id
            && let Some(message_id) = txn.request_message(request_id).await?
        {
            drop(txn);
            let message = self
                .message_by_ref(session_id, &MessageRef::Id(message_id))
                .await?;
            return Ok((message, Outcome::Duplicate));
        }
        let Some(row) = message_query(session_id, reference).one(txn.conn()).await? else {
            return Err(Error::NotFound(reference.to_string()));
        };
        let outcome = match txn.apply(&row, op).await? {
            Some(what) => Outcome::Changed(what),
            None => Outcome::Unchanged,
        };
        if let Some(request_id) = request_id {
            txn.store_request(request_id, row.id).await?;
        }
        if outcome != Outcome::Unchanged || request_id.is_some() {
            txn.commit().await?;
        }
        let message = self
            .message_by_ref(session_id, &MessageRef::Id(row.id))
            .await?;
        Ok((message, outcome))
    }

    /// Stores the file of attachment `ordinal` of a stored message that was kept without it
    /// (`stored = false`: a download that failed, or a history chunk's media placeholder):
    /// `stored = true` with `file`'s `sha256` (hex) and `size_bytes`, its `file_name` and
    /// `mime_type` when given (non-empty), and a `message_updated` change
    /// ([`MessageChange::Attachment`]) so subscribers read the message again. Returns `false`,
    /// writing nothing, when that attachment is stored already or gone (the message was
    /// deleted).
    ///
    /// Errors: `NotFound` for a message that is not stored.
    pub async fn store_missing_attachment(
        &self,
        session_id: &str,
        reference: &MessageRef,
        ordinal: u32,
        file: &crate::model::Attachment,
    ) -> Result<bool> {
        let mut txn = self.write(session_id).await?;
        let Some(row) = message_query(session_id, reference).one(txn.conn()).await? else {
            return Err(Error::NotFound(reference.to_string()));
        };
        let mut update = attachment::Entity::update_many();
        if !file.file_name.is_empty() {
            update = update.col_expr(attachment::Column::FileName, Expr::value(&file.file_name));
        }
        if !file.mime_type.is_empty() {
            update = update.col_expr(attachment::Column::MimeType, Expr::value(&file.mime_type));
        }
        let updated = update
            .col_expr(attachment::Column::Stored, Expr::value(true))
            .col_expr(attachment::Column::Sha256, Expr::value(&file.sha256))
            .col_expr(
                attachment::Column::Size,
                Expr::value(file.size_bytes.min(i64::MAX as u64) as i64),
            )
            .filter(attachment::Column::SessionId.eq(session_id))
            .filter(attachment::Column::MessageSeq.eq(row.seq))
            .filter(attachment::Column::Ordinal.eq(ordinal as i32))
            .filter(attachment::Column::Stored.eq(false))
            .exec(txn.conn())
            .await?
            .rows_affected;
        if updated == 0 {
            return Ok(false);
        }
        txn.log_update(&row, MessageChange::Attachment, Vec::new())
            .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// The message a stored request id changed, as stored now; `None` for an unused id.
    pub async fn request_message(
        &self,
        session_id: &str,
        request_id: &str,
    ) -> Result<Option<Message>> {
        let stored =
            message_request::Entity::find_by_id((session_id.to_owned(), request_id.to_owned()))
                .one(&self.db)
                .await?;
        match stored {
            Some(row) => Ok(Some(
                self.message_by_ref(session_id, &MessageRef::Id(row.message_id))
                    .await?,
            )),
            None => Ok(None),
        }
    }

    /// One stored message with its details. Errors: `NotFound`.
    pub async fn message_by_ref(
        &self,
        session_id: &str,
        reference: &MessageRef,
    ) -> Result<Message> {
        let row = message_query(session_id, reference)
            .one(&self.db)
            .await?
            .ok_or_else(|| Error::NotFound(reference.to_string()))?;
        let mut message = message_from_row(row);
        self.fill_details([&mut message]).await?;
        Ok(message)
    }

    /// A redaction of the upstream event `provider_id` in a chat, by `by`: a stored message
    /// with that id is deleted ([`MessageOp::Delete`]); else a stored reaction with that id is
    /// removed. Returns the message changed and what changed, or `None` when the event is
    /// neither (or nothing changed).
    pub async fn redact(
        &self,
        session_id: &str,
        chat_id: &str,
        provider_id: &str,
        by: &str,
        at_ms: i64,
    ) -> Result<Option<(Message, MessageChange)>> {
        let reference = MessageRef::Provider {
            chat_id: chat_id.to_owned(),
            provider_message_id: provider_id.to_owned(),
        };
        let mut txn = self.write(session_id).await?;
        let what = if let Some(row) = message_query(session_id, &reference)
            .one(txn.conn())
            .await?
        {
            let op = MessageOp::Delete {
                by: by.to_owned(),
                at_ms,
            };
            txn.apply(&row, &op).await?.map(|what| (row.id, what))
        } else {
            let found = reaction::Entity::find()
                .filter(reaction::Column::SessionId.eq(session_id))
                .filter(reaction::Column::ProviderReactionId.eq(provider_id))
                .one(txn.conn())
                .await?;
            match found {
                Some(found) => {
                    let row = message::Entity::find()
                        .filter(message::Column::SessionId.eq(session_id))
                        .filter(message::Column::Seq.eq(found.message_seq))
                        .one(txn.conn())
                        .await?
                        .ok_or_else(|| Error::Internal("a reaction without its message".into()))?;
                    reaction::Entity::delete_many()
                        .filter(reaction::Column::SessionId.eq(session_id))
                        .filter(reaction::Column::MessageSeq.eq(found.message_seq))
                        .filter(reaction::Column::Sender.eq(found.sender.as_str()))
                        .filter(reaction::Column::Emoji.eq(found.emoji.as_str()))
                        .exec(txn.conn())
                        .await?;
                    txn.log_update(&row, MessageChange::Reaction, Vec::new())
                        .await?;
                    Some((row.id, MessageChange::Reaction))
                }
                None => None,
            }
        };
        let Some((id, what)) = what else {
            return Ok(None);
        };
        txn.commit().await?;
        let message = self.message_by_ref(session_id, &MessageRef::Id(id)).await?;
        Ok(Some((message, what)))
    }

    /// `reader` read a chat up to a message (a Matrix `m.read` receipt): each of the session's
    /// own messages in that chat sent at or before it (by `sent_at`) and not yet READ gets a
    /// read receipt from `reader` ([`MessageOp::Receipt`], one seq each, and a status change
    /// where the summary moves). When the message is not stored (a receipt on an edit or a
    /// reaction), `read_at_ms` bounds them instead. Returns how many messages changed.
    pub async fn read_up_to(
        &self,
        session_id: &str,
        reference: &MessageRef,
        reader: &str,
        read_at_ms: i64,
    ) -> Result<u64> {
        let mut txn = self.write(session_id).await?;
        let (chat_id, up_to) = match message_query(session_id, reference).one(txn.conn()).await? {
            Some(target) => (target.chat_id, target.sent_at),
            None => match reference {
                MessageRef::Provider { chat_id, .. } => (chat_id.clone(), read_at_ms),
                MessageRef::Id(_) => return Ok(0),
            },
        };
        let below_read: Vec<i16> = [MessageStatus::Sent, MessageStatus::Delivered]
            .iter()
            .map(|s| s.as_i16())
            .collect();
        let rows = message::Entity::find()
            .filter(message::Column::SessionId.eq(session_id))
            .filter(message::Column::ChatId.eq(chat_id.as_str()))
            .filter(message::Column::FromMe.eq(true))
            .filter(message::Column::SentAt.lte(up_to))
            .filter(message::Column::Status.is_in(below_read))
            .filter(message::Column::Sender.ne(reader))
            .order_by_asc(message::Column::Seq)
            .all(txn.conn())
            .await?;
        let op = MessageOp::Receipt {
            recipient: reader.to_owned(),
            kind: ReceiptKind::Read,
            at_ms: read_at_ms,
        };
        let mut changed = 0;
        for row in &rows {
            if txn.apply(row, &op).await?.is_some() {
                changed += 1;
            }
        }
        if changed > 0 {
            txn.commit().await?;
        }
        Ok(changed)
    }

    /// [`fill`] on this store's connection.
    pub(super) async fn fill_details<'a>(
        &self,
        messages: impl IntoIterator<Item = &'a mut Message>,
    ) -> Result<()> {
        fill(&self.db, messages).await
    }

    /// [`fill_details`](Self::fill_details) for messages that a committed write of this call
    /// has just created, from a [`NewMessage`](crate::model::NewMessage) without reactions:
    /// nobody could name them before that commit, so they have no earlier texts, reactions
    /// or receipts, and only their attachments and the server ids of the messages they quote
    /// are read (none of those queries for a text message that quotes nothing). The answer is
    /// the message as created; what happens to it later comes as its own changes.
    pub(super) async fn fill_created<'a>(
        &self,
        messages: impl IntoIterator<Item = &'a mut Message>,
    ) -> Result<()> {
        fill_with(&self.db, messages, Details::OfCreated).await
    }
}

/// Which details [`fill_with`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Details {
    /// All of them ([`fill`]).
    All,
    /// Attachments and quoted ids only ([`Store::fill_created`]).
    OfCreated,
}

impl WriteTxn {
    /// The message a stored request id names.
    async fn request_message(&self, request_id: &str) -> Result<Option<i64>> {
        Ok(message_request::Entity::find_by_id((
            self.session_id().to_owned(),
            request_id.to_owned(),
        ))
        .one(self.conn())
        .await?
        .map(|row| row.message_id))
    }

    async fn store_request(&self, request_id: &str, message_id: i64) -> Result<()> {
        message_request::Entity::insert(message_request::ActiveModel {
            session_id: Set(self.session_id().to_owned()),
            request_id: Set(request_id.to_owned()),
            message_id: Set(message_id),
            at: Set(now_ms()),
        })
        .exec_without_returning(self.conn())
        .await?;
        Ok(())
    }

    /// Logs a `message_updated` change of `row`: the next seq, `columns` set on the row (and
    /// `updated_at`), and a `changes` row saying what changed.
    async fn log_update(
        &mut self,
        row: &message::Model,
        what: MessageChange,
        columns: Vec<(message::Column, Expr)>,
    ) -> Result<()> {
        self.change_message(row, change::KIND_MESSAGE, None, Some(what), columns)
            .await
    }

    /// Applies `op` to `row` in this transaction; the change made, or `None` when it was
    /// already so.
    pub(super) async fn apply(
        &mut self,
        row: &message::Model,
        op: &MessageOp,
    ) -> Result<Option<MessageChange>> {
        let deleted = row.kind == MessageKind::Deleted.as_i16();
        let session_id = self.session_id().to_owned();
        let session_id = session_id.as_str();
        let seq = row.seq;
        match op {
            MessageOp::Edit {
                text,
                editor,
                at_ms,
            } => {
                let text = storable(text);
                if deleted
                    || editor.as_ref().is_some_and(|editor| *editor != row.sender)
                    || row.text == text.as_ref()
                {
                    return Ok(None);
                }
                let version = message_version::Entity::find()
                    .filter(message_version::Column::SessionId.eq(session_id))
                    .filter(message_version::Column::MessageSeq.eq(seq))
                    .count(self.conn())
                    .await?;
                message_version::Entity::insert(message_version::ActiveModel {
                    session_id: Set(session_id.to_owned()),
                    message_seq: Set(seq),
                    version: Set(version as i32),
                    text: Set(row.text.clone()),
                    replaced_at: Set(*at_ms),
                })
                .exec_without_returning(self.conn())
                .await?;
                let columns = vec![
                    (message::Column::Text, Expr::value(text.as_ref())),
                    (message::Column::Edited, Expr::value(true)),
                    (message::Column::EditedAt, Expr::value(*at_ms)),
                ];
                self.log_update(row, MessageChange::Edit, columns).await?;
                Ok(Some(MessageChange::Edit))
            }
            MessageOp::Delete { by, at_ms } => {
                if deleted {
                    return Ok(None);
                }
                attachment::Entity::delete_many()
                    .filter(attachment::Column::SessionId.eq(session_id))
                    .filter(attachment::Column::MessageSeq.eq(seq))
                    .exec(self.conn())
                    .await?;
                message_version::Entity::delete_many()
                    .filter(message_version::Column::SessionId.eq(session_id))
                    .filter(message_version::Column::MessageSeq.eq(seq))
                    .exec(self.conn())
                    .await?;
                reaction::Entity::delete_many()
                    .filter(reaction::Column::SessionId.eq(session_id))
                    .filter(reaction::Column::MessageSeq.eq(seq))
                    .exec(self.conn())
                    .await?;
                let columns = vec![
                    (message::Column::Text, Expr::value("")),
                    (
                        message::Column::Kind,
                        Expr::value(MessageKind::Deleted.as_i16()),
                    ),
                    (
                        message::Column::DeletedBy,
                        Expr::value(storable(by).as_ref()),
                    ),
                    (message::Column::DeletedAt, Expr::value(*at_ms)),
                ];
                self.log_update(row, MessageChange::Deletion, columns)
                    .await?;
                Ok(Some(MessageChange::Deletion))
            }
            MessageOp::React(change) => {
                if deleted {
                    return Ok(None);
                }
                if self.react(row, change).await? {
                    self.log_update(row, MessageChange::Reaction, Vec::new())
                        .await?;
                    Ok(Some(MessageChange::Reaction))
                } else {
                    Ok(None)
                }
            }
            MessageOp::Receipt {
                recipient,
                kind,
                at_ms,
            } => self.receipt(row, recipient, *kind, *at_ms).await,
        }
    }

    /// Writes a reaction change; whether anything changed.
    async fn react(&mut self, row: &message::Model, change: &ReactionChange) -> Result<bool> {
        let session_id = self.session_id().to_owned();
        let session_id = session_id.as_str();
        let sender = match change {
            ReactionChange::Set { sender, .. } => sender.as_str(),
            ReactionChange::Add(reaction) => reaction.sender.as_str(),
        };
        let sender = storable(sender);
        let theirs = reaction::Entity::find()
            .filter(reaction::Column::SessionId.eq(session_id))
            .filter(reaction::Column::MessageSeq.eq(row.seq))
            .filter(reaction::Column::Sender.eq(sender.as_ref()))
            .all(self.conn())
            .await?;
        let (emoji, at_ms, provider_reaction_id, replace) = match change {
            ReactionChange::Set {
                emoji,
                at_ms,
                provider_reaction_id,
                ..
            } => (
                emoji.as_deref(),
                *at_ms,
                provider_reaction_id.as_deref(),
                true,
            ),
            ReactionChange::Add(reaction) => (
                Some(reaction.emoji.as_str()),
                reaction.at_ms,
                reaction.provider_reaction_id.as_deref(),
                false,
            ),
        };
        let emoji = emoji.map(storable);
        let already = |emoji: &str| theirs.iter().any(|r| r.emoji == emoji);
        let unchanged = match &emoji {
            Some(emoji) if replace => theirs.len() == 1 && already(emoji),
            Some(emoji) => already(emoji),
            None => theirs.is_empty(),
        };
        if unchanged {
            return Ok(false);
        }
        if replace {
            reaction::Entity::delete_many()
                .filter(reaction::Column::SessionId.eq(session_id))
                .filter(reaction::Column::MessageSeq.eq(row.seq))
                .filter(reaction::Column::Sender.eq(sender.as_ref()))
                .exec(self.conn())
                .await?;
        }
        if let Some(emoji) = emoji {
            reaction::Entity::insert(reaction::ActiveModel {
                session_id: Set(session_id.to_owned()),
                message_seq: Set(row.seq),
                sender: Set(sender.into_owned()),
                emoji: Set(emoji.into_owned()),
                at: Set(at_ms),
                provider_reaction_id: Set(provider_reaction_id.map(str::to_owned)),
            })
            .exec_without_returning(self.conn())
            .await?;
        }
        Ok(true)
    }

    /// Records a receipt, then moves the summary status where every recipient has reached it.
    async fn receipt(
        &mut self,
        row: &message::Model,
        recipient: &str,
        kind: ReceiptKind,
        at_ms: i64,
    ) -> Result<Option<MessageChange>> {
        let session_id = self.session_id().to_owned();
        let session_id = session_id.as_str();
        let recipient = storable(recipient);
        if recipient.is_empty() || *recipient == row.sender {
            return Ok(None);
        }
        let mut receipts = receipt::Entity::find()
            .filter(receipt::Column::SessionId.eq(session_id))
            .filter(receipt::Column::MessageSeq.eq(row.seq))
            .all(self.conn())
            .await?;
        let position = receipts.iter().position(|r| *r.recipient == *recipient);
        let (delivered_at, read_at) = position
            .map(|i| (receipts[i].delivered_at, receipts[i].read_at))
            .unwrap_or((None, None));
        let new_delivered = delivered_at.or(Some(at_ms));
        let new_read = match kind {
            ReceiptKind::Read => read_at.or(Some(at_ms)),
            ReceiptKind::Delivered => read_at,
        };
        if (new_delivered, new_read) == (delivered_at, read_at) {
            return Ok(None);
        }
        let model = receipt::Model {
            session_id: session_id.to_owned(),
            message_seq: row.seq,
            recipient: recipient.into_owned(),
            delivered_at: new_delivered,
            read_at: new_read,
        };
        receipt::Entity::insert(receipt::ActiveModel {
            session_id: Set(model.session_id.clone()),
            message_seq: Set(model.message_seq),
            recipient: Set(model.recipient.clone()),
            delivered_at: Set(model.delivered_at),
            read_at: Set(model.read_at),
        })
        .on_conflict(
            OnConflict::columns([
                receipt::Column::SessionId,
                receipt::Column::MessageSeq,
                receipt::Column::Recipient,
            ])
            .update_columns([receipt::Column::DeliveredAt, receipt::Column::ReadAt])
            .to_owned(),
        )
        .exec_without_returning(self.conn())
        .await?;
        match position {
            Some(i) => receipts[i] = model,
            None => receipts.push(model),
        }
        self.log_update(row, MessageChange::Receipt, Vec::new())
            .await?;

        let recipients = self.recipients(row).await?;
        let summary = summary_status(&receipts, &recipients);
        let current = MessageStatus::from_i16(row.status);
        if let Some(summary) = summary
            && current.advances_to(summary)
        {
            let columns = vec![(message::Column::Status, Expr::value(summary.as_i16()))];
            self.change_message(
                row,
                change::KIND_STATUS,
                Some(summary.as_i16()),
                None,
                columns,
            )
            .await?;
        }
        Ok(Some(MessageChange::Receipt))
    }

    /// The current participants of the message's chat other than its sender: the people whose
    /// receipts complete its summary status.
    async fn recipients(&self, row: &message::Model) -> Result<Vec<String>> {
        let rows = participant::Entity::find()
            .filter(participant::Column::SessionId.eq(self.session_id()))
            .filter(participant::Column::ChatId.eq(row.chat_id.as_str()))
            .filter(participant::Column::ContactId.ne(row.sender.as_str()))
            .all(self.conn())
            .await?;
        Ok(rows
            .into_iter()
            .filter(|p| match (p.joined_at, p.left_at) {
                (_, None) => true,
                (Some(joined), Some(left)) => joined > left,
                (None, Some(_)) => false,
            })
            .map(|p| p.contact_id)
            .collect())
    }
}

/// The summary status per-recipient receipts give: READ when every recipient has read it,
/// DELIVERED when every one has it; with no recipients known (a chat whose participants are
/// not stored), one receipt is enough. `None`: no summary yet. A direct chat has one
/// recipient, so one read makes it READ; a group needs all of its current participants.
pub fn summary_status(receipts: &[receipt::Model], recipients: &[String]) -> Option<MessageStatus> {
    let of = |recipient: &str| receipts.iter().find(|r| r.recipient == recipient);
    let all = |reached: &dyn Fn(&receipt::Model) -> bool| {
        if recipients.is_empty() {
            receipts.iter().any(reached)
        } else {
            recipients
                .iter()
                .all(|recipient| of(recipient).is_some_and(reached))
        }
    };
    if all(&|r| r.read_at.is_some()) {
        Some(MessageStatus::Read)
    } else if all(&|r| r.delivered_at.is_some() || r.read_at.is_some()) {
        Some(MessageStatus::Delivered)
    } else {
        None
    }
}

impl WriteTxn {
    /// Inserts the reactions that come with messages just inserted (an export's), given as
    /// `(seq, message)`.
    pub(super) async fn insert_reactions(&self, messages: &[(u64, &NewMessage)]) -> Result<()> {
        let mut seen: HashSet<(u64, &str, &str)> = HashSet::new();
        let rows: Vec<reaction::ActiveModel> = messages
            .iter()
            .flat_map(|(seq, message)| message.reactions.iter().map(move |r| (*seq, r)))
            .filter(|(seq, r)| seen.insert((*seq, r.sender.as_str(), r.emoji.as_str())))
            .map(|(seq, r)| reaction::ActiveModel {
                session_id: Set(self.session_id().to_owned()),
                message_seq: Set(seq as i64),
                sender: Set(storable(&r.sender).into_owned()),
                emoji: Set(storable(&r.emoji).into_owned()),
                at: Set(r.at_ms),
                provider_reaction_id: Set(r.provider_reaction_id.clone()),
            })
            .collect();
        self.insert_rows(&rows).await?;
        Ok(())
    }
}

/// Fills in the details of a page of messages: attachments ([`super::attachments::fill`]),
/// earlier texts (edited messages), reactions, receipts (the account's own messages) and the
/// server id of each reply's quoted message. One query per kind of detail per 500 messages,
/// none for a kind no message of the page can have.
pub(super) async fn fill<'a>(
    db: &impl ConnectionTrait,
    messages: impl IntoIterator<Item = &'a mut Message>,
) -> Result<()> {
    fill_with(db, messages, Details::All).await
}

/// [`fill`], of the `details` asked for.
async fn fill_with<'a>(
    db: &impl ConnectionTrait,
    messages: impl IntoIterator<Item = &'a mut Message>,
    details: Details,
) -> Result<()> {
    let mut messages: Vec<&mut Message> = messages.into_iter().collect();
    super::attachments::fill(db, messages.iter_mut().map(|m| &mut **m)).await?;
    // Pages hold one session's messages; a mixed set is filled a session at a time.
    let mut by_session: HashMap<String, Vec<&mut Message>> = HashMap::new();
    for message in messages {
        by_session
            .entry(message.session_id.clone())
            .or_default()
            .push(message);
    }
    for (session_id, ours) in by_session {
        fill_session(db, &session_id, ours, details).await?;
    }
    Ok(())
}

/// [`fill_with`] for messages of one session, less their attachments.
async fn fill_session(
    db: &impl ConnectionTrait,
    session_id: &str,
    mut ours: Vec<&mut Message>,
    details: Details,
) -> Result<()> {
    let lifecycle = details == Details::All;
    let seqs = |wanted: &dyn Fn(&Message) -> bool, ours: &[&mut Message]| -> Vec<i64> {
        ours.iter()
            .filter(|m| lifecycle && wanted(m))
            .map(|m| m.seq as i64)
            .collect()
    };

    let edited = seqs(&|m| m.edited && m.kind != MessageKind::Deleted, &ours);
    let mut texts: HashMap<i64, Vec<EarlierText>> = HashMap::new();
    for chunk in edited.chunks(500) {
        let rows = message_version::Entity::find()
            .filter(message_version::Column::SessionId.eq(session_id))
            .filter(message_version::Column::MessageSeq.is_in(chunk.iter().copied()))
            .order_by_asc(message_version::Column::MessageSeq)
            .order_by_asc(message_version::Column::Version)
            .all(db)
            .await?;
        for row in rows {
            texts.entry(row.message_seq).or_default().push(EarlierText {
                text: row.text,
                replaced_at_ms: row.replaced_at,
            });
        }
    }

    let all = seqs(&|m| m.kind != MessageKind::Deleted, &ours);
    let mut reactions: HashMap<i64, Vec<Reaction>> = HashMap::new();
    for chunk in all.chunks(500) {
        let rows = reaction::Entity::find()
            .filter(reaction::Column::SessionId.eq(session_id))
            .filter(reaction::Column::MessageSeq.is_in(chunk.iter().copied()))
            .order_by_asc(reaction::Column::At)
            .all(db)
            .await?;
        for row in rows {
            reactions
                .entry(row.message_seq)
                .or_default()
                .push(Reaction {
                    emoji: row.emoji,
                    sender: row.sender,
                    at_ms: row.at,
                    provider_reaction_id: row.provider_reaction_id,
                });
        }
    }

    let own = seqs(&|m| m.from_me, &ours);
    let mut receipts: HashMap<i64, Vec<Receipt>> = HashMap::new();
    for chunk in own.chunks(500) {
        let rows = receipt::Entity::find()
            .filter(receipt::Column::SessionId.eq(session_id))
            .filter(receipt::Column::MessageSeq.is_in(chunk.iter().copied()))
            .order_by_asc(receipt::Column::Recipient)
            .all(db)
            .await?;
        for row in rows {
            receipts.entry(row.message_seq).or_default().push(Receipt {
                recipient: row.recipient,
                delivered_at_ms: row.delivered_at,
                read_at_ms: row.read_at,
            });
        }
    }

    // Quoted ids by chat, so each lookup uses the (session, chat, provider id) index.
    let mut quoted: HashMap<&str, Vec<&str>> = HashMap::new();
    for message in ours.iter() {
        if let Some(reply) = &message.reply_to {
            quoted
                .entry(message.chat_id.as_str())
                .or_default()
                .push(reply.provider_message_id.as_str());
        }
    }
    let mut ids: HashMap<(String, String), i64> = HashMap::new();
    for (chat_id, provider_ids) in &quoted {
        for chunk in provider_ids.chunks(500) {
            let rows: Vec<(i64, String)> = message::Entity::find()
                .select_only()
                .column(message::Column::Id)
                .column(message::Column::ProviderMessageId)
                .filter(message::Column::SessionId.eq(session_id))
                .filter(message::Column::ChatId.eq(*chat_id))
                .filter(message::Column::ProviderMessageId.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(db)
                .await?;
            ids.extend(
                rows.into_iter()
                    .map(|(id, provider)| (((*chat_id).to_owned(), provider), id)),
            );
        }
    }
    drop(quoted);

    for message in ours.iter_mut() {
        let seq = message.seq as i64;
        // A page of changes can hold one message more than once (created, then updated).
        message.earlier_texts = texts.get(&seq).cloned().unwrap_or_default();
        message.reactions = reactions.get(&seq).cloned().unwrap_or_default();
        message.receipts = receipts.get(&seq).cloned().unwrap_or_default();
        let chat_id = message.chat_id.clone();
        if let Some(reply) = message.reply_to.as_mut() {
            reply.message_id = ids
                .get(&(chat_id, reply.provider_message_id.clone()))
                .copied();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(recipient: &str, delivered: bool, read: bool) -> receipt::Model {
        receipt::Model {
            session_id: "s".into(),
            message_seq: 1,
            recipient: recipient.into(),
            delivered_at: delivered.then_some(1),
            read_at: read.then_some(2),
        }
    }

    #[test]
    fn the_summary_status_waits_for_every_recipient() {
        let group = ["ana".to_owned(), "ben".to_owned()];
        let cases: [(&[receipt::Model], &[String], Option<MessageStatus>); 7] = [
            (&[], &group, None),
            (&[receipt("ana", true, true)], &group, None),
            (
                &[receipt("ana", true, true), receipt("ben", true, false)],
                &group,
                Some(MessageStatus::Delivered),
            ),
            (
                &[receipt("ana", false, true), receipt("ben", true, true)],
                &group,
                Some(MessageStatus::Read),
            ),
            // A direct chat: its one recipient is enough.
            (
                &[receipt("ana", false, true)],
                &group[..1],
                Some(MessageStatus::Read),
            ),
            // No participants known: any one receipt.
            (
                &[receipt("zed", true, false)],
                &[],
                Some(MessageStatus::Delivered),
            ),
            // A receipt of someone who is no longer a participant does not count.
            (&[receipt("zed", true, true)], &group[..1], None),
        ];
        for (receipts, recipients, expected) in cases {
            assert_eq!(
                summary_status(receipts, recipients),
                expected,
                "{receipts:?} of {recipients:?}"
            );
        }
    }
}

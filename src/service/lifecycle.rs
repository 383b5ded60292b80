//! ReactToMessage, EditMessage and DeleteMessage: the session's own account changes a stored
//! message.
//!
//! Each call is checked (the session, the source's capabilities, the message, who sent it),
//! made upstream first (so that a change the upstream refuses is never stored), then stored
//! as one seq and a `message_updated` change, which every subscriber receives. The request id
//! is the idempotency key both upstream (a Matrix transaction id) and in storage: a retry
//! after a crash between the two makes the upstream call again, which the upstream
//! deduplicates, and stores it once.
use super::*;
use crate::model::{MessageChange, ReactionChange};
use crate::sources::UpstreamChange;
use crate::storage::{MessageOp, Outcome};

/// The largest reaction key ReactToMessage accepts, in bytes of UTF-8 (an emoji sequence with
/// modifiers and joiners is well under it).
pub const MAX_EMOJI_BYTES: usize = 64;

/// A change the session's account makes to one of the stored messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientChange {
    /// Sets the account's reaction; an empty emoji removes it.
    React { emoji: String },
    /// Replaces the text of one of the account's messages.
    Edit { text: String },
    /// Deletes one of the account's messages for everyone.
    Delete,
}

/// A ReactToMessage, EditMessage or DeleteMessage call.
#[derive(Debug, Clone)]
pub struct ChangeRequest {
    pub session_id: String,
    /// The message's server id.
    pub message_id: i64,
    pub change: ClientChange,
    /// The idempotency key (checked like a `client_message_id`); `None`: no idempotency.
    pub request_id: Option<ClientMessageId>,
}

/// What a change call did: the message as stored after it, whether it changed, and whether
/// the request id had been used before (then nothing was done).
#[derive(Debug, Clone)]
pub struct ChangeAnswer {
    pub message: Message,
    pub changed: bool,
    pub duplicate: bool,
}

impl ChatSync {
    /// Makes a [`ClientChange`] for the session's account. See the module docs for the order.
    ///
    /// Errors: `NotFound` for an unknown session or message; `InvalidArgument` for an emoji
    /// over [`MAX_EMOJI_BYTES`], an empty or too long text, or a NUL character;
    /// `PermissionDenied` to edit or delete a message the account did not send;
    /// `FailedPrecondition` for a source that cannot make changes, a deleted message (to react
    /// or edit), a system notice (to edit), or a message not yet sent upstream; the source's
    /// own errors (`Unavailable` worth a retry).
    pub async fn change_message(&self, request: ChangeRequest) -> Result<ChangeAnswer> {
        let ChangeRequest {
            session_id,
            message_id,
            change,
            request_id,
        } = request;
        let session_id = session_id.as_str();
        let source = self.source(session_id)?.clone();
        match &change {
            ClientChange::React { emoji } => {
                refuse_nul("emoji", emoji)?;
                if emoji.len() > MAX_EMOJI_BYTES {
                    return Err(Error::InvalidArgument(format!(
                        "emoji is {} bytes; the limit is {MAX_EMOJI_BYTES}",
                        emoji.len()
                    )));
                }
            }
            ClientChange::Edit { text } => {
                refuse_nul("text", text)?;
                if text.trim().is_empty() {
                    return Err(Error::InvalidArgument("text must not be empty".into()));
                }
                if text.len() > MAX_TEXT_BYTES {
                    return Err(Error::InvalidArgument(format!(
                        "text is {} bytes; the limit is {MAX_TEXT_BYTES}",
                        text.len()
                    )));
                }
            }
            ClientChange::Delete => {}
        }
        let capabilities = source.capabilities();
        if !capabilities.message_changes {
            return Err(Error::FailedPrecondition(format!(
                "the {} source cannot react to, edit or delete messages",
                source.kind()
            )));
        }
        let store = &self.inner.store;
        let request_id = request_id.map(|id| id.as_str().to_owned());
        if let Some(request_id) = &request_id
            && let Some(message) = store.request_message(session_id, request_id).await?
        {
            return Ok(ChangeAnswer {
                message,
                changed: false,
                duplicate: true,
            });
        }
        let message = store
            .message_by_ref(session_id, &MessageRef::Id(message_id))
            .await?;
        let deleted = message.kind == MessageKind::Deleted;
        let own = message.from_me;
        match &change {
            ClientChange::Edit { .. } | ClientChange::Delete if !own => {
                return Err(Error::PermissionDenied(format!(
                    "message {message_id} was not sent by the session's account"
                )));
            }
            ClientChange::React { .. } | ClientChange::Edit { .. } if deleted => {
                return Err(Error::FailedPrecondition(format!(
                    "message {message_id} is deleted"
                )));
            }
            ClientChange::Edit { .. } if message.kind == MessageKind::System => {
                return Err(Error::FailedPrecondition(format!(
                    "message {message_id} is a system notice"
                )));
            }
            _ => {}
        }
        if !capabilities.native
            && matches!(
                message.status,
                MessageStatus::Pending | MessageStatus::Failed
            )
        {
            return Err(Error::FailedPrecondition(format!(
                "message {message_id} was not sent upstream; only sent messages can be changed"
            )));
        }

        let me = source.account_id().unwrap_or_default();
        let now = now_ms();
        let mine: Vec<&model::Reaction> = message
            .reactions
            .iter()
            .filter(|r| r.sender == me)
            .collect();
        let emoji = match &change {
            ClientChange::React { emoji } if !emoji.is_empty() => Some(emoji.as_str()),
            _ => None,
        };
        // The account's reaction is already so: nothing to post. (Posting would redact the
        // stored reaction upstream and send a new one, while storage, unchanged, kept the
        // redacted one's id: the next removal would redact that, leaving the new one up.)
        let reaction_unchanged = matches!(change, ClientChange::React { .. })
            && match emoji {
                Some(emoji) => mine.len() == 1 && mine[0].emoji == emoji,
                None => mine.is_empty(),
            };
        let upstream_id = if capabilities.native {
            None
        } else if reaction_unchanged {
            mine.first().and_then(|r| r.provider_reaction_id.clone())
        } else {
            let previous: Vec<String> = mine
                .iter()
                .filter_map(|r| r.provider_reaction_id.clone())
                .collect();
            let upstream = match &change {
                ClientChange::React { .. } => UpstreamChange::React {
                    emoji,
                    previous: &previous,
                },
                ClientChange::Edit { text } => UpstreamChange::Edit { text },
                ClientChange::Delete => UpstreamChange::Delete,
            };
            let key = request_id
                .clone()
                .unwrap_or_else(|| ClientMessageId::generate().as_str().to_owned());
            source
                .change_message(
                    &message.chat_id,
                    &message.provider_message_id,
                    upstream,
                    &key,
                )
                .await
                .map_err(Error::from)?
        };
        let op = match change {
            ClientChange::React { .. } => MessageOp::React(ReactionChange::Set {
                sender: me.clone(),
                emoji: emoji.map(str::to_owned),
                at_ms: now,
                provider_reaction_id: upstream_id,
            }),
            ClientChange::Edit { text } => MessageOp::Edit {
                text,
                editor: None,
                at_ms: now,
            },
            ClientChange::Delete => MessageOp::Delete {
                by: message.sender.clone(),
                at_ms: now,
            },
        };
        let (message, outcome) = store
            .update_message(
                session_id,
                &MessageRef::Id(message_id),
                &op,
                request_id.as_deref(),
            )
            .await?;
        Ok(ChangeAnswer {
            message,
            changed: matches!(outcome, Outcome::Changed(_)),
            duplicate: outcome == Outcome::Duplicate,
        })
    }

    /// Records one recipient's receipt of a message (UpdateMessageStatus with a recipient):
    /// DELIVERED or READ. The message's summary status follows (see
    /// [`crate::storage::lifecycle::summary_status`]). Returns the message as stored after,
    /// and whether the receipt was new.
    ///
    /// Errors: `NotFound`; `InvalidArgument` for a status other than DELIVERED or READ, or a
    /// recipient over 256 bytes or with a NUL character.
    pub async fn record_receipt(
        &self,
        session_id: &str,
        reference: MessageRef,
        recipient: &str,
        status: MessageStatus,
    ) -> Result<(Message, bool)> {
        self.source(session_id)?;
        refuse_nul("recipient", recipient)?;
        if recipient.len() > ChatId::MAX_BYTES {
            return Err(Error::InvalidArgument(format!(
                "recipient is {} bytes; the limit is {}",
                recipient.len(),
                ChatId::MAX_BYTES
            )));
        }
        let kind = match status {
            MessageStatus::Delivered => model::ReceiptKind::Delivered,
            MessageStatus::Read => model::ReceiptKind::Read,
            _ => {
                return Err(Error::InvalidArgument(
                    "a recipient's receipt is DELIVERED or READ".into(),
                ));
            }
        };
        let op = MessageOp::Receipt {
            recipient: recipient.to_owned(),
            kind,
            at_ms: now_ms(),
        };
        let (message, outcome) = self
            .inner
            .store
            .update_message(session_id, &reference, &op, None)
            .await?;
        Ok((message, outcome == Outcome::Changed(MessageChange::Receipt)))
    }
}

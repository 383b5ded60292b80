//! Conversions between the protobuf types and the domain: `From<model::…>` for the proto
//! types the server answers with, and the request-side helpers that can fail (timestamps,
//! statuses), which answer with the domain [`Error`] for [`super::status_from`] to map.
use std::sync::Arc;

use crate::error::Error;
use crate::model::{self, MessageStatus, SourceState, SyncState};
use crate::service::{Event, Progress, SearchHit, SendRequest, SnapshotFrame, Stage, SyncStatus};

use super::pb;

/// A request's timestamp as Unix milliseconds (sub-millisecond parts round down).
/// `InvalidArgument` for one outside the range of a valid timestamp (years 1 to 9999) or with
/// nanos outside 0..1e9.
pub(super) fn timestamp_ms(value: &pbjson_types::Timestamp) -> Result<i64, Error> {
    // 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, as protobuf's Timestamp defines its range.
    const MIN_SECONDS: i64 = -62_135_596_800;
    const MAX_SECONDS: i64 = 253_402_300_799;
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&value.seconds)
        || !(0..1_000_000_000).contains(&value.nanos)
    {
        return Err(Error::InvalidArgument(format!(
            "timestamp {}s {}ns is not a valid instant",
            value.seconds, value.nanos
        )));
    }
    Ok(value.seconds * 1_000 + i64::from(value.nanos / 1_000_000))
}

impl TryFrom<pb::SendMessageRequest> for SendRequest {
    type Error = Error;

    /// Parses the chat id and the idempotency key ([`model::ChatId`],
    /// [`model::ClientMessageId`]); `InvalidArgument` when either is malformed.
    fn try_from(body: pb::SendMessageRequest) -> Result<Self, Error> {
        Ok(SendRequest {
            chat_id: model::ChatId::parse(body.chat_id)?,
            client_message_id: model::ClientMessageId::parse_optional(body.client_message_id)?,
            session_id: body.session_id,
            text: body.text,
            reply_to: (body.reply_to_message_id != 0).then_some(body.reply_to_message_id as i64),
            uploads: body
                .attachments
                .into_iter()
                .map(|file| model::AttachmentUpload {
                    file_name: file.file_name,
                    mime_type: file.mime_type,
                    data: file.data,
                })
                .collect(),
        })
    }
}

pub(super) fn timestamp(ms: i64) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub(super) fn status_from_pb(value: i32) -> Result<MessageStatus, Error> {
    match pb::MessageStatus::try_from(value) {
        Ok(pb::MessageStatus::Pending) => Ok(MessageStatus::Pending),
        Ok(pb::MessageStatus::Sent) => Ok(MessageStatus::Sent),
        Ok(pb::MessageStatus::Delivered) => Ok(MessageStatus::Delivered),
        Ok(pb::MessageStatus::Read) => Ok(MessageStatus::Read),
        Ok(pb::MessageStatus::Failed) => Ok(MessageStatus::Failed),
        _ => Err(Error::InvalidArgument(format!(
            "status {value} is not a message status"
        ))),
    }
}

impl From<MessageStatus> for pb::MessageStatus {
    fn from(status: MessageStatus) -> Self {
        match status {
            MessageStatus::Pending => pb::MessageStatus::Pending,
            MessageStatus::Sent => pb::MessageStatus::Sent,
            MessageStatus::Delivered => pb::MessageStatus::Delivered,
            MessageStatus::Read => pb::MessageStatus::Read,
            MessageStatus::Failed => pb::MessageStatus::Failed,
        }
    }
}

impl From<model::MessageKind> for pb::MessageKind {
    fn from(kind: model::MessageKind) -> Self {
        match kind {
            model::MessageKind::Text => pb::MessageKind::Text,
            model::MessageKind::System => pb::MessageKind::System,
            model::MessageKind::Media => pb::MessageKind::Media,
            model::MessageKind::Deleted => pb::MessageKind::Deleted,
        }
    }
}

impl From<model::Message> for pb::Message {
    fn from(message: model::Message) -> Self {
        pb::Message {
            id: message.id as u64,
            session_id: message.session_id,
            chat_id: message.chat_id,
            provider_message_id: message.provider_message_id,
            client_message_id: message.client_message_id.unwrap_or_default(),
            sender: message.sender,
            text: message.text,
            kind: pb::MessageKind::from(message.kind) as i32,
            status: pb::MessageStatus::from(message.status) as i32,
            sent_at: Some(timestamp(message.sent_at_ms)),
            seq: message.seq,
            from_me: message.from_me,
            attachments: message
                .attachments
                .into_iter()
                .map(|file| pb::Attachment {
                    file_name: file.file_name,
                    mime_type: file.mime_type,
                    size_bytes: file.size_bytes,
                    sha256: file.sha256,
                    stored: file.stored,
                })
                .collect(),
            reply_to: message.reply_to.map(|reply| pb::ReplyTo {
                provider_message_id: reply.provider_message_id,
                message_id: reply.message_id.unwrap_or_default() as u64,
            }),
            forwarded: message.forwarded != model::Forwarded::No,
            frequently_forwarded: message.forwarded == model::Forwarded::Frequently,
            forwarded_from: message.forwarded_from.unwrap_or_default(),
            edited: message.edited,
            edited_at: message.edited_at_ms.map(timestamp),
            earlier_texts: message
                .earlier_texts
                .into_iter()
                .map(|earlier| pb::EarlierText {
                    text: earlier.text,
                    replaced_at: Some(timestamp(earlier.replaced_at_ms)),
                })
                .collect(),
            reactions: reactions_by_emoji(message.reactions),
            receipts: message
                .receipts
                .into_iter()
                .map(|receipt| pb::Receipt {
                    recipient: receipt.recipient,
                    delivered_at: receipt.delivered_at_ms.map(timestamp),
                    read_at: receipt.read_at_ms.map(timestamp),
                })
                .collect(),
            deletion: message.deletion.map(|deletion| pb::Deletion {
                deleted_by: deletion.deleted_by,
                deleted_at: Some(timestamp(deletion.deleted_at_ms)),
            }),
        }
    }
}

/// Reactions grouped by emoji, in the order each emoji was first used, each with its reactors
/// oldest first (the storage returns them by time).
fn reactions_by_emoji(reactions: Vec<model::Reaction>) -> Vec<pb::Reaction> {
    let mut grouped: Vec<pb::Reaction> = Vec::new();
    for reaction in reactions {
        let reactor = pb::Reactor {
            sender: reaction.sender,
            reacted_at: Some(timestamp(reaction.at_ms)),
        };
        match grouped
            .iter_mut()
            .find(|group| group.emoji == reaction.emoji)
        {
            Some(group) => group.reactors.push(reactor),
            None => grouped.push(pb::Reaction {
                emoji: reaction.emoji,
                reactors: vec![reactor],
            }),
        }
    }
    grouped
}

impl From<model::MessageChange> for pb::MessageChange {
    fn from(what: model::MessageChange) -> Self {
        match what {
            model::MessageChange::Edit => pb::MessageChange::Edit,
            model::MessageChange::Deletion => pb::MessageChange::Deletion,
            model::MessageChange::Reaction => pb::MessageChange::Reaction,
            model::MessageChange::Receipt => pb::MessageChange::Receipt,
            model::MessageChange::Attachment => pb::MessageChange::Attachment,
        }
    }
}

impl From<model::Chat> for pb::Chat {
    fn from(chat: model::Chat) -> Self {
        pb::Chat {
            chat_id: chat.chat_id,
            name: chat.name,
            seq: chat.seq,
        }
    }
}

impl From<model::Contact> for pb::Contact {
    fn from(contact: model::Contact) -> Self {
        pb::Contact {
            contact_id: contact.contact_id,
            display_name: contact.display_name,
            phone: contact.phone.unwrap_or_default(),
            matrix_id: contact.matrix_id.unwrap_or_default(),
            seq: contact.seq,
        }
    }
}

impl From<model::Participant> for pb::Participant {
    fn from(participant: model::Participant) -> Self {
        pb::Participant {
            chat_id: participant.chat_id,
            contact_id: participant.contact_id,
            joined_at: participant.joined_at_ms.map(timestamp),
            left_at: participant.left_at_ms.map(timestamp),
            seq: participant.seq,
        }
    }
}

impl From<Stage> for pb::SyncStage {
    fn from(stage: Stage) -> Self {
        match stage {
            Stage::Started => pb::SyncStage::Started,
            Stage::ChatSaved => pb::SyncStage::ChatSaved,
            Stage::MessagesSaved => pb::SyncStage::MessagesSaved,
            Stage::ChatFailed => pb::SyncStage::ChatFailed,
            Stage::Completed => pb::SyncStage::Completed,
            Stage::Failed => pb::SyncStage::Failed,
        }
    }
}

impl From<Progress> for pb::SyncChatsResponse {
    fn from(progress: Progress) -> Self {
        pb::SyncChatsResponse {
            progress: Some(pb::SyncProgress::from(progress)),
        }
    }
}

impl From<Progress> for pb::SyncProgress {
    fn from(progress: Progress) -> Self {
        pb::SyncProgress {
            sync_id: progress.sync_id,
            session_id: progress.session_id,
            n_chats: progress.n_chats,
            current_chat: progress.current_chat,
            chat_id: progress.chat_id,
            messages_synced: progress.messages_synced,
            total_messages_synced: progress.total_messages_synced,
            stage: pb::SyncStage::from(progress.stage) as i32,
            error: progress.error,
            unplaced_lines: progress.unplaced_lines,
            total_unplaced_lines: progress.total_unplaced_lines,
        }
    }
}

impl From<SyncState> for pb::SyncState {
    fn from(state: SyncState) -> Self {
        match state {
            SyncState::NeverSynced => pb::SyncState::NeverSynced,
            SyncState::Running => pb::SyncState::Running,
            SyncState::Succeeded => pb::SyncState::Succeeded,
            SyncState::Failed => pb::SyncState::Failed,
            SyncState::Interrupted => pb::SyncState::Interrupted,
        }
    }
}

impl From<SyncStatus> for pb::GetSyncStatusResponse {
    fn from(status: SyncStatus) -> Self {
        let state = pb::SyncState::from(status.state);
        let (source_state, source_error) = match status.source_state {
            SourceState::NotLive => (pb::SourceState::NotLive, String::new()),
            SourceState::Connecting => (pb::SourceState::Connecting, String::new()),
            SourceState::Up => (pb::SourceState::Up, String::new()),
            SourceState::Down(error) => (pb::SourceState::Down, error),
        };
        let session = status.session;
        pb::GetSyncStatusResponse {
            session_id: session.id,
            state: state as i32,
            progress: status.progress.map(pb::SyncProgress::from),
            started_at: session.sync_started_at_ms.map(timestamp),
            finished_at: session.sync_finished_at_ms.map(timestamp),
            last_error: session.sync_error.unwrap_or_default(),
            chat_count: status.chat_count,
            message_count: status.message_count,
            head_seq: session.head_seq,
            source: session.source,
            source_state: source_state as i32,
            source_error,
        }
    }
}

impl From<Event> for pb::SubscribeMessagesResponse {
    fn from(event: Event) -> Self {
        use pb::subscribe_messages_response::Event as PbEvent;
        let what = match event {
            Event::Change(ref change) => match **change {
                model::Change::MessageUpdated { what, .. } => pb::MessageChange::from(what),
                _ => pb::MessageChange::Unspecified,
            },
            _ => pb::MessageChange::Unspecified,
        };
        let (seq, event) = match event {
            Event::Change(change) => change_to_pb(Arc::unwrap_or_clone(change)),
            Event::Ready { head_seq } => (head_seq, PbEvent::Ready(pb::Ready { head_seq })),
            Event::Heartbeat { seq } => (
                seq,
                PbEvent::Heartbeat(pb::Heartbeat {
                    server_time: Some(timestamp(model::now_ms())),
                }),
            ),
        };
        pb::SubscribeMessagesResponse {
            seq,
            event: Some(event),
            message_change: what as i32,
        }
    }
}

/// A change as a subscription event, with its seq.
pub(super) fn change_to_pb(change: model::Change) -> (u64, pb::subscribe_messages_response::Event) {
    use pb::subscribe_messages_response::Event as PbEvent;
    match change {
        model::Change::MessageCreated(message) => (
            message.seq,
            PbEvent::MessageCreated(pb::Message::from(message)),
        ),
        model::Change::StatusUpdated(update) => (
            update.seq,
            PbEvent::StatusUpdated(pb::StatusUpdated {
                message_id: update.message_id as u64,
                chat_id: update.chat_id,
                provider_message_id: update.provider_message_id,
                status: pb::MessageStatus::from(update.status) as i32,
                updated_at: Some(timestamp(update.updated_at_ms)),
                error: update.error.map(|error| pb::StatusError {
                    code: error.code,
                    title: error.title,
                }),
            }),
        ),
        model::Change::ChatUpdated(chat) => (chat.seq, PbEvent::ChatUpdated(pb::Chat::from(chat))),
        model::Change::MessageUpdated { seq, message, .. } => {
            (seq, PbEvent::MessageUpdated(pb::Message::from(message)))
        }
        model::Change::ContactUpdated { seq, contact } => (
            seq,
            PbEvent::ContactUpdated(pb::ContactUpdated {
                contact: Some(pb::Contact::from(contact)),
            }),
        ),
        model::Change::ParticipantsChanged { seq, participant } => (
            seq,
            PbEvent::ParticipantsChanged(pb::ParticipantsChanged {
                chat_id: participant.chat_id.clone(),
                participants: vec![pb::Participant::from(participant)],
            }),
        ),
        model::Change::SyncRunFinished {
            seq,
            state,
            finished_at_ms,
        } => (
            seq,
            PbEvent::SyncRunFinished(pb::SyncRunFinished {
                state: pb::SyncState::from(state) as i32,
                finished_at: Some(timestamp(finished_at_ms)),
            }),
        ),
    }
}

impl From<SnapshotFrame> for pb::GetSnapshotResponse {
    fn from(frame: SnapshotFrame) -> Self {
        pb::GetSnapshotResponse {
            head_seq: frame.head_seq,
            chat: frame.chat.map(pb::Chat::from),
            messages: frame.messages.into_iter().map(pb::Message::from).collect(),
            unread_count: frame.unread_count,
            has_more: frame.has_more,
            n_chats: frame.n_chats,
        }
    }
}

/// The bytes `message` takes as one element of a repeated field with a one-byte tag (every
/// repeated field of `chatsync.v1` that lists these types has a field number below 16).
fn as_element(message: &impl prost::Message) -> usize {
    let len = message.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

impl model::EncodedLen for model::Message {
    fn encoded_len(&self) -> usize {
        as_element(&pb::Message::from(self.clone()))
    }
}

impl model::EncodedLen for model::Chat {
    fn encoded_len(&self) -> usize {
        as_element(&pb::Chat::from(self.clone()))
    }
}

impl model::EncodedLen for model::Contact {
    fn encoded_len(&self) -> usize {
        as_element(&pb::Contact::from(self.clone()))
    }
}

impl model::EncodedLen for model::Participant {
    fn encoded_len(&self) -> usize {
        as_element(&pb::Participant::from(self.clone()))
    }
}

impl model::EncodedLen for SearchHit {
    fn encoded_len(&self) -> usize {
        as_element(&pb::SearchHit::from(self.clone()))
    }
}

impl model::ProtoJson for model::Change {
    fn proto_json(&self) -> serde_json::Value {
        let event = pb::SubscribeMessagesResponse::from(crate::service::Event::Change(
            std::sync::Arc::new(self.clone()),
        ));
        serde_json::to_value(&event).unwrap_or_default()
    }
}

impl From<SearchHit> for pb::SearchHit {
    fn from(hit: SearchHit) -> Self {
        pb::SearchHit {
            message: Some(pb::Message::from(hit.message)),
            snippet: hit.snippet,
            score: hit.score,
        }
    }
}

impl From<crate::service::webhooks::WebhookStatus> for pb::WebhookStatus {
    fn from(status: crate::service::webhooks::WebhookStatus) -> Self {
        use crate::service::webhooks::WebhookState;
        let state = match status.state {
            WebhookState::UpToDate => pb::WebhookState::UpToDate,
            WebhookState::Delivering => pb::WebhookState::Delivering,
            WebhookState::Retrying => pb::WebhookState::Retrying,
            WebhookState::Failing => pb::WebhookState::Failing,
        };
        pb::WebhookStatus {
            lag: status.lag(),
            webhook_id: status.webhook_id,
            session_id: status.session_id,
            cursor: status.cursor,
            head_seq: status.head_seq,
            last_attempt_at: status.last_attempt_at_ms.map(timestamp),
            last_status: status.last_status as u32,
            last_error: status.last_error,
            failing_since: status.failing_since_ms.map(timestamp),
            failures: status.failures,
            state: state as i32,
        }
    }
}

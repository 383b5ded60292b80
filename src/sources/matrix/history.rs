//! History: backfill from `/messages` (`dir=b`, [`PAGE_SIZE`] events a page), and the fold of
//! edits and redactions into the messages they change.
use super::*;

impl Matrix {
    /// A room's history from `/messages`, paging backwards from the newest event until
    /// `limit` messages are read, the room's start, or (with `since_ms`) a page that reaches
    /// a message sent before `since_ms`: older pages are not read. Returns the messages at or
    /// after `since_ms`, oldest first, at most the `limit` most recent.
    pub(super) async fn backfill(
        &self,
        chat: &SourceChat,
        limit: Option<usize>,
        since_ms: Option<i64>,
    ) -> Result<ChatHistory, SourceError> {
        let room_id = room_id(&chat.chat_id)?;
        let mut items = Vec::new();
        let mut messages = 0usize;
        let mut from: Option<String> = None;
        // Member events: those of the window read, and the room's current state.
        let mut members: Vec<Value> = self.room_state(&room_id).await?;
        members.retain(|event| event["type"] == "m.room.member");
        loop {
            let want = limit.map_or(PAGE_SIZE, |limit| (limit - messages).min(PAGE_SIZE));
            let page = self.page_back(&room_id, from.as_deref(), want).await?;
            let mut passed_since = false;
            for raw in &page.chunk {
                if raw.json().get().contains("m.room.member")
                    && let Ok(event) = raw.deserialize_as_unchecked::<Value>()
                {
                    members.push(event);
                }
                let mut item = read_timeline_event(raw, &self.me);
                if let TimelineItem::Message(message) = &item {
                    if since_ms.is_some_and(|since| message.sent_at_ms < since) {
                        // Before the window: cut by `apply_window`, so its file is not fetched.
                        passed_since = true;
                        items.push(item);
                        continue;
                    }
                    messages += 1;
                }
                self.fetch_media(&chat.chat_id, raw, &mut item).await;
                items.push(item);
            }
            if passed_since || limit.is_some_and(|limit| messages >= limit) {
                break;
            }
            match page.end {
                Some(end) if !page.chunk.is_empty() => from = Some(end),
                _ => break,
            }
        }
        let mut messages = fold_history(items);
        apply_window(&mut messages, limit, since_ms);
        Ok(ChatHistory {
            messages,
            people: member_people(&members),
            unplaced_lines: 0,
            content_sha256: None,
        })
    }

    /// One `/messages` page backwards from `from` (the newest events when `None`), retried
    /// with backoff while the homeserver is unavailable.
    pub(super) async fn page_back(
        &self,
        room_id: &OwnedRoomId,
        from: Option<&str>,
        limit: usize,
    ) -> Result<get_message_events::v3::Response, MatrixError> {
        let mut attempt = 0;
        let mut waits = backoff();
        loop {
            let mut request =
                get_message_events::v3::Request::new(room_id.clone(), Direction::Backward);
            request.from = from.map(str::to_owned);
            request.limit = UInt::try_from(limit.clamp(1, PAGE_SIZE) as u64).unwrap_or(UInt::MIN);
            match self.client.send(request, None).await {
                Err(MatrixError::Unavailable(error)) if attempt + 1 < PAGE_ATTEMPTS => {
                    attempt += 1;
                    tracing::warn!(%room_id, attempt, %error, "history page failed; retrying");
                    tokio::time::sleep(waits.next().unwrap_or(Duration::MAX)).await;
                }
                result => return result,
            }
        }
    }
}

/// A backfilled window, newest first, as messages oldest first: edits by the original sender
/// fold into the message they replace (the newest edit wins, with its time), reactions
/// (`m.annotation`) join their message's reactions (a sender's set: one per emoji), and
/// redactions turn their target DELETED (no text, files or reactions) or take a redacted
/// reaction back. The edit, reaction and redaction events themselves are not messages; those
/// whose target is not in the window change nothing.
fn fold_history(newest_first: Vec<TimelineItem>) -> Vec<crate::model::NewMessage> {
    use crate::model::Reaction;
    let mut messages: Vec<crate::model::NewMessage> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut later: Vec<TimelineItem> = Vec::new();
    for item in newest_first.into_iter().rev() {
        match item {
            TimelineItem::Message(message) => {
                index.insert(message.provider_message_id.clone(), messages.len());
                messages.push(message);
            }
            TimelineItem::Edit { .. }
            | TimelineItem::Redaction { .. }
            | TimelineItem::Reaction { .. } => later.push(item),
            TimelineItem::Other => {}
        }
    }
    // Reaction event id → the message it reacts to, for redactions of reactions.
    let mut reacted: HashMap<String, usize> = HashMap::new();
    for item in later {
        match item {
            TimelineItem::Edit {
                target,
                sender,
                text,
                at_ms,
            } => {
                if let Some(message) = index.get(&target).map(|&i| &mut messages[i])
                    && message.kind != MessageKind::Deleted
                    && message.sender == sender
                {
                    message.text = text;
                    message.edited = true;
                    message.edited_at_ms = Some(at_ms);
                }
            }
            TimelineItem::Reaction {
                target,
                event_id,
                sender,
                key,
                at_ms,
            } => {
                if let Some(&i) = index.get(&target) {
                    let message = &mut messages[i];
                    let known = message
                        .reactions
                        .iter()
                        .any(|r| r.sender == sender && r.emoji == key);
                    if message.kind != MessageKind::Deleted && !known {
                        reacted.insert(event_id.clone(), i);
                        message.reactions.push(Reaction {
                            emoji: key,
                            sender,
                            at_ms,
                            provider_reaction_id: Some(event_id),
                        });
                    }
                }
            }
            TimelineItem::Redaction { target, .. } => {
                if let Some(message) = index.get(&target).map(|&i| &mut messages[i]) {
                    message.kind = MessageKind::Deleted;
                    message.text.clear();
                    message.attachments.clear();
                    message.reactions.clear();
                    message.edited = false;
                    message.edited_at_ms = None;
                } else if let Some(i) = reacted.remove(&target) {
                    messages[i]
                        .reactions
                        .retain(|r| r.provider_reaction_id.as_deref() != Some(target.as_str()));
                }
            }
            TimelineItem::Message(_) | TimelineItem::Other => {}
        }
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MessageStatus, NewMessage};

    fn message(id: &str, text: &str) -> TimelineItem {
        TimelineItem::Message(NewMessage {
            provider_message_id: id.into(),
            client_message_id: None,
            sender: "@bob:localhost".into(),
            text: text.into(),
            kind: MessageKind::Text,
            status: MessageStatus::Sent,
            from_me: false,
            sent_at_ms: 0,
            attachments: Vec::new(),
            ..NewMessage::default()
        })
    }

    fn edit(target: &str, sender: &str, text: &str) -> TimelineItem {
        TimelineItem::Edit {
            target: target.into(),
            sender: sender.into(),
            text: text.into(),
            at_ms: 5,
        }
    }

    fn reaction(target: &str, id: &str, sender: &str, key: &str) -> TimelineItem {
        TimelineItem::Reaction {
            target: target.into(),
            event_id: id.into(),
            sender: sender.into(),
            key: key.into(),
            at_ms: 7,
        }
    }

    fn redaction(target: &str) -> TimelineItem {
        TimelineItem::Redaction {
            target: target.into(),
            sender: "@bob:localhost".into(),
            at_ms: 8,
        }
    }

    #[test]
    fn folds_reactions_and_their_redactions_into_history() {
        // Newest first.
        let page = vec![
            reaction("$2", "$r5", "@bob:localhost", "🎉"),
            redaction("$r2"),
            reaction("$9", "$r4", "@bob:localhost", "👀"),
            reaction("$1", "$r3", "@carol:localhost", "👍"),
            redaction("$2"),
            reaction("$2", "$r2x", "@bob:localhost", "🙂"),
            reaction("$1", "$r2", "@bob:localhost", "❤️"),
            reaction("$1", "$r1-dup", "@bob:localhost", "👍"),
            reaction("$1", "$r1", "@bob:localhost", "👍"),
            message("$2", "two"),
            message("$1", "one"),
        ];
        let messages = fold_history(page);
        let reactions = |i: usize| -> Vec<(&str, &str, Option<&str>)> {
            messages[i]
                .reactions
                .iter()
                .map(|r| {
                    (
                        r.emoji.as_str(),
                        r.sender.as_str(),
                        r.provider_reaction_id.as_deref(),
                    )
                })
                .collect()
        };
        assert_eq!(
            reactions(0),
            [
                ("👍", "@bob:localhost", Some("$r1")),
                ("👍", "@carol:localhost", Some("$r3")),
            ],
            "a sender's set, one per emoji; the redacted ❤️ taken back"
        );
        assert_eq!(messages[1].kind, MessageKind::Deleted);
        assert!(
            reactions(1).is_empty(),
            "a deleted message keeps no reactions, and takes no new ones"
        );
    }

    #[test]
    fn folds_edits_and_redactions_into_history() {
        // Newest first, as /messages?dir=b returns them.
        let page = vec![
            edit("$3", "@mallory:localhost", "not the sender: ignored"),
            edit("$1", "@bob:localhost", "one, edited twice"),
            TimelineItem::Redaction {
                target: "$2".into(),
                sender: "@bob:localhost".into(),
                at_ms: 6,
            },
            edit("$9", "@bob:localhost", "target not in the window"),
            message("$3", "three"),
            edit("$1", "@bob:localhost", "one, edited"),
            message("$2", "two"),
            TimelineItem::Other,
            message("$1", "one"),
        ];
        let messages = fold_history(page);
        let shown: Vec<(&str, &str, MessageKind)> = messages
            .iter()
            .map(|m| (m.provider_message_id.as_str(), m.text.as_str(), m.kind))
            .collect();
        assert_eq!(
            shown,
            [
                ("$1", "one, edited twice", MessageKind::Text),
                ("$2", "", MessageKind::Deleted),
                ("$3", "three", MessageKind::Text),
            ]
        );
        assert!(messages[0].edited && messages[0].edited_at_ms == Some(5));
        assert!(!messages[2].edited && messages[2].edited_at_ms.is_none());
    }
}

//! The live loop: one `/sync` long-poll at a time, its events turned into [`LiveEvent`]s, a
//! `limited` timeline filled from `/messages`, and failures retried with capped exponential
//! backoff and jitter.
use super::*;
use crate::model::{Reaction, ReactionChange, now_ms};

impl Matrix {
    /// Turns a room's `/sync` section into live events. `names` caches room names for this
    /// process: a room seen for the first time, or renamed, is looked up (a name made of the
    /// members is not followed as members come and go). `lenient`: pass over a room whose name
    /// or gap the homeserver cannot serve, rather than failing the whole batch.
    async fn room_events(
        &self,
        room_id: &OwnedRoomId,
        room: &sync_events::v3::JoinedRoom,
        names: &mut HashMap<String, String>,
        sink: &dyn LiveSink,
        out: &mut Vec<LiveEvent>,
        lenient: bool,
    ) -> Result<(), MatrixError> {
        let chat_id = room_id.to_string();
        let renamed = room.timeline.events.iter().any(|raw| {
            matches!(
                raw.get_field::<String>("type").ok().flatten().as_deref(),
                Some("m.room.name" | "m.room.canonical_alias")
            )
        });
        // Only an unreachable homeserver fails the batch (it is retried whole), until the
        // retries turn lenient. A refusal concerns this room alone: it keeps its stored name,
        // or its gap stays unfilled (logged; SyncChats backfills it).
        if renamed || !names.contains_key(&chat_id) {
            match self.room_name(room_id).await {
                Ok(name) => {
                    names.insert(chat_id.clone(), name.clone());
                    out.push(LiveEvent::Chat {
                        chat_id: chat_id.clone(),
                        name,
                    });
                }
                Err(error @ MatrixError::Unavailable(_)) if !lenient => return Err(error),
                Err(error) => tracing::warn!(%room_id, %error, "cannot read the room's name"),
            }
        }
        if room.timeline.limited
            && let Some(prev_batch) = &room.timeline.prev_batch
        {
            match self.fill_gap(room_id, prev_batch, sink).await {
                Ok(missed) => out.extend(
                    missed
                        .into_iter()
                        .filter_map(|item| live_event(&chat_id, item)),
                ),
                Err(error @ MatrixError::Unavailable(_)) if !lenient => return Err(error),
                Err(error) => {
                    tracing::warn!(%room_id, %error, "cannot read the gap in the timeline; messages in it are missed until SyncChats")
                }
            }
        }
        for raw in &room.timeline.events {
            if change_echo(raw) {
                continue;
            }
            let mut item = read_timeline_event(raw, &self.me);
            self.fetch_media(&chat_id, raw, &mut item).await;
            out.extend(live_event(&chat_id, item));
        }
        // Members: the state section (before or after the timeline) and the timeline's
        // member events; storage keeps the latest join and leave whatever the order.
        let no_state = Vec::new();
        let state = match &room.state {
            sync_events::v3::State::Before(state) | sync_events::v3::State::After(state) => {
                &state.events
            }
            _ => &no_state,
        };
        let members: Vec<Value> = state
            .iter()
            .map(|raw| raw.json())
            .chain(room.timeline.events.iter().map(|raw| raw.json()))
            .filter(|json| json.get().contains("m.room.member"))
            .filter_map(|json| serde_json::from_str::<Value>(json.get()).ok())
            .collect();
        let people = member_people(&members);
        if !people.is_empty() {
            out.push(LiveEvent::People {
                chat_id: chat_id.clone(),
                people,
            });
        }
        for raw in &room.ephemeral.events {
            if raw.get_field::<String>("type").ok().flatten().as_deref() != Some("m.receipt") {
                continue;
            }
            let Ok(Some(content)) = raw.get_field::<BTreeMap<String, Value>>("content") else {
                continue;
            };
            for (event_id, receipts) in content {
                // Public read receipts (`m.read`) of other members, with their times.
                let Some(users) = receipts["m.read"].as_object() else {
                    continue;
                };
                for (user, receipt) in users {
                    if user == self.me.as_str() {
                        continue;
                    }
                    out.push(LiveEvent::ReadUpTo {
                        chat_id: chat_id.clone(),
                        provider_message_id: event_id.clone(),
                        reader: user.clone(),
                        read_at_ms: receipt["ts"].as_i64().unwrap_or_else(now_ms),
                    });
                }
            }
        }
        Ok(())
    }

    /// The events a `limited` timeline skipped: read back from `prev_batch` until a stored
    /// message (or the room's start, or [`MAX_GAP_EVENTS`]), oldest first.
    async fn fill_gap(
        &self,
        room_id: &OwnedRoomId,
        prev_batch: &str,
        sink: &dyn LiveSink,
    ) -> Result<Vec<TimelineItem>, MatrixError> {
        let chat_id = room_id.to_string();
        let mut missed = Vec::new();
        let mut from = prev_batch.to_owned();
        'pages: while missed.len() < MAX_GAP_EVENTS {
            let page = self.page_back(room_id, Some(&from), PAGE_SIZE).await?;
            for raw in &page.chunk {
                if change_echo(raw) {
                    continue;
                }
                let item = read_timeline_event(raw, &self.me);
                if let TimelineItem::Message(message) = &item {
                    let stored = sink
                        .has_message(&chat_id, &message.provider_message_id)
                        .await
                        .map_err(|error| MatrixError::Unavailable(format!("storage: {error}")))?;
                    if stored {
                        break 'pages;
                    }
                }
                let mut item = item;
                self.fetch_media(&chat_id, raw, &mut item).await;
                missed.push(item);
            }
            match page.end {
                Some(end) if !page.chunk.is_empty() => from = end,
                _ => break,
            }
        }
        tracing::info!(%room_id, events = missed.len(), "filled a gap in the live timeline");
        missed.reverse();
        Ok(missed)
    }

    /// One `/sync` call and what it means. The first connection (no `since`) asks for no
    /// timeline and delivers nothing.
    async fn sync_once(
        &self,
        since: Option<&str>,
        names: &mut HashMap<String, String>,
        sink: &dyn LiveSink,
        lenient: bool,
    ) -> Result<(Vec<LiveEvent>, String), MatrixError> {
        let mut filter = FilterDefinition::default();
        let limit = if since.is_some() {
            SYNC_TIMELINE_LIMIT
        } else {
            1
        };
        filter.room.timeline.limit = Some(UInt::from(limit));
        filter.room.account_data = RoomEventFilter::ignore_all();
        filter.presence = ruma::api::client::filter::Filter::ignore_all();
        filter.account_data = ruma::api::client::filter::Filter::ignore_all();
        let mut request = sync_events::v3::Request::new();
        request.filter = Some(filter.into());
        request.since = since.map(str::to_owned);
        request.timeout = Some(if since.is_some() {
            LONG_POLL
        } else {
            Duration::ZERO
        });
        let response = self
            .client
            .send(request, Some(LONG_POLL + Duration::from_secs(15)))
            .await?;
        let mut out = Vec::new();
        if since.is_some() {
            for (room_id, room) in &response.rooms.join {
                if self.wanted(room_id.as_str()) {
                    self.room_events(room_id, room, names, sink, &mut out, lenient)
                        .await?;
                }
            }
        }
        Ok((out, response.next_batch))
    }

    /// [`Source::run_live`]: runs `/sync` until the sink's stop token is cancelled.
    pub(super) async fn live_loop(&self, sink: Arc<dyn LiveSink>) {
        let stop = sink.stopped();
        let mut since = loop {
            match sink.cursor().await {
                Ok(cursor) => break cursor,
                Err(error) => {
                    tracing::error!(%error, "cannot read the stored sync token; retrying");
                    if sleep_or_stop(&stop, Duration::from_secs(1)).await {
                        return;
                    }
                }
            }
        };
        sink.set_state(SourceState::Connecting);
        let mut names = HashMap::new();
        let mut failures = 0u32;
        let mut waits = backoff();
        loop {
            let result = tokio::select! {
                result = self.sync_once(since.as_deref(), &mut names, sink.as_ref(), failures >= LENIENT_AFTER) => result,
                _ = stop.cancelled() => return,
            };
            let error = match result {
                Ok((events, next_batch)) => match sink.apply(events, &next_batch).await {
                    Ok(()) => {
                        if failures > 0 || since.is_none() {
                            tracing::info!("matrix /sync connected");
                        }
                        failures = 0;
                        waits = backoff();
                        sink.set_state(SourceState::Up);
                        since = Some(next_batch);
                        continue;
                    }
                    Err(error) => format!("cannot store live events: {}", error.public_text()),
                },
                Err(error) => error.to_string(),
            };
            failures += 1;
            let wait = waits.next().unwrap_or(Duration::MAX);
            tracing::warn!(%error, failures, retry_in_ms = wait.as_millis() as u64, "matrix /sync failed");
            sink.set_state(SourceState::Down(error));
            if sleep_or_stop(&stop, wait).await {
                return;
            }
        }
    }
}

/// Whether a timeline event is the echo of a change chatsync made itself (ReactToMessage,
/// EditMessage, DeleteMessage: its `unsigned.transaction_id` has [`CHANGE_TXN_PREFIX`]). The
/// service stores such a change when the homeserver accepts it, so its echo is passed over:
/// applied again it would be stale whenever the echo comes back after a later change to the
/// same message (the first of two edits would bring the old text back, and log it again as
/// an earlier text; a reaction replaced since would come back until its redaction's echo).
/// A backfill still reads these events, so a fresh session has them.
fn change_echo<T>(raw: &Raw<T>) -> bool {
    raw.get_field::<Value>("unsigned")
        .ok()
        .flatten()
        .and_then(|unsigned| {
            unsigned["transaction_id"]
                .as_str()
                .map(|txn| txn.starts_with(CHANGE_TXN_PREFIX))
        })
        .unwrap_or(false)
}

/// What a timeline item means to storage.
fn live_event(chat_id: &str, item: TimelineItem) -> Option<LiveEvent> {
    let chat_id = chat_id.to_owned();
    Some(match item {
        TimelineItem::Message(message) => LiveEvent::Message { chat_id, message },
        TimelineItem::Edit {
            target,
            sender,
            text,
            at_ms,
        } => LiveEvent::Edited {
            chat_id,
            provider_message_id: target,
            editor: sender,
            text,
            at_ms,
        },
        TimelineItem::Redaction {
            target,
            sender,
            at_ms,
        } => LiveEvent::Redacted {
            chat_id,
            provider_id: target,
            by: sender,
            at_ms,
        },
        TimelineItem::Reaction {
            target,
            event_id,
            sender,
            key,
            at_ms,
        } => LiveEvent::Reacted {
            chat_id,
            provider_message_id: target,
            change: ReactionChange::Add(Reaction {
                emoji: key,
                sender,
                at_ms,
                provider_reaction_id: Some(event_id),
            }),
        },
        TimelineItem::Other => return None,
    })
}

/// Sleeps for `wait`; true when the server began shutting down first.
async fn sleep_or_stop(stop: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = stop.cancelled() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_of_our_own_changes_are_passed_over() {
        let raw = |unsigned: Value| -> Raw<Value> {
            Raw::from_json_string(
                serde_json::json!({"type": "m.reaction", "unsigned": unsigned}).to_string(),
            )
            .unwrap()
        };
        assert!(change_echo(&raw(
            serde_json::json!({"transaction_id": "chatsync-change.react.r1"})
        )));
        assert!(!change_echo(&raw(
            serde_json::json!({"transaction_id": "chatsync.k1"})
        )));
        assert!(!change_echo(&raw(
            serde_json::json!({"transaction_id": "m1700000000.1"})
        )));
        assert!(!change_echo(&raw(serde_json::json!({}))));
    }

    #[test]
    fn backoff_grows_to_a_cap_with_jitter() {
        let waits: Vec<u64> = backoff().take(20).map(|w| w.as_millis() as u64).collect();
        for (attempt, wait) in waits.iter().enumerate() {
            let ceiling = (500u64 << attempt.min(6)).min(30_000);
            assert!(
                *wait >= ceiling / 2 && *wait <= ceiling,
                "attempt {}: {wait} ms",
                attempt + 1
            );
        }
        let tenth: std::collections::HashSet<u64> = (0..20)
            .map(|_| backoff().nth(9).expect("endless").as_millis() as u64)
            .collect();
        assert!(tenth.len() > 1, "jittered");
    }
}

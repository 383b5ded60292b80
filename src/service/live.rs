//! Live sources: the sink a session's live loop ([`Source::run_live`]) delivers to.
//!
//! [`LiveStore`] stores what the source saw, in order, under the session's ingest lock (so a
//! sync run's "check what is stored, store the rest" never interleaves with it), then saves
//! the source's cursor. Subscribers hear of it through the storage head, like any change.
//!
//! Delivery is at least once and storage makes it exactly once: a message whose provider id
//! is stored is skipped, the echo of a message chatsync sent settles that message instead of
//! adding one, an edit that changes nothing logs nothing, and READ never goes back.
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Mutex, watch};

use crate::error::Result;
use crate::model::{MessageStatus, NewMessage};
use crate::sources::{LiveEvent, LiveSink, Source, SourceState};
use crate::storage::{ImportChat, MessageEdit, MessageRef, Store};

/// The sink of one session's live source.
pub struct LiveStore {
    pub session_id: String,
    pub store: Store,
    pub ingest: Arc<Mutex<()>>,
    pub state: watch::Sender<SourceState>,
    pub shutdown: watch::Receiver<bool>,
}

/// Starts the live loop of a live source; it ends when the server shuts down.
pub fn spawn(source: Arc<dyn Source>, sink: LiveStore) {
    let span = tracing::info_span!(
        "live_source",
        session_id = sink.session_id,
        source = source.kind()
    );
    tokio::spawn(tracing::Instrument::instrument(
        async move { source.run_live(Arc::new(sink)).await },
        span,
    ));
}

impl LiveStore {
    /// The echo of a message chatsync sent (`client_message_id` = `key`): a PENDING message
    /// becomes SENT with the event's provider id. Returns false when no message has that key
    /// (then the event is stored as a message of its own).
    async fn settle_echo(&self, key: &str, provider_message_id: &str) -> Result<bool> {
        let Some(sent) = self.store.find_by_client_id(&self.session_id, key).await? else {
            return Ok(false);
        };
        if sent.status == MessageStatus::Pending {
            self.store
                .update_status(
                    &self.session_id,
                    &MessageRef::Id(sent.id),
                    MessageStatus::Sent,
                    Some(provider_message_id),
                )
                .await?;
        }
        Ok(true)
    }

    /// Stores a run of new messages, skipping those already stored, in one transaction.
    async fn store_messages(
        &self,
        run: &mut Vec<(String, NewMessage)>,
        names: &mut HashMap<String, String>,
    ) -> Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        let mut chat_ids: Vec<&str> = run.iter().map(|(chat_id, _)| chat_id.as_str()).collect();
        chat_ids.sort_unstable();
        chat_ids.dedup();
        let stored = self.store.provider_ids(&self.session_id, &chat_ids).await?;
        for chat_id in chat_ids {
            if !names.contains_key(chat_id) {
                let name = match self.store.find_chat(&self.session_id, chat_id).await? {
                    Some(chat) => chat.name,
                    None => chat_id.to_owned(),
                };
                names.insert(chat_id.to_owned(), name);
            }
        }
        // Consecutive messages of one chat go together; the same event twice is stored once.
        let mut groups: Vec<(&str, Vec<NewMessage>)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (chat_id, message) in run.iter() {
            let known = stored
                .get(chat_id)
                .is_some_and(|ids| ids.contains(&message.provider_message_id));
            if known || !seen.insert((chat_id.as_str(), message.provider_message_id.as_str())) {
                continue;
            }
            match groups.last_mut() {
                Some((last, messages)) if *last == chat_id => messages.push(message.clone()),
                _ => groups.push((chat_id, vec![message.clone()])),
            }
        }
        let items: Vec<ImportChat<'_>> = groups
            .iter()
            .map(|(chat_id, messages)| ImportChat {
                chat_id,
                name: &names[*chat_id],
                messages,
            })
            .collect();
        self.store.import(&self.session_id, &items).await?;
        drop(items);
        run.clear();
        Ok(())
    }
}

#[async_trait]
impl LiveSink for LiveStore {
    async fn cursor(&self) -> Result<Option<String>> {
        self.store.source_cursor(&self.session_id).await
    }

    async fn apply(&self, events: Vec<LiveEvent>, cursor: &str) -> Result<()> {
        let _ingest = self.ingest.lock().await;
        let mut names: HashMap<String, String> = HashMap::new();
        let mut run: Vec<(String, NewMessage)> = Vec::new();
        let session_id = self.session_id.as_str();
        for event in events {
            let reference = |chat_id: String, provider_message_id: String| MessageRef::Provider {
                chat_id,
                provider_message_id,
            };
            match event {
                LiveEvent::Message {
                    chat_id,
                    message,
                    echo_of,
                } => {
                    if let Some(key) = echo_of
                        && self.settle_echo(&key, &message.provider_message_id).await?
                    {
                        continue;
                    }
                    run.push((chat_id, message));
                    continue;
                }
                // Anything else applies to what came before it: store that first.
                _ => self.store_messages(&mut run, &mut names).await?,
            }
            match event {
                LiveEvent::Chat { chat_id, name } => {
                    let chat = ImportChat {
                        chat_id: &chat_id,
                        name: &name,
                        messages: &[],
                    };
                    self.store.import(session_id, &[chat]).await?;
                    names.insert(chat_id, name);
                }
                LiveEvent::Edited {
                    chat_id,
                    provider_message_id,
                    text,
                } => {
                    let target = reference(chat_id, provider_message_id);
                    self.store
                        .edit_message(session_id, &target, MessageEdit::Text(&text))
                        .await?;
                }
                LiveEvent::Deleted {
                    chat_id,
                    provider_message_id,
                } => {
                    let target = reference(chat_id, provider_message_id);
                    self.store
                        .edit_message(session_id, &target, MessageEdit::Deleted)
                        .await?;
                }
                LiveEvent::ReadUpTo {
                    chat_id,
                    provider_message_id,
                    read_at_ms,
                } => {
                    let target = reference(chat_id, provider_message_id);
                    self.store
                        .mark_read_up_to(session_id, &target, read_at_ms)
                        .await?;
                }
                LiveEvent::Message { .. } => unreachable!("handled above"),
            }
        }
        self.store_messages(&mut run, &mut names).await?;
        self.store.save_source_cursor(session_id, cursor).await
    }

    async fn has_message(&self, chat_id: &str, provider_message_id: &str) -> Result<bool> {
        self.store
            .has_message(&self.session_id, chat_id, provider_message_id)
            .await
    }

    fn set_state(&self, state: SourceState) {
        self.state.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
    }

    fn stopped(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }
}

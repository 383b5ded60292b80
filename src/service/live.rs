//! Live sources: the sink a session's live loop ([`Source::run_live`]) delivers to.
//!
//! [`LiveStore`] stores what the source saw, in order, under the session's ingest lock (so a
//! sync run's "check what is stored, store the rest" never interleaves with it), then saves
//! the source's cursor. Subscribers hear of it through the storage head, like any change.
//!
//! Delivery is at least once and storage makes it exactly once: a message whose provider id
//! is stored is skipped, the echo of a message chatsync sent settles that message instead of
//! adding one, an edit that changes nothing logs nothing, and READ never goes back.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Mutex, watch};

use crate::error::Result;
use crate::model::NewMessage;
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
    /// Stores a run of new messages in one transaction: those already stored are skipped, and
    /// those that echo a message chatsync sent settle it instead.
    async fn store_messages(
        &self,
        run: &mut Vec<(String, NewMessage)>,
        names: &mut HashMap<String, String>,
    ) -> Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        let echoes: Vec<&NewMessage> = run
            .iter()
            .map(|(_, message)| message)
            .filter(|message| message.client_message_id.is_some())
            .collect();
        let settled = self.store.settle_echoes(&self.session_id, &echoes).await?;
        let mut chat_ids: Vec<&str> = run.iter().map(|(chat_id, _)| chat_id.as_str()).collect();
        chat_ids.sort_unstable();
        chat_ids.dedup();
        let mut stored: HashMap<&str, HashSet<String>> = HashMap::new();
        for &chat_id in &chat_ids {
            let candidates: Vec<&str> = run
                .iter()
                .filter(|(chat, _)| chat == chat_id)
                .map(|(_, message)| message.provider_message_id.as_str())
                .collect();
            let ids = self
                .store
                .stored_provider_ids(&self.session_id, chat_id, &candidates)
                .await?;
            stored.insert(chat_id, ids);
        }
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
        let mut seen = HashSet::new();
        for (chat_id, message) in run.iter() {
            let known = stored
                .get(chat_id.as_str())
                .is_some_and(|ids| ids.contains(&message.provider_message_id));
            let echo = message
                .client_message_id
                .as_ref()
                .is_some_and(|key| settled.contains(key));
            if known
                || echo
                || !seen.insert((chat_id.as_str(), message.provider_message_id.as_str()))
            {
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
                LiveEvent::Message { chat_id, message } => {
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
                    editor,
                    text,
                } => {
                    let target = reference(chat_id, provider_message_id);
                    let edit = MessageEdit::Text {
                        text: &text,
                        editor: &editor,
                    };
                    self.store.edit_message(session_id, &target, edit).await?;
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

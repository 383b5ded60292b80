//! Live sources: the sink a session's live loop ([`Source::run_live`]) delivers to.
//!
//! [`LiveStore`] stores what the source saw, in order, then saves the source's cursor. Each
//! store is one write transaction that checks what is stored under the session's lock, so a
//! sync run on any replica never interleaves with it. Subscribers hear of it through the
//! storage head, like any change. One replica in the cluster runs a session's loop, by lease
//! ([`spawn`]).
//!
//! Delivery is at least once and storage makes it exactly once: a message whose provider id
//! is stored is skipped, the echo of a message chatsync sent settles that message instead of
//! adding one, an edit that changes nothing logs nothing, and READ never goes back.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tracing::Instrument;

use tokio_util::sync::CancellationToken;

use super::lease::LeaseKeeper;
use crate::error::{Error, Result};
use crate::model::{MessageRef, SourceState};
use crate::model::{NO_PEOPLE, NewMessage};
use crate::sources::{LiveEvent, LiveSink, Source};
use crate::storage::{ImportChat, LeaseKind, MessageOp, Store};

/// The sink of one session's live source.
pub struct LiveStore {
    pub session_id: String,
    pub store: Store,
    pub state: watch::Sender<SourceState>,
    /// Cancelled when the loop must stop: the server shuts down, or this replica lost the
    /// session's live lease.
    pub stop: CancellationToken,
}

/// What [`spawn`] needs besides the source.
pub struct LiveLease {
    pub session_id: String,
    pub store: Store,
    pub state: watch::Sender<SourceState>,
    pub shutdown: CancellationToken,
    /// This replica's id, the holder named in the lease.
    pub holder: String,
    /// How long the lease lasts without renewal; renewed every third of that.
    pub lease: Duration,
}

/// Runs the session's live loop on whichever replica holds its live lease: this one tries to
/// take the lease every third of the lease time, runs the loop while it holds it (renewing it),
/// and stops the loop when the lease is lost or the server shuts down (then releasing it).
/// When a holder dies, another replica takes over within the lease time and resumes from the
/// stored cursor; storage skips what is stored, so nothing is stored twice.
pub fn spawn(source: Arc<dyn Source>, lease: LiveLease) {
    let span = tracing::info_span!(
        "live_source",
        session_id = lease.session_id,
        source = source.kind()
    );
    tokio::spawn(tracing::Instrument::instrument(keep(source, lease), span));
}

async fn keep(source: Arc<dyn Source>, lease: LiveLease) {
    let LiveLease {
        session_id,
        store,
        state,
        shutdown,
        holder,
        lease,
    } = lease;
    let lease_ms = lease.as_millis() as i64;
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let fence = match store
            .acquire_lease(&session_id, LeaseKind::Live, &holder, lease_ms)
            .await
        {
            Ok(Some(fence)) => fence,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(%error, "cannot take the live lease");
                continue;
            }
        };
        tracing::info!(epoch = fence.epoch, "this replica runs the live loop");
        let keeper = LeaseKeeper::start(store.clone(), &session_id, fence, lease);
        let lost = keeper.lost();
        let stop = shutdown.child_token();
        let sink = LiveStore {
            session_id: session_id.clone(),
            store: keeper.store(),
            state: state.clone(),
            stop: stop.clone(),
        };
        let running = source.clone();
        let mut task =
            tokio::spawn(async move { running.run_live(Arc::new(sink)).await }.in_current_span());
        let shutting_down = tokio::select! {
            _ = &mut task => false,
            _ = shutdown.cancelled() => true,
            // The keeper said why (another holder, a lapsed lease, a refused write).
            _ = lost.cancelled() => {
                tracing::warn!("stopping the live loop: its lease is lost");
                false
            }
        };
        stop.cancel();
        if !task.is_finished() {
            let _ = task.await;
        }
        keeper.release().await;
        if shutting_down {
            return;
        }
    }
}

impl LiveStore {
    /// Puts the chat's stored name (its id when it is not stored) into `names`, unless there.
    async fn known_name(&self, chat_id: &str, names: &mut HashMap<String, String>) -> Result<()> {
        if !names.contains_key(chat_id) {
            let name = match self.store.find_chat(&self.session_id, chat_id).await? {
                Some(chat) => chat.name,
                None => chat_id.to_owned(),
            };
            names.insert(chat_id.to_owned(), name);
        }
        Ok(())
    }

    /// Stores a run of new messages in one transaction: storage skips those already stored,
    /// and settles the stored messages that those echoing a message chatsync sent stand for.
    async fn store_messages(
        &self,
        run: &mut Vec<(String, NewMessage)>,
        names: &mut HashMap<String, String>,
    ) -> Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        for (chat_id, _) in run.iter() {
            self.known_name(chat_id, names).await?;
        }
        // Consecutive messages of one chat go together.
        let mut groups: Vec<(&str, Vec<NewMessage>)> = Vec::new();
        for (chat_id, message) in run.iter() {
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
                may_be_stored: true,
                people: &NO_PEOPLE,
            })
            .collect();
        self.store.import(&self.session_id, &items).await?;
        drop(items);
        run.clear();
        Ok(())
    }
}

impl LiveStore {
    /// Applies an upstream change to a stored message; one about a message that is not stored
    /// (older than what was synced, or not a message) changes nothing.
    async fn update(&self, target: MessageRef, op: MessageOp) -> Result<()> {
        match self
            .store
            .update_message(&self.session_id, &target, &op, None)
            .await
        {
            Ok(_) | Err(Error::NotFound(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

#[async_trait]
impl LiveSink for LiveStore {
    async fn cursor(&self) -> Result<Option<String>> {
        self.store.source_cursor(&self.session_id).await
    }

    async fn apply(&self, events: Vec<LiveEvent>, cursor: &str) -> Result<()> {
        self.store_events(events).await?;
        self.store
            .save_source_cursor(&self.session_id, cursor)
            .await
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

    fn stopped(&self) -> CancellationToken {
        self.stop.clone()
    }
}

impl LiveStore {
    /// Stores `events` in order (what [`LiveSink::apply`] does before it saves the cursor);
    /// pushed webhooks, which have no cursor, use it directly. On error nothing after the
    /// failing event is applied.
    pub async fn store_events(&self, events: Vec<LiveEvent>) -> Result<()> {
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
                        may_be_stored: true,
                        people: &NO_PEOPLE,
                    };
                    self.store.import(session_id, &[chat]).await?;
                    names.insert(chat_id, name);
                }
                LiveEvent::Edited {
                    chat_id,
                    provider_message_id,
                    editor,
                    text,
                    at_ms,
                } => {
                    let op = MessageOp::Edit {
                        text,
                        editor: Some(editor),
                        at_ms,
                    };
                    self.update(reference(chat_id, provider_message_id), op)
                        .await?;
                }
                LiveEvent::Redacted {
                    chat_id,
                    provider_id,
                    by,
                    at_ms,
                } => {
                    self.store
                        .redact(session_id, &chat_id, &provider_id, &by, at_ms)
                        .await?;
                }
                LiveEvent::Reacted {
                    chat_id,
                    provider_message_id,
                    change,
                } => {
                    self.update(
                        reference(chat_id, provider_message_id),
                        MessageOp::React(change),
                    )
                    .await?;
                }
                LiveEvent::ReadUpTo {
                    chat_id,
                    provider_message_id,
                    reader,
                    read_at_ms,
                } => {
                    let target = reference(chat_id, provider_message_id);
                    self.store
                        .read_up_to(session_id, &target, &reader, read_at_ms)
                        .await?;
                }
                LiveEvent::Receipt {
                    chat_id,
                    provider_message_id,
                    recipient,
                    kind,
                    at_ms,
                } => {
                    let op = MessageOp::Receipt {
                        recipient,
                        kind,
                        at_ms,
                    };
                    self.update(reference(chat_id, provider_message_id), op)
                        .await?;
                }
                LiveEvent::People { chat_id, people } => {
                    self.known_name(&chat_id, &mut names).await?;
                    let chat = ImportChat {
                        chat_id: &chat_id,
                        name: &names[&chat_id],
                        messages: &[],
                        may_be_stored: true,
                        people: &people,
                    };
                    self.store.import(session_id, &[chat]).await?;
                }
                LiveEvent::Message { .. } => unreachable!("handled above"),
            }
        }
        self.store_messages(&mut run, &mut names).await
    }
}

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
use crate::model::{NO_PEOPLE, NewMessage, People};
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

    /// Plans a run of new messages as one import step (storage skips those already stored,
    /// and settles the stored messages that those echoing a message chatsync sent stand for).
    async fn plan_messages(
        &self,
        run: &mut Vec<(String, NewMessage)>,
        names: &mut HashMap<String, String>,
        steps: &mut Vec<Vec<Planned>>,
    ) -> Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        for (chat_id, _) in run.iter() {
            self.known_name(chat_id, names).await?;
        }
        // Consecutive messages of one chat go together.
        let mut step: Vec<Planned> = Vec::new();
        for (chat_id, message) in run.drain(..) {
            match step.last_mut() {
                Some(last) if last.chat_id == chat_id => last.messages.push(message),
                _ => step.push(Planned {
                    name: names[&chat_id].clone(),
                    chat_id,
                    messages: vec![message],
                    people: None,
                }),
            }
        }
        steps.push(step);
        Ok(())
    }

    /// Stores the planned import steps in one write transaction ([`Store::import_steps`]),
    /// in order.
    async fn flush(&self, steps: &mut Vec<Vec<Planned>>) -> Result<()> {
        if steps.is_empty() {
            return Ok(());
        }
        let imports: Vec<Vec<ImportChat<'_>>> = steps
            .iter()
            .map(|step| step.iter().map(Planned::as_import).collect())
            .collect();
        self.store.import_steps(&self.session_id, &imports).await?;
        drop(imports);
        steps.clear();
        Ok(())
    }
}

/// One chat of a planned import step (owned: [`ImportChat`] borrows).
struct Planned {
    chat_id: String,
    name: String,
    messages: Vec<NewMessage>,
    people: Option<People>,
}

impl Planned {
    fn as_import(&self) -> ImportChat<'_> {
        ImportChat {
            chat_id: &self.chat_id,
            name: &self.name,
            messages: &self.messages,
            may_be_stored: true,
            people: self.people.as_ref().unwrap_or(&NO_PEOPLE),
        }
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
    ///
    /// A run of chats, contacts and messages is stored in one write transaction
    /// ([`Store::import_steps`]), each event still taking its seqs in order; an edit, a
    /// redaction, a reaction or a receipt is its own write, after what came before it. So a
    /// webhook body (its chat, contact and message) costs one transaction, not three, and
    /// on error none of such a run is stored.
    pub async fn store_events(&self, events: Vec<LiveEvent>) -> Result<()> {
        let mut names: HashMap<String, String> = HashMap::new();
        let mut run: Vec<(String, NewMessage)> = Vec::new();
        let mut steps: Vec<Vec<Planned>> = Vec::new();
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
                // Anything else applies to what came before it: plan that first.
                _ => self.plan_messages(&mut run, &mut names, &mut steps).await?,
            }
            match event {
                // The name this batch already gives the chat (or storage has): nothing to do.
                LiveEvent::Chat { chat_id, name } if names.get(&chat_id) == Some(&name) => {
                    continue;
                }
                LiveEvent::Chat { chat_id, name } => {
                    steps.push(vec![Planned {
                        chat_id: chat_id.clone(),
                        name: name.clone(),
                        messages: Vec::new(),
                        people: None,
                    }]);
                    names.insert(chat_id, name);
                    continue;
                }
                LiveEvent::People { chat_id, people } => {
                    self.known_name(&chat_id, &mut names).await?;
                    steps.push(vec![Planned {
                        name: names[&chat_id].clone(),
                        chat_id,
                        messages: Vec::new(),
                        people: Some(people),
                    }]);
                    continue;
                }
                // The rest changes stored messages: store what came before first.
                _ => self.flush(&mut steps).await?,
            }
            match event {
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
                LiveEvent::Chat { .. } | LiveEvent::People { .. } | LiveEvent::Message { .. } => {
                    unreachable!("handled above")
                }
            }
        }
        self.plan_messages(&mut run, &mut names, &mut steps).await?;
        self.flush(&mut steps).await
    }
}

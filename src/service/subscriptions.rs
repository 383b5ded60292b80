//! Subscriptions: replay from a seq cursor, then a `ready` marker, then live changes.
//!
//! Storage is the source of truth. Every subscription has its own cursor and reads what it
//! has not seen from storage; memory only makes the common case cheap:
//! - **Replay and catch-up** read `seq > cursor` from storage in pages, with the
//!   subscription's chat filter applied in the query.
//! - **Live delivery** comes from the session's *feed*: one task per session that reads each
//!   new change from storage once, when the committed head seq moves, and broadcasts it to every
//!   live subscription. Seqs are contiguous (every seq is exactly one change), so a
//!   subscription that sees a seq beyond `cursor + 1`, or that lagged behind the broadcast
//!   buffer, reads the missing range from storage before it goes on.
//!
//! So there is no gap and no duplicate at the switch from replay to live (the subscription
//! joins the feed before it replays, and skips what its cursor already covers), a slow
//! subscriber only ever waits for itself (it lags out of the broadcast and catches up from
//! storage), and a hundred subscribers cost one storage read per change, not a hundred.
//!
//! For the metrics, the hub keeps each open subscription's cursor: the last seq its producer
//! has handed to the stream's buffer (or skipped, when the chat filter leaves it out). A
//! session's *feed lag* is its committed head seq minus the smallest such cursor
//! ([`Hub::observe`]).
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::model::Change;
use crate::storage::Store;

/// Changes read from storage per query.
const PAGE: u64 = 500;
/// Events buffered per subscriber before its producer waits.
const BUFFER: usize = 256;
/// Changes a feed keeps for live subscriptions that are momentarily behind.
const FEED_BUFFER: usize = 1_024;

/// One event of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Shared with the session's feed: one copy of a change serves every live subscriber.
    Change(Arc<Change>),
    /// The replay is over; `head_seq` is the head it reached. Sent on every subscription,
    /// also without `after_seq`, so a client knows when live delivery has begun.
    Ready { head_seq: u64 },
    /// Keep-alive; `seq` is the cursor this stream has reached.
    Heartbeat { seq: u64 },
}

/// What a subscription asks for.
#[derive(Debug, Clone)]
pub struct SubscribeRequest {
    pub session_id: String,
    /// Empty: all chats.
    pub chat_ids: Vec<String>,
    /// Replay changes after this seq first; `None`: live changes only.
    pub after_seq: Option<u64>,
}

/// The subscription hub: the sessions' feeds, started on first use.
pub struct Hub {
    store: Store,
    feeds: Mutex<HashMap<String, broadcast::Sender<Arc<Change>>>>,
    heartbeat: Duration,
    shutdown: CancellationToken,
    cursors: Arc<Mutex<Cursors>>,
}

/// What the hub reports to the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubObservation {
    /// Subscriptions open on this replica (replaying or live).
    pub active: u64,
    /// Per session with at least one open subscription: the committed head seq minus the
    /// smallest cursor among them, in seqs. Sorted by session id.
    pub feed_lag: Vec<(String, u64)>,
}

impl Hub {
    pub fn new(store: Store, heartbeat: Duration, shutdown: CancellationToken) -> Self {
        Self {
            store,
            feeds: Mutex::default(),
            heartbeat,
            shutdown,
            cursors: Arc::default(),
        }
    }

    /// The open subscriptions and each session's feed lag, right now.
    pub fn observe(&self) -> HubObservation {
        let cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        let mut observation = HubObservation::default();
        for (session_id, session) in &cursors.sessions {
            observation.active += session.open.len() as u64;
            let head = *session.heads.borrow();
            let slowest = session
                .open
                .values()
                .map(|cursor| cursor.load(Ordering::Relaxed))
                .min()
                .unwrap_or(head);
            observation
                .feed_lag
                .push((session_id.clone(), head.saturating_sub(slowest)));
        }
        observation.feed_lag.sort();
        observation
    }

    /// Registers a subscription's cursor; it is removed when the returned entry drops.
    fn track(&self, session_id: &str, heads: &watch::Receiver<u64>, cursor: u64) -> Tracked {
        let mut cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        cursors.next_id += 1;
        let id = cursors.next_id;
        let position = Arc::new(AtomicU64::new(cursor));
        cursors
            .sessions
            .entry(session_id.to_owned())
            .or_insert_with(|| SessionCursors {
                heads: heads.clone(),
                open: HashMap::new(),
            })
            .open
            .insert(id, position.clone());
        Tracked {
            cursors: self.cursors.clone(),
            session_id: session_id.to_owned(),
            id,
            position,
        }
    }

    /// Opens a subscription. Fails with `NotFound` for an unknown session and
    /// `InvalidArgument` for an `after_seq` ahead of the session's head (a cursor from another
    /// database). The stream ends with `Unavailable` when the server shuts down.
    pub async fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> Result<ReceiverStream<Result<Event>>> {
        let heads = self.store.heads(&request.session_id).await?;
        let head = *heads.borrow();
        if let Some(after_seq) = request.after_seq
            && after_seq > head
        {
            return Err(Error::InvalidArgument(format!(
                "after_seq {after_seq} is ahead of the session's head seq {head}"
            )));
        }
        let feed = self.feed(&request.session_id, heads.clone()).subscribe();
        let (sender, receiver) = mpsc::channel(BUFFER);
        let tracked = self.track(
            &request.session_id,
            &heads,
            request.after_seq.unwrap_or(head),
        );
        let producer = Producer {
            store: self.store.clone(),
            request,
            sender,
            heads,
            feed,
            tracked,
        };
        tokio::spawn(producer.run(self.heartbeat, self.shutdown.clone()));
        Ok(ReceiverStream::new(receiver))
    }

    /// The session's feed, started on first use.
    fn feed(
        &self,
        session_id: &str,
        heads: watch::Receiver<u64>,
    ) -> broadcast::Sender<Arc<Change>> {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(feed) = feeds.get(session_id) {
            return feed.clone();
        }
        let (feed, _) = broadcast::channel(FEED_BUFFER);
        feeds.insert(session_id.to_owned(), feed.clone());
        let task = Feed {
            store: self.store.clone(),
            session_id: session_id.to_owned(),
            feed: feed.clone(),
            heads,
        };
        tokio::spawn(task.run(self.shutdown.clone()));
        feed
    }
}

/// Reads each new change of a session once and broadcasts it.
struct Feed {
    store: Store,
    session_id: String,
    feed: broadcast::Sender<Arc<Change>>,
    heads: watch::Receiver<u64>,
}

impl Feed {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut cursor = *self.heads.borrow_and_update();
        loop {
            tokio::select! {
                changed = self.heads.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = shutdown.cancelled() => return,
            }
            let head = *self.heads.borrow_and_update();
            while cursor < head {
                match self
                    .store
                    .changes(&self.session_id, &[], cursor, head, PAGE)
                    .await
                {
                    Ok((changes, reached)) => {
                        for change in changes {
                            // No live subscriber right now is fine.
                            let _ = self.feed.send(Arc::new(change));
                        }
                        cursor = reached;
                    }
                    Err(error) => {
                        // Subscribers notice the missing seqs and read them themselves.
                        tracing::error!(session_id = self.session_id, %error, "feed cannot read changes");
                        cursor = head;
                    }
                }
            }
        }
    }
}

/// The open subscriptions' cursors, per session.
#[derive(Default)]
struct Cursors {
    next_id: u64,
    sessions: HashMap<String, SessionCursors>,
}

struct SessionCursors {
    heads: watch::Receiver<u64>,
    open: HashMap<u64, Arc<AtomicU64>>,
}

/// A subscription's entry in [`Cursors`], removed when its producer ends.
struct Tracked {
    cursors: Arc<Mutex<Cursors>>,
    session_id: String,
    id: u64,
    position: Arc<AtomicU64>,
}

impl Tracked {
    fn reached(&self, cursor: u64) {
        self.position.store(cursor, Ordering::Relaxed);
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(session) = cursors.sessions.get_mut(&self.session_id) {
            session.open.remove(&self.id);
            if session.open.is_empty() {
                cursors.sessions.remove(&self.session_id);
            }
        }
    }
}

struct Producer {
    store: Store,
    request: SubscribeRequest,
    sender: mpsc::Sender<Result<Event>>,
    heads: watch::Receiver<u64>,
    feed: broadcast::Receiver<Arc<Change>>,
    tracked: Tracked,
}

/// The client went away; the producer stops.
struct Gone;

impl Producer {
    async fn run(mut self, heartbeat: Duration, shutdown: CancellationToken) {
        let head = *self.heads.borrow_and_update();
        let mut cursor = self.request.after_seq.unwrap_or(head);
        let outcome = async {
            cursor = self.catch_up(cursor, head).await?;
            self.send(Ok(Event::Ready { head_seq: cursor })).await?;
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    next = self.feed.recv() => match next {
                        Ok(change) => {
                            let seq = change.seq();
                            if seq <= cursor {
                                continue;
                            }
                            if seq > cursor + 1 {
                                cursor = self.catch_up(cursor, seq - 1).await?;
                            }
                            if self.wants(&change) {
                                self.send(Ok(Event::Change(change))).await?;
                            }
                            cursor = seq;
                            self.tracked.reached(cursor);
                        }
                        Err(RecvError::Lagged(_)) => {
                            let head = *self.heads.borrow();
                            cursor = self.catch_up(cursor, head).await?;
                        }
                        Err(RecvError::Closed) => return Ok(()),
                    },
                    _ = ticks.tick() => {
                        self.send(Ok(Event::Heartbeat { seq: cursor })).await?;
                    }
                    _ = shutdown.cancelled() => {
                        let _ = self.sender.try_send(Err(Error::Unavailable("the server is shutting down".into())));
                        return Ok(());
                    }
                    _ = self.sender.closed() => return Err(Gone),
                }
            }
        }
        .await;
        if outcome.is_err() {
            tracing::debug!(
                session_id = self.request.session_id,
                cursor,
                "subscriber went away"
            );
        }
    }

    fn wants(&self, change: &Change) -> bool {
        change.passes(&self.request.chat_ids)
    }

    /// Sends every change in `(cursor, up_to]` from storage; returns the new cursor.
    ///
    /// Boxed: the storage read's future is several KiB, and inline it would be part of every
    /// producer task for the task's whole life, catching up or not.
    fn catch_up(
        &mut self,
        mut cursor: u64,
        up_to: u64,
    ) -> Pin<Box<dyn Future<Output = Result<u64, Gone>> + Send + '_>> {
        Box::pin(async move {
            while cursor < up_to {
                match self
                    .store
                    .changes(
                        &self.request.session_id,
                        &self.request.chat_ids,
                        cursor,
                        up_to,
                        PAGE,
                    )
                    .await
                {
                    Ok((changes, reached)) => {
                        for change in changes {
                            self.send(Ok(Event::Change(Arc::new(change)))).await?;
                        }
                        cursor = reached;
                        self.tracked.reached(cursor);
                    }
                    Err(error) => {
                        tracing::error!(%error, "subscription cannot read changes");
                        self.send(Err(error)).await?;
                        return Err(Gone);
                    }
                }
            }
            Ok(cursor)
        })
    }

    async fn send(&self, event: Result<Event>) -> Result<(), Gone> {
        self.sender.send(event).await.map_err(|_| Gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every open subscription holds its channel's first block: 32 slots of this item. A
    /// change is shared behind an `Arc`, so the slot stays small (BENCHMARKS.md, "10,000
    /// subscribers").
    #[test]
    fn a_channel_slot_stays_small() {
        let slot = std::mem::size_of::<Result<Event>>();
        assert!(slot <= 64, "a subscription channel slot is {slot} bytes");
    }
}

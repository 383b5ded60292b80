//! Webhooks: every change of a session POSTed to the endpoints that ask, in seq order, signed
//! per Standard Webhooks, at least once, from a durable cursor.
//!
//! An endpoint ([`WebhookConfig`]) is a subscriber with a cursor in storage
//! (`webhook_cursors`, one per (endpoint, session)). One deliverer per pair, on whichever
//! replica holds the pair's lease (kind `webhook:<id>`, kept by a
//! [`crate::service::lease::LeaseKeeper`]), reads the change feed in pages from the cursor,
//! POSTs each change the endpoint takes, one at a time, and after each 2xx advances the cursor
//! through the keeper's fenced store ([`delivery`]). A crash or a takeover resumes from the
//! stored cursor: only the change in flight can arrive twice. Failures are retried forever
//! with backoff; nothing is skipped unless an operator moves the cursor
//! ([`Webhooks::replay`]).
//!
//! Layout: [`crate::config::webhooks`] (`[[webhooks]]`), [`sign`] (signatures), [`client`] (the HTTP client
//! and its destination guard), [`delivery`] (the deliverer and its lease).
pub mod client;
pub mod delivery;
pub mod sign;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use crate::config::webhooks::{EventType, WebhookConfig};
pub use delivery::Stats;

use crate::error::{Error, Result};
use crate::storage::Store;

/// What state an (endpoint, session) pair is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookState {
    /// Every change up to the head is acknowledged.
    UpToDate,
    /// Changes are waiting or on their way, and the last attempt succeeded (or none failed).
    Delivering,
    /// The last attempt failed with a timeout, a connection error, 429 or 5xx: retried with
    /// backoff.
    Retrying,
    /// The last attempt got another 4xx (or a 3xx, or the destination was refused): retried
    /// at the capped pace until the endpoint answers 2xx or an operator moves the cursor.
    Failing,
}

/// An (endpoint, session) pair's delivery, as GetWebhookStatus reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookStatus {
    pub webhook_id: String,
    pub session_id: String,
    /// Every change up to this seq was acknowledged or filtered out.
    pub cursor: u64,
    /// The session's committed head seq.
    pub head_seq: u64,
    /// Unix milliseconds of the last attempt, if any.
    pub last_attempt_at_ms: Option<i64>,
    /// The last attempt's HTTP status; 0 when it got none.
    pub last_status: u16,
    /// Why the last attempt failed; empty after a success.
    pub last_error: String,
    /// Unix milliseconds of the first failure since the last success.
    pub failing_since_ms: Option<i64>,
    /// Failed attempts since the last success.
    pub failures: u64,
    pub state: WebhookState,
}

impl WebhookStatus {
    /// The changes not yet acknowledged, in seqs (filtered ones included).
    pub fn lag(&self) -> u64 {
        self.head_seq.saturating_sub(self.cursor)
    }
}

/// The configured endpoints of this replica and their deliverers. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// (endpoint id, its sessions).
    pairs: Vec<(String, Vec<String>)>,
    /// Wakes a pair's deliverer on this replica (after a replay).
    wakes: HashMap<(String, String), Arc<Notify>>,
    stats: Arc<Stats>,
}

/// What [`Webhooks::start`] needs besides the endpoints.
pub struct Cluster {
    /// This replica's id, the holder named in leases.
    pub holder: String,
    /// How long a lease lasts without renewal.
    pub lease: Duration,
    pub shutdown: CancellationToken,
}

impl Webhooks {
    /// Builds each endpoint's client and signer, makes sure every (endpoint, session) pair
    /// has its cursor (a new pair starts at the session's head), and spawns one deliverer
    /// per pair, which delivers while this replica holds the pair's lease. `sessions` are
    /// the configured session ids.
    pub async fn start(
        configs: &[WebhookConfig],
        sessions: &[String],
        store: Store,
        cluster: Cluster,
    ) -> anyhow::Result<Self> {
        let stats = Arc::new(Stats::default());
        let mut pairs = Vec::new();
        let mut wakes = HashMap::new();
        for config in configs {
            let endpoint = Arc::new(delivery::Endpoint::new(config)?);
            let targets: Vec<String> = if config.sessions.is_empty() {
                sessions.to_vec()
            } else {
                config.sessions.clone()
            };
            for session_id in &targets {
                store.ensure_webhook_cursor(&config.id, session_id).await?;
                let wake = Arc::new(Notify::new());
                wakes.insert((config.id.clone(), session_id.clone()), wake.clone());
                delivery::spawn(delivery::Pair {
                    endpoint: endpoint.clone(),
                    session_id: session_id.clone(),
                    store: store.clone(),
                    holder: cluster.holder.clone(),
                    lease: cluster.lease,
                    shutdown: cluster.shutdown.clone(),
                    wake,
                    stats: stats.clone(),
                });
            }
            pairs.push((config.id.clone(), targets));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                pairs,
                wakes,
                stats,
            }),
        })
    }

    /// The delivery counters of this replica.
    pub fn stats(&self) -> Arc<Stats> {
        self.inner.stats.clone()
    }

    /// Whether `webhook_id` is configured.
    pub fn has(&self, webhook_id: &str) -> bool {
        self.inner.pairs.iter().any(|(id, _)| id == webhook_id)
    }

    /// The status of every (endpoint, session) pair, optionally of one endpoint and one
    /// session, read from storage (so any replica answers for the whole cluster).
    /// `allowed` says which sessions the caller may see.
    pub async fn status(
        &self,
        webhook_id: Option<&str>,
        session_id: Option<&str>,
        allowed: impl Fn(&str) -> bool,
    ) -> Result<Vec<WebhookStatus>> {
        if let Some(id) = webhook_id
            && !self.has(id)
        {
            return Err(Error::NotFound(format!("webhook {id:?}")));
        }
        let mut heads = HashMap::new();
        let mut out = Vec::new();
        for (id, sessions) in &self.inner.pairs {
            if webhook_id.is_some_and(|wanted| wanted != id) {
                continue;
            }
            for session in sessions {
                if session_id.is_some_and(|wanted| wanted != session) || !allowed(session) {
                    continue;
                }
                let Some(cursor) = self.inner.store.webhook_cursor(id, session).await? else {
                    continue;
                };
                let head = match heads.get(session) {
                    Some(head) => *head,
                    None => {
                        let head = self.inner.store.session(session).await?.head_seq;
                        heads.insert(session.clone(), head);
                        head
                    }
                };
                out.push(status_of(cursor, head));
            }
        }
        Ok(out)
    }

    /// Moves the (endpoint, session) cursor to `after_seq` (ReplayWebhook): delivery goes on
    /// after it, replaying earlier changes or skipping ahead. The deliverer drops the change
    /// in flight (on this replica at once; on another replica at its next attempt or
    /// acknowledgement). Returns the cursor before the move.
    pub async fn replay(&self, webhook_id: &str, session_id: &str, after_seq: u64) -> Result<u64> {
        let Some(wake) = self
            .inner
            .wakes
            .get(&(webhook_id.to_owned(), session_id.to_owned()))
        else {
            return Err(Error::NotFound(format!(
                "webhook {webhook_id:?} delivers nothing for session {session_id:?}"
            )));
        };
        let before = self
            .inner
            .store
            .move_webhook_cursor(webhook_id, session_id, after_seq)
            .await?;
        tracing::info!(
            webhook_id,
            session_id,
            before,
            after_seq,
            "webhook cursor moved"
        );
        wake.notify_one();
        Ok(before)
    }
}

fn status_of(cursor: crate::storage::webhooks::WebhookCursor, head: u64) -> WebhookStatus {
    let status = cursor.last_status as u16;
    let state = if cursor.failing_since.is_some() {
        if delivery::retryable_status(status)
            || status == 0 && !cursor.last_error.starts_with("refused")
        {
            WebhookState::Retrying
        } else {
            WebhookState::Failing
        }
    } else if cursor.seq as u64 >= head {
        WebhookState::UpToDate
    } else {
        WebhookState::Delivering
    };
    WebhookStatus {
        webhook_id: cursor.webhook_id,
        session_id: cursor.session_id,
        cursor: cursor.seq as u64,
        head_seq: head,
        last_attempt_at_ms: cursor.last_attempt_at,
        last_status: status,
        last_error: cursor.last_error,
        failing_since_ms: cursor.failing_since,
        failures: cursor.failures as u64,
        state,
    }
}

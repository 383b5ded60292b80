//! The deliverer of one (endpoint, session) pair.
//!
//! [`spawn`] tries every third of the lease time to take the pair's lease (kind
//! `webhook:<id>`); while this replica holds it, [`deliver`] runs under a
//! [`LeaseKeeper`]: read the cursor, read the change feed in pages of [`PAGE`] from it up to
//! the head, POST each change the endpoint takes, one at a time, in seq order, and after each
//! 2xx advance the cursor through the keeper's fenced store (a replica that lost the lease
//! cannot move it: its write is refused and its work stops), in a transaction shared with the
//! other pairs' acknowledgements of that moment ([`Store::acknowledge_webhook`]); the next
//! change is posted only once the cursor is stored, so a crash repeats at most the change in
//! flight. Changes the endpoint does not
//! take move the cursor once per page. When caught up it waits on the session's head watch
//! (woken across replicas on PostgreSQL).
//!
//! An attempt that fails is recorded on the cursor row (time, status, error, failing since)
//! and retried: a timeout, connection error, 408, 429 or 5xx after a full-jitter exponential
//! backoff (`retry_initial_ms × 2^n`, capped at `retry_max_ms`), any other answer (3xx, 4xx,
//! a refused destination) at the capped pace; `Retry-After` (seconds or an HTTP date), when
//! given, sets the delay instead (at most the cap). A change is never skipped: only an
//! operator's move of the cursor (generation + 1) makes the deliverer drop it.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::WebhookConfig;
use super::sign::Signer;
use crate::config::webhooks::EventType;
use crate::error::{Error, Result};
use crate::model::{Change, ProtoJson, now_ms};
use crate::service::lease::LeaseKeeper;
use crate::storage::webhooks::Ack;
use crate::storage::{LeaseKind, Store};

/// Changes read from the feed at once.
pub const PAGE: u64 = 500;

/// Delivery counters of this replica (exported by [`crate::metrics`]).
pub struct Stats {
    /// Attempts answered 2xx.
    pub delivered: AtomicU64,
    /// Attempts that failed and are retried with backoff (timeout, connection error, 408,
    /// 429, 5xx).
    pub retried: AtomicU64,
    /// Attempts that failed otherwise (3xx, other 4xx, refused destination).
    pub failed: AtomicU64,
    /// Seconds per attempt, from the request to the end of the answer.
    pub latency: Histogram,
    /// Per (endpoint, session) this replica delivers: head seq minus cursor.
    pub lag: std::sync::Mutex<std::collections::BTreeMap<(String, String), u64>>,
}

impl Stats {
    fn set_lag(&self, webhook_id: &str, session_id: &str, lag: Option<u64>) {
        let mut lags = self.lag.lock().unwrap_or_else(|poison| poison.into_inner());
        let key = (webhook_id.to_owned(), session_id.to_owned());
        match lag {
            Some(lag) => {
                lags.insert(key, lag);
            }
            None => {
                lags.remove(&key);
            }
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            delivered: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            latency: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0005, 2.0, 16,
            )),
            lag: Default::default(),
        }
    }
}

/// One endpoint, ready to deliver.
pub struct Endpoint {
    pub id: String,
    /// The lease kind of its deliverers, `webhook:<id>` (leaked once per endpoint and
    /// process: leases name kinds by `&'static str`).
    kind: &'static str,
    url: reqwest::Url,
    signer: Signer,
    events: Vec<EventType>,
    client: reqwest::Client,
    initial: Duration,
    max: Duration,
    /// Set when the URL is an IP literal (or `localhost`) that the guard refuses.
    refused: Option<String>,
}

impl Endpoint {
    /// Builds the endpoint's signer and client from its configuration (validated).
    pub fn new(config: &WebhookConfig) -> anyhow::Result<Self> {
        let secret = config.secret()?;
        Ok(Self {
            id: config.id.clone(),
            kind: Box::leak(format!("webhook:{}", config.id).into_boxed_str()),
            url: reqwest::Url::parse(&config.url)?,
            signer: Signer::new(&secret)?,
            events: config.event_types(),
            client: super::client::build(config)?,
            initial: Duration::from_millis(config.retry_initial_ms),
            max: Duration::from_millis(config.retry_max_ms),
            refused: super::client::literal_refusal(config),
        })
    }

    fn takes(&self, change: &Change) -> bool {
        self.events.contains(&EventType::of(change))
    }
}

/// One (endpoint, session) pair's deliverer, as [`spawn`] takes it.
pub struct Pair {
    pub endpoint: Arc<Endpoint>,
    pub session_id: String,
    pub store: Store,
    pub holder: String,
    pub lease: Duration,
    pub shutdown: CancellationToken,
    /// Notified when the cursor was moved on this replica.
    pub wake: Arc<Notify>,
    pub stats: Arc<Stats>,
}

/// Spawns the pair's lease loop: deliver while this replica holds the pair's lease.
pub fn spawn(pair: Pair) {
    let span = tracing::info_span!(
        "webhook",
        webhook_id = pair.endpoint.id,
        session_id = pair.session_id
    );
    tokio::spawn(keep(pair).instrument(span));
}

async fn keep(pair: Pair) {
    let lease_ms = pair.lease.as_millis() as i64;
    let kind = LeaseKind::Webhook(pair.endpoint.kind);
    let mut tick = tokio::time::interval(pair.lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = pair.shutdown.cancelled() => return,
        }
        let fence = match pair
            .store
            .acquire_lease(&pair.session_id, kind, &pair.holder, lease_ms)
            .await
        {
            Ok(Some(fence)) => fence,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(%error, "cannot take the webhook lease");
                continue;
            }
        };
        tracing::info!(epoch = fence.epoch, "this replica delivers the webhook");
        let keeper = LeaseKeeper::start(pair.store.clone(), &pair.session_id, fence, pair.lease);
        let lost = keeper.lost();
        let store = keeper.store();
        let shutting_down = tokio::select! {
            result = deliver(&pair, &store) => {
                if let Err(error) = result {
                    tracing::warn!(%error, "webhook delivery stopped; retrying");
                }
                false
            }
            _ = lost.cancelled() => {
                tracing::warn!("stopping webhook delivery: its lease is lost");
                false
            }
            _ = pair.shutdown.cancelled() => true,
        };
        pair.stats
            .set_lag(&pair.endpoint.id, &pair.session_id, None);
        keeper.release().await;
        if shutting_down {
            return;
        }
    }
}

/// The cursor as the deliverer knows it.
struct Cursor {
    seq: u64,
    generation: i64,
}

/// Delivers from the stored cursor until an error (then the lease loop starts over).
async fn deliver(pair: &Pair, store: &Store) -> Result<()> {
    let endpoint = &pair.endpoint;
    let session_id = pair.session_id.as_str();
    let mut heads = store.heads(session_id).await?;
    let stored = store
        .ensure_webhook_cursor(&endpoint.id, session_id)
        .await?;
    let mut cursor = Cursor {
        seq: stored.seq as u64,
        generation: stored.generation,
    };
    'feed: loop {
        let head = *heads.borrow_and_update();
        pair.stats.set_lag(
            &endpoint.id,
            session_id,
            Some(head.saturating_sub(cursor.seq)),
        );
        if cursor.seq >= head {
            tokio::select! {
                changed = heads.changed() => if changed.is_err() {
                    return Err(Error::Unavailable("the head watch closed".into()));
                },
                _ = pair.wake.notified() => cursor = reread(store, pair).await?,
            }
            continue;
        }
        let (changes, reached) = store
            .changes(session_id, &[], cursor.seq, head, PAGE)
            .await?;
        let mut acknowledged = cursor.seq;
        for change in changes {
            if !endpoint.takes(&change) {
                continue;
            }
            let seq = change.seq();
            match attempt_until_delivered(pair, store, &cursor, change).await? {
                Some((at_ms, status)) => {
                    let ack = Ack {
                        webhook_id: endpoint.id.clone(),
                        session_id: session_id.to_owned(),
                        generation: cursor.generation,
                        seq,
                        at_ms,
                        status,
                    };
                    if !store.acknowledge_webhook(ack).await
                        && !store
                            .advance_webhook_cursor(
                                &endpoint.id,
                                session_id,
                                cursor.generation,
                                seq,
                                Some((at_ms, status)),
                            )
                            .await?
                    {
                        cursor = reread(store, pair).await?;
                        continue 'feed;
                    }
                    acknowledged = seq;
                    cursor.seq = seq;
                    pair.stats
                        .set_lag(&endpoint.id, session_id, Some(head.saturating_sub(seq)));
                }
                None => {
                    cursor = reread(store, pair).await?;
                    continue 'feed;
                }
            }
        }
        if reached > acknowledged
            && !store
                .advance_webhook_cursor(&endpoint.id, session_id, cursor.generation, reached, None)
                .await?
        {
            cursor = reread(store, pair).await?;
            continue 'feed;
        }
        cursor.seq = reached;
    }
}

async fn reread(store: &Store, pair: &Pair) -> Result<Cursor> {
    let stored = store
        .ensure_webhook_cursor(&pair.endpoint.id, &pair.session_id)
        .await?;
    Ok(Cursor {
        seq: stored.seq as u64,
        generation: stored.generation,
    })
}

/// Whether an HTTP status is retried with backoff (a transient failure): 408, 429, 5xx.
pub fn retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

/// The request body: the change in the protobuf JSON mapping of SubscribeMessagesResponse,
/// plus `type` and `session_id` (`seq` is the mapping's, a decimal string).
pub fn body(session_id: &str, change: Change) -> Vec<u8> {
    let kind = EventType::of(&change);
    let mut value = change.proto_json();
    if let Some(object) = value.as_object_mut() {
        object.insert("type".into(), kind.as_str().into());
        object.insert("session_id".into(), session_id.into());
    }
    serde_json::to_vec(&value).unwrap_or_default()
}

/// POSTs one change until an attempt is answered 2xx: `Some((at_ms, status))`. `None` when
/// the cursor's generation moved meanwhile (an operator replayed or skipped): drop it.
async fn attempt_until_delivered(
    pair: &Pair,
    store: &Store,
    cursor: &Cursor,
    change: Change,
) -> Result<Option<(i64, u16)>> {
    let endpoint = &pair.endpoint;
    let session_id = pair.session_id.as_str();
    let id = format!("{session_id}:{}", change.seq());
    let body = body(session_id, change);
    let mut attempt: u32 = 0;
    loop {
        let at_ms = now_ms();
        let (status, error, retry_after) = match &endpoint.refused {
            Some(refused) => (0, refused.clone(), None),
            None => post(pair, &id, &body).await,
        };
        if (200..300).contains(&status) {
            pair.stats.delivered.fetch_add(1, Ordering::Relaxed);
            return Ok(Some((at_ms, status)));
        }
        let transient = if status == 0 {
            !error.starts_with("refused")
        } else {
            retryable_status(status)
        };
        let delay = match retry_after {
            Some(after) => after.min(endpoint.max),
            None if transient => full_jitter(endpoint.initial, endpoint.max, attempt),
            None => endpoint.max,
        };
        if transient {
            pair.stats.retried.fetch_add(1, Ordering::Relaxed);
        } else {
            pair.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(
            webhook_id = endpoint.id,
            webhook_msg_id = id,
            status,
            error,
            retry_in_ms = delay.as_millis() as u64,
            "webhook attempt failed"
        );
        if !store
            .record_webhook_failure(
                &endpoint.id,
                session_id,
                cursor.generation,
                at_ms,
                status,
                &error,
            )
            .await?
        {
            return Ok(None);
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = pair.wake.notified() => {}
        }
        let stored = store.webhook_cursor(&endpoint.id, session_id).await?;
        if stored.is_none_or(|stored| stored.generation != cursor.generation) {
            return Ok(None);
        }
        attempt = attempt.saturating_add(1);
    }
}

/// One attempt: (HTTP status or 0, the error or "", Retry-After).
async fn post(pair: &Pair, id: &str, body: &[u8]) -> (u16, String, Option<Duration>) {
    let endpoint = &pair.endpoint;
    let timestamp = chrono::Utc::now().timestamp();
    let signature = endpoint.signer.sign(id, timestamp, body);
    let started = Instant::now();
    let sent = endpoint
        .client
        .post(endpoint.url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_vec())
        .send()
        .await;
    let outcome = match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(parse_retry_after);
            // Read the answer to its end, so the connection goes back to the pool.
            let read = response.bytes().await;
            match read {
                Ok(_) if (200..300).contains(&status) => (status, String::new(), None),
                Ok(_) => (status, format!("HTTP {status}"), retry_after),
                Err(error) if (200..300).contains(&status) => (0, describe(&error), None),
                Err(_) => (status, format!("HTTP {status}"), retry_after),
            }
        }
        Err(error) => (0, describe(&error), None),
    };
    pair.stats.latency.observe(started.elapsed().as_secs_f64());
    outcome
}

/// A reqwest error with its causes (the guard's refusal among them), without the URL's
/// query (which may carry a credential).
fn describe(error: &reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if let Some(refused) = causes.iter().find(|cause| cause.starts_with("refused")) {
        return refused.clone();
    }
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    match causes.last() {
        Some(cause) => format!("{what}: {cause}"),
        None => what.to_owned(),
    }
}

/// `Retry-After`: delay-seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let ms = at.timestamp_millis() - now_ms();
    Some(Duration::from_millis(ms.max(0) as u64))
}

/// Full jitter: a random delay up to `initial × 2^attempt`, at most `max`.
fn full_jitter(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let bound = initial
        .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .min(max);
    Duration::from_millis(fastrand::u64(0..=bound.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn full_jitter_stays_under_the_growing_bound_and_the_cap() {
        let (initial, max) = (Duration::from_secs(1), Duration::from_secs(600));
        for attempt in 0..40 {
            let bound = Duration::from_secs(1u64 << attempt.min(20)).min(max);
            assert!(full_jitter(initial, max, attempt) <= bound);
        }
    }
}

/// Exports [`Stats`]: `chatsync_webhook_deliveries{outcome}`,
/// `chatsync_webhook_delivery_seconds` and `chatsync_webhook_lag_seq{webhook_id, session_id}`.
#[derive(Debug)]
pub struct StatsCollector(pub Arc<Stats>);

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats").finish_non_exhaustive()
    }
}

impl prometheus_client::collector::Collector for StatsCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> std::result::Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let stats = &self.0;
        let mut deliveries = encoder.encode_descriptor(
            "chatsync_webhook_deliveries",
            "Webhook delivery attempts by this replica, by outcome: delivered (2xx), retried (timeout, connection error, 408, 429, 5xx), failed (other answers, refused destinations)",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (outcome, count) in [
            ("delivered", &stats.delivered),
            ("retried", &stats.retried),
            ("failed", &stats.failed),
        ] {
            ConstCounter::new(count.load(Ordering::Relaxed))
                .encode(deliveries.encode_family(&[("outcome", outcome)])?)?;
        }
        stats.latency.encode(encoder.encode_descriptor(
            "chatsync_webhook_delivery_seconds",
            "Duration of webhook delivery attempts, request to the end of the answer, in seconds",
            None,
            stats.latency.metric_type(),
        )?)?;
        let mut lag = encoder.encode_descriptor(
            "chatsync_webhook_lag_seq",
            "Per (endpoint, session) this replica delivers: head seq minus the endpoint's cursor",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        let lags = stats
            .lag
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        for ((webhook_id, session_id), behind) in lags.iter() {
            let labels = [
                ("webhook_id", webhook_id.as_str()),
                ("session_id", session_id.as_str()),
            ];
            ConstGauge::new(i64::try_from(*behind).unwrap_or(i64::MAX))
                .encode(lag.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

//! Prometheus metrics, served at `GET /metrics` on the API's own port in the Prometheus text
//! format, version 0.0.4 (`prometheus-client`).
//!
//! | metric | type | what it counts |
//! |---|---|---|
//! | `chatsync_rpc_requests_total{method,code}` | counter | finished `ChatSyncService` calls, by method and gRPC status code name (`OK`, `NOT_FOUND`, …) |
//! | `chatsync_rpc_duration_seconds{method}` | histogram | the same calls' durations, from the request's arrival to its status |
//! | `chatsync_subscriptions_active` | gauge | SubscribeMessages streams open on this replica (replaying or live) |
//! | `chatsync_sync_messages_total` | counter | new messages stored by this replica's sync runs |
//! | `chatsync_sync_runs_active` | gauge | sync runs this replica is running (not the ones it follows for another replica) |
//! | `chatsync_feed_lag_seq{session_id}` | gauge | per session with open subscriptions: the committed head seq minus the slowest subscription's cursor, in seqs |
//! | `chatsync_db_pool_connections{state}` | gauge | the database pool's connections, `in_use` and `idle` |
//! | `chatsync_whatsapp_webhook_bodies_total{outcome}` | counter | `POST /webhooks/whatsapp` bodies since start: `stored` (answered 200), `bad_signature` (401), `unknown_number` (a body or change for a phone number no session has: 200, dropped) |
//! | `chatsync_whatsapp_webhook_items_total{outcome}` | counter | webhook items kept in the inbox since start: `unreadable` (kept with their error), `waiting` (a status whose message is not stored yet) |
//!
//! **When an RPC is counted.** One tower layer around the gRPC service ([`RpcMetricsLayer`])
//! records every call once, when its status is known: a unary call when it answers, a
//! streaming call (SyncChats, SubscribeMessages) when its stream ends, with the code of the
//! status that ends it. Its duration is the whole call, so a subscription's is the time it was
//! open. A stream the client abandons (disconnect, cancel) is counted `CANCELLED` when the
//! server drops it. An open subscription is therefore not in `chatsync_rpc_requests_total`
//! yet; `chatsync_subscriptions_active` counts it. Native gRPC and grpc-web calls are counted
//! alike (the layer sits inside the grpc-web translation). Health and reflection calls are not
//! counted.
//!
//! **Feed lag.** A subscription's cursor is the last seq its producer has handed to the
//! stream's send buffer (or passed over, when its chat filter leaves a change out). A
//! session's lag is the head seq this replica has seen committed minus the smallest cursor
//! among its open subscriptions: 0 when every subscriber has been handed everything; a
//! growing value means a subscriber that does not read (its buffer is full) or one still
//! replaying from an old cursor. Sessions without open subscriptions have no series.
//!
//! **Access.** With `[[tokens]]` configured, a scrape needs `authorization: Bearer TOKEN` with
//! a token whose `sessions` include `"*"` (the metrics name every session): 401 without a
//! valid token, 403 for a token limited to some sessions. Without tokens the server listens on
//! loopback only and `/metrics` is open like the API.
use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::auth::{self, Tokens};
use crate::service::ChatSync;

/// The `Content-Type` of a scrape: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of `chatsync_rpc_duration_seconds`' buckets, in seconds: from 1 ms for unary
/// calls up to an hour for long-lived streams.
pub const DURATION_BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];

/// The label value for a path that is not one of the service's methods.
const UNKNOWN_METHOD: &str = "unknown";

type RpcLabels = [(&'static str, &'static str); 2];
type MethodLabel = [(&'static str, &'static str); 1];

/// A server's metrics: the registry a scrape encodes, and the live RPC metrics.
pub struct Metrics {
    registry: Registry,
    rpc: RpcMetrics,
}

impl Metrics {
    /// Registers every metric. `service` is read at each scrape for the gauges.
    pub fn new(service: ChatSync) -> Self {
        let rpc = RpcMetrics::new();
        let mut registry = Registry::default();
        registry.register(
            "chatsync_rpc_requests",
            "Finished ChatSyncService calls, by method and gRPC status code; streams count when they end",
            rpc.requests.clone(),
        );
        registry.register(
            "chatsync_rpc_duration_seconds",
            "Duration of ChatSyncService calls from arrival to status, in seconds; for streams, how long they were open",
            rpc.durations.clone(),
        );
        registry.register_collector(Box::new(
            crate::service::webhooks::delivery::StatsCollector(service.webhooks().stats()),
        ));
        registry.register_collector(Box::new(DomainCollector { service }));
        Self { registry, rpc }
    }

    /// The tower layer that records `chatsync_rpc_*` around the gRPC service.
    pub fn rpc_layer(&self) -> RpcMetricsLayer {
        RpcMetricsLayer {
            rpc: self.rpc.clone(),
        }
    }

    /// The whole scrape, in the Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; a collector's own error would leave the text cut
        // short, which a scraper reports.
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        {
            tracing::error!(%error, "cannot encode the metrics");
        }
        text
    }

    /// Answers a scrape: the text, or 401/403 when tokens are configured and `headers` carry
    /// no token allowed on every session.
    pub fn respond(&self, headers: &HeaderMap, tokens: &Tokens) -> Response {
        if let Err(refusal) = scrape_access(headers, tokens) {
            return refusal.into_response();
        }
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
            self.render(),
        )
            .into_response()
    }
}

/// `GET /metrics`, added to the server's routes (next to the console and the gRPC services).
pub fn with_endpoint(
    routes: tonic::service::Routes,
    metrics: Arc<Metrics>,
    tokens: Arc<Tokens>,
) -> tonic::service::Routes {
    let router = routes.into_axum_router().route(
        "/metrics",
        axum::routing::get(move |headers: HeaderMap| {
            let metrics = metrics.clone();
            let tokens = tokens.clone();
            async move { metrics.respond(&headers, &tokens) }
        }),
    );
    tonic::service::Routes::from(router)
}

/// Why a scrape is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// 401: no token, or not a configured one.
    Unauthorized(String),
    /// 403: a token limited to some sessions.
    Forbidden,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthorized(why) => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
                why,
            )
                .into_response(),
            Refusal::Forbidden => (
                StatusCode::FORBIDDEN,
                "the metrics need a token allowed on every session (\"*\")\n",
            )
                .into_response(),
        }
    }
}

/// Whether `headers` may read the metrics: [`auth::check`], and a scope covering every
/// session. The one access check of `/metrics`.
fn scrape_access(headers: &HeaderMap, tokens: &Tokens) -> Result<(), Refusal> {
    let scope = auth::check(headers, tokens).map_err(|error| {
        Refusal::Unauthorized(format!("{}\n", crate::grpc::status_from(error).message()))
    })?;
    if !scope.allows_all() {
        return Err(Refusal::Forbidden);
    }
    Ok(())
}

/// The gauges and counters read from the domain at each scrape.
struct DomainCollector {
    service: ChatSync,
}

impl std::fmt::Debug for DomainCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainCollector").finish_non_exhaustive()
    }
}

impl Collector for DomainCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let observed = self.service.observe();
        let gauge = |value: u64| ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));

        let subscriptions = gauge(observed.subscriptions_active);
        subscriptions.encode(encoder.encode_descriptor(
            "chatsync_subscriptions_active",
            "SubscribeMessages streams open on this replica, replaying or live",
            None,
            subscriptions.metric_type(),
        )?)?;

        let stored = ConstCounter::new(observed.sync_messages_stored);
        stored.encode(encoder.encode_descriptor(
            "chatsync_sync_messages",
            "New messages stored by this replica's sync runs",
            None,
            stored.metric_type(),
        )?)?;

        let runs = gauge(observed.sync_runs_active);
        runs.encode(encoder.encode_descriptor(
            "chatsync_sync_runs_active",
            "Sync runs this replica is running",
            None,
            runs.metric_type(),
        )?)?;

        let mut lag = encoder.encode_descriptor(
            "chatsync_feed_lag_seq",
            "Per session with open subscriptions: committed head seq minus the slowest subscription's cursor",
            None,
            gauge(0).metric_type(),
        )?;
        for (session_id, behind) in &observed.feed_lag {
            let labels = [("session_id", session_id.as_str())];
            gauge(*behind).encode(lag.encode_family(&labels)?)?;
        }

        let mut pool = encoder.encode_descriptor(
            "chatsync_db_pool_connections",
            "Database pool connections, in use and idle",
            None,
            gauge(0).metric_type(),
        )?;
        for (state, count) in [
            ("in_use", observed.db_pool.in_use),
            ("idle", observed.db_pool.idle),
        ] {
            gauge(u64::from(count)).encode(pool.encode_family(&[("state", state)])?)?;
        }
        encode_whatsapp_webhooks(&mut encoder)?;
        Ok(())
    }
}

/// The `whatsapp-cloud` webhook intake's counts since start
/// ([`crate::service::whatsapp_cloud::WEBHOOK_COUNTS`]).
fn encode_whatsapp_webhooks(encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    use std::sync::atomic::Ordering::Relaxed;

    use crate::service::whatsapp_cloud::WEBHOOK_COUNTS as counts;
    let mut bodies = encoder.encode_descriptor(
        "chatsync_whatsapp_webhook_bodies",
        "POST /webhooks/whatsapp bodies by outcome: stored (200), bad_signature (401), unknown_number (a body or change naming a phone number no session has, acknowledged and dropped)",
        None,
        ConstCounter::new(0u64).metric_type(),
    )?;
    for (outcome, count) in [
        ("stored", counts.bodies.load(Relaxed)),
        ("bad_signature", counts.bad_signatures.load(Relaxed)),
        ("unknown_number", counts.unknown_numbers.load(Relaxed)),
    ] {
        ConstCounter::new(count).encode(bodies.encode_family(&[("outcome", outcome)])?)?;
    }
    let mut items = encoder.encode_descriptor(
        "chatsync_whatsapp_webhook_items",
        "Webhook items kept in the inbox: unreadable (kept with their error) and waiting (a status whose message is not stored yet)",
        None,
        ConstCounter::new(0u64).metric_type(),
    )?;
    for (outcome, count) in [
        ("unreadable", counts.unreadable_items.load(Relaxed)),
        ("waiting", counts.waiting_statuses.load(Relaxed)),
    ] {
        ConstCounter::new(count).encode(items.encode_family(&[("outcome", outcome)])?)?;
    }
    Ok(())
}

/// The live RPC metrics, shared by the layer's services.
#[derive(Clone)]
struct RpcMetrics {
    requests: Family<RpcLabels, Counter>,
    durations: Family<MethodLabel, Histogram>,
    /// The service's method names; any other path is labelled `unknown`, so a client cannot
    /// create series.
    methods: Arc<HashSet<&'static str>>,
}

impl RpcMetrics {
    fn new() -> Self {
        // Leaked once per process: a handful of names that live as long as the program.
        static METHODS: std::sync::OnceLock<HashSet<&'static str>> = std::sync::OnceLock::new();
        let methods = METHODS.get_or_init(|| {
            crate::grpc::rpc_method_names()
                .into_iter()
                .map(|name| &*Box::leak(name.into_boxed_str()))
                .collect()
        });
        Self {
            requests: Family::default(),
            durations: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            methods: Arc::new(methods.clone()),
        }
    }

    /// The method label of a request path, `/chatsync.v1.ChatSyncService/METHOD`.
    fn method(&self, path: &str) -> &'static str {
        let name = path.rsplit('/').next().unwrap_or_default();
        self.methods.get(name).copied().unwrap_or(UNKNOWN_METHOD)
    }
}

/// One call being measured; records itself once, when its status is known or when dropped
/// without one (`CANCELLED`: the stream was abandoned).
struct Call {
    rpc: RpcMetrics,
    method: &'static str,
    started: Instant,
    recorded: bool,
}

impl Call {
    fn finish(&mut self, code: tonic::Code) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        self.rpc
            .requests
            .get_or_create(&[("method", self.method), ("code", code_name(code))])
            .inc();
        self.rpc
            .durations
            .get_or_create(&[("method", self.method)])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled);
    }
}

/// A tower layer recording `chatsync_rpc_requests_total` and `chatsync_rpc_duration_seconds`
/// for the service it wraps (see the module docs for when a call counts).
#[derive(Clone)]
pub struct RpcMetricsLayer {
    rpc: RpcMetrics,
}

impl<S> tower_layer::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            rpc: self.rpc.clone(),
        }
    }
}

/// The service [`RpcMetricsLayer`] wraps around a gRPC service.
#[derive(Clone)]
pub struct RpcMetricsService<S> {
    inner: S,
    rpc: RpcMetrics,
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for RpcMetricsService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>, Error = Infallible>,
    S::Future: Send + 'static,
    RB: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
    RB::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let mut call = Call {
            method: self.rpc.method(request.uri().path()),
            rpc: self.rpc.clone(),
            started: Instant::now(),
            recorded: false,
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?.map(tonic::body::Body::new);
            // A status in the headers is a trailers-only answer: the call is over.
            if let Some(code) = grpc_code(response.headers()) {
                call.finish(code);
                return Ok(response);
            }
            if http_body::Body::is_end_stream(response.body()) {
                call.finish(tonic::Code::Unknown);
                return Ok(response);
            }
            Ok(response.map(|body| {
                tonic::body::Body::new(CountedBody {
                    inner: body,
                    call: Some(call),
                })
            }))
        })
    }
}

/// A response body that records its call when the status trailer passes.
struct CountedBody {
    inner: tonic::body::Body,
    call: Option<Call>,
}

impl http_body::Body for CountedBody {
    type Data = axum::body::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|trailers| grpc_code(trailers).unwrap_or(tonic::Code::Unknown)),
            Poll::Ready(Some(Err(status))) => Some(status.code()),
            Poll::Ready(None) => Some(tonic::Code::Unknown),
            Poll::Pending => None,
        };
        if let Some(code) = code
            && let Some(mut call) = self.call.take()
        {
            call.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The `grpc-status` in headers or trailers.
fn grpc_code(headers: &HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .map(|value| tonic::Code::from_bytes(value.as_bytes()))
}

/// A status code's canonical name, as gRPC spells it (`OK`, `NOT_FOUND`, …).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_grpc_name() {
        for value in 0..=16 {
            let code = tonic::Code::from(value);
            let name = code_name(code);
            assert!(
                name.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{name}"
            );
        }
        assert_eq!(code_name(tonic::Code::from(5)), "NOT_FOUND");
    }

    #[test]
    fn paths_outside_the_service_are_one_label() {
        let rpc = RpcMetrics::new();
        assert_eq!(
            rpc.method("/chatsync.v1.ChatSyncService/SendMessage"),
            "SendMessage"
        );
        assert_eq!(
            rpc.method("/chatsync.v1.ChatSyncService/NoSuchMethod"),
            UNKNOWN_METHOD
        );
    }
}

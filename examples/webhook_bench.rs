//! Webhook delivery benchmark: events/s to one endpoint and latency from send to receiver, on
//! SQLite, against a receiver on loopback that answers 200 at once.
//!
//! Usage: `cargo run --release --example webhook_bench -- [--sessions N] [--messages N]
//! [--rate N]` (defaults 1 session, 5,000 messages, 1,000 messages/s). `bench/webhooks.sh`
//! runs it for 1 and 100 sessions, 3 times each.
//!
//! - The real server runs in this process, as the tests start it (`Application::build` on
//!   `127.0.0.1:0`, a fresh SQLite file in a temp dir), with `--sessions` `local` sessions and
//!   one `[[webhooks]]` endpoint for all of them, pointing at the receiver: an axum HTTP/1.1
//!   server in the same process that records each request's `webhook-id` and arrival time
//!   and answers 200 with an empty body. Signatures are made (chatsync always signs) but not
//!   checked, so the figure is chatsync's, not a verifier's.
//! - **Latency** (not backlogged): one sender sends `--messages` messages open-loop at
//!   `--rate` messages/s, round-robin over the sessions, each in its own task (at most 256 in
//!   flight). Message i carries `client_message_id = "wh-i"`; its send start is recorded
//!   before the RPC. The receiver takes each `message.created` body's `clientMessageId` and
//!   records arrival − send start: p50/p99/max (hdrhistogram). This is send → receiver, so it
//!   includes the SendMessage commit: an upper bound of commit → receiver. The lower bound is
//!   answer → receiver, from the moment the SendMessage answer (sent after the commit) reached
//!   the client, 0 when the webhook came first; both are printed.
//! - **Throughput** (a backlog): then `ReplayWebhook(after_seq = 0)` for every session (all
//!   sent at once), and the time from the first until the receiver has every session's head again: events/s = replayed events
//!   / that time. Each (endpoint, session) pair delivers one event at a time, so one session
//!   is bound by the round trip, and many sessions deliver in parallel.
//! - **An endpoint down** (`--down-secs S`, default 0: skipped): then the receiver answers 503
//!   for S seconds while the sender goes on at `--rate` (round-robin over the sessions); the
//!   process's RSS (`VmRSS`, server and clients together) is sampled every 5 s. Then the
//!   receiver recovers and the time to deliver the backlog is measured. Delivery state is the
//!   stored cursor, so RSS should stay flat however long the endpoint is down. (The retry
//!   cap is 5 s here, not the default 10 min, so that the catch-up is not the last wait.)
//! - Prints one `RESULT key=value …` line for scripts.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use chatsync::config::webhooks::WebhookConfig;
use chatsync::config::{Config, SessionConfig};
use chatsync::grpc::pb;
use chatsync::server::Application;
use hdrhistogram::Histogram;
use pb::chat_sync_service_client::ChatSyncServiceClient;
use tokio::sync::{Notify, Semaphore, oneshot};
use tonic::transport::Channel;

const MAX_IN_FLIGHT: usize = 256;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Webhook delivery: throughput and latency to one endpoint.
#[derive(clap::Parser)]
struct Args {
    /// `local` sessions, all delivered to the one endpoint.
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// Messages to send (round-robin over the sessions).
    #[arg(long, default_value_t = 5_000)]
    messages: usize,
    /// Offered send rate, messages/s (the latency phase).
    #[arg(long, default_value_t = 1_000.0)]
    rate: f64,
    /// Seconds the receiver answers 503 while sends go on (0: no outage phase).
    #[arg(long, default_value_t = 0)]
    down_secs: u64,
}

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    /// The highest seq received per session.
    heads: HashMap<String, u64>,
    /// Requests received.
    requests: u64,
    /// Arrival times of `message.created` events by client message id.
    arrivals: HashMap<String, Instant>,
    /// Answer 503 until then.
    down_until: Option<Instant>,
}

#[derive(Clone)]
struct Receiver {
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
}

async fn receive(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::http::StatusCode {
    let at = Instant::now();
    if receiver
        .seen
        .lock()
        .unwrap()
        .down_until
        .is_some_and(|until| at < until)
    {
        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (session, seq) = id.rsplit_once(':').unwrap_or_default();
    let seq: u64 = seq.parse().unwrap_or_default();
    let client_id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v["messageCreated"]["clientMessageId"]
                .as_str()
                .map(str::to_owned)
        });
    {
        let mut seen = receiver.seen.lock().unwrap();
        seen.requests += 1;
        let head = seen.heads.entry(session.to_owned()).or_default();
        *head = (*head).max(seq);
        if let Some(client_id) = client_id {
            seen.arrivals.entry(client_id).or_insert(at);
        }
    }
    receiver.changed.notify_waiters();
    axum::http::StatusCode::OK
}

/// This process's resident set in KiB (`VmRSS` of /proc/self/status).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Waits until `done` holds for what the receiver saw (checked after every request).
async fn wait_for(receiver: &Receiver, done: impl Fn(&Seen) -> bool) {
    loop {
        let changed = receiver.changed.notified();
        if done(&receiver.seen.lock().unwrap()) {
            return;
        }
        changed.await;
    }
}

/// Latencies in nanoseconds.
fn histogram(values: impl Iterator<Item = u64>) -> anyhow::Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new(3)?;
    for v in values {
        h.record(v.max(1))?;
    }
    Ok(h)
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    anyhow::ensure!(args.sessions > 0 && args.messages > 0 && args.rate > 0.0);

    // The receiver.
    let receiver = Receiver {
        seen: Arc::default(),
        changed: Arc::new(Notify::new()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_url = format!("http://{}/hook", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The server.
    let dir = tempfile::tempdir()?;
    let secret_file = dir.path().join("hook.secret");
    std::fs::write(&secret_file, SECRET)?;
    let session_ids: Vec<String> = (0..args.sessions).map(|i| format!("s{i}")).collect();
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        database_url: format!("sqlite://{}", dir.path().join("bench.db").display()),
        sessions: session_ids
            .iter()
            .map(|id| SessionConfig {
                id: id.clone(),
                source: "local".into(),
                settings: serde_json::Map::new(),
            })
            .collect(),
        webhooks: vec![WebhookConfig {
            id: "bench".into(),
            url: hook_url,
            secret_file: Some(secret_file),
            allow_private_network: true,
            timeout_secs: 10,
            retry_initial_ms: 1_000,
            // Capped at 5 s (default 10 min) so that the outage phase's catch-up measures
            // delivery, not the backoff's last wait.
            retry_max_ms: 5_000,
            ..WebhookConfig::default()
        }],
        ..Config::default()
    };
    let app = Application::build(config).await?;
    let url = format!("http://{}", app.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(url)?.connect().await?;
    let client = ChatSyncServiceClient::new(channel);

    // Latency: open-loop sends at the offered rate.
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut starts = Vec::with_capacity(args.messages);
    let mut tasks = Vec::with_capacity(args.messages);
    let begin = Instant::now();
    for i in 0..args.messages {
        tokio::time::sleep_until((begin + interval * i as u32).into()).await;
        let permit = limit.clone().acquire_owned().await?;
        let mut client = client.clone();
        let session_id = session_ids[i % session_ids.len()].clone();
        starts.push(Instant::now());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            client
                .send_message(pb::SendMessageRequest {
                    session_id,
                    chat_id: "bench-room".into(),
                    text: format!("message {i}"),
                    client_message_id: format!("wh-{i}"),
                    ..Default::default()
                })
                .await
                .map(|_| Instant::now())
        }));
    }
    let mut answers = Vec::with_capacity(args.messages);
    for task in tasks {
        answers.push(task.await??);
    }
    let sent_secs = begin.elapsed().as_secs_f64();
    wait_for(&receiver, |seen| seen.arrivals.len() >= args.messages).await;
    let (latency, after_answer) = {
        let seen = receiver.seen.lock().unwrap();
        let arrival = |i: usize| seen.arrivals[&format!("wh-{i}")];
        (
            histogram(
                (0..args.messages).map(|i| arrival(i).duration_since(starts[i]).as_nanos() as u64),
            )?,
            // `duration_since` saturates at 0: the webhook arrived before the answer.
            histogram(
                (0..args.messages).map(|i| arrival(i).duration_since(answers[i]).as_nanos() as u64),
            )?,
        )
    };

    // Throughput: replay every session from the start.
    let mut heads = HashMap::new();
    for session_id in &session_ids {
        let status = client
            .clone()
            .get_sync_status(pb::GetSyncStatusRequest {
                session_id: session_id.clone(),
            })
            .await?
            .into_inner();
        heads.insert(session_id.clone(), status.head_seq);
    }
    let replayed: u64 = heads.values().sum();
    {
        let mut seen = receiver.seen.lock().unwrap();
        seen.heads.clear();
        seen.requests = 0;
    }
    // The replays go out together, as an operator's script would send them: one after the
    // other, 100 round trips would be part of the measured time.
    let replay_start = Instant::now();
    let mut replays = tokio::task::JoinSet::new();
    for session_id in &session_ids {
        let mut client = client.clone();
        let request = pb::ReplayWebhookRequest {
            webhook_id: "bench".into(),
            session_id: session_id.clone(),
            after_seq: 0,
        };
        replays.spawn(async move { client.replay_webhook(request).await });
    }
    while let Some(replayed) = replays.join_next().await {
        replayed??;
    }
    wait_for(&receiver, |seen| {
        heads
            .iter()
            .all(|(session, head)| seen.heads.get(session).is_some_and(|seq| seq >= head))
    })
    .await;
    let replay_secs = replay_start.elapsed().as_secs_f64();
    let requests = receiver.seen.lock().unwrap().requests;

    // An endpoint down for `--down-secs` under load.
    let mut outage = String::new();
    if args.down_secs > 0 {
        let down = Duration::from_secs(args.down_secs);
        receiver.seen.lock().unwrap().down_until = Some(Instant::now() + down);
        let start = Instant::now();
        let mut samples = vec![rss_kib()];
        let mut next_sample = start + Duration::from_secs(5);
        let mut sent = 0usize;
        while start.elapsed() < down {
            tokio::time::sleep_until((start + interval * sent as u32).into()).await;
            let mut client = client.clone();
            let session_id = session_ids[sent % session_ids.len()].clone();
            tokio::spawn(async move {
                client
                    .send_message(pb::SendMessageRequest {
                        session_id,
                        chat_id: "bench-room".into(),
                        text: format!("while down {sent}"),
                        ..Default::default()
                    })
                    .await
            });
            sent += 1;
            if Instant::now() >= next_sample {
                samples.push(rss_kib());
                next_sample += Duration::from_secs(5);
            }
        }
        samples.push(rss_kib());
        let mut heads = HashMap::new();
        for session_id in &session_ids {
            let head = client
                .clone()
                .get_sync_status(pb::GetSyncStatusRequest {
                    session_id: session_id.clone(),
                })
                .await?
                .into_inner()
                .head_seq;
            heads.insert(session_id.clone(), head);
        }
        let recovered = Instant::now();
        wait_for(&receiver, |seen| {
            heads
                .iter()
                .all(|(session, head)| seen.heads.get(session).is_some_and(|seq| seq >= head))
        })
        .await;
        let catch_up = recovered.elapsed().as_secs_f64();
        let (first, last) = (samples[0], *samples.last().unwrap_or(&0));
        let max = samples.iter().copied().max().unwrap_or(0);
        println!(
            "outage: {} s down with {sent} messages sent meanwhile; RSS first {} MiB, last {} MiB, max {} MiB ({} samples); backlog delivered {catch_up:.1} s after recovery",
            args.down_secs,
            first / 1024,
            last / 1024,
            max / 1024,
            samples.len()
        );
        outage = format!(
            " down_secs={} down_sent={sent} rss_first_kib={first} rss_last_kib={last} rss_max_kib={max} catch_up_secs={catch_up:.1}",
            args.down_secs
        );
    }

    let _ = stop.send(());
    server.await??;

    let rate = replayed as f64 / replay_secs;
    println!(
        "latency: {} messages at {:.0}/s offered ({:.0}/s achieved) over {} sessions: send → receiver p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; answer → receiver p50 {:.2} ms, p99 {:.2} ms",
        args.messages,
        args.rate,
        args.messages as f64 / sent_secs,
        args.sessions,
        ms(latency.value_at_quantile(0.5)),
        ms(latency.value_at_quantile(0.99)),
        ms(latency.max()),
        ms(after_answer.value_at_quantile(0.5)),
        ms(after_answer.value_at_quantile(0.99)),
    );
    println!(
        "throughput: {replayed} events replayed over {} sessions in {replay_secs:.2} s: {rate:.0} events/s ({requests} requests received)",
        args.sessions,
    );
    println!(
        "RESULT sessions={} messages={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} answer_p50_ms={:.2} answer_p99_ms={:.2} events={replayed} events_per_sec={rate:.0}{outage}",
        args.sessions,
        args.messages,
        ms(latency.value_at_quantile(0.5)),
        ms(latency.value_at_quantile(0.99)),
        ms(latency.max()),
        ms(after_answer.value_at_quantile(0.5)),
        ms(after_answer.value_at_quantile(0.99)),
    );
    Ok(())
}

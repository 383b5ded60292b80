//! WhatsApp Cloud API webhook intake benchmark, in its own process against a `chatsync serve`
//! it starts (`--bin`, default `target/release/chatsync`) with one `whatsapp-cloud` session on
//! `--database-url` (default: a fresh SQLite file).
//!
//! Usage: `cargo run --release --example cloud_webhooks -- [--database-url URL]
//! [--messages M] [--connections N] [--rate R] [--latency-bodies L]`.
//!
//! 1. **Setup** (not measured): M incoming text messages, one signed body each, POSTed to
//!    `/webhooks/whatsapp` over N connections.
//! 2. **Intake**: 2·M signed bodies, each holding one status (`delivered` for every message,
//!    then `read` for every message), POSTed closed-loop by N workers, each on its own HTTP/1.1
//!    connection: bodies/s over the phase, and p50/p99 of the time from sending a body to its
//!    200 (hdrhistogram).
//! 3. **Webhook → subscriber**: L more messages are created, one live SubscribeMessages stream
//!    is opened, then L bodies each holding a `read` for one of them are POSTed open-loop at
//!    R bodies/s (over up to 64 connections); for each, the time from starting its POST to
//!    the stream's `status_updated` for that wamid: p50/p99.
//!
//! Prints human-readable lines and one `RESULT key=value …` line.
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatsync::grpc::pb;
use chatsync::sources::whatsapp_cloud::webhook::sign;
use hdrhistogram::Histogram;
use pb::chat_sync_service_client::ChatSyncServiceClient;
use pb::subscribe_messages_response::Event;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

const NUMBER: &str = "1122334455667";
const USER: &str = "972987654321";
const SECRET: &str = "bench-app-secret";

#[derive(clap::Parser)]
struct Args {
    /// The chatsync binary.
    #[arg(long, default_value = "target/release/chatsync")]
    bin: std::path::PathBuf,
    /// The database (a PostgreSQL URL); default a fresh SQLite file.
    #[arg(long)]
    database_url: Option<String>,
    /// Messages created first; the intake phase POSTs two statuses for each.
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Concurrent connections of the setup and intake phases.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Bodies per second of the subscriber-latency phase.
    #[arg(long, default_value_t = 1_000)]
    rate: u32,
    /// Bodies of the subscriber-latency phase (0: skip it).
    #[arg(long, default_value_t = 5_000)]
    latency_bodies: usize,
}

fn message_body(wamid: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1234567890987654321", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "972123456789", "phone_number_id": NUMBER},
            "contacts": [{"profile": {"name": "Bench User"}, "wa_id": USER}],
            "messages": [{"from": USER, "id": wamid, "timestamp": "1697043223",
                          "type": "text", "text": {"body": "hello"}}]
        }}]}]
    }))
    .expect("json")
}

fn status_body(wamid: &str, status: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1234567890987654321", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "972123456789", "phone_number_id": NUMBER},
            "statuses": [{"id": wamid, "status": status, "timestamp": "1698266945",
                          "recipient_id": USER,
                          "conversation": {"id": "7270432eae37498234f4444b35ffc5",
                                           "origin": {"type": "service"}},
                          "pricing": {"billable": true, "pricing_model": "CBP",
                                      "category": "service"}}]
        }}]}]
    }))
    .expect("json")
}

async fn post(http: &reqwest::Client, url: &str, body: Vec<u8>) -> anyhow::Result<()> {
    let signature = sign(&body, SECRET.as_bytes());
    let status = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await?
        .status();
    anyhow::ensure!(status.as_u16() == 200, "answered {status}");
    Ok(())
}

/// POSTs `bodies` closed-loop over `connections` workers; (elapsed, time-to-200 histogram).
async fn closed_loop(
    url: &str,
    bodies: Vec<Vec<u8>>,
    connections: usize,
) -> anyhow::Result<(Duration, Histogram<u64>)> {
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (bodies, next, url) = (bodies.clone(), next.clone(), url.to_owned());
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::builder().http1_only().build()?;
            let mut histogram = Histogram::<u64>::new(3)?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return anyhow::Ok(histogram);
                };
                let sent = Instant::now();
                post(&http, &url, body.clone()).await?;
                histogram.record(sent.elapsed().as_micros() as u64)?;
            }
        }));
    }
    let mut all = Histogram::<u64>::new(3)?;
    for worker in workers {
        all.add(worker.await??)?;
    }
    Ok((started.elapsed(), all))
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let dir = tempfile::tempdir()?;
    let database_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let config = dir.path().join("chatsync.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"{database_url}\"\n\
             [[sessions]]\nid = \"wa\"\nsource = \"whatsapp-cloud\"\n\
             phone_number_id = \"{NUMBER}\"\naccess_token_env = \"BENCH_WA_TOKEN\"\n\
             app_secret_env = \"BENCH_WA_SECRET\"\nverify_token_env = \"BENCH_WA_VERIFY\"\n\
             graph_api_url = \"http://127.0.0.1:9\"\n"
        ),
    )?;
    let mut server = tokio::process::Command::new(&args.bin)
        .args(["serve", "--config"])
        .arg(&config)
        .env("BENCH_WA_TOKEN", "unused")
        .env("BENCH_WA_SECRET", SECRET)
        .env("BENCH_WA_VERIFY", "unused")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let line = lines.next_line().await?.unwrap_or_default();
    let base = line
        .strip_prefix("chatsync listening on ")
        .ok_or_else(|| anyhow::anyhow!("unexpected first line: {line}"))?
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let url = format!("{base}/webhooks/whatsapp");
    let backend = if database_url.starts_with("postgres") {
        "postgresql"
    } else {
        "sqlite"
    };
    println!(
        "server {base} on {backend}; {} messages, {} connections",
        args.messages, args.connections
    );

    // 1. Setup.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let wamids: Vec<String> = (0..args.messages)
        .map(|i| format!("wamid.bench.{run}.{i}"))
        .collect();
    let bodies = wamids.iter().map(|w| message_body(w)).collect();
    let (took, _) = closed_loop(&url, bodies, args.connections).await?;
    println!(
        "setup: {} message bodies in {:.2} s ({:.0}/s)",
        args.messages,
        took.as_secs_f64(),
        args.messages as f64 / took.as_secs_f64()
    );

    // 2. Intake: one status per body.
    let mut bodies: Vec<Vec<u8>> = wamids.iter().map(|w| status_body(w, "delivered")).collect();
    bodies.extend(wamids.iter().map(|w| status_body(w, "read")));
    let count = bodies.len();
    let (took, histogram) = closed_loop(&url, bodies, args.connections).await?;
    let rate = count as f64 / took.as_secs_f64();
    let (p50, p99) = (
        ms(histogram.value_at_quantile(0.50)),
        ms(histogram.value_at_quantile(0.99)),
    );
    println!(
        "intake: {count} status bodies in {:.2} s: {rate:.0} bodies/s, time to 200 p50 {p50:.2} ms p99 {p99:.2} ms",
        took.as_secs_f64()
    );

    // 3. Webhook → subscriber latency, open loop.
    let (mut lat50, mut lat99, mut seen, mut achieved) = (0.0, 0.0, 0usize, 0.0);
    if args.latency_bodies > 0 {
        let later: Vec<String> = (0..args.latency_bodies)
            .map(|i| format!("wamid.later.{run}.{i}"))
            .collect();
        closed_loop(
            &url,
            later.iter().map(|w| message_body(w)).collect(),
            args.connections,
        )
        .await?;
        let mut client = ChatSyncServiceClient::connect(base.clone()).await?;
        let mut stream = client
            .subscribe_messages(pb::SubscribeMessagesRequest {
                session_id: "wa".into(),
                chat_ids: Vec::new(),
                after_seq: None,
            })
            .await?
            .into_inner();
        loop {
            let frame = stream
                .message()
                .await?
                .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
            if matches!(frame.event, Some(Event::Ready(_))) {
                break;
            }
        }
        let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let total = later.len();
        let reader = {
            let sent_at = sent_at.clone();
            tokio::spawn(async move {
                let mut histogram = Histogram::<u64>::new(3)?;
                while histogram.len() < total as u64 {
                    let Ok(Some(frame)) =
                        tokio::time::timeout(Duration::from_secs(30), stream.message())
                            .await
                            .unwrap_or(Ok(None))
                    else {
                        break;
                    };
                    if let Some(Event::StatusUpdated(update)) = frame.event
                        && let Some(at) = sent_at
                            .lock()
                            .expect("lock")
                            .remove(&update.provider_message_id)
                    {
                        histogram.record(at.elapsed().as_micros() as u64)?;
                    }
                }
                anyhow::Ok(histogram)
            })
        };
        let clients: Vec<reqwest::Client> = (0..64)
            .map(|_| reqwest::Client::builder().http1_only().build())
            .collect::<Result<_, _>>()?;
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        let mut posts = Vec::with_capacity(total);
        for (i, wamid) in later.iter().enumerate() {
            tick.tick().await;
            let body = status_body(wamid, "read");
            let (http, url, sent_at, wamid) = (
                clients[i % clients.len()].clone(),
                url.clone(),
                sent_at.clone(),
                wamid.clone(),
            );
            posts.push(tokio::spawn(async move {
                sent_at.lock().expect("lock").insert(wamid, Instant::now());
                post(&http, &url, body).await
            }));
        }
        for p in posts {
            p.await??;
        }
        achieved = total as f64 / started.elapsed().as_secs_f64();
        let histogram = reader.await??;
        seen = histogram.len() as usize;
        lat50 = ms(histogram.value_at_quantile(0.50));
        lat99 = ms(histogram.value_at_quantile(0.99));
        println!(
            "webhook -> subscriber: {seen}/{total} status_updated seen at {achieved:.0} bodies/s: p50 {lat50:.2} ms p99 {lat99:.2} ms"
        );
    }
    println!(
        "RESULT backend={backend} connections={} bodies={count} bodies_per_s={rate:.0} p50_ms={p50:.2} p99_ms={p99:.2} sub_rate={achieved:.0} sub_seen={seen} sub_p50_ms={lat50:.2} sub_p99_ms={lat99:.2}",
        args.connections
    );
    server.start_kill()?;
    Ok(())
}

//! Fan-out benchmark: SendMessage → SubscribeMessages latency with many live subscribers, on
//! SQLite.
//!
//! Usage: `cargo run --release --example fanout -- [--messages N] [--subscribers N] [--rate N]
//! [--servers URL,URL,…] [--ca-cert CA.pem]` (defaults 5,000 messages, 100 subscribers, 1,000 messages/s, one
//! server in this process). With `--servers`, the servers run elsewhere (replicas of one
//! cluster, see `bench/replicas.sh`) and subscribers and sends are spread over them.
//!
//! - The real server runs in this process, as the tests start it: `Application::build` on
//!   `127.0.0.1:0` with one `local` session over a fresh SQLite file in a temp dir, then
//!   `run_until_stopped`. Clients and server share one multi-threaded tokio runtime (one
//!   worker per core).
//! - Every subscriber opens its own connection (its own HTTP/2 channel) and a live
//!   SubscribeMessages stream (no `after_seq`), and the benchmark waits for every `ready`.
//! - One sender task, on its own connection, issues SendMessage open-loop at a fixed rate:
//!   each send starts at its scheduled tick in its own task (at most 256 in flight), so a
//!   slow server does not lower the offered rate until that bound is hit. Message i carries
//!   `client_message_id = "fan-i"`; its send start is recorded before the RPC is issued.
//! - Each subscriber records, for every `message_created` event of a `fan-i` message,
//!   receive time − send start of message i. The report gives p50/p99/max over all
//!   (message, subscriber) pairs (hdrhistogram, 3 significant digits), the achieved send
//!   rate, and the SendMessage RPC latency.
//! - `--ca-cert` connects to `https://` servers over TLS, trusting that CA (`bench/tls.sh`
//!   compares TLS with plain HTTP/2).
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chatsync::config::{Config, SessionConfig};
use chatsync::grpc::pb;
use chatsync::server::Application;
use hdrhistogram::Histogram;
use pb::chat_sync_service_client::ChatSyncServiceClient;
use pb::subscribe_messages_response::Event;
use tokio::sync::{Semaphore, oneshot};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const SESSION_ID: &str = "fanout";
const CHAT_ID: &str = "bench-room";
const MAX_IN_FLIGHT: usize = 256;

/// SendMessage → SubscribeMessages latency with many live subscribers.
#[derive(clap::Parser)]
struct Args {
    /// Messages to send.
    #[arg(long, default_value_t = 5_000)]
    messages: usize,
    /// Live subscribers, each on its own connection.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Offered send rate, messages/s; 0 sends as fast as the server answers (at most 256 in
    /// flight), to measure throughput.
    #[arg(long, default_value_t = 1_000.0)]
    rate: f64,
    /// Running servers to use instead of one in this process (comma-separated URLs, each
    /// serving a `local` session named by `--session`): subscribers and sends are spread over
    /// them round-robin.
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    /// The session on `--servers`.
    #[arg(long, default_value = SESSION_ID)]
    session: String,
    /// A PEM CA certificate to trust for `https://` servers (TLS).
    #[arg(long)]
    ca_cert: Option<std::path::PathBuf>,
}

/// The TLS settings from `--ca-cert`, read once.
static TLS: std::sync::OnceLock<Option<ClientTlsConfig>> = std::sync::OnceLock::new();

async fn connect(url: &str) -> anyhow::Result<ChatSyncServiceClient<Channel>> {
    let mut endpoint = Channel::from_shared(url.to_owned())?;
    if let Some(Some(tls)) = TLS.get() {
        endpoint = endpoint.tls_config(tls.clone())?;
    }
    Ok(ChatSyncServiceClient::new(endpoint.connect().await?))
}

/// Latencies in nanoseconds.
fn histogram(values: &[u64]) -> anyhow::Result<Histogram<u64>> {
    let mut histogram = Histogram::<u64>::new(3)?;
    for &value in values {
        histogram.record(value.max(1))?;
    }
    Ok(histogram)
}

fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    anyhow::ensure!(args.messages > 0 && args.subscribers > 0 && args.rate >= 0.0);
    let tls = match &args.ca_cert {
        Some(path) => {
            Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(path)?)))
        }
        None => None,
    };
    let _ = TLS.set(tls);
    let session_id = args.session.clone();
    let dir = tempfile::tempdir()?;
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        database_url: format!("sqlite://{}", dir.path().join("fanout.db").display()),
        sessions: vec![SessionConfig {
            id: SESSION_ID.into(),
            source: "local".into(),
            settings: serde_json::Map::new(),
        }],
        ..Config::default()
    };
    let (urls, server) = if args.servers.is_empty() {
        let app = Application::build(config).await?;
        let url = format!("http://{}", app.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        (vec![url], Some((stop, server)))
    } else {
        (args.servers.clone(), None)
    };

    // One sender connection per server; a first message creates the chat before anyone
    // subscribes.
    let mut senders = Vec::new();
    for url in &urls {
        senders.push(connect(url).await?);
    }
    senders[0]
        .clone()
        .send_message(pb::SendMessageRequest {
            session_id: session_id.clone(),
            chat_id: CHAT_ID.into(),
            text: "warm-up".into(),
            client_message_id: "warm-up".into(),
            attachments: Vec::new(),
            ..Default::default()
        })
        .await?;

    let base = Instant::now();
    // Send start of message i, in ns since `base`, plus one (0: not sent yet).
    let send_start: Arc<Vec<AtomicU64>> =
        Arc::new((0..args.messages).map(|_| AtomicU64::new(0)).collect());

    // Subscribers: one connection each, live stream, wait for `ready`.
    let expected_secs = args.messages as f64 / if args.rate > 0.0 { args.rate } else { 1_000.0 };
    let deadline = Duration::from_secs_f64(expected_secs + 60.0);
    let mut ready_receivers = Vec::new();
    let mut subscribers = Vec::new();
    for subscriber in 0..args.subscribers {
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        ready_receivers.push(ready_rx);
        let url = urls[subscriber % urls.len()].clone();
        let session_id = session_id.clone();
        let send_start = send_start.clone();
        let n = args.messages;
        subscribers.push(tokio::spawn(async move {
            let mut client = connect(&url).await?;
            let mut stream = client
                .subscribe_messages(pb::SubscribeMessagesRequest {
                    session_id,
                    chat_ids: Vec::new(),
                    after_seq: None,
                })
                .await?
                .into_inner();
            let mut ready_tx = Some(ready_tx);
            let mut latencies = Vec::with_capacity(n);
            let collect = async {
                while latencies.len() < n {
                    let Some(event) = stream.message().await? else {
                        anyhow::bail!("subscription ended early");
                    };
                    let received = base.elapsed().as_nanos() as u64;
                    match event.event {
                        Some(Event::Ready(_)) => {
                            if let Some(tx) = ready_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        Some(Event::MessageCreated(message)) => {
                            let Some(index) = message
                                .client_message_id
                                .strip_prefix("fan-")
                                .and_then(|i| i.parse::<usize>().ok())
                            else {
                                continue;
                            };
                            let start = send_start[index].load(Ordering::Acquire);
                            anyhow::ensure!(start > 0, "message {index} seen before its send");
                            latencies.push(received.saturating_sub(start - 1));
                        }
                        _ => {}
                    }
                }
                Ok(())
            };
            let outcome = tokio::time::timeout(deadline, collect).await;
            let missing = n - latencies.len();
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(error)) => eprintln!("subscriber error: {error}"),
                Err(_) => eprintln!("subscriber timed out with {missing} events missing"),
            }
            anyhow::Ok((latencies, missing))
        }));
    }
    for ready in ready_receivers {
        ready
            .await
            .map_err(|_| anyhow::anyhow!("a subscriber failed before ready"))?;
    }
    println!(
        "{} subscribers ready (one connection each) over {} server(s); sending {} messages at {}/s",
        args.subscribers,
        urls.len(),
        args.messages,
        args.rate
    );

    // Sender: open-loop at the given rate.
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let period = if args.rate > 0.0 {
        Duration::from_secs_f64(1.0 / args.rate)
    } else {
        Duration::from_nanos(1)
    };
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = Vec::with_capacity(args.messages);
    let send_began = Instant::now();
    for index in 0..args.messages {
        ticks.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let mut client = senders[index % senders.len()].clone();
        let session_id = session_id.clone();
        let started = base.elapsed().as_nanos() as u64;
        send_start[index].store(started + 1, Ordering::Release);
        sends.push(tokio::spawn(async move {
            let result = client
                .send_message(pb::SendMessageRequest {
                    session_id,
                    chat_id: CHAT_ID.into(),
                    text: format!("fan-out message {index}"),
                    client_message_id: format!("fan-{index}"),
                    attachments: Vec::new(),
                    ..Default::default()
                })
                .await;
            drop(permit);
            result.map(|_| base.elapsed().as_nanos() as u64 - started)
        }));
    }
    let issue_secs = send_began.elapsed().as_secs_f64();
    let mut rpc = Vec::with_capacity(args.messages);
    for send in sends {
        rpc.push(send.await??);
    }
    let complete_secs = send_began.elapsed().as_secs_f64();

    let mut all = Vec::with_capacity(args.messages * args.subscribers);
    let mut missing = 0;
    for subscriber in subscribers {
        let (latencies, lost) = subscriber.await??;
        all.extend(latencies);
        missing += lost;
    }
    let delivered_secs = send_began.elapsed().as_secs_f64();
    let count = all.len();
    let (all, rpc) = (histogram(&all)?, histogram(&rpc)?);

    println!(
        "send rate: {:.0} messages/s offered over {:.2} s (target {}), {:.0} messages/s completed",
        args.messages as f64 / issue_secs,
        issue_secs,
        args.rate,
        args.messages as f64 / complete_secs
    );
    println!(
        "SendMessage RPC latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(rpc.value_at_percentile(50.0)),
        ms(rpc.value_at_percentile(99.0)),
        ms(rpc.max())
    );
    println!(
        "fan-out latency (send start -> message_created received), {} (message, subscriber) pairs, {} missing:",
        count, missing
    );
    println!(
        "  p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; all delivered {:.2} s after the first send",
        ms(all.value_at_percentile(50.0)),
        ms(all.value_at_percentile(99.0)),
        ms(all.max()),
        delivered_secs
    );
    println!(
        "RESULT messages={} subscribers={} rate={} offered_rate={:.0} completed_rate={:.0} rpc_p50_ms={:.3} rpc_p99_ms={:.3} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} missing={}",
        args.messages,
        args.subscribers,
        args.rate,
        args.messages as f64 / issue_secs,
        args.messages as f64 / complete_secs,
        ms(rpc.value_at_percentile(50.0)),
        ms(rpc.value_at_percentile(99.0)),
        ms(all.value_at_percentile(50.0)),
        ms(all.value_at_percentile(99.0)),
        ms(all.max()),
        missing
    );

    if let Some((stop, server)) = server {
        let _ = stop.send(());
        let _ = server.await;
    }
    Ok(())
}

//! Load generator for a running `chatsync serve` (or Synapse), in its own process.
//!
//! Usage: `cargo run --release --example load -- COMMAND [OPTIONS]`; every command prints
//! human-readable lines and one `RESULT key=value …` line for scripts (`bench/*.sh`).
//!
//! - `sends`: `--clients N` closed-loop SendMessage clients, each on its own connection
//!   (HTTP/2 channel), for `--secs S` into `--chats C` chats of a `local` session. Each client
//!   sends its next message as soon as the last is answered; every key is new. Reports sends/s
//!   (answered sends over the measured time) and RPC latency p50/p99 (hdrhistogram). With
//!   `--clients 1` this is the sequential latency.
//!
//!   Several servers (replicas of one database) and several sessions: `--server` and
//!   `--session` each take a comma-separated list (`--servers`, `--sessions` are aliases).
//!   With S servers and N sessions, client i sends to session `i % N` through server `i % S`,
//!   so when N is a multiple of S every session is written through one server only (each
//!   server owns N/S sessions). With `--mix`, client i uses server `(i / N) % S` instead: a
//!   session's clients go through every server in turn (with `--clients` ≥ N·S each session
//!   is written through all of them, and replicas contend for its lock). The `RESULT` line adds
//!   `servers=S sessions=N mix=0|1`.
//! - `synapse-sends`: the same closed loop against a real Synapse (`scripts/synapse`, started
//!   in `--dir`, stopped at the end): N users' clients each post `m.room.message` events to one
//!   room, one `PUT /send` at a time. Synapse's send rate, for the same-run ratio.
//! - `subscribers`: opens `--subscribers N` live SubscribeMessages streams over
//!   `--connections C` connections (0: one connection per stream), at most `--concurrency` being
//!   opened at once, and times until every stream has seen `ready`. With `--server-pid`, reads
//!   the server's RSS (`VmRSS` of `/proc/PID/status`) before and after, and gives the growth
//!   per subscription. Then sends `--messages M` messages one at a time, each after every
//!   stream has seen the previous one, and reports the fan-out latency (send start → the
//!   stream's `message_created`) over all (message, stream) pairs.
//!
//! - `reactions`: one subscriber and one client on a `local` session: `--rounds N` times, a
//!   ReactToMessage (alternating two emoji on one message) and the time until the subscriber
//!   sees its `message_updated`; then, in the same run, the same round trip for SendMessage →
//!   `message_created`, the baseline. Reports p50/p99 of each (hdrhistogram).
//!
//! RLIMIT_NOFILE is raised to its hard limit at start: 10,000 connections need 10,000 fds.
#[path = "../tests/api/common/synapse.rs"]
mod synapse;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatsync::grpc::pb;
use hdrhistogram::Histogram;
use pb::chat_sync_service_client::ChatSyncServiceClient;
use pb::subscribe_messages_response::Event;
use tokio::sync::Semaphore;
use tonic::transport::{Channel, Endpoint};

#[derive(clap::Parser)]
enum Command {
    /// Closed-loop SendMessage throughput and latency.
    Sends {
        /// The server's URL, or several, comma-separated (replicas of one database).
        #[arg(long, alias = "servers", value_delimiter = ',', required = true)]
        server: Vec<String>,
        /// A `local` session of that server, or several, comma-separated.
        #[arg(
            long,
            alias = "sessions",
            value_delimiter = ',',
            default_value = "bench"
        )]
        session: Vec<String>,
        /// Client i goes through server `(i / sessions) % servers` (every session through
        /// every server) instead of `i % servers`.
        #[arg(long)]
        mix: bool,
        /// Concurrent clients, each on its own connection.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Measured seconds (after one second of warm-up).
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        /// Chats the sends are spread over.
        #[arg(long, default_value_t = 1)]
        chats: usize,
    },
    /// Closed-loop posts to a Synapse room: Synapse's send rate.
    SynapseSends {
        /// The homeserver's directory (`scripts/synapse start DIR`); stopped at the end.
        #[arg(long)]
        dir: std::path::PathBuf,
        /// Concurrent clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Measured seconds (after one second of warm-up).
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
    },
    /// Many live subscriptions: time to ready, server memory, one message fanned out to all.
    Subscribers {
        /// The server's URL.
        #[arg(long)]
        server: String,
        /// A `local` session of that server.
        #[arg(long, default_value = "bench")]
        session: String,
        /// Live SubscribeMessages streams.
        #[arg(long, default_value_t = 10_000)]
        subscribers: usize,
        /// Connections the streams are spread over; 0 gives each stream its own.
        #[arg(long, default_value_t = 0)]
        connections: usize,
        /// Streams being opened at once at most.
        #[arg(long, default_value_t = 512)]
        concurrency: usize,
        /// The server's process id, to read its RSS.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Messages fanned out, one at a time.
        #[arg(long, default_value_t = 5)]
        messages: usize,
    },
    /// Reaction round trip (ReactToMessage → message_updated at a subscriber), with the send
    /// round trip of the same run as baseline.
    Reactions {
        /// The server's URL.
        #[arg(long)]
        server: String,
        /// A `local` session of that server.
        #[arg(long, default_value = "bench")]
        session: String,
        /// Round trips of each kind.
        #[arg(long, default_value_t = 1_000)]
        rounds: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    raise_fd_limit();
    match <Command as clap::Parser>::parse() {
        Command::Sends {
            server,
            session,
            mix,
            clients,
            secs,
            chats,
        } => sends(&server, &session, mix, clients, secs, chats).await,
        Command::SynapseSends { dir, clients, secs } => synapse_sends(&dir, clients, secs).await,
        Command::Subscribers {
            server,
            session,
            subscribers,
            connections,
            concurrency,
            server_pid,
            messages,
        } => {
            let setup = SubscribersSetup {
                server,
                session,
                subscribers,
                connections,
                concurrency,
                server_pid,
                messages,
            };
            run_subscribers(setup).await
        }
        Command::Reactions {
            server,
            session,
            rounds,
        } => reactions(&server, &session, rounds).await,
    }
}

/// See the module docs (`reactions`).
async fn reactions(server: &str, session: &str, rounds: usize) -> anyhow::Result<()> {
    anyhow::ensure!(rounds > 0);
    let mut client = ChatSyncServiceClient::new(connect(server).await?);
    let mut subscriber = ChatSyncServiceClient::new(connect(server).await?);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let chat_id = format!("reactions-{run}");
    let target = client
        .send_message(pb::SendMessageRequest {
            session_id: session.to_owned(),
            chat_id: chat_id.clone(),
            text: "react to me".into(),
            client_message_id: format!("{run}-target"),
            ..Default::default()
        })
        .await?
        .into_inner()
        .message
        .ok_or_else(|| anyhow::anyhow!("no message"))?;
    let mut stream = subscriber
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: session.to_owned(),
            chat_ids: vec![chat_id.clone()],
            after_seq: None,
        })
        .await?
        .into_inner();
    // Waits for the next event of the wanted kind on the stream.
    async fn next_event(
        stream: &mut tonic::Streaming<pb::SubscribeMessagesResponse>,
        wanted: fn(&Event) -> bool,
    ) -> anyhow::Result<()> {
        loop {
            let next = stream
                .message()
                .await?
                .ok_or_else(|| anyhow::anyhow!("the subscription ended"))?;
            if next.event.as_ref().is_some_and(wanted) {
                return Ok(());
            }
        }
    }
    next_event(&mut stream, |e| matches!(e, Event::Ready(_))).await?;
    let mut reacted = histogram();
    for i in 0..rounds {
        let started = Instant::now();
        client
            .react_to_message(pb::ReactToMessageRequest {
                session_id: session.to_owned(),
                message_id: target.id,
                emoji: if i % 2 == 0 { "👍" } else { "❤️" }.into(),
                request_id: String::new(),
            })
            .await?;
        next_event(&mut stream, |e| matches!(e, Event::MessageUpdated(_))).await?;
        reacted.record(started.elapsed().as_micros() as u64)?;
    }
    let mut sent = histogram();
    for i in 0..rounds {
        let started = Instant::now();
        client
            .send_message(pb::SendMessageRequest {
                session_id: session.to_owned(),
                chat_id: chat_id.clone(),
                text: format!("baseline {i}"),
                client_message_id: format!("{run}-{i}"),
                ..Default::default()
            })
            .await?;
        next_event(&mut stream, |e| matches!(e, Event::MessageCreated(_))).await?;
        sent.record(started.elapsed().as_micros() as u64)?;
    }
    let q = |h: &Histogram<u64>, q: f64| ms(h.value_at_quantile(q));
    println!(
        "ReactToMessage -> message_updated, {rounds} rounds: p50 {:.3} ms, p99 {:.3} ms; \
         SendMessage -> message_created (baseline, same run): p50 {:.3} ms, p99 {:.3} ms",
        q(&reacted, 0.5),
        q(&reacted, 0.99),
        q(&sent, 0.5),
        q(&sent, 0.99)
    );
    println!(
        "RESULT kind=reactions rounds={rounds} react_p50_ms={:.3} react_p99_ms={:.3} send_p50_ms={:.3} send_p99_ms={:.3}",
        q(&reacted, 0.5),
        q(&reacted, 0.99),
        q(&sent, 0.5),
        q(&sent, 0.99)
    );
    Ok(())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 1,000 s, 3 significant digits.
    Histogram::new_with_bounds(1, 1_000_000_000, 3).expect("valid histogram bounds")
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1_000.0
}

async fn connect(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// Runs `clients` closed loops of `one_call` for one second of warm-up plus `secs`; returns
/// the calls answered in the measured time and their latencies.
async fn closed_loop<F, Fut>(clients: usize, secs: f64, one_call: F) -> (u64, Histogram<u64>)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let warm_up_end = Instant::now() + Duration::from_secs(1);
    let end = warm_up_end + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for client in 0..clients {
        let one_call = one_call.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = histogram();
            let mut counted = 0u64;
            let mut i = 0u64;
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                one_call(client, i).await?;
                i += 1;
                let done = Instant::now();
                if started >= warm_up_end && done <= end {
                    counted += 1;
                    latencies.record((done - started).as_micros().max(1) as u64)?;
                }
            }
            anyhow::Ok((counted, latencies))
        }));
    }
    let mut total = 0;
    let mut latencies = histogram();
    for task in tasks {
        match task.await {
            Ok(Ok((counted, histogram))) => {
                total += counted;
                latencies.add(&histogram).ok();
            }
            Ok(Err(error)) => eprintln!("client failed: {error}"),
            Err(error) => eprintln!("client task failed: {error}"),
        }
    }
    (total, latencies)
}

async fn sends(
    servers: &[String],
    sessions: &[String],
    mix: bool,
    clients: usize,
    secs: f64,
    chats: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(clients > 0 && secs > 0.0 && chats > 0);
    anyhow::ensure!(!servers.is_empty() && !sessions.is_empty());
    let (s, n) = (servers.len(), sessions.len());
    let server_of = |client: usize| if mix { (client / n) % s } else { client % s };
    let mut channels = Vec::with_capacity(clients);
    for client in 0..clients {
        channels.push(ChatSyncServiceClient::new(
            connect(&servers[server_of(client)]).await?,
        ));
    }
    let channels = Arc::new(channels);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let sessions: Arc<Vec<String>> = Arc::new(sessions.to_vec());
    let (count, latencies) = closed_loop(clients, secs, move |client, i| {
        let mut rpc = channels[client].clone();
        let request = pb::SendMessageRequest {
            session_id: sessions[client % n].clone(),
            chat_id: format!("load-{}", client % chats),
            text: format!("load message {i} from client {client}"),
            client_message_id: format!("{run}-{client}-{i}"),
            attachments: Vec::new(),
            ..Default::default()
        };
        async move {
            rpc.send_message(request).await?;
            Ok(())
        }
    })
    .await;
    let rate = count as f64 / secs;
    println!(
        "SendMessage, {clients} clients over {s} server(s) and {n} session(s), {secs} s: {rate:.0} sends/s; latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms(latencies.value_at_quantile(0.5)),
        ms(latencies.value_at_quantile(0.99)),
        ms(latencies.max())
    );
    println!(
        "RESULT kind=sends clients={clients} secs={secs} sends={count} rate={rate:.1} p50_ms={:.3} p99_ms={:.3} servers={s} sessions={n} mix={}",
        ms(latencies.value_at_quantile(0.5)),
        ms(latencies.value_at_quantile(0.99)),
        u8::from(mix),
    );
    Ok(())
}

async fn synapse_sends(dir: &std::path::Path, clients: usize, secs: f64) -> anyhow::Result<()> {
    anyhow::ensure!(clients > 0 && secs > 0.0);
    let homeserver = synapse::Homeserver::start(dir);
    let mut users = Vec::new();
    for _ in 0..clients.min(8) {
        users.push(homeserver.register("load").await);
    }
    let others: Vec<&synapse::MatrixUser> = users.iter().skip(1).collect();
    let room = users[0].create_room(Some("load"), &others).await;
    let users = Arc::new(users);
    let (count, latencies) = closed_loop(clients, secs, move |client, i| {
        let users = users.clone();
        let room = room.clone();
        async move {
            users[client % users.len()]
                .post(&room, &format!("load message {i} from client {client}"))
                .await;
            Ok(())
        }
    })
    .await;
    let rate = count as f64 / secs;
    println!(
        "Synapse PUT /send, {clients} clients, {secs} s: {rate:.1} sends/s; latency p50 {:.3} ms, p99 {:.3} ms",
        ms(latencies.value_at_quantile(0.5)),
        ms(latencies.value_at_quantile(0.99)),
    );
    println!(
        "RESULT kind=synapse_sends clients={clients} secs={secs} sends={count} rate={rate:.1} p50_ms={:.3} p99_ms={:.3}",
        ms(latencies.value_at_quantile(0.5)),
        ms(latencies.value_at_quantile(0.99)),
    );
    homeserver.stop();
    Ok(())
}

/// The message index a stream reports when it fails.
const FAILED: usize = usize::MAX;

struct SubscribersSetup {
    server: String,
    session: String,
    subscribers: usize,
    connections: usize,
    concurrency: usize,
    server_pid: Option<u32>,
    messages: usize,
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))
}

async fn run_subscribers(setup: SubscribersSetup) -> anyhow::Result<()> {
    let n = setup.subscribers;
    anyhow::ensure!(n > 0 && setup.concurrency > 0);
    let mut sender = ChatSyncServiceClient::new(connect(&setup.server).await?);
    let chat = "fan-room";
    // The chat exists before anyone subscribes; the server has served one call.
    sender
        .send_message(pb::SendMessageRequest {
            session_id: setup.session.clone(),
            chat_id: chat.into(),
            text: "warm-up".into(),
            client_message_id: uuid::Uuid::new_v4().to_string(),
            attachments: Vec::new(),
            ..Default::default()
        })
        .await?;
    let idle_kib = setup.server_pid.map(rss_kib).transpose()?;

    // Shared connections, when asked for; otherwise each stream connects on its own.
    let shared: Vec<Channel> = if setup.connections > 0 {
        let mut channels = Vec::with_capacity(setup.connections);
        for _ in 0..setup.connections {
            channels.push(connect(&setup.server).await?);
        }
        channels
    } else {
        Vec::new()
    };
    let base = Instant::now();
    // Per message, the send start in µs since `base`.
    let starts: Arc<Vec<std::sync::atomic::AtomicU64>> = Arc::new(
        (0..setup.messages)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect(),
    );
    // Each stream reports `ready` once, then (message index, latency µs) per message.
    let (events_tx, mut events_rx) =
        tokio::sync::mpsc::unbounded_channel::<(usize, Option<(usize, u64)>)>();
    let opening = Arc::new(Semaphore::new(setup.concurrency));
    let began = Instant::now();
    let mut streams = Vec::with_capacity(n);
    for s in 0..n {
        let permit = opening.clone().acquire_owned().await?;
        let channel = if shared.is_empty() {
            None
        } else {
            Some(shared[s % shared.len()].clone())
        };
        let (server, session) = (setup.server.clone(), setup.session.clone());
        let (events, starts) = (events_tx.clone(), starts.clone());
        streams.push(tokio::spawn(async move {
            let failed = events.clone();
            let outcome = async move {
                let channel = match channel {
                    Some(channel) => channel,
                    None => connect(&server).await?,
                };
                let mut client = ChatSyncServiceClient::new(channel);
                let mut stream = client
                    .subscribe_messages(pb::SubscribeMessagesRequest {
                        session_id: session,
                        chat_ids: Vec::new(),
                        after_seq: None,
                    })
                    .await?
                    .into_inner();
                let mut permit = Some(permit);
                while let Some(event) = stream.message().await? {
                    match event.event {
                        Some(Event::Ready(_)) => {
                            permit.take();
                            let _ = events.send((s, None));
                        }
                        Some(Event::MessageCreated(message)) => {
                            let received = base.elapsed().as_micros() as u64;
                            let Some(index) = message
                                .client_message_id
                                .strip_prefix("fan-")
                                .and_then(|rest| rest.rsplit('-').next())
                                .and_then(|i| i.parse::<usize>().ok())
                                .filter(|i| *i < starts.len())
                            else {
                                continue;
                            };
                            let start = starts[index].load(std::sync::atomic::Ordering::Acquire);
                            let _ = events.send((s, Some((index, received.saturating_sub(start)))));
                        }
                        _ => {}
                    }
                }
                anyhow::Ok(())
            }
            .await;
            if let Err(error) = &outcome {
                eprintln!("stream {s}: {error}");
                let _ = failed.send((s, Some((FAILED, 0))));
            }
            outcome
        }));
    }
    drop(events_tx);
    let (mut ready, mut failed) = (0, 0);
    while ready + failed < n {
        match events_rx.recv().await {
            Some((_, None)) => ready += 1,
            Some((_, Some((FAILED, _)))) => failed += 1,
            Some(_) => {}
            None => anyhow::bail!("every stream ended before all were ready"),
        }
    }
    anyhow::ensure!(failed == 0, "{failed} of {n} streams failed before ready");
    let ready_secs = began.elapsed().as_secs_f64();
    let connections = if setup.connections > 0 {
        setup.connections
    } else {
        n
    };
    println!("{n} streams over {connections} connections ready in {ready_secs:.2} s");
    // Let the server settle (allocations of the last streams) before reading its memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per_subscription = match (setup.server_pid, idle_kib) {
        (Some(pid), Some(idle)) => {
            let loaded = rss_kib(pid)?;
            let per = (loaded.saturating_sub(idle)) as f64 / n as f64;
            println!(
                "server RSS: idle {idle} KiB, with the streams {loaded} KiB: {per:.1} KiB a subscription"
            );
            Some((idle, loaded, per))
        }
        _ => None,
    };

    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut latencies = histogram();
    let mut missing = 0usize;
    for index in 0..setup.messages {
        let start = base.elapsed().as_micros() as u64;
        starts[index].store(start, std::sync::atomic::Ordering::Release);
        sender
            .send_message(pb::SendMessageRequest {
                session_id: setup.session.clone(),
                chat_id: chat.into(),
                text: format!("fan-out message {index}"),
                client_message_id: format!("fan-{run}-{index}"),
                attachments: Vec::new(),
                ..Default::default()
            })
            .await?;
        let mut seen = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while seen < n {
            match tokio::time::timeout_at(deadline, events_rx.recv()).await {
                Ok(Some((_, Some((i, latency))))) if i == index => {
                    seen += 1;
                    latencies.record(latency.max(1))?;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        missing += n - seen;
    }
    println!(
        "one message to {n} streams, {} messages: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {missing} missing",
        setup.messages,
        ms(latencies.value_at_quantile(0.5)),
        ms(latencies.value_at_quantile(0.99)),
        ms(latencies.max()),
    );
    let (idle, loaded, per) = per_subscription.unwrap_or((0, 0, 0.0));
    println!(
        "RESULT kind=subscribers subscribers={n} connections={connections} ready_s={ready_secs:.3} idle_kib={idle} loaded_kib={loaded} per_sub_kib={per:.2} fan_p50_ms={:.2} fan_p99_ms={:.2} fan_max_ms={:.2} missing={missing}",
        ms(latencies.value_at_quantile(0.5)),
        ms(latencies.value_at_quantile(0.99)),
        ms(latencies.max()),
    );
    for stream in streams {
        stream.abort();
    }
    Ok(())
}

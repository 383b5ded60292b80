//! Matrix benchmark: backfill rate from a real Synapse into SQLite, next to Synapse's own rate
//! at serving the same `/messages` pages, and the latency from a Matrix post to a chatsync
//! subscriber.
//!
//! Usage: `cargo run --release --example matrix_bench -- [--messages N] [--posts N] [--runs N]`
//! (defaults: a room of 5,000 messages, 200 posts, 3 runs).
//!
//! - Synapse runs from `scripts/synapse` in `target/synapse-bench` (started if needed). Two
//!   users are registered with the shared secret (`scripts/synapse register`); one creates a
//!   room with the other and posts N messages, 16 in flight.
//! - Synapse's rate: the chatsync user pages the whole room with `GET /messages?dir=b` and
//!   the source's page size, timed from the first request to the last answer; median of runs.
//! - chatsync's rate: per run, a fresh SQLite file and the real server in this process
//!   (`Application::build`, as the tests start it) with one `matrix` session; SyncChats with
//!   `limit_per_chat = 0`, timed from the request to the COMPLETED frame; median of runs.
//! - Latency: with a live subscriber on the same server, the other user posts one message at a
//!   time; each is timed from just before the PUT to its `message_created` event.
#[path = "../tests/api/common/synapse.rs"]
mod synapse;

use std::path::Path;
use std::time::{Duration, Instant};

use chatsync::config::{Config, SessionConfig};
use chatsync::grpc::pb;
use chatsync::server::Application;
use pb::chat_sync_service_client::ChatSyncServiceClient;
use pb::subscribe_messages_response::Event;
use synapse::{Homeserver, MatrixUser};
use tokio::sync::oneshot;

const SESSION: &str = "bench";

/// Backfill rate and post → subscriber latency against a real Synapse.
#[derive(clap::Parser)]
struct Args {
    /// Messages in the backfilled room.
    #[arg(long, default_value_t = 5_000)]
    messages: usize,
    /// Posts timed for the latency figures.
    #[arg(long, default_value_t = 200)]
    posts: usize,
    /// Backfill runs (the figures are medians).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// A logged-in user registered with the shared secret.
async fn registered(hs: &Homeserver, name: &str) -> anyhow::Result<MatrixUser> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = std::process::Command::new(root.join("scripts/synapse"))
        .args([
            "register",
            &hs.dir.display().to_string(),
            name,
            "bench-password",
        ])
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "register: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout)?.trim().to_owned();
    Ok(MatrixUser::from_token(
        &hs.url,
        &format!("@{name}:localhost"),
        &token,
    ))
}

/// The real server with one `matrix` session for `user` over a fresh SQLite file.
async fn server(
    dir: &Path,
    hs: &Homeserver,
    user: &MatrixUser,
) -> anyhow::Result<(
    ChatSyncServiceClient<tonic::transport::Channel>,
    oneshot::Sender<()>,
)> {
    let token_file = dir.join("token");
    std::fs::write(&token_file, &user.token)?;
    let mut settings = serde_json::Map::new();
    settings.insert("homeserver".into(), hs.url.clone().into());
    settings.insert("user_id".into(), user.user_id.clone().into());
    settings.insert(
        "access_token_file".into(),
        token_file.display().to_string().into(),
    );
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        database_url: format!("sqlite://{}", dir.join("chatsync.db").display()),
        sessions: vec![SessionConfig {
            id: SESSION.into(),
            source: "matrix".into(),
            settings,
        }],
        ..Config::default()
    };
    let app = Application::build(config).await?;
    let url = format!("http://{}", app.local_addr());
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let client = ChatSyncServiceClient::connect(url).await?;
    Ok((client, stop))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let hs = Homeserver::start(&root.join("target/synapse-bench"));
    let me = registered(&hs, "bench-me").await?;
    let bob = registered(&hs, "bench-bob").await?;
    println!("Synapse at {}; posting {} messages…", hs.url, args.messages);
    let room = me.create_room(Some("Benchmark"), &[&bob]).await;
    let started = Instant::now();
    let mut posted = 0;
    while posted < args.messages {
        let batch = (args.messages - posted).min(16);
        let mut tasks = Vec::new();
        for i in posted..posted + batch {
            let (bob, room) = (bob.clone(), room.clone());
            tasks.push(tokio::spawn(async move {
                bob.post(&room, &format!("benchmark message {i}")).await
            }));
        }
        for task in tasks {
            task.await?;
        }
        posted += batch;
    }
    println!("posted in {:.1} s", started.elapsed().as_secs_f64());

    let mut synapse_rates = Vec::new();
    let mut chatsync_rates = Vec::new();
    let page = chatsync::sources::matrix::PAGE_SIZE;
    for run in 1..=args.runs {
        let started = Instant::now();
        let events = me.count_messages(&room, page).await;
        let synapse_secs = started.elapsed().as_secs_f64();
        synapse_rates.push(events as f64 / synapse_secs);

        let dir = tempfile::tempdir()?;
        let (mut client, stop) = server(dir.path(), &hs, &me).await?;
        let started = Instant::now();
        let mut stream = client
            .sync_chats(pb::SyncChatsRequest {
                session_id: SESSION.into(),
                limit_per_chat: Some(0),
                since: None,
            })
            .await?
            .into_inner();
        let mut total = 0;
        while let Some(frame) = stream.message().await? {
            total = frame.progress.map_or(total, |p| p.total_messages_synced);
        }
        let chatsync_secs = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            total as usize == args.messages,
            "stored {total} of {} messages",
            args.messages
        );
        chatsync_rates.push(total as f64 / chatsync_secs);
        let _ = stop.send(());
        println!(
            "run {run}: Synapse /messages {events} events in {synapse_secs:.2} s ({:.0}/s); chatsync backfill {total} messages in {chatsync_secs:.2} s ({:.0}/s)",
            events as f64 / synapse_secs,
            total as f64 / chatsync_secs
        );
    }
    let synapse_rate = median(&mut synapse_rates);
    let chatsync_rate = median(&mut chatsync_rates);
    println!(
        "backfill of {} messages: chatsync median {chatsync_rate:.0} msg/s; Synapse /messages median {synapse_rate:.0} events/s; ratio {:.2}",
        args.messages,
        chatsync_rate / synapse_rate
    );

    // Latency: one post at a time, to a live subscriber.
    let dir = tempfile::tempdir()?;
    let (mut client, stop) = server(dir.path(), &hs, &me).await?;
    loop {
        let status = client
            .get_sync_status(pb::GetSyncStatusRequest {
                session_id: SESSION.into(),
            })
            .await?
            .into_inner();
        if status.source_state == pb::SourceState::Up as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stream = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: SESSION.into(),
            chat_ids: vec![],
            after_seq: None,
        })
        .await?
        .into_inner();
    let mut latencies = Vec::new();
    for i in 0..args.posts {
        let text = format!("latency probe {i}");
        let sent = Instant::now();
        bob.post(&room, &text).await;
        loop {
            let event = stream
                .message()
                .await?
                .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
            if matches!(&event.event, Some(Event::MessageCreated(m)) if m.text == text) {
                latencies.push(sent.elapsed());
                break;
            }
        }
    }
    latencies.sort();
    println!(
        "post → subscriber latency over {} posts: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    let _ = stop.send(());
    hs.stop();
    Ok(())
}

//! Mirror benchmark (issue 21): the time and peak RSS of a first `chatsync mirror --once` of a
//! synced session (50 messages per chat, and everything), and the catch-up rate after an
//! offline gap, in events/s.
//!
//! Usage: `cargo build --release && cargo run --release --example mirror_bench --
//! [--binary target/release/chatsync] [--chats 200] [--per-chat 500] [--gap 10000] [--runs 3]`.
//!
//! - The real server runs in this process (`Application::build` on `127.0.0.1:0`, a fresh
//!   SQLite file in a temp dir) with a `whatsapp-export` session `corpus` over `--chats`
//!   generated Android exports of `--per-chat` messages each (synced whole first), and a
//!   `local` session `notes`.
//! - The mirror is the real binary, a child process: each run times it from spawn to exit and
//!   reads its peak RSS (`ru_maxrss`) from `wait4`.
//! - First mirror: `mirror corpus --to NEW.db --once --limit-per-chat 50`, then `… 1000` (every
//!   message: no chat has more than 1,000), each into a new file.
//! - Catch-up: `notes` is mirrored once; then `--gap` messages are sent (16 concurrent
//!   senders) while no mirror runs; then `mirror notes --once` resumes from the stored seq. The
//!   rate is events applied / wall time of that run (process start included).
//! - Prints each run and the median of `--runs`.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chatsync::config::{Config, SessionConfig};
use chatsync::grpc::pb;
use chatsync::server::Application;
use pb::chat_sync_service_client::ChatSyncServiceClient;
use tokio::sync::oneshot;

#[derive(clap::Parser)]
struct Args {
    /// The chatsync binary to run as the mirror.
    #[arg(long, default_value = "target/release/chatsync")]
    binary: PathBuf,
    /// Generated chats in the `corpus` session.
    #[arg(long, default_value_t = 200)]
    chats: usize,
    /// Messages per chat (at most 1,000, so `--limit-per-chat 1000` is everything).
    #[arg(long, default_value_t = 500)]
    per_chat: usize,
    /// Changes made while the mirror is offline.
    #[arg(long, default_value_t = 10_000)]
    gap: usize,
    /// Runs of each measurement.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// One finished mirror process: wall time, peak RSS and its summary line.
struct Run {
    wall: Duration,
    max_rss_kib: i64,
    summary: serde_json::Value,
}

/// Runs `binary mirror SESSION --to FILE --server URL --once --json ARGS` and waits for it
/// with `wait4`, for its peak RSS.
fn mirror(
    binary: &Path,
    url: &str,
    session: &str,
    file: &Path,
    args: &[&str],
) -> anyhow::Result<Run> {
    use std::io::Read;
    let started = Instant::now();
    let mut child = std::process::Command::new(binary)
        .args(["mirror", session, "--to"])
        .arg(file)
        .args(["--server", url, "--once", "--json"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stdout)?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for the child we spawned (not waited for elsewhere).
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    anyhow::ensure!(pid > 0, "wait4 failed");
    anyhow::ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the mirror failed"
    );
    Ok(Run {
        wall,
        max_rss_kib: usage.ru_maxrss,
        summary: serde_json::from_str(stdout.trim())?,
    })
}

fn median<T: PartialOrd + Copy>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    values[values.len() / 2]
}

/// An Android export of `n` messages, one a minute.
fn write_chat(dir: &Path, chat: usize, n: usize) -> anyhow::Result<()> {
    let mut text = String::new();
    let start = chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
        .and_then(|d| d.and_hms_opt(8, 0, 0))
        .expect("date");
    for i in 0..n {
        let at = start + chrono::Duration::minutes(i as i64);
        let sender = if i % 2 == 0 { "Ana" } else { "Ben" };
        text.push_str(&format!(
            "{} - {sender}: chat {chat} message {i}, some words to carry a typical length\n",
            at.format("%d/%m/%Y, %H:%M")
        ));
    }
    std::fs::write(
        dir.join(format!("WhatsApp Chat with Person {chat}.txt")),
        text,
    )?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Args = clap::Parser::parse();
    anyhow::ensure!(args.per_chat <= 1000 && args.runs > 0);
    anyhow::ensure!(
        args.binary.is_file(),
        "no binary at {}",
        args.binary.display()
    );
    let dir = tempfile::tempdir()?;
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(&exports)?;
    for chat in 0..args.chats {
        write_chat(&exports, chat, args.per_chat)?;
    }
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        database_url: format!("sqlite://{}", dir.path().join("server.db").display()),
        sessions: vec![
            SessionConfig {
                id: "corpus".into(),
                source: "whatsapp-export".into(),
                settings: serde_json::json!({ "path": exports })
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            },
            SessionConfig {
                id: "notes".into(),
                source: "local".into(),
                settings: serde_json::Map::new(),
            },
        ],
        ..Config::default()
    };
    let app = Application::build(config).await?;
    let url = format!("http://{}", app.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let mut client = ChatSyncServiceClient::connect(url.clone()).await?;
    let started = Instant::now();
    let mut sync = client
        .sync_chats(pb::SyncChatsRequest {
            session_id: "corpus".into(),
            limit_per_chat: Some(0),
            since: None,
        })
        .await?
        .into_inner();
    while sync.message().await?.is_some() {}
    let status = client
        .get_sync_status(pb::GetSyncStatusRequest {
            session_id: "corpus".into(),
        })
        .await?
        .into_inner();
    println!(
        "server: {} chats, {} messages synced in {:.1} s",
        status.chat_count,
        status.message_count,
        started.elapsed().as_secs_f64()
    );

    for limit in ["50", "1000"] {
        let mut walls = Vec::new();
        let mut rss = Vec::new();
        for run in 0..args.runs {
            let file = dir.path().join(format!("first-{limit}-{run}.db"));
            let result = mirror(
                &args.binary,
                &url,
                "corpus",
                &file,
                &["--limit-per-chat", limit],
            )?;
            println!(
                "first mirror, {limit} per chat, run {run}: {:.2} s, peak RSS {:.1} MiB, {}",
                result.wall.as_secs_f64(),
                result.max_rss_kib as f64 / 1024.0,
                result.summary
            );
            walls.push(result.wall.as_secs_f64());
            rss.push(result.max_rss_kib);
        }
        println!(
            "first mirror, {limit} per chat: median {:.2} s, peak RSS {:.1} MiB (min..max {:.2}..{:.2} s)",
            median(walls.clone()),
            median(rss) as f64 / 1024.0,
            walls.iter().cloned().fold(f64::MAX, f64::min),
            walls.iter().cloned().fold(0.0, f64::max),
        );
    }

    let mut rates = Vec::new();
    for run in 0..args.runs {
        let file = dir.path().join(format!("notes-{run}.db"));
        client
            .send_message(pb::SendMessageRequest {
                session_id: "notes".into(),
                chat_id: "general".into(),
                text: "before the gap".into(),
                client_message_id: format!("start-{run}"),
                ..Default::default()
            })
            .await?;
        mirror(&args.binary, &url, "notes", &file, &[])?;
        let per_sender = args.gap / 16;
        let senders: Vec<_> = (0..16)
            .map(|s| {
                let mut client = client.clone();
                tokio::spawn(async move {
                    for i in 0..per_sender {
                        client
                            .send_message(pb::SendMessageRequest {
                                session_id: "notes".into(),
                                chat_id: format!("room{s}"),
                                text: format!("gap message {i} of sender {s}"),
                                client_message_id: format!("gap-{run}-{s}-{i}"),
                                ..Default::default()
                            })
                            .await?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for sender in senders {
            sender.await??;
        }
        let result = mirror(&args.binary, &url, "notes", &file, &[])?;
        anyhow::ensure!(
            result.summary["snapshot"] == false,
            "the resume took a snapshot"
        );
        let events = result.summary["events"].as_u64().unwrap_or(0);
        let rate = events as f64 / result.wall.as_secs_f64();
        println!(
            "catch-up run {run}: {events} events in {:.2} s = {rate:.0} events/s, peak RSS {:.1} MiB",
            result.wall.as_secs_f64(),
            result.max_rss_kib as f64 / 1024.0
        );
        rates.push(rate);
    }
    println!(
        "catch-up: median {:.0} events/s (min..max {:.0}..{:.0})",
        median(rates.clone()),
        rates.iter().cloned().fold(f64::MAX, f64::min),
        rates.iter().cloned().fold(0.0, f64::max)
    );
    let _ = stop.send(());
    server.await??;
    Ok(())
}

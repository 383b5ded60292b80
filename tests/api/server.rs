//! The server as a process: health, heartbeats, graceful shutdown with subscribers connected,
//! the loopback rule without tokens, crash recovery (INTERRUPTED), and the CLI.

use std::process::Stdio;
use std::time::Instant;

use crate::common::*;
use chatsync::grpc::pb;
use pb::subscribe_messages_response::Event;
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn health(app: &TestApp, service: &str) -> Result<i32, tonic::Status> {
    HealthClient::new(app.channel().await)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_ends_open_streams_and_stops() {
    let backend = Backend::sqlite();
    let app = TestApp::spawn(&backend, vec![local_session("n")]).await;
    assert_eq!(
        health(&app, "chatsync.v1.ChatSyncService")
            .await
            .expect("health"),
        ServingStatus::Serving as i32
    );
    assert_eq!(
        health(&app, "").await.expect("health"),
        ServingStatus::Serving as i32
    );

    let mut client = app.client().await;
    let mut health_watch = HealthClient::new(app.channel().await)
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "chatsync.v1.ChatSyncService".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(
        health_watch
            .message()
            .await
            .expect("watch")
            .map(|r| r.status),
        Some(ServingStatus::Serving as i32)
    );
    let mut subscribers = Vec::new();
    for _ in 0..5 {
        let mut stream = client
            .subscribe_messages(pb::SubscribeMessagesRequest {
                session_id: "n".into(),
                chat_ids: vec![],
                after_seq: Some(0),
            })
            .await
            .expect("subscribe")
            .into_inner();
        let ready = stream.message().await.expect("ready").expect("ready");
        assert!(matches!(ready.event, Some(Event::Ready(_))));
        subscribers.push(stream);
    }

    // Five subscriptions stay open: the server must end them rather than wait for them.
    tokio::time::timeout(HANG_GUARD, app.stop())
        .await
        .expect("the server stops with subscriptions open");
    assert_eq!(
        health_watch
            .message()
            .await
            .ok()
            .flatten()
            .map(|r| r.status),
        Some(ServingStatus::NotServing as i32),
        "health turns NOT_SERVING before the server stops"
    );
    for mut stream in subscribers {
        let end = tokio::time::timeout(HANG_GUARD, stream.message())
            .await
            .expect("stream ends");
        match end {
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
            Ok(None) => {}
            Ok(Some(event)) => panic!("unexpected event after shutdown: {event:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_carry_heartbeats_at_the_configured_interval() {
    let backend = Backend::sqlite();
    let app = TestApp::spawn_with(&backend, vec![local_session("n")], |config| {
        config.heartbeat_secs = 1
    })
    .await;
    let mut client = app.client().await;
    let mut stream = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: "n".into(),
            chat_ids: vec![],
            after_seq: None,
        })
        .await
        .expect("subscribe")
        .into_inner();
    let first = stream.message().await.expect("event").expect("event");
    assert!(
        matches!(first.event, Some(Event::Ready(_))),
        "live subscriptions also mark ready"
    );
    let second = tokio::time::timeout(HANG_GUARD, stream.message())
        .await
        .expect("a heartbeat follows ready")
        .expect("event")
        .expect("event");
    match second.event {
        Some(Event::Heartbeat(heartbeat)) => assert!(heartbeat.server_time.is_some()),
        other => panic!("expected a heartbeat, got {other:?}"),
    }
}

#[tokio::test]
async fn without_tokens_the_server_refuses_non_loopback_addresses() {
    let backend = Backend::sqlite();
    let config = chatsync::config::Config {
        listen: "0.0.0.0:0".parse().expect("address"),
        database_url: backend.database_url.clone(),
        sessions: vec![local_session("n")],
        ..Default::default()
    };
    let error = match chatsync::server::Application::build(config).await {
        Ok(_) => panic!("must refuse"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("refusing to listen on 0.0.0.0"), "{error}");
    assert!(error.contains("tokens"), "says why: {error}");
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_chatsync")
}

/// Starts `chatsync serve` with `config` (TOML) and waits until it listens.
async fn serve(dir: &std::path::Path, config: &str) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let path = dir.join("chatsync.toml");
    std::fs::write(&path, format!("listen = \"127.0.0.1:{port}\"\n{config}")).expect("config");
    let child = tokio::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chatsync serve");
    let url = format!("http://127.0.0.1:{port}");
    eventually("the server to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    (child, url)
}

async fn cli(url: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(binary())
        .args(args)
        .args(["--server", url])
        .output()
        .await
        .expect("run the CLI")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cut_off_by_a_crash_is_interrupted_at_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(&exports).expect("dir");
    for i in 0..60 {
        write_android_chat(&exports, &format!("Chat {i:03}"), "c", 2_000);
    }
    let config = format!(
        "database_url = \"sqlite://{}\"\n[[sessions]]\nid = \"s\"\nsource = \"whatsapp-export\"\npath = \"{}\"\n",
        dir.path().join("chatsync.db").display(),
        exports.display()
    );
    let (mut server, url) = serve(dir.path(), &config).await;
    let mut client = pb::chat_sync_service_client::ChatSyncServiceClient::connect(url.clone())
        .await
        .expect("connect");
    let mut stream = client
        .sync_chats(pb::SyncChatsRequest {
            session_id: "s".into(),
            limit_per_chat: Some(0),
            since: None,
        })
        .await
        .expect("sync")
        .into_inner();
    // Wait until the run has stored something, then kill the server without warning.
    loop {
        let frame = stream
            .message()
            .await
            .expect("frame")
            .expect("frame")
            .progress
            .expect("progress");
        if frame.total_messages_synced > 0 {
            break;
        }
    }
    server.start_kill().expect("kill");
    server.wait().await.expect("wait");

    let (_server, url) = serve(dir.path(), &config).await;
    let output = cli(&url, &["status", "s", "--json"]).await;
    assert!(output.status.success(), "{output:?}");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(status["state"], "SYNC_STATE_INTERRUPTED", "{status}");
    let stored: u64 = status["messageCount"]
        .as_str()
        .and_then(|count| count.parse().ok())
        .expect("count");
    assert!(stored > 0 && stored < 120_000, "a partial run: {stored}");

    // Syncing again completes the history without duplicating what the cut-off run stored.
    let output = cli(&url, &["sync", "s", "--all", "--json"]).await;
    assert!(output.status.success(), "{output:?}");
    let output = cli(&url, &["status", "s", "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(status["state"], "SYNC_STATE_SUCCEEDED");
    assert_eq!(status["messageCount"], "120000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_syncs_sends_lists_and_subscribes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "database_url = \"sqlite://{}\"\n\
         [[tokens]]\ntoken = \"cli-secret-token\"\nsessions = [\"*\"]\n\
         [[sessions]]\nid = \"demo\"\nsource = \"whatsapp-export\"\npath = \"{}\"\n\
         [[sessions]]\nid = \"notes\"\nsource = \"local\"\n",
        dir.path().join("chatsync.db").display(),
        samples().join("whatsapp").display()
    );
    let (_server, url) = serve(dir.path(), &config).await;

    let denied = cli(&url, &["status", "demo"]).await;
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("Unauthenticated"),
        "{denied:?}"
    );

    let with_token = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(["--token".into(), "cli-secret-token".into()]);
        all
    };
    let run = |args: Vec<String>| {
        let url = url.clone();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let output = cli(&url, &refs).await;
            assert!(
                output.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
    };

    let summary = run(with_token(&["sync", "demo", "--all"])).await;
    assert!(
        summary.contains("synced demo: 3 chats, 30 new messages, 0 unplaced lines, 0 failed chats"),
        "{summary}"
    );
    let frames = run(with_token(&["sync", "demo", "--json"])).await;
    let stages: Vec<String> = frames
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json line")["stage"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(
        stages.first().map(String::as_str),
        Some("SYNC_STAGE_STARTED")
    );
    assert_eq!(
        stages.last().map(String::as_str),
        Some("SYNC_STAGE_COMPLETED")
    );

    let chats = run(with_token(&["chats", "demo"])).await;
    assert_eq!(chats.lines().count(), 3);
    assert!(chats.contains("Weekend Hike"));

    // A subscriber in another process sees a message sent from the CLI.
    let mut subscriber = tokio::process::Command::new(binary())
        .args([
            "subscribe",
            "notes",
            "--json",
            "--server",
            &url,
            "--token",
            "cli-secret-token",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("subscribe");
    let mut lines = BufReader::new(subscriber.stdout.take().expect("stdout")).lines();
    let first = lines.next_line().await.expect("line").expect("line");
    assert!(first.contains("\"ready\""), "{first}");
    let started = Instant::now();
    let send_args = with_token(&[
        "send",
        "notes",
        "general",
        "hello from the cli",
        "--client-message-id",
        "c1",
        "--json",
    ]);
    let sent = run(send_args.clone()).await;
    let sent: serde_json::Value = serde_json::from_str(sent.trim()).expect("json");
    assert_eq!(sent["message"]["status"], "MESSAGE_STATUS_SENT");
    assert_eq!(sent["duplicate"], false);
    assert_eq!(sent["message"]["sessionId"], "notes", "every field: {sent}");
    assert_eq!(
        sent["message"]["attachments"],
        serde_json::json!([]),
        "{sent}"
    );
    let mut saw = None;
    while saw.is_none() {
        let line = tokio::time::timeout(HANG_GUARD, lines.next_line())
            .await
            .expect("event in time")
            .expect("line")
            .expect("line");
        let event: serde_json::Value = serde_json::from_str(&line).expect("json");
        if let Some(message) = event.get("messageCreated") {
            saw = Some(message.clone());
        }
    }
    assert_eq!(saw.expect("message")["text"], "hello from the cli");
    eprintln!("CLI send to CLI subscriber: {:?}", started.elapsed());
    let again = run(send_args).await;
    assert!(again.contains("\"duplicate\":true"), "{again}");

    let messages = run(with_token(&[
        "messages", "notes", "--chat", "general", "--json",
    ]))
    .await;
    assert_eq!(messages.lines().count(), 1, "idempotent: one message");
}

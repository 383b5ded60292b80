//! grpc-web and CORS from outside: `buf curl --protocol grpcweb` (npm `@bufbuild/buf`) against
//! SyncChats and SubscribeMessages over HTTP/1.1, using the server's reflection for the
//! schema, and CORS preflights from an allowed and a refused origin.
//!
//! `buf` is found as `$CHATSYNC_BUF`, `.tools/node_modules/.bin/buf` (installed by
//! `scripts/test`), or on PATH (`common::buf`). Without it the buf tests fail, or are skipped
//! with `CHATSYNC_ALLOW_SKIP=1`.

use std::process::Stdio;

use crate::common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// `buf curl --protocol grpcweb` of one RPC of the service, with `data` as the JSON request;
/// the schema comes from the server's reflection.
fn buf_curl(buf: &std::path::Path, url: &str, rpc: &str, data: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(buf);
    command
        .args(["curl", "--protocol", "grpcweb", "--data", data])
        .arg(format!("{url}/chatsync.v1.ChatSyncService/{rpc}"));
    command
}

fn json_stream(text: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .expect("buf curl prints JSON objects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_chats_over_grpc_web_with_buf_curl() {
    let Some(buf) = buf() else { return };
    let backend = Backend::sqlite();
    let app = TestApp::spawn(
        &backend,
        vec![whatsapp_session("demo", &samples().join("whatsapp"))],
    )
    .await;
    let output = buf_curl(
        &buf,
        &app.url,
        "SyncChats",
        r#"{"session_id":"demo","limit_per_chat":0}"#,
    )
    .output()
    .await
    .expect("run buf curl");
    assert!(
        output.status.success(),
        "buf curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let frames = json_stream(&String::from_utf8_lossy(&output.stdout));
    let stages: Vec<&str> = frames
        .iter()
        .filter_map(|f| f["progress"]["stage"].as_str())
        .collect();
    assert_eq!(stages.first(), Some(&"SYNC_STAGE_STARTED"));
    assert_eq!(stages.last(), Some(&"SYNC_STAGE_COMPLETED"));
    assert_eq!(stages.len(), 8);
    let last = &frames[frames.len() - 1]["progress"];
    assert_eq!(last["nChats"], 3);
    // proto3 JSON writes 64-bit integers as strings.
    assert_eq!(last["totalMessagesSynced"], "30");

    // Errors arrive as typed statuses over grpc-web too.
    let output = buf_curl(&buf, &app.url, "GetSyncStatus", r#"{"session_id":"nope"}"#)
        .output()
        .await
        .expect("run buf curl");
    assert!(!output.status.success());
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(printed.contains("not_found"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_messages_over_grpc_web_with_buf_curl() {
    let Some(buf) = buf() else { return };
    let backend = Backend::sqlite();
    let app = TestApp::spawn(&backend, vec![local_session("n")]).await;
    let mut client = app.client().await;
    send(&mut client, "n", "room", "before", "k1")
        .await
        .expect("send");

    let mut child = buf_curl(
        &buf,
        &app.url,
        "SubscribeMessages",
        r#"{"session_id":"n","after_seq":0}"#,
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .kill_on_drop(true)
    .spawn()
    .expect("spawn buf curl");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut text = String::new();
    let mut sent_live = false;
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    // Objects are pretty-printed; a top-level one ends with a line holding only `}`.
    while !(text.contains("after ready") && text.ends_with("\n}\n")) {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("events in time")
            .expect("read")
            .expect("stream open");
        text.push_str(&line);
        text.push('\n');
        if !sent_live && text.contains("\"ready\"") {
            sent_live = true;
            send(&mut client, "n", "room", "after ready", "k2")
                .await
                .expect("send");
        }
    }
    child.kill().await.ok();
    let events = json_stream(&text);
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e.as_object())
        .filter_map(|e| e.keys().find(|k| *k != "seq").map(String::as_str))
        .collect();
    assert_eq!(
        kinds,
        vec!["chatUpdated", "messageCreated", "ready", "messageCreated"],
        "replay, ready, then live"
    );
    assert_eq!(events[2]["ready"]["headSeq"], "2");
}

async fn preflight(addr: std::net::SocketAddr, origin: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "OPTIONS /chatsync.v1.ChatSyncService/GetSyncStatus HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\n\
         Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type,x-grpc-web,authorization\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response.to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_passes_for_allowed_origins_only() {
    let backend = Backend::sqlite();
    let app = TestApp::spawn_with(&backend, vec![local_session("n")], |config| {
        config.cors_allowed_origins = vec!["https://inbox.example".into()];
    })
    .await;
    let allowed = preflight(app.addr, "https://inbox.example").await;
    assert!(
        allowed.contains("access-control-allow-origin: https://inbox.example"),
        "{allowed}"
    );
    assert!(
        allowed.contains("authorization"),
        "the bearer header may be sent: {allowed}"
    );
    let refused = preflight(app.addr, "https://evil.example").await;
    assert!(
        !refused.contains("access-control-allow-origin"),
        "{refused}"
    );

    // A real grpc-web call from the allowed origin exposes the gRPC status headers.
    // GetSyncStatusRequest { session_id: "n" }
    let response = grpc_web_post(
        app.addr,
        "/chatsync.v1.ChatSyncService/GetSyncStatus",
        Some("https://inbox.example"),
        &[0x0a, 0x01, b'n'],
    )
    .await;
    assert!(response.starts_with("http/1.1 200"), "{response}");
    assert!(
        response.contains("access-control-expose-headers"),
        "{response}"
    );
    assert!(response.contains("grpc-status"), "{response}");
}

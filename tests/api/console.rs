//! What the web console needs from the API, through real gRPC: ListSessions (scoped by the
//! caller's token), ListMessages paging backwards with `before_seq`, and the page itself on
//! the API's port next to native gRPC and grpc-web.

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::metadata::MetadataValue;

use chatsync::grpc::pb;

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).expect("header"),
    );
    request
}

fn ids(response: &pb::ListSessionsResponse) -> Vec<(&str, &str)> {
    response
        .sessions
        .iter()
        .map(|s| (s.session_id.as_str(), s.source.as_str()))
        .collect()
}

async fn list_sessions_names_every_session_with_its_source(backend: Backend) {
    let app = TestApp::spawn(
        &backend,
        vec![
            local_session("notes"),
            whatsapp_session("demo", &samples().join("whatsapp")),
        ],
    )
    .await;
    let mut client = app.client().await;
    let response = client
        .list_sessions(pb::ListSessionsRequest {})
        .await
        .expect("ListSessions")
        .into_inner();
    assert_eq!(
        ids(&response),
        vec![("demo", "whatsapp-export"), ("notes", "local")],
        "sorted by id, with source kinds"
    );
}

async fn list_sessions_shows_only_the_tokens_scope(backend: Backend) {
    let app = TestApp::spawn_with(
        &backend,
        vec![
            local_session("family"),
            local_session("work"),
            local_session("bots"),
        ],
        |config| {
            config.tokens = vec![
                token("every-session-token", &["*"]),
                token("family-only-token", &["family", "gone"]),
            ];
        },
    )
    .await;
    let mut client = app.client().await;

    let missing = client
        .list_sessions(pb::ListSessionsRequest {})
        .await
        .expect_err("no token");
    assert_eq!(missing.code(), Code::Unauthenticated);
    let unknown = client
        .list_sessions(with_token(pb::ListSessionsRequest {}, "not-a-known-token"))
        .await
        .expect_err("unknown token");
    assert_eq!(unknown.code(), Code::Unauthenticated);

    let all = client
        .list_sessions(with_token(
            pb::ListSessionsRequest {},
            "every-session-token",
        ))
        .await
        .expect("wildcard token")
        .into_inner();
    assert_eq!(
        ids(&all),
        vec![("bots", "local"), ("family", "local"), ("work", "local")]
    );

    let scoped = client
        .list_sessions(with_token(pb::ListSessionsRequest {}, "family-only-token"))
        .await
        .expect("scoped token")
        .into_inner();
    assert_eq!(
        ids(&scoped),
        vec![("family", "local")],
        "only sessions in scope that exist"
    );
}

async fn page(
    client: &mut pb::chat_sync_service_client::ChatSyncServiceClient<tonic::transport::Channel>,
    chat_id: &str,
    after_seq: u64,
    before_seq: u64,
    limit: u32,
) -> pb::ListMessagesResponse {
    client
        .list_messages(pb::ListMessagesRequest {
            session_id: "n".into(),
            chat_id: chat_id.into(),
            after_seq,
            limit,
            before_seq,
        })
        .await
        .expect("ListMessages")
        .into_inner()
}

fn texts(page: &pb::ListMessagesResponse) -> Vec<&str> {
    page.messages.iter().map(|m| m.text.as_str()).collect()
}

async fn list_messages_pages_backwards_with_before_seq(backend: Backend) {
    let app = TestApp::spawn(&backend, vec![local_session("n")]).await;
    let mut client = app.client().await;
    // Interleave two chats so that a chat's seqs are not contiguous.
    for i in 1..=7 {
        send(&mut client, "n", "a", &format!("a{i}"), &format!("a{i}"))
            .await
            .expect("send a");
        send(&mut client, "n", "b", &format!("b{i}"), &format!("b{i}"))
            .await
            .expect("send b");
    }
    let all = all_messages(&mut client, "n", "a").await;
    assert_eq!(all.len(), 7);

    // The newest page: before_seq beyond the head (even u64::MAX) means "the latest".
    let newest = page(&mut client, "a", 0, u64::MAX, 3).await;
    assert_eq!(
        texts(&newest),
        vec!["a5", "a6", "a7"],
        "ascending seq order"
    );
    assert!(newest.has_more, "older messages exist");
    assert_eq!(
        newest.next_seq, newest.messages[0].seq,
        "cursor = the oldest returned"
    );

    let middle = page(&mut client, "a", 0, newest.next_seq, 3).await;
    assert_eq!(texts(&middle), vec!["a2", "a3", "a4"]);
    assert!(middle.has_more);

    let oldest = page(&mut client, "a", 0, middle.next_seq, 3).await;
    assert_eq!(texts(&oldest), vec!["a1"]);
    assert!(!oldest.has_more, "nothing older");

    let exact = page(&mut client, "a", 0, middle.next_seq, 1).await;
    assert_eq!(texts(&exact), vec!["a1"]);
    assert!(!exact.has_more, "a full page with nothing older says so");

    let none = page(&mut client, "a", 0, all[0].seq, 3).await;
    assert!(none.messages.is_empty());
    assert!(!none.has_more);
    assert_eq!(none.next_seq, all[0].seq, "an empty page keeps the cursor");

    // Every chat, and bounded below by after_seq.
    let both = page(&mut client, "", 0, u64::MAX, 4).await;
    assert_eq!(texts(&both), vec!["a6", "b6", "a7", "b7"]);
    let bounded = page(&mut client, "a", all[4].seq, u64::MAX, 10).await;
    assert_eq!(texts(&bounded), vec!["a6", "a7"]);
    assert!(
        !bounded.has_more,
        "has_more counts only messages above after_seq"
    );

    // Paging backwards through the whole chat sees every message exactly once.
    let mut seen = Vec::new();
    let mut before = u64::MAX;
    loop {
        let p = page(&mut client, "a", 0, before, 2).await;
        let mut texts: Vec<String> = p.messages.iter().map(|m| m.text.clone()).collect();
        texts.extend(seen);
        seen = texts;
        before = p.next_seq;
        if !p.has_more {
            break;
        }
    }
    let forward: Vec<String> = all.iter().map(|m| m.text.clone()).collect();
    assert_eq!(seen, forward);

    // Without before_seq, paging forward is unchanged.
    let forward_page = page(&mut client, "a", 0, 0, 3).await;
    assert_eq!(texts(&forward_page), vec!["a1", "a2", "a3"]);
    assert!(forward_page.has_more);
    assert_eq!(forward_page.next_seq, forward_page.messages[2].seq);

    // The same validation as paging forward.
    let too_big = client
        .list_messages(pb::ListMessagesRequest {
            session_id: "n".into(),
            chat_id: "a".into(),
            after_seq: 0,
            limit: 5000,
            before_seq: 10,
        })
        .await
        .expect_err("limit over the maximum");
    assert_eq!(too_big.code(), Code::InvalidArgument);
    let unknown_chat = client
        .list_messages(pb::ListMessagesRequest {
            session_id: "n".into(),
            chat_id: "nope".into(),
            after_seq: 0,
            limit: 0,
            before_seq: 10,
        })
        .await
        .expect_err("unknown chat");
    assert_eq!(unknown_chat.code(), Code::NotFound);
}

on_both_backends!(
    list_sessions_names_every_session_with_its_source,
    list_sessions_shows_only_the_tokens_scope,
    list_messages_pages_backwards_with_before_seq,
);

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_on_the_api_port() {
    let backend = Backend::sqlite();
    let app = TestApp::spawn(&backend, vec![local_session("n")]).await;

    let page = http_get(app.addr, "/").await;
    let head = page.to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{page}");
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{page}"
    );
    assert!(
        page.contains("<script type=\"module\" src=\"/app.js\">"),
        "{page}"
    );

    let script = http_get(app.addr, "/app.js").await.to_lowercase();
    assert!(script.starts_with("http/1.1 200"));
    assert!(script.contains("content-type: text/javascript; charset=utf-8"));
    let style = http_get(app.addr, "/app.css").await.to_lowercase();
    assert!(style.starts_with("http/1.1 200"));
    assert!(style.contains("content-type: text/css; charset=utf-8"));

    // Native gRPC still works next to the page on the same listener...
    let mut client = app.client().await;
    let sessions = client
        .list_sessions(pb::ListSessionsRequest {})
        .await
        .expect("native gRPC")
        .into_inner();
    assert_eq!(sessions.sessions.len(), 1);

    // ...and so does grpc-web over HTTP/1.1 (an empty ListSessionsRequest).
    let response = grpc_web_post(
        app.addr,
        "/chatsync.v1.ChatSyncService/ListSessions",
        None,
        &[],
    )
    .await;
    assert!(response.starts_with("http/1.1 200"), "{response}");
    assert!(
        response.contains("content-type: application/grpc-web"),
        "{response}"
    );
    assert!(response.contains("grpc-status:0"), "{response}");
}

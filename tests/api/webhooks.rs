//! Webhooks: a receiver in the test (a small HTTP/1.1 server with a script of answers)
//! checks every request with the reference Standard Webhooks implementation (the
//! `standardwebhooks` crate), the order of seqs, and that nothing is lost across failures,
//! timeouts, a kill -9 and a takeover by another replica. Waits are on requests arriving
//! (bounded by `HANG_GUARD`), never on time.
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatsync::config::webhooks::WebhookConfig;
use chatsync::grpc::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::common::replica::Replica;
use crate::common::{self, Backend, HANG_GUARD, TestApp, local_session, on_both_backends, send};

type Client = pb::chat_sync_service_client::ChatSyncServiceClient<tonic::transport::Channel>;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WRONG_SECRET: &str = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// What the receiver answers.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Answer {
    Status(u16),
    StatusRetryAfter(u16, u64),
    /// Never answers (until the client gives up).
    Hang,
}

/// One request the receiver got, with what it answered.
#[derive(Clone, Debug)]
pub(crate) struct Hit {
    pub(crate) id: String,
    pub(crate) seq: u64,
    pub(crate) session: String,
    pub(crate) kind: String,
    pub(crate) body: serde_json::Value,
    pub(crate) answered: Option<u16>,
    pub(crate) at: Instant,
}

type Script = Box<dyn FnMut(usize, &Hit) -> Answer + Send>;

/// A webhook receiver on loopback.
pub(crate) struct Receiver {
    addr: SocketAddr,
    hits: mpsc::UnboundedReceiver<Hit>,
}

impl Receiver {
    /// Answers each request as `script` says (given the request's index and the request),
    /// after verifying its signature (a request that fails verification fails the test).
    pub(crate) async fn start(script: impl FnMut(usize, &Hit) -> Answer + Send + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, hits) = mpsc::unbounded_channel();
        let script: Arc<Mutex<(usize, Script)>> = Arc::new(Mutex::new((0, Box::new(script))));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, tx.clone(), script.clone()));
            }
        });
        Self { addr, hits }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The next request, within the hang guard.
    pub(crate) async fn next(&mut self) -> Hit {
        tokio::time::timeout(HANG_GUARD, self.hits.recv())
            .await
            .expect("a webhook request within the hang guard")
            .expect("the receiver runs")
    }

    /// Requests until one with `seq >= until` was answered 2xx.
    async fn until_acknowledged(&mut self, until: u64) -> Vec<Hit> {
        let mut hits = Vec::new();
        loop {
            let hit = self.next().await;
            let done = hit.seq >= until && hit.answered.is_some_and(|s| (200..300).contains(&s));
            hits.push(hit);
            if done {
                return hits;
            }
        }
    }
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    tx: mpsc::UnboundedSender<Hit>,
    script: Arc<Mutex<(usize, Script)>>,
) {
    let mut buffer = Vec::new();
    loop {
        let end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..end]).to_string();
        let mut headers = http::HeaderMap::new();
        for line in head.lines().skip(1) {
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(
                    http::HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                        .expect("header name"),
                    value.trim().parse().expect("header value"),
                );
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        while buffer.len() < end + 4 + length {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buffer[end + 4..end + 4 + length].to_vec();
        buffer.drain(..end + 4 + length);
        standardwebhooks::Webhook::new(SECRET)
            .expect("secret")
            .verify(&body, &headers)
            .expect("every request verifies with the reference implementation");
        assert!(
            standardwebhooks::Webhook::new(WRONG_SECRET)
                .expect("secret")
                .verify(&body, &headers)
                .is_err(),
            "a wrong secret must not verify"
        );
        let id = headers["webhook-id"].to_str().expect("id").to_owned();
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
        let seq: u64 = json["seq"].as_str().expect("seq").parse().expect("seq");
        let session = json["session_id"].as_str().expect("session_id").to_owned();
        assert_eq!(id, format!("{session}:{seq}"), "webhook-id is session:seq");
        let mut hit = Hit {
            id,
            seq,
            session,
            kind: json["type"].as_str().expect("type").to_owned(),
            body: json,
            answered: None,
            at: Instant::now(),
        };
        let answer = {
            let mut script = script.lock().unwrap();
            let index = script.0;
            script.0 += 1;
            (script.1)(index, &hit)
        };
        let (status, retry_after) = match answer {
            Answer::Status(status) => (status, None),
            Answer::StatusRetryAfter(status, after) => (status, Some(after)),
            Answer::Hang => {
                let _ = tx.send(hit);
                // Hold the connection until the client gives up.
                let mut rest = [0u8; 1024];
                while let Ok(n) = stream.read(&mut rest).await {
                    if n == 0 {
                        break;
                    }
                }
                return;
            }
        };
        hit.answered = Some(status);
        let _ = tx.send(hit);
        let retry_after = retry_after
            .map(|after| format!("retry-after: {after}\r\n"))
            .unwrap_or_default();
        let response = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n{retry_after}\r\n");
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// An endpoint to `url` with the test secret in a file under `dir`, fast retries, on
/// loopback (allowed).
pub(crate) fn endpoint(dir: &Path, id: &str, url: &str) -> WebhookConfig {
    let secret_file = dir.join(format!("{id}.secret"));
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("write secret");
    WebhookConfig {
        id: id.into(),
        url: url.into(),
        secret_file: Some(secret_file),
        timeout_secs: 10,
        allow_private_network: true,
        retry_initial_ms: 5,
        retry_max_ms: 50,
        ..WebhookConfig::default()
    }
}

async fn head(client: &mut Client, session_id: &str) -> u64 {
    client
        .get_sync_status(pb::GetSyncStatusRequest {
            session_id: session_id.into(),
        })
        .await
        .expect("status")
        .into_inner()
        .head_seq
}

/// Sends `per_chat` messages into each of `chats` chats, one writer per chat.
async fn send_many(client: &Client, session_id: &str, chats: usize, per_chat: usize) {
    let mut writers = Vec::new();
    for chat in 0..chats {
        let mut client = client.clone();
        let session_id = session_id.to_owned();
        writers.push(tokio::spawn(async move {
            for i in 0..per_chat {
                send(
                    &mut client,
                    &session_id,
                    &format!("chat-{chat}"),
                    &format!("message {i}"),
                    &format!("m-{chat}-{i}"),
                )
                .await
                .expect("send");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
}

/// Asserts the acknowledged deliveries cover every seq in `first..=last` of the session
/// exactly as the feed has them: in increasing order, each new seq after every smaller one,
/// and any repeat only of an id whose earlier attempt was not acknowledged or in flight.
fn assert_in_order(hits: &[Hit]) -> Vec<u64> {
    let mut seen = HashSet::new();
    let mut highest = 0;
    let mut order = Vec::new();
    for hit in hits {
        if seen.insert(hit.id.clone()) {
            assert!(
                hit.seq > highest,
                "{} arrived after seq {highest}: out of order",
                hit.id
            );
            highest = hit.seq;
            order.push(hit.seq);
        }
    }
    order
}

async fn delivers_every_change_in_order_signed(backend: Backend) {
    let mut receiver = Receiver::start(|_, _| Answer::Status(200)).await;
    let url = receiver.url();
    let app = TestApp::spawn_with(&backend, vec![local_session("notes")], |config| {
        config.webhooks = vec![endpoint(backend.dir.path(), "crm", &url)];
    })
    .await;
    let mut client = app.client().await;
    send_many(&client, "notes", 10, 100).await;
    let head = head(&mut client, "notes").await;
    let hits = receiver.until_acknowledged(head).await;
    // A healthy receiver sees each webhook-id once, every seq from 1 to the head in order.
    let ids: HashSet<_> = hits.iter().map(|hit| hit.id.clone()).collect();
    assert_eq!(
        ids.len(),
        hits.len(),
        "each webhook-id once on a healthy receiver"
    );
    assert_eq!(assert_in_order(&hits), (1..=head).collect::<Vec<_>>());
    let created: Vec<_> = hits
        .iter()
        .filter(|h| h.kind == "message.created")
        .collect();
    assert_eq!(created.len(), 1_000);
    assert_eq!(
        hits.iter().filter(|h| h.kind == "chat.updated").count(),
        10,
        "one chat.updated per new chat"
    );
    let first = &created[0].body;
    assert_eq!(first["session_id"], "notes");
    assert!(
        first["messageCreated"]["text"].as_str().is_some(),
        "{first}"
    );
    assert!(created.iter().all(|h| h.session == "notes"));
}

async fn a_failing_receiver_loses_nothing_and_keeps_order(backend: Backend) {
    // 500 for the first 40 requests, then 200.
    let mut receiver = Receiver::start(|index, _| {
        if index < 40 {
            Answer::Status(500)
        } else {
            Answer::Status(200)
        }
    })
    .await;
    let url = receiver.url();
    let app = TestApp::spawn_with(&backend, vec![local_session("notes")], |config| {
        config.webhooks = vec![endpoint(backend.dir.path(), "crm", &url)];
    })
    .await;
    let mut client = app.client().await;
    send_many(&client, "notes", 2, 25).await;
    let head = head(&mut client, "notes").await;
    let hits = receiver.until_acknowledged(head).await;
    assert_eq!(assert_in_order(&hits), (1..=head).collect::<Vec<_>>());
    assert_eq!(hits.iter().filter(|h| h.answered == Some(500)).count(), 40);
    // Duplicates are only ids whose earlier attempts failed.
    let failed: HashSet<_> = hits
        .iter()
        .filter(|h| h.answered == Some(500))
        .map(|h| h.id.clone())
        .collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for hit in &hits {
        *counts.entry(&hit.id).or_default() += 1;
    }
    for (id, count) in counts {
        assert!(
            count == 1 || failed.contains(id),
            "{id} repeated without a failure"
        );
    }
    // Retried in place: every 500 was retried until the same id got its 200.
    for hit in hits.iter().filter(|h| h.answered == Some(500)) {
        assert!(
            hits.iter()
                .any(|h| h.id == hit.id && h.answered == Some(200))
        );
    }
}

async fn retry_after_a_hang_a_410_and_429(backend: Backend) {
    // Request 0 hangs (the 1 s timeout ends it), 1 gets 410, 2 gets 429 with Retry-After: 1.
    let mut receiver = Receiver::start(|index, _| match index {
        0 => Answer::Hang,
        1 => Answer::Status(410),
        2 => Answer::StatusRetryAfter(429, 1),
        _ => Answer::Status(200),
    })
    .await;
    let url = receiver.url();
    let app = TestApp::spawn_with(&backend, vec![local_session("notes")], |config| {
        let mut hook = endpoint(backend.dir.path(), "crm", &url);
        hook.timeout_secs = 1;
        hook.retry_max_ms = 5_000;
        config.webhooks = vec![hook];
    })
    .await;
    let mut client = app.client().await;
    send(&mut client, "notes", "c", "one", "k1")
        .await
        .expect("send");
    let head = head(&mut client, "notes").await;
    let hits = receiver.until_acknowledged(head).await;
    // The same change (seq 1, the chat) was attempted 4 times, then the rest followed.
    assert_eq!(hits[0].id, "notes:1");
    assert!(hits[..4].iter().all(|h| h.id == "notes:1"), "{hits:?}");
    assert_eq!(
        hits[..4].iter().map(|h| h.answered).collect::<Vec<_>>(),
        vec![None, Some(410), Some(429), Some(200)]
    );
    // Retry-After: 1 was honoured (the fast retry pace is a few ms).
    assert!(hits[3].at - hits[2].at >= Duration::from_millis(900));
    assert_eq!(assert_in_order(&hits), (1..=head).collect::<Vec<_>>());
}

async fn events_and_sessions_filters(backend: Backend) {
    let mut receiver = Receiver::start(|_, _| Answer::Status(200)).await;
    let url = receiver.url();
    let app = TestApp::spawn_with(
        &backend,
        vec![local_session("a"), local_session("b")],
        |config| {
            let mut chats_of_a = endpoint(backend.dir.path(), "chats", &url);
            chats_of_a.sessions = vec!["a".into()];
            chats_of_a.events = vec!["chat.updated".into()];
            let mut everything_of_b = endpoint(backend.dir.path(), "all-b", &url);
            everything_of_b.sessions = vec!["b".into()];
            config.webhooks = vec![chats_of_a, everything_of_b];
        },
    )
    .await;
    let mut client = app.client().await;
    for session in ["a", "b"] {
        send(&mut client, session, "x", "1", "k1")
            .await
            .expect("send");
        send(&mut client, session, "y", "2", "k2")
            .await
            .expect("send");
    }
    let (head_a, head_b) = (head(&mut client, "a").await, head(&mut client, "b").await);
    let mut a = Vec::new();
    let mut b = Vec::new();
    // `chats` gets a's two chat.updated; `all-b` gets all 4 changes of b.
    while a.len() < 2 || b.len() < head_b as usize {
        let hit = receiver.next().await;
        if hit.session == "a" {
            a.push(hit)
        } else {
            b.push(hit)
        }
    }
    assert!(a.iter().all(|h| h.kind == "chat.updated"), "{a:?}");
    assert_eq!(a.len(), 2);
    assert_eq!(head_a, 4);
    assert_eq!(assert_in_order(&b), (1..=head_b).collect::<Vec<_>>());
    assert_eq!(b.iter().filter(|h| h.kind == "message.created").count(), 2);
}

async fn a_private_destination_is_refused_without_the_flag(backend: Backend) {
    let mut receiver = Receiver::start(|_, _| Answer::Status(200)).await;
    let url = receiver.url();
    let app = TestApp::spawn_with(&backend, vec![local_session("notes")], |config| {
        let mut refused = endpoint(backend.dir.path(), "refused", &url);
        refused.allow_private_network = false;
        let mut by_name = endpoint(
            backend.dir.path(),
            "by-name",
            &url.replace("127.0.0.1", "localhost"),
        );
        by_name.allow_private_network = false;
        // A control endpoint that may: it proves the change was there to deliver.
        let allowed = endpoint(backend.dir.path(), "allowed", &url);
        config.webhooks = vec![refused, by_name, allowed];
    })
    .await;
    let mut client = app.client().await;
    send(&mut client, "notes", "c", "one", "k1")
        .await
        .expect("send");
    let head = head(&mut client, "notes").await;
    let hits = receiver.until_acknowledged(head).await;
    assert_eq!(
        hits.len() as u64,
        head,
        "only the allowed endpoint's requests arrive"
    );
    // The refused ones record why, and keep their place.
    let statuses = webhook_status(&mut client).await;
    for id in ["refused", "by-name"] {
        common::eventually("the refusal is recorded", || {
            let mut client = client.clone();
            async move {
                webhook_status(&mut client).await.iter().any(|s| {
                    s.webhook_id == id && s.last_error.contains("refused") && s.cursor == 0
                })
            }
        })
        .await;
    }
    assert!(
        receiver.hits.try_recv().is_err(),
        "nothing reached the receiver from them"
    );
    assert!(statuses.iter().any(|s| s.webhook_id == "allowed"));
}

async fn webhook_status(client: &mut Client) -> Vec<pb::WebhookStatus> {
    client
        .get_webhook_status(pb::GetWebhookStatusRequest::default())
        .await
        .expect("GetWebhookStatus")
        .into_inner()
        .statuses
}

async fn replay_webhook_redelivers_from_an_earlier_seq(backend: Backend) {
    let mut receiver = Receiver::start(|_, _| Answer::Status(200)).await;
    let url = receiver.url();
    let app = TestApp::spawn_with(&backend, vec![local_session("notes")], |config| {
        config.webhooks = vec![endpoint(backend.dir.path(), "crm", &url)];
    })
    .await;
    let mut client = app.client().await;
    send_many(&client, "notes", 1, 5).await;
    let head = head(&mut client, "notes").await;
    receiver.until_acknowledged(head).await;
    common::eventually("the cursor reaches the head", || {
        let mut client = client.clone();
        async move {
            webhook_status(&mut client).await.iter().any(|s| {
                s.cursor == head && s.state == pb::WebhookState::UpToDate as i32 && s.lag == 0
            })
        }
    })
    .await;
    let replay = pb::ReplayWebhookRequest {
        webhook_id: "crm".into(),
        session_id: "notes".into(),
        after_seq: head - 3,
    };
    let previous = client
        .replay_webhook(replay.clone())
        .await
        .expect("ReplayWebhook")
        .into_inner()
        .previous_seq;
    assert_eq!(previous, head);
    let again = receiver.until_acknowledged(head).await;
    assert_eq!(
        again.iter().map(|h| h.seq).collect::<Vec<_>>(),
        vec![head - 2, head - 1, head]
    );
    let beyond = client
        .replay_webhook(pb::ReplayWebhookRequest {
            after_seq: head + 1,
            ..replay.clone()
        })
        .await
        .expect_err("beyond the head");
    assert_eq!(beyond.code(), tonic::Code::InvalidArgument);
    let unknown = client
        .replay_webhook(pb::ReplayWebhookRequest {
            webhook_id: "nope".into(),
            ..replay
        })
        .await
        .expect_err("unknown endpoint");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

/// A `chatsync serve` configuration: the `notes` (local) session, one endpoint `crm` to
/// `url` with fast retries, leases of `lease_secs`.
fn replica_config(dir: &Path, database_url: &str, url: &str, lease_secs: u64) -> PathBuf {
    let secret_file = dir.join("crm.secret");
    std::fs::write(&secret_file, SECRET).expect("write secret");
    let path = dir.join("replica.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"{database_url}\"\nlease_secs = {lease_secs}\n\
             database_max_connections = 6\n\
             [[sessions]]\nid = \"notes\"\nsource = \"local\"\n\
             [[webhooks]]\nid = \"crm\"\nurl = \"{url}\"\nsecret_file = \"{}\"\n\
             allow_private_network = true\nretry_initial_ms = 5\nretry_max_ms = 50\n",
            secret_file.display()
        ),
    )
    .expect("write config");
    path
}

async fn kill_9_mid_delivery_then_restart_loses_nothing(backend: Backend) {
    let mut receiver = Receiver::start(|_, _| Answer::Status(200)).await;
    let config = replica_config(
        backend.dir.path(),
        &backend.database_url,
        &receiver.url(),
        2,
    );
    let mut replica = Replica::start(&config).await;
    let client = replica.client().await;
    send_many(&client, "notes", 4, 50).await;
    let mut hits = Vec::new();
    for _ in 0..50 {
        hits.push(receiver.next().await);
    }
    replica.kill().await;
    let restarted = Replica::start(&config).await;
    let mut client = restarted.client().await;
    let head = head(&mut client, "notes").await;
    assert_eq!(head, 204);
    hits.extend(receiver.until_acknowledged(head).await);
    // Every change at least once, no new one before an earlier one.
    assert_eq!(assert_in_order(&hits), (1..=head).collect::<Vec<_>>());
}

/// Two replicas on PostgreSQL: the first delivers; kill it and the second takes over from
/// the stored cursor, within about the lease time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_replica_takes_over_when_the_holder_dies() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let mut receiver = Receiver::start(|_, _| Answer::Status(200)).await;
    let config = replica_config(
        backend.dir.path(),
        &backend.database_url,
        &receiver.url(),
        2,
    );
    let mut holder = Replica::start(&config).await;
    let client = holder.client().await;
    send_many(&client, "notes", 4, 50).await;
    let mut hits = Vec::new();
    for _ in 0..30 {
        hits.push(receiver.next().await);
    }
    let other = Replica::start(&config).await;
    holder.kill().await;
    let killed = Instant::now();
    let mut client = other.client().await;
    let head = head(&mut client, "notes").await;
    let after = receiver.until_acknowledged(head).await;
    eprintln!(
        "takeover: first request from the other replica {:?} after the kill",
        after.iter().find(|h| h.at > killed).map(|h| h.at - killed)
    );
    hits.extend(after);
    assert_eq!(assert_in_order(&hits), (1..=head).collect::<Vec<_>>());
    // Only the change in flight (at most one per kill) repeats.
    let mut seen = HashSet::new();
    let repeats = hits.iter().filter(|h| !seen.insert(h.id.clone())).count();
    assert!(repeats <= 1, "{repeats} repeats");
}

/// A sync run that ends reaches an endpoint that takes only `sync.finished`, as the feed's
/// last change, with its final state; subscribers get the same change.
async fn a_sync_run_that_ends_is_delivered_as_sync_finished(backend: Backend) {
    let mut receiver = Receiver::start(|_, _| Answer::Status(200)).await;
    let url = receiver.url();
    let app = TestApp::spawn_with(
        &backend,
        vec![common::whatsapp_session(
            "demo",
            &common::samples().join("whatsapp"),
        )],
        |config| {
            let mut runs = endpoint(backend.dir.path(), "runs", &url);
            runs.events = vec!["sync.finished".into()];
            config.webhooks = vec![runs];
        },
    )
    .await;
    let mut client = app.client().await;
    let frames = common::sync_frames(&mut client, "demo", Some(0)).await;
    assert!(frames.len() > 1, "{frames:?}");
    let head = head(&mut client, "demo").await;
    let hit = receiver.next().await;
    assert_eq!(hit.kind, "sync.finished", "{hit:?}");
    assert_eq!(hit.seq, head, "the run's end is the feed's last change");
    assert_eq!(
        hit.body["syncRunFinished"]["state"], "SYNC_STATE_SUCCEEDED",
        "{}",
        hit.body
    );
    assert!(
        hit.body["syncRunFinished"]["finishedAt"].is_string(),
        "{}",
        hit.body
    );

    // The same change replays to a subscriber, past a chat filter.
    let mut stream = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: "demo".into(),
            after_seq: Some(head - 1),
            chat_ids: vec!["no-such-chat".into()],
        })
        .await
        .expect("subscribe")
        .into_inner();
    let event = stream.message().await.expect("stream").expect("an event");
    assert_eq!(event.seq, head);
    let Some(pb::subscribe_messages_response::Event::SyncRunFinished(run)) = event.event else {
        panic!("expected sync_run_finished, got {event:?}");
    };
    assert_eq!(run.state, pb::SyncState::Succeeded as i32);
}

on_both_backends!(
    replay_webhook_redelivers_from_an_earlier_seq,
    kill_9_mid_delivery_then_restart_loses_nothing,
    delivers_every_change_in_order_signed,
    a_failing_receiver_loses_nothing_and_keeps_order,
    retry_after_a_hang_a_410_and_429,
    events_and_sessions_filters,
    a_private_destination_is_refused_without_the_flag,
    a_sync_run_that_ends_is_delivered_as_sync_finished,
);

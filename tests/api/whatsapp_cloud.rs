//! The `whatsapp-cloud` source against a Graph API stand-in (`common::graph_api`) and real
//! webhook bodies written by others (`../shared/cloudapi/pywa`), signed with a test secret,
//! POSTed to `/webhooks/whatsapp` over real HTTP. Both backends.
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use chatsync::grpc::pb;
use chatsync::grpc::pb::subscribe_messages_response::Event;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2_011::Sha256;

use crate::common::graph_api::{self, GraphApi, VERSION, error_body};
use crate::common::replica::Replica;
use crate::common::{self, Backend, HANG_GUARD, TestApp, all_messages, on_both_backends};

const NUMBER: &str = "1122334455667";
const SECRET: &str = "test-app-secret";
const VERIFY: &str = "test-verify-token";
const TOKEN: &str = "test-access-token";
const USER: &str = "972987654321";

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/cloudapi/pywa")
}

/// The cases of one shared file: name → body.
fn cases(file: &str) -> serde_json::Map<String, Value> {
    let path = shared().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is needed (see its README): {e}", path.display()));
    serde_json::from_str::<Value>(&text)
        .expect("json")
        .as_object()
        .cloned()
        .expect("object")
}

fn sign(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

struct Setup {
    app: TestApp,
    graph: GraphApi,
    http: reqwest::Client,
    _backend: Backend,
}

impl Setup {
    async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// [`start`](Self::start), letting the test adjust the configuration first.
    async fn start_with(
        backend: Backend,
        adjust: impl FnOnce(&mut chatsync::config::Config),
    ) -> Self {
        let graph = GraphApi::start(TOKEN).await;
        let app = TestApp::spawn_with(&backend, vec![Self::session(&graph)], adjust).await;
        Setup {
            app,
            graph,
            http: reqwest::Client::new(),
            _backend: backend,
        }
    }

    /// Stops the server (as SIGTERM would) and starts it again on the same database.
    async fn restart(self) -> Self {
        self.app.stop().await;
        let app = TestApp::spawn(&self._backend, vec![Self::session(&self.graph)]).await;
        Setup { app, ..self }
    }

    /// The `wa` session against `graph`.
    fn session(graph: &GraphApi) -> chatsync::config::SessionConfig {
        // One process-wide variable per secret; every test uses the same values.
        unsafe {
            std::env::set_var("WC_TEST_TOKEN", TOKEN);
            std::env::set_var("WC_TEST_SECRET", SECRET);
            std::env::set_var("WC_TEST_VERIFY", VERIFY);
        }
        common::session(
            "wa",
            "whatsapp-cloud",
            json!({
                "phone_number_id": NUMBER,
                "access_token_env": "WC_TEST_TOKEN",
                "app_secret_env": "WC_TEST_SECRET",
                "verify_token_env": "WC_TEST_VERIFY",
                "graph_api_url": graph.url,
                "graph_api_version": VERSION,
                "rate_limit_retries": 2,
                "rate_limit_backoff_ms": 10,
                "media_retry_backoff_ms": 20,
            }),
        )
    }

    /// POSTs raw bytes with a signature header (or none); the HTTP status.
    async fn post_raw(&self, body: &[u8], signature: Option<String>) -> u16 {
        let mut request = self
            .http
            .post(format!("{}/webhooks/whatsapp", self.app.url))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        request.send().await.expect("post").status().as_u16()
    }

    /// POSTs a body signed with the test secret; asserts 200.
    async fn post(&self, body: &Value) {
        let bytes = serde_json::to_vec(body).expect("json");
        assert_eq!(self.post_raw(&bytes, Some(sign(&bytes, SECRET))).await, 200);
    }

    /// The chat's messages; none when the chat is not stored.
    async fn messages(&self, chat: &str) -> Vec<pb::Message> {
        let chats = common::all_chats(&mut self.app.client().await, "wa").await;
        if !chats.iter().any(|c| c.chat_id == chat) {
            return Vec::new();
        }
        all_messages(&mut self.app.client().await, "wa", chat).await
    }

    async fn message(&self, chat: &str, wamid: &str) -> pb::Message {
        self.messages(chat)
            .await
            .into_iter()
            .find(|m| m.provider_message_id == wamid)
            .unwrap_or_else(|| panic!("{wamid} is stored"))
    }
}

/// The one change of a body.
fn value(body: &mut Value) -> &mut Value {
    &mut body["entry"][0]["changes"][0]["value"]
}

/// A body with its number set to ours and its (first) message or status id set.
fn case(file: &str, name: &str, id: &str) -> Value {
    let mut body = cases(file)[name].clone();
    let v = value(&mut body);
    v["metadata"]["phone_number_id"] = json!(NUMBER);
    if v.get("messages").is_some() {
        v["messages"][0]["id"] = json!(id);
    }
    if v.get("statuses").is_some() {
        v["statuses"][0]["id"] = json!(id);
    }
    body
}

fn status_body(wamid: &str, status: &str, callback: Option<&str>) -> Value {
    let mut body = case("message_status.json", "sent", wamid);
    let s = &mut value(&mut body)["statuses"][0];
    s["status"] = json!(status);
    if status == "failed" {
        s["errors"] = json!([{"code": 131026, "title": "Message undeliverable"}]);
    }
    if let Some(callback) = callback {
        s["biz_opaque_callback_data"] = json!(callback);
    }
    body
}

async fn handshake_and_signatures(backend: Backend) {
    let s = Setup::start(backend).await;
    let get = |q: String| {
        let http = s.http.clone();
        let url = format!("{}/webhooks/whatsapp?{q}", s.app.url);
        async move { http.get(url).send().await.expect("get") }
    };
    let ok = get(format!(
        "hub.mode=subscribe&hub.verify_token={VERIFY}&hub.challenge=1158201444"
    ))
    .await;
    assert_eq!(ok.status().as_u16(), 200);
    assert!(
        ok.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    let wrong = get("hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1".into()).await;
    assert_eq!(wrong.status().as_u16(), 403);
    let mode = get(format!(
        "hub.mode=unsubscribe&hub.verify_token={VERIFY}&hub.challenge=1"
    ))
    .await;
    assert_eq!(mode.status().as_u16(), 403);

    let body = serde_json::to_vec(&case("message.json", "text", "wamid.sig")).unwrap();
    assert_eq!(s.post_raw(&body, None).await, 401, "missing signature");
    assert_eq!(
        s.post_raw(&body, Some("sha256=00".into())).await,
        401,
        "wrong"
    );
    assert_eq!(
        s.post_raw(&body, Some(sign(&body, "another-app"))).await,
        401,
        "another app's"
    );
    let mut altered = body.clone();
    let at = altered.len() - 5;
    altered[at] = b' ';
    assert_eq!(
        s.post_raw(&altered, Some(sign(&body, SECRET))).await,
        401,
        "altered"
    );
    assert!(
        s.messages(USER).await.is_empty(),
        "a refused body stores nothing"
    );

    // Meta escapes non-ASCII as \uXXXX and signs those bytes.
    let escaped = String::from_utf8(body.clone())
        .unwrap()
        .replace("Body Text", "caf\\u00e9 \\ud83d\\ude00")
        .into_bytes();
    assert_eq!(
        s.post_raw(&escaped, Some(sign(&escaped, SECRET))).await,
        200
    );
    assert_eq!(s.message(USER, "wamid.sig").await.text, "café 😀");

    // Over 3 MiB: 413.
    let big = vec![b' '; (3 << 20) + 10];
    assert_eq!(s.post_raw(&big, Some(sign(&big, SECRET))).await, 413);
    // A number no session has: 200 (Meta stops retrying), nothing stored.
    let mut other = case("message.json", "text", "wamid.other");
    value(&mut other)["metadata"]["phone_number_id"] = json!("999");
    let bytes = serde_json::to_vec(&other).unwrap();
    assert_eq!(s.post_raw(&bytes, Some(sign(&bytes, SECRET))).await, 200);
    assert!(
        s.messages(USER)
            .await
            .iter()
            .all(|m| m.provider_message_id != "wamid.other")
    );
}

async fn every_shared_case(backend: Backend) {
    let s = Setup::start(backend).await;
    // Media: the stand-in serves each media id's bytes.
    let jpeg = b"\xff\xd8\xffjpeg bytes".to_vec();
    for id in ["65463453", "1234567890"] {
        s.graph
            .script
            .lock()
            .unwrap()
            .media
            .insert(id.into(), (jpeg.clone(), 0));
    }
    // Every media case in message.json, each with the real hash of the stand-in's bytes.
    let real_b64 = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&jpeg))
    };
    let mut expected: Vec<(String, pb::MessageKind, String)> = Vec::new();
    for (name, _) in cases("message.json") {
        let id = format!("wamid.case.{name}");
        let mut body = case("message.json", &name, &id);
        let m = &mut value(&mut body)["messages"][0];
        let kind = m["type"].as_str().unwrap_or_default().to_owned();
        if let Some(media) = m.get_mut(&kind).filter(|v| v.get("sha256").is_some()) {
            media["sha256"] = json!(real_b64);
            media["id"] = json!("65463453");
        }
        s.post(&body).await;
        if kind == "reaction" {
            continue;
        }
        let want = match kind.as_str() {
            "text" => pb::MessageKind::Text,
            "image" | "video" | "audio" | "document" | "sticker" => pb::MessageKind::Media,
            "unsupported" => pb::MessageKind::System,
            _ => pb::MessageKind::Text,
        };
        expected.push((id, want, name));
    }
    let stored = s.messages(USER).await;
    for (id, kind, name) in &expected {
        let m = stored
            .iter()
            .find(|m| &m.provider_message_id == id)
            .unwrap_or_else(|| panic!("case {name} is stored"));
        assert_eq!(m.kind, *kind as i32, "case {name}");
        assert_eq!(m.chat_id, USER, "case {name}");
        if *kind != pb::MessageKind::System {
            assert_eq!(m.sender, USER, "case {name}");
        }
        if *kind == pb::MessageKind::Media {
            assert_eq!(m.attachments.len(), 1, "case {name}");
            assert!(m.attachments[0].stored, "case {name}: downloaded");
        }
    }
    let by = |name: &str| {
        stored
            .iter()
            .find(|m| m.provider_message_id == format!("wamid.case.{name}"))
            .cloned()
            .unwrap()
    };
    assert_eq!(by("text").text, "Body Text");
    assert_eq!(
        by("reply").reply_to.as_ref().unwrap().provider_message_id,
        "wamid.xyzxyz=="
    );
    assert!(by("forwarded").forwarded);
    assert!(by("forwarded_many_times").frequently_forwarded);
    assert!(
        by("unsupported").text.contains("131051"),
        "{}",
        by("unsupported").text
    );
    assert!(by("contacts").text.contains("Chandler Bing"));
    assert!(by("order").text.contains("HAMBURGER"));
    assert!(by("current_location").text.contains("Location"));
    assert!(by("referral").text.contains("AD_TITLE"));
    // GetMedia serves the downloaded bytes.
    let sha = by("image").attachments[0].sha256.clone();
    let mut chunks = s
        .app
        .client()
        .await
        .get_media(pb::GetMediaRequest {
            session_id: "wa".into(),
            sha256: sha,
        })
        .await
        .expect("GetMedia")
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.message().await.expect("chunk") {
        bytes.extend(chunk.data);
    }
    assert_eq!(bytes, jpeg);

    // Reactions on a stored message, and their removal (empty emoji, no emoji).
    let mut react = case("message.json", "reaction", "wamid.r1");
    value(&mut react)["messages"][0]["reaction"]["message_id"] = json!("wamid.case.text");
    s.post(&react).await;
    assert_eq!(by_id(&s, "wamid.case.text").await.reactions[0].emoji, "😮");
    for (name, id) in [
        ("unreaction_empty", "wamid.r2"),
        ("unreaction_no_emoji", "wamid.r3"),
    ] {
        let mut react = case("message.json", "reaction", "wamid.r4");
        s.post(&react).await; // put it back (the same id: stored once)
        react = case("message.json", name, id);
        value(&mut react)["messages"][0]["reaction"]["message_id"] = json!("wamid.case.text");
        s.post(&react).await;
        assert!(
            by_id(&s, "wamid.case.text").await.reactions.is_empty(),
            "{name}"
        );
    }

    // Buttons.
    for name in ["button", "quick_reply", "quick_reply_without_context"] {
        let id = format!("wamid.button.{name}");
        s.post(&case("callback_button.json", name, &id)).await;
        assert!(!by_id(&s, &id).await.text.is_empty(), "{name}");
    }
    assert!(
        by_id(&s, "wamid.button.button")
            .await
            .text
            .contains("callback_data")
    );

    // An edit, then a revoke, of a stored message (the bodies' own sender and ids).
    let mut edit = cases("edited_message.json")["image"].clone();
    let original = value(&mut edit)["messages"][0]["edit"]["original_message_id"].clone();
    let editor = value(&mut edit)["messages"][0]["from"]
        .as_str()
        .unwrap()
        .to_owned();
    value(&mut edit)["metadata"]["phone_number_id"] = json!(NUMBER);
    let mut first = case("message.json", "text", original.as_str().unwrap());
    value(&mut first)["messages"][0]["from"] = json!(editor);
    s.post(&first).await;
    s.post(&edit).await;
    let edited = s.message(&editor, original.as_str().unwrap()).await;
    assert_eq!(edited.text, "Updated image caption");
    assert!(edited.edited);
    let mut revoke = cases("deleted_message.json")["revoke"].clone();
    let v = value(&mut revoke);
    v["metadata"]["phone_number_id"] = json!(NUMBER);
    v["messages"][0]["from"] = json!(editor);
    v["messages"][0]["revoke"]["original_message_id"] = original.clone();
    s.post(&revoke).await;
    let deleted = s.message(&editor, original.as_str().unwrap()).await;
    assert_eq!(deleted.kind, pb::MessageKind::Deleted as i32);
}

async fn by_id(s: &Setup, wamid: &str) -> pb::Message {
    s.message(USER, wamid).await
}

async fn duplicates_and_a_malformed_item(backend: Backend) {
    let s = Setup::start(backend).await;
    let body = case("message.json", "text", "wamid.dup");
    for _ in 0..3 {
        s.post(&body).await;
    }
    let stored = s.messages(USER).await;
    assert_eq!(
        stored
            .iter()
            .filter(|m| m.provider_message_id == "wamid.dup")
            .count(),
        1
    );
    // A batch with one message that has no id: the other is stored, the answer is 200.
    let mut batch = case("message.json", "text", "wamid.good");
    let good = value(&mut batch)["messages"][0].clone();
    let mut bad = good.clone();
    bad.as_object_mut().unwrap().remove("id");
    value(&mut batch)["messages"] = json!([bad, good]);
    s.post(&batch).await;
    s.message(USER, "wamid.good").await;
}

/// One body holding its contact, several messages (one stored by an earlier body, one twice
/// in the body, one unreadable) and a status for one of them: what is new is stored once, in
/// the body's order, and the status applies (it comes after its message in the body).
async fn a_body_of_many_items(backend: Backend) {
    let s = Setup::start(backend).await;
    s.post(&case("message.json", "text", "wamid.many.0")).await;
    let mut body = case("message.json", "text", "wamid.many.1");
    let first = value(&mut body)["messages"][0].clone();
    let with = |id: &str, text: &str| {
        let mut m = first.clone();
        m["id"] = json!(id);
        m["text"] = json!({"body": text});
        m
    };
    let mut bad = first.clone();
    bad.as_object_mut().unwrap().remove("id");
    value(&mut body)["messages"] = json!([
        with("wamid.many.1", "one"),
        with("wamid.many.0", "again"),
        bad,
        with("wamid.many.2", "two"),
        with("wamid.many.1", "one again"),
    ]);
    let read = value(&mut status_body("wamid.many.2", "read", None))["statuses"].clone();
    value(&mut body)["statuses"] = read;
    for _ in 0..2 {
        s.post(&body).await;
    }
    let stored = s.messages(USER).await;
    let count = |id: &str| {
        stored
            .iter()
            .filter(|m| m.provider_message_id == id)
            .count()
    };
    assert_eq!(
        [
            count("wamid.many.0"),
            count("wamid.many.1"),
            count("wamid.many.2")
        ],
        [1, 1, 1]
    );
    let (zero, one, two) = (
        by_id(&s, "wamid.many.0").await,
        by_id(&s, "wamid.many.1").await,
        by_id(&s, "wamid.many.2").await,
    );
    assert_ne!(zero.text, "again", "a stored wamid stores nothing");
    assert_eq!(one.text, "one");
    assert!(zero.seq < one.seq && one.seq < two.seq, "the body's order");
    assert_eq!(two.status, pb::MessageStatus::Read as i32);
}

/// Creates the chat (an incoming message) and sends one message; its wamid.
async fn send_one(s: &Setup, text: &str, key: &str) -> Result<pb::Message, tonic::Status> {
    if s.messages(USER).await.is_empty() {
        s.post(&case("message.json", "text", "wamid.hello")).await;
    }
    let mut client = s.app.client().await;
    common::send(&mut client, "wa", USER, text, key)
        .await
        .map(|r| r.message.expect("message"))
}

async fn statuses_in_any_order(backend: Backend) {
    let s = Setup::start(backend).await;
    let sent = send_one(&s, "first", "k1").await.expect("send");
    assert_eq!(sent.status, pb::MessageStatus::Sent as i32);
    let post = s.posts_last();
    assert_eq!(post["biz_opaque_callback_data"], "k1");
    assert_eq!(post["text"]["body"], "first");
    let wamid = sent.provider_message_id.clone();
    // Read before delivered: stays READ; the same body 3 times, shuffled with the others.
    for status in ["read", "sent", "delivered", "read", "delivered", "read"] {
        s.post(&status_body(&wamid, status, None)).await;
    }
    assert_eq!(
        s.message(USER, &wamid).await.status,
        pb::MessageStatus::Read as i32
    );
    // Failed after delivered changes nothing; failed after sent is FAILED.
    let second = send_one(&s, "second", "k2").await.unwrap();
    s.post(&status_body(&second.provider_message_id, "delivered", None))
        .await;
    s.post(&status_body(&second.provider_message_id, "failed", None))
        .await;
    assert_eq!(
        s.message(USER, &second.provider_message_id).await.status,
        pb::MessageStatus::Delivered as i32
    );
    let third = send_one(&s, "third", "k3").await.unwrap();
    s.post(&status_body(&third.provider_message_id, "failed", None))
        .await;
    assert_eq!(
        s.message(USER, &third.provider_message_id).await.status,
        pb::MessageStatus::Failed as i32
    );
    // A status for a wamid not stored yet is kept, and applied when the message arrives.
    s.post(&status_body("wamid.later", "read", None)).await;
    let mut later = case("message.json", "text", "wamid.later");
    value(&mut later)["statuses"] = json!([]);
    s.post(&later).await;
    assert_eq!(
        s.message(USER, "wamid.later").await.status,
        pb::MessageStatus::Read as i32
    );
}

/// A `failed` status with Meta's `errors[]` (the shared body) keeps the first error's code and
/// title: the `status_updated` event carries them, live and replayed, and so does the
/// `status.updated` webhook's JSON body. Other statuses carry none.
async fn a_failed_status_keeps_its_error(backend: Backend) {
    let mut receiver =
        crate::webhooks::Receiver::start(|_, _| crate::webhooks::Answer::Status(200)).await;
    let url = receiver.url();
    let dir = backend.dir.path().to_owned();
    let s = Setup::start_with(backend, |config| {
        config.webhooks = vec![crate::webhooks::endpoint(&dir, "crm", &url)];
    })
    .await;
    s.post(&case("message.json", "text", "wamid.hello")).await;
    let mut client = s.app.client().await;
    let mut live = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: "wa".into(),
            chat_ids: vec![],
            after_seq: None,
        })
        .await
        .expect("subscribe")
        .into_inner();
    let sent = send_one(&s, "doomed", "k-fail").await.expect("send");
    let wamid = sent.provider_message_id.clone();
    let body = case("message_status.json", "failed", &wamid);
    let errors = &body["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"];
    let (code, title) = (130472, "User's number is part of an experiment");
    assert_eq!(errors[0]["code"], code, "the shared body's error");
    assert_eq!(errors[0]["title"], title);
    s.post(&body).await;

    // Live: the send's SENT carries no error, the FAILED carries Meta's.
    let mut statuses = Vec::new();
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while statuses.len() < 2 {
        let event = tokio::time::timeout_at(deadline, live.message())
            .await
            .expect("status events in time")
            .expect("stream ok")
            .expect("stream open");
        if let Some(Event::StatusUpdated(update)) = event.event
            && update.message_id == sent.id
        {
            statuses.push((event.seq, update));
        }
    }
    assert_eq!(statuses[0].1.status, pb::MessageStatus::Sent as i32);
    assert_eq!(statuses[0].1.error, None);
    let (failed_seq, failed) = statuses[1].clone();
    assert_eq!(failed.status, pb::MessageStatus::Failed as i32);
    assert_eq!(
        failed.error,
        Some(pb::StatusError {
            code,
            title: title.into()
        })
    );
    // Replayed from storage: the same.
    let mut replay = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: "wa".into(),
            chat_ids: vec![],
            after_seq: Some(failed_seq - 1),
        })
        .await
        .expect("subscribe")
        .into_inner();
    let replayed = common::read_until(&mut replay, failed_seq).await;
    let Some(Event::StatusUpdated(update)) = &replayed[0].event else {
        panic!("the replay starts with the FAILED: {replayed:?}");
    };
    assert_eq!(update, &failed);
    // The webhook body: the protobuf JSON mapping (int64 as a decimal string).
    let hit = loop {
        let hit = receiver.next().await;
        if hit.seq == failed_seq {
            break hit;
        }
    };
    assert_eq!(hit.kind, "status.updated");
    let update = &hit.body["statusUpdated"];
    assert_eq!(update["status"], "MESSAGE_STATUS_FAILED", "{}", hit.body);
    assert_eq!(update["error"]["code"], code.to_string(), "{}", hit.body);
    assert_eq!(update["error"]["title"], title, "{}", hit.body);
}

/// The FAILED `status_updated` events of `ids` on `stream`, by message id, read until each has
/// one (failing after [`HANG_GUARD`]); with the seq of each.
async fn failed_events(
    stream: &mut tonic::Streaming<pb::SubscribeMessagesResponse>,
    ids: &[u64],
) -> HashMap<u64, (u64, pb::StatusUpdated)> {
    let mut found = HashMap::new();
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while found.len() < ids.len() {
        let event = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("the FAILED events in time")
            .expect("stream ok")
            .expect("stream open");
        if let Some(Event::StatusUpdated(update)) = event.event
            && ids.contains(&update.message_id)
            && update.status == pb::MessageStatus::Failed as i32
        {
            assert!(
                found
                    .insert(update.message_id, (event.seq, update))
                    .is_none(),
                "one FAILED event per message"
            );
        }
    }
    found
}

/// A send that Graph refuses leaves its message FAILED with Meta's code and the title Meta
/// puts in the error's `message` (`(#131047) Re-engagement message`): the `status_updated`
/// event carries them, live and replayed from storage, as it does for a `failed` status
/// webhook. So does a file refused at its upload (131053), and a rate limit that outlasts the
/// retries (131056, RESOURCE_EXHAUSTED); the gRPC codes stay as before.
async fn a_failed_send_keeps_its_error(backend: Backend) {
    let s = Setup::start(backend).await;
    s.post(&case("message.json", "text", "wamid.hello")).await;
    let mut client = s.app.client().await;
    let mut live = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: "wa".into(),
            chat_ids: vec![],
            after_seq: None,
        })
        .await
        .expect("subscribe")
        .into_inner();
    let window = (131047, "Re-engagement message");
    let pair_limit = (
        131056,
        "(Business Account, Consumer Account) pair rate limit hit",
    );
    {
        let mut script = s.graph.script.lock().unwrap();
        script.answers.push_back((
            400,
            graph_api::cloud_error_body(
                window.0,
                window.1,
                "Message failed to send because more than 24 hours have passed since the \
                 customer last replied to this number.",
            ),
        ));
        // One more than the session's 2 retries.
        for _ in 0..3 {
            script.answers.push_back((
                400,
                graph_api::cloud_error_body(
                    pair_limit.0,
                    pair_limit.1,
                    "Too many messages sent from the sender phone number to the same \
                     recipient phone number in a short period of time.",
                ),
            ));
        }
    }
    let error = send_one(&s, "too late", "k-late").await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error:?}");
    assert!(error.message().contains("131047"), "{error:?}");
    let error = send_one(&s, "too fast", "k-busy").await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::ResourceExhausted, "{error:?}");
    let error = send_file(&s, "", "anim.gif", "image/gif", b"GIF89a", "k-gif")
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error:?}");
    assert!(error.message().contains("131053"), "{error:?}");
    let upload = (graph_api::MEDIA_UPLOAD_ERROR, "Media upload error");

    let stored: HashMap<String, pb::Message> = s
        .messages(USER)
        .await
        .into_iter()
        .map(|m| (m.client_message_id.clone(), m))
        .collect();
    let expected: Vec<(u64, (i64, &str))> = [
        ("k-late", window),
        ("k-busy", pair_limit),
        ("k-gif", upload),
    ]
    .into_iter()
    .map(|(key, reason)| {
        let message = stored
            .get(key)
            .unwrap_or_else(|| panic!("the refused send {key} is stored"));
        assert_eq!(message.status, pb::MessageStatus::Failed as i32, "{key}");
        (message.id, reason)
    })
    .collect();
    let ids: Vec<u64> = expected.iter().map(|(id, _)| *id).collect();
    let seen = failed_events(&mut live, &ids).await;
    let mut replay = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: "wa".into(),
            chat_ids: vec![],
            after_seq: Some(0),
        })
        .await
        .expect("subscribe")
        .into_inner();
    let replayed = failed_events(&mut replay, &ids).await;
    for (id, (code, title)) in expected {
        let (_, update) = &seen[&id];
        assert_eq!(
            update.error,
            Some(pb::StatusError {
                code,
                title: title.into()
            }),
            "message {id}"
        );
        assert_eq!(replayed[&id], seen[&id], "replayed as it went live");
    }
    // A retry of a failed send posts nothing again and answers the FAILED message.
    let posts = s.graph.posts().len();
    let again = send_one(&s, "too late", "k-late")
        .await
        .expect("the stored message");
    assert_eq!(again.status, pb::MessageStatus::Failed as i32);
    assert_eq!(s.graph.posts().len(), posts);
}

impl Setup {
    fn posts_last(&self) -> Value {
        self.graph.posts().last().cloned().expect("a post")
    }
}

async fn status_before_the_send_answer(backend: Backend) {
    let s = Setup::start(backend).await;
    s.post(&case("message.json", "text", "wamid.hello")).await;
    s.graph.script.lock().unwrap().hold_sends = true;
    let arrived = s.graph.arrived.notified();
    let mut client = s.app.client().await;
    let send =
        tokio::spawn(
            async move { common::send(&mut client, "wa", USER, "racing", "k-race").await },
        );
    tokio::time::timeout(HANG_GUARD, arrived)
        .await
        .expect("the send arrives");
    // Meta's statuses beat the answer: they name the client_message_id.
    s.post(&status_body("wamid.standin.1", "sent", Some("k-race")))
        .await;
    s.post(&status_body("wamid.standin.1", "delivered", Some("k-race")))
        .await;
    s.graph.release.notify_one();
    let answer = tokio::time::timeout(HANG_GUARD, send)
        .await
        .expect("answers")
        .unwrap()
        .expect("sent");
    let message = answer.message.unwrap();
    let stored = s.message(USER, "wamid.standin.1").await;
    assert_eq!(stored.id, message.id);
    assert_eq!(stored.status, pb::MessageStatus::Delivered as i32);
}

async fn a_retry_racing_its_send_posts_once(backend: Backend) {
    let s = Setup::start(backend).await;
    s.post(&case("message.json", "text", "wamid.hello")).await;
    s.graph.script.lock().unwrap().hold_sends = true;
    let arrived = s.graph.arrived.notified();
    let (mut a, mut b) = (s.app.client().await, s.app.client().await);
    let first =
        tokio::spawn(async move { common::send(&mut a, "wa", USER, "once", "k-once").await });
    tokio::time::timeout(HANG_GUARD, arrived)
        .await
        .expect("arrives");
    let retry =
        tokio::spawn(async move { common::send(&mut b, "wa", USER, "once", "k-once").await });
    // The retry reaches the source's wait for the first (nothing else can end it).
    tokio::task::yield_now().await;
    s.graph.release.notify_one();
    let one = first.await.unwrap().expect("first");
    s.graph.release.notify_one();
    let two = tokio::time::timeout(HANG_GUARD, retry)
        .await
        .unwrap()
        .unwrap()
        .expect("retry");
    assert_eq!(one.message.unwrap().id, two.message.unwrap().id);
    let texts = s
        .graph
        .posts()
        .iter()
        .filter(|p| p["type"] == "text")
        .count();
    assert_eq!(texts, 1, "posted once");
}

async fn graph_errors_are_typed(backend: Backend) {
    let s = Setup::start(backend).await;
    let push = |status: u16, code: i64, n: usize| {
        let mut script = s.graph.script.lock().unwrap();
        for _ in 0..n {
            script
                .answers
                .push_back((status, error_body(code, "scripted")));
        }
    };
    push(400, 131047, 1);
    let error = send_one(&s, "late", "e1").await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error:?}");
    assert!(error.message().contains("131047"));
    // A rate limit twice, then through: retried.
    push(429, 130429, 2);
    send_one(&s, "busy", "e2").await.expect("retried through");
    // Longer than the retries: RESOURCE_EXHAUSTED.
    push(400, 131056, 3);
    let error = send_one(&s, "busier", "e3").await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::ResourceExhausted, "{error:?}");
    // An invalid token: UNAVAILABLE and the source DOWN.
    push(401, 190, 1);
    let error = send_one(&s, "token", "e4").await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::Unavailable, "{error:?}");
    let status = s
        .app
        .client()
        .await
        .get_sync_status(pb::GetSyncStatusRequest {
            session_id: "wa".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.source_state, pb::SourceState::Down as i32);
}

/// SendMessage with a file of `mime_type` named `name` (and `text`) under `key`.
async fn send_file(
    s: &Setup,
    text: &str,
    name: &str,
    mime_type: &str,
    data: &[u8],
    key: &str,
) -> Result<pb::Message, tonic::Status> {
    s.app
        .client()
        .await
        .send_message(pb::SendMessageRequest {
            session_id: "wa".into(),
            chat_id: USER.into(),
            text: text.into(),
            client_message_id: key.into(),
            attachments: vec![pb::AttachmentUpload {
                file_name: name.into(),
                mime_type: mime_type.into(),
                data: data.to_vec(),
            }],
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().message.expect("message"))
}

/// A file is uploaded first (`POST /{version}/{phone_number_id}/media`, multipart, checked by
/// the stand-in against Meta's form), then sent by its media id as an image, video, audio or
/// document by its MIME type, with the text as caption (none on audio) and a document's file
/// name; a retry uploads and posts nothing again; text with audio, and a type the Cloud API
/// refuses, fail the message.
async fn files_are_uploaded_then_sent(backend: Backend) {
    let s = Setup::start(backend).await;
    s.post(&case("message.json", "text", "wamid.hello")).await;
    let quoted = s.message(USER, "wamid.hello").await;
    let cases = [
        (
            "look",
            "photo.jpg",
            "image/jpeg",
            "image",
            &b"\xff\xd8 jpeg"[..],
        ),
        (
            "",
            "report \"q3\".pdf",
            "application/pdf",
            "document",
            &b"%PDF-1.7"[..],
        ),
        ("", "voice.ogg", "audio/ogg", "audio", &b"OggS opus"[..]),
        (
            "minutes",
            "notes; v2\r\nfinal.txt",
            "text/plain",
            "document",
            &b"plain text"[..],
        ),
        (
            "watch",
            "clip.mp4",
            "video/mp4",
            "video",
            &b"\0\0\0 ftypmp42"[..],
        ),
    ];
    for (i, (text, name, mime, kind, data)) in cases.into_iter().enumerate() {
        let key = format!("f{i}");
        let sent = send_file(&s, text, name, mime, data, &key)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(sent.status, pb::MessageStatus::Sent as i32, "{name}");
        assert_eq!(sent.kind, pb::MessageKind::Media as i32, "{name}");
        let upload = s.graph.uploads().last().cloned().expect("an upload");
        assert_eq!(s.graph.uploads().len(), i + 1, "one upload per file");
        assert_eq!(upload.bytes, data, "{name}: the bytes");
        assert_eq!(upload.mime_type, mime);
        // `"` and `;` reach Graph as they are (quoted); CR and LF as %0D and %0A.
        let shown_name = name.replace('\r', "%0D").replace('\n', "%0A");
        assert_eq!(upload.file_name, shown_name);
        let post = s.posts_last();
        assert_eq!(post["type"], kind, "{post}");
        assert_eq!(post[kind]["id"], upload.id.as_str(), "{post}");
        assert_eq!(post["to"], USER);
        assert_eq!(post["biz_opaque_callback_data"], key.as_str());
        match text {
            "" => assert!(post[kind].get("caption").is_none(), "{post}"),
            text => assert_eq!(post[kind]["caption"], text, "{post}"),
        }
        if kind == "document" {
            assert_eq!(post[kind]["filename"], name, "{post}");
        }
        let stored = s.message(USER, &sent.provider_message_id).await;
        assert_eq!(stored.id, sent.id);
        assert_eq!(stored.attachments.len(), 1);
        assert_eq!(stored.attachments[0].file_name, name);
    }
    // A retry under a used key: the same message, nothing uploaded or posted again.
    let (uploads, posts) = (s.graph.uploads().len(), s.graph.posts().len());
    let again = send_file(
        &s,
        "look",
        "photo.jpg",
        "image/jpeg",
        b"\xff\xd8 jpeg",
        "f0",
    )
    .await
    .expect("retry");
    let first = s
        .messages(USER)
        .await
        .into_iter()
        .find(|m| m.client_message_id == "f0")
        .expect("the first send");
    assert_eq!(
        (again.id, &again.provider_message_id),
        (first.id, &first.provider_message_id)
    );
    assert_eq!(
        (s.graph.uploads().len(), s.graph.posts().len()),
        (uploads, posts)
    );
    // A reply with a file carries context.message_id.
    s.app
        .client()
        .await
        .send_message(pb::SendMessageRequest {
            session_id: "wa".into(),
            chat_id: USER.into(),
            text: "this one".into(),
            client_message_id: "f-reply".into(),
            attachments: vec![pb::AttachmentUpload {
                file_name: "a.png".into(),
                mime_type: "image/png".into(),
                data: b"\x89PNG".to_vec(),
            }],
            reply_to_message_id: quoted.id,
        })
        .await
        .expect("a reply with a file");
    assert_eq!(s.posts_last()["context"]["message_id"], "wamid.hello");
    // Text with audio: WhatsApp shows no caption there; refused before any upload.
    let uploads = s.graph.uploads().len();
    let error = send_file(
        &s,
        "hear this",
        "v.ogg",
        "audio/ogg",
        b"OggS",
        "f-audio-text",
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error:?}");
    assert_eq!(s.graph.uploads().len(), uploads);
    // A type the Cloud API does not take: Meta's upload error, the message FAILED.
    let error = send_file(&s, "", "anim.gif", "image/gif", b"GIF89a", "f-gif")
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error:?}");
    assert!(error.message().contains("131053"), "{error:?}");
    let failed = s
        .messages(USER)
        .await
        .into_iter()
        .find(|m| m.client_message_id == "f-gif")
        .expect("the refused send is stored");
    assert_eq!(failed.status, pb::MessageStatus::Failed as i32);
    // Two files in one message: INVALID_ARGUMENT, nothing sent.
    let error = s
        .app
        .client()
        .await
        .send_message(pb::SendMessageRequest {
            session_id: "wa".into(),
            chat_id: USER.into(),
            text: String::new(),
            client_message_id: "f-two".into(),
            attachments: vec![
                pb::AttachmentUpload {
                    file_name: "a.png".into(),
                    mime_type: "image/png".into(),
                    data: b"a".to_vec(),
                },
                pb::AttachmentUpload {
                    file_name: "b.png".into(),
                    mime_type: "image/png".into(),
                    data: b"b".to_vec(),
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
    assert_eq!(s.graph.uploads().len(), uploads);
}

async fn reactions_and_reads_go_upstream(backend: Backend) {
    let s = Setup::start(backend).await;
    s.post(&case("message.json", "text", "wamid.in")).await;
    let incoming = s.message(USER, "wamid.in").await;
    let mut client = s.app.client().await;
    client
        .react_to_message(pb::ReactToMessageRequest {
            session_id: "wa".into(),
            message_id: incoming.id,
            emoji: "👍".into(),
            request_id: "r1".into(),
        })
        .await
        .expect("react");
    let post = s.posts_last();
    assert_eq!(post["type"], "reaction");
    assert_eq!(post["reaction"]["message_id"], "wamid.in");
    assert_eq!(post["reaction"]["emoji"], "👍");
    for _ in 0..2 {
        client
            .update_message_status(pb::UpdateMessageStatusRequest {
                session_id: "wa".into(),
                message_id: incoming.id,
                status: pb::MessageStatus::Read as i32,
                ..Default::default()
            })
            .await
            .expect("read");
    }
    let reads: Vec<Value> = s
        .graph
        .posts()
        .into_iter()
        .filter(|p| p["status"] == "read")
        .collect();
    assert_eq!(reads.len(), 1, "read upstream once");
    assert_eq!(reads[0]["message_id"], "wamid.in");
}

async fn media_with_an_expired_url(backend: Backend) {
    let s = Setup::start(backend).await;
    {
        let mut script = s.graph.script.lock().unwrap();
        script.media.insert("m1".into(), (b"photo".to_vec(), 0));
        script.expire_first_url.push("m1".into());
    }
    let mut body = case("message.json", "image", "wamid.img");
    let image = &mut value(&mut body)["messages"][0]["image"];
    image["id"] = json!("m1");
    image["sha256"] = json!(common::hex_sha256(b"photo"));
    s.post(&body).await;
    let stored = s.message(USER, "wamid.img").await;
    assert!(stored.attachments[0].stored, "a fresh URL was asked for");
    assert_eq!(stored.attachments[0].sha256, common::hex_sha256(b"photo"));
    // A media id Meta no longer has: stored false, the message kept.
    let mut gone = case("message.json", "image", "wamid.gone");
    value(&mut gone)["messages"][0]["image"]["id"] = json!("nope");
    s.post(&gone).await;
    assert!(!s.message(USER, "wamid.gone").await.attachments[0].stored);
}

/// An image message with media `media_id` (its `sha256` the hex of `bytes`) sent `age_secs`
/// ago.
fn image_body(wamid: &str, media_id: &str, bytes: &[u8], age_secs: u64) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut body = case("message.json", "image", wamid);
    let message = &mut value(&mut body)["messages"][0];
    message["timestamp"] = json!((now - age_secs).to_string());
    message["image"]["id"] = json!(media_id);
    message["image"]["sha256"] = json!(common::hex_sha256(bytes));
    body
}

/// GetMedia of session `wa` to the end: the bytes.
async fn get_media(
    client: &mut chatsync::grpc::pb::chat_sync_service_client::ChatSyncServiceClient<
        tonic::transport::Channel,
    >,
    sha256: &str,
) -> Vec<u8> {
    let mut stream = client
        .get_media(pb::GetMediaRequest {
            session_id: "wa".into(),
            sha256: sha256.into(),
        })
        .await
        .expect("GetMedia")
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(frame) = stream.message().await.expect("a media frame") {
        bytes.extend(frame.data);
    }
    bytes
}

/// A file whose download fails (both of the webhook's tries: a URL, then a fresh one) is
/// stored `stored = false` and kept in the inbox; the background retry asks for a fresh URL
/// and downloads it: the attachment becomes stored with its hash and size, a
/// `message_updated` (MESSAGE_CHANGE_ATTACHMENT) change says so, GetMedia serves the bytes,
/// and the inbox item is gone. A file whose media id has expired (a message sent 8 days ago;
/// Meta keeps a webhook's media id 7 days) is not tried again: its item is dropped and its
/// attachment stays unstored.
async fn a_failed_download_is_retried(backend: Backend) {
    let database_url = backend.database_url.clone();
    let s = Setup::start(backend).await;
    let photo = b"a photo that took three tries".to_vec();
    {
        let mut script = s.graph.script.lock().unwrap();
        script.media.insert("m-retry".into(), (photo.clone(), 0));
        // The webhook's two tries and the first retry fail.
        script.fail_downloads.insert("m-retry".into(), 3);
        script.media.insert("m-old".into(), (b"old".to_vec(), 0));
        script.fail_downloads.insert("m-old".into(), u32::MAX);
    }
    s.post(&image_body("wamid.retry", "m-retry", &photo, 0))
        .await;
    let first = s.message(USER, "wamid.retry").await;
    assert_eq!(first.attachments.len(), 1);
    assert!(!first.attachments[0].stored, "answered before the retry");
    common::eventually("the retried download is stored", || async {
        s.message(USER, "wamid.retry").await.attachments[0].stored
    })
    .await;
    let stored = s.message(USER, "wamid.retry").await;
    assert_eq!(stored.id, first.id);
    assert_eq!(stored.attachments[0].sha256, common::hex_sha256(&photo));
    assert_eq!(stored.attachments[0].size_bytes, photo.len() as u64);
    let mut client = s.app.client().await;
    assert_eq!(
        get_media(&mut client, &stored.attachments[0].sha256).await,
        photo
    );
    // A fresh URL for each try: the webhook's 2, then 2 retries.
    assert_eq!(s.graph.script.lock().unwrap().media["m-retry"].1, 4);
    // Subscribers learn it from the change feed.
    let mut replay = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: "wa".into(),
            chat_ids: vec![],
            after_seq: Some(0),
        })
        .await
        .expect("subscribe")
        .into_inner();
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let event = tokio::time::timeout_at(deadline, replay.message())
            .await
            .expect("the attachment's change in time")
            .expect("stream ok")
            .expect("stream open");
        if let Some(Event::MessageUpdated(updated)) = &event.event
            && updated.id == stored.id
        {
            assert_eq!(
                event.message_change,
                pb::MessageChange::Attachment as i32,
                "{event:?}"
            );
            assert!(updated.attachments[0].stored, "{event:?}");
            break;
        }
        assert!(
            !matches!(event.event, Some(Event::Ready(_))),
            "the replay ended without the attachment's change"
        );
    }
    common::eventually("the retry leaves the inbox", || async {
        !waiting_keys_sql(&database_url)
            .await
            .contains("media:wamid.retry:0")
    })
    .await;

    s.post(&image_body("wamid.old", "m-old", b"old", 8 * 24 * 3600))
        .await;
    assert!(!s.message(USER, "wamid.old").await.attachments[0].stored);
    common::eventually("the expired retry leaves the inbox", || async {
        !waiting_keys_sql(&database_url)
            .await
            .contains("media:wamid.old:0")
    })
    .await;
    assert_eq!(
        s.graph.script.lock().unwrap().media["m-old"].1,
        2,
        "no retry asked for a URL"
    );
    assert!(!s.message(USER, "wamid.old").await.attachments[0].stored);
}

/// A retry of a failed download outlives its process: the server is killed -9 while the file
/// still fails, and the restarted server's inbox sweep takes the kept retry up (once the dead
/// process's claim on it expires) and stores the file once Graph serves it.
async fn a_restart_resumes_media_retries(backend: Backend) {
    let graph = GraphApi::start(TOKEN).await;
    let config = replica_config(&backend, &graph);
    let dying = Replica::start(&config).await;
    kill_while_a_download_fails(&backend, &graph, dying, "restart").await;
    let replica = Replica::start(&config).await;
    the_file_is_stored(&backend, &replica, "restart").await;
}

/// A replica that dies while a file's download keeps failing leaves its retry to the replicas
/// still running, not to its own restart: the first replica claims the retry, and after its
/// kill -9 the other replica's periodic inbox sweep takes the retry up (once the dead
/// replica's claim has expired) and stores the file when Graph serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_replica_takes_over_a_dead_replicas_media_retry() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let graph = GraphApi::start(TOKEN).await;
    let config = replica_config(&backend, &graph);
    let dying = Replica::start(&config).await;
    let running = Replica::start(&config).await;
    kill_while_a_download_fails(&backend, &graph, dying, "takeover").await;
    the_file_is_stored(&backend, &running, "takeover").await;
}

/// Posts `wamid.{name}.img` (an image whose download Graph keeps failing) to `replica`, waits
/// until its retry is kept and claimed, and kills the replica -9; then Graph serves the file.
async fn kill_while_a_download_fails(
    backend: &Backend,
    graph: &GraphApi,
    mut replica: Replica,
    name: &str,
) {
    let (wamid, media_id) = (format!("wamid.{name}.img"), format!("m-{name}"));
    let photo = media_bytes(name);
    {
        let mut script = graph.script.lock().unwrap();
        script.media.insert(media_id.clone(), (photo.clone(), 0));
        script.fail_downloads.insert(media_id.clone(), u32::MAX);
    }
    let body = serde_json::to_vec(&image_body(&wamid, &media_id, &photo, 0)).unwrap();
    let http = reqwest::Client::new();
    assert_eq!(post_signed(&http, &replica.url, body).await, Ok(200));
    assert!(!stored_once(&replica, &wamid).await[&wamid].attachments[0].stored);
    let key = format!("media:{wamid}:0");
    assert!(
        waiting_keys_sql(&backend.database_url).await.contains(&key),
        "the retry is kept"
    );
    // The retry claims its key before its first pause.
    common::eventually("the replica claims the retry", || async {
        claim_holders(backend, &key).await.len() == 1
    })
    .await;
    replica.kill().await;
    graph
        .script
        .lock()
        .unwrap()
        .fail_downloads
        .insert(media_id, 0);
}

/// Waits until `replica` has stored the file of `wamid.{name}.img` and serves its bytes, and
/// the retry's inbox item and claim are gone.
async fn the_file_is_stored(backend: &Backend, replica: &Replica, name: &str) {
    let wamid = format!("wamid.{name}.img");
    let photo = media_bytes(name);
    common::eventually("a running server stores the file", || async {
        stored_once(replica, &wamid).await[&wamid].attachments[0].stored
    })
    .await;
    let after = &stored_once(replica, &wamid).await[&wamid];
    assert_eq!(after.attachments[0].sha256, common::hex_sha256(&photo));
    assert_eq!(
        get_media(&mut replica.client().await, &after.attachments[0].sha256).await,
        photo
    );
    let key = format!("media:{wamid}:0");
    common::eventually("the retry's item and claim are dropped", || async {
        !waiting_keys_sql(&backend.database_url).await.contains(&key)
            && claim_holders(backend, &key).await.is_empty()
    })
    .await;
}

/// The bytes of the photo of `wamid.{name}.img`.
fn media_bytes(name: &str) -> Vec<u8> {
    format!("a photo downloaded after its replica died ({name})").into_bytes()
}

/// Who holds the claim on `key` (none or one replica id).
async fn claim_holders(backend: &Backend, key: &str) -> Vec<String> {
    strings_sql(
        &backend.database_url,
        &format!("SELECT holder FROM send_claims WHERE client_message_id = '{key}'"),
        "holder",
    )
    .await
}

/// A configuration for `chatsync serve` processes with the `wa` session (its secrets in files
/// beside it) against `graph`, on `backend`'s database.
fn replica_config(backend: &Backend, graph: &GraphApi) -> PathBuf {
    let dir = backend.dir.path();
    for (name, value) in [("token", TOKEN), ("secret", SECRET), ("verify", VERIFY)] {
        std::fs::write(dir.join(name), value).expect("write a secret");
    }
    let path = dir.join("replica.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"{}\"\n\
             [[sessions]]\nid = \"wa\"\nsource = \"whatsapp-cloud\"\n\
             phone_number_id = \"{NUMBER}\"\naccess_token_file = \"{}\"\n\
             app_secret_file = \"{}\"\nverify_token_file = \"{}\"\n\
             graph_api_url = \"{}\"\ngraph_api_version = \"{VERSION}\"\n\
             inbox_sweep_interval_ms = 100\n",
            backend.database_url,
            dir.join("token").display(),
            dir.join("secret").display(),
            dir.join("verify").display(),
            graph.url,
        ),
    )
    .expect("write config");
    path
}

/// POSTs a body signed with the test secret to a server at `url`: the HTTP status, or the
/// transport error (a killed server).
async fn post_signed(http: &reqwest::Client, url: &str, bytes: Vec<u8>) -> Result<u16, String> {
    http.post(format!("{url}/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sign(&bytes, SECRET))
        .body(bytes)
        .send()
        .await
        .map(|answer| answer.status().as_u16())
        .map_err(|error| error.to_string())
}

/// Every event of `wa` from seq 0, and the head seq the replay ends at.
async fn replay_wa(
    client: &mut chatsync::grpc::pb::chat_sync_service_client::ChatSyncServiceClient<
        tonic::transport::Channel,
    >,
) -> (u64, Vec<Event>) {
    let mut stream = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: "wa".into(),
            chat_ids: Vec::new(),
            after_seq: Some(0),
        })
        .await
        .expect("SubscribeMessages")
        .into_inner();
    let mut events = Vec::new();
    loop {
        let next = tokio::time::timeout(HANG_GUARD, stream.message())
            .await
            .expect("the replay ends")
            .expect("a frame")
            .expect("the stream stays open");
        match next.event {
            Some(Event::Ready(ready)) => return (ready.head_seq, events),
            Some(event) => events.push(event),
            None => {}
        }
    }
}

/// Asserts that no message's status ever went backwards in `events`: each message's
/// `status_updated` events climb strictly (none here is FAILED).
fn assert_statuses_only_climb(events: &[Event]) {
    let mut last: HashMap<u64, i32> = HashMap::new();
    for event in events {
        if let Event::StatusUpdated(update) = event {
            assert_ne!(update.status, pb::MessageStatus::Failed as i32);
            let before = last.insert(update.message_id, update.status);
            if let Some(before) = before {
                assert!(
                    update.status > before,
                    "{}: status {before} then {}",
                    update.provider_message_id,
                    update.status
                );
            }
        }
    }
}

/// The webhook bodies of `wamid`: its message twice, and its statuses (each read one twice),
/// all signed as Meta would send them.
fn bodies_of(wamid: &str, statuses: &[&str]) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    let message = serde_json::to_vec(&case("message.json", "text", wamid)).unwrap();
    bodies.push(message.clone());
    bodies.push(message);
    for status in statuses {
        bodies.push(serde_json::to_vec(&status_body(wamid, status, None)).unwrap());
    }
    bodies
}

/// The messages of `USER`'s chat whose wamid starts with `prefix`, by wamid; asserts each is
/// stored once.
async fn stored_once(replica: &Replica, prefix: &str) -> HashMap<String, pb::Message> {
    let mut client = replica.client().await;
    let chats = common::all_chats(&mut client, "wa").await;
    if !chats.iter().any(|c| c.chat_id == USER) {
        return HashMap::new();
    }
    let mut by_wamid = HashMap::new();
    for message in all_messages(&mut client, "wa", USER).await {
        if message.provider_message_id.starts_with(prefix) {
            let wamid = message.provider_message_id.clone();
            assert!(
                by_wamid.insert(wamid.clone(), message).is_none(),
                "{wamid} stored twice"
            );
        }
    }
    by_wamid
}

/// Messages and their statuses (sent, delivered, read, duplicated, in a shuffled order, a
/// status often before its message) POSTed at once over two replica processes on one
/// PostgreSQL database: every message is stored once, no status goes backwards, each ends
/// where its furthest status says, and no status is left waiting in the inbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_spread_over_two_replicas_store_once_and_never_go_back() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let graph = GraphApi::start(TOKEN).await;
    let config = replica_config(&backend, &graph);
    let first = Replica::start(&config).await;
    let second = Replica::start(&config).await;
    const WAMIDS: usize = 40;
    let mut bodies = Vec::new();
    for i in 0..WAMIDS {
        let statuses: &[&str] = if i % 3 == 0 {
            &["delivered", "sent", "delivered"]
        } else {
            &["read", "delivered", "sent", "read", "delivered"]
        };
        bodies.extend(bodies_of(&format!("wamid.race.{i}"), statuses));
    }
    // A shuffle (Fisher-Yates, xorshift) from a seed printed with any failure.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        | 1;
    let mut x = seed;
    for i in (1..bodies.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bodies.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let http = reqwest::Client::new();
    let posts: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| {
            let url = if i % 2 == 0 { &first.url } else { &second.url }.clone();
            let http = http.clone();
            tokio::spawn(async move { post_signed(&http, &url, bytes).await })
        })
        .collect();
    for post in posts {
        let status = tokio::time::timeout(HANG_GUARD, post)
            .await
            .expect("no POST hangs")
            .expect("poster");
        assert_eq!(status, Ok(200), "seed {seed}");
    }
    let db = sea_orm::Database::connect(&backend.database_url)
        .await
        .expect("connect");
    let kept: Vec<(String, Option<String>)> = sea_orm::ConnectionTrait::query_all_raw(
        &db,
        sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT item_key, error FROM webhook_inbox".to_owned(),
        ),
    )
    .await
    .expect("read the inbox")
    .into_iter()
    .map(|row| {
        (
            row.try_get("", "item_key").expect("key"),
            row.try_get("", "error").expect("error"),
        )
    })
    .collect();
    let stored = stored_once(&second, "wamid.race.").await;
    let stuck: Vec<_> = kept
        .iter()
        .map(|(key, _)| {
            let wamid = key.split(':').nth(1).unwrap_or_default();
            (
                key,
                stored
                    .get(wamid)
                    .map(|m| (m.id, m.status, m.chat_id.clone())),
            )
        })
        .collect();
    assert!(
        kept.is_empty(),
        "nothing left in the inbox (seed {seed}): {stuck:?}"
    );
    let stored = stored_once(&second, "wamid.race.").await;
    assert_eq!(stored.len(), WAMIDS, "seed {seed}");
    for i in 0..WAMIDS {
        let want = if i % 3 == 0 {
            pb::MessageStatus::Delivered
        } else {
            pb::MessageStatus::Read
        };
        let wamid = format!("wamid.race.{i}");
        assert_eq!(stored[&wamid].status, want as i32, "{wamid}, seed {seed}");
    }
    let (_, events) = replay_wa(&mut first.client().await).await;
    assert_statuses_only_climb(&events);
    let created = events
        .iter()
        .filter(|e| matches!(e, Event::MessageCreated(m) if m.provider_message_id.starts_with("wamid.race.")))
        .count();
    assert_eq!(created, WAMIDS, "one message_created per wamid");
}

/// SendMessage with one `client_message_id` on two replica processes of one PostgreSQL
/// database, the second while the first call's post still waits for Graph's answer (the
/// stand-in holds it): the second call posts nothing and answers the message as stored
/// (PENDING, the same id); the first then makes it SENT. Graph sees one post; a later retry
/// on either replica answers the SENT message and posts nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_racing_its_send_on_another_replica_posts_once() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let graph = GraphApi::start(TOKEN).await;
    let config = replica_config(&backend, &graph);
    let first = Replica::start(&config).await;
    let second = Replica::start(&config).await;
    let http = reqwest::Client::new();
    let hello = serde_json::to_vec(&case("message.json", "text", "wamid.hello")).unwrap();
    assert_eq!(post_signed(&http, &first.url, hello).await, Ok(200));
    graph.script.lock().unwrap().hold_sends = true;
    let arrived = graph.arrived.notified();
    let mut a = first.client().await;
    let one =
        tokio::spawn(async move { common::send(&mut a, "wa", USER, "once", "k-replicas").await });
    tokio::time::timeout(HANG_GUARD, arrived)
        .await
        .expect("the first post arrives");
    // The retry on the other replica, while the first post is held: a second post would
    // arrive at the stand-in (and be held too) instead of the call answering.
    let posted_again = graph.arrived.notified();
    let mut b = second.client().await;
    let retry = common::send(&mut b, "wa", USER, "once", "k-replicas");
    let two = tokio::select! {
        answer = tokio::time::timeout(HANG_GUARD, retry) => answer
            .expect("the retry answers while the first post is held")
            .expect("the retry succeeds"),
        _ = posted_again => panic!("the retry on the other replica posted again"),
    };
    let two = two.message.expect("a message");
    assert_eq!(two.status, pb::MessageStatus::Pending as i32, "{two:?}");
    graph.release.notify_one();
    let one = tokio::time::timeout(HANG_GUARD, one)
        .await
        .expect("the first call answers")
        .unwrap()
        .expect("sent")
        .message
        .expect("a message");
    assert_eq!(one.id, two.id, "one message");
    assert_eq!(one.status, pb::MessageStatus::Sent as i32);
    for replica in [&first, &second] {
        let again = common::send(
            &mut replica.client().await,
            "wa",
            USER,
            "once",
            "k-replicas",
        )
        .await
        .expect("a later retry")
        .message
        .expect("a message");
        assert_eq!(
            (again.id, again.status, &again.provider_message_id),
            (
                one.id,
                pb::MessageStatus::Sent as i32,
                &one.provider_message_id
            )
        );
    }
    let texts = graph.posts().iter().filter(|p| p["type"] == "text").count();
    assert_eq!(texts, 1, "Graph saw one post");
}

/// Webhook bodies POSTed at once to a replica process, which is killed -9 as soon as the first
/// 200 arrives, three times over, restarted on the same database each time: every body
/// acknowledged is stored (a message present, its acknowledged status applied), POSTing the
/// acknowledged bodies again stores nothing new, and once everything is in, a redelivery of
/// every body takes no seq at all.
async fn nothing_acknowledged_is_lost_to_a_kill_9(backend: Backend) {
    let graph = GraphApi::start(TOKEN).await;
    let config = replica_config(&backend, &graph);
    let http = reqwest::Client::new();
    const ROUNDS: usize = 3;
    const PER_ROUND: usize = 16;
    let mut replica = Replica::start(&config).await;
    let mut every_body: Vec<Vec<u8>> = Vec::new();
    // (wamid, the acknowledged body was its message) → acknowledged
    let mut acked_messages: HashSet<String> = HashSet::new();
    let mut acked_reads: HashSet<String> = HashSet::new();
    let mut acked_bodies: Vec<Vec<u8>> = Vec::new();
    for round in 0..ROUNDS {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..PER_ROUND {
            let wamid = format!("wamid.kill.{round}.{i}");
            let message = serde_json::to_vec(&case("message.json", "text", &wamid)).unwrap();
            let read = serde_json::to_vec(&status_body(&wamid, "read", None)).unwrap();
            // The read goes first half the time: it waits in the inbox for its message.
            let pair = if i % 2 == 0 {
                [(true, message), (false, read)]
            } else {
                [(false, read), (true, message)]
            };
            for (is_message, bytes) in pair {
                every_body.push(bytes.clone());
                let (http, url, tx, wamid) =
                    (http.clone(), replica.url.clone(), tx.clone(), wamid.clone());
                tokio::spawn(async move {
                    let answer = post_signed(&http, &url, bytes.clone()).await;
                    let _ = tx.send((wamid, is_message, bytes, answer));
                });
            }
        }
        drop(tx);
        let mut answers = Vec::new();
        loop {
            let answer = tokio::time::timeout(HANG_GUARD, rx.recv())
                .await
                .expect("an answer")
                .expect("some POST is answered 200 before the kill");
            let ok = answer.3 == Ok(200);
            answers.push(answer);
            if ok {
                break;
            }
        }
        // kill -9 right after the first 200, with the other POSTs in flight.
        replica.kill().await;
        while let Some(answer) = tokio::time::timeout(HANG_GUARD, rx.recv())
            .await
            .expect("every POST ends once the server is gone")
        {
            answers.push(answer);
        }
        for (wamid, is_message, bytes, answer) in answers {
            if answer == Ok(200) {
                if is_message {
                    acked_messages.insert(wamid);
                } else {
                    acked_reads.insert(wamid);
                }
                acked_bodies.push(bytes);
            }
        }
        replica = Replica::start(&config).await;
        let stored = stored_once(&replica, "wamid.kill.").await;
        for wamid in &acked_messages {
            let message = stored
                .get(wamid)
                .unwrap_or_else(|| panic!("{wamid} was acknowledged and is lost"));
            if acked_reads.contains(wamid) {
                assert_eq!(
                    message.status,
                    pb::MessageStatus::Read as i32,
                    "{wamid}: its read was acknowledged"
                );
            }
        }
    }
    assert!(!acked_bodies.is_empty());
    // The acknowledged bodies again: nothing new.
    let (head, _) = replay_wa(&mut replica.client().await).await;
    for bytes in acked_bodies {
        assert_eq!(post_signed(&http, &replica.url, bytes).await, Ok(200));
    }
    let (again, events) = replay_wa(&mut replica.client().await).await;
    // Nothing new, except a read kept while its message was being stored by a body the kill
    // cut off before it looked at the inbox: the restart's sweep or a redelivery of the
    // message applies it. A read acknowledged together with its message was applied already.
    let new = &events[events.len().saturating_sub((again - head) as usize)..];
    assert!(
        new.iter().all(|e| matches!(e, Event::StatusUpdated(u)
            if !(acked_reads.contains(&u.provider_message_id)
                && acked_messages.contains(&u.provider_message_id)))),
        "a redelivery of acknowledged bodies stores nothing: {new:?}"
    );
    // Everything again (what was cut off by the kills arrives now), then once more: each
    // message stored once and read, and the second time stores nothing.
    for bytes in &every_body {
        assert_eq!(
            post_signed(&http, &replica.url, bytes.clone()).await,
            Ok(200)
        );
    }
    let stored = stored_once(&replica, "wamid.kill.").await;
    assert_eq!(stored.len(), ROUNDS * PER_ROUND);
    assert!(
        stored
            .values()
            .all(|m| m.status == pb::MessageStatus::Read as i32)
    );
    let (head, events) = replay_wa(&mut replica.client().await).await;
    assert_statuses_only_climb(&events);
    for bytes in every_body {
        assert_eq!(post_signed(&http, &replica.url, bytes).await, Ok(200));
    }
    assert_eq!(replay_wa(&mut replica.client().await).await.0, head);
}

/// The first status of a status body, as Meta sent it (what the inbox keeps), and its key.
fn kept_status(body: &Value) -> (String, String) {
    let status = &body["entry"][0]["changes"][0]["value"]["statuses"][0];
    let parsed: chatsync::sources::whatsapp_cloud::webhook::Status =
        serde_json::from_value(status.clone()).expect("a status");
    (parsed.key(), status.to_string())
}

/// The keys of the statuses waiting in `wa`'s inbox, paged through the store's own reads.
async fn waiting_keys(store: &chatsync::storage::Store) -> HashSet<String> {
    let mut keys = HashSet::new();
    let mut after = None;
    loop {
        let page = store
            .waiting_webhook_items("wa", after.as_ref(), 200)
            .await
            .expect("read the inbox");
        keys.extend(page.iter().map(|item| item.key.clone()));
        match page.into_iter().last() {
            Some(last) => after = Some(last),
            None => return keys,
        }
    }
}

/// The keys of the statuses waiting in `wa`'s inbox, read with SQL of its own while a server
/// runs on the database (on SQLite the server's store locks the file for its process).
async fn waiting_keys_sql(database_url: &str) -> HashSet<String> {
    strings_sql(
        database_url,
        "SELECT item_key FROM webhook_inbox WHERE session_id = 'wa' AND error IS NULL",
        "item_key",
    )
    .await
    .into_iter()
    .collect()
}

/// One text column of a query's rows, on a connection of its own (the server's store may be
/// in another process).
async fn strings_sql(database_url: &str, sql: &str, column: &str) -> Vec<String> {
    use sea_orm::{ConnectionTrait, Statement};
    let db = sea_orm::Database::connect(database_url)
        .await
        .expect("connect");
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("query");
    let values = rows
        .iter()
        .map(|row| row.try_get::<String>("", column).expect(column))
        .collect();
    db.close().await.ok();
    values
}

/// A restart of the server process applies the statuses a crash left waiting in the inbox for
/// a message that is stored already. The state is the one a kill -9 leaves when a body stored
/// a message and died before it looked at the inbox, while another request kept that
/// message's read there: written here, with the server down, through the store's own calls,
/// behind more never-applicable statuses than one page of the sweep (a status whose message
/// was sent from outside chatsync waits for ever). The restarted server applies the read (a
/// `status_updated` READ event), leaves the others waiting, and a message arriving later
/// still takes its own.
async fn a_restart_applies_statuses_left_waiting(backend: Backend) {
    let graph = GraphApi::start(TOKEN).await;
    let config = replica_config(&backend, &graph);
    let http = reqwest::Client::new();
    let mut replica = Replica::start(&config).await;
    let stored = "wamid.restart.stored";
    let message = serde_json::to_vec(&case("message.json", "text", stored)).unwrap();
    assert_eq!(post_signed(&http, &replica.url, message).await, Ok(200));
    // A read and a delivered for a message not stored yet: kept.
    let later = "wamid.restart.later";
    for status in ["delivered", "read"] {
        let bytes = serde_json::to_vec(&status_body(later, status, None)).unwrap();
        assert_eq!(post_signed(&http, &replica.url, bytes).await, Ok(200));
    }
    replica.kill().await;

    let mut never = HashSet::new();
    {
        let store = chatsync::storage::Store::connect(&backend.database_url)
            .await
            .expect("open the store");
        for i in 0..510 {
            let wamid = format!("wamid.restart.a{i:03}");
            let (key, payload) = kept_status(&status_body(&wamid, "read", None));
            assert!(
                store
                    .keep_webhook_item("wa", &key, &payload, None)
                    .await
                    .unwrap()
            );
            never.insert(key);
        }
        let (read_key, payload) = kept_status(&status_body(stored, "read", None));
        assert!(
            store
                .keep_webhook_item("wa", &read_key, &payload, None)
                .await
                .unwrap()
        );
        let waiting = waiting_keys(&store).await;
        assert_eq!(
            waiting.len(),
            513,
            "510 + the stored one's read + the later two"
        );
        assert!(waiting.contains(&read_key));
        assert_eq!(waiting, waiting_keys_sql(&backend.database_url).await);
    } // The store closes: on SQLite, the file is free for the next process.

    let replica = Replica::start(&config).await;
    let mut client = replica.client().await;
    let mut stream = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: "wa".into(),
            chat_ids: Vec::new(),
            after_seq: Some(0),
        })
        .await
        .expect("SubscribeMessages")
        .into_inner();
    // Replayed or live, the read arrives as a status_updated event.
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    let read = loop {
        let event = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("the kept read is applied after the restart")
            .expect("stream ok")
            .expect("stream open");
        if let Some(Event::StatusUpdated(update)) = event.event
            && update.provider_message_id == stored
        {
            break update;
        }
    };
    assert_eq!(read.status, pb::MessageStatus::Read as i32);
    let message = stored_once(&replica, stored).await;
    assert_eq!(message[stored].status, pb::MessageStatus::Read as i32);
    // The applied read leaves the inbox; the others wait on.
    let mut expected = never.clone();
    for status in ["delivered", "read"] {
        expected.insert(kept_status(&status_body(later, status, None)).0);
    }
    common::eventually("the applied read leaves the inbox", || {
        let (url, expected) = (&backend.database_url, &expected);
        async move { waiting_keys_sql(url).await == *expected }
    })
    .await;
    // The later message arrives: its kept statuses apply (READ, never back to DELIVERED).
    let bytes = serde_json::to_vec(&case("message.json", "text", later)).unwrap();
    assert_eq!(post_signed(&http, &replica.url, bytes).await, Ok(200));
    let message = stored_once(&replica, later).await;
    assert_eq!(message[later].status, pb::MessageStatus::Read as i32);
    assert_eq!(waiting_keys_sql(&backend.database_url).await, never);
}

/// The value of one series in a `/metrics` scrape (0 when it is absent).
async fn scrape(http: &reqwest::Client, url: &str, series: &str) -> u64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the scrape");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// The intake's counts on `/metrics` of a server process of its own (so that they start at 0):
/// a body for a number no session has, a batch with one malformed item, a bad signature and
/// a status waiting for its message each move their count, and only theirs.
async fn webhook_counts_on_metrics(backend: Backend) {
    let graph = GraphApi::start(TOKEN).await;
    let replica = Replica::start(&replica_config(&backend, &graph)).await;
    let http = reqwest::Client::new();
    let url = replica.url.as_str();
    const BODIES: &str = "chatsync_whatsapp_webhook_bodies_total";
    const ITEMS: &str = "chatsync_whatsapp_webhook_items_total";
    let counts = || async {
        [
            scrape(&http, url, &format!("{BODIES}{{outcome=\"stored\"}}")).await,
            scrape(
                &http,
                url,
                &format!("{BODIES}{{outcome=\"bad_signature\"}}"),
            )
            .await,
            scrape(
                &http,
                url,
                &format!("{BODIES}{{outcome=\"unknown_number\"}}"),
            )
            .await,
            scrape(&http, url, &format!("{ITEMS}{{outcome=\"unreadable\"}}")).await,
            scrape(&http, url, &format!("{ITEMS}{{outcome=\"waiting\"}}")).await,
        ]
    };
    assert_eq!(counts().await, [0, 0, 0, 0, 0]);
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains(&format!("# TYPE {BODIES} counter")), "{text}");

    let mut other = case("message.json", "text", "wamid.metrics.other");
    value(&mut other)["metadata"]["phone_number_id"] = json!("999");
    let bytes = serde_json::to_vec(&other).unwrap();
    assert_eq!(post_signed(&http, url, bytes).await, Ok(200));
    assert_eq!(counts().await, [1, 0, 1, 0, 0], "an unknown number");

    let mut batch = case("message.json", "text", "wamid.metrics.good");
    let good = value(&mut batch)["messages"][0].clone();
    let mut bad = good.clone();
    bad.as_object_mut().unwrap().remove("id");
    value(&mut batch)["messages"] = json!([bad, good]);
    let bytes = serde_json::to_vec(&batch).unwrap();
    assert_eq!(post_signed(&http, url, bytes).await, Ok(200));
    assert_eq!(counts().await, [2, 0, 1, 1, 0], "one malformed item");
    assert!(stored_once(&replica, "wamid.metrics.good").await.len() == 1);

    let bytes = serde_json::to_vec(&batch).unwrap();
    let refused = http
        .post(format!("{url}/webhooks/whatsapp"))
        .header("x-hub-signature-256", sign(&bytes, "another-app"))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    assert_eq!(counts().await, [2, 1, 1, 1, 0], "a bad signature");

    let bytes = serde_json::to_vec(&status_body("wamid.metrics.later", "read", None)).unwrap();
    assert_eq!(post_signed(&http, url, bytes).await, Ok(200));
    assert_eq!(
        counts().await,
        [3, 1, 1, 1, 1],
        "a status before its message"
    );
}

/// The business's own number as `metadata.display_phone_number` gives it: history messages
/// `from` it are the business's.
const DISPLAY: &str = "15550001111";

/// A `history` webhook body of one chunk, in the shape of Meta's history webhook reference
/// (<https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/history/>):
/// `threads` is `[[chat id, [message objects]]]`.
fn history_body(
    phase: u64,
    chunk_order: u64,
    progress: u64,
    threads: &[(&str, Vec<Value>)],
) -> Value {
    let threads: Vec<Value> = threads
        .iter()
        .map(|(id, messages)| json!({"id": id, "messages": messages}))
        .collect();
    history_value(json!([{
        "metadata": {"phase": phase, "chunk_order": chunk_order, "progress": progress},
        "threads": threads,
    }]))
}

/// A `history` change whose `value.history` is `history`.
fn history_value(history: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{
            "field": "history",
            "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": DISPLAY, "phone_number_id": NUMBER},
                "history": history,
            },
        }]}],
    })
}

/// One history message: text (or `media_placeholder` when `text` is `None`) from `from`,
/// with its last status.
fn history_message(id: &str, from: &str, text: Option<&str>, status: &str, at: u64) -> Value {
    let mut message = json!({
        "from": from, "id": id, "timestamp": at.to_string(),
        "history_context": {"status": status},
    });
    match text {
        Some(text) => {
            message["type"] = json!("text");
            message["text"] = json!({"body": text});
        }
        None => message["type"] = json!("media_placeholder"),
    }
    message
}

async fn sync_status(
    client: &mut chatsync::grpc::pb::chat_sync_service_client::ChatSyncServiceClient<
        tonic::transport::Channel,
    >,
) -> pb::GetSyncStatusResponse {
    client
        .get_sync_status(pb::GetSyncStatusRequest {
            session_id: "wa".into(),
        })
        .await
        .expect("GetSyncStatus")
        .into_inner()
}

/// The `history` webhook (a number moved over from the WhatsApp Business app) is imported as
/// a sync run: its chunks are the run's frames, seen by a SyncChats caller that attaches
/// while it runs and by GetSyncStatus; the chunk with `progress` 100 completes it. Messages
/// the business sent are its own (sender = the number, from_me) with their last status; a
/// media placeholder is a media message whose file a later webhook gives; a chunk delivered
/// again stores nothing; a restart leaves the run running; a declined history is a FAILED run
/// with Meta's reason.
async fn history_is_a_sync_run(backend: Backend) {
    let s = Setup::start(backend).await;
    let other = "12125557890";
    let chunk1 = history_body(
        0,
        1,
        40,
        &[
            (
                USER,
                vec![
                    history_message(
                        "wamid.h.1",
                        DISPLAY,
                        Some("Here is the info"),
                        "READ",
                        1_739_230_955,
                    ),
                    history_message("wamid.h.2", USER, None, "READ", 1_739_230_960),
                    history_message("wamid.h.3", USER, Some("Thanks!"), "READ", 1_739_230_970),
                ],
            ),
            (
                other,
                vec![history_message(
                    "wamid.h.4",
                    DISPLAY,
                    Some("Your order"),
                    "DELIVERED",
                    1_739_230_980,
                )],
            ),
        ],
    );
    s.post(&chunk1).await;
    // The run is no process's: a restart (on SQLite, one that interrupts every run it finds
    // RUNNING) leaves it running.
    let s = s.restart().await;
    let mut client = s.app.client().await;
    let running = sync_status(&mut client).await;
    assert_eq!(running.state, pb::SyncState::Running as i32, "{running:?}");
    let frame = running.progress.clone().expect("a frame");
    assert_eq!(
        (frame.n_chats, frame.total_messages_synced),
        (2, 4),
        "{frame:?}"
    );
    assert_eq!(frame.stage, pb::SyncStage::MessagesSaved as i32);

    // SyncChats attaches to the running history run instead of starting its own.
    let mut frames = client
        .sync_chats(pb::SyncChatsRequest {
            session_id: "wa".into(),
            limit_per_chat: Some(0),
            since: None,
        })
        .await
        .expect("SyncChats")
        .into_inner();
    let first = frames
        .message()
        .await
        .expect("a frame")
        .expect("a frame")
        .progress
        .unwrap();
    assert_eq!(first.sync_id, frame.sync_id, "the same run");

    // The same chunk again stores nothing; the last chunk completes the run.
    s.post(&chunk1).await;
    let older = history_message(
        "wamid.h.0",
        USER,
        Some("Hello, is the shop open?"),
        "READ",
        1_731_000_000,
    );
    s.post(&history_body(1, 1, 100, &[(USER, vec![older])]))
        .await;
    let mut last = first;
    while let Some(next) = frames.message().await.expect("frames end well") {
        last = next.progress.unwrap();
    }
    assert_eq!(last.stage, pb::SyncStage::Completed as i32, "{last:?}");
    assert_eq!(last.sync_id, frame.sync_id);
    assert_eq!(
        last.total_messages_synced, 5,
        "the repeated chunk counted nothing: {last:?}"
    );
    let done = sync_status(&mut client).await;
    assert_eq!(done.state, pb::SyncState::Succeeded as i32, "{done:?}");
    assert_eq!(done.progress.unwrap().sync_id, frame.sync_id);

    let user = s.messages(USER).await;
    let ids: Vec<&str> = user
        .iter()
        .map(|m| m.provider_message_id.as_str())
        .collect();
    assert_eq!(
        ids.iter().filter(|id| id.starts_with("wamid.h.")).count(),
        4,
        "{ids:?}"
    );
    let mine = s.message(USER, "wamid.h.1").await;
    assert_eq!(
        (mine.sender.as_str(), mine.from_me),
        (NUMBER, true),
        "{mine:?}"
    );
    assert_eq!(mine.status, pb::MessageStatus::Read as i32);
    let theirs = s.message(USER, "wamid.h.3").await;
    assert_eq!((theirs.sender.as_str(), theirs.from_me), (USER, false));
    let placeholder = s.message(USER, "wamid.h.2").await;
    assert_eq!(placeholder.kind, pb::MessageKind::Media as i32);
    assert!(!placeholder.attachments[0].stored, "{placeholder:?}");
    let order = s.message(other, "wamid.h.4").await;
    assert_eq!(order.status, pb::MessageStatus::Delivered as i32);
    assert!(order.from_me);
    let chats = common::all_chats(&mut client, "wa").await;
    let chat = chats
        .iter()
        .find(|c| c.chat_id == other)
        .expect("the other chat");
    assert_eq!(chat.name, format!("+{other}"));

    // The placeholder's file comes in a `history` webhook of its own, with the message.
    let bytes = b"a history photo".to_vec();
    s.graph
        .script
        .lock()
        .unwrap()
        .media
        .insert("hm1".into(), (bytes.clone(), 0));
    let mut file = case("message.json", "image", "wamid.h.2");
    {
        let change = &mut file["entry"][0]["changes"][0];
        change["field"] = json!("history");
        let message = &mut change["value"]["messages"][0];
        message["from"] = json!(USER);
        message["image"]["id"] = json!("hm1");
        message["image"]["mime_type"] = json!("image/jpeg");
        message["image"]["sha256"] = json!(common::hex_sha256(&bytes));
    }
    s.post(&file).await;
    let filled = s.message(USER, "wamid.h.2").await;
    assert!(filled.attachments[0].stored, "{filled:?}");
    assert_eq!(filled.attachments[0].sha256, common::hex_sha256(&bytes));
    assert_eq!(filled.attachments[0].mime_type, "image/jpeg");
    assert_eq!(
        get_media(&mut client, &filled.attachments[0].sha256).await,
        bytes
    );

    // A business that declines to share its history: a FAILED run with Meta's reason.
    s.post(&history_value(json!([{"errors": [{
        "code": 2593109,
        "title": "History sync is turned off by the business from the WhatsApp Business App",
    }]}])))
    .await;
    let declined = sync_status(&mut client).await;
    assert_eq!(declined.state, pb::SyncState::Failed as i32, "{declined:?}");
    assert!(declined.last_error.contains("2593109"), "{declined:?}");
    assert_ne!(
        declined.progress.unwrap().sync_id,
        frame.sync_id,
        "a run of its own"
    );
}

on_both_backends!(
    handshake_and_signatures,
    every_shared_case,
    duplicates_and_a_malformed_item,
    a_body_of_many_items,
    statuses_in_any_order,
    a_failed_status_keeps_its_error,
    a_failed_send_keeps_its_error,
    status_before_the_send_answer,
    a_retry_racing_its_send_posts_once,
    graph_errors_are_typed,
    files_are_uploaded_then_sent,
    reactions_and_reads_go_upstream,
    media_with_an_expired_url,
    a_failed_download_is_retried,
    a_restart_resumes_media_retries,
    nothing_acknowledged_is_lost_to_a_kill_9,
    a_restart_applies_statuses_left_waiting,
    webhook_counts_on_metrics,
    history_is_a_sync_run,
);

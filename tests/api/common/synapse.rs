//! A real Matrix homeserver for tests and benchmarks, and a small client-server API client to
//! act as the other people in the rooms.
//!
//! The homeserver is Synapse run by `scripts/synapse`: the shared one `scripts/test` starts
//! (its directory in `CHATSYNC_TEST_SYNAPSE_DIR`), or one of a test's own in a temp directory
//! (for tests that kill it). Users are registered per test through `/register` with
//! `m.login.dummy`, so tests never see each other's rooms.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

/// The repository root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn synapse(args: &[&str]) -> String {
    let output = Command::new(root().join("scripts/synapse"))
        .args(args)
        .output()
        .expect("run scripts/synapse");
    assert!(
        output.status.success(),
        "scripts/synapse {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A running Synapse.
pub struct Homeserver {
    pub url: String,
    pub dir: PathBuf,
    /// Started by this test (then killed when dropped), not the shared one.
    owned: bool,
}

impl Drop for Homeserver {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new(root().join("scripts/synapse"))
                .args(["kill", &self.dir.display().to_string()])
                .output();
        }
    }
}

impl Homeserver {
    /// The shared homeserver of `CHATSYNC_TEST_SYNAPSE_DIR`, or `None` when it is unset. Tests
    /// call `common::shared_homeserver`, which decides what a missing one means.
    pub fn from_env() -> Option<Self> {
        let dir = PathBuf::from(std::env::var_os("CHATSYNC_TEST_SYNAPSE_DIR")?);
        let url = synapse(&["url", &dir.display().to_string()]);
        Some(Self {
            url,
            dir,
            owned: false,
        })
    }

    /// A homeserver of the caller's own in `dir` (started, or restarted with its data).
    pub fn start(dir: &Path) -> Self {
        let url = synapse(&["start", &dir.display().to_string()]);
        Self {
            url,
            dir: dir.to_owned(),
            owned: true,
        }
    }

    /// SIGKILLs the homeserver, as a crash would.
    pub fn kill(&self) {
        synapse(&["kill", &self.dir.display().to_string()]);
    }

    /// Starts it again on the same port and data.
    pub fn restart(&self) {
        synapse(&["start", &self.dir.display().to_string()]);
    }

    /// Stops it (SIGTERM).
    pub fn stop(&self) {
        synapse(&["stop", &self.dir.display().to_string()]);
    }

    /// Registers a new user whose name starts with `prefix`, logged in.
    pub async fn register(&self, prefix: &str) -> MatrixUser {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let name = format!(
            "{prefix}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let body: Value = http
            .post(format!("{}/_matrix/client/v3/register", self.url))
            .json(&json!({
                "username": name, "password": "correct horse battery",
                "auth": {"type": "m.login.dummy"}, "initial_device_display_name": "test"
            }))
            .send()
            .await
            .expect("register")
            .json()
            .await
            .expect("register answer");
        let token = body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("registration refused: {body}"))
            .to_owned();
        MatrixUser {
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            token,
            url: self.url.clone(),
            http,
        }
    }
}

/// A logged-in Matrix user.
#[derive(Clone)]
pub struct MatrixUser {
    pub user_id: String,
    pub token: String,
    pub url: String,
    http: reqwest::Client,
}

fn enc(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl MatrixUser {
    /// A user logged in elsewhere (e.g. `scripts/synapse register`).
    pub fn from_token(url: &str, user_id: &str, token: &str) -> Self {
        Self {
            user_id: user_id.to_owned(),
            token: token.to_owned(),
            url: url.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(
                method.clone(),
                format!("{}/_matrix/client/v3{path}", self.url),
            )
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {answer}");
        answer
    }

    /// Creates a room, optionally named, inviting `invite` (who are then joined).
    pub async fn create_room(&self, name: Option<&str>, invite: &[&MatrixUser]) -> String {
        let mut body = json!({
            "preset": "private_chat",
            "invite": invite.iter().map(|u| u.user_id.clone()).collect::<Vec<_>>(),
        });
        if let Some(name) = name {
            body["name"] = json!(name);
        }
        let answer = self
            .call(reqwest::Method::POST, "/createRoom", Some(body))
            .await;
        let room_id = answer["room_id"].as_str().expect("room_id").to_owned();
        for user in invite {
            user.join(&room_id).await;
        }
        room_id
    }

    /// Sets the room's canonical alias `#local:localhost` (creating the alias).
    pub async fn set_alias(&self, room_id: &str, local: &str) -> String {
        let alias = format!("#{local}:localhost");
        self.call(
            reqwest::Method::PUT,
            &format!("/directory/room/{}", enc(&alias)),
            Some(json!({"room_id": room_id})),
        )
        .await;
        self.call(
            reqwest::Method::PUT,
            &format!("/rooms/{}/state/m.room.canonical_alias/", enc(room_id)),
            Some(json!({"alias": alias})),
        )
        .await;
        alias
    }

    /// Invites `user` to the room (who is not joined yet).
    pub async fn invite(&self, room_id: &str, user: &MatrixUser) {
        self.call(
            reqwest::Method::POST,
            &format!("/rooms/{}/invite", enc(room_id)),
            Some(json!({"user_id": user.user_id})),
        )
        .await;
    }

    pub async fn join(&self, room_id: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/join/{}", enc(room_id)),
            Some(json!({})),
        )
        .await;
    }

    pub async fn leave(&self, room_id: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/rooms/{}/leave", enc(room_id)),
            Some(json!({})),
        )
        .await;
    }

    async fn send_event(&self, room_id: &str, content: Value) -> String {
        let txn = uuid::Uuid::new_v4().simple().to_string();
        let answer = self
            .call(
                reqwest::Method::PUT,
                &format!("/rooms/{}/send/m.room.message/{txn}", enc(room_id)),
                Some(content),
            )
            .await;
        answer["event_id"].as_str().expect("event_id").to_owned()
    }

    /// Posts a text message; returns its event id.
    pub async fn post(&self, room_id: &str, text: &str) -> String {
        self.send_event(room_id, json!({"msgtype": "m.text", "body": text}))
            .await
    }

    /// Edits an earlier message (`m.replace`).
    pub async fn edit(&self, room_id: &str, event_id: &str, text: &str) -> String {
        self.send_event(
            room_id,
            json!({
                "msgtype": "m.text", "body": format!("* {text}"),
                "m.new_content": {"msgtype": "m.text", "body": text},
                "m.relates_to": {"rel_type": "m.replace", "event_id": event_id}
            }),
        )
        .await
    }

    /// Redacts an event.
    pub async fn redact(&self, room_id: &str, event_id: &str) {
        let txn = uuid::Uuid::new_v4().simple().to_string();
        self.call(
            reqwest::Method::PUT,
            &format!("/rooms/{}/redact/{}/{txn}", enc(room_id), enc(event_id)),
            Some(json!({"reason": "test"})),
        )
        .await;
    }

    /// Sends a public read receipt (`m.read`) for an event.
    pub async fn read_receipt(&self, room_id: &str, event_id: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/rooms/{}/receipt/m.read/{}", enc(room_id), enc(event_id)),
            Some(json!({})),
        )
        .await;
    }

    /// Every event of the room, oldest first, as this user sees it, read with
    /// `GET /messages?dir=b` pages of `page` events.
    pub async fn history(&self, room_id: &str, page: usize) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut path = format!("/rooms/{}/messages?dir=b&limit={page}", enc(room_id));
            if let Some(from) = &from {
                path.push_str(&format!("&from={}", enc(from)));
            }
            let answer = self.call(reqwest::Method::GET, &path, None).await;
            let chunk = answer["chunk"].as_array().cloned().unwrap_or_default();
            let empty = chunk.is_empty();
            events.extend(chunk);
            match answer["end"].as_str() {
                Some(end) if !empty => from = Some(end.to_owned()),
                _ => break,
            }
        }
        events.reverse();
        events
    }

    /// Every `m.room.message` event of the room, oldest first, as this user sees it.
    pub async fn messages(&self, room_id: &str) -> Vec<Value> {
        let mut events = self.history(room_id, 1000).await;
        events.retain(|e| e["type"] == "m.room.message");
        events
    }

    /// How many events the room's whole history holds, paging as chatsync does.
    pub async fn count_messages(&self, room_id: &str, page: usize) -> usize {
        self.history(room_id, page).await.len()
    }

    /// The users with a public read receipt on `event_id`, from an initial `/sync`.
    pub async fn readers_of(&self, room_id: &str, event_id: &str) -> Vec<String> {
        let sync = self
            .call(reqwest::Method::GET, "/sync?timeout=0", None)
            .await;
        let mut readers = Vec::new();
        for event in sync["rooms"]["join"][room_id]["ephemeral"]["events"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if event["type"] == "m.receipt"
                && let Some(users) = event["content"][event_id]["m.read"].as_object()
            {
                readers.extend(users.keys().cloned());
            }
        }
        readers
    }
}

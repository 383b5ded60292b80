//! A stand-in for Meta's Graph API (WhatsApp Cloud API), started by the tests on
//! `127.0.0.1:0`: it checks each request against the documented shape (the bearer token, the
//! JSON body) and answers with the documented responses and error bodies. Every shape it uses
//! is in this file, with the reference page it comes from.
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// The Graph version the tests configure.
pub const VERSION: &str = "v23.0";

/// The send answer.
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages#response>
pub fn send_answer(to: &str, wamid: &str) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to}],
        "messages": [{"id": wamid, "message_status": "accepted"}]
    })
}

/// An error body.
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes>
pub fn error_body(code: i64, message: &str) -> Value {
    json!({
        "error": {
            "message": message,
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": message},
            "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam"
        }
    })
}

/// The answer to marking a message read.
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/guides/mark-message-as-read>
pub fn read_answer() -> Value {
    json!({"success": true})
}

/// The media URL answer.
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/reference/media#retrieve-media-url>
pub fn media_answer(base: &str, id: &str, bytes: &[u8], version: u32) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "url": format!("{base}/files/{id}/{version}"),
        "mime_type": "image/jpeg",
        "sha256": crate::common::hex_sha256(bytes),
        "file_size": bytes.len().to_string(),
        "id": id
    })
}

/// Checks a `POST /{version}/{phone_number_id}/messages` body against the documented shapes:
/// text (<https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages#text-object>),
/// reaction (`#reaction-object`) and read (the mark-as-read guide). Returns what is wrong.
pub fn shape_error(body: &Value) -> Option<String> {
    if body["messaging_product"] != "whatsapp" {
        return Some("messaging_product must be \"whatsapp\"".into());
    }
    if body.get("status").is_some() {
        return (body["status"] != "read" || !body["message_id"].is_string())
            .then(|| "a read needs status \"read\" and message_id".into());
    }
    if !body["to"].is_string() {
        return Some("to must be a string".into());
    }
    match body["type"].as_str() {
        Some("text") => (!body["text"]["body"].is_string()).then(|| "text.body missing".into()),
        Some("reaction") => (!body["reaction"]["message_id"].is_string()
            || !body["reaction"]["emoji"].is_string())
        .then(|| "reaction needs message_id and emoji".into()),
        other => Some(format!("unexpected type {other:?}")),
    }
}

/// What the stand-in saw and what it answers next.
#[derive(Default)]
pub struct Script {
    /// Every accepted `messages` body, in order.
    pub posts: Vec<Value>,
    /// Answers to give to the next `messages` posts before the normal one: (HTTP, body).
    pub answers: VecDeque<(u16, Value)>,
    /// Media files by id, and how many URLs each got.
    pub media: HashMap<String, (Vec<u8>, u32)>,
    /// Media ids whose first URL is answered as expired.
    pub expire_first_url: Vec<String>,
    /// When set, a text send waits for `release` before answering.
    pub hold_sends: bool,
    next_wamid: u64,
}

/// The running stand-in.
#[derive(Clone)]
pub struct GraphApi {
    pub addr: SocketAddr,
    pub url: String,
    pub token: String,
    pub script: Arc<Mutex<Script>>,
    /// Notified when a held send has arrived.
    pub arrived: Arc<Notify>,
    /// Notify to let held sends answer.
    pub release: Arc<Notify>,
}

impl GraphApi {
    /// Starts the stand-in accepting `token`.
    pub async fn start(token: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let api = GraphApi {
            addr,
            url: format!("http://{addr}"),
            token: token.to_owned(),
            script: Arc::default(),
            arrived: Arc::default(),
            release: Arc::default(),
        };
        let router = Router::new()
            .route("/{version}/{phone}/messages", post(messages))
            .route("/{version}/{media_id}", get(media))
            .route("/files/{id}/{n}", get(file))
            .with_state(api.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        api
    }

    /// The bodies posted to `messages`.
    pub fn posts(&self) -> Vec<Value> {
        self.script.lock().unwrap().posts.clone()
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == format!("Bearer {}", self.token))
    }
}

fn answer(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).expect("status"),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn unauthorized() -> Response {
    answer(
        401,
        error_body(190, "Error validating access token: Session has expired."),
    )
}

async fn messages(
    State(api): State<GraphApi>,
    Path((version, _phone)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !api.authorized(&headers) {
        return unauthorized();
    }
    if version != VERSION {
        return answer(400, error_body(100, "Unknown version"));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return answer(400, error_body(100, "Invalid JSON"));
    };
    if let Some(error) = shape_error(&body) {
        return answer(400, error_body(100, &format!("Invalid parameter: {error}")));
    }
    let (scripted, hold) = {
        let mut script = api.script.lock().unwrap();
        (script.answers.pop_front(), script.hold_sends)
    };
    if let Some((status, error)) = scripted {
        return answer(status, error);
    }
    if body.get("status").is_some() {
        api.script.lock().unwrap().posts.push(body);
        return answer(200, read_answer());
    }
    let wamid = {
        let mut script = api.script.lock().unwrap();
        script.next_wamid += 1;
        script.posts.push(body.clone());
        format!("wamid.standin.{}", script.next_wamid)
    };
    if hold && body["type"] == "text" {
        let released = api.release.notified();
        api.arrived.notify_one();
        released.await;
    }
    answer(
        200,
        send_answer(body["to"].as_str().unwrap_or_default(), &wamid),
    )
}

async fn media(
    State(api): State<GraphApi>,
    Path((_version, media_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !api.authorized(&headers) {
        return unauthorized();
    }
    let mut script = api.script.lock().unwrap();
    let Some((bytes, urls)) = script.media.get_mut(&media_id) else {
        return answer(404, error_body(100, "Unsupported get request"));
    };
    *urls += 1;
    answer(200, media_answer(&api.url, &media_id, bytes, *urls))
}

async fn file(
    State(api): State<GraphApi>,
    Path((id, n)): Path<(String, u32)>,
    headers: HeaderMap,
) -> Response {
    if !api.authorized(&headers) {
        return unauthorized();
    }
    let script = api.script.lock().unwrap();
    if n == 1 && script.expire_first_url.contains(&id) {
        // An expired URL: Meta answers 404 once the 5 minutes are over.
        return answer(404, error_body(100, "URL expired"));
    }
    match script.media.get(&id) {
        Some((bytes, _)) => bytes.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

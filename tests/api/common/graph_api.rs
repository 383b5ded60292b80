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

/// A Cloud API error as Meta answers a call that failed: the code's title in `message` after
/// `(#code)` (Meta has no property of its own for the title), the explanation in
/// `error_data.details`.
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes>
pub fn cloud_error_body(code: i64, title: &str, details: &str) -> Value {
    json!({
        "error": {
            "message": format!("(#{code}) {title}"),
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": "AbXyz1Q2w3e4r5t6y7u8i9o"
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

/// The answer to an upload: the media id.
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/reference/media#upload-media>
pub fn upload_answer(id: &str) -> Value {
    json!({"id": id})
}

/// The MIME types the Cloud API takes, by message type (sticker left out: chatsync sends
/// none). <https://developers.facebook.com/docs/whatsapp/cloud-api/reference/media#supported-media-types>
pub const SUPPORTED_MEDIA: [(&str, &[&str]); 4] = [
    ("image", &["image/jpeg", "image/png"]),
    ("video", &["video/mp4", "video/3gpp"]),
    (
        "audio",
        &[
            "audio/aac",
            "audio/amr",
            "audio/mpeg",
            "audio/mp4",
            "audio/ogg",
        ],
    ),
    (
        "document",
        &[
            "text/plain",
            "application/pdf",
            "application/vnd.ms-powerpoint",
            "application/msword",
            "application/vnd.ms-excel",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ],
    ),
];

/// Meta's code for a media file it cannot take ("Media upload error": unsupported type).
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes>
pub const MEDIA_UPLOAD_ERROR: i64 = 131053;

/// One file uploaded to `POST /{version}/{phone_number_id}/media`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The media id answered.
    pub id: String,
    /// The form's `type` part.
    pub mime_type: String,
    /// The `file` part's `filename` and `Content-Type`.
    pub file_name: String,
    pub file_content_type: String,
    pub bytes: Vec<u8>,
}

/// Reads an upload's `multipart/form-data` body (RFC 7578) against the documented form:
/// `messaging_product` = `whatsapp`, `type` = a supported MIME type, and `file` with a file
/// name whose `Content-Type` is that type.
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/reference/media#upload-media>
/// Errors: what is wrong as (code, title, details), answered 400 in Meta's form
/// ([`cloud_error_body`]): code 100 "Invalid parameter", or [`MEDIA_UPLOAD_ERROR`] "Media
/// upload error" for a type the Cloud API does not take.
pub fn read_upload(content_type: &str, body: &[u8]) -> Result<Upload, (i64, String, String)> {
    let invalid = |why: &str| (100, "Invalid parameter".to_owned(), why.to_owned());
    let boundary = content_type
        .strip_prefix("multipart/form-data;")
        .and_then(|rest| rest.trim().strip_prefix("boundary="))
        .ok_or_else(|| invalid("the body must be multipart/form-data with a boundary"))?;
    let delimiter = format!("--{boundary}");
    let mut parts: HashMap<String, Part> = HashMap::new();
    let mut rest = body
        .strip_prefix(delimiter.as_bytes())
        .ok_or_else(|| invalid("the body must start with its boundary"))?;
    loop {
        if rest.starts_with(b"--") {
            break;
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or_else(|| invalid("a boundary line must end with CRLF"))?;
        let head_end = find(rest, b"\r\n\r\n").ok_or_else(|| invalid("a part has no headers"))?;
        let head =
            std::str::from_utf8(&rest[..head_end]).map_err(|_| invalid("headers are not UTF-8"))?;
        let after = &rest[head_end + 4..];
        let end_marker = format!("\r\n{delimiter}");
        let end =
            find(after, end_marker.as_bytes()).ok_or_else(|| invalid("a part is not closed"))?;
        let (mut name, mut filename, mut part_type) = (None, None, None);
        for line in head.split("\r\n") {
            let (header, value) = line
                .split_once(':')
                .ok_or_else(|| invalid("a bad header line"))?;
            match header.trim().to_ascii_lowercase().as_str() {
                "content-disposition" => {
                    let params = disposition_params(value)
                        .ok_or_else(|| invalid("a bad Content-Disposition"))?;
                    for (param, v) in params {
                        match param.as_str() {
                            "name" => name = Some(v),
                            "filename" => filename = Some(v),
                            _ => {}
                        }
                    }
                }
                "content-type" => part_type = Some(value.trim().to_owned()),
                _ => {}
            }
        }
        let name = name.ok_or_else(|| invalid("a part has no name"))?;
        parts.insert(name, (filename, part_type, after[..end].to_vec()));
        rest = &after[end + end_marker.len()..];
    }
    let text = |name: &str| {
        parts
            .get(name)
            .and_then(|(_, _, bytes)| String::from_utf8(bytes.clone()).ok())
            .ok_or_else(|| invalid(&format!("the {name} field is required")))
    };
    if text("messaging_product")? != "whatsapp" {
        return Err(invalid("messaging_product must be whatsapp"));
    }
    let mime_type = text("type")?;
    let (filename, file_type, bytes) = parts
        .get("file")
        .cloned()
        .ok_or_else(|| invalid("the file field is required"))?;
    let file_name = filename.ok_or_else(|| invalid("the file has no filename"))?;
    let file_content_type = file_type.ok_or_else(|| invalid("the file has no Content-Type"))?;
    if file_content_type != mime_type {
        return Err(invalid("type and the file's Content-Type differ"));
    }
    if !SUPPORTED_MEDIA
        .iter()
        .any(|(_, types)| types.contains(&mime_type.as_str()))
    {
        return Err((
            MEDIA_UPLOAD_ERROR,
            "Media upload error".to_owned(),
            format!("{mime_type} is not supported"),
        ));
    }
    Ok(Upload {
        id: String::new(),
        mime_type,
        file_name,
        file_content_type,
        bytes,
    })
}

/// The parameters of a `Content-Disposition: form-data; name="…"; filename="…"` header
/// value (RFC 7578 §4.2), names lower-cased; a quoted value is read as an HTTP quoted-string
/// (RFC 9110 §5.6.4: `\` escapes the next character), so `;` and `"` may stand in it.
/// `None` for a value that does not start with `form-data` or has an unclosed quote.
fn disposition_params(value: &str) -> Option<Vec<(String, String)>> {
    let rest = value.trim().strip_prefix("form-data")?;
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        match chars.next() {
            None => return Some(params),
            Some(';') => {}
            Some(_) => return None,
        }
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut name = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && *c != ';') {
            name.push(c);
        }
        chars.next_if_eq(&'=')?;
        let mut v = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => v.push(chars.next()?),
                    c => v.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ';') {
                v.push(c);
            }
        }
        params.push((name.trim().to_ascii_lowercase(), v.trim_end().to_owned()));
    }
}

/// One part of a multipart form: its file name, its `Content-Type` and its bytes.
type Part = (Option<String>, Option<String>, Vec<u8>);

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Checks a `POST /{version}/{phone_number_id}/messages` body against the documented shapes:
/// text (<https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages#text-object>),
/// reaction (`#reaction-object`), media sent by id (`#media-object`: `id`; `caption` on
/// image, video and document only; `filename` on document only) and read (the mark-as-read
/// guide). Returns what is wrong.
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
        Some(kind @ ("image" | "video" | "audio" | "document")) => {
            let media = &body[kind];
            if !media["id"].is_string() {
                Some(format!("{kind}.id missing"))
            } else if media.get("caption").is_some() && kind == "audio" {
                Some("audio takes no caption".into())
            } else if media.get("filename").is_some() && kind != "document" {
                Some(format!("{kind} takes no filename"))
            } else {
                let known = ["id", "caption", "filename"];
                media
                    .as_object()
                    .and_then(|o| o.keys().find(|k| !known.contains(&k.as_str())))
                    .map(|k| format!("unexpected {kind}.{k}"))
            }
        }
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
    /// Media ids whose next downloads fail (HTTP 500, a Graph error body), by how many more
    /// are to fail.
    pub fail_downloads: HashMap<String, u32>,
    /// When set, a text send waits for `release` before answering.
    pub hold_sends: bool,
    /// Every accepted upload, in order.
    pub uploads: Vec<Upload>,
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
            .route("/{version}/{phone}/media", post(upload))
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

    /// The files uploaded to `media`.
    pub fn uploads(&self) -> Vec<Upload> {
        self.script.lock().unwrap().uploads.clone()
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
    // A media message names a file uploaded here, of a type its message type takes.
    if let Some(kind @ ("image" | "video" | "audio" | "document")) = body["type"].as_str() {
        let script = api.script.lock().unwrap();
        let upload = script
            .uploads
            .iter()
            .find(|u| body[kind]["id"] == u.id.as_str());
        let fits = upload.is_some_and(|u| {
            SUPPORTED_MEDIA
                .iter()
                .any(|(k, types)| *k == kind && types.contains(&u.mime_type.as_str()))
        });
        if !fits {
            return answer(
                400,
                error_body(
                    100,
                    &format!("Invalid parameter: {kind}.id is no uploaded {kind}"),
                ),
            );
        }
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

async fn upload(
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
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut upload = match read_upload(content_type, &body) {
        Ok(upload) => upload,
        Err((code, title, details)) => {
            return answer(400, cloud_error_body(code, &title, &details));
        }
    };
    let mut script = api.script.lock().unwrap();
    upload.id = format!("{}", 4490709327384033u64 + script.uploads.len() as u64);
    let id = upload.id.clone();
    script.uploads.push(upload);
    answer(200, upload_answer(&id))
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
    let mut script = api.script.lock().unwrap();
    if let Some(left) = script.fail_downloads.get_mut(&id)
        && *left > 0
    {
        *left -= 1;
        // Graph's "temporary issue due to downtime".
        return answer(500, error_body(2, "Service temporarily unavailable"));
    }
    if n == 1 && script.expire_first_url.contains(&id) {
        // An expired URL: Meta answers 404 once the 5 minutes are over.
        return answer(404, error_body(100, "URL expired"));
    }
    match script.media.get(&id) {
        Some((bytes, _)) => bytes.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

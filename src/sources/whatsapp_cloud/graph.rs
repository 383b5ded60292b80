//! The Graph API calls of the `whatsapp-cloud` source, and every request and response shape
//! they use, each with the Meta reference page it follows. Errors become [`SourceError`]s
//! with Meta's code in the text ([`GraphError::into_source_error`]).
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::StatusError;
use crate::sources::SourceError;

/// `POST /{version}/{phone_number_id}/messages`: a text message.
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages#text-object>
/// A reply carries `context.message_id`; `biz_opaque_callback_data` (at most 512 characters)
/// comes back on the message's status webhooks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SendText {
    pub messaging_product: String,
    pub recipient_type: String,
    pub to: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub text: TextBody,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub context: Option<Context>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub biz_opaque_callback_data: Option<String>,
}

/// The `text` object of a sent message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TextBody {
    pub preview_url: bool,
    pub body: String,
}

/// The `context` object of a reply: the quoted message's wamid.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Context {
    pub message_id: String,
}

/// `POST /{version}/{phone_number_id}/messages` with `type: reaction`; an empty `emoji`
/// removes the reaction.
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages#reaction-object>
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SendReaction {
    pub messaging_product: String,
    pub recipient_type: String,
    pub to: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub reaction: ReactionBody,
}

/// The `reaction` object: the wamid reacted to and the emoji (`""` removes it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReactionBody {
    pub message_id: String,
    pub emoji: String,
}

/// `POST /{version}/{phone_number_id}/messages` marking an incoming message read; answered
/// `{"success": true}`.
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/guides/mark-message-as-read>
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MarkRead {
    pub messaging_product: String,
    pub status: String,
    pub message_id: String,
}

/// `POST /{version}/{phone_number_id}/messages` with a file uploaded first
/// ([`Graph::upload`]): `type` is `image`, `video`, `audio` or `document` ([`media_type`]) and
/// the object of that name carries the media id.
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages#media-object>
/// A reply carries `context.message_id`; `biz_opaque_callback_data` as in [`SendText`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SendMedia {
    pub messaging_product: String,
    pub recipient_type: String,
    pub to: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub image: Option<MediaBody>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub video: Option<MediaBody>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub audio: Option<MediaBody>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub document: Option<MediaBody>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub context: Option<Context>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub biz_opaque_callback_data: Option<String>,
}

/// The media object of a [`SendMedia`]: the uploaded media's `id`; a `caption` (image,
/// video and document only, at most 1,024 characters); a `filename` (document only, shown
/// to the recipient).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MediaBody {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub caption: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub filename: Option<String>,
}

impl SendMedia {
    /// The message sending the uploaded `media_id` as `kind` ([`media_type`]) to `to`.
    /// `caption` is dropped for audio (WhatsApp shows none); `file_name` is kept for a
    /// document only.
    pub fn new(
        to: &str,
        kind: &'static str,
        media_id: String,
        caption: Option<String>,
        file_name: &str,
    ) -> Self {
        let body = MediaBody {
            id: media_id,
            caption: caption.filter(|_| kind != "audio"),
            filename: (kind == "document").then(|| file_name.to_owned()),
        };
        let mut message = SendMedia {
            messaging_product: "whatsapp".into(),
            recipient_type: "individual".into(),
            to: to.to_owned(),
            kind: kind.into(),
            image: None,
            video: None,
            audio: None,
            document: None,
            context: None,
            biz_opaque_callback_data: None,
        };
        let slot = match kind {
            "image" => &mut message.image,
            "video" => &mut message.video,
            "audio" => &mut message.audio,
            _ => &mut message.document,
        };
        *slot = Some(body);
        message
    }
}

/// The message type a file of MIME type `mime_type` is sent as: `image`, `video` or `audio`
/// for the types WhatsApp takes as such (image/jpeg and image/png; video/mp4 and video/3gpp;
/// audio/aac, audio/amr, audio/mpeg, audio/mp4 and audio/ogg, parameters ignored), and
/// `document` for anything else, which WhatsApp delivers as a file to open.
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/reference/media#supported-media-types>
pub fn media_type(mime_type: &str) -> &'static str {
    let essence = mime_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "image/jpeg" | "image/png" => "image",
        "video/mp4" | "video/3gpp" => "video",
        "audio/aac" | "audio/amr" | "audio/mpeg" | "audio/mp4" | "audio/ogg" => "audio",
        _ => "document",
    }
}

/// The answer to `POST /{version}/{phone_number_id}/media`: the uploaded file's media id,
/// good for 30 days.
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/reference/media#upload-media>
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UploadAnswer {
    pub id: String,
}

/// The `multipart/form-data` form of an upload (RFC 7578, built by reqwest): the parts
/// `messaging_product` (`whatsapp`), `type` (the MIME type) and `file` (the bytes, with their
/// file name and the MIME type as its `Content-Type`).
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/reference/media#upload-media>
/// Control characters are dropped from the MIME type (it goes into a header line as is) and
/// written as `%XX` in the file name (reqwest escapes `"` and `\` there, not CR or LF).
pub fn upload_form(file_name: &str, mime_type: &str, bytes: &[u8]) -> reqwest::multipart::Form {
    let mime_type: String = mime_type.chars().filter(|c| !c.is_control()).collect();
    let mut file_name_shown = String::with_capacity(file_name.len());
    for c in file_name.chars() {
        if c.is_control() {
            let mut utf8 = [0; 4];
            for byte in c.encode_utf8(&mut utf8).bytes() {
                file_name_shown.push_str(&format!("%{byte:02X}"));
            }
        } else {
            file_name_shown.push(c);
        }
    }
    let mut headers = reqwest::header::HeaderMap::new();
    // Without control characters, any string is a header value.
    if let Ok(value) = reqwest::header::HeaderValue::from_str(&mime_type) {
        headers.insert(reqwest::header::CONTENT_TYPE, value);
    }
    let file = reqwest::multipart::Part::bytes(bytes.to_vec())
        .file_name(file_name_shown)
        .headers(headers);
    reqwest::multipart::Form::new()
        .text("messaging_product", "whatsapp")
        .text("type", mime_type)
        .part("file", file)
}

/// The answer to a sent message.
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages#response>
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SendAnswer {
    pub messaging_product: String,
    #[serde(default)]
    pub contacts: Vec<AnswerContact>,
    pub messages: Vec<AnswerMessage>,
}

/// One `contacts[]` entry of [`SendAnswer`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AnswerContact {
    pub input: String,
    pub wa_id: String,
}

/// One `messages[]` entry of [`SendAnswer`]: the wamid.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AnswerMessage {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_status: Option<String>,
}

/// `GET /{version}/{media_id}`: where a media file is, for 5 minutes.
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/reference/media#retrieve-media-url>
/// `sha256` is the file's hash (hex here; base64 in webhooks), `file_size` bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MediaUrl {
    pub messaging_product: String,
    pub url: String,
    pub mime_type: String,
    pub sha256: String,
    pub file_size: serde_json::Value,
    pub id: String,
}

/// A Graph error answer: `{"error": {...}}`.
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes>
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorAnswer {
    pub error: GraphError,
}

/// The `error` object of a Graph error answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GraphError {
    pub message: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    pub code: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_subcode: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fbtrace_id: Option<String>,
}

/// Meta's code for "re-engagement message": more than 24 hours since the user last wrote.
pub const OUTSIDE_WINDOW: i64 = 131047;
/// Meta's codes for throughput limits: "rate limit hit" and "pair rate limit hit".
pub const RATE_LIMITS: [i64; 2] = [130429, 131056];
/// Meta's code for an invalid or expired access token (OAuthException 190).
pub const INVALID_TOKEN: i64 = 190;

/// A failed Graph call: Meta's error, or no answer at all.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// Meta answered with an error body.
    Graph { http: u16, error: GraphError },
    /// No readable answer (network, timeout, a body that is not Graph's).
    Transport(String),
}

impl CallError {
    /// Whether the call is worth repeating after a pause (rate limits, no answer, 5xx).
    pub fn is_rate_limit(&self) -> bool {
        matches!(self, CallError::Graph { error, .. } if RATE_LIMITS.contains(&error.code))
    }

    /// Whether the access token is invalid (the source is then DOWN).
    pub fn is_invalid_token(&self) -> bool {
        matches!(self, CallError::Graph { error, .. } if error.code == INVALID_TOKEN)
            || matches!(self, CallError::Graph { http: 401, .. })
    }

    /// The source error: a rate limit is `Exhausted`, an invalid token or no answer is
    /// `Unavailable`, anything else (131047, a bad recipient, ...) `Rejected`. The text
    /// carries Meta's code. A Graph error answer is [`SourceError::Described`] around that,
    /// with Meta's `code` and the title of its `message` ([`GraphError::title`]), so a send
    /// that fails this way keeps them on its FAILED status.
    pub fn into_source_error(self) -> SourceError {
        match self {
            CallError::Transport(why) => SourceError::Unavailable(format!("Graph API: {why}")),
            CallError::Graph { http, ref error } => {
                let text = format!(
                    "Graph API error {} (HTTP {http}): {}",
                    error.code, error.message
                );
                let plain = if self.is_rate_limit() {
                    SourceError::Exhausted(text)
                } else if self.is_invalid_token() || http >= 500 {
                    SourceError::Unavailable(text)
                } else {
                    SourceError::Rejected(text)
                };
                SourceError::Described {
                    error: Box::new(plain),
                    reason: StatusError {
                        code: error.code,
                        title: error.title().to_owned(),
                    },
                }
            }
        }
    }
}

impl GraphError {
    /// The error's title: Meta has no property for it in a Graph error answer but puts it in
    /// `message`, after the code (`"(#131047) Re-engagement message"` → `"Re-engagement
    /// message"`; the same title a `failed` status webhook gives in `errors[].title`).
    /// <https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes>
    /// A `message` without that prefix is the title as it is.
    pub fn title(&self) -> &str {
        let message = self.message.trim();
        message
            .strip_prefix(&format!("(#{})", self.code))
            .map(str::trim_start)
            .filter(|rest| !rest.is_empty())
            .unwrap_or(message)
    }
}

/// A Graph API client for one phone number.
#[derive(Clone)]
pub struct Graph {
    http: reqwest::Client,
    /// `{graph_api_url}/{graph_api_version}`, no trailing slash.
    base: String,
    phone_number_id: String,
    token: String,
}

impl Graph {
    /// A client for `base` (`https://graph.facebook.com/v23.0`) and the number.
    pub fn new(base: String, phone_number_id: String, token: String) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Self {
            http,
            base,
            phone_number_id,
            token,
        }
    }

    async fn answer<T: serde::de::DeserializeOwned>(
        response: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<T, CallError> {
        let response = response.map_err(|e| CallError::Transport(e.to_string()))?;
        let http = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        if (200..300).contains(&http) {
            return serde_json::from_slice(&bytes)
                .map_err(|e| CallError::Transport(format!("unreadable answer: {e}")));
        }
        match serde_json::from_slice::<ErrorAnswer>(&bytes) {
            Ok(answer) => Err(CallError::Graph {
                http,
                error: answer.error,
            }),
            Err(_) => Err(CallError::Transport(format!("HTTP {http}"))),
        }
    }

    /// `POST /{version}/{phone_number_id}/messages` with `body`.
    pub async fn post_message<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        body: &B,
    ) -> Result<T, CallError> {
        let url = format!("{}/{}/messages", self.base, self.phone_number_id);
        let response = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await;
        Self::answer(response).await
    }

    /// `POST /{version}/{phone_number_id}/media`: uploads one file ([`upload_form`]) for a
    /// message to send; its media id.
    pub async fn upload(
        &self,
        file_name: &str,
        mime_type: &str,
        bytes: &[u8],
    ) -> Result<UploadAnswer, CallError> {
        let url = format!("{}/{}/media", self.base, self.phone_number_id);
        let response = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .multipart(upload_form(file_name, mime_type, bytes))
            .send()
            .await;
        Self::answer(response).await
    }

    /// `GET /{version}/{media_id}`.
    pub async fn media_url(&self, media_id: &str) -> Result<MediaUrl, CallError> {
        let url = format!("{}/{media_id}", self.base);
        let response = self.http.get(url).bearer_auth(&self.token).send().await;
        Self::answer(response).await
    }

    /// The bytes at a media URL (with the bearer token), at most `limit` bytes.
    /// Errors: `Graph` for an error answer (an expired URL), `Transport` otherwise.
    pub async fn download(&self, url: &str, limit: u64) -> Result<Vec<u8>, CallError> {
        let mut response = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let http = response.status().as_u16();
        if !(200..300).contains(&http) {
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(match serde_json::from_slice::<ErrorAnswer>(&bytes) {
                Ok(answer) => CallError::Graph {
                    http,
                    error: answer.error,
                },
                Err(_) => CallError::Transport(format!("HTTP {http}")),
            });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?
        {
            if bytes.len() as u64 + chunk.len() as u64 > limit {
                return Err(CallError::Transport(format!("file over {limit} bytes")));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph_error(code: i64, message: &str) -> GraphError {
        GraphError {
            message: message.into(),
            kind: "OAuthException".into(),
            code,
            error_subcode: None,
            error_data: None,
            fbtrace_id: None,
        }
    }

    #[test]
    fn the_title_is_the_message_after_its_code() {
        let error = graph_error(131047, "(#131047) Re-engagement message");
        assert_eq!(error.title(), "Re-engagement message");
        // Another code's prefix, or none, is kept: the message is the title then.
        let error = graph_error(100, "(#131047) Re-engagement message");
        assert_eq!(error.title(), "(#131047) Re-engagement message");
        let error = graph_error(190, "Error validating access token");
        assert_eq!(error.title(), "Error validating access token");
        assert_eq!(graph_error(2, "(#2)").title(), "(#2)");
    }

    #[test]
    fn graph_errors_keep_their_code_and_title_and_their_kind() {
        let cases = [
            (400, 131047, "Rejected"),
            (429, 130429, "Exhausted"),
            (401, 190, "Unavailable"),
            (500, 131000, "Unavailable"),
        ];
        for (http, code, kind) in cases {
            let error = CallError::Graph {
                http,
                error: graph_error(code, &format!("(#{code}) Some title")),
            }
            .into_source_error();
            assert_eq!(
                error.reason(),
                Some(&StatusError {
                    code,
                    title: "Some title".into()
                })
            );
            let SourceError::Described { error: inner, .. } = &error else {
                panic!("{error:?}");
            };
            let found = match **inner {
                SourceError::Rejected(_) => "Rejected",
                SourceError::Exhausted(_) => "Exhausted",
                SourceError::Unavailable(_) => "Unavailable",
                _ => "other",
            };
            assert_eq!(found, kind, "{code}");
            assert!(error.to_string().contains(&code.to_string()), "{error}");
        }
        let error = CallError::Transport("connection refused".into()).into_source_error();
        assert_eq!(error.reason(), None);
    }
}

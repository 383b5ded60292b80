//! Webhook bodies of the WhatsApp Cloud API: the signature check and the reading of a body
//! into items, each applied (or kept) on its own.
//!
//! The shapes follow Meta's reference:
//! - <https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/payload-examples>
//! - <https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components>
//! - <https://developers.facebook.com/docs/graph-api/webhooks/getting-started#event-notifications>
//!   (`X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body, keyed with the app secret>`)
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2_011::Sha256;

/// Meta's limit on one webhook body, and ours: 3 MiB. A larger body is answered 413.
pub const MAX_BODY_BYTES: usize = 3 << 20;

/// Whether `header` (`sha256=<64 hex digits>`) is the HMAC-SHA256 of `body` keyed with
/// `app_secret`, compared in constant time. A missing prefix or malformed hex is `false`.
pub fn signature_matches(header: &str, body: &[u8], app_secret: &[u8]) -> bool {
    let Some(hex_digest) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digest) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(app_secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The `X-Hub-Signature-256` value of `body` under `app_secret` (what Meta sends; tests sign
/// with it).
pub fn sign(body: &[u8], app_secret: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A webhook body: `{"object": "whatsapp_business_account", "entry": [...]}`.
#[derive(Debug, Deserialize)]
pub struct Body {
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub entry: Vec<Entry>,
}

/// One `entry[]`: the WhatsApp Business Account id and its changes.
#[derive(Debug, Deserialize)]
pub struct Entry {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub changes: Vec<Change>,
}

/// One `changes[]`: the subscribed `field` (`messages`, `history`, ...) and its `value`, kept
/// as JSON so that one unreadable item never fails the rest.
#[derive(Debug, Deserialize)]
pub struct Change {
    #[serde(default)]
    pub field: String,
    #[serde(default)]
    pub value: Value,
}

impl Change {
    /// `value.metadata.phone_number_id`, the number the change is for.
    pub fn phone_number_id(&self) -> Option<&str> {
        self.value.get("metadata")?.get("phone_number_id")?.as_str()
    }
}

/// Reads a body (bounded by [`MAX_BODY_BYTES`] before this, and by serde_json's recursion
/// limit of 128). Errors: the body is not JSON of the webhook shape.
pub fn parse(body: &[u8]) -> Result<Body, String> {
    serde_json::from_slice(body).map_err(|error| format!("unreadable webhook body: {error}"))
}

/// The phone number ids a body names, in order, without repeats.
pub fn phone_number_ids(body: &Body) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for change in body.entry.iter().flat_map(|entry| &entry.changes) {
        if let Some(id) = change.phone_number_id()
            && !ids.iter().any(|known| known == id)
        {
            ids.push(id.to_owned());
        }
    }
    ids
}

/// A message status (`value.statuses[]`).
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components#statuses-object>
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    /// The wamid of the message the status is about.
    pub id: String,
    /// `sent`, `delivered`, `read`, `played` or `failed`.
    pub status: String,
    /// Unix seconds, as a string.
    #[serde(default)]
    pub timestamp: Value,
    /// The user (wa_id) or group the message went to.
    #[serde(default)]
    pub recipient_id: Option<String>,
    /// The user's business-scoped id, when Meta gives one.
    #[serde(default)]
    pub recipient_user_id: Option<String>,
    /// `group` for a status of a group message.
    #[serde(default)]
    pub recipient_type: Option<String>,
    /// In a group: the participant this receipt is from.
    #[serde(default)]
    pub recipient_participant_id: Option<String>,
    #[serde(default)]
    pub recipient_participant_user_id: Option<String>,
    /// What the send put there: chatsync puts the `client_message_id`.
    #[serde(default)]
    pub biz_opaque_callback_data: Option<String>,
    /// For `failed`: why.
    #[serde(default)]
    pub errors: Vec<ErrorItem>,
}

/// An `errors[]` entry of a status, a message or a value.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ErrorItem {
    #[serde(default)]
    pub code: i64,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub message: Option<String>,
}

impl Status {
    /// The chat the status belongs to: the recipient's wa_id (or BSUID), or the group.
    pub fn chat_id(&self) -> Option<&str> {
        self.recipient_id
            .as_deref()
            .or(self.recipient_user_id.as_deref())
            .filter(|id| !id.is_empty())
    }

    /// In a group, the participant whose receipt this is.
    pub fn participant(&self) -> Option<&str> {
        self.recipient_participant_id
            .as_deref()
            .or(self.recipient_participant_user_id.as_deref())
            .filter(|_| self.recipient_type.as_deref() == Some("group"))
    }

    /// What makes a redelivery the same status: (wamid, status, participant).
    pub fn key(&self) -> String {
        format!(
            "status:{}:{}:{}",
            self.id,
            self.status,
            self.participant().unwrap_or_default()
        )
    }

    /// Unix ms of `timestamp` (0 when missing).
    pub fn at_ms(&self) -> i64 {
        seconds_ms(&self.timestamp)
    }
}

/// Unix seconds (a string or a number) as Unix ms; 0 when unreadable.
pub fn seconds_ms(value: &Value) -> i64 {
    let seconds = match value {
        Value::String(s) => s.parse::<i64>().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    };
    seconds.unwrap_or(0).saturating_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_over_the_raw_bytes() {
        let body = br#"{"a":"\u00e9"}"#;
        let header = sign(body, b"secret");
        assert!(signature_matches(&header, body, b"secret"));
        assert!(!signature_matches(&header, body, b"other"));
        assert!(!signature_matches(&header, br#"{"a":"\u00e8"}"#, b"secret"));
        assert!(!signature_matches("sha256=zz", body, b"secret"));
        assert!(!signature_matches(&header[7..], body, b"secret"));
    }
}

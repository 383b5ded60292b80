//! Standard Webhooks signatures (standardwebhooks.com), by the reference implementation (the
//! `standardwebhooks` crate): `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "{webhook-id}.{webhook-timestamp}.{body}">` under the secret's key.
use crate::error::{Error, Result};

/// Signs bodies with one endpoint's secret. Its `Debug` never shows the key.
pub struct Signer(standardwebhooks::Webhook);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

impl Signer {
    /// A signer for a `whsec_…` secret (see [`super::WebhookConfig::secret`]).
    pub fn new(secret: &str) -> Result<Self> {
        standardwebhooks::Webhook::new(secret)
            .map(Self)
            .map_err(|_| Error::InvalidArgument("the webhook secret is not whsec_ + base64".into()))
    }

    /// The `webhook-signature` header value of `body` sent as `id` at `timestamp` (Unix
    /// seconds).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        self.0
            .sign(id, timestamp, body)
            .expect("HMAC-SHA256 takes a key of any length")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_implementation_verifies_and_a_wrong_secret_fails() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let signer = Signer::new(secret).expect("secret");
        let now = chrono::Utc::now().timestamp();
        let body = br#"{"type":"message.created"}"#;
        let signature = signer.sign("notes:7", now, body);
        assert!(signature.starts_with("v1,"));
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", "notes:7".parse().unwrap());
        headers.insert("webhook-timestamp", now.to_string().parse().unwrap());
        headers.insert("webhook-signature", signature.parse().unwrap());
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(body, &headers)
            .expect("verifies");
        let wrong =
            standardwebhooks::Webhook::new("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        assert!(wrong.verify(body, &headers).is_err());
        assert_eq!(format!("{signer:?}"), "Signer(<redacted>)");
    }
}

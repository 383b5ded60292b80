//! A small client for the Matrix client-server API: ruma's typed requests and responses
//! (ruma-client-api, spec v1.1+ paths) sent over reqwest.
//!
//! Errors are sorted by what a caller can do about them ([`MatrixError`]): a network error, a
//! timeout, HTTP 429 or a 5xx is [`MatrixError::Unavailable`] (retry later); any other 4xx is
//! [`MatrixError::Rejected`] (the same request will not succeed).
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::time::Duration;

use ruma::api::auth_scheme::{AccessToken, SendAccessToken};
use ruma::api::path_builder::VersionHistory;
use ruma::api::{
    IncomingResponseExt, MatrixVersion, OutgoingRequest, OutgoingRequestExt, SupportedVersions,
};

use crate::sources::SourceError;

/// How long an ordinary request may take, in total.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A Matrix request failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MatrixError {
    /// The homeserver could not be reached, timed out, or answered 429 or 5xx.
    #[error("homeserver unavailable: {0}")]
    Unavailable(String),
    /// The homeserver refused the request with a 4xx (other than 429), e.g. `M_FORBIDDEN`.
    #[error("homeserver refused ({status} {errcode}): {message}")]
    Rejected {
        status: u16,
        errcode: String,
        message: String,
    },
    /// The request could not be built or the answer not read (a bug, or not a homeserver).
    #[error("unexpected homeserver answer: {0}")]
    Protocol(String),
}

impl From<MatrixError> for SourceError {
    fn from(error: MatrixError) -> Self {
        match error {
            MatrixError::Unavailable(_) => SourceError::Unavailable(error.to_string()),
            MatrixError::Rejected { .. } | MatrixError::Protocol(_) => {
                SourceError::Rejected(error.to_string())
            }
        }
    }
}

/// An authenticated client for one account on one homeserver. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    homeserver: String,
    access_token: String,
    versions: SupportedVersions,
}

impl Client {
    /// A client for `homeserver` (e.g. `https://matrix.example.org`) using `access_token`.
    pub fn new(homeserver: &str, access_token: String) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("chatsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| format!("cannot build the HTTP client: {error}"))?;
        Ok(Self {
            http,
            homeserver: homeserver.trim_end_matches('/').to_owned(),
            access_token,
            // Every endpoint chatsync uses has had a v3 path since spec v1.1 (2021).
            versions: SupportedVersions {
                versions: BTreeSet::from([MatrixVersion::V1_1]),
                features: BTreeSet::new(),
            },
        })
    }

    /// Sends `request` and reads the typed response. `timeout` bounds the whole exchange
    /// (default [`REQUEST_TIMEOUT`]); a `/sync` long-poll passes a longer one.
    pub async fn send<R>(
        &self,
        request: R,
        timeout: Option<Duration>,
    ) -> Result<R::IncomingResponse, MatrixError>
    where
        R: OutgoingRequest<Authentication = AccessToken, PathBuilder = VersionHistory>,
    {
        let request = request
            .try_into_http_request::<Vec<u8>>(
                &self.homeserver,
                SendAccessToken::Always(&self.access_token),
                Cow::Borrowed(&self.versions),
            )
            .map_err(|error| MatrixError::Protocol(error.to_string()))?;
        let (parts, body) = request.into_parts();
        let response = self
            .http
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .timeout(timeout.unwrap_or(REQUEST_TIMEOUT))
            .send()
            .await
            .map_err(|error| MatrixError::Unavailable(describe(&error)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| MatrixError::Unavailable(describe(&error)))?;
        if !status.is_success() {
            return Err(error_from(status.as_u16(), &bytes));
        }
        let http_response = http::Response::builder()
            .status(status)
            .body(bytes.as_ref())
            .map_err(|error| MatrixError::Protocol(error.to_string()))?;
        R::IncomingResponse::try_from_http_response(http_response)
            .map_err(|error| MatrixError::Protocol(error.to_string()))
    }
}

impl Client {
    /// Downloads a media file through the authenticated media endpoint (spec v1.11,
    /// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`), reading the body as a
    /// stream and stopping past `max_bytes` (then [`MatrixError::Rejected`] with status 413, so
    /// memory stays bounded whatever the file's size). Returns the bytes and the
    /// `Content-Type` the homeserver gave.
    pub async fn download(
        &self,
        uri: &ruma::MxcUri,
        max_bytes: u64,
    ) -> Result<(Vec<u8>, Option<String>), MatrixError> {
        use ruma::api::client::authenticated_media::get_content;
        let request = get_content::v1::Request::from_uri(uri)
            .map_err(|error| MatrixError::Protocol(format!("{uri}: {error}")))?;
        let versions = SupportedVersions {
            versions: BTreeSet::from([MatrixVersion::V1_11]),
            features: BTreeSet::new(),
        };
        let request = request
            .try_into_http_request::<Vec<u8>>(
                &self.homeserver,
                SendAccessToken::Always(&self.access_token),
                Cow::Borrowed(&versions),
            )
            .map_err(|error| MatrixError::Protocol(error.to_string()))?;
        let (parts, body) = request.into_parts();
        let mut response = self
            .http
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .timeout(MEDIA_TIMEOUT)
            .send()
            .await
            .map_err(|error| MatrixError::Unavailable(describe(&error)))?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(error_from(status.as_u16(), &bytes));
        }
        let too_large = || MatrixError::Rejected {
            status: 413,
            errcode: "M_TOO_LARGE".into(),
            message: format!("{uri} is larger than {max_bytes} bytes"),
        };
        if response.content_length().is_some_and(|len| len > max_bytes) {
            return Err(too_large());
        }
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| MatrixError::Unavailable(describe(&error)))?
        {
            if bytes.len() as u64 + chunk.len() as u64 > max_bytes {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((bytes, content_type))
    }
}

/// How long one media download may take, in total.
pub const MEDIA_TIMEOUT: Duration = Duration::from_secs(120);

/// A reqwest error with its causes, which hold the useful part ("connection refused").
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Sorts an error answer: its standard body is `{"errcode": "M_…", "error": "…"}`.
fn error_from(status: u16, body: &[u8]) -> MatrixError {
    #[derive(serde::Deserialize, Default)]
    struct Body {
        #[serde(default)]
        errcode: String,
        #[serde(default)]
        error: String,
    }
    let body: Body = serde_json::from_slice(body).unwrap_or_default();
    if status == 429 || status >= 500 {
        return MatrixError::Unavailable(format!("HTTP {status} {} {}", body.errcode, body.error));
    }
    MatrixError::Rejected {
        status,
        errcode: body.errcode,
        message: body.error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_error_answers() {
        assert!(matches!(
            error_from(502, b"<html>"),
            MatrixError::Unavailable(_)
        ));
        assert!(matches!(
            error_from(429, br#"{"errcode":"M_LIMIT_EXCEEDED"}"#),
            MatrixError::Unavailable(_)
        ));
        match error_from(403, br#"{"errcode":"M_FORBIDDEN","error":"not in room"}"#) {
            MatrixError::Rejected {
                status, errcode, ..
            } => {
                assert_eq!(status, 403);
                assert_eq!(errcode, "M_FORBIDDEN");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            SourceError::from(error_from(404, b"")),
            SourceError::Rejected(_)
        ));
    }
}

//! Authentication: one check of `authorization: Bearer TOKEN`, shared by every route.
//!
//! [`Tokens`] holds the configured tokens as SHA-256 digests. [`check`] turns a request's
//! headers into a [`Scope`]: the sessions the caller may use. It is a plain function so that
//! plain HTTP routes (such as a metrics endpoint) can call it; gRPC services go through
//! `grpc::AuthInterceptor`, an interceptor that puts the scope into the request's extensions.
//! Handlers then only ask the scope about the session they act on ([`Scope::check`]). This
//! module knows nothing of gRPC: it answers with the domain [`Error`], which the caller maps.
//!
//! The presented token is hashed and compared with every configured digest in constant time
//! (`subtle`), so neither the position of a first differing byte nor which token matched shows
//! in the timing. With no tokens configured everything is allowed ([`Scope::Open`]); the
//! configuration then only allows loopback addresses.
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{ConfigError, TokenConfig};
use crate::error::Error;

/// One configured token, without its secret.
#[derive(Debug)]
pub struct Token {
    /// SHA-256 of the secret.
    digest: [u8; 32],
    /// Position in the configuration's `[[tokens]]`, from 0, for logs.
    pub index: usize,
    sessions: Vec<String>,
    /// The token's own subscription slots (`max_subscriptions` of its entry).
    subscriptions: Option<Arc<Semaphore>>,
    max_subscriptions: Option<u32>,
}

/// The configured tokens. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Tokens {
    tokens: Vec<Arc<Token>>,
}

impl Tokens {
    /// Reads every token's secret (inline, `token_env` or `token_file`). Errors: the
    /// configuration errors of [`TokenConfig::secret`].
    pub fn from_config(tokens: &[TokenConfig]) -> Result<Self, ConfigError> {
        let tokens = tokens
            .iter()
            .enumerate()
            .map(|(index, config)| {
                let secret = config.secret()?;
                Ok(Arc::new(Token {
                    digest: Sha256::digest(secret.as_bytes()).into(),
                    index,
                    sessions: config.sessions.clone(),
                    subscriptions: config
                        .max_subscriptions
                        .map(|n| Arc::new(Semaphore::new(n as usize))),
                    max_subscriptions: config.max_subscriptions,
                }))
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Self { tokens })
    }

    /// Whether any token is configured (else every request is allowed).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token whose secret is `presented`, compared in constant time against all of them.
    fn find(&self, presented: &str) -> Option<Arc<Token>> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for token in &self.tokens {
            // No early exit: every digest is compared.
            if bool::from(token.digest.ct_eq(&digest)) {
                found = Some(token.clone());
            }
        }
        found
    }
}

/// What a request may do, as established by [`check`].
#[derive(Debug, Clone)]
pub enum Scope {
    /// No tokens are configured: everything.
    Open,
    /// The sessions of this token.
    Token(Arc<Token>),
}

impl Scope {
    /// Whether the scope covers `session_id`.
    pub fn allows(&self, session_id: &str) -> bool {
        match self {
            Self::Open => true,
            Self::Token(token) => token.sessions.iter().any(|s| s == "*" || s == session_id),
        }
    }

    /// Whether the scope covers every session (no tokens configured, or a `"*"` token).
    pub fn allows_all(&self) -> bool {
        match self {
            Self::Open => true,
            Self::Token(token) => token.sessions.iter().any(|s| s == "*"),
        }
    }

    /// `PermissionDenied` unless the scope covers `session_id`.
    pub fn check(&self, session_id: &str) -> Result<(), Error> {
        if self.allows(session_id) {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "this token may not use session {session_id:?}"
        )))
    }

    /// Takes one of the token's subscription slots, held until the permit is dropped.
    /// `Ok(None)` when the token has no limit of its own; `ResourceExhausted` when all its
    /// slots are taken.
    pub fn subscription_slot(&self) -> Result<Option<OwnedSemaphorePermit>, Error> {
        let Self::Token(token) = self else {
            return Ok(None);
        };
        let Some(slots) = &token.subscriptions else {
            return Ok(None);
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => Err(Error::ResourceExhausted(format!(
                "this token holds its maximum of {} open subscriptions; close one first",
                token.max_subscriptions.unwrap_or_default()
            ))),
        }
    }
}

/// Authenticates request headers: the scope of the token in `authorization: Bearer TOKEN`,
/// or [`Scope::Open`] when no tokens are configured. [`Error::Unauthenticated`] for a missing,
/// malformed or unknown token. Usable from any HTTP route.
pub fn check(headers: &http::HeaderMap, tokens: &Tokens) -> Result<Scope, Error> {
    if tokens.is_empty() {
        return Ok(Scope::Open);
    }
    let header = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| Error::Unauthenticated("missing authorization: Bearer token".into()))?;
    let presented = header
        .to_str()
        .ok()
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| Error::Unauthenticated("authorization must be `Bearer TOKEN`".into()))?;
    tokens
        .find(presented)
        .map(Scope::Token)
        .ok_or_else(|| Error::Unauthenticated("unknown token".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", value.parse().expect("header"));
        headers
    }

    #[test]
    fn scopes_follow_the_token() {
        let tokens = Tokens::from_config(&[
            TokenConfig::inline("first-secret", &["a"]),
            TokenConfig::inline("second-secret", &["*"]),
        ])
        .expect("tokens");
        let first = check(&headers("Bearer first-secret"), &tokens).expect("known");
        assert!(first.allows("a") && !first.allows("b"));
        let second = check(&headers("bearer second-secret"), &tokens).expect("known");
        assert!(second.allows("b"));
        for bad in [
            "Bearer first-secreT",
            "Bearer first-secret-",
            "first-secret",
            "",
        ] {
            let error = check(&headers(bad), &tokens).expect_err(bad);
            assert!(
                matches!(error, Error::Unauthenticated(_)),
                "{bad:?}: {error:?}"
            );
        }
        let error = check(&http::HeaderMap::new(), &tokens).expect_err("missing");
        assert!(matches!(error, Error::Unauthenticated(_)), "{error:?}");
        let open = check(&http::HeaderMap::new(), &Tokens::default()).expect("open");
        assert!(open.allows("anything"));
    }

    #[test]
    fn a_token_limit_frees_its_slots() {
        let mut config = TokenConfig::inline("limited-secret", &["*"]);
        config.max_subscriptions = Some(1);
        let tokens = Tokens::from_config(&[config]).expect("tokens");
        let scope = check(&headers("Bearer limited-secret"), &tokens).expect("known");
        let slot = scope.subscription_slot().expect("first").expect("limited");
        assert!(matches!(
            scope.subscription_slot(),
            Err(Error::ResourceExhausted(_))
        ));
        drop(slot);
        assert!(scope.subscription_slot().expect("freed").is_some());
    }
}

//! `/webhooks/whatsapp` on the API's own port: the WhatsApp Cloud API's webhooks. No API token:
//! Meta cannot send one; a body's signature is its authentication (checked in the service,
//! [`ChatSync::whatsapp_webhook`]).
//!
//! - `GET`: the verification handshake. `hub.mode=subscribe` with a session's verify token
//!   answers 200 with `hub.challenge` as `text/plain`; anything else 403.
//! - `POST`: 200 once everything in the body is stored; 401 for a missing or wrong
//!   signature; 413 over 3 MiB; 503 when storage fails (Meta delivers it again).
//!
//! <https://developers.facebook.com/docs/graph-api/webhooks/getting-started>
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::service::ChatSync;
use crate::service::whatsapp_cloud::WebhookAnswer;
use crate::sources::whatsapp_cloud::webhook::MAX_BODY_BYTES;

/// The path Meta calls.
pub const PATH: &str = "/webhooks/whatsapp";

/// `routes` with the webhook endpoint in front. `deadline`: how long a POST waits for its body
/// to be stored before it answers 503 (the storing goes on; Meta's redelivery then stores
/// nothing twice). It must be shorter than the server's call timeout (`unary_timeout_secs`):
/// that timeout answers with a gRPC status, which is HTTP 200, and Meta would take the body
/// as delivered.
pub fn with_webhooks(
    routes: tonic::service::Routes,
    service: ChatSync,
    deadline: Duration,
) -> tonic::service::Routes {
    let webhooks = axum::Router::new()
        .route(PATH, get(verify).post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Intake { service, deadline });
    tonic::service::Routes::from(routes.into_axum_router().merge(webhooks))
}

#[derive(Clone)]
struct Intake {
    service: ChatSync,
    deadline: Duration,
}

async fn verify(State(intake): State<Intake>, RawQuery(query): RawQuery) -> Response {
    let service = intake.service;
    let (mut mode, mut token, mut challenge) = (String::new(), String::new(), String::new());
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*key {
            "hub.mode" => mode = value.into_owned(),
            "hub.verify_token" => token = value.into_owned(),
            "hub.challenge" => challenge = value.into_owned(),
            _ => {}
        }
    }
    match service.whatsapp_verify(&mode, &token, &challenge) {
        Some(challenge) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            challenge,
        )
            .into_response(),
        None => StatusCode::FORBIDDEN.into_response(),
    }
}

async fn receive(State(intake): State<Intake>, headers: HeaderMap, body: Bytes) -> Response {
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    // A task of its own: a body is stored to the end even when this answer is given up (the
    // deadline, the server's call timeout, a client that hangs up), never left half-applied.
    let service = intake.service;
    let work =
        tokio::spawn(async move { service.whatsapp_webhook(signature.as_deref(), &body).await });
    let outcome = match tokio::time::timeout(intake.deadline, work).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(panicked)) => {
            tracing::error!(%panicked, "a webhook body's task failed; Meta will deliver it again");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Err(_) => {
            tracing::warn!(
                deadline = ?intake.deadline,
                "a webhook body is not stored yet; answering 503 (it goes on being stored, and Meta's redelivery stores nothing twice)"
            );
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    match outcome {
        Ok(WebhookAnswer::Stored) => StatusCode::OK.into_response(),
        Ok(WebhookAnswer::Unauthenticated(why)) => {
            tracing::warn!(why, "refused a webhook body");
            StatusCode::UNAUTHORIZED.into_response()
        }
        Err(error) => {
            tracing::error!(%error, "cannot store a webhook body; Meta will deliver it again");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

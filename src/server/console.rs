//! The web console: a single page served on the API's own listener.
//!
//! The page (`GET /`) and its bundle (`/app.js`, `/app.css`) are the committed build output
//! in `web/dist/`, embedded in the binary with `include_bytes!`, so `chatsync serve` serves
//! them without npm. The page talks to chatsync only through grpc-web (see `web/`).
//!
//! [`routes`] puts the page in front of the gRPC services: requests for the page's paths are
//! answered here, everything else goes to the gRPC routes behind the grpc-web translation.
//! The grpc-web layer wraps only the gRPC routes because it answers every plain HTTP/1.1
//! request (such as a browser's `GET /`) with 400.
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tonic::service::{LayerExt, Routes};

/// The console's HTML page.
pub const INDEX_HTML: &[u8] = include_bytes!("../../web/dist/index.html");
/// The console's script bundle (connect-web, protobuf-es and the page's code).
pub const APP_JS: &[u8] = include_bytes!("../../web/dist/app.js");
/// The console's stylesheet.
pub const APP_CSS: &[u8] = include_bytes!("../../web/dist/app.css");

/// The page is only allowed to load its own assets and to call its own origin. `blob:` images
/// are the attachments it fetched through GetMedia (object URLs of its own).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The gRPC `routes` behind grpc-web, with the console's page and assets in front.
pub fn routes(grpc: Routes) -> Routes {
    let grpc = tonic_web::GrpcWebLayer::new().named_layer(grpc);
    let router = axum::Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/index.html",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .fallback_service(grpc);
    Routes::from(router)
}

/// One embedded file with its content type. `no-cache`: browsers revalidate, so a new binary
/// never runs with an old bundle.
fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

//! Transport and access from outside: TLS (certificates made here with rcgen) through the
//! tonic client, `buf curl` over grpc-web and the console's page; mutual TLS; tokens refused
//! without TLS on a non-loopback address; tokens from `token_env` and `token_file`; the
//! reflection switch; and the limits: `max_subscriptions` (server-wide and per token), the
//! request size limit, and ListMessages pages that fit a default 4 MiB client.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use chatsync::config::{Config, TokenConfig};
use chatsync::grpc::pb;
use pb::chat_sync_service_client::ChatSyncServiceClient;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request};

// -- certificates ------------------------------------------------------------------------------

/// A CA, a server certificate for `localhost` and 127.0.0.1, and a client certificate, as PEM
/// files in `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: String,
    client_key: String,
    /// A client certificate from a CA the server does not trust.
    stranger_cert: String,
    stranger_key: String,
}

fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().expect("key"))
        .expect("CA certificate")
}

fn leaf(
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    names: &[&str],
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    params.extended_key_usages = vec![usage];
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("certificate");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let authority = ca("chatsync test CA");
        let (server_cert, server_key) = leaf(
            &authority,
            &["localhost", "127.0.0.1"],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            &authority,
            &["client.test"],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        );
        let stranger = ca("someone else's CA");
        let (stranger_cert, stranger_key) = leaf(
            &stranger,
            &["stranger.test"],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        );
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        Self {
            ca: write("ca.pem", &authority.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert,
            client_key,
            stranger_cert,
            stranger_key,
        }
    }

    fn serve_tls(&self, config: &mut Config) {
        config.tls_cert_file = Some(self.server_cert.clone());
        config.tls_key_file = Some(self.server_key.clone());
    }

    fn ca_pem(&self) -> String {
        std::fs::read_to_string(&self.ca).expect("CA PEM")
    }
}

/// A TLS channel to `app`, trusting `pki`'s CA, presenting `identity` when given.
async fn tls_channel(
    app: &TestApp,
    pki: &Pki,
    identity: Option<Identity>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.ca_pem()))
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Endpoint::from_shared(format!("https://localhost:{}", app.addr.port()))
        .expect("url")
        .tls_config(tls)?
        .connect()
        .await
}

fn bearer<T>(message: T, secret: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {secret}").parse().expect("header"),
    );
    request
}

fn list_sessions() -> pb::ListSessionsRequest {
    pb::ListSessionsRequest {}
}

// -- TLS ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_grpc_and_refuses_plain_connections() {
    let backend = Backend::sqlite();
    let pki = Pki::new(backend.dir.path());
    let app = TestApp::spawn_with(&backend, vec![local_session("notes")], |config| {
        pki.serve_tls(config);
        config.tokens = vec![token("tls-token-secret", &["*"])];
    })
    .await;

    let channel = tls_channel(&app, &pki, None).await.expect("TLS connects");
    let mut client = ChatSyncServiceClient::new(channel);
    let sessions = client
        .list_sessions(bearer(list_sessions(), "tls-token-secret"))
        .await
        .expect("ListSessions over TLS")
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].session_id, "notes");
    let sent = client
        .send_message(bearer(
            pb::SendMessageRequest {
                session_id: "notes".into(),
                chat_id: "general".into(),
                text: "over TLS".into(),
                client_message_id: "tls-1".into(),
                attachments: Vec::new(),
                ..Default::default()
            },
            "tls-token-secret",
        ))
        .await
        .expect("SendMessage over TLS")
        .into_inner();
    assert_eq!(sent.message.expect("message").text, "over TLS");

    // A plain HTTP/2 client gets no answer from a TLS listener.
    let plain = Endpoint::from_shared(app.url.clone())
        .expect("url")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(channel) = plain {
        let refused = ChatSyncServiceClient::new(channel)
            .list_sessions(bearer(list_sessions(), "tls-token-secret"))
            .await
            .expect_err("plain text on a TLS port fails");
        assert_ne!(refused.code(), Code::Ok);
    }

    // A client that does not trust the server's CA refuses the handshake.
    let untrusting = Endpoint::from_shared(format!("https://localhost:{}", app.addr.port()))
        .expect("url")
        .tls_config(ClientTlsConfig::new().domain_name("localhost"))
        .expect("tls config")
        .connect()
        .await;
    assert!(
        untrusting.is_err(),
        "a certificate from an unknown CA is not trusted"
    );
}

/// `GET path` over TLS (ALPN h2, as browsers negotiate it), trusting `pki`'s CA: the status
/// and the body.
async fn https_get(app: &TestApp, pki: &Pki, path: &str) -> (u16, String) {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let ca =
        rustls::pki_types::CertificateDer::from_pem_slice(pki.ca_pem().as_bytes()).expect("CA DER");
    roots.add(ca).expect("CA root");
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("TLS handshake");
    let (mut client, connection) = h2::client::handshake(tls).await.expect("HTTP/2");
    tokio::spawn(connection);
    let request = http::Request::get(format!("https://localhost:{}{path}", app.addr.port()))
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    let response = response.await.expect("response");
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_page_is_served_over_tls_on_the_same_port() {
    let backend = Backend::sqlite();
    let pki = Pki::new(backend.dir.path());
    let app = TestApp::spawn_with(&backend, vec![local_session("notes")], |config| {
        pki.serve_tls(config);
    })
    .await;
    let (status, html) = https_get(&app, &pki, "/").await;
    assert_eq!(status, 200);
    assert!(html.contains("<html"), "the console's page: {html:.200}");
    let (status, script) = https_get(&app, &pki, "/app.js").await;
    assert_eq!(status, 200);
    assert!(!script.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_trusted_certificate() {
    let backend = Backend::sqlite();
    let pki = Pki::new(backend.dir.path());
    let app = TestApp::spawn_with(&backend, vec![local_session("notes")], |config| {
        pki.serve_tls(config);
        config.tls_client_ca_file = Some(pki.ca.clone());
    })
    .await;

    // Without a certificate: the handshake (or the first call) fails.
    let refused = match tls_channel(&app, &pki, None).await {
        Err(_) => true,
        Ok(channel) => ChatSyncServiceClient::new(channel)
            .list_sessions(list_sessions())
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate is refused");

    // With a certificate from a CA the server does not trust: refused as well.
    let stranger = Identity::from_pem(&pki.stranger_cert, &pki.stranger_key);
    let refused = match tls_channel(&app, &pki, Some(stranger)).await {
        Err(_) => true,
        Ok(channel) => ChatSyncServiceClient::new(channel)
            .list_sessions(list_sessions())
            .await
            .is_err(),
    };
    assert!(refused, "a certificate from another CA is refused");

    // With the CA's client certificate: served.
    let identity = Identity::from_pem(&pki.client_cert, &pki.client_key);
    let channel = tls_channel(&app, &pki, Some(identity))
        .await
        .expect("mutual TLS connects");
    let sessions = ChatSyncServiceClient::new(channel)
        .list_sessions(list_sessions())
        .await
        .expect("ListSessions with a client certificate")
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_over_tls_with_buf_curl() {
    let Some(buf) = buf() else { return };
    let backend = Backend::sqlite();
    let pki = Pki::new(backend.dir.path());
    let app = TestApp::spawn_with(&backend, vec![local_session("notes")], |config| {
        pki.serve_tls(config);
        config.tokens = vec![token("buf-tls-token", &["notes"])];
    })
    .await;
    let url = format!(
        "https://localhost:{}/chatsync.v1.ChatSyncService/SendMessage",
        app.addr.port()
    );
    let output = tokio::process::Command::new(&buf)
        .args(["curl", "--protocol", "grpcweb", "--cacert"])
        .arg(&pki.ca)
        .args(["-H", "authorization: Bearer buf-tls-token"])
        // Reflection is behind the token too: send it there as well.
        .args(["--reflect-header", "*", "--data"])
        .arg(r#"{"session_id":"notes","chat_id":"general","text":"hello via grpc-web","client_message_id":"b1"}"#)
        .arg(&url)
        .output()
        .await
        .expect("run buf curl");
    assert!(
        output.status.success(),
        "buf curl over TLS failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("buf curl prints JSON");
    assert_eq!(answer["message"]["text"], "hello via grpc-web");

    // The token is still needed over TLS: here reflection gets it, the call does not.
    let output = tokio::process::Command::new(&buf)
        .args(["curl", "--protocol", "grpcweb", "--cacert"])
        .arg(&pki.ca)
        .args(["--reflect-header", "authorization: Bearer buf-tls-token"])
        .args(["--data", r#"{"session_id":"notes"}"#])
        .arg(url.replace("SendMessage", "GetSyncStatus"))
        .output()
        .await
        .expect("run buf curl");
    assert!(!output.status.success(), "no token, no answer");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(printed.contains("unauthenticated"), "{printed}");
}

// -- tokens ------------------------------------------------------------------------------------

fn non_loopback_config(tokens: Vec<TokenConfig>) -> Config {
    Config {
        listen: "0.0.0.0:0".parse().expect("address"),
        tokens,
        ..Config::default()
    }
}

#[test]
fn tokens_on_a_non_loopback_address_need_tls_or_an_explicit_opt_in() {
    let error = non_loopback_config(vec![token("a-secret-token", &["*"])])
        .validate()
        .expect_err("tokens without TLS on 0.0.0.0");
    let text = error.to_string();
    assert!(text.contains("without TLS"), "{text}");
    assert!(text.contains("allow_insecure_tokens"), "says how: {text}");

    let mut insecure = non_loopback_config(vec![token("a-secret-token", &["*"])]);
    insecure.allow_insecure_tokens = true;
    insecure.validate().expect("explicitly allowed");

    let mut tls = non_loopback_config(vec![token("a-secret-token", &["*"])]);
    tls.tls_cert_file = Some("/etc/chatsync/cert.pem".into());
    tls.tls_key_file = Some("/etc/chatsync/key.pem".into());
    tls.validate().expect("tokens with TLS");

    let half = Config {
        tls_cert_file: Some("/etc/chatsync/cert.pem".into()),
        ..Config::default()
    };
    let text = half.validate().expect_err("cert without key").to_string();
    assert!(text.contains("tls_key_file"), "{text}");

    let mutual = Config {
        tls_client_ca_file: Some("/etc/chatsync/ca.pem".into()),
        ..Config::default()
    };
    let text = mutual.validate().expect_err("mTLS without TLS").to_string();
    assert!(text.contains("tls_client_ca_file"), "{text}");
}

#[tokio::test]
async fn the_binary_refuses_tokens_without_tls_on_a_non_loopback_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("chatsync.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"0.0.0.0:0\"\ndatabase_url = \"sqlite://{}\"\n\
             [[tokens]]\ntoken = \"a-secret-token\"\nsessions = [\"*\"]\n\
             [[sessions]]\nid = \"notes\"\nsource = \"local\"\n",
            dir.path().join("chatsync.db").display()
        ),
    )
    .expect("config");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatsync"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_remove("CHATSYNC_LISTEN")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run chatsync serve");
    assert!(!output.status.success(), "must refuse to start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("without TLS"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("listening"),
        "never listened"
    );
}

#[test]
fn a_token_entry_takes_exactly_one_secret_source() {
    let mut both = token("inline-secret", &["*"]);
    both.token_env = Some("CHATSYNC_TEST_UNUSED".into());
    let text = both.secret().expect_err("two sources").to_string();
    assert!(text.contains("exactly one"), "{text}");
    let none = TokenConfig {
        sessions: vec!["*".into()],
        ..TokenConfig::default()
    };
    assert!(none.secret().is_err());
    let missing = TokenConfig {
        token_env: Some("CHATSYNC_TEST_TOKEN_NEVER_SET".into()),
        sessions: vec!["*".into()],
        ..TokenConfig::default()
    };
    let text = missing.secret().expect_err("unset variable").to_string();
    assert!(text.contains("CHATSYNC_TEST_TOKEN_NEVER_SET"), "{text}");
    let short = token("short", &["*"]);
    assert!(short.secret().is_err(), "under 8 characters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_env_and_file_are_accepted_and_unknown_ones_refused() {
    let backend = Backend::sqlite();
    let file = backend.dir.path().join("token");
    std::fs::write(&file, "secret-from-a-file\n").expect("token file");
    // SAFETY: the variable's name is this test's own; nothing else reads or writes it.
    unsafe { std::env::set_var("CHATSYNC_TEST_TRANSPORT_TOKEN", "secret-from-the-env") };
    let app = TestApp::spawn_with(
        &backend,
        vec![local_session("env-only"), local_session("file-only")],
        |config| {
            config.tokens = vec![
                TokenConfig {
                    token_env: Some("CHATSYNC_TEST_TRANSPORT_TOKEN".into()),
                    sessions: vec!["env-only".into()],
                    ..TokenConfig::default()
                },
                TokenConfig {
                    token_file: Some(file.clone()),
                    sessions: vec!["file-only".into()],
                    ..TokenConfig::default()
                },
            ];
        },
    )
    .await;
    let mut client = app.client().await;
    let visible = |secret: &'static str| {
        let mut client = client.clone();
        async move {
            client
                .list_sessions(bearer(list_sessions(), secret))
                .await
                .map(|r| {
                    r.into_inner()
                        .sessions
                        .into_iter()
                        .map(|s| s.session_id)
                        .collect::<Vec<_>>()
                })
        }
    };
    assert_eq!(
        visible("secret-from-the-env").await.expect("env token"),
        ["env-only"]
    );
    assert_eq!(
        visible("secret-from-a-file").await.expect("file token"),
        ["file-only"]
    );
    for unknown in [
        "secret-from-the-en",
        "secret-from-the-env!",
        "secret-from-a-fil",
    ] {
        let status = visible(unknown).await.expect_err("unknown token");
        assert_eq!(status.code(), Code::Unauthenticated, "{unknown:?}");
    }
    let missing = client
        .list_sessions(list_sessions())
        .await
        .expect_err("no token");
    assert_eq!(missing.code(), Code::Unauthenticated);
    // The file's token is scoped: another session is PERMISSION_DENIED.
    let denied = client
        .get_sync_status(bearer(
            pb::GetSyncStatusRequest {
                session_id: "env-only".into(),
            },
            "secret-from-a-file",
        ))
        .await
        .expect_err("outside the token's scope");
    assert_eq!(denied.code(), Code::PermissionDenied);
}

/// Lists services through reflection; the status of the first answer.
async fn reflect(channel: Channel, secret: Option<&str>) -> Result<Vec<String>, tonic::Status> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut request = Request::new(tokio_stream::iter([request]));
    if let Some(secret) = secret {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {secret}").parse().expect("header"),
        );
    }
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(request)
        .await?
        .into_inner();
    let answer = answers.next().await.expect("one answer")?.message_response;
    match answer {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

async fn health(channel: Channel) -> Result<i32, tonic::Status> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|r| r.into_inner().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_is_behind_the_token_unless_switched_off_and_health_is_open() {
    for requires_token in [true, false] {
        let backend = Backend::sqlite();
        let app = TestApp::spawn_with(&backend, vec![local_session("notes")], |config| {
            config.tokens = vec![token("reflection-token", &["notes"])];
            config.reflection_requires_token = requires_token;
        })
        .await;
        let channel = app.channel().await;
        let services = reflect(channel.clone(), Some("reflection-token"))
            .await
            .expect("reflection with a token");
        assert!(
            services.iter().any(|s| s == "chatsync.v1.ChatSyncService"),
            "{services:?}"
        );
        let anonymous = reflect(channel.clone(), None).await;
        if requires_token {
            let status = anonymous.expect_err("reflection needs the token");
            assert_eq!(status.code(), Code::Unauthenticated);
        } else {
            anonymous.expect("reflection is open when switched off");
        }
        // Health answers anyone who can reach the port (load balancers, orchestrators).
        assert_eq!(health(channel).await.expect("health without a token"), 1);
    }
}

// -- limits ------------------------------------------------------------------------------------

async fn subscribe(
    client: &mut ChatSyncServiceClient<Channel>,
    secret: Option<&str>,
) -> Result<tonic::Streaming<pb::SubscribeMessagesResponse>, tonic::Status> {
    let body = pb::SubscribeMessagesRequest {
        session_id: "notes".into(),
        chat_ids: vec![],
        after_seq: Some(0),
    };
    let request = match secret {
        Some(secret) => bearer(body, secret),
        None => Request::new(body),
    };
    let mut stream = client.subscribe_messages(request).await?.into_inner();
    // Open for real: the server sent its `ready` marker.
    loop {
        let event = stream
            .message()
            .await?
            .expect("the subscription stays open")
            .event;
        if let Some(pb::subscribe_messages_response::Event::Ready(_)) = event {
            return Ok(stream);
        }
    }
}

/// Subscribes until the server has released a slot (it notices a closed stream when the
/// client's reset arrives); fails after [`HANG_GUARD`].
async fn subscribe_once_freed(
    client: &mut ChatSyncServiceClient<Channel>,
    secret: Option<&str>,
) -> tonic::Streaming<pb::SubscribeMessagesResponse> {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        match subscribe(client, secret).await {
            Ok(stream) => return stream,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the slot was never released: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("subscribe failed: {status:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_subscriptions_cuts_off_with_resource_exhausted_and_frees_slots() {
    let backend = Backend::sqlite();
    let app = TestApp::spawn_with(&backend, vec![local_session("notes")], |config| {
        config.max_subscriptions = 2;
    })
    .await;
    let mut client = app.client().await;
    let first = subscribe(&mut client, None).await.expect("first");
    let _second = subscribe(&mut client, None).await.expect("second");
    let status = subscribe(&mut client, None)
        .await
        .expect_err("a third is over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("maximum of 2"),
        "{}",
        status.message()
    );
    // Unary calls are not limited by it.
    app.client()
        .await
        .list_sessions(list_sessions())
        .await
        .expect("unary calls go on");

    // The client closes its first stream: the slot comes back.
    drop(first);
    let _third = subscribe_once_freed(&mut client, None).await;
    let status = subscribe(&mut client, None).await.expect_err("full again");
    assert_eq!(status.code(), Code::ResourceExhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_limit_applies_to_that_token_only() {
    let backend = Backend::sqlite();
    let app = TestApp::spawn_with(&backend, vec![local_session("notes")], |config| {
        let mut limited = token("limited-token", &["*"]);
        limited.max_subscriptions = Some(1);
        config.tokens = vec![limited, token("unlimited-token", &["*"])];
    })
    .await;
    let mut client = app.client().await;
    let held = subscribe(&mut client, Some("limited-token"))
        .await
        .expect("first");
    let status = subscribe(&mut client, Some("limited-token"))
        .await
        .expect_err("the token's second");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("this token"),
        "{}",
        status.message()
    );
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(
            subscribe(&mut client, Some("unlimited-token"))
                .await
                .expect("another token is not limited"),
        );
    }
    drop(held);
    let _again = subscribe_once_freed(&mut client, Some("limited-token")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_refused_with_a_clear_status() {
    let backend = Backend::sqlite();
    let app = TestApp::spawn_with(&backend, vec![local_session("notes")], |config| {
        config.max_request_bytes = 16 * 1024;
    })
    .await;
    let mut client = app.client().await;
    let send = |text: String| pb::SendMessageRequest {
        session_id: "notes".into(),
        chat_id: "general".into(),
        text,
        client_message_id: String::new(),
        attachments: Vec::new(),
        ..Default::default()
    };
    let status = client
        .send_message(send("x".repeat(20 * 1024)))
        .await
        .expect_err("over max_request_bytes");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("too large"),
        "says why: {}",
        status.message()
    );
    client
        .send_message(send("x".repeat(8 * 1024)))
        .await
        .expect("under the limit");
    // The connection is still usable afterwards.
    client
        .list_sessions(list_sessions())
        .await
        .expect("still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_messages_pages_of_large_messages_fit_a_default_client() {
    let backend = Backend::sqlite();
    let app = TestApp::spawn(&backend, vec![local_session("notes")]).await;
    let mut client = app.client().await;
    // 100 messages of 60 KiB: 6 MiB in all, more than a default client's 4 MiB.
    let count = 100;
    for i in 0..count {
        client
            .send_message(pb::SendMessageRequest {
                session_id: "notes".into(),
                chat_id: "big".into(),
                text: format!("{i:03}{}", "m".repeat(60 * 1024)),
                client_message_id: format!("big-{i}"),
                attachments: Vec::new(),
                ..Default::default()
            })
            .await
            .expect("send");
    }
    // Forwards, asking for everything at once: the default client (4 MiB) decodes every page.
    let mut seen = Vec::new();
    let mut after_seq = 0;
    let mut pages = 0;
    loop {
        let page = client
            .list_messages(pb::ListMessagesRequest {
                session_id: "notes".into(),
                chat_id: "big".into(),
                after_seq,
                limit: 1_000,
                ..Default::default()
            })
            .await
            .expect("a page fits a default client")
            .into_inner();
        pages += 1;
        assert!(!page.messages.is_empty());
        seen.extend(page.messages.iter().map(|m| m.text[..3].to_owned()));
        after_seq = page.next_seq;
        if !page.has_more {
            break;
        }
    }
    assert!(pages >= 2, "6 MiB does not fit one page");
    let expected: Vec<String> = (0..count).map(|i| format!("{i:03}")).collect();
    assert_eq!(seen, expected, "every message once, in order");

    // Backwards from the newest, the same.
    let mut seen = Vec::new();
    let mut before_seq = u64::MAX;
    loop {
        let page = client
            .list_messages(pb::ListMessagesRequest {
                session_id: "notes".into(),
                chat_id: "big".into(),
                before_seq,
                limit: 1_000,
                ..Default::default()
            })
            .await
            .expect("a backward page fits a default client")
            .into_inner();
        assert!(!page.messages.is_empty());
        let mut texts: Vec<String> = page
            .messages
            .iter()
            .map(|m| m.text[..3].to_owned())
            .collect();
        texts.extend(seen);
        seen = texts;
        before_seq = page.next_seq;
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seen, expected, "every message once, backwards");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reaches_a_tls_server_with_its_ca_certificate() {
    let backend = Backend::sqlite();
    let pki = Pki::new(backend.dir.path());
    let app = TestApp::spawn_with(&backend, vec![local_session("notes")], |config| {
        pki.serve_tls(config);
        config.tokens = vec![token("cli-tls-token", &["*"])];
    })
    .await;
    let server = format!("https://localhost:{}", app.addr.port());
    let cli = |ca: Option<&Path>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatsync"));
        command
            .args([
                "send",
                "notes",
                "general",
                "from the CLI over TLS",
                "--json",
            ])
            .args(["--server", &server, "--token", "cli-tls-token"])
            .env_remove("CHATSYNC_CA_CERT")
            .kill_on_drop(true);
        if let Some(ca) = ca {
            command.arg("--ca-cert").arg(ca);
        }
        command.output()
    };
    let output = cli(Some(&pki.ca)).await.expect("run the CLI");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("from the CLI over TLS"));
    // Without the CA, the public roots do not vouch for the test's certificate.
    let output = cli(None).await.expect("run the CLI");
    assert!(!output.status.success(), "an unknown CA is not trusted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_or_invalid_tls_files_fail_the_start() {
    let backend = Backend::sqlite();
    let pki = Pki::new(backend.dir.path());
    let junk = backend.dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("junk");
    let build = |cert: PathBuf, key: PathBuf| {
        let config = Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            database_url: backend.database_url.clone(),
            sessions: vec![local_session("notes")],
            tls_cert_file: Some(cert),
            tls_key_file: Some(key),
            ..Config::default()
        };
        async move {
            match chatsync::server::Application::build(config).await {
                Ok(_) => panic!("must refuse"),
                Err(error) => error.to_string(),
            }
        }
    };
    let missing = build(backend.dir.path().join("nope.pem"), pki.server_key.clone()).await;
    assert!(missing.contains("cannot read tls_cert_file"), "{missing}");
    let invalid = build(junk, pki.server_key.clone()).await;
    assert!(
        invalid.contains("invalid TLS certificate or key"),
        "{invalid}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_streams_is_announced_to_clients() {
    let backend = Backend::sqlite();
    let app = TestApp::spawn_with(&backend, vec![local_session("notes")], |config| {
        config.max_concurrent_streams = 3;
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::get(format!("http://{}/", app.addr))
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    // Once an answer has arrived, the server's SETTINGS frame has been read.
    assert_eq!(response.await.expect("response").status(), 200);
    assert_eq!(client.current_max_send_streams(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_have_a_default_deadline_and_streams_do_not() {
    use sea_orm::sqlx::{self, Connection};
    let backend = Backend::sqlite();
    let app = TestApp::spawn_with(&backend, vec![local_session("notes")], |config| {
        config.unary_timeout_secs = 1;
        config.heartbeat_secs = 2;
    })
    .await;
    let mut client = app.client().await;
    let mut stream = subscribe(&mut client, None).await.expect("subscribe");

    // Another connection holds SQLite's write lock: a send waits (up to the server's 10 s busy
    // timeout), and the 1 s deadline ends it first.
    let mut blocker = sqlx::SqliteConnection::connect(&backend.database_url)
        .await
        .expect("second connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .expect("take the write lock");
    let send = |key: &str| pb::SendMessageRequest {
        session_id: "notes".into(),
        chat_id: "general".into(),
        text: "waits for the lock".into(),
        client_message_id: key.into(),
        attachments: Vec::new(),
        ..Default::default()
    };
    let status = client
        .send_message(send("deadline-1"))
        .await
        .expect_err("the deadline ends a blocked unary call");
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert!(status.message().contains("Timeout"), "{status:?}");

    // The subscription, open for longer than the deadline, goes on: a heartbeat (every 2 s)
    // arrives after the 1 s deadline has passed.
    loop {
        let event = stream
            .message()
            .await
            .expect("the stream is not cut by the unary deadline")
            .expect("still open")
            .event;
        if let Some(pb::subscribe_messages_response::Event::Heartbeat(_)) = event {
            break;
        }
    }
    sqlx::query("ROLLBACK")
        .execute(&mut blocker)
        .await
        .expect("release the lock");
    client
        .send_message(send("deadline-2"))
        .await
        .expect("served once the lock is free");
}

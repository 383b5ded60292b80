//! Operating the server: Prometheus metrics at `GET /metrics` (counted after real traffic,
//! the whole scrape checked against the text format's grammar, behind the token), log lines
//! as JSON or as plain text without ANSI escapes, and the installed binary serving its
//! embedded demo from an empty directory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;

use crate::common::*;
use chatsync::grpc::pb;
use pb::chat_sync_service_client::ChatSyncServiceClient;
use pb::subscribe_messages_response::Event;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tonic::Request;

const ADMIN_TOKEN: &str = "metrics-admin-secret";
const NOTES_TOKEN: &str = "notes-only-secret";

// ---------------------------------------------------------------------------------------------
// The Prometheus text format, version 0.0.4, checked strictly.
// ---------------------------------------------------------------------------------------------

/// A parsed scrape: each series (`name{label="value",…}`, labels sorted) with its value, and
/// each family's type.
#[derive(Debug, Default)]
struct Scrape {
    samples: BTreeMap<String, f64>,
    types: HashMap<String, String>,
}

impl Scrape {
    /// The value of the series `name` with exactly these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let owned: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.get(&series_key(name, &owned)).copied()
    }
}

fn series_key(name: &str, labels: &[(String, String)]) -> String {
    let mut sorted = labels.to_vec();
    sorted.sort();
    let inner: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse::<f64>()
            .map_err(|_| format!("bad sample value {text:?}")),
    }
}

/// Splits `name{labels} value [timestamp]` into its parts, unescaping label values.
/// A sample line's name, labels and value.
type Sample = (String, Vec<(String, String)>, f64);

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value: {line:?}"))?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let mut chars = after_brace.char_indices().peekable();
        let consumed: usize;
        loop {
            // A label name, `=`, a quoted value; then `,` or `}`.
            let start = match chars.peek() {
                Some((_, '}')) => {
                    consumed = chars.next().map(|(i, _)| i + 1).unwrap_or_default();
                    break;
                }
                Some((i, _)) => *i,
                None => return Err(format!("unclosed labels: {line:?}")),
            };
            let mut end = start;
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    end = i;
                    break;
                }
            }
            let label = &after_brace[start..end];
            if !is_label_name(label) {
                return Err(format!("bad label name {label:?} in {line:?}"));
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label value not quoted in {line:?}"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape {other:?} in {line:?}")),
                    },
                    Some((_, '\n')) => return Err(format!("raw newline in {line:?}")),
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("unterminated label value in {line:?}")),
                }
            }
            if labels.iter().any(|(k, _): &(String, String)| k == label) {
                return Err(format!("label {label} twice in {line:?}"));
            }
            labels.push((label.to_owned(), value));
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => {
                    consumed = i + 1;
                    break;
                }
                other => return Err(format!("expected , or }} but got {other:?} in {line:?}")),
            }
        }
        rest = &after_brace[consumed..];
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before the value in {line:?}"))?;
    let mut fields = rest.split(' ');
    let value = parse_value(fields.next().unwrap_or_default())?;
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("bad timestamp in {line:?}"))?;
    }
    if fields.next().is_some() {
        return Err(format!("trailing text in {line:?}"));
    }
    Ok((name.to_owned(), labels, value))
}

/// Moves the parse to `family`'s group of lines; a family may not come back after another.
fn switch_to(
    family: &str,
    current: &mut Option<String>,
    finished: &mut HashSet<String>,
) -> Result<(), String> {
    if current.as_deref() == Some(family) {
        return Ok(());
    }
    if finished.contains(family) {
        return Err(format!("family {family} appears in two groups"));
    }
    if let Some(previous) = current.take() {
        finished.insert(previous);
    }
    *current = Some(family.to_owned());
    Ok(())
}

/// Parses a whole scrape, failing on anything the text format (version 0.0.4) does not allow:
/// bad names, labels or values, a TYPE after its samples or twice, a family split into two
/// groups, a duplicate series, a histogram whose buckets are not cumulative or end elsewhere
/// than at `+Inf` = `_count`, or a body that does not end with a newline.
fn parse_prometheus_text(body: &str) -> Result<Scrape, String> {
    if !body.ends_with('\n') {
        return Err("the body must end with a newline".into());
    }
    let mut scrape = Scrape::default();
    let mut helps = HashSet::new();
    let mut finished_families: HashSet<String> = HashSet::new();
    let mut current_family: Option<String> = None;
    // Histogram series, by family and labels without `le`: (le, count) in order.
    let mut buckets: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    for line in body.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.strip_prefix(' ').unwrap_or(comment);
            if let Some(help) = comment.strip_prefix("HELP ") {
                let (name, text) = help.split_once(' ').unwrap_or((help, ""));
                if !is_metric_name(name) {
                    return Err(format!("bad name in {line:?}"));
                }
                let mut escaped = text.chars();
                while let Some(c) = escaped.next() {
                    if c == '\\' && !matches!(escaped.next(), Some('\\' | 'n')) {
                        return Err(format!("bad escape in {line:?}"));
                    }
                }
                if !helps.insert(name.to_owned()) {
                    return Err(format!("HELP for {name} twice"));
                }
                switch_to(name, &mut current_family, &mut finished_families)?;
            } else if let Some(kind) = comment.strip_prefix("TYPE ") {
                let (name, kind) = kind
                    .split_once(' ')
                    .ok_or_else(|| format!("bad TYPE line {line:?}"))?;
                if !is_metric_name(name) {
                    return Err(format!("bad name in {line:?}"));
                }
                if !matches!(
                    kind,
                    "counter" | "gauge" | "histogram" | "summary" | "untyped"
                ) {
                    return Err(format!("unknown type in {line:?}"));
                }
                if scrape
                    .types
                    .insert(name.to_owned(), kind.to_owned())
                    .is_some()
                {
                    return Err(format!("TYPE for {name} twice"));
                }
                switch_to(name, &mut current_family, &mut finished_families)?;
                if scrape.samples.keys().any(|key| {
                    key.split('{').next().is_some_and(|sample| {
                        sample == name
                            || ["_bucket", "_sum", "_count"]
                                .iter()
                                .any(|suffix| sample == format!("{name}{suffix}"))
                    })
                }) {
                    return Err(format!("TYPE for {name} after its samples"));
                }
            }
            // Other comments are allowed and ignored.
            continue;
        }
        let (name, labels, value) = parse_sample(line)?;
        // Which family this sample belongs to, by the declared types.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix).filter(|base| {
                    matches!(
                        scrape.types.get(*base).map(String::as_str),
                        Some("histogram" | "summary")
                    )
                })
            })
            .unwrap_or(&name)
            .to_owned();
        switch_to(&family, &mut current_family, &mut finished_families)?;
        let kind = scrape.types.get(&family).map(String::as_str);
        if kind == Some("counter") && !name.ends_with("_total") {
            return Err(format!("counter {name} does not end in _total"));
        }
        if kind == Some("histogram") && name.ends_with("_bucket") {
            let le = labels
                .iter()
                .find(|(k, _)| k == "le")
                .ok_or_else(|| format!("bucket without le: {line:?}"))?;
            let le = parse_value(&le.1)?;
            let rest: Vec<(String, String)> =
                labels.iter().filter(|(k, _)| k != "le").cloned().collect();
            buckets
                .entry((family.clone(), series_key("", &rest)))
                .or_default()
                .push((le, value));
        }
        let key = series_key(&name, &labels);
        if scrape.samples.insert(key.clone(), value).is_some() {
            return Err(format!("series {key} twice"));
        }
    }
    for ((family, labels), series) in &buckets {
        for pair in series.windows(2) {
            if pair[1].0 <= pair[0].0 || pair[1].1 < pair[0].1 {
                return Err(format!(
                    "{family}{labels}: buckets not ascending and cumulative"
                ));
            }
        }
        let (last_le, last_count) = series.last().copied().unwrap_or_default();
        if last_le != f64::INFINITY {
            return Err(format!("{family}{labels}: no +Inf bucket"));
        }
        let count_key = format!("{family}_count{labels}");
        if scrape.samples.get(&count_key) != Some(&last_count) {
            return Err(format!("{family}{labels}: +Inf bucket differs from _count"));
        }
    }
    Ok(scrape)
}

#[test]
fn the_text_format_check_refuses_what_the_format_does_not_allow() {
    let good = "# HELP a_total A counter.\n# TYPE a_total counter\na_total{x=\"1\\\"\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n";
    let scrape = parse_prometheus_text(good).expect("valid");
    assert_eq!(scrape.value("a_total", &[("x", "1\"")]), Some(3.0));
    for bad in [
        "a 1",                          // no final newline
        "1a 1\n",                       // bad name
        "a{x=1} 1\n",                   // unquoted value
        "a{x=\"1\"} one\n",             // bad value
        "a 1\n# TYPE a gauge\n",        // TYPE after samples
        "# TYPE a counter\na 1\n",      // counter without _total
        "a 1\nb 1\na 2\n",              // split family
        "a{x=\"1\"} 1\na{x=\"1\"} 2\n", // duplicate series
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n", // not cumulative
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\n",                          // no +Inf
    ] {
        assert!(parse_prometheus_text(bad).is_err(), "accepted {bad:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// Sends `authorization: Bearer SECRET` on every call.
#[derive(Clone)]
struct Bearer(&'static str);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, tonic::Status> {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.0).parse().expect("header"),
        );
        Ok(request)
    }
}

fn with_token(
    channel: tonic::transport::Channel,
    secret: &'static str,
) -> ChatSyncServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
> {
    ChatSyncServiceClient::with_interceptor(channel, Bearer(secret))
}

async fn scrape(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("{url}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("GET /metrics")
}

async fn scrape_parsed(url: &str) -> Scrape {
    let response = scrape(url, Some(ADMIN_TOKEN)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let body = response.text().await.expect("body");
    parse_prometheus_text(&body).unwrap_or_else(|error| panic!("{error}\n{body}"))
}

on_both_backends!(metrics_count_real_traffic_and_parse_as_prometheus_text);

async fn metrics_count_real_traffic_and_parse_as_prometheus_text(backend: Backend) {
    let app = TestApp::spawn_with(
        &backend,
        vec![
            whatsapp_session("demo", &samples().join("whatsapp")),
            local_session("notes"),
        ],
        |config| config.tokens = vec![token(ADMIN_TOKEN, &["*"]), token(NOTES_TOKEN, &["notes"])],
    )
    .await;

    // Behind the token.
    let anonymous = scrape(&app.url, None).await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    assert_eq!(
        scrape(&app.url, Some("not-a-configured-token"))
            .await
            .status(),
        401
    );
    assert_eq!(
        scrape(&app.url, Some(NOTES_TOKEN)).await.status(),
        403,
        "a token scoped to some sessions may not read every session's metrics"
    );

    let before = scrape_parsed(&app.url).await;
    assert_eq!(before.value("chatsync_sync_messages_total", &[]), Some(0.0));
    assert_eq!(
        before.value("chatsync_subscriptions_active", &[]),
        Some(0.0)
    );

    let mut client = with_token(app.channel().await, ADMIN_TOKEN);
    // A sync run to its end.
    let mut sync = client
        .sync_chats(pb::SyncChatsRequest {
            session_id: "demo".into(),
            limit_per_chat: Some(0),
            since: None,
        })
        .await
        .expect("SyncChats")
        .into_inner();
    let mut last = None;
    while let Some(frame) = sync.message().await.expect("frame") {
        last = frame.progress;
    }
    let last = last.expect("frames");
    assert_eq!(stage(&last), SyncStage::Completed);
    let synced = last.total_messages_synced;
    assert!(synced > 0);

    // A live subscription, open while the metrics are read.
    let mut subscription = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: "notes".into(),
            chat_ids: vec![],
            after_seq: Some(0),
        })
        .await
        .expect("subscribe")
        .into_inner();
    let ready = subscription.message().await.expect("ready").expect("ready");
    assert!(matches!(ready.event, Some(Event::Ready(_))));

    // A send, seen by the subscription.
    let sent = client
        .send_message(pb::SendMessageRequest {
            session_id: "notes".into(),
            chat_id: "general".into(),
            text: "counted".into(),
            client_message_id: "metrics-1".into(),
            attachments: Vec::new(),
            ..Default::default()
        })
        .await
        .expect("send")
        .into_inner();
    loop {
        let event = subscription.message().await.expect("event").expect("event");
        if let Some(Event::MessageCreated(message)) = event.event {
            assert_eq!(message.id, sent.message.as_ref().expect("message").id);
            break;
        }
    }

    // Errors are counted by their code, native gRPC and grpc-web alike.
    let missing = client
        .get_sync_status(pb::GetSyncStatusRequest {
            session_id: "no-such-session".into(),
        })
        .await
        .expect_err("unknown session");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let web = grpc_web_post(
        app.addr,
        "/chatsync.v1.ChatSyncService/GetSyncStatus",
        None,
        &prost::Message::encode_to_vec(&pb::GetSyncStatusRequest {
            session_id: "notes".into(),
        }),
    )
    .await;
    assert!(
        web.contains("grpc-status: 16") || web.contains("grpc-status:16"),
        "{web}"
    );

    let after = scrape_parsed(&app.url).await;
    let requests = |scrape: &Scrape, method: &str, code: &str| {
        scrape
            .value(
                "chatsync_rpc_requests_total",
                &[("method", method), ("code", code)],
            )
            .unwrap_or(0.0)
    };
    assert_eq!(requests(&after, "SyncChats", "OK"), 1.0);
    assert_eq!(requests(&after, "SendMessage", "OK"), 1.0);
    assert_eq!(requests(&after, "GetSyncStatus", "NOT_FOUND"), 1.0);
    assert_eq!(requests(&after, "GetSyncStatus", "UNAUTHENTICATED"), 1.0);
    assert_eq!(
        requests(&after, "SubscribeMessages", "OK")
            + requests(&after, "SubscribeMessages", "CANCELLED"),
        0.0,
        "an open stream is counted when it ends"
    );
    assert_eq!(
        after.value(
            "chatsync_rpc_duration_seconds_count",
            &[("method", "SendMessage")]
        ),
        Some(1.0)
    );
    assert!(
        after
            .value(
                "chatsync_rpc_duration_seconds_sum",
                &[("method", "SyncChats")]
            )
            .is_some_and(|seconds| seconds > 0.0)
    );
    assert_eq!(
        after.value("chatsync_sync_messages_total", &[]),
        Some(synced as f64)
    );
    assert_eq!(after.value("chatsync_subscriptions_active", &[]), Some(1.0));
    assert_eq!(after.value("chatsync_sync_runs_active", &[]), Some(0.0));
    let in_use = after
        .value("chatsync_db_pool_connections", &[("state", "in_use")])
        .expect("in use");
    let idle = after
        .value("chatsync_db_pool_connections", &[("state", "idle")])
        .expect("idle");
    assert!(in_use + idle >= 1.0, "the pool holds a connection");
    for (name, kind) in [
        ("chatsync_rpc_requests_total", "counter"),
        ("chatsync_rpc_duration_seconds", "histogram"),
        ("chatsync_subscriptions_active", "gauge"),
        ("chatsync_sync_messages_total", "counter"),
        ("chatsync_sync_runs_active", "gauge"),
        ("chatsync_feed_lag_seq", "gauge"),
        ("chatsync_db_pool_connections", "gauge"),
    ] {
        assert_eq!(
            after.types.get(name).map(String::as_str),
            Some(kind),
            "{name}"
        );
    }
    // The subscriber has been handed the head: no lag (its cursor moves just after the
    // hand-over, so wait for it).
    eventually("the notes subscriber's feed lag to reach 0", || async {
        scrape_parsed(&app.url)
            .await
            .value("chatsync_feed_lag_seq", &[("session_id", "notes")])
            == Some(0.0)
    })
    .await;

    // The client goes away: the stream is counted CANCELLED and no longer active.
    drop(subscription);
    eventually("the abandoned subscription to be counted", || async {
        let now = scrape_parsed(&app.url).await;
        now.value("chatsync_subscriptions_active", &[]) == Some(0.0)
            && requests(&now, "SubscribeMessages", "CANCELLED") == 1.0
            && now
                .value("chatsync_feed_lag_seq", &[("session_id", "notes")])
                .is_none()
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The binary as a process: log formats, and the embedded demo
// ---------------------------------------------------------------------------------------------

/// A `chatsync serve` process whose stderr is collected.
struct Served {
    child: tokio::process::Child,
    url: String,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
}

/// Starts `chatsync serve` in `cwd` with only `env` (plus PATH) set, and waits for the line
/// it prints once it listens.
async fn serve_process(cwd: &Path, args: &[&str], env: &[(&str, &Path)]) -> Served {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatsync"));
    command
        .arg("serve")
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CHATSYNC_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("spawn chatsync serve");
    let mut stderr = child.stderr.take().expect("stderr");
    let stderr = tokio::spawn(async move {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes).await;
        bytes
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = stdout
        .next_line()
        .await
        .expect("stdout")
        .unwrap_or_else(|| panic!("chatsync serve exited before listening"));
    let url = line
        .strip_prefix("chatsync listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Served { child, url, stderr }
}

impl Served {
    /// Stops the process with SIGTERM, waits for it, and returns its stderr.
    async fn terminate(mut self) -> Vec<u8> {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let exit = self.child.wait().await.expect("wait");
        assert!(exit.success(), "chatsync serve exited with {exit:?}");
        self.stderr.await.expect("stderr")
    }
}

async fn cli(url: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_chatsync"))
        .args(args)
        .args(["--server", url])
        .output()
        .await
        .expect("run the CLI")
}

fn config_file(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("chatsync.toml");
    std::fs::write(
        &path,
        format!(
            "database_url = \"sqlite://{}\"\n{extra}\n[[sessions]]\nid = \"demo\"\nsource = \"whatsapp-export\"\npath = \"{}\"\n",
            dir.join("chatsync.db").display(),
            samples().join("whatsapp").display()
        ),
    )
    .expect("config");
    path
}

/// Runs `chatsync serve` as a process with `extra` configuration lines, syncs `demo` through
/// the CLI, stops the server with SIGTERM and returns everything it wrote to stderr.
async fn logs_of_a_demo_sync(extra: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(dir.path(), extra);
    let served = serve_process(
        dir.path(),
        &["--config", config.to_str().expect("utf-8")],
        &[("HOME", dir.path())],
    )
    .await;
    let synced = cli(&served.url, &["sync", "demo", "--all"]).await;
    assert!(synced.status.success(), "{synced:?}");
    served.terminate().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_with_level_and_message() {
    let stderr =
        String::from_utf8(logs_of_a_demo_sync("log_format = \"json\"").await).expect("utf-8 logs");

    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 3, "listening, a sync, stopping: {stderr}");
    let mut messages = Vec::new();
    for line in &lines {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let level = object["level"]
            .as_str()
            .unwrap_or_else(|| panic!("no level: {line}"));
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "{line}"
        );
        let message = object["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {line}"));
        assert!(object["timestamp"].is_string(), "{line}");
        messages.push(message.to_owned());
    }
    for expected in [
        "chatsync listening",
        "sync run completed",
        "chatsync stopped",
    ] {
        assert!(
            messages.iter().any(|m| m == expected),
            "{expected:?} in {messages:?}"
        );
    }
    let run = lines
        .iter()
        .find(|line| line.contains("sync run completed"))
        .expect("the run's line");
    let run: serde_json::Value = serde_json::from_str(run).expect("json");
    assert_eq!(
        run["span"]["session_id"], "demo",
        "span fields are kept: {run}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_to_a_pipe_carry_no_ansi_escapes() {
    let stderr = logs_of_a_demo_sync("").await;
    let text = String::from_utf8_lossy(&stderr);
    assert!(text.contains("chatsync listening"), "{text}");
    assert!(text.contains("sync run completed"), "{text}");
    assert!(
        !stderr.contains(&0x1b),
        "no escape sequences in logs written to a pipe: {text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_its_embedded_demo_from_an_empty_directory() {
    let root = tempfile::tempdir().expect("tempdir");
    let cwd = root.path().join("empty");
    let home = root.path().join("home");
    let data_home = root.path().join("data");
    for dir in [&cwd, &home, &data_home] {
        std::fs::create_dir_all(dir).expect("dir");
    }
    // No configuration file, no CHATSYNC_* settings (the environment is cleared): the
    // built-in default.
    let served = serve_process(&cwd, &[], &[("HOME", &home), ("XDG_DATA_HOME", &data_home)]).await;
    let synced = cli(&served.url, &["sync", "demo", "--all", "--json"]).await;
    assert!(synced.status.success(), "{synced:?}");
    let status = cli(&served.url, &["status", "demo", "--json"]).await;
    assert!(status.status.success(), "{status:?}");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(status["state"], "SYNC_STATE_SUCCEEDED", "{status}");
    assert_eq!(status["messageCount"], "30", "{status}");
    let chats = cli(&served.url, &["chats", "demo-telegram"]).await;
    assert!(
        chats.status.success(),
        "the telegram demo session exists: {chats:?}"
    );
    served.terminate().await;

    // The samples were written to $XDG_DATA_HOME/chatsync/samples, byte for byte, and the
    // database beside them; the working directory stayed empty.
    let data_dir = data_home.join("chatsync");
    let tree = samples();
    let mut compared = 0;
    for folder in ["whatsapp", "telegram", "locales"] {
        for entry in std::fs::read_dir(tree.join(folder)).expect("samples") {
            let path = entry.expect("entry").path();
            let name = path.file_name().expect("name");
            let extracted = data_dir.join("samples").join(folder).join(name);
            assert_eq!(
                std::fs::read(&extracted).unwrap_or_default(),
                std::fs::read(&path).expect("sample"),
                "{}",
                extracted.display()
            );
            compared += 1;
        }
    }
    assert!(compared >= 3);
    assert!(data_dir.join("chatsync.db").is_file());
    assert_eq!(
        std::fs::read_dir(&cwd).expect("cwd").count(),
        0,
        "nothing written to the working directory"
    );
    assert!(
        !home.join(".local").exists(),
        "XDG_DATA_HOME wins over HOME"
    );
}

#[test]
fn the_data_directory_follows_the_environment() {
    use chatsync::config::data_dir_from;
    use std::ffi::OsString;
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    };
    assert_eq!(
        data_dir_from(env(&[
            ("CHATSYNC_DATA_DIR", "/srv/chatsync"),
            ("XDG_DATA_HOME", "/x"),
            ("HOME", "/h")
        ])),
        Path::new("/srv/chatsync")
    );
    assert_eq!(
        data_dir_from(env(&[("XDG_DATA_HOME", "/x"), ("HOME", "/h")])),
        Path::new("/x/chatsync")
    );
    assert_eq!(
        data_dir_from(env(&[("XDG_DATA_HOME", "relative"), ("HOME", "/h")])),
        Path::new("/h/.local/share/chatsync"),
        "a relative XDG_DATA_HOME is ignored, as the XDG specification says"
    );
    assert_eq!(data_dir_from(env(&[])), Path::new("."));
}

//! The `chatsync` command line: `serve`, and client commands that talk to a running server
//! over gRPC (the generated client, like any other client would).
//!
//! Client commands take `--server URL` (default `http://127.0.0.1:50051`), `--token TOKEN`
//! (or `CHATSYNC_TOKEN`), and `--json` for one JSON object per line instead of text.
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::config::Config;
use crate::grpc::pb;
use pb::chat_sync_service_client::ChatSyncServiceClient;

/// chatsync: mirror chat accounts into SQL and keep clients in step.
#[derive(Debug, Parser)]
#[command(name = "chatsync", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (gRPC, grpc-web, health and reflection on one port).
    Serve {
        /// Configuration file. Default: ./chatsync.toml if it exists, else the built-in
        /// default (SQLite file chatsync.db and demo sessions over the embedded samples, both
        /// in the data directory: $CHATSYNC_DATA_DIR, else $XDG_DATA_HOME/chatsync, else
        /// ~/.local/share/chatsync).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Sync a session's chats from its source, with a progress bar.
    Sync {
        session: String,
        /// The most recent messages to take per chat (default 100).
        #[arg(long, conflicts_with = "all")]
        limit_per_chat: Option<u32>,
        /// Take the whole history of every chat.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        window: Window,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a consistent snapshot of a session: each chat, newest first, with its last
    /// messages and unread count, and the head seq to subscribe after
    /// (`chatsync subscribe SESSION --after-seq HEAD`).
    Snapshot {
        session: String,
        /// The most recent messages per chat (default 50, at most 1,000; 0: none).
        #[arg(long)]
        limit_per_chat: Option<u32>,
        /// Only these chats (repeatable).
        #[arg(long = "chat")]
        chats: Vec<String>,
        #[command(flatten)]
        window: Window,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a session's changes as they happen.
    Subscribe {
        session: String,
        /// Replay every change after this seq first.
        #[arg(long)]
        after_seq: Option<u64>,
        /// Only these chats (repeatable).
        #[arg(long = "chat")]
        chats: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send a text message.
    Send {
        session: String,
        chat: String,
        text: String,
        /// Idempotency key: retrying with the same key never sends twice.
        #[arg(long)]
        client_message_id: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a session's sync status.
    Status {
        session: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a session's chats.
    Chats {
        session: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a session's messages in seq order.
    Messages {
        session: String,
        /// Only this chat.
        #[arg(long)]
        chat: Option<String>,
        /// Start after this seq.
        #[arg(long, default_value_t = 0)]
        after_seq: u64,
        /// At most this many messages (default: all).
        #[arg(long)]
        limit: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Search a session's messages, best matches first, with the matches highlighted
    /// (reverse video on a terminal, `[` `]` otherwise).
    Search {
        session: String,
        query: String,
        /// Only these chats (repeatable).
        #[arg(long = "chat")]
        chats: Vec<String>,
        /// At most this many hits (default 20).
        #[arg(long, default_value_t = 20)]
        limit: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Options every client command takes.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server's URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:50051",
        env = "CHATSYNC_SERVER"
    )]
    pub server: String,
    /// API token, sent as `authorization: Bearer TOKEN`.
    #[arg(long, env = "CHATSYNC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// For an `https://` server: a PEM CA certificate to trust besides the public roots
    /// (for a server certificate of your own CA).
    #[arg(long, env = "CHATSYNC_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// One JSON object per line, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// A time window: only messages sent at or after an instant.
#[derive(Debug, Args)]
pub struct Window {
    /// Only messages sent at or after this instant (RFC 3339, e.g. 2026-11-24T00:00:00Z).
    #[arg(long, conflicts_with = "days")]
    pub since: Option<String>,
    /// Only messages sent in the last N days (N × 24 hours before now).
    #[arg(long)]
    pub days: Option<u32>,
}

impl Window {
    /// The window's start as a protobuf timestamp, if one was given.
    fn since(&self) -> anyhow::Result<Option<prost_types::Timestamp>> {
        let instant = match (&self.since, self.days) {
            (Some(text), _) => chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| anyhow::anyhow!("--since {text:?} is not an RFC 3339 instant: {e}"))?
                .to_utc(),
            (None, Some(days)) => chrono::Duration::try_days(i64::from(days))
                .and_then(|window| chrono::Utc::now().checked_sub_signed(window))
                .ok_or_else(|| anyhow::anyhow!("--days {days} reaches before the earliest date"))?,
            (None, None) => return Ok(None),
        };
        Ok(Some(prost_types::Timestamp {
            seconds: instant.timestamp(),
            nanos: instant.timestamp_subsec_nanos() as i32,
        }))
    }
}

type Client = ChatSyncServiceClient<InterceptedService<Channel, Auth>>;

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Auth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

async fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    let mut endpoint =
        Endpoint::from_shared(args.server.clone())?.connect_timeout(Duration::from_secs(5));
    if args.server.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_webpki_roots();
        if let Some(path) = &args.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read --ca-cert {}: {e}", path.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach chatsync at {}: {e}", args.server))?;
    let auth =
        match &args.token {
            Some(token) => Some(format!("Bearer {token}").parse().map_err(|_| {
                anyhow::anyhow!("the token holds characters a header cannot carry")
            })?),
            None => None,
        };
    Ok(ChatSyncServiceClient::with_interceptor(channel, Auth(auth)))
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if !matches!(cli.command, Command::Serve { .. }) {
        crate::logging::init(crate::config::LogFormat::Text);
    }
    match cli.command {
        Command::Serve { config } => {
            let config = Config::load(config.as_deref())?;
            crate::logging::init(config.log_format);
            let scheme = if config.tls() { "https" } else { "http" };
            let app = crate::server::Application::build(config).await?;
            // On stdout, for scripts and supervisors that start it on port 0.
            println!("chatsync listening on {scheme}://{}", app.local_addr());
            app.run_until_stopped(crate::server::shutdown_signal())
                .await
        }
        Command::Sync {
            session,
            limit_per_chat,
            all,
            window,
            client,
        } => {
            let limit = if all { Some(0) } else { limit_per_chat };
            sync(&client, session, limit, window.since()?).await
        }
        Command::Snapshot {
            session,
            limit_per_chat,
            chats,
            window,
            client,
        } => {
            let since = window.since()?;
            snapshot(&client, session, chats, limit_per_chat, since).await
        }
        Command::Subscribe {
            session,
            after_seq,
            chats,
            client,
        } => {
            let mut api = connect(&client).await?;
            let mut stream = api
                .subscribe_messages(pb::SubscribeMessagesRequest {
                    session_id: session,
                    chat_ids: chats,
                    after_seq,
                })
                .await?
                .into_inner();
            while let Some(event) = stream.message().await? {
                print_event(&event, client.json);
            }
            Ok(())
        }
        Command::Send {
            session,
            chat,
            text,
            client_message_id,
            client,
        } => {
            let mut api = connect(&client).await?;
            let response = api
                .send_message(pb::SendMessageRequest {
                    session_id: session,
                    chat_id: chat,
                    text,
                    client_message_id: client_message_id.unwrap_or_default(),
                    attachments: Vec::new(),
                })
                .await?
                .into_inner();
            let message = response.message.unwrap_or_default();
            if client.json {
                println!(
                    "{}",
                    json!({"message": message_json(&message), "duplicate": response.duplicate})
                );
            } else {
                let note = if response.duplicate {
                    " (already sent with this client_message_id)"
                } else {
                    ""
                };
                println!(
                    "message {} seq {} {}{note}",
                    message.id,
                    message.seq,
                    status_name(message.status)
                );
            }
            Ok(())
        }
        Command::Status { session, client } => {
            let mut api = connect(&client).await?;
            let status = api
                .get_sync_status(pb::GetSyncStatusRequest {
                    session_id: session,
                })
                .await?
                .into_inner();
            print_status(&status, client.json);
            Ok(())
        }
        Command::Chats { session, client } => {
            let mut api = connect(&client).await?;
            let mut after_seq = 0;
            loop {
                let page = api
                    .list_chats(pb::ListChatsRequest {
                        session_id: session.clone(),
                        after_seq,
                        limit: 1000,
                    })
                    .await?
                    .into_inner();
                for chat in &page.chats {
                    if client.json {
                        println!(
                            "{}",
                            json!({"chat_id": chat.chat_id, "name": chat.name, "seq": chat.seq})
                        );
                    } else {
                        println!("{:<40} {}", chat.chat_id, chat.name);
                    }
                }
                after_seq = page.next_seq;
                if !page.has_more {
                    return Ok(());
                }
            }
        }
        Command::Messages {
            session,
            chat,
            after_seq,
            limit,
            client,
        } => {
            let mut api = connect(&client).await?;
            let mut after_seq = after_seq;
            let mut left = limit.unwrap_or(u64::MAX);
            while left > 0 {
                let page = api
                    .list_messages(pb::ListMessagesRequest {
                        session_id: session.clone(),
                        chat_id: chat.clone().unwrap_or_default(),
                        after_seq,
                        limit: left.min(1000) as u32,
                        before_seq: 0,
                    })
                    .await?
                    .into_inner();
                for message in &page.messages {
                    print_message(message, client.json);
                }
                left = left.saturating_sub(page.messages.len() as u64);
                after_seq = page.next_seq;
                if !page.has_more {
                    break;
                }
            }
            Ok(())
        }
        Command::Search {
            session,
            query,
            chats,
            limit,
            client,
        } => {
            let mut api = connect(&client).await?;
            let mut page_token = String::new();
            let mut left = limit;
            while left > 0 {
                let page = api
                    .search_messages(pb::SearchMessagesRequest {
                        session_id: session.clone(),
                        query: query.clone(),
                        chat_ids: chats.clone(),
                        limit: left.min(1000) as u32,
                        page_token,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                for hit in &page.hits {
                    print_hit(hit, client.json);
                }
                left = left.saturating_sub(page.hits.len() as u64);
                page_token = page.next_page_token;
                if page_token.is_empty() {
                    break;
                }
            }
            Ok(())
        }
    }
}

async fn sync(
    client: &ClientArgs,
    session: String,
    limit_per_chat: Option<u32>,
    since: Option<prost_types::Timestamp>,
) -> anyhow::Result<()> {
    let mut api = connect(client).await?;
    let mut stream = api
        .sync_chats(pb::SyncChatsRequest {
            session_id: session.clone(),
            limit_per_chat,
            since,
        })
        .await?
        .into_inner();
    let bar = if client.json {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} chat {pos}/{len} {msg}",
            )?
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    };
    let mut last = pb::SyncProgress::default();
    let mut failures = Vec::new();
    while let Some(response) = stream.message().await? {
        let Some(frame) = response.progress else {
            continue;
        };
        if client.json {
            println!("{}", progress_json(&frame));
        }
        bar.set_length(frame.n_chats as u64);
        bar.set_position(frame.current_chat as u64);
        bar.set_message(format!(
            "{} · {} messages in chat · {} in all",
            frame.chat_id, frame.messages_synced, frame.total_messages_synced
        ));
        if frame.stage == pb::SyncStage::ChatFailed as i32 {
            bar.println(format!("chat {} failed: {}", frame.chat_id, frame.error));
            failures.push(frame.chat_id.clone());
        }
        last = frame;
    }
    bar.finish_and_clear();
    if !client.json {
        println!(
            "synced {session}: {} chats, {} new messages, {} unplaced lines, {} failed chats",
            last.n_chats,
            last.total_messages_synced,
            last.total_unplaced_lines,
            failures.len()
        );
    }
    Ok(())
}

async fn snapshot(
    client: &ClientArgs,
    session: String,
    chat_ids: Vec<String>,
    limit_per_chat: Option<u32>,
    since: Option<prost_types::Timestamp>,
) -> anyhow::Result<()> {
    let mut api = connect(client).await?;
    let mut stream = api
        .get_snapshot(pb::GetSnapshotRequest {
            session_id: session.clone(),
            chat_ids,
            limit_per_chat,
            since,
        })
        .await?
        .into_inner();
    let mut head_seq = 0;
    let mut chats = 0u64;
    let mut messages = 0u64;
    while let Some(frame) = stream.message().await? {
        head_seq = frame.head_seq;
        let Some(chat) = &frame.chat else {
            continue;
        };
        chats += 1;
        messages += frame.messages.len() as u64;
        if client.json {
            println!(
                "{}",
                json!({
                    "head_seq": frame.head_seq, "n_chats": frame.n_chats,
                    "chat": {"chat_id": chat.chat_id, "name": chat.name, "seq": chat.seq},
                    "unread_count": frame.unread_count, "has_more": frame.has_more,
                    "messages": frame.messages.iter().map(message_json).collect::<Vec<_>>(),
                })
            );
            continue;
        }
        let more = if frame.has_more {
            ", older messages exist"
        } else {
            ""
        };
        println!(
            "== {} [{}] · {} unread · {} messages{more}",
            chat.name,
            chat.chat_id,
            frame.unread_count,
            frame.messages.len()
        );
        for message in &frame.messages {
            print_message(message, false);
        }
    }
    if client.json {
        if chats == 0 {
            println!("{}", json!({"head_seq": head_seq, "n_chats": 0}));
        }
    } else {
        println!(
            "snapshot of {session} at seq {head_seq}: {chats} chats, {messages} messages \
             (continue with: chatsync subscribe {session} --after-seq {head_seq})"
        );
    }
    Ok(())
}

fn stage_name(stage: i32) -> &'static str {
    pb::SyncStage::try_from(stage)
        .map(|s| s.as_str_name())
        .unwrap_or("UNKNOWN")
        .trim_start_matches("SYNC_STAGE_")
}

fn status_name(status: i32) -> &'static str {
    pb::MessageStatus::try_from(status)
        .map(|s| s.as_str_name())
        .unwrap_or("UNKNOWN")
        .trim_start_matches("MESSAGE_STATUS_")
}

fn kind_name(kind: i32) -> &'static str {
    pb::MessageKind::try_from(kind)
        .map(|s| s.as_str_name())
        .unwrap_or("UNKNOWN")
        .trim_start_matches("MESSAGE_KIND_")
}

fn time_string(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn progress_json(frame: &pb::SyncProgress) -> Value {
    json!({
        "sync_id": frame.sync_id, "session_id": frame.session_id, "stage": stage_name(frame.stage),
        "n_chats": frame.n_chats, "current_chat": frame.current_chat, "chat_id": frame.chat_id,
        "messages_synced": frame.messages_synced, "total_messages_synced": frame.total_messages_synced,
        "unplaced_lines": frame.unplaced_lines, "total_unplaced_lines": frame.total_unplaced_lines,
        "error": frame.error,
    })
}

fn message_json(message: &pb::Message) -> Value {
    json!({
        "id": message.id, "seq": message.seq, "chat_id": message.chat_id,
        "provider_message_id": message.provider_message_id, "client_message_id": message.client_message_id,
        "sender": message.sender, "text": message.text, "kind": kind_name(message.kind),
        "status": status_name(message.status), "from_me": message.from_me,
        "sent_at": time_string(message.sent_at.as_ref()),
    })
}

fn print_message(message: &pb::Message, as_json: bool) {
    if as_json {
        println!("{}", message_json(message));
    } else {
        let sender = if message.sender.is_empty() {
            "·"
        } else {
            &message.sender
        };
        println!(
            "#{:<6} {} [{}] {}: {} ({}, {})",
            message.seq,
            time_string(message.sent_at.as_ref()),
            message.chat_id,
            sender,
            message.text.replace('\n', "\n        "),
            kind_name(message.kind),
            status_name(message.status)
        );
    }
}

fn print_hit(hit: &pb::SearchHit, as_json: bool) {
    let Some(message) = &hit.message else { return };
    if as_json {
        println!(
            "{}",
            json!({"message": message_json(message), "snippet": hit.snippet, "score": hit.score})
        );
        return;
    }
    use std::io::IsTerminal;
    let (start, end) = if std::io::stdout().is_terminal() {
        ("\x1b[7m", "\x1b[0m")
    } else {
        ("[", "]")
    };
    let snippet = hit
        .snippet
        .replace('\u{2}', start)
        .replace('\u{3}', end)
        .replace('\n', " ");
    let sender = if message.sender.is_empty() {
        "·"
    } else {
        &message.sender
    };
    println!(
        "#{:<6} {} [{}] {}: {}",
        message.seq,
        time_string(message.sent_at.as_ref()),
        message.chat_id,
        sender,
        snippet
    );
}

fn print_event(event: &pb::SubscribeMessagesResponse, as_json: bool) {
    use pb::subscribe_messages_response::Event;
    match &event.event {
        Some(Event::MessageCreated(message)) => {
            if as_json {
                println!(
                    "{}",
                    json!({"seq": event.seq, "message_created": message_json(message)})
                );
            } else {
                print_message(message, false);
            }
        }
        Some(Event::MessageUpdated(message)) => {
            if as_json {
                println!(
                    "{}",
                    json!({"seq": event.seq, "message_updated": message_json(message)})
                );
            } else {
                print!("#{:<6} updated: ", event.seq);
                print_message(message, false);
            }
        }
        Some(Event::StatusUpdated(update)) => {
            if as_json {
                println!(
                    "{}",
                    json!({"seq": event.seq, "status_updated": {
                    "message_id": update.message_id, "chat_id": update.chat_id,
                    "provider_message_id": update.provider_message_id, "status": status_name(update.status),
                    "updated_at": time_string(update.updated_at.as_ref())}})
                );
            } else {
                println!(
                    "#{:<6} message {} in {} is now {}",
                    event.seq,
                    update.message_id,
                    update.chat_id,
                    status_name(update.status)
                );
            }
        }
        Some(Event::ContactUpdated(update)) => {
            let contact = update.contact.clone().unwrap_or_default();
            if as_json {
                println!(
                    "{}",
                    json!({"seq": event.seq, "contact_updated": {
                    "contact_id": contact.contact_id, "display_name": contact.display_name,
                    "phone": contact.phone, "matrix_id": contact.matrix_id}})
                );
            } else {
                println!(
                    "#{:<6} contact {} is {:?}",
                    event.seq, contact.contact_id, contact.display_name
                );
            }
        }
        Some(Event::ParticipantsChanged(change)) => {
            for participant in &change.participants {
                if as_json {
                    println!(
                        "{}",
                        json!({"seq": event.seq, "participants_changed": {
                        "chat_id": participant.chat_id, "contact_id": participant.contact_id,
                        "joined_at": participant.joined_at.as_ref().map(|t| time_string(Some(t))),
                        "left_at": participant.left_at.as_ref().map(|t| time_string(Some(t)))}})
                    );
                } else {
                    println!(
                        "#{:<6} {} in {}: joined {}, left {}",
                        event.seq,
                        participant.contact_id,
                        participant.chat_id,
                        time_string(participant.joined_at.as_ref()),
                        time_string(participant.left_at.as_ref())
                    );
                }
            }
        }
        Some(Event::ChatUpdated(chat)) => {
            if as_json {
                println!(
                    "{}",
                    json!({"seq": event.seq, "chat_updated": {"chat_id": chat.chat_id, "name": chat.name}})
                );
            } else {
                println!(
                    "#{:<6} chat {} is named {:?}",
                    event.seq, chat.chat_id, chat.name
                );
            }
        }
        Some(Event::Ready(ready)) => {
            if as_json {
                println!(
                    "{}",
                    json!({"seq": event.seq, "ready": {"head_seq": ready.head_seq}})
                );
            } else {
                eprintln!(
                    "-- caught up at seq {}; waiting for live changes",
                    ready.head_seq
                );
            }
        }
        Some(Event::Heartbeat(_)) if as_json => {
            println!("{}", json!({"seq": event.seq, "heartbeat": {}}));
        }
        Some(Event::Heartbeat(_)) | None => {}
    }
}

fn print_status(status: &pb::GetSyncStatusResponse, as_json: bool) {
    let state = pb::SyncState::try_from(status.state)
        .map(|s| s.as_str_name())
        .unwrap_or("UNKNOWN")
        .trim_start_matches("SYNC_STATE_");
    if as_json {
        println!(
            "{}",
            json!({
                "session_id": status.session_id, "source": status.source, "state": state,
                "progress": status.progress.as_ref().map(progress_json),
                "started_at": time_string(status.started_at.as_ref()), "finished_at": time_string(status.finished_at.as_ref()),
                "last_error": status.last_error, "chat_count": status.chat_count,
                "message_count": status.message_count, "head_seq": status.head_seq,
            })
        );
        return;
    }
    println!("session   {} ({})", status.session_id, status.source);
    println!("state     {state}");
    if let Some(progress) = &status.progress {
        println!(
            "progress  chat {}/{} · {} new messages · {} unplaced lines",
            progress.current_chat,
            progress.n_chats,
            progress.total_messages_synced,
            progress.total_unplaced_lines
        );
    }
    println!(
        "last run  {} → {}",
        time_string(status.started_at.as_ref()),
        time_string(status.finished_at.as_ref())
    );
    if !status.last_error.is_empty() {
        println!("error     {}", status.last_error);
    }
    println!(
        "stored    {} chats, {} messages",
        status.chat_count, status.message_count
    );
    println!("head seq  {}", status.head_seq);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_reaching_past_the_earliest_date_is_an_error_not_a_panic() {
        let far = Window {
            since: None,
            days: Some(100_000_000),
        };
        assert!(far.since().is_err());
        let week = Window {
            since: None,
            days: Some(7),
        };
        let start = week.since().expect("a week").expect("a start");
        let ago = chrono::Utc::now().timestamp() - start.seconds;
        assert!((7 * 86_400..7 * 86_400 + 60).contains(&ago), "{ago} s ago");
    }
}

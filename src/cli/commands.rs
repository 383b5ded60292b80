//! One function per command: `serve` starts the server; the client commands connect to a
//! running server with the generated client and print what it answers (see `output.rs`).
use std::time::Duration;

use super::args::{
    ClientArgs, Command, DeleteArgs, EditArgs, MessagesArgs, MirrorArgs, ReactArgs, SearchArgs,
    SendArgs, ServeArgs, SessionArgs, SnapshotArgs, SubscribeArgs, SyncArgs, WebhooksArgs,
};
use super::output;
use crate::client::{self, Client};
use crate::config::Config;
use crate::grpc::pb;
use indicatif::{ProgressBar, ProgressStyle};

/// The server and credentials of a client command.
fn server_of(args: &ClientArgs) -> anyhow::Result<client::Server> {
    let ca_cert_pem = match &args.ca_cert {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read --ca-cert {}: {e}", path.display()))?,
        ),
        None => None,
    };
    Ok(client::Server {
        url: args.server.clone(),
        token: args.token.clone(),
        ca_cert_pem,
    })
}

async fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    Ok(client::connect(&server_of(args)?).await?)
}

/// Runs one command to its end.
pub async fn run(command: Command) -> anyhow::Result<()> {
    if !matches!(command, Command::Serve(_)) {
        crate::logging::init(crate::config::LogFormat::Text);
    }
    match command {
        Command::Serve(args) => serve(args).await,
        Command::Sync(args) => sync(args).await,
        Command::Snapshot(args) => snapshot(args).await,
        Command::Subscribe(args) => subscribe(args).await,
        Command::Send(args) => send(args).await,
        Command::React(args) => react(args).await,
        Command::Edit(args) => edit(args).await,
        Command::Delete(args) => delete(args).await,
        Command::Status(args) => status(args).await,
        Command::Chats(args) => chats(args).await,
        Command::Messages(args) => messages(args).await,
        Command::Search(args) => search(args).await,
        Command::Webhooks(args) => webhooks(args).await,
        Command::Mirror(args) => mirror(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    crate::logging::init(config.log_format);
    let scheme = if config.tls() { "https" } else { "http" };
    let app = crate::server::Application::build(config).await?;
    // On stdout, for scripts and supervisors that start it on port 0.
    println!("chatsync listening on {scheme}://{}", app.local_addr());
    app.run_until_stopped(crate::server::shutdown_signal())
        .await
}

async fn sync(args: SyncArgs) -> anyhow::Result<()> {
    let client = &args.client;
    let limit_per_chat = if args.all {
        Some(0)
    } else {
        args.limit_per_chat
    };
    let since = args.window.since()?;
    let mut api = connect(client).await?;
    let mut stream = api
        .sync_chats(pb::SyncChatsRequest {
            session_id: args.session.clone(),
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
    let mut failures = 0;
    while let Some(response) = stream.message().await? {
        let Some(frame) = response.progress else {
            continue;
        };
        if client.json {
            output::json_line(&frame)?;
        }
        bar.set_length(frame.n_chats as u64);
        bar.set_position(frame.current_chat as u64);
        bar.set_message(output::progress_message(&frame));
        if output::chat_failed(&frame) {
            bar.println(format!("chat {} failed: {}", frame.chat_id, frame.error));
            failures += 1;
        }
        last = frame;
    }
    bar.finish_and_clear();
    if !client.json {
        output::sync_summary(&args.session, &last, failures);
    }
    Ok(())
}

async fn snapshot(args: SnapshotArgs) -> anyhow::Result<()> {
    let client = &args.client;
    let since = args.window.since()?;
    let mut api = connect(client).await?;
    let mut stream = api
        .get_snapshot(pb::GetSnapshotRequest {
            session_id: args.session.clone(),
            chat_ids: args.chats,
            limit_per_chat: args.limit_per_chat,
            since,
        })
        .await?
        .into_inner();
    let mut head_seq = 0;
    let mut chats = 0u64;
    let mut messages = 0u64;
    while let Some(frame) = stream.message().await? {
        head_seq = frame.head_seq;
        if frame.chat.is_some() {
            chats += 1;
            messages += frame.messages.len() as u64;
        }
        output::print(client.json, &frame, output::snapshot_frame)?;
    }
    if !client.json {
        output::snapshot_summary(&args.session, head_seq, chats, messages);
    }
    Ok(())
}

async fn subscribe(args: SubscribeArgs) -> anyhow::Result<()> {
    let mut api = connect(&args.client).await?;
    let mut stream = api
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: args.session,
            chat_ids: args.chats,
            after_seq: args.after_seq,
        })
        .await?
        .into_inner();
    while let Some(event) = stream.message().await? {
        output::print(args.client.json, &event, output::event)?;
    }
    Ok(())
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    let mut attachments = Vec::with_capacity(args.attachments.len());
    for path in &args.attachments {
        let data = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read --attach {}: {e}", path.display()))?;
        let file_name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .ok_or_else(|| anyhow::anyhow!("--attach {} names no file", path.display()))?;
        attachments.push(pb::AttachmentUpload {
            file_name,
            mime_type: String::new(),
            data,
        });
    }
    let mut api = connect(&args.client).await?;
    let response = api
        .send_message(pb::SendMessageRequest {
            session_id: args.session,
            chat_id: args.chat,
            text: args.text,
            client_message_id: args.client_message_id.unwrap_or_default(),
            attachments,
            reply_to_message_id: args.reply_to.unwrap_or_default(),
        })
        .await?
        .into_inner();
    output::print(args.client.json, &response, output::sent)
}

async fn react(args: ReactArgs) -> anyhow::Result<()> {
    let mut api = connect(&args.client).await?;
    let response = api
        .react_to_message(pb::ReactToMessageRequest {
            session_id: args.session,
            message_id: args.message_id,
            emoji: args.emoji,
            request_id: args.request_id.unwrap_or_default(),
        })
        .await?
        .into_inner();
    output::print(args.client.json, &response, output::reacted)
}

async fn edit(args: EditArgs) -> anyhow::Result<()> {
    let mut api = connect(&args.client).await?;
    let response = api
        .edit_message(pb::EditMessageRequest {
            session_id: args.session,
            message_id: args.message_id,
            text: args.text,
            request_id: args.request_id.unwrap_or_default(),
        })
        .await?
        .into_inner();
    output::print(args.client.json, &response, output::edited)
}

async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let mut api = connect(&args.client).await?;
    let response = api
        .delete_message(pb::DeleteMessageRequest {
            session_id: args.session,
            message_id: args.message_id,
            request_id: args.request_id.unwrap_or_default(),
        })
        .await?
        .into_inner();
    output::print(args.client.json, &response, output::deleted)
}

async fn status(args: SessionArgs) -> anyhow::Result<()> {
    let mut api = connect(&args.client).await?;
    let status = api
        .get_sync_status(pb::GetSyncStatusRequest {
            session_id: args.session,
        })
        .await?
        .into_inner();
    output::print(args.client.json, &status, output::status)
}

async fn webhooks(args: WebhooksArgs) -> anyhow::Result<()> {
    let mut api = connect(&args.client).await?;
    if let (Some(after_seq), Some(webhook_id), Some(session_id)) =
        (args.replay_after, &args.webhook, &args.session)
    {
        let moved = api
            .replay_webhook(pb::ReplayWebhookRequest {
                webhook_id: webhook_id.clone(),
                session_id: session_id.clone(),
                after_seq,
            })
            .await?
            .into_inner();
        return output::print(args.client.json, &moved, |moved| {
            println!("cursor moved from seq {}", moved.previous_seq)
        });
    }
    let statuses = api
        .get_webhook_status(pb::GetWebhookStatusRequest {
            webhook_id: args.webhook.unwrap_or_default(),
            session_id: args.session.unwrap_or_default(),
        })
        .await?
        .into_inner()
        .statuses;
    for status in &statuses {
        output::print(args.client.json, status, output::webhook_status)?;
    }
    Ok(())
}

async fn chats(args: SessionArgs) -> anyhow::Result<()> {
    let mut api = connect(&args.client).await?;
    let mut after_seq = 0;
    loop {
        let page = api
            .list_chats(pb::ListChatsRequest {
                session_id: args.session.clone(),
                after_seq,
                limit: 1000,
            })
            .await?
            .into_inner();
        for chat in &page.chats {
            output::print(args.client.json, chat, output::chat)?;
        }
        after_seq = page.next_seq;
        if !page.has_more {
            return Ok(());
        }
    }
}

async fn messages(args: MessagesArgs) -> anyhow::Result<()> {
    let mut api = connect(&args.client).await?;
    let mut after_seq = args.after_seq;
    let mut left = args.limit.unwrap_or(u64::MAX);
    while left > 0 {
        let page = api
            .list_messages(pb::ListMessagesRequest {
                session_id: args.session.clone(),
                chat_id: args.chat.clone().unwrap_or_default(),
                after_seq,
                limit: left.min(1000) as u32,
                before_seq: 0,
            })
            .await?
            .into_inner();
        for message in &page.messages {
            output::print(args.client.json, message, output::message)?;
        }
        left = left.saturating_sub(page.messages.len() as u64);
        after_seq = page.next_seq;
        if !page.has_more {
            break;
        }
    }
    Ok(())
}

async fn search(args: SearchArgs) -> anyhow::Result<()> {
    let mut api = connect(&args.client).await?;
    let mut page_token = String::new();
    let mut left = args.limit;
    while left > 0 {
        let page = api
            .search_messages(pb::SearchMessagesRequest {
                session_id: args.session.clone(),
                query: args.query.clone(),
                chat_ids: args.chats.clone(),
                limit: left.min(1000) as u32,
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        for hit in &page.hits {
            output::print(args.client.json, hit, output::hit)?;
        }
        left = left.saturating_sub(page.hits.len() as u64);
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    Ok(())
}

async fn mirror(args: MirrorArgs) -> anyhow::Result<()> {
    use crate::client::mirror::{MediaOptions, Mirror, MirrorOptions, Progress};
    let window = super::args::Window {
        since: None,
        days: args.days,
    };
    let options = MirrorOptions {
        session_id: args.session.clone(),
        file: args.to.clone(),
        limit_per_chat: args.limit_per_chat,
        since: window.since()?,
        once: args.once,
        media: args.media.clone().map(|dir| MediaOptions {
            dir,
            max_bytes: args.media_max_bytes,
        }),
    };
    let mut mirror = Mirror::open(server_of(&args.client)?, options).await?;
    let json = args.client.json;
    let bar = ProgressBar::hidden();
    let mut report = |progress: Progress| {
        // Warnings and failures go to stderr always; the bar and the rest only for a human.
        match progress {
            Progress::Resnapshot { reason } => {
                eprintln!("warning: {reason}: taking a new snapshot");
            }
            Progress::Reconnecting { error, delay } => {
                eprintln!("{error}; reconnecting in {delay:?}");
            }
            Progress::MediaFailed { sha256, error } => {
                eprintln!("media {sha256} not fetched: {error}");
            }
            _ if json => {}
            Progress::SnapshotStarted { n_chats } => {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                if let Ok(style) = ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} chat {pos}/{len} {msg}",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_length(n_chats);
                bar.set_message("snapshot");
                bar.enable_steady_tick(Duration::from_millis(120));
            }
            Progress::SnapshotChat { done, messages, .. } => {
                bar.set_position(done);
                bar.set_message(format!("snapshot, {messages} messages"));
            }
            Progress::SnapshotDone { head_seq, messages } => {
                bar.finish_and_clear();
                eprintln!("snapshot at seq {head_seq}: {messages} messages");
            }
            Progress::Subscribed {
                after_seq,
                server_head,
            } if server_head > after_seq => {
                eprintln!("catching up from seq {after_seq} to the server's head {server_head}");
            }
            Progress::CaughtUp { head_seq } => {
                eprintln!("caught up at seq {head_seq}");
            }
            Progress::Backfilled { chat_id, messages } => {
                eprintln!("backfilled {messages} older messages of {chat_id}");
            }
            _ => {}
        }
    };
    let file = args.to.display();
    if let Some(chat) = &args.backfill {
        if mirror.state().await?.is_none() {
            anyhow::bail!(
                "{file} mirrors nothing yet: run `chatsync mirror {} --to {file}` first",
                args.session
            );
        }
        let added = mirror.backfill(chat, None, &mut report).await?;
        println!("backfilled {added} messages of {chat} into {file}");
        return Ok(());
    }
    let outcome = mirror.run(&mut report).await?;
    let summary = serde_json::json!({
        "session_id": args.session,
        "file": args.to,
        "head_seq": outcome.head_seq,
        "snapshot": outcome.snapshot,
        "events": outcome.events,
    });
    if json {
        println!("{summary}");
    } else {
        println!(
            "mirrored {} into {file} at seq {} ({}{} events)",
            args.session,
            outcome.head_seq,
            if outcome.snapshot { "snapshot, " } else { "" },
            outcome.events
        );
    }
    Ok(())
}

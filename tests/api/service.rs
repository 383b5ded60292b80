//! The behavioural suite, through the public gRPC surface, on SQLite and PostgreSQL.

use std::collections::HashSet;

use crate::common::*;
use chatsync::grpc::pb;
use pb::subscribe_messages_response::Event;
use tokio_stream::StreamExt;
use tonic::Code;

on_both_backends!(
    sync_frames_follow_the_contract_for_a_known_folder,
    limit_per_chat_defaults_to_100_and_zero_means_everything,
    a_failing_chat_yields_chat_failed_and_the_run_goes_on,
    a_source_that_cannot_list_chats_fails_the_run_with_a_status,
    nul_characters_in_an_export_are_stored_as_replacement_characters,
    texts_with_copy_s_escape_characters_are_stored_as_written,
    a_large_chat_is_stored_in_batches_and_a_chat_exported_twice_once,
    the_session_date_order_and_timezone_decide_what_a_file_cannot,
    a_client_that_disconnects_leaves_the_run_to_finish,
    a_second_caller_attaches_to_the_running_run,
    a_resync_adds_nothing_and_a_longer_export_adds_only_the_new_messages,
    unchanged_files_are_skipped_and_changed_files_imported_again,
    telegram_exports_sync_with_their_own_ids,
    replay_then_ready_then_live_has_no_gap_and_no_duplicate_under_concurrent_writers,
    a_subscriber_resumes_after_a_disconnect_without_gap,
    a_chat_filter_delivers_only_those_chats,
    a_slow_subscriber_does_not_hold_back_a_fast_one,
    send_message_is_idempotent_and_validates_its_input,
    message_status_never_goes_backwards,
    list_messages_pages_without_gap_or_overlap,
    tokens_are_checked_on_every_rpc,
    sync_status_reports_state_counts_and_head_seq,
);

fn stages(frames: &[pb::SyncProgress]) -> Vec<SyncStage> {
    frames.iter().map(stage).collect()
}

async fn sync_frames_follow_the_contract_for_a_known_folder(backend: Backend) {
    let app = TestApp::spawn(
        &backend,
        vec![whatsapp_session("demo", &samples().join("whatsapp"))],
    )
    .await;
    let mut client = app.client().await;
    let frames = sync_frames(&mut client, "demo", Some(0)).await;

    use SyncStage::*;
    assert_eq!(
        stages(&frames),
        vec![
            Started,
            ChatSaved,
            MessagesSaved,
            ChatSaved,
            MessagesSaved,
            ChatSaved,
            MessagesSaved,
            Completed
        ]
    );
    let sync_id = &frames[0].sync_id;
    assert!(!sync_id.is_empty());
    assert!(
        frames
            .iter()
            .all(|f| &f.sync_id == sync_id && f.session_id == "demo" && f.n_chats == 3)
    );
    assert_eq!((frames[0].current_chat, frames[0].messages_synced), (0, 0));
    // Chats come in name order; message counts are the header lines of each sample file.
    let expected = [
        ("alice-moreau", 11u64),
        ("book-club", 10),
        ("weekend-hike", 9),
    ];
    for (i, (slug, count)) in expected.iter().enumerate() {
        let saved = &frames[1 + 2 * i];
        let messages = &frames[2 + 2 * i];
        assert_eq!(saved.current_chat as usize, i + 1);
        assert!(
            saved.chat_id.starts_with(slug),
            "{} should start with {slug}",
            saved.chat_id
        );
        assert_eq!(saved.messages_synced, 0);
        assert_eq!(messages.chat_id, saved.chat_id);
        assert_eq!(messages.messages_synced, *count, "messages of {slug}");
        assert_eq!(messages.unplaced_lines, 0);
    }
    let last = frames.last().expect("frames");
    assert_eq!(last.total_messages_synced, 30);
    assert_eq!(last.total_unplaced_lines, 0);
    assert!(last.error.is_empty());

    let messages = all_messages(&mut client, "demo", "").await;
    assert_eq!(messages.len(), 30);
    let kinds = |k: pb::MessageKind| messages.iter().filter(|m| m.kind == k as i32).count();
    assert_eq!(
        kinds(pb::MessageKind::System),
        7,
        "3 encryption notices, 2 created, added, left"
    );
    assert_eq!(kinds(pb::MessageKind::Media), 4);
    assert_eq!(kinds(pb::MessageKind::Deleted), 1);
    let agenda = messages
        .iter()
        .find(|m| m.text.starts_with("Agenda:"))
        .expect("multi-line message");
    assert_eq!(
        agenda.text,
        "Agenda:\n1. onboarding flow\n2. the empty states\n\n3. anything else?"
    );
    assert_eq!(agenda.sender, "Sam Okafor");
    // 12/03/2024 09:17 is the 12th of March: day-first, because other lines have days > 12.
    assert_eq!(
        agenda.sent_at.as_ref().map(|t| t.seconds),
        Some(1_710_235_020)
    );
    let summit = messages
        .iter()
        .find(|m| m.text.starts_with("Summit"))
        .expect("zip export");
    assert_eq!(summit.text, "Summit 🏔️\nwhat a view");
    // [05/10/2024, 1:16:44 PM] with U+202F before PM, day-first (19/10 later in the file).
    assert_eq!(
        summit.sent_at.as_ref().map(|t| t.seconds),
        Some(1_728_134_204)
    );
}

async fn limit_per_chat_defaults_to_100_and_zero_means_everything(backend: Backend) {
    let dir = backend.dir.path().join("exports");
    std::fs::create_dir_all(&dir).expect("dir");
    write_android_chat(&dir, "Long", "long", 150);
    let app = TestApp::spawn(&backend, vec![whatsapp_session("s", &dir)]).await;
    let mut client = app.client().await;

    let frames = sync_frames(&mut client, "s", Some(10)).await;
    assert_eq!(frames.last().map(|f| f.total_messages_synced), Some(10));
    let texts: Vec<String> = all_messages(&mut client, "s", "")
        .await
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(
        texts.first().map(String::as_str),
        Some("long message 141"),
        "the most recent 10"
    );

    let frames = sync_frames(&mut client, "s", None).await;
    assert_eq!(
        frames.last().map(|f| f.total_messages_synced),
        Some(90),
        "default limit is 100"
    );
    assert_eq!(all_messages(&mut client, "s", "").await.len(), 100);

    let frames = sync_frames(&mut client, "s", Some(0)).await;
    assert_eq!(
        frames.last().map(|f| f.total_messages_synced),
        Some(50),
        "0 is the whole history"
    );
    let messages = all_messages(&mut client, "s", "").await;
    assert_eq!(messages.len(), 150);
    let unique: HashSet<&str> = messages
        .iter()
        .map(|m| m.provider_message_id.as_str())
        .collect();
    assert_eq!(unique.len(), 150);
}

async fn a_failing_chat_yields_chat_failed_and_the_run_goes_on(backend: Backend) {
    let dir = backend.dir.path().join("exports");
    std::fs::create_dir_all(&dir).expect("dir");
    write_android_chat(&dir, "A first", "a", 3);
    std::fs::write(
        dir.join("WhatsApp Chat - B broken.zip"),
        b"PK\x03\x04 this is not a zip",
    )
    .expect("write");
    write_android_chat(&dir, "C last", "c", 4);
    let app = TestApp::spawn(&backend, vec![whatsapp_session("s", &dir)]).await;
    let mut client = app.client().await;

    let frames = sync_frames(&mut client, "s", Some(0)).await;
    use SyncStage::*;
    assert_eq!(
        stages(&frames),
        vec![
            Started,
            ChatSaved,
            MessagesSaved,
            ChatSaved,
            ChatFailed,
            ChatSaved,
            MessagesSaved,
            Completed
        ]
    );
    let failed = &frames[4];
    assert_eq!(failed.current_chat, 2);
    assert!(failed.chat_id.starts_with("b-broken"));
    assert!(
        failed.error.contains("zip"),
        "error says why: {}",
        failed.error
    );
    let last = frames.last().expect("frames");
    assert_eq!(last.total_messages_synced, 7);
    assert!(last.error.contains("1 of 3 chats failed"), "{}", last.error);
    assert_eq!(all_messages(&mut client, "s", "").await.len(), 7);
}

async fn a_source_that_cannot_list_chats_fails_the_run_with_a_status(backend: Backend) {
    let missing = backend.dir.path().join("no-such-folder");
    let app = TestApp::spawn(&backend, vec![whatsapp_session("s", &missing)]).await;
    let mut client = app.client().await;
    let mut stream = start_sync(&mut client, "s", None).await;
    let failed = next_frame(&mut stream).await;
    assert_eq!(stage(&failed), SyncStage::Failed);
    assert!(failed.error.contains("no-such-folder"), "{}", failed.error);
    let end = stream
        .message()
        .await
        .expect_err("the stream ends with a non-OK status");
    assert_eq!(end.code(), Code::FailedPrecondition);
    let status = sync_status(&client, "s").await;
    assert_eq!(status.state, pb::SyncState::Failed as i32);
    assert!(status.last_error.contains("no-such-folder"));
}

async fn nul_characters_in_an_export_are_stored_as_replacement_characters(backend: Backend) {
    let dir = backend.dir.path().join("exports");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("WhatsApp Chat with Nul.txt"),
        "13/01/2023, 08:00 - Ana: before\n13/01/2023, 08:01 - B\0n: a\0b\n",
    )
    .expect("write");
    let app = TestApp::spawn(&backend, vec![whatsapp_session("s", &dir)]).await;
    let mut client = app.client().await;
    let frames = sync_frames(&mut client, "s", Some(0)).await;
    assert_eq!(
        frames.last().map(|f| f.total_messages_synced),
        Some(2),
        "{frames:?}"
    );
    let messages = all_messages(&mut client, "s", "").await;
    assert_eq!(messages[1].text, "a\u{FFFD}b");
    assert_eq!(messages[1].sender, "B\u{FFFD}n");
    let again = sync_frames(&mut client, "s", Some(0)).await;
    assert_eq!(
        again.last().map(|f| f.total_messages_synced),
        Some(0),
        "stable ids"
    );
}

/// PostgreSQL imports messages by `COPY … FROM STDIN` in text format, where a backslash, a tab,
/// a newline, `\N` (NULL) and a line `\.` (the old end-of-data marker) mean something: each
/// must arrive as the text it is, in the texts, the senders and the ids, on both backends.
async fn texts_with_copy_s_escape_characters_are_stored_as_written(backend: Backend) {
    let dir = backend.dir.path().join("exports");
    std::fs::create_dir_all(&dir).expect("dir");
    let texts = [
        "back\\slash, \\N and \\\\N",
        "a\ttab",
        "first line\n\\.\nthird line",
        "\\N",
        "emoji 👍, ünïcode, 中文",
    ];
    let mut export = String::new();
    for (i, text) in texts.iter().enumerate() {
        export.push_str(&format!("13/01/2023, 08:0{i} - A\\na: {text}\n"));
    }
    std::fs::write(dir.join("WhatsApp Chat with Back\\slash.txt"), export).expect("write");
    let app = TestApp::spawn(&backend, vec![whatsapp_session("s", &dir)]).await;
    let mut client = app.client().await;
    let frames = sync_frames(&mut client, "s", Some(0)).await;
    assert_eq!(
        frames.last().map(|f| f.total_messages_synced),
        Some(texts.len() as u64),
        "{frames:?}"
    );
    let messages = all_messages(&mut client, "s", "").await;
    let stored: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(stored, texts);
    assert!(messages.iter().all(|m| m.sender == "A\\na"), "{messages:?}");
    let chats = all_chats(&mut client, "s").await;
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0].name, "Back\\slash");
    let again = sync_frames(&mut client, "s", Some(0)).await;
    assert_eq!(
        again.last().map(|f| f.total_messages_synced),
        Some(0),
        "the stored provider ids are the ones the re-sync derives"
    );
}

async fn a_large_chat_is_stored_in_batches_and_a_chat_exported_twice_once(backend: Backend) {
    let dir = backend.dir.path().join("exports");
    std::fs::create_dir_all(&dir).expect("dir");
    write_android_chat(&dir, "Big", "big", 25_000);
    // The same chat as a .txt and, re-exported later with two more messages, as a .zip.
    let small = write_android_chat(&dir, "Twice", "twice", 20);
    let mut text = std::fs::read_to_string(&small).expect("read");
    text.push_str("14/01/2023, 09:00 - Ana: one more\n14/01/2023, 09:01 - Ben: and another\n");
    let file = std::fs::File::create(dir.join("WhatsApp Chat - Twice.zip")).expect("zip");
    let mut zip = zip::ZipWriter::new(file);
    zip.start_file("_chat.txt", zip::write::SimpleFileOptions::default())
        .expect("zip entry");
    std::io::Write::write_all(&mut zip, text.as_bytes()).expect("zip write");
    zip.finish().expect("zip finish");

    let app = TestApp::spawn(&backend, vec![whatsapp_session("s", &dir)]).await;
    let mut client = app.client().await;
    let frames = sync_frames(&mut client, "s", Some(0)).await;
    assert_eq!(frames[0].n_chats, 3);
    let big: Vec<u64> = frames
        .iter()
        .filter(|f| stage(f) == SyncStage::MessagesSaved && f.chat_id.starts_with("big"))
        .map(|f| f.messages_synced)
        .collect();
    assert_eq!(
        big,
        vec![10_000, 20_000, 25_000],
        "one MESSAGES_SAVED per batch"
    );
    assert!(
        frames.iter().all(|f| stage(f) != SyncStage::ChatFailed),
        "{frames:?}"
    );
    assert_eq!(frames.last().map(|f| f.total_messages_synced), Some(25_022));
    let chats = all_chats(&mut client, "s").await;
    assert_eq!(chats.len(), 2, "two files, one chat");
    let twice = chats.iter().find(|c| c.name == "Twice").expect("chat");
    assert_eq!(
        all_messages(&mut client, "s", &twice.chat_id).await.len(),
        22
    );
    let seqs: Vec<u64> = all_messages(&mut client, "s", "")
        .await
        .iter()
        .map(|m| m.seq)
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
}

async fn the_session_date_order_and_timezone_decide_what_a_file_cannot(backend: Backend) {
    // 03/04/2023 cannot tell day from month by itself.
    let export = "03/04/2023, 10:00 - Ana: hi\n03/04/2023, 10:05 - Ben: hello\n";
    let mut sessions = Vec::new();
    for (id, settings) in [
        ("auto", serde_json::json!({})),
        (
            "mdy",
            serde_json::json!({"date_order": "mdy", "timezone": "America/New_York"}),
        ),
    ] {
        let dir = backend.dir.path().join(id);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("WhatsApp Chat with Ambiguous.txt"), export).expect("write");
        let mut settings = settings;
        settings["path"] = serde_json::json!(dir);
        sessions.push(session(id, "whatsapp-export", settings));
    }
    let app = TestApp::spawn(&backend, sessions).await;
    let mut client = app.client().await;
    let first_time = |messages: Vec<pb::Message>| messages[0].sent_at.as_ref().map(|t| t.seconds);
    sync_frames(&mut client, "auto", Some(0)).await;
    // auto falls back to day/month/year, in UTC: 3 April 2023, 10:00.
    assert_eq!(
        first_time(all_messages(&mut client, "auto", "").await),
        Some(1_680_516_000)
    );
    sync_frames(&mut client, "mdy", Some(0)).await;
    // month/day/year, New York wall clock (EST, UTC-5): 4 March 2023, 15:00 UTC.
    assert_eq!(
        first_time(all_messages(&mut client, "mdy", "").await),
        Some(1_677_942_000)
    );
}

/// A folder big enough that a run takes a while: `chats` chats of `per_chat` messages.
fn big_folder(backend: &Backend, chats: usize, per_chat: usize) -> std::path::PathBuf {
    let dir = backend.dir.path().join("big");
    std::fs::create_dir_all(&dir).expect("dir");
    for i in 0..chats {
        write_android_chat(&dir, &format!("Chat {i:03}"), &format!("c{i}"), per_chat);
    }
    dir
}

async fn a_client_that_disconnects_leaves_the_run_to_finish(backend: Backend) {
    let dir = big_folder(&backend, 40, 500);
    let app = TestApp::spawn(&backend, vec![whatsapp_session("s", &dir)]).await;
    let mut client = app.client().await;
    let mut stream = start_sync(&mut client, "s", Some(0)).await;
    let first = next_frame(&mut stream).await;
    assert_eq!(stage(&first), SyncStage::Started);
    drop(stream);

    eventually("the run to finish without its client", || {
        let client = client.clone();
        async move { sync_status(&client, "s").await.state == pb::SyncState::Succeeded as i32 }
    })
    .await;
    let status = sync_status(&client, "s").await;
    assert_eq!(status.message_count, 40 * 500);
    assert_eq!(status.chat_count, 40);
    assert_eq!(status.progress.map(|p| p.sync_id), Some(first.sync_id));
}

async fn a_second_caller_attaches_to_the_running_run(backend: Backend) {
    let dir = big_folder(&backend, 40, 500);
    let app = TestApp::spawn(&backend, vec![whatsapp_session("s", &dir)]).await;
    let mut first_client = app.client().await;
    let mut second_client = app.client().await;
    let mut first = start_sync(&mut first_client, "s", Some(0)).await;
    let started = next_frame(&mut first).await;
    assert_eq!(stage(&started), SyncStage::Started);

    let second = sync_frames(&mut second_client, "s", Some(0)).await;
    assert!(
        second.iter().all(|f| f.sync_id == started.sync_id),
        "same run, not a new one"
    );
    assert_eq!(second.last().map(stage), Some(SyncStage::Completed));

    let mut rest = Vec::new();
    while let Some(frame) = first.message().await.expect("frame") {
        rest.push(frame.progress.expect("progress"));
    }
    assert_eq!(rest.last().map(|f| f.total_messages_synced), Some(40 * 500));
    assert_eq!(
        second.last().map(|f| f.total_messages_synced),
        Some(40 * 500)
    );
    assert_eq!(
        all_messages(&mut first_client, "s", "").await.len(),
        40 * 500
    );
}

async fn a_resync_adds_nothing_and_a_longer_export_adds_only_the_new_messages(backend: Backend) {
    let dir = backend.dir.path().join("exports");
    std::fs::create_dir_all(&dir).expect("dir");
    let path = write_android_chat(&dir, "Growing", "g", 20);
    // Two identical entries (same minute, sender and text) must both be kept, once each.
    let mut text = std::fs::read_to_string(&path).expect("read");
    text.push_str("13/01/2023, 09:00 - Ana: same\n13/01/2023, 09:00 - Ana: same\n");
    std::fs::write(&path, &text).expect("write");
    let app = TestApp::spawn(&backend, vec![whatsapp_session("s", &dir)]).await;
    let mut client = app.client().await;

    let first = sync_frames(&mut client, "s", Some(0)).await;
    assert_eq!(first.last().map(|f| f.total_messages_synced), Some(22));
    let head = |client: &pb::chat_sync_service_client::ChatSyncServiceClient<
        tonic::transport::Channel,
    >| {
        let client = client.clone();
        async move { sync_status(&client, "s").await.head_seq }
    };
    let head_before = head(&client).await;

    let again = sync_frames(&mut client, "s", Some(0)).await;
    assert_eq!(again.last().map(|f| f.total_messages_synced), Some(0));
    assert_eq!(
        head(&client).await,
        head_before + 1,
        "nothing new takes a seq; the run's end takes one"
    );

    // A later export of the same chat, as a zip, holding three more messages.
    text.push_str("13/01/2023, 09:01 - Ben: new one\n13/01/2023, 09:02 - Ana: same\n13/01/2023, 09:03 - Ben: last\n");
    std::fs::remove_file(&path).expect("remove");
    let zip_path = dir.join("WhatsApp Chat - Growing.zip");
    let file = std::fs::File::create(&zip_path).expect("zip");
    let mut zip = zip::ZipWriter::new(file);
    zip.start_file("_chat.txt", zip::write::SimpleFileOptions::default())
        .expect("zip entry");
    std::io::Write::write_all(&mut zip, text.as_bytes()).expect("zip write");
    zip.finish().expect("zip finish");

    let later = sync_frames(&mut client, "s", Some(0)).await;
    assert_eq!(later.last().map(|f| f.total_messages_synced), Some(3));
    let messages = all_messages(&mut client, "s", "").await;
    assert_eq!(messages.len(), 25);
    assert_eq!(messages.iter().filter(|m| m.text == "same").count(), 3);
    // The three messages, and the ends of the two runs since `head_before`.
    assert_eq!(head(&client).await, head_before + 5);
}

/// Sets a file's modification time.
fn set_mtime(path: &std::path::Path, at: std::time::SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|file| file.set_modified(at))
        .expect("set the file's modification time");
}

async fn unchanged_files_are_skipped_and_changed_files_imported_again(backend: Backend) {
    use std::time::{Duration, SystemTime};
    let dir = backend.dir.path().join("exports");
    std::fs::create_dir_all(&dir).expect("dir");
    let old = SystemTime::now() - Duration::from_secs(3_600);
    let alpha = write_android_chat(&dir, "Alpha", "a", 20);
    let beta = write_android_chat(&dir, "Beta", "b", 10);
    set_mtime(&alpha, old);
    set_mtime(&beta, old);
    let app = TestApp::spawn(&backend, vec![whatsapp_session("s", &dir)]).await;
    let mut client = app.client().await;
    let total = |frames: &[pb::SyncProgress]| frames.last().map(|f| f.total_messages_synced);

    // A run with a limit records it: a later run for the whole history reads the files again.
    assert_eq!(
        total(&sync_frames(&mut client, "s", Some(5)).await),
        Some(10)
    );
    assert_eq!(
        total(&sync_frames(&mut client, "s", Some(0)).await),
        Some(20)
    );
    let skipped = sync_frames(&mut client, "s", Some(0)).await;
    assert_eq!(total(&skipped), Some(0));
    use SyncStage::*;
    assert_eq!(
        stages(&skipped),
        vec![
            Started,
            ChatSaved,
            MessagesSaved,
            ChatSaved,
            MessagesSaved,
            Completed
        ],
        "skipped chats keep the frame contract"
    );

    // Same size and time, an hour old: the file is taken as unchanged and not read at all
    // (here its bytes were changed behind the fingerprint's back, and stay unread).
    let original = std::fs::read_to_string(&alpha).expect("read");
    let forged = original.replacen("a message 1\n", "z message 1\n", 1);
    assert_eq!(forged.len(), original.len());
    std::fs::write(&alpha, &forged).expect("write");
    set_mtime(&alpha, old);
    assert_eq!(
        total(&sync_frames(&mut client, "s", Some(0)).await),
        Some(0)
    );
    let texts = |messages: &[pb::Message]| -> HashSet<String> {
        messages.iter().map(|m| m.text.clone()).collect()
    };
    assert!(!texts(&all_messages(&mut client, "s", "").await).contains("z message 1"));

    // A changed file (its size and time differ) is read and its new messages stored.
    let mut grown = original.clone();
    grown
        .push_str("13/01/2023, 09:00 - Ana: a message 21\n13/01/2023, 09:01 - Ben: a message 22\n");
    std::fs::write(&alpha, &grown).expect("write");
    set_mtime(&alpha, old + Duration::from_secs(60));
    assert_eq!(
        total(&sync_frames(&mut client, "s", Some(0)).await),
        Some(2)
    );
    let head = sync_status(&client, "s").await.head_seq;

    // A touched file (new time, same bytes) is hashed, found unchanged, and stores nothing.
    set_mtime(&beta, old + Duration::from_secs(120));
    assert_eq!(
        total(&sync_frames(&mut client, "s", Some(0)).await),
        Some(0)
    );
    assert_eq!(
        sync_status(&client, "s").await.head_seq,
        head + 1,
        "only the run's end"
    );

    // A file modified at (or after) the time it was looked at may change again within the
    // same clock tick: its size and time prove nothing, so a same-size change with the same
    // time is still found.
    let gamma = write_android_chat(&dir, "Gamma", "c", 3);
    let future = SystemTime::now() + Duration::from_secs(3_600);
    set_mtime(&gamma, future);
    assert_eq!(
        total(&sync_frames(&mut client, "s", Some(0)).await),
        Some(3)
    );
    let text = std::fs::read_to_string(&gamma).expect("read");
    std::fs::write(&gamma, text.replacen("c message 1\n", "x message 1\n", 1)).expect("write");
    set_mtime(&gamma, future);
    assert_eq!(
        total(&sync_frames(&mut client, "s", Some(0)).await),
        Some(1)
    );
    let stored = texts(&all_messages(&mut client, "s", "").await);
    assert!(stored.contains("x message 1"));
    assert!(stored.contains("a message 22"));
    assert_eq!(stored.len(), 20 + 2 + 10 + 3 + 1);
}

async fn telegram_exports_sync_with_their_own_ids(backend: Backend) {
    let app = TestApp::spawn(
        &backend,
        vec![session(
            "tg",
            "telegram-export",
            serde_json::json!({"path": samples().join("telegram")}),
        )],
    )
    .await;
    let mut client = app.client().await;
    let frames = sync_frames(&mut client, "tg", Some(0)).await;
    assert_eq!(frames[0].n_chats, 2);
    assert_eq!(frames.last().map(|f| f.total_messages_synced), Some(6));
    let chats = all_chats(&mut client, "tg").await;
    let names: HashSet<&str> = chats.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, HashSet::from(["Ops on-call", "Grandma"]));
    let ops = all_messages(&mut client, "tg", "tg-4400112233").await;
    assert_eq!(ops.len(), 4);
    assert_eq!(ops[0].kind, pb::MessageKind::System as i32);
    assert_eq!(
        ops[2].text,
        "See https://status.example.org for the dashboard"
    );
    assert_eq!(ops[2].provider_message_id, "3");
    assert_eq!(ops[3].kind, pb::MessageKind::Media as i32);
    let again = sync_frames(&mut client, "tg", Some(0)).await;
    assert_eq!(again.last().map(|f| f.total_messages_synced), Some(0));
}

async fn subscribe(
    client: &mut pb::chat_sync_service_client::ChatSyncServiceClient<tonic::transport::Channel>,
    session_id: &str,
    chat_ids: &[&str],
    after_seq: Option<u64>,
) -> tonic::Streaming<pb::SubscribeMessagesResponse> {
    client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: session_id.into(),
            chat_ids: chat_ids.iter().map(|c| c.to_string()).collect(),
            after_seq,
        })
        .await
        .expect("SubscribeMessages")
        .into_inner()
}

async fn replay_then_ready_then_live_has_no_gap_and_no_duplicate_under_concurrent_writers(
    backend: Backend,
) {
    let app = TestApp::spawn(&backend, vec![local_session("n")]).await;
    let mut client = app.client().await;
    for i in 0..50 {
        send(
            &mut client,
            "n",
            "room",
            &format!("before {i}"),
            &format!("b{i}"),
        )
        .await
        .expect("send");
    }
    // Writers keep going while the subscriber replays and switches to live.
    let writers = spawn_writers(&client, "n", 4, 40);
    let mut stream = subscribe(&mut client, "n", &[], Some(10)).await;
    for writer in writers {
        writer.await.expect("writer");
    }
    let head = sync_status(&client, "n").await.head_seq;
    let events = read_until(&mut stream, head).await;

    let ready: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.event, Some(Event::Ready(_))))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(ready.len(), 1, "exactly one ready marker");
    let seqs: Vec<u64> = events
        .iter()
        .filter(|e| !matches!(e.event, Some(Event::Ready(_))))
        .map(|e| e.seq)
        .collect();
    let expected: Vec<u64> = (11..=head).collect();
    assert_eq!(seqs, expected, "every change after seq 10, once, in order");
    // Each of the 210 sends is a message (PENDING) plus its SENT status, plus 5 new chats.
    // Each of the 210 local sends is one message (SENT as stored), plus 5 new chats.
    assert_eq!(head, 5 + 210);
    let created: HashSet<String> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::MessageCreated(m)) => Some(m.client_message_id.clone()),
            _ => None,
        })
        .collect();
    // Seq 1 is the chat "room"; each send then takes one seq, so seqs 2..=10 hold the
    // creation of nine messages.
    assert_eq!(created.len(), 210 - 9, "the messages created after seq 10");
}

async fn a_subscriber_resumes_after_a_disconnect_without_gap(backend: Backend) {
    let app = TestApp::spawn(&backend, vec![local_session("n")]).await;
    let mut client = app.client().await;
    let mut stream = subscribe(&mut client, "n", &[], Some(0)).await;
    let ready = read_until(&mut stream, 0).await;
    assert!(matches!(
        ready[0].event,
        Some(Event::Ready(pb::Ready { head_seq: 0 }))
    ));
    for i in 0..5 {
        send(&mut client, "n", "room", &format!("m{i}"), &format!("m{i}"))
            .await
            .expect("send");
    }
    // 1 chat + 5 messages = seq 6.
    let seen = read_until(&mut stream, 6).await;
    let last_seen = seen[5].seq;
    drop(stream);

    for i in 5..10 {
        send(&mut client, "n", "room", &format!("m{i}"), &format!("m{i}"))
            .await
            .expect("send");
    }
    let mut resumed = subscribe(&mut client, "n", &[], Some(last_seen)).await;
    let events = read_until(&mut resumed, 11).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (last_seen + 1..=11).collect::<Vec<u64>>(),
        "the replay resumes right after the cursor"
    );
    let ready = read_until(&mut resumed, 11).await;
    assert!(
        matches!(
            ready[0].event,
            Some(Event::Ready(pb::Ready { head_seq: 11 }))
        ),
        "then the ready marker at the head: {:?}",
        ready[0]
    );
    let texts: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::MessageCreated(m)) => Some(m.text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(texts.last().map(String::as_str), Some("m9"));

    // A cursor ahead of the head is refused rather than silently waiting.
    let error = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: "n".into(),
            chat_ids: vec![],
            after_seq: Some(10_000),
        })
        .await
        .expect_err("cursor ahead of head");
    assert_eq!(error.code(), Code::InvalidArgument);
}

async fn a_chat_filter_delivers_only_those_chats(backend: Backend) {
    let app = TestApp::spawn(&backend, vec![local_session("n")]).await;
    let mut client = app.client().await;
    let mut stream = subscribe(&mut client, "n", &["b"], Some(0)).await;
    for i in 0..6 {
        let chat = if i % 2 == 0 { "a" } else { "b" };
        send(
            &mut client,
            "n",
            chat,
            &format!("{chat}{i}"),
            &format!("{chat}{i}"),
        )
        .await
        .expect("send");
    }
    send(&mut client, "n", "b", "the end", "end")
        .await
        .expect("send");
    let head = sync_status(&client, "n").await.head_seq;
    let events = read_until(&mut stream, head).await;
    let mut chats = HashSet::new();
    let mut texts = Vec::new();
    for event in &events {
        match &event.event {
            Some(Event::MessageCreated(m)) => {
                chats.insert(m.chat_id.clone());
                texts.push(m.text.clone());
            }
            Some(Event::StatusUpdated(s)) => {
                chats.insert(s.chat_id.clone());
            }
            Some(Event::ChatUpdated(c)) => {
                chats.insert(c.chat_id.clone());
            }
            _ => {}
        }
    }
    assert_eq!(chats, HashSet::from(["b".to_string()]));
    assert_eq!(texts, vec!["b1", "b3", "b5", "the end"]);
}

async fn a_slow_subscriber_does_not_hold_back_a_fast_one(backend: Backend) {
    let app = TestApp::spawn(&backend, vec![local_session("n")]).await;
    let mut client = app.client().await;
    // Each on a connection of its own: an unread stream holds back the other streams of its
    // HTTP/2 connection (flow control is per connection too), whatever the server does.
    let mut fast = subscribe(&mut app.client().await, "n", &[], Some(0)).await;
    let mut slow = subscribe(&mut app.client().await, "n", &[], Some(0)).await;
    // The slow one reads nothing while 1,500 messages go by: far beyond its own buffer and the
    // session feed's, so it must fall back to catching up from storage.
    // 2 KB a message: 3 MB in all, more than the transport's flow-control windows hold.
    let padding = "x".repeat(2_000);

    for i in 0..1_500 {
        send(
            &mut client,
            "n",
            "room",
            &format!("m{i} {padding}"),
            &format!("m{i}"),
        )
        .await
        .expect("send");
    }
    let fast_events = read_until(&mut fast, 1_501).await;
    assert_eq!(
        fast_events
            .iter()
            .filter(|e| matches!(e.event, Some(Event::MessageCreated(_))))
            .count(),
        1_500
    );
    let slow_events = read_until(&mut slow, 1_501).await;
    let seqs: Vec<u64> = slow_events
        .iter()
        .filter(|e| !matches!(e.event, Some(Event::Ready(_))))
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        seqs,
        (1..=1_501).collect::<Vec<u64>>(),
        "the slow one still gets everything"
    );
}

async fn send_message_is_idempotent_and_validates_its_input(backend: Backend) {
    let app = TestApp::spawn(
        &backend,
        vec![
            local_session("n"),
            whatsapp_session("wa", &samples().join("whatsapp")),
        ],
    )
    .await;
    let mut client = app.client().await;
    let first = send(&mut client, "n", "general", "hello", "key-1")
        .await
        .expect("send");
    let message = first.message.expect("message");
    assert!(!first.duplicate);
    assert_eq!(
        message.status,
        pb::MessageStatus::Sent as i32,
        "local sends are SENT at once"
    );
    assert!(message.from_me);
    let retry = send(&mut client, "n", "general", "hello", "key-1")
        .await
        .expect("retry");
    assert!(retry.duplicate);
    assert_eq!(retry.message.map(|m| m.id), Some(message.id));
    assert_eq!(all_messages(&mut client, "n", "general").await.len(), 1);
    let chats = all_chats(&mut client, "n").await;
    assert_eq!(
        chats.iter().map(|c| c.chat_id.as_str()).collect::<Vec<_>>(),
        vec!["general"]
    );

    let code = |result: Result<pb::SendMessageResponse, tonic::Status>| {
        result.expect_err("must fail").code()
    };
    assert_eq!(
        code(send(&mut client, "n", "general", "", "k2").await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(send(&mut client, "n", "general", "   ", "k3").await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(send(&mut client, "n", "general", &"x".repeat(65_537), "k4").await),
        Code::InvalidArgument
    );
    assert!(
        send(&mut client, "n", "general", &"x".repeat(65_536), "k5")
            .await
            .is_ok(),
        "the limit itself is fine"
    );
    assert_eq!(
        code(send(&mut client, "n", "", "hi", "k6").await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(send(&mut client, "nope", "general", "hi", "k7").await),
        Code::NotFound
    );
    assert_eq!(
        code(send(&mut client, "wa", "any", "hi", "k8").await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(send(&mut client, "", "general", "hi", "k9").await),
        Code::InvalidArgument,
        "an empty session id"
    );
    assert_eq!(
        code(send(&mut client, "n", &"c".repeat(257), "hi", "k10").await),
        Code::InvalidArgument,
        "a chat id over 256 bytes"
    );
    // NUL cannot be stored by PostgreSQL: refused alike on both backends.
    assert_eq!(
        code(send(&mut client, "n", "general", "a\0b", "k11").await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(send(&mut client, "n", "general", "other text", "key-1").await),
        Code::InvalidArgument,
        "an idempotency key reused for another message"
    );
    assert_eq!(
        code(send(&mut client, "n", "elsewhere", "hello", "key-1").await),
        Code::InvalidArgument,
        "an idempotency key reused in another chat"
    );
    assert_eq!(
        all_messages(&mut client, "wa", "").await.len(),
        0,
        "nothing stored on a refused send"
    );
}

async fn message_status_never_goes_backwards(backend: Backend) {
    let app = TestApp::spawn(&backend, vec![local_session("n")]).await;
    let mut client = app.client().await;
    let message = send(&mut client, "n", "c", "hi", "k")
        .await
        .expect("send")
        .message
        .expect("message");
    let update = |status: pb::MessageStatus| {
        let mut client = client.clone();
        let id = message.id;
        async move {
            client
                .update_message_status(pb::UpdateMessageStatusRequest {
                    session_id: "n".into(),
                    message_id: id,
                    status: status as i32,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner())
        }
    };
    let read = update(pb::MessageStatus::Read).await.expect("read");
    assert!(read.changed);
    assert_eq!(
        read.message.as_ref().map(|m| m.status),
        Some(pb::MessageStatus::Read as i32)
    );
    let delivered = update(pb::MessageStatus::Delivered)
        .await
        .expect("delivered");
    assert!(!delivered.changed, "READ then DELIVERED stays READ");
    assert_eq!(
        delivered.message.as_ref().map(|m| m.status),
        Some(pb::MessageStatus::Read as i32)
    );
    let again = update(pb::MessageStatus::Read).await.expect("read again");
    assert!(!again.changed);
    let failed = update(pb::MessageStatus::Failed).await.expect("failed");
    assert!(!failed.changed, "a delivered message cannot fail");

    // By provider id, as a server-to-server receipt would.
    let by_provider = client
        .update_message_status(pb::UpdateMessageStatusRequest {
            session_id: "n".into(),
            chat_id: "c".into(),
            provider_message_id: message.provider_message_id.clone(),
            status: pb::MessageStatus::Delivered as i32,
            ..Default::default()
        })
        .await
        .expect("by provider id")
        .into_inner();
    assert_eq!(by_provider.message.map(|m| m.id), Some(message.id));

    let missing = client
        .update_message_status(pb::UpdateMessageStatusRequest {
            session_id: "n".into(),
            message_id: 999_999,
            status: pb::MessageStatus::Read as i32,
            ..Default::default()
        })
        .await
        .expect_err("unknown message");
    assert_eq!(missing.code(), Code::NotFound);
    let bad = client
        .update_message_status(pb::UpdateMessageStatusRequest {
            session_id: "n".into(),
            message_id: message.id,
            status: 42,
            ..Default::default()
        })
        .await
        .expect_err("unknown status");
    assert_eq!(bad.code(), Code::InvalidArgument);

    // The subscriber sees the message (SENT as stored: a local send needs no status change)
    // and READ, and nothing for the refused updates.
    let mut stream = subscribe(&mut client, "n", &[], Some(0)).await;
    let events = read_until(&mut stream, 3).await;
    let statuses: Vec<i32> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::StatusUpdated(s)) => Some(s.status),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, vec![pb::MessageStatus::Read as i32]);
    assert_eq!(
        events.last().map(|e| e.seq),
        Some(3),
        "refused updates take no seq"
    );
}

async fn list_messages_pages_without_gap_or_overlap(backend: Backend) {
    let dir = backend.dir.path().join("exports");
    std::fs::create_dir_all(&dir).expect("dir");
    write_android_chat(&dir, "One", "one", 130);
    write_android_chat(&dir, "Two", "two", 120);
    let app = TestApp::spawn(&backend, vec![whatsapp_session("s", &dir)]).await;
    let mut client = app.client().await;
    sync_frames(&mut client, "s", Some(0)).await;

    let mut pages = Vec::new();
    let mut after_seq = 0;
    loop {
        let page = client
            .list_messages(pb::ListMessagesRequest {
                session_id: "s".into(),
                chat_id: String::new(),
                after_seq,
                limit: 40,
                before_seq: 0,
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.messages.len() <= 40);
        after_seq = page.next_seq;
        pages.push(page.messages);
        if !pages.last().map(|p| p.len() == 40).unwrap_or(false) {
            break;
        }
    }
    let seqs: Vec<u64> = pages.iter().flatten().map(|m| m.seq).collect();
    assert_eq!(seqs.len(), 250);
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: no overlap"
    );
    let ids: HashSet<u64> = pages.iter().flatten().map(|m| m.id).collect();
    assert_eq!(ids.len(), 250);

    let chat_two = all_chats(&mut client, "s")
        .await
        .into_iter()
        .find(|c| c.name == "Two")
        .expect("chat")
        .chat_id;
    let two = all_messages(&mut client, "s", &chat_two).await;
    assert_eq!(two.len(), 120);
    assert!(two.iter().all(|m| m.chat_id == chat_two));

    let too_big = client
        .list_messages(pb::ListMessagesRequest {
            session_id: "s".into(),
            chat_id: String::new(),
            after_seq: 0,
            limit: 5000,
            before_seq: 0,
        })
        .await
        .expect_err("limit over the maximum");
    assert_eq!(too_big.code(), Code::InvalidArgument);
    let unknown_chat = client
        .list_messages(pb::ListMessagesRequest {
            session_id: "s".into(),
            chat_id: "nope".into(),
            after_seq: 0,
            limit: 0,
            before_seq: 0,
        })
        .await
        .expect_err("unknown chat");
    assert_eq!(unknown_chat.code(), Code::NotFound);
}

async fn tokens_are_checked_on_every_rpc(backend: Backend) {
    let app = TestApp::spawn_with(
        &backend,
        vec![local_session("mine"), local_session("theirs")],
        |config| {
            config.tokens = vec![
                token("token-for-mine", &["mine"]),
                token("token-for-all", &["*"]),
            ];
        },
    )
    .await;
    let channel = app.channel().await;
    let with = |secret: Option<&'static str>| {
        pb::chat_sync_service_client::ChatSyncServiceClient::with_interceptor(
            channel.clone(),
            move |mut request: tonic::Request<()>| {
                if let Some(secret) = secret {
                    request.metadata_mut().insert(
                        "authorization",
                        format!("Bearer {secret}").parse().expect("header"),
                    );
                }
                Ok(request)
            },
        )
    };

    async fn every_rpc<T>(
        client: &mut pb::chat_sync_service_client::ChatSyncServiceClient<T>,
        session: &str,
    ) -> Vec<(&'static str, Result<(), tonic::Status>)>
    where
        T: tonic::client::GrpcService<tonic::body::Body> + Clone,
        T::Error: Into<tonic::codegen::StdError>,
        T::ResponseBody:
            tonic::codegen::Body<Data = tonic::codegen::Bytes> + std::marker::Send + 'static,
        <T::ResponseBody as tonic::codegen::Body>::Error:
            Into<tonic::codegen::StdError> + std::marker::Send,
    {
        let s = session.to_string();
        vec![
            (
                "SyncChats",
                client
                    .sync_chats(pb::SyncChatsRequest {
                        session_id: s.clone(),
                        limit_per_chat: None,
                        since: None,
                    })
                    .await
                    .map(|_| ()),
            ),
            (
                "SubscribeMessages",
                client
                    .subscribe_messages(pb::SubscribeMessagesRequest {
                        session_id: s.clone(),
                        chat_ids: vec![],
                        after_seq: None,
                    })
                    .await
                    .map(|_| ()),
            ),
            (
                "SendMessage",
                client
                    .send_message(pb::SendMessageRequest {
                        session_id: s.clone(),
                        chat_id: "c".into(),
                        text: "t".into(),
                        client_message_id: String::new(),
                        attachments: Vec::new(),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ()),
            ),
            (
                "GetSyncStatus",
                client
                    .get_sync_status(pb::GetSyncStatusRequest {
                        session_id: s.clone(),
                    })
                    .await
                    .map(|_| ()),
            ),
            (
                "ListChats",
                client
                    .list_chats(pb::ListChatsRequest {
                        session_id: s.clone(),
                        after_seq: 0,
                        limit: 0,
                    })
                    .await
                    .map(|_| ()),
            ),
            (
                "ListMessages",
                client
                    .list_messages(pb::ListMessagesRequest {
                        session_id: s.clone(),
                        chat_id: String::new(),
                        after_seq: 0,
                        limit: 0,
                        before_seq: 0,
                    })
                    .await
                    .map(|_| ()),
            ),
            (
                "UpdateMessageStatus",
                client
                    .update_message_status(pb::UpdateMessageStatusRequest {
                        session_id: s.clone(),
                        message_id: 1,
                        status: pb::MessageStatus::Read as i32,
                        ..Default::default()
                    })
                    .await
                    .map(|_| ()),
            ),
        ]
    }

    for (rpc, result) in every_rpc(&mut with(None), "mine").await {
        assert_eq!(
            result.expect_err(rpc).code(),
            Code::Unauthenticated,
            "{rpc} without a token"
        );
    }
    for (rpc, result) in every_rpc(&mut with(Some("not-a-real-token")), "mine").await {
        assert_eq!(
            result.expect_err(rpc).code(),
            Code::Unauthenticated,
            "{rpc} with a bad token"
        );
    }
    for (rpc, result) in every_rpc(&mut with(Some("token-for-mine")), "theirs").await {
        assert_eq!(
            result.expect_err(rpc).code(),
            Code::PermissionDenied,
            "{rpc} outside the token's scope"
        );
    }
    for (rpc, result) in every_rpc(&mut with(Some("token-for-mine")), "mine").await {
        match result {
            Ok(()) => {}
            // The scoped token gets through; message 1 exists only after the send above.
            Err(status) => assert!(
                !matches!(
                    status.code(),
                    Code::Unauthenticated | Code::PermissionDenied
                ),
                "{rpc} in scope: {status:?}"
            ),
        }
    }
    let mut all = with(Some("token-for-all"));
    assert!(
        all.get_sync_status(pb::GetSyncStatusRequest {
            session_id: "theirs".into()
        })
        .await
        .is_ok()
    );
}

async fn sync_status_reports_state_counts_and_head_seq(backend: Backend) {
    let app = TestApp::spawn(
        &backend,
        vec![whatsapp_session("demo", &samples().join("whatsapp"))],
    )
    .await;
    let mut client = app.client().await;
    let before = sync_status(&client, "demo").await;
    assert_eq!(before.state, pb::SyncState::NeverSynced as i32);
    assert_eq!(
        (before.chat_count, before.message_count, before.head_seq),
        (0, 0, 0)
    );
    assert_eq!(before.source, "whatsapp-export");

    sync_frames(&mut client, "demo", None).await;
    let after = sync_status(&client, "demo").await;
    assert_eq!(after.state, pb::SyncState::Succeeded as i32);
    assert_eq!((after.chat_count, after.message_count), (3, 30));
    assert_eq!(
        after.head_seq, 46,
        "3 chats, 30 messages, 6 contacts, 6 participants and the run's end"
    );
    assert!(after.started_at.is_some() && after.finished_at.is_some());
    let progress = after.progress.expect("last run's progress");
    assert_eq!(stage(&progress), SyncStage::Completed);
    assert_eq!(progress.total_messages_synced, 30);

    let unknown = client
        .get_sync_status(pb::GetSyncStatusRequest {
            session_id: "nope".into(),
        })
        .await
        .expect_err("unknown session");
    assert_eq!(unknown.code(), Code::NotFound);

    // Events stream collects to the same head.
    let mut stream = subscribe(&mut client, "demo", &[], Some(0)).await;
    let events = read_until(&mut stream, 45).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e.event, Some(Event::ChatUpdated(_))))
            .count(),
        3
    );
    let _ = stream.next().await;
}

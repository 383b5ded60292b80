//! Conformance: every WhatsApp and Telegram export in `../shared/realchats` (real exports
//! written by other people; see its MANIFEST.tsv) is synced through the service, and each
//! file's messages are checked against values read from the file by hand
//! (`tests/conformance/*_expected.json`): the number of messages, the first and last
//! message's timestamp, sender and text, the kinds, and the unplaced lines (zero except in
//! the files the MANIFEST marks as deliberately broken).
//!
//! The corpus is not part of this repository: it is looked for at `../shared/realchats` (or
//! `$CHATSYNC_REALCHATS`). When it is absent the tests fail, or are skipped with
//! `CHATSYNC_ALLOW_SKIP=1` (`common::realchats`). The expectations stay in `tests/conformance/`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::common::*;
use chatsync::grpc::pb;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Endpoint {
    timestamp: Option<String>,
    sent_at_unix: Option<i64>,
    sender: String,
    text: String,
}

#[derive(Debug, Deserialize)]
struct WhatsAppExpected {
    file: String,
    messages: usize,
    unplaced: u64,
    kinds: BTreeMap<String, usize>,
    first: Endpoint,
    last: Endpoint,
}

#[derive(Debug, Deserialize)]
struct TelegramChatExpected {
    name: String,
    messages: usize,
    kinds: BTreeMap<String, usize>,
    first: Endpoint,
    last: Endpoint,
}

#[derive(Debug, Deserialize)]
struct TelegramExpected {
    file: String,
    chats: Vec<TelegramChatExpected>,
}

/// `(local_file, format)` rows of the MANIFEST.
fn manifest(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join("MANIFEST.tsv"))
        .expect("MANIFEST.tsv")
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let file = fields.next()?.to_owned();
            let format = fields.nth(4)?.to_owned();
            Some((file, format))
        })
        .collect()
}

fn load<T: for<'de> Deserialize<'de>>(name: &str) -> Vec<T> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("expectations"))
        .expect("valid expectations")
}

fn utc(timestamp: Option<&pbjson_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string())
        .unwrap_or_default()
}

fn kind_counts(messages: &[pb::Message]) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = ["TEXT", "SYSTEM", "MEDIA", "DELETED"]
        .into_iter()
        .map(|k| (k.to_owned(), 0))
        .collect();
    for message in messages {
        let name = pb::MessageKind::try_from(message.kind)
            .map(|k| {
                k.as_str_name()
                    .trim_start_matches("MESSAGE_KIND_")
                    .to_owned()
            })
            .unwrap_or_else(|_| "UNKNOWN".into());
        *counts.entry(name).or_default() += 1;
    }
    counts
}

fn check_endpoint(
    file: &str,
    which: &str,
    message: &pb::Message,
    expected: &Endpoint,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(timestamp) = &expected.timestamp {
        let got = utc(message.sent_at.as_ref());
        if &got != timestamp {
            problems.push(format!("{file}: {which} timestamp {got} != {timestamp}"));
        }
    }
    if let Some(unix) = expected.sent_at_unix {
        let got = message
            .sent_at
            .as_ref()
            .map(|t| t.seconds)
            .unwrap_or_default();
        if got != unix {
            problems.push(format!("{file}: {which} time {got} != {unix}"));
        }
    }
    if message.sender != expected.sender {
        problems.push(format!(
            "{file}: {which} sender {:?} != {:?}",
            message.sender, expected.sender
        ));
    }
    if message.text != expected.text {
        problems.push(format!(
            "{file}: {which} text {:?} != {:?}",
            message.text, expected.text
        ));
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_real_whatsapp_export_syncs_as_read_by_hand() {
    let Some(dir) = realchats() else { return };
    let expected: Vec<WhatsAppExpected> = load("whatsapp_expected.json");
    let listed: Vec<String> = manifest(&dir)
        .into_iter()
        .filter(|(_, format)| format.starts_with("whatsapp"))
        .map(|(file, _)| file)
        .collect();
    let covered: Vec<&str> = expected.iter().map(|e| e.file.as_str()).collect();
    for file in &listed {
        assert!(
            covered.contains(&file.as_str()),
            "{file} is in the MANIFEST but has no expectations"
        );
    }

    // One folder of links, one link per export, named after the file so each is its own chat.
    let backend = Backend::sqlite();
    let folder = backend.dir.path().join("realchats");
    std::fs::create_dir_all(&folder).expect("dir");
    let mut chat_name_of = HashMap::new();
    for entry in &expected {
        let link_name = entry.file.replace('/', "__");
        std::os::unix::fs::symlink(dir.join(&entry.file), folder.join(&link_name))
            .expect("symlink");
        let stem = link_name.trim_end_matches(".txt").to_owned();
        chat_name_of.insert(entry.file.clone(), stem);
    }
    let app = TestApp::spawn(&backend, vec![whatsapp_session("real", &folder)]).await;
    let mut client = app.client().await;
    let frames = sync_frames(&mut client, "real", Some(0)).await;
    assert_eq!(frames.last().map(stage), Some(SyncStage::Completed));
    assert!(
        frames.iter().all(|f| stage(f) != SyncStage::ChatFailed),
        "no chat fails"
    );

    let chats = all_chats(&mut client, "real").await;
    let chat_ids: HashMap<&str, &str> = chats
        .iter()
        .map(|c| (c.name.as_str(), c.chat_id.as_str()))
        .collect();
    let unplaced: HashMap<&str, u64> = frames
        .iter()
        .filter(|f| stage(f) == SyncStage::MessagesSaved)
        .map(|f| (f.chat_id.as_str(), f.unplaced_lines))
        .collect();

    let mut problems = Vec::new();
    let mut kinds_total: BTreeMap<String, usize> = BTreeMap::new();
    for entry in &expected {
        let name = &chat_name_of[&entry.file];
        let Some(chat_id) = chat_ids.get(name.as_str()) else {
            problems.push(format!("{}: no chat named {name:?}", entry.file));
            continue;
        };
        let messages = all_messages(&mut client, "real", chat_id).await;
        if messages.len() != entry.messages {
            problems.push(format!(
                "{}: {} messages, expected {}",
                entry.file,
                messages.len(),
                entry.messages
            ));
        }
        let got_unplaced = unplaced.get(chat_id).copied().unwrap_or(u64::MAX);
        if got_unplaced != entry.unplaced {
            problems.push(format!(
                "{}: {got_unplaced} unplaced lines, expected {}",
                entry.file, entry.unplaced
            ));
        }
        let kinds = kind_counts(&messages);
        if kinds != entry.kinds {
            problems.push(format!(
                "{}: kinds {kinds:?}, expected {:?}",
                entry.file, entry.kinds
            ));
        }
        for (kind, count) in kinds {
            *kinds_total.entry(kind).or_default() += count;
        }
        if let (Some(first), Some(last)) = (messages.first(), messages.last()) {
            problems.extend(check_endpoint(&entry.file, "first", first, &entry.first));
            problems.extend(check_endpoint(&entry.file, "last", last, &entry.last));
        }
    }
    let total: usize = expected.iter().map(|e| e.messages).sum();
    eprintln!(
        "conformance: {} WhatsApp exports, {total} messages, kinds {kinds_total:?}",
        expected.len()
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );

    // Re-importing the same files adds nothing.
    let again = sync_frames(&mut client, "real", Some(0)).await;
    assert_eq!(again.last().map(|f| f.total_messages_synced), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_real_telegram_export_syncs_as_read_by_hand() {
    let Some(dir) = realchats() else { return };
    let expected: Vec<TelegramExpected> = load("telegram_expected.json");
    for (file, format) in manifest(&dir) {
        if format.starts_with("telegram") {
            assert!(
                expected.iter().any(|e| e.file == file),
                "{file} is in the MANIFEST but has no expectations"
            );
        }
    }
    let backend = Backend::sqlite();
    let sessions: Vec<_> = expected
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            session(
                &format!("tg{i}"),
                "telegram-export",
                serde_json::json!({"path": dir.join(&entry.file)}),
            )
        })
        .collect();
    let app = TestApp::spawn(&backend, sessions).await;
    let mut client = app.client().await;
    let mut problems = Vec::new();
    for (i, entry) in expected.iter().enumerate() {
        let session_id = format!("tg{i}");
        let frames = sync_frames(&mut client, &session_id, Some(0)).await;
        assert_eq!(
            frames.last().map(stage),
            Some(SyncStage::Completed),
            "{}",
            entry.file
        );
        assert_eq!(
            frames[0].n_chats as usize,
            entry.chats.len(),
            "{}",
            entry.file
        );
        let chats = all_chats(&mut client, &session_id).await;
        for chat in &entry.chats {
            let Some(stored) = chats.iter().find(|c| c.name == chat.name) else {
                problems.push(format!("{}: no chat named {:?}", entry.file, chat.name));
                continue;
            };
            let messages = all_messages(&mut client, &session_id, &stored.chat_id).await;
            if messages.len() != chat.messages {
                problems.push(format!(
                    "{}: {} messages, expected {}",
                    entry.file,
                    messages.len(),
                    chat.messages
                ));
            }
            let kinds = kind_counts(&messages);
            if kinds != chat.kinds {
                problems.push(format!(
                    "{}: kinds {kinds:?}, expected {:?}",
                    entry.file, chat.kinds
                ));
            }
            if let (Some(first), Some(last)) = (messages.first(), messages.last()) {
                problems.extend(check_endpoint(&entry.file, "first", first, &chat.first));
                problems.extend(check_endpoint(&entry.file, "last", last, &chat.last));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[derive(Debug, Deserialize)]
struct LocaleSampleExpected {
    file: String,
    chat: String,
    messages: usize,
    unplaced: u64,
    kinds: BTreeMap<String, usize>,
    timestamps: Vec<String>,
    senders: Vec<String>,
}

/// The locale samples in `samples/locales` (written for this project: Arabic iOS, Persian
/// Android, Hindi, Korean iOS, German iOS 12-hour with BOMs, Thai with Buddhist-era years)
/// sync through the service with every timestamp and sender as read by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_locale_sample_syncs_as_read_by_hand() {
    let expected: Vec<LocaleSampleExpected> = load("locales_expected.json");
    let folder = samples().join("locales");
    let on_disk = std::fs::read_dir(&folder).expect("samples/locales").count();
    assert_eq!(
        on_disk,
        expected.len(),
        "every locale sample has expectations"
    );
    let backend = Backend::sqlite();
    let app = TestApp::spawn(&backend, vec![whatsapp_session("locales", &folder)]).await;
    let mut client = app.client().await;
    let frames = sync_frames(&mut client, "locales", Some(0)).await;
    assert_eq!(frames.last().map(stage), Some(SyncStage::Completed));
    let chats = all_chats(&mut client, "locales").await;
    assert_eq!(chats.len(), expected.len());
    let mut problems = Vec::new();
    for entry in &expected {
        let Some(chat) = chats.iter().find(|c| c.name == entry.chat) else {
            problems.push(format!("{}: no chat named {:?}", entry.file, entry.chat));
            continue;
        };
        let unplaced = frames
            .iter()
            .find(|f| stage(f) == SyncStage::MessagesSaved && f.chat_id == chat.chat_id)
            .map(|f| f.unplaced_lines);
        if unplaced != Some(entry.unplaced) {
            problems.push(format!("{}: unplaced {unplaced:?}", entry.file));
        }
        let messages = all_messages(&mut client, "locales", &chat.chat_id).await;
        if messages.len() != entry.messages {
            problems.push(format!("{}: {} messages", entry.file, messages.len()));
        }
        let kinds = kind_counts(&messages);
        if kinds != entry.kinds {
            problems.push(format!("{}: kinds {kinds:?}", entry.file));
        }
        let timestamps: Vec<String> = messages.iter().map(|m| utc(m.sent_at.as_ref())).collect();
        if timestamps != entry.timestamps {
            problems.push(format!("{}: timestamps {timestamps:?}", entry.file));
        }
        let senders: Vec<&str> = messages.iter().map(|m| m.sender.as_str()).collect();
        if senders != entry.senders {
            problems.push(format!("{}: senders {senders:?}", entry.file));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Re-syncing adds nothing.
    let again = sync_frames(&mut client, "locales", Some(0)).await;
    assert_eq!(again.last().map(|f| f.total_messages_synced), Some(0));
}

/// A Telegram folder holding one export that is not JSON: that file is one CHAT_FAILED chat,
/// the good export still syncs, and the run completes. The good export's messages have
/// `date_unixtime`, so the session's `timezone` leaves them exact; a message with only a
/// wall-clock `date` is read in that zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_telegram_file_fails_its_chat_and_the_run_goes_on() {
    let backend = Backend::sqlite();
    let folder = backend.dir.path().join("telegram");
    std::fs::create_dir_all(&folder).expect("dir");
    std::fs::copy(
        samples().join("telegram/result.json"),
        folder.join("a_good.json"),
    )
    .expect("copy");
    std::fs::write(folder.join("b_broken.json"), b"{\"messages\": [1, 2").expect("write");
    std::fs::write(
        folder.join("c_local.json"),
        br#"{"name": "Old export", "type": "personal_chat", "id": 77, "messages": [
            {"id": 1, "type": "message", "date": "2020-07-01T12:00:00", "from": "Ann", "text": "noon in Tokyo"}]}"#,
    )
    .expect("write");
    let app = TestApp::spawn(
        &backend,
        vec![session(
            "tg",
            "telegram-export",
            serde_json::json!({"path": folder, "timezone": "Asia/Tokyo"}),
        )],
    )
    .await;
    let mut client = app.client().await;
    let frames = sync_frames(&mut client, "tg", Some(0)).await;
    assert_eq!(frames.last().map(stage), Some(SyncStage::Completed));
    let failed: Vec<&pb::SyncProgress> = frames
        .iter()
        .filter(|f| stage(f) == SyncStage::ChatFailed)
        .collect();
    assert_eq!(failed.len(), 1, "{frames:?}");
    assert!(failed[0].chat_id.starts_with("tg-file-"), "{:?}", failed[0]);
    assert!(failed[0].error.contains("b_broken.json"), "{:?}", failed[0]);
    let saved = frames
        .iter()
        .filter(|f| stage(f) == SyncStage::MessagesSaved)
        .count();
    assert!(saved >= 2, "the other files still sync: {frames:?}");
    let chats = all_chats(&mut client, "tg").await;
    let old = chats
        .iter()
        .find(|c| c.name == "Old export")
        .expect("old export");
    let messages = all_messages(&mut client, "tg", &old.chat_id).await;
    // 12:00 in Tokyo (UTC+9) is 03:00 UTC.
    assert_eq!(utc(messages[0].sent_at.as_ref()), "2020-07-01T03:00:00");
}

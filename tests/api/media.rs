//! Media (issue 11): export attachments matched to their files, bytes stored once in the blob
//! store, GetMedia streaming them back, through the public gRPC surface, on both backends.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::common::*;
use chatsync::grpc::pb;
use pb::chat_sync_service_client::ChatSyncServiceClient;
use tonic::Code;
use tonic::transport::Channel;

on_both_backends!(
    a_whatsapp_zip_with_media_stores_each_file_once_and_get_media_returns_it,
    a_telegram_export_with_a_photo_stores_the_photo,
    a_session_cannot_read_another_sessions_media,
    files_sent_to_a_local_chat_are_stored_and_read_only_sources_refuse_them,
    a_windowed_sync_reads_only_the_files_of_the_window,
);

/// The bytes of the two "photos" in the zip: identical, and larger than one 64 KiB chunk.
fn photo_bytes() -> Vec<u8> {
    (0..150_000u32).map(|i| (i * 7 % 253) as u8).collect()
}

/// Writes `WhatsApp Chat - Media Test.zip` into `dir`: `_chat.txt` with an iOS `<attached:>`
/// line, an Android `(file attached)` line (both files present, with identical bytes), a
/// line naming a file the zip does not hold, and a text line.
fn write_media_zip(dir: &Path) -> PathBuf {
    write_media_zip_with(dir, &[])
}

/// [`write_media_zip`], with more lines at the end and the files they name (none for an
/// empty name).
fn write_media_zip_with(dir: &Path, more: &[(&str, &str, &[u8])]) -> PathBuf {
    let mut chat = "[02/01/2024, 10:11:12] Ana: \u{200e}<attached: 00000012-PHOTO-2024-01-02-10-11-12.jpg>\n\
                [02/01/2024, 10:12:00] Ben: IMG-20240102-WA0001.jpg (file attached)\n\
                [02/01/2024, 10:13:00] Ana: \u{200e}<attached: 00000013-PHOTO-2024-01-02-10-13-00.jpg>\n\
                [02/01/2024, 10:14:00] Ben: nice photos\n"
        .to_owned();
    for (line, _, _) in more {
        chat.push_str(line);
        chat.push('\n');
    }
    let path = dir.join("WhatsApp Chat - Media Test.zip");
    let file = std::fs::File::create(&path).expect("create zip");
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("_chat.txt", options).expect("entry");
    zip.write_all(chat.as_bytes()).expect("write");
    for name in [
        "00000012-PHOTO-2024-01-02-10-11-12.jpg",
        "IMG-20240102-WA0001.jpg",
    ] {
        zip.start_file(name, options).expect("entry");
        zip.write_all(&photo_bytes()).expect("write");
    }
    // A line may name a file another line brought (an empty name adds no entry).
    for (_, name, bytes) in more.iter().filter(|(_, name, _)| !name.is_empty()) {
        zip.start_file(*name, options).expect("entry");
        zip.write_all(bytes).expect("write");
    }
    zip.finish().expect("finish zip");
    path
}

/// Every blob file in the store (the temporary directory aside).
fn blob_files(blob_dir: &Path) -> Vec<PathBuf> {
    let Ok(shards) = std::fs::read_dir(blob_dir) else {
        return Vec::new();
    };
    shards
        .flatten()
        .filter(|shard| shard.file_name() != "tmp")
        .flat_map(|shard| std::fs::read_dir(shard.path()).expect("shard").flatten())
        .map(|entry| entry.path())
        .collect()
}

/// GetMedia to the end: the frames.
async fn get_media(
    client: &mut ChatSyncServiceClient<Channel>,
    session_id: &str,
    sha256: &str,
) -> Result<Vec<pb::GetMediaResponse>, tonic::Status> {
    let mut stream = client
        .get_media(pb::GetMediaRequest {
            session_id: session_id.into(),
            sha256: sha256.into(),
        })
        .await?
        .into_inner();
    let mut frames = Vec::new();
    while let Some(frame) = stream.message().await? {
        frames.push(frame);
    }
    Ok(frames)
}

async fn media_app(backend: &Backend, sessions: Vec<chatsync::config::SessionConfig>) -> TestApp {
    let blob_dir = backend.dir.path().join("blobs");
    TestApp::spawn_with(backend, sessions, move |config| config.blob_dir = blob_dir).await
}

async fn a_whatsapp_zip_with_media_stores_each_file_once_and_get_media_returns_it(
    backend: Backend,
) {
    let exports = backend.dir.path().join("exports");
    std::fs::create_dir_all(&exports).expect("mkdir");
    write_media_zip(&exports);
    let app = media_app(&backend, vec![whatsapp_session("wa", &exports)]).await;
    let mut client = app.client().await;
    let frames = sync_frames(&mut client, "wa", Some(0)).await;
    assert_eq!(frames.last().map(stage), Some(SyncStage::Completed));
    assert_eq!(frames.last().map(|f| f.total_messages_synced), Some(4));

    let messages = all_messages(&mut client, "wa", "").await;
    assert_eq!(messages.len(), 4);
    let expected = hex_sha256(&photo_bytes());
    let only = |message: &pb::Message| -> pb::Attachment {
        assert_eq!(message.kind, pb::MessageKind::Media as i32, "{message:?}");
        assert_eq!(message.attachments.len(), 1, "{message:?}");
        message.attachments[0].clone()
    };
    let ios = only(&messages[0]);
    assert_eq!(ios.file_name, "00000012-PHOTO-2024-01-02-10-11-12.jpg");
    assert_eq!(ios.mime_type, "image/jpeg");
    assert_eq!(ios.size_bytes, 150_000);
    assert_eq!(ios.sha256, expected);
    assert!(ios.stored);
    let android = only(&messages[1]);
    assert_eq!(android.file_name, "IMG-20240102-WA0001.jpg");
    assert_eq!(android.sha256, expected);
    assert!(android.stored);
    // A line naming a file the zip does not hold: an attachment without bytes, no error.
    let missing = only(&messages[2]);
    assert_eq!(missing.file_name, "00000013-PHOTO-2024-01-02-10-13-00.jpg");
    assert!(!missing.stored);
    assert_eq!((missing.size_bytes, missing.sha256.as_str()), (0, ""));
    assert!(messages[3].attachments.is_empty());
    assert_eq!(frames.last().map(|f| f.total_unplaced_lines), Some(0));

    // Two messages, identical bytes: one blob file, named by its hash.
    let blobs = blob_files(&backend.dir.path().join("blobs"));
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    assert!(blobs[0].ends_with(Path::new(&expected[..2]).join(&expected[2..])));

    // GetMedia streams the same bytes, in 64 KiB chunks, the first frame typed and sized.
    let frames = get_media(&mut client, "wa", &expected)
        .await
        .expect("GetMedia");
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0].mime_type, "image/jpeg");
    assert_eq!(frames[0].total_size_bytes, 150_000);
    assert_eq!(frames[0].data.len(), 64 << 10);
    let bytes: Vec<u8> = frames.iter().flat_map(|f| f.data.clone()).collect();
    assert_eq!(hex_sha256(&bytes), expected);
    // Upper-case hex names the same blob.
    let upper = get_media(&mut client, "wa", &expected.to_uppercase())
        .await
        .expect("GetMedia in upper case");
    assert_eq!(upper.len(), 3);

    // Subscribers see the attachments too (replay from seq 0).
    let mut stream = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: "wa".into(),
            chat_ids: Vec::new(),
            after_seq: Some(0),
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut replayed = Vec::new();
    while let Some(frame) = stream.message().await.expect("frame") {
        match frame.event {
            Some(pb::subscribe_messages_response::Event::MessageCreated(message)) => {
                replayed.push(message)
            }
            Some(pb::subscribe_messages_response::Event::Ready(_)) => break,
            _ => {}
        }
    }
    assert_eq!(replayed, messages);

    // So do a snapshot and search hits.
    let mut snapshot = client
        .get_snapshot(pb::GetSnapshotRequest {
            session_id: "wa".into(),
            ..Default::default()
        })
        .await
        .expect("GetSnapshot")
        .into_inner();
    let frame = snapshot.message().await.expect("frame").expect("one frame");
    assert_eq!(frame.messages, messages);
    let hits = client
        .search_messages(pb::SearchMessagesRequest {
            session_id: "wa".into(),
            query: "attached".into(),
            ..Default::default()
        })
        .await
        .expect("SearchMessages")
        .into_inner()
        .hits;
    assert!(!hits.is_empty());
    for hit in hits {
        let found = hit.message.expect("a hit's message");
        let listed = messages.iter().find(|m| m.id == found.id).expect("listed");
        assert_eq!(&found, listed);
    }

    // Errors: a malformed hash, an unknown one.
    let error = get_media(&mut client, "wa", "not-a-hash")
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let error = get_media(&mut client, "wa", &"0".repeat(64))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    let error = get_media(&mut client, "nobody", &expected)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);

    // A second sync adds nothing and stores nothing new.
    let again = sync_frames(&mut client, "wa", Some(0)).await;
    assert_eq!(again.last().map(|f| f.total_messages_synced), Some(0));
    assert_eq!(blob_files(&backend.dir.path().join("blobs")).len(), 1);

    // A later export of the chat with one more photo: only the new message's file is read
    // (the stored messages' files are not read again: the blob removed here stays gone).
    std::fs::remove_file(&blobs[0]).expect("remove blob");
    let video = b"a short video".to_vec();
    write_media_zip_with(
        &exports,
        &[(
            "[02/01/2024, 10:15:00] Ana: \u{200e}<attached: 00000016-VIDEO-2024-01-02-10-15-00.mp4>",
            "00000016-VIDEO-2024-01-02-10-15-00.mp4",
            &video,
        )],
    );
    let later = sync_frames(&mut client, "wa", Some(0)).await;
    assert_eq!(later.last().map(|f| f.total_messages_synced), Some(1));
    let messages = all_messages(&mut client, "wa", "").await;
    let newest = only(&messages[4]);
    assert_eq!(newest.mime_type, "video/mp4");
    assert_eq!(newest.sha256, hex_sha256(&video));
    let blobs = blob_files(&backend.dir.path().join("blobs"));
    assert_eq!(blobs.len(), 1, "only the new file was read: {blobs:?}");
}

async fn a_telegram_export_with_a_photo_stores_the_photo(backend: Backend) {
    let export = backend.dir.path().join("telegram");
    std::fs::create_dir_all(export.join("photos")).expect("mkdir");
    std::fs::create_dir_all(export.join("files")).expect("mkdir");
    let photo = b"\xff\xd8\xff\xe0 a small jpeg".to_vec();
    std::fs::write(
        export.join("photos/photo_1@02-01-2024_10-00-00.jpg"),
        &photo,
    )
    .expect("write");
    let pdf = b"%PDF-1.4 a small report".to_vec();
    std::fs::write(export.join("files/report.pdf"), &pdf).expect("write");
    let json = serde_json::json!({
        "name": "Lena",
        "type": "personal_chat",
        "id": 777,
        "messages": [
            {"id": 1, "type": "message", "date": "2024-01-02T10:00:00",
             "date_unixtime": "1704189600", "from": "Lena",
             "photo": "photos/photo_1@02-01-2024_10-00-00.jpg", "width": 10, "height": 10,
             "text": "the view"},
            {"id": 2, "type": "message", "date": "2024-01-02T10:01:00",
             "date_unixtime": "1704189660", "from": "Lena",
             "file": "files/report.pdf", "mime_type": "application/pdf", "text": ""},
            {"id": 3, "type": "message", "date": "2024-01-02T10:02:00",
             "date_unixtime": "1704189720", "from": "Lena",
             "photo": "(File not included. Change data exporting settings to download.)",
             "text": ""},
            {"id": 4, "type": "message", "date": "2024-01-02T10:03:00",
             "date_unixtime": "1704189780", "from": "Lena",
             "photo": "../outside.jpg", "text": ""},
            {"id": 5, "type": "message", "date": "2024-01-02T10:04:00",
             "date_unixtime": "1704189840", "from": "Lena", "text": "plain"}
        ]
    });
    std::fs::write(export.join("result.json"), json.to_string()).expect("write");
    std::fs::write(backend.dir.path().join("outside.jpg"), b"not to be read").expect("write");
    let app = media_app(
        &backend,
        vec![session(
            "tg",
            "telegram-export",
            serde_json::json!({"path": export}),
        )],
    )
    .await;
    let mut client = app.client().await;
    let frames = sync_frames(&mut client, "tg", Some(0)).await;
    assert_eq!(frames.last().map(|f| f.total_messages_synced), Some(5));
    let messages = all_messages(&mut client, "tg", "tg-777").await;
    assert_eq!(messages.len(), 5);

    // A photo with a caption: a MEDIA message whose text is the caption.
    assert_eq!(messages[0].kind, pb::MessageKind::Media as i32);
    assert_eq!(messages[0].text, "the view");
    let shot = &messages[0].attachments[0];
    assert_eq!(shot.file_name, "photo_1@02-01-2024_10-00-00.jpg");
    assert_eq!(shot.mime_type, "image/jpeg");
    assert_eq!(shot.size_bytes, photo.len() as u64);
    assert_eq!(shot.sha256, hex_sha256(&photo));
    assert!(shot.stored);
    let report = &messages[1].attachments[0];
    assert_eq!(
        (report.file_name.as_str(), report.mime_type.as_str()),
        ("report.pdf", "application/pdf")
    );
    assert_eq!(report.sha256, hex_sha256(&pdf));
    // Not exported, or outside the export folder: no bytes.
    assert!(!messages[2].attachments[0].stored);
    assert!(!messages[3].attachments[0].stored);
    assert!(messages[4].attachments.is_empty());

    let frames = get_media(&mut client, "tg", &shot.sha256)
        .await
        .expect("GetMedia");
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].mime_type, "image/jpeg");
    assert_eq!(frames[0].data, photo);
}

async fn a_session_cannot_read_another_sessions_media(backend: Backend) {
    let exports = backend.dir.path().join("exports");
    std::fs::create_dir_all(&exports).expect("mkdir");
    write_media_zip(&exports);
    let plain = backend.dir.path().join("plain");
    std::fs::create_dir_all(&plain).expect("mkdir");
    write_android_chat(&plain, "Other", "x", 2);
    let app = media_app(
        &backend,
        vec![
            whatsapp_session("wa", &exports),
            whatsapp_session("other", &plain),
            local_session("notes"),
        ],
    )
    .await;
    let mut client = app.client().await;
    sync_frames(&mut client, "wa", Some(0)).await;
    sync_frames(&mut client, "other", Some(0)).await;
    let sha256 = hex_sha256(&photo_bytes());
    assert!(get_media(&mut client, "wa", &sha256).await.is_ok());
    for session_id in ["other", "notes"] {
        let error = get_media(&mut client, session_id, &sha256)
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::NotFound, "{session_id}: {error:?}");
    }
}

async fn files_sent_to_a_local_chat_are_stored_and_read_only_sources_refuse_them(backend: Backend) {
    let exports = backend.dir.path().join("exports");
    std::fs::create_dir_all(&exports).expect("mkdir");
    let app = media_app(
        &backend,
        vec![local_session("notes"), whatsapp_session("wa", &exports)],
    )
    .await;
    let mut client = app.client().await;
    let note = b"%PDF-1.4 minutes".to_vec();
    let request =
        |session_id: &str, key: &str, files: Vec<pb::AttachmentUpload>| pb::SendMessageRequest {
            session_id: session_id.into(),
            chat_id: "general".into(),
            text: String::new(),
            client_message_id: key.into(),
            attachments: files,
            ..Default::default()
        };
    let file = |name: &str, mime: &str, data: &[u8]| pb::AttachmentUpload {
        file_name: name.into(),
        mime_type: mime.into(),
        data: data.to_vec(),
    };
    let sent = client
        .send_message(request(
            "notes",
            "f1",
            vec![
                file("minutes.pdf", "", &note),
                file("photo.bin", "image/webp", &photo_bytes()),
            ],
        ))
        .await
        .expect("SendMessage with files")
        .into_inner()
        .message
        .expect("message");
    assert_eq!(sent.kind, pb::MessageKind::Media as i32);
    assert_eq!(sent.status, pb::MessageStatus::Sent as i32);
    let names: Vec<(&str, &str, bool)> = sent
        .attachments
        .iter()
        .map(|a| (a.file_name.as_str(), a.mime_type.as_str(), a.stored))
        .collect();
    assert_eq!(
        names,
        vec![
            ("minutes.pdf", "application/pdf", true),
            ("photo.bin", "image/webp", true)
        ]
    );
    assert_eq!(sent.attachments[0].sha256, hex_sha256(&note));
    // Listed and streamed back as sent.
    let listed = all_messages(&mut client, "notes", "general").await;
    assert_eq!(listed, vec![sent.clone()]);
    let frames = get_media(&mut client, "notes", &sent.attachments[0].sha256)
        .await
        .expect("GetMedia");
    assert_eq!(frames[0].mime_type, "application/pdf");
    assert_eq!(frames.concat_data(), note);

    // Invalid files, and a source that cannot send at all.
    for (files, code) in [
        (vec![file("", "", b"x")], Code::InvalidArgument),
        (vec![file("empty.txt", "", b"")], Code::InvalidArgument),
    ] {
        let error = client
            .send_message(request("notes", "bad", files))
            .await
            .unwrap_err();
        assert_eq!(error.code(), code, "{error:?}");
    }
    let error = client
        .send_message(request("wa", "ro", vec![file("a.pdf", "", &note)]))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
}

trait ConcatData {
    fn concat_data(&self) -> Vec<u8>;
}

impl ConcatData for Vec<pb::GetMediaResponse> {
    fn concat_data(&self) -> Vec<u8> {
        self.iter().flat_map(|frame| frame.data.clone()).collect()
    }
}

/// SyncChats with `since` reads the files of the messages in the window only; a file named
/// twice is stored once.
async fn a_windowed_sync_reads_only_the_files_of_the_window(backend: Backend) {
    let exports = backend.dir.path().join("exports");
    std::fs::create_dir_all(&exports).expect("mkdir");
    let late: &[u8] = b"a later photo";
    write_media_zip_with(
        &exports,
        &[
            (
                "[03/01/2024, 09:00:00] Ben: \u{200e}<attached: 00000020-PHOTO-2024-01-03-09-00-00.jpg>",
                "00000020-PHOTO-2024-01-03-09-00-00.jpg",
                late,
            ),
            (
                "[03/01/2024, 09:01:00] Ana: \u{200e}<attached: 00000020-PHOTO-2024-01-03-09-00-00.jpg>",
                "",
                b"",
            ),
        ],
    );
    let app = media_app(&backend, vec![whatsapp_session("wa", &exports)]).await;
    let mut client = app.client().await;
    let mut stream = client
        .sync_chats(pb::SyncChatsRequest {
            session_id: "wa".into(),
            limit_per_chat: Some(0),
            // 2024-01-03T00:00:00Z: the two last lines only.
            since: Some(pbjson_types::Timestamp {
                seconds: 1_704_240_000,
                nanos: 0,
            }),
        })
        .await
        .expect("SyncChats")
        .into_inner();
    let mut last = None;
    while let Some(frame) = stream.message().await.expect("frame") {
        last = frame.progress;
    }
    let last = last.expect("frames");
    assert_eq!(stage(&last), SyncStage::Completed);
    assert_eq!(last.total_messages_synced, 2);
    let messages = all_messages(&mut client, "wa", "").await;
    assert_eq!(messages.len(), 2);
    for message in &messages {
        assert_eq!(message.attachments.len(), 1, "{message:?}");
        assert!(message.attachments[0].stored);
        assert_eq!(message.attachments[0].sha256, hex_sha256(late));
    }
    // Only the window's file was read into the blob store (the earlier photos were not).
    let blobs = blob_files(&backend.dir.path().join("blobs"));
    assert_eq!(blobs.len(), 1, "{blobs:?}");
}

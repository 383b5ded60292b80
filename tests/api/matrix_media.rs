//! Matrix media (issue 11) against a real Synapse (`scripts/synapse`): files other members post
//! are downloaded through the authenticated media endpoint into the blob store (on SyncChats
//! and live), and SendMessage with a file uploads it and posts an `m.image`. Each test runs on
//! SQLite and on PostgreSQL.
//!
//! Needs `CHATSYNC_TEST_SYNAPSE_DIR` (the shared homeserver `scripts/test` starts); without it
//! the tests fail, or are skipped with `CHATSYNC_ALLOW_SKIP=1` (`common::shared_homeserver`).

use std::time::Duration;

use crate::common::synapse::{Homeserver, MatrixUser};
use crate::common::{
    Backend, HANG_GUARD, TestApp, all_messages, eventually, hex_sha256, on_both_backends, session,
    shared_homeserver, sync_frames, sync_status,
};
use chatsync::grpc::pb;
use pb::chat_sync_service_client::ChatSyncServiceClient;
use pb::subscribe_messages_response::Event;
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;

on_both_backends!(
    files_posted_by_others_are_stored_on_sync_and_live,
    send_message_with_an_image_uploads_it_and_posts_it_once,
);

const SESSION: &str = "mx";

fn enc(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// Uploads `bytes` as `user`; returns the `mxc://` URI.
async fn upload(user: &MatrixUser, bytes: &[u8], name: &str, mime: &str) -> String {
    let answer: Value = http()
        .post(format!(
            "{}/_matrix/media/v3/upload?filename={}",
            user.url,
            enc(name)
        ))
        .bearer_auth(&user.token)
        .header("content-type", mime)
        .body(bytes.to_vec())
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("upload answer");
    answer["content_uri"]
        .as_str()
        .unwrap_or_else(|| panic!("upload refused: {answer}"))
        .to_owned()
}

/// Posts an `m.room.message` with this content as `user`; returns the event id.
async fn post_content(user: &MatrixUser, room_id: &str, content: Value) -> String {
    let txn = uuid::Uuid::new_v4().simple().to_string();
    let answer: Value = http()
        .put(format!(
            "{}/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
            user.url,
            enc(room_id)
        ))
        .bearer_auth(&user.token)
        .json(&content)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("send answer");
    answer["event_id"]
        .as_str()
        .unwrap_or_else(|| panic!("send refused: {answer}"))
        .to_owned()
}

/// Downloads an `mxc://` URI as `user` through the authenticated media endpoint.
async fn download(user: &MatrixUser, mxc: &str) -> Vec<u8> {
    let path = mxc.strip_prefix("mxc://").expect("an mxc URI");
    let response = http()
        .get(format!(
            "{}/_matrix/client/v1/media/download/{path}",
            user.url
        ))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("download");
    assert!(response.status().is_success(), "{}", response.status());
    response.bytes().await.expect("bytes").to_vec()
}

async fn start(
    backend: &Backend,
    hs: &Homeserver,
    user: &MatrixUser,
) -> (TestApp, ChatSyncServiceClient<Channel>) {
    let token_file = backend.dir.path().join("mx.token");
    std::fs::write(&token_file, format!("{}\n", user.token)).expect("token file");
    let sessions = vec![session(
        SESSION,
        "matrix",
        json!({"homeserver": hs.url, "user_id": user.user_id, "access_token_file": token_file}),
    )];
    let blob_dir = backend.dir.path().join("blobs");
    let app =
        TestApp::spawn_with(backend, sessions, move |config| config.blob_dir = blob_dir).await;
    let client = app.client().await;
    (app, client)
}

async fn wait_up(client: &ChatSyncServiceClient<Channel>) {
    eventually("the matrix source to be UP", || {
        let client = client.clone();
        async move { sync_status(&client, SESSION).await.source_state == pb::SourceState::Up as i32 }
    })
    .await;
}

/// GetMedia to the end: the bytes and the first frame's MIME type.
async fn get_media(
    client: &mut ChatSyncServiceClient<Channel>,
    sha256: &str,
) -> Result<(Vec<u8>, String), tonic::Status> {
    let mut stream = client
        .get_media(pb::GetMediaRequest {
            session_id: SESSION.into(),
            sha256: sha256.into(),
        })
        .await?
        .into_inner();
    let (mut bytes, mut mime) = (Vec::new(), None);
    while let Some(frame) = stream.message().await? {
        mime.get_or_insert(frame.mime_type);
        bytes.extend(frame.data);
    }
    Ok((bytes, mime.unwrap_or_default()))
}

fn media_bytes(seed: u32, n: u32) -> Vec<u8> {
    (0..n).map(|i| ((i * seed) % 251) as u8).collect()
}

async fn files_posted_by_others_are_stored_on_sync_and_live(backend: Backend) {
    let Some(hs) = shared_homeserver() else {
        return;
    };
    let me = hs.register("me").await;
    let bob = hs.register("bob").await;
    let room = bob.create_room(Some("Photos"), &[&me]).await;
    let picture = media_bytes(7, 100_000);
    let mxc = upload(&bob, &picture, "beach.png", "image/png").await;
    let beach = post_content(
        &bob,
        &room,
        json!({"msgtype": "m.image", "body": "beach.png", "url": mxc,
               "info": {"mimetype": "image/png", "size": picture.len()}}),
    )
    .await;

    let (_app, mut client) = start(&backend, &hs, &me).await;
    sync_frames(&mut client, SESSION, Some(0)).await;
    let stored = all_messages(&mut client, SESSION, &room).await;
    let image = stored
        .iter()
        .find(|m| m.kind == pb::MessageKind::Media as i32)
        .expect("the image is stored");
    assert_eq!(image.text, "beach.png");
    assert_eq!(image.attachments.len(), 1);
    let file = &image.attachments[0];
    assert_eq!(
        (file.file_name.as_str(), file.mime_type.as_str()),
        ("beach.png", "image/png")
    );
    assert!(file.stored, "{file:?}");
    assert_eq!(file.size_bytes, picture.len() as u64);
    assert_eq!(file.sha256, hex_sha256(&picture));
    let (bytes, mime) = get_media(&mut client, &file.sha256)
        .await
        .expect("GetMedia");
    assert_eq!(mime, "image/png");
    assert_eq!(hex_sha256(&bytes), file.sha256);

    // Live: a file posted while chatsync listens reaches subscribers with its bytes stored.
    wait_up(&client).await;
    let mut stream = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: SESSION.into(),
            chat_ids: vec![],
            after_seq: None,
        })
        .await
        .expect("subscribe")
        .into_inner();
    let report = media_bytes(13, 5_000);
    let mxc = upload(&bob, &report, "report.pdf", "application/pdf").await;
    post_content(
        &bob,
        &room,
        json!({"msgtype": "m.file", "body": "the report", "filename": "report.pdf", "url": mxc,
               "info": {"mimetype": "application/pdf", "size": report.len()}}),
    )
    .await;
    let live = loop {
        let frame = tokio::time::timeout(HANG_GUARD, stream.message())
            .await
            .expect("an event (the stream hangs)")
            .expect("stream ok")
            .expect("stream open");
        if let Some(Event::MessageCreated(message)) = frame.event
            && message.text == "the report"
        {
            break message;
        }
    };
    assert_eq!(live.kind, pb::MessageKind::Media as i32);
    let file = &live.attachments[0];
    assert_eq!(
        (file.file_name.as_str(), file.mime_type.as_str()),
        ("report.pdf", "application/pdf")
    );
    assert!(file.stored);
    assert_eq!(file.sha256, hex_sha256(&report));
    let (bytes, _) = get_media(&mut client, &file.sha256)
        .await
        .expect("GetMedia");
    assert_eq!(bytes, report);

    // A file whose message is redacted upstream is no longer served.
    let beach_sha256 = hex_sha256(&picture);
    bob.redact(&room, &beach).await;
    eventually("the redacted image's media to be gone", || {
        let mut client = client.clone();
        let sha256 = beach_sha256.clone();
        async move {
            matches!(get_media(&mut client, &sha256).await, Err(status) if status.code() == Code::NotFound)
        }
    })
    .await;
}

async fn send_message_with_an_image_uploads_it_and_posts_it_once(backend: Backend) {
    let Some(hs) = shared_homeserver() else {
        return;
    };
    let me = hs.register("me").await;
    let bob = hs.register("bob").await;
    let room = bob.create_room(Some("Outbox"), &[&me]).await;
    let (_app, mut client) = start(&backend, &hs, &me).await;
    sync_frames(&mut client, SESSION, Some(0)).await;

    let picture = media_bytes(11, 70_000);
    let request = |files: Vec<pb::AttachmentUpload>| pb::SendMessageRequest {
        session_id: SESSION.into(),
        chat_id: room.clone(),
        text: "look at this".into(),
        client_message_id: "img-1".into(),
        attachments: files,
        ..Default::default()
    };
    let upload_of = |name: &str| pb::AttachmentUpload {
        file_name: name.into(),
        mime_type: String::new(),
        data: picture.clone(),
    };
    // One file per Matrix message.
    let error = client
        .send_message(pb::SendMessageRequest {
            client_message_id: "img-2".into(),
            ..request(vec![upload_of("a.png"), upload_of("b.png")])
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");

    let sent = client
        .send_message(request(vec![upload_of("shot.png")]))
        .await
        .expect("SendMessage")
        .into_inner();
    let message = sent.message.expect("message");
    assert_eq!(message.status, pb::MessageStatus::Sent as i32);
    assert_eq!(message.kind, pb::MessageKind::Media as i32);
    let file = &message.attachments[0];
    assert_eq!(
        (file.file_name.as_str(), file.mime_type.as_str()),
        ("shot.png", "image/png")
    );
    assert!(file.stored);
    assert_eq!(file.sha256, hex_sha256(&picture));
    // A retry is the same message, posted once.
    let again = client
        .send_message(request(vec![upload_of("shot.png")]))
        .await
        .expect("retry")
        .into_inner();
    assert!(again.duplicate);

    // Bob sees one m.image with the caption, and its bytes are the file's.
    let images: Vec<Value> = bob
        .messages(&room)
        .await
        .into_iter()
        .filter(|e| e["content"]["msgtype"] == "m.image")
        .collect();
    assert_eq!(images.len(), 1, "{images:?}");
    let content = &images[0]["content"];
    assert_eq!(content["body"], "look at this");
    assert_eq!(content["filename"], "shot.png");
    assert_eq!(content["info"]["mimetype"], "image/png");
    assert_eq!(
        images[0]["event_id"].as_str(),
        Some(message.provider_message_id.as_str())
    );
    let bytes = download(&bob, content["url"].as_str().expect("url")).await;
    assert_eq!(bytes, picture);

    // The echo through /sync settles the sent message rather than storing a second one.
    wait_up(&client).await;
    bob.post(&room, "after the image").await;
    eventually("bob's later message to be stored", || {
        let mut client = client.clone();
        let room = room.clone();
        async move {
            all_messages(&mut client, SESSION, &room)
                .await
                .iter()
                .any(|m| m.text == "after the image")
        }
    })
    .await;
    let stored = all_messages(&mut client, SESSION, &room).await;
    let media: Vec<&pb::Message> = stored
        .iter()
        .filter(|m| m.kind == pb::MessageKind::Media as i32)
        .collect();
    assert_eq!(media.len(), 1, "{stored:?}");
    assert_eq!(media[0].attachments, message.attachments);
}

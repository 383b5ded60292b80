//! Matrix room members (`m.room.member`) as contacts and participants, against a real Synapse
//! (`scripts/synapse`), on SQLite and PostgreSQL: in the SyncChats backfill and in the live
//! `/sync` loop. Needs `CHATSYNC_TEST_SYNAPSE_DIR`, like the `matrix` tests.

use crate::common::synapse::{Homeserver, MatrixUser};
use crate::common::{
    Backend, HANG_GUARD, TestApp, eventually, on_both_backends, session, shared_homeserver,
    sync_frames, sync_status,
};
use chatsync::grpc::pb;
use pb::chat_sync_service_client::ChatSyncServiceClient;
use pb::subscribe_messages_response::Event;
use tonic::transport::Channel;

on_both_backends!(
    backfill_lists_members_who_joined_and_left,
    a_member_joining_and_leaving_live_is_a_participants_change,
);

const SESSION: &str = "mx";

async fn start(
    backend: &Backend,
    hs: &Homeserver,
    user: &MatrixUser,
) -> (TestApp, ChatSyncServiceClient<Channel>) {
    let token_file = backend.dir.path().join("mx.token");
    std::fs::write(&token_file, format!("{}\n", user.token)).expect("token file");
    let config = session(
        SESSION,
        "matrix",
        serde_json::json!({
            "homeserver": hs.url, "user_id": user.user_id, "access_token_file": token_file,
        }),
    );
    let app = TestApp::spawn(backend, vec![config]).await;
    let client = app.client().await;
    (app, client)
}

async fn participants(
    client: &mut ChatSyncServiceClient<Channel>,
    room: &str,
) -> Vec<pb::Participant> {
    client
        .list_participants(pb::ListParticipantsRequest {
            session_id: SESSION.into(),
            chat_id: room.into(),
            after_seq: 0,
            limit: 1000,
        })
        .await
        .expect("ListParticipants")
        .into_inner()
        .participants
}

fn find<'a>(participants: &'a [pb::Participant], user: &MatrixUser) -> &'a pb::Participant {
    participants
        .iter()
        .find(|p| p.contact_id == user.user_id)
        .unwrap_or_else(|| panic!("{} is a participant: {participants:?}", user.user_id))
}

async fn backfill_lists_members_who_joined_and_left(backend: Backend) {
    let Some(hs) = shared_homeserver() else {
        return;
    };
    let me = hs.register("me").await;
    let bob = hs.register("bob").await;
    let carol = hs.register("carol").await;
    let room = me.create_room(Some("Members"), &[&bob, &carol]).await;
    bob.post(&room, "hello").await;
    carol.leave(&room).await;

    let (_app, mut client) = start(&backend, &hs, &me).await;
    sync_frames(&mut client, SESSION, Some(0)).await;
    let listed = participants(&mut client, &room).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    for user in [&me, &bob] {
        let member = find(&listed, user);
        assert!(
            member.joined_at.is_some() && member.left_at.is_none(),
            "{member:?}"
        );
    }
    let gone = find(&listed, &carol);
    let (joined, left) = (
        gone.joined_at.expect("carol joined"),
        gone.left_at.expect("carol left"),
    );
    assert!(
        (left.seconds, left.nanos) >= (joined.seconds, joined.nanos),
        "{gone:?}"
    );
    let contacts = client
        .list_contacts(pb::ListContactsRequest {
            session_id: SESSION.into(),
            after_seq: 0,
            limit: 0,
        })
        .await
        .expect("ListContacts")
        .into_inner()
        .contacts;
    for user in [&me, &bob, &carol] {
        let contact = contacts
            .iter()
            .find(|c| c.contact_id == user.user_id)
            .unwrap_or_else(|| panic!("{} is a contact: {contacts:?}", user.user_id));
        assert_eq!(contact.matrix_id, user.user_id);
        assert!(!contact.display_name.is_empty());
    }
    // A second backfill stores nothing new: one seq, the run's end.
    let head = sync_status(&client, SESSION).await.head_seq;
    sync_frames(&mut client, SESSION, Some(0)).await;
    assert_eq!(sync_status(&client, SESSION).await.head_seq, head + 1);
}

/// Reads live events until a `participants_changed` for `user` satisfies `done`.
async fn until_participant(
    stream: &mut tonic::Streaming<pb::SubscribeMessagesResponse>,
    user: &MatrixUser,
    done: impl Fn(&pb::Participant) -> bool,
) -> pb::Participant {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let event = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("the change arrives in time")
            .expect("stream ok")
            .expect("stream open");
        if let Some(Event::ParticipantsChanged(change)) = event.event
            && let Some(found) = change
                .participants
                .into_iter()
                .find(|p| p.contact_id == user.user_id && done(p))
        {
            return found;
        }
    }
}

async fn a_member_joining_and_leaving_live_is_a_participants_change(backend: Backend) {
    let Some(hs) = shared_homeserver() else {
        return;
    };
    let me = hs.register("me").await;
    let carol = hs.register("carol").await;
    let room = me.create_room(Some("Live members"), &[]).await;
    let (_app, mut client) = start(&backend, &hs, &me).await;
    // Live from here on (the first connection only takes a token); the backfill stores the
    // room and its members so far.
    eventually("the matrix source to be UP", || {
        let client = client.clone();
        async move {
            sync_status(&client, SESSION).await.source_state == pb::SourceState::Up as i32
        }
    })
    .await;
    sync_frames(&mut client, SESSION, Some(0)).await;
    let mut stream = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: SESSION.into(),
            chat_ids: vec![room.clone()],
            after_seq: Some(0),
        })
        .await
        .expect("SubscribeMessages")
        .into_inner();

    me.invite(&room, &carol).await;
    carol.join(&room).await;
    let joined = until_participant(&mut stream, &carol, |p| p.joined_at.is_some()).await;
    assert_eq!(joined.chat_id, room);
    assert!(joined.left_at.is_none(), "{joined:?}");

    carol.leave(&room).await;
    let left = until_participant(&mut stream, &carol, |p| p.left_at.is_some()).await;
    assert_eq!(left.joined_at, joined.joined_at);
    assert!(left.seq > joined.seq);

    let listed = participants(&mut client, &room).await;
    assert_eq!(find(&listed, &carol), &left);
    assert!(find(&listed, &me).joined_at.is_some());
}

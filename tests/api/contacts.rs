//! Contacts and participants (issue 11, part 3), through gRPC, on SQLite and PostgreSQL:
//! WhatsApp and Telegram exports written here, ListContacts / ListParticipants, re-syncs that
//! change nothing, and the `contact_updated` / `participants_changed` events replayed by seq.

use std::path::Path;

use crate::common::*;
use chatsync::grpc::pb;
use chatsync::grpc::pb::chat_sync_service_client::ChatSyncServiceClient;
use pb::subscribe_messages_response::Event;
use tonic::Code;
use tonic::transport::Channel;

on_both_backends!(
    whatsapp_senders_and_membership_notices_become_contacts_and_participants,
    telegram_senders_and_member_actions_become_contacts_and_participants,
    a_resync_changes_nothing_and_new_notices_arrive_live,
    changes_replay_in_seq_order_with_the_chat_filter,
    listings_page_by_seq_with_limit_one,
    a_nul_in_a_source_id_is_stored_as_a_replacement_character,
);

/// An English group chat (Android layout): an add of two, a sender, a join by link (a phone
/// number), a leave and a removal.
const TRIP: &str = "\
13/01/2023, 08:00 - Messages and calls are end-to-end encrypted. No one outside of this chat, not even WhatsApp, can read or listen to them.
13/01/2023, 08:01 - Ann created group \"Trip\"
13/01/2023, 08:02 - Ann added Bob and Cy
13/01/2023, 08:03 - Ann: Hello all
13/01/2023, 08:04 - +1 555 0100 joined using this group's invite link
13/01/2023, 08:05 - Bob: hi
13/01/2023, 08:06 - Cy left
13/01/2023, 08:07 - Ann removed Bob
";

/// A German group chat: an add, a sender, a leave.
const REISE: &str = "\
14.01.23, 09:00 - Anna hat Bernd hinzugefügt
14.01.23, 09:01 - Bernd: Hallo
14.01.23, 09:02 - Bernd hat die Gruppe verlassen
14.01.23, 09:03 - Anna: Schade
";

/// Unix seconds of a UTC wall-clock time.
fn at(date: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%d %H:%M")
        .expect("time")
        .and_utc()
        .timestamp()
}

fn write_whatsapp(dir: &Path) {
    std::fs::write(dir.join("WhatsApp Chat with Trip.txt"), TRIP).expect("write");
    std::fs::write(dir.join("WhatsApp Chat with Reise.txt"), REISE).expect("write");
}

async fn whatsapp_app(backend: &Backend) -> (TestApp, std::path::PathBuf) {
    let dir = backend.dir.path().join("wa");
    std::fs::create_dir_all(&dir).expect("dir");
    write_whatsapp(&dir);
    let app = TestApp::spawn(backend, vec![whatsapp_session("wa", &dir)]).await;
    (app, dir)
}

async fn contacts_page(
    client: &mut ChatSyncServiceClient<Channel>,
    session_id: &str,
    after_seq: u64,
    limit: u32,
) -> pb::ListContactsResponse {
    client
        .list_contacts(pb::ListContactsRequest {
            session_id: session_id.into(),
            after_seq,
            limit,
        })
        .await
        .expect("ListContacts")
        .into_inner()
}

async fn participants_page(
    client: &mut ChatSyncServiceClient<Channel>,
    session_id: &str,
    chat_id: &str,
    after_seq: u64,
    limit: u32,
) -> Result<pb::ListParticipantsResponse, tonic::Status> {
    client
        .list_participants(pb::ListParticipantsRequest {
            session_id: session_id.into(),
            chat_id: chat_id.into(),
            after_seq,
            limit,
        })
        .await
        .map(|r| r.into_inner())
}

/// Contacts as (display name, phone, matrix id), in seq order.
fn contact_rows(contacts: &[pb::Contact]) -> Vec<(String, String, String)> {
    contacts
        .iter()
        .map(|c| (c.display_name.clone(), c.phone.clone(), c.matrix_id.clone()))
        .collect()
}

/// Participants as (contact's display name, joined at, left at) in Unix seconds, in seq order.
fn participant_rows(
    participants: &[pb::Participant],
    contacts: &[pb::Contact],
) -> Vec<(String, Option<i64>, Option<i64>)> {
    participants
        .iter()
        .map(|p| {
            let name = contacts
                .iter()
                .find(|c| c.contact_id == p.contact_id)
                .map(|c| c.display_name.clone())
                .unwrap_or_else(|| format!("unknown contact {}", p.contact_id));
            (
                name,
                p.joined_at.as_ref().map(|t| t.seconds),
                p.left_at.as_ref().map(|t| t.seconds),
            )
        })
        .collect()
}

fn rows(
    expected: &[(&str, Option<&str>, Option<&str>)],
) -> Vec<(String, Option<i64>, Option<i64>)> {
    expected
        .iter()
        .map(|(name, joined, left)| (name.to_string(), joined.map(at), left.map(at)))
        .collect()
}

async fn chat_id_named(
    client: &mut ChatSyncServiceClient<Channel>,
    session: &str,
    name: &str,
) -> String {
    all_chats(client, session)
        .await
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("chat {name} is stored"))
        .chat_id
}

async fn whatsapp_senders_and_membership_notices_become_contacts_and_participants(
    backend: Backend,
) {
    let (app, _dir) = whatsapp_app(&backend).await;
    let mut client = app.client().await;
    sync_frames(&mut client, "wa", Some(0)).await;

    let contacts = contacts_page(&mut client, "wa", 0, 1000).await;
    assert!(!contacts.has_more);
    let none = || String::new();
    assert_eq!(
        contact_rows(&contacts.contacts),
        vec![
            ("Anna".to_string(), none(), none()),
            ("Bernd".to_string(), none(), none()),
            ("Ann".to_string(), none(), none()),
            ("Bob".to_string(), none(), none()),
            ("Cy".to_string(), none(), none()),
            ("+1 555 0100".to_string(), "+1 555 0100".to_string(), none()),
        ]
    );
    let ids: Vec<&str> = contacts
        .contacts
        .iter()
        .map(|c| c.contact_id.as_str())
        .collect();
    assert_eq!(ids[5], "wa:phone:+15550100");
    assert!(
        ids[..5].iter().all(|id| id.starts_with("wa:name:")),
        "{ids:?}"
    );
    let seqs: Vec<u64> = contacts.contacts.iter().map(|c| c.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(contacts.next_seq, *seqs.last().expect("contacts"));

    let trip = chat_id_named(&mut client, "wa", "Trip").await;
    let reise = chat_id_named(&mut client, "wa", "Reise").await;
    let trip_people = participants_page(&mut client, "wa", &trip, 0, 1000)
        .await
        .expect("ListParticipants");
    assert!(trip_people.participants.iter().all(|p| p.chat_id == trip));
    assert_eq!(
        participant_rows(&trip_people.participants, &contacts.contacts),
        rows(&[
            ("Ann", None, None),
            ("Bob", Some("2023-01-13 08:02"), Some("2023-01-13 08:07")),
            ("Cy", Some("2023-01-13 08:02"), Some("2023-01-13 08:06")),
            ("+1 555 0100", Some("2023-01-13 08:04"), None),
        ])
    );
    let reise_people = participants_page(&mut client, "wa", &reise, 0, 1000)
        .await
        .expect("ListParticipants");
    assert_eq!(
        participant_rows(&reise_people.participants, &contacts.contacts),
        rows(&[
            ("Anna", None, None),
            ("Bernd", Some("2023-01-14 09:00"), Some("2023-01-14 09:02")),
        ])
    );
    // Without a chat: both chats' participants, in seq order.
    let everyone = participants_page(&mut client, "wa", "", 0, 1000)
        .await
        .expect("ListParticipants");
    assert_eq!(everyone.participants.len(), 6);
    let seqs: Vec<u64> = everyone.participants.iter().map(|p| p.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // An unknown chat is NOT_FOUND, like ListMessages.
    let unknown = participants_page(&mut client, "wa", "no-such-chat", 0, 10).await;
    assert_eq!(unknown.expect_err("unknown chat").code(), Code::NotFound);
    // An unknown session too.
    let status = client
        .list_contacts(pb::ListContactsRequest {
            session_id: "nope".into(),
            after_seq: 0,
            limit: 0,
        })
        .await
        .expect_err("unknown session");
    assert_eq!(status.code(), Code::NotFound);
}

const TELEGRAM: &str = r#"{"name": "Crew", "type": "private_group", "id": 77, "messages": [
 {"id": 1, "type": "service", "date_unixtime": "1000", "actor": "Alice", "actor_id": "user1",
  "action": "create_group", "title": "Crew", "members": ["Alice", "Bob"]},
 {"id": 2, "type": "message", "date_unixtime": "1100", "from": "Bob", "from_id": "user2", "text": "hi"},
 {"id": 3, "type": "service", "date_unixtime": "1200", "actor": "Alice", "actor_id": "user1",
  "action": "invite_members", "members": ["Carol", null]},
 {"id": 4, "type": "message", "date_unixtime": "1300", "from": "Carol", "from_id": "user3", "text": "hello"},
 {"id": 5, "type": "service", "date_unixtime": "1400", "actor": "Alice", "actor_id": "user1",
  "action": "remove_members", "members": ["Bob"]},
 {"id": 6, "type": "service", "date_unixtime": "1500", "actor": "Dan", "actor_id": "user4",
  "action": "join_group_by_link", "inviter": "Alice"}
]}"#;

async fn telegram_senders_and_member_actions_become_contacts_and_participants(backend: Backend) {
    let dir = backend.dir.path().join("tg");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("result.json"), TELEGRAM).expect("write");
    let app = TestApp::spawn(
        &backend,
        vec![session(
            "tg",
            "telegram-export",
            serde_json::json!({"path": dir}),
        )],
    )
    .await;
    let mut client = app.client().await;
    sync_frames(&mut client, "tg", Some(0)).await;
    let contacts = contacts_page(&mut client, "tg", 0, 100).await;
    let listed: Vec<(&str, &str)> = contacts
        .contacts
        .iter()
        .map(|c| (c.contact_id.as_str(), c.display_name.as_str()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("user1", "Alice"),
            ("user2", "Bob"),
            ("user3", "Carol"),
            ("user4", "Dan")
        ]
    );
    let participants = participants_page(&mut client, "tg", "tg-77", 0, 100)
        .await
        .expect("ListParticipants")
        .participants;
    let found: Vec<(&str, Option<i64>, Option<i64>)> = participants
        .iter()
        .map(|p| {
            (
                p.contact_id.as_str(),
                p.joined_at.as_ref().map(|t| t.seconds),
                p.left_at.as_ref().map(|t| t.seconds),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            ("user1", Some(1000), None),
            ("user2", Some(1000), Some(1400)),
            ("user3", Some(1200), None),
            ("user4", Some(1500), None),
        ]
    );
    // Telegram is read whole on every run: storing the same again takes no seq (only the
    // run's end takes one).
    let head = sync_status(&client, "tg").await.head_seq;
    sync_frames(&mut client, "tg", Some(0)).await;
    assert_eq!(sync_status(&client, "tg").await.head_seq, head + 1);
}

/// Reads events until `ready`, then (live) until one with seq >= `until`; returns the change
/// events (not `ready` or heartbeats).
async fn read_changes(
    stream: &mut tonic::Streaming<pb::SubscribeMessagesResponse>,
    until: u64,
) -> Vec<pb::SubscribeMessagesResponse> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    let mut ready = false;
    loop {
        let event = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("events arrive in time")
            .expect("stream item")
            .expect("stream still open");
        match &event.event {
            Some(Event::Ready(_)) => ready = true,
            Some(Event::Heartbeat(_)) => {}
            _ => events.push(event.clone()),
        }
        if ready && event.seq >= until {
            return events;
        }
    }
}

async fn subscribe(
    client: &mut ChatSyncServiceClient<Channel>,
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

async fn a_resync_changes_nothing_and_new_notices_arrive_live(backend: Backend) {
    let (app, dir) = whatsapp_app(&backend).await;
    let mut client = app.client().await;
    sync_frames(&mut client, "wa", Some(0)).await;
    let head = sync_status(&client, "wa").await.head_seq;
    let before = contacts_page(&mut client, "wa", 0, 1000).await;

    // The same export again: nothing new.
    let trip_path = dir.join("WhatsApp Chat with Trip.txt");
    sync_frames(&mut client, "wa", Some(0)).await;
    assert_eq!(
        sync_status(&client, "wa").await.head_seq,
        head + 1,
        "only the run's end"
    );
    assert_eq!(contacts_page(&mut client, "wa", 0, 1000).await, before);

    // A longer export, read again in full (its earlier people change nothing): one more
    // message from a known sender, a removal and a new member.
    let mut stream = subscribe(&mut client, "wa", &[], Some(head)).await;
    let longer = format!(
        "{TRIP}13/01/2023, 08:08 - Ann: bye Bob\n\
         13/01/2023, 08:09 - Ann removed +1 555 0100\n\
         13/01/2023, 08:10 - Ann added Dee\n"
    );
    std::fs::write(&trip_path, longer).expect("append");
    sync_frames(&mut client, "wa", Some(0)).await;
    let new_head = sync_status(&client, "wa").await.head_seq;
    // Three messages, one new contact (Dee), two participant changes (+1 555 0100 left, Dee
    // joined), and the end of each of the two runs since `head`.
    assert_eq!(new_head, head + 8);
    let events = read_changes(&mut stream, new_head).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, ((head + 1)..=new_head).collect::<Vec<_>>());
    let contacts: Vec<&pb::Contact> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::ContactUpdated(u)) => u.contact.as_ref(),
            _ => None,
        })
        .collect();
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].display_name, "Dee");
    let changed: Vec<(String, Option<i64>, Option<i64>)> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::ParticipantsChanged(c)) => Some(c),
            _ => None,
        })
        .flat_map(|c| c.participants.iter())
        .map(|p| {
            let name = if p.contact_id == "wa:phone:+15550100" {
                "+1 555 0100".to_string()
            } else if p.contact_id == contacts[0].contact_id {
                "Dee".to_string()
            } else {
                p.contact_id.clone()
            };
            (
                name,
                p.joined_at.as_ref().map(|t| t.seconds),
                p.left_at.as_ref().map(|t| t.seconds),
            )
        })
        .collect();
    assert_eq!(
        changed,
        rows(&[
            (
                "+1 555 0100",
                Some("2023-01-13 08:04"),
                Some("2023-01-13 08:09")
            ),
            ("Dee", Some("2023-01-13 08:10"), None),
        ])
    );
}

async fn changes_replay_in_seq_order_with_the_chat_filter(backend: Backend) {
    let (app, _dir) = whatsapp_app(&backend).await;
    let mut client = app.client().await;
    sync_frames(&mut client, "wa", Some(0)).await;
    let head = sync_status(&client, "wa").await.head_seq;
    let trip = chat_id_named(&mut client, "wa", "Trip").await;

    // Unfiltered: every seq once, in order; six contacts and six participants.
    let mut all = subscribe(&mut client, "wa", &[], Some(0)).await;
    let events = read_changes(&mut all, head).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>());
    let count = |events: &[pb::SubscribeMessagesResponse], contact: bool| {
        events
            .iter()
            .filter(|e| match &e.event {
                Some(Event::ContactUpdated(_)) => contact,
                Some(Event::ParticipantsChanged(_)) => !contact,
                _ => false,
            })
            .count()
    };
    assert_eq!((count(&events, true), count(&events, false)), (6, 6));

    // Filtered to Trip: its participants only, but every contact (contacts pass any filter).
    let mut filtered = subscribe(&mut client, "wa", &[&trip], Some(0)).await;
    let events = read_changes(&mut filtered, head).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!((count(&events, true), count(&events, false)), (6, 4));
    for event in &events {
        match &event.event {
            Some(Event::ParticipantsChanged(c)) => {
                assert_eq!(c.chat_id, trip);
                assert!(c.participants.iter().all(|p| p.chat_id == trip));
            }
            Some(Event::MessageCreated(m)) => assert_eq!(m.chat_id, trip),
            Some(Event::ChatUpdated(c)) => assert_eq!(c.chat_id, trip),
            Some(Event::ContactUpdated(u)) => assert!(u.contact.is_some()),
            // A run's end belongs to no chat and passes the filter.
            Some(Event::SyncRunFinished(run)) => {
                assert_eq!(run.state, pb::SyncState::Succeeded as i32)
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    // The replayed participants are those ListParticipants gives, at their seqs.
    let listed = participants_page(&mut client, "wa", &trip, 0, 1000)
        .await
        .expect("ListParticipants")
        .participants;
    let replayed: Vec<pb::Participant> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::ParticipantsChanged(c)) => Some(c.participants.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(replayed, listed);
}

async fn listings_page_by_seq_with_limit_one(backend: Backend) {
    let (app, _dir) = whatsapp_app(&backend).await;
    let mut client = app.client().await;
    sync_frames(&mut client, "wa", Some(0)).await;
    let full = contacts_page(&mut client, "wa", 0, 0).await.contacts;
    assert_eq!(full.len(), 6);
    let mut paged = Vec::new();
    let mut after_seq = 0;
    loop {
        let page = contacts_page(&mut client, "wa", after_seq, 1).await;
        assert!(page.contacts.len() <= 1);
        paged.extend(page.contacts);
        if !page.has_more {
            assert_eq!(page.next_seq, full.last().expect("contacts").seq);
            break;
        }
        after_seq = page.next_seq;
    }
    assert_eq!(paged, full);

    let trip = chat_id_named(&mut client, "wa", "Trip").await;
    let full = participants_page(&mut client, "wa", &trip, 0, 0)
        .await
        .expect("ListParticipants")
        .participants;
    let mut paged = Vec::new();
    let mut after_seq = 0;
    let mut pages = 0;
    loop {
        let page = participants_page(&mut client, "wa", &trip, after_seq, 1)
            .await
            .expect("ListParticipants");
        pages += 1;
        paged.extend(page.participants);
        after_seq = page.next_seq;
        if !page.has_more {
            break;
        }
    }
    assert_eq!(paged, full);
    assert_eq!(pages, 4);
    // Past the end: an empty page that keeps the cursor.
    let end = participants_page(&mut client, "wa", &trip, after_seq, 1)
        .await
        .expect("ListParticipants");
    assert!(end.participants.is_empty() && !end.has_more);
    assert_eq!(end.next_seq, after_seq);
    // Limits are checked like the other listings.
    let status = client
        .list_contacts(pb::ListContactsRequest {
            session_id: "wa".into(),
            after_seq: 0,
            limit: 1001,
        })
        .await
        .expect_err("limit over the maximum");
    assert_eq!(status.code(), Code::InvalidArgument);
}

/// PostgreSQL text cannot hold NUL: a Telegram id with one is stored with U+FFFD on both
/// backends, and the chat's messages are stored with it (nothing fails).
async fn a_nul_in_a_source_id_is_stored_as_a_replacement_character(backend: Backend) {
    let dir = backend.dir.path().join("tg");
    std::fs::create_dir_all(&dir).expect("dir");
    let export = r#"{"name": "Nul", "type": "private_group", "id": 78, "messages": [
 {"id": 1, "type": "message", "date_unixtime": "1100", "from": "Bo\u0000b", "from_id": "user\u00002", "text": "hi"}
]}"#;
    std::fs::write(dir.join("result.json"), export).expect("write");
    let app = TestApp::spawn(
        &backend,
        vec![session(
            "tg",
            "telegram-export",
            serde_json::json!({"path": dir}),
        )],
    )
    .await;
    let mut client = app.client().await;
    let frames = sync_frames(&mut client, "tg", Some(0)).await;
    assert_eq!(frames.last().map(stage), Some(SyncStage::Completed));
    assert_eq!(frames.last().map(|f| f.total_messages_synced), Some(1));
    let contacts = contacts_page(&mut client, "tg", 0, 100).await.contacts;
    let listed: Vec<(&str, &str)> = contacts
        .iter()
        .map(|c| (c.contact_id.as_str(), c.display_name.as_str()))
        .collect();
    assert_eq!(listed, vec![("user\u{FFFD}2", "Bo\u{FFFD}b")]);
    let participants = participants_page(&mut client, "tg", "tg-78", 0, 100)
        .await
        .expect("ListParticipants")
        .participants;
    assert_eq!(participants.len(), 1);
    assert_eq!(participants[0].contact_id, "user\u{FFFD}2");
}

//! Group commit through gRPC, on SQLite and PostgreSQL: concurrent SendMessage and
//! UpdateMessageStatus calls of one session may share a write transaction, however the server
//! happens to group them. Each test holds for any grouping (one call a transaction, or all in
//! one), so none depends on timing.

use std::collections::{HashMap, HashSet};

use crate::common::*;
use chatsync::grpc::pb;
use pb::subscribe_messages_response::Event;
use tonic::Code;

on_both_backends!(
    concurrent_sends_and_receipts_give_gapless_seqs_and_each_caller_its_own_answer,
    idempotent_retries_racing_each_other_return_one_message,
    a_failing_write_among_concurrent_ones_fails_only_its_own_call,
);

type Client = pb::chat_sync_service_client::ChatSyncServiceClient<tonic::transport::Channel>;

async fn receipt(
    client: &mut Client,
    session_id: &str,
    message_id: u64,
    status: pb::MessageStatus,
) -> Result<pb::UpdateMessageStatusResponse, tonic::Status> {
    client
        .update_message_status(pb::UpdateMessageStatusRequest {
            session_id: session_id.into(),
            message_id,
            status: status as i32,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// Every change of the session, replayed from seq 0 up to its head.
async fn replay(
    client: &mut Client,
    session_id: &str,
) -> (u64, Vec<pb::SubscribeMessagesResponse>) {
    let head = sync_status(client, session_id).await.head_seq;
    let mut stream = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            session_id: session_id.into(),
            chat_ids: Vec::new(),
            after_seq: Some(0),
        })
        .await
        .expect("SubscribeMessages")
        .into_inner();
    let mut events = Vec::new();
    loop {
        let event = stream
            .message()
            .await
            .expect("stream ok")
            .expect("stream open");
        match event.event {
            Some(Event::Ready(_)) => break,
            Some(Event::Heartbeat(_)) => {}
            _ => events.push(event),
        }
    }
    (head, events)
}

/// Sends `n` messages one after another into `chat`, keys `{prefix}{i}`; returns their ids.
async fn send_sequentially(client: &mut Client, chat: &str, prefix: &str, n: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in 0..n {
        let sent = send(
            client,
            "g",
            chat,
            &format!("{prefix} text {i}"),
            &format!("{prefix}{i}"),
        )
        .await
        .expect("send");
        ids.push(sent.message.expect("message").id);
    }
    ids
}

async fn concurrent_sends_and_receipts_give_gapless_seqs_and_each_caller_its_own_answer(
    backend: Backend,
) {
    let app = TestApp::spawn(&backend, vec![local_session("g")]).await;
    let mut client = app.client().await;
    let earlier = send_sequentially(&mut client, "earlier", "e", 24).await;

    const SENDERS: usize = 48;
    const PER_SENDER: usize = 4;
    let mut sends = Vec::new();
    for t in 0..SENDERS {
        let mut client = client.clone();
        sends.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for j in 0..PER_SENDER {
                let (chat, text, key) = (
                    format!("room{}", t % 4),
                    format!("sender {t} message {j}"),
                    format!("s{t}-{j}"),
                );
                let answer = send(&mut client, "g", &chat, &text, &key)
                    .await
                    .expect("send");
                answers.push((chat, text, key, answer));
            }
            answers
        }));
    }
    let mut receipts = Vec::new();
    for &id in &earlier {
        let mut client = client.clone();
        receipts.push(tokio::spawn(async move {
            let delivered = receipt(&mut client, "g", id, pb::MessageStatus::Delivered)
                .await
                .expect("delivered");
            let read = receipt(&mut client, "g", id, pb::MessageStatus::Read)
                .await
                .expect("read");
            (id, delivered, read)
        }));
    }

    let mut seqs = HashSet::new();
    let mut ids = HashSet::new();
    for task in sends {
        for (chat, text, key, answer) in task.await.expect("sender") {
            assert!(!answer.duplicate, "{key} is a first send");
            let message = answer.message.expect("message");
            assert_eq!(message.chat_id, chat, "{key}: its own chat");
            assert_eq!(message.text, text, "{key}: its own text");
            assert_eq!(message.client_message_id, key, "{key}: its own key");
            assert!(
                seqs.insert(message.seq),
                "{key}: seq {} is its own",
                message.seq
            );
            assert!(
                ids.insert(message.id),
                "{key}: id {} is its own",
                message.id
            );
        }
    }
    for task in receipts {
        let (id, delivered, read) = task.await.expect("receipts");
        for (answer, status) in [
            (&delivered, pb::MessageStatus::Delivered),
            (&read, pb::MessageStatus::Read),
        ] {
            assert!(answer.changed, "message {id}: {status:?} is ahead");
            let message = answer.message.as_ref().expect("message");
            assert_eq!(message.id, id, "the answer is about the message asked for");
            assert_eq!(message.status, status as i32);
        }
    }

    let (head, events) = replay(&mut client, "g").await;
    let replayed: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        replayed,
        (1..=head).collect::<Vec<_>>(),
        "every seq up to the head, once, in order"
    );
    let created = events
        .iter()
        .filter(|e| matches!(e.event, Some(Event::MessageCreated(_))))
        .count();
    let statuses: Vec<(u64, i32)> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::StatusUpdated(s)) => Some((s.message_id, s.status)),
            _ => None,
        })
        .collect();
    assert_eq!(created, earlier.len() + SENDERS * PER_SENDER);
    assert_eq!(statuses.len(), 2 * earlier.len());
    // Each message's DELIVERED is logged before its READ.
    for &id in &earlier {
        let order: Vec<i32> = statuses
            .iter()
            .filter(|(m, _)| *m == id)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(
            order,
            vec![
                pb::MessageStatus::Delivered as i32,
                pb::MessageStatus::Read as i32
            ]
        );
    }
    // Five chats (earlier, room0..room3), one seq each.
    assert_eq!(head as usize, 5 + created + statuses.len());
}

async fn idempotent_retries_racing_each_other_return_one_message(backend: Backend) {
    let app = TestApp::spawn(&backend, vec![local_session("g")]).await;
    let client = app.client().await;
    const KEYS: usize = 8;
    const RETRIES: usize = 6;
    let mut tasks = Vec::new();
    for k in 0..KEYS {
        for _ in 0..RETRIES {
            let mut client = client.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("retry-{k}");
                let answer = send(&mut client, "g", "room", &format!("once {k}"), &key)
                    .await
                    .expect("send");
                (key, answer)
            }));
        }
    }
    let mut by_key: HashMap<String, Vec<pb::SendMessageResponse>> = HashMap::new();
    for task in tasks {
        let (key, answer) = task.await.expect("sender");
        by_key.entry(key).or_default().push(answer);
    }
    for (key, answers) in &by_key {
        let ids: HashSet<u64> = answers
            .iter()
            .map(|a| a.message.as_ref().expect("message").id)
            .collect();
        assert_eq!(ids.len(), 1, "{key}: every retry answers the same message");
        let firsts = answers.iter().filter(|a| !a.duplicate).count();
        assert_eq!(firsts, 1, "{key}: exactly one call stored it");
    }
    let mut client = client.clone();
    let stored = all_messages(&mut client, "g", "room").await;
    assert_eq!(stored.len(), KEYS, "one message per key");
    let (head, _) = replay(&mut client, "g").await;
    assert_eq!(head as usize, 1 + KEYS, "one chat and one seq per key");
}

async fn a_failing_write_among_concurrent_ones_fails_only_its_own_call(backend: Backend) {
    let app = TestApp::spawn(&backend, vec![local_session("g")]).await;
    let mut client = app.client().await;
    let earlier = send_sequentially(&mut client, "earlier", "e", 16).await;
    let unknown = earlier.iter().max().copied().unwrap_or_default() + 1_000_000;

    let mut tasks = Vec::new();
    for (i, &id) in earlier.iter().enumerate() {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            // A good send, a good receipt, a receipt for a message that does not exist, and
            // an idempotency key reused for another text, all at once.
            let (mut c1, mut c2, mut c3, mut c4) = (
                client.clone(),
                client.clone(),
                client.clone(),
                client.clone(),
            );
            let (good_text, good_key, reused_key) =
                (format!("good {i}"), format!("ok{i}"), format!("e{i}"));
            let good = send(&mut c1, "g", "room", &good_text, &good_key);
            let read = receipt(&mut c2, "g", id, pb::MessageStatus::Read);
            let missing = receipt(&mut c3, "g", unknown + i as u64, pb::MessageStatus::Read);
            let reused = send(&mut c4, "g", "earlier", "another text", &reused_key);
            tokio::join!(good, read, missing, reused)
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let (good, read, missing, reused) = task.await.expect("task");
        let good = good.expect("the good send succeeds");
        assert_eq!(
            good.message.map(|m| m.text),
            Some(format!("good {i}")),
            "the good send's own message"
        );
        let read = read.expect("the good receipt succeeds");
        assert!(read.changed);
        assert_eq!(read.message.map(|m| m.id), Some(earlier[i]));
        assert_eq!(missing.expect_err("unknown message").code(), Code::NotFound);
        assert_eq!(
            reused.expect_err("key reused for another text").code(),
            Code::InvalidArgument
        );
    }
    let (head, events) = replay(&mut client, "g").await;
    let replayed: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        replayed,
        (1..=head).collect::<Vec<_>>(),
        "no gap left by a failure"
    );
    // Two chats, 16 earlier messages, 16 good sends, 16 READs: the failures took no seq.
    assert_eq!(head, 2 + 16 + 16 + 16);
}

//! SearchMessages (issue 11, part 5), through gRPC, on SQLite and PostgreSQL: words in several
//! scripts (Latin with diacritics, Arabic, Cyrillic, a CJK substring), ranking, the chat and
//! time filters, paging, edits and deletions reflected at once, and bad input.
//!
//! Messages come from SendMessage on a `local` session, and from a live source registered by
//! this file ([`ScriptedSource`]): the test hands it batches of [`LiveEvent`]s, which go
//! through the same sink as a Matrix source's (`LiveStore`: imports, edits, redactions).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::common::*;
use async_trait::async_trait;
use chatsync::config::SessionConfig;
use chatsync::grpc::pb;
use chatsync::model::{MessageKind, MessageStatus, NewMessage};
use chatsync::sources::{
    Capabilities, ChatHistory, LiveEvent, LiveSink, Source, SourceChat, SourceContext, SourceError,
    SourceState,
};
use pb::chat_sync_service_client::ChatSyncServiceClient;
use tokio::sync::{mpsc, oneshot};
use tonic::Code;
use tonic::transport::Channel;

on_both_backends!(
    words_are_found_in_several_scripts_with_diacritics_folded,
    more_occurrences_rank_higher_and_filters_apply,
    paging_returns_every_hit_exactly_once,
    edits_and_deletions_are_reflected_at_once,
    bad_requests_are_invalid_arguments,
);

// ---------------------------------------------------------------------------------------------
// A live source the test scripts.

const SCRIPTED: &str = "test-search-scripted";

type Batch = (Vec<LiveEvent>, oneshot::Sender<()>);

/// The receiving ends of the scripts, by session id, taken by the session's live loop.
static SCRIPTS: Mutex<Option<HashMap<String, mpsc::UnboundedReceiver<Batch>>>> = Mutex::new(None);

struct ScriptedSource {
    session_id: String,
}

impl ScriptedSource {
    fn build(config: &SessionConfig, _: &SourceContext) -> Result<Arc<dyn Source>, String> {
        Ok(Arc::new(Self {
            session_id: config.id.clone(),
        }))
    }
}

#[async_trait]
impl Source for ScriptedSource {
    fn kind(&self) -> &'static str {
        SCRIPTED
    }

    async fn list_chats(&self) -> Result<Vec<SourceChat>, SourceError> {
        Ok(Vec::new())
    }

    async fn fetch_history(
        &self,
        _chat: &SourceChat,
        _limit: Option<usize>,
    ) -> Result<ChatHistory, SourceError> {
        Ok(ChatHistory {
            messages: Vec::new(),
            people: Default::default(),
            unplaced_lines: 0,
            content_sha256: None,
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            live: true,
            ..Capabilities::READ_ONLY
        }
    }

    async fn run_live(&self, sink: Arc<dyn LiveSink>) {
        let receiver = SCRIPTS
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|scripts| scripts.remove(&self.session_id));
        let Some(mut receiver) = receiver else {
            return;
        };
        sink.set_state(SourceState::Up);
        let stopped = sink.stopped();
        let mut n = 0;
        loop {
            let batch = tokio::select! {
                batch = receiver.recv() => batch,
                _ = stopped.cancelled() => None,
            };
            let Some((events, done)) = batch else { return };
            n += 1;
            sink.apply(events, &format!("c{n}"))
                .await
                .expect("apply a scripted batch");
            let _ = done.send(());
        }
    }
}

/// A server with one scripted session, and the way to feed it.
struct Scripted {
    app: TestApp,
    session_id: String,
    feed: mpsc::UnboundedSender<Batch>,
}

impl Scripted {
    async fn spawn(backend: &Backend) -> Self {
        chatsync::sources::register(SCRIPTED, ScriptedSource::build).expect("register");
        let session_id = format!("s{}", uuid::Uuid::new_v4().simple());
        let (feed, receiver) = mpsc::unbounded_channel();
        SCRIPTS
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .insert(session_id.clone(), receiver);
        let app = TestApp::spawn(
            backend,
            vec![session(&session_id, SCRIPTED, serde_json::json!({}))],
        )
        .await;
        Self {
            app,
            session_id,
            feed,
        }
    }

    /// Applies a batch through the live sink; returns once it is stored.
    async fn apply(&self, events: Vec<LiveEvent>) {
        let (done, stored) = oneshot::channel();
        self.feed.send((events, done)).expect("live loop runs");
        stored.await.expect("batch applied");
    }

    /// Stores messages `(chat, provider id, text, sent_at_ms)`, creating their chats.
    async fn messages(&self, messages: &[(&str, &str, &str, i64)]) {
        let chats: HashSet<&str> = messages.iter().map(|m| m.0).collect();
        let mut events: Vec<LiveEvent> = chats
            .into_iter()
            .map(|chat| LiveEvent::Chat {
                chat_id: chat.into(),
                name: chat.into(),
            })
            .collect();
        events.extend(
            messages
                .iter()
                .map(|(chat, id, text, at)| LiveEvent::Message {
                    chat_id: (*chat).into(),
                    message: NewMessage {
                        provider_message_id: (*id).into(),
                        client_message_id: None,
                        sender: "Ana".into(),
                        text: (*text).into(),
                        kind: MessageKind::Text,
                        status: MessageStatus::Sent,
                        from_me: false,
                        sent_at_ms: *at,
                        attachments: Vec::new(),
                        ..NewMessage::default()
                    },
                }),
        );
        self.apply(events).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A search request for `query` with everything else unset.
fn request(session_id: &str, query: &str) -> pb::SearchMessagesRequest {
    pb::SearchMessagesRequest {
        session_id: session_id.into(),
        query: query.into(),
        ..Default::default()
    }
}

async fn search(
    client: &mut ChatSyncServiceClient<Channel>,
    request: pb::SearchMessagesRequest,
) -> Result<pb::SearchMessagesResponse, tonic::Status> {
    client
        .search_messages(request)
        .await
        .map(|r| r.into_inner())
}

/// The provider ids of a response's hits, in order.
fn ids(response: &pb::SearchMessagesResponse) -> Vec<String> {
    response
        .hits
        .iter()
        .map(|hit| {
            hit.message
                .as_ref()
                .expect("message")
                .provider_message_id
                .clone()
        })
        .collect()
}

/// The texts of a response's hits, in order.
fn texts(response: &pb::SearchMessagesResponse) -> Vec<String> {
    response
        .hits
        .iter()
        .map(|hit| hit.message.as_ref().expect("message").text.clone())
        .collect()
}

/// A snippet with its marks as `[` `]`.
fn marked(snippet: &str) -> String {
    snippet.replace('\u{2}', "[").replace('\u{3}', "]")
}

fn at(ms: i64) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;

// ---------------------------------------------------------------------------------------------
// Tests.

async fn words_are_found_in_several_scripts_with_diacritics_folded(backend: Backend) {
    let app = TestApp::spawn(&backend, vec![local_session("l")]).await;
    let mut client = app.client().await;
    let texts_sent = [
        "On se voit au Café de Flore ?",
        "مرحبا بالعالم الجميل",
        "Привет, как дела?",
        "私は東京タワーに行きました",
        "Nothing to see here",
        "Meeting at 東京駅 today",
        "Docs at example.com, mail bob@x.org, file IMG-20240102-WA0001.jpg (v3.14)",
    ];
    for (i, text) in texts_sent.iter().enumerate() {
        send(&mut client, "l", "chat", text, &format!("k{i}"))
            .await
            .expect("send");
    }
    let cases = [
        ("cafe", texts_sent[0], "[Café]"),
        ("CAFÉ flore", texts_sent[0], "[Café] de [Flore]"),
        ("بالعالم", texts_sent[1], "[بالعالم]"),
        ("привет", texts_sent[2], "[Привет]"),
        ("東京タワー", texts_sent[3], "[東京タワー]"),
        ("東京駅 MEETING", texts_sent[5], "[Meeting] at [東京駅]"),
        ("meeting", texts_sent[5], "[Meeting]"),
    ];
    for (query, expected, mark) in cases {
        let found = search(&mut client, request("l", query))
            .await
            .expect("search");
        assert_eq!(texts(&found), [expected], "query {query:?}");
        let snippet = marked(&found.hits[0].snippet);
        assert!(
            snippet.contains(mark),
            "query {query:?}: snippet {snippet:?}"
        );
        assert!(found.next_page_token.is_empty());
    }
    // Whole words, not prefixes; every term must match.
    let tokyo = search(&mut client, request("l", "東京"))
        .await
        .expect("search");
    let mut found = texts(&tokyo);
    found.sort();
    assert_eq!(found, [texts_sent[5], texts_sent[3]]);
    for query in ["caf", "cafe tokyo", "дела привет мир", "東京 nothing"] {
        let found = search(&mut client, request("l", query))
            .await
            .expect("search");
        assert!(
            found.hits.is_empty(),
            "query {query:?} found {:?}",
            texts(&found)
        );
    }
    // Host names, addresses, file names and decimals are split into words on both backends
    // (PostgreSQL's own parser keeps them whole).
    for query in [
        "example",
        "example.com",
        "bob",
        "x.org",
        "WA0001",
        "jpg",
        "14",
    ] {
        let found = search(&mut client, request("l", query))
            .await
            .expect("search");
        assert_eq!(texts(&found), [texts_sent[6]], "query {query:?}");
    }
    let nothing = search(&mut client, request("l", "nothing"))
        .await
        .expect("search");
    assert_eq!(texts(&nothing), [texts_sent[4]]);
}

async fn more_occurrences_rank_higher_and_filters_apply(backend: Backend) {
    let s = Scripted::spawn(&backend).await;
    let mut client = s.app.client().await;
    s.messages(&[
        ("a", "once", "the harbour is quiet today, see you later", T0),
        ("a", "twice", "harbour then harbour again", T0 + MINUTE),
        ("b", "other-chat", "harbour in chat b", T0 + 2 * MINUTE),
        ("b", "late", "a late harbour", T0 + 3 * MINUTE),
        ("a", "unrelated", "nothing to do with it", T0 + 4 * MINUTE),
    ])
    .await;
    let all = search(&mut client, request(&s.session_id, "harbour"))
        .await
        .expect("search");
    let found = ids(&all);
    assert_eq!(found.len(), 4, "{found:?}");
    let rank = |id: &str| found.iter().position(|f| f == id).expect("found");
    assert!(rank("twice") < rank("once"), "{found:?}");
    let scores: Vec<f64> = all.hits.iter().map(|h| h.score).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert_eq!(
        marked(&all.hits[rank("twice")].snippet),
        "[harbour] then [harbour] again"
    );

    let mut in_a = request(&s.session_id, "harbour");
    in_a.chat_ids = vec!["a".into()];
    let mut in_a = ids(&search(&mut client, in_a).await.expect("search"));
    in_a.sort();
    assert_eq!(in_a, ["once", "twice"]);

    let mut window = request(&s.session_id, "harbour");
    window.sent_after = Some(at(T0 + MINUTE));
    window.sent_before = Some(at(T0 + 3 * MINUTE));
    let mut in_window = ids(&search(&mut client, window).await.expect("search"));
    in_window.sort();
    assert_eq!(in_window, ["other-chat", "twice"]);

    let mut both = request(&s.session_id, "harbour");
    both.chat_ids = vec!["b".into()];
    both.sent_after = Some(at(T0 + 3 * MINUTE));
    assert_eq!(
        ids(&search(&mut client, both).await.expect("search")),
        ["late"]
    );
}

async fn paging_returns_every_hit_exactly_once(backend: Backend) {
    let s = Scripted::spawn(&backend).await;
    let mut client = s.app.client().await;
    let messages: Vec<(String, String)> = (1..=5)
        .map(|i| {
            (
                format!("m{i}"),
                format!("{} lantern number {i}", "lantern ".repeat(i % 3)),
            )
        })
        .chain((1..=3).map(|i| (format!("x{i}"), format!("no match {i}"))))
        .collect();
    let rows: Vec<(&str, &str, &str, i64)> = messages
        .iter()
        .enumerate()
        .map(|(i, (id, text))| ("c", id.as_str(), text.as_str(), T0 + i as i64))
        .collect();
    s.messages(&rows).await;

    let mut seen = Vec::new();
    let mut page = request(&s.session_id, "lantern");
    page.limit = 2;
    let mut pages = 0;
    loop {
        let response = search(&mut client, page.clone()).await.expect("search");
        pages += 1;
        assert!(response.hits.len() <= 2);
        seen.extend(ids(&response));
        if response.next_page_token.is_empty() {
            break;
        }
        // A message created after the first page does not shift the later ones.
        if pages == 1 {
            s.messages(&[("c", "newer", "lantern lantern lantern lantern", T0 + 99)])
                .await;
        }
        page.page_token = response.next_page_token;
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["m1", "m2", "m3", "m4", "m5"],
        "pages gave {seen:?}"
    );
    // A fresh first page sees the newer message, first.
    let fresh = search(&mut client, request(&s.session_id, "lantern"))
        .await
        .expect("search");
    assert_eq!(fresh.hits.len(), 6);
    assert_eq!(ids(&fresh)[0], "newer");
}

async fn edits_and_deletions_are_reflected_at_once(backend: Backend) {
    let s = Scripted::spawn(&backend).await;
    let mut client = s.app.client().await;
    s.messages(&[
        ("c", "e", "meet at the old bridge", T0),
        ("c", "d", "the secret password is swordfish", T0 + 1),
        ("c", "k", "東京で会いましょう", T0 + 2),
    ])
    .await;
    let q = |text: &str| request(&s.session_id, text);
    assert_eq!(ids(&search(&mut client, q("bridge")).await.unwrap()), ["e"]);
    assert_eq!(
        ids(&search(&mut client, q("swordfish")).await.unwrap()),
        ["d"]
    );
    assert_eq!(
        ids(&search(&mut client, q("東京で会い")).await.unwrap()),
        ["k"]
    );

    s.apply(vec![
        LiveEvent::Edited {
            chat_id: "c".into(),
            provider_message_id: "e".into(),
            editor: "Ana".into(),
            text: "meet at the new station".into(),
            at_ms: 1_700_000_100_000,
        },
        LiveEvent::Redacted {
            chat_id: "c".into(),
            provider_id: "d".into(),
            by: "Ana".into(),
            at_ms: 1_700_000_100_001,
        },
        LiveEvent::Redacted {
            chat_id: "c".into(),
            provider_id: "k".into(),
            by: "Ana".into(),
            at_ms: 1_700_000_100_002,
        },
    ])
    .await;
    for gone in ["bridge", "swordfish", "東京で会い", "東京"] {
        let found = search(&mut client, q(gone)).await.unwrap();
        assert!(
            found.hits.is_empty(),
            "{gone:?} still finds {:?}",
            ids(&found)
        );
    }
    let edited = search(&mut client, q("station")).await.unwrap();
    assert_eq!(ids(&edited), ["e"]);
    assert_eq!(texts(&edited), ["meet at the new station"]);
    assert_eq!(marked(&edited.hits[0].snippet), "meet at the new [station]");
    // Words the edit kept are found once, not twice.
    assert_eq!(ids(&search(&mut client, q("meet")).await.unwrap()), ["e"]);
}

async fn bad_requests_are_invalid_arguments(backend: Backend) {
    let app = TestApp::spawn(&backend, vec![local_session("l")]).await;
    let mut client = app.client().await;
    send(&mut client, "l", "c", "hello there", "k")
        .await
        .expect("send");
    let long = "a".repeat(257);
    for query in ["", "   ", "?!…", long.as_str()] {
        let status = search(&mut client, request("l", query)).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "query {query:?}: {status:?}"
        );
    }
    let mut bad_token = request("l", "hello");
    bad_token.page_token = "not-a-token".into();
    let mut bad_limit = request("l", "hello");
    bad_limit.limit = 1_001;
    let mut bad_range = request("l", "hello");
    bad_range.sent_after = Some(at(T0 + 1));
    bad_range.sent_before = Some(at(T0));
    let mut bad_nanos = request("l", "hello");
    bad_nanos.sent_after = Some(pbjson_types::Timestamp {
        seconds: 1,
        nanos: -1,
    });
    let mut bad_chats = request("l", "hello");
    bad_chats.chat_ids = (0..1_001).map(|i| format!("c{i}")).collect();
    for (what, bad) in [
        ("chats", bad_chats),
        ("token", bad_token),
        ("limit", bad_limit),
        ("range", bad_range),
        ("nanos", bad_nanos),
    ] {
        let status = search(&mut client, bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }
    let status = search(&mut client, request("nope", "hello"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // The valid request works.
    let found = search(&mut client, request("l", "HELLO"))
        .await
        .expect("search");
    assert_eq!(texts(&found), ["hello there"]);
}

/// `chatsync_search_split` (migration `m20261207_000017_search_split_regexp`: one
/// `regexp_replace`) gives what the `translate` of `m20261201_000006_search` gave, so the
/// stored vectors stay valid: on every character from U+0001 to U+FFFF (surrogates excepted),
/// alone and between letters, on texts in several scripts, and on a text holding every ASCII
/// character.
#[tokio::test]
async fn search_split_matches_translate_on_postgres() {
    use chatsync::storage::Store;
    use sea_orm::ConnectionTrait;
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let store = Store::connect(&backend.database_url)
        .await
        .expect("connect and migrate");
    let db = sea_orm::Database::connect(&backend.database_url)
        .await
        .expect("connect");
    let differ = |texts: &str| {
        format!(
            "SELECT count(*) AS n, count(*) FILTER (WHERE chatsync_search_split(t) \
             IS DISTINCT FROM translate(t, $p$!\"#$%&'()*+,-./:;<=>?@[\\]^_`{{|}}~$p$, \
             repeat(' ', 32))) AS differ FROM ({texts}) AS s(t)"
        )
    };
    let cases = [
        "SELECT chr(i) || 'a' || chr(i) || 'b' FROM generate_series(1, 65535) AS g(i) \
         WHERE i NOT BETWEEN 55296 AND 57343",
        "SELECT string_agg(chr(i), '') FROM generate_series(1, 127) AS g(i)",
        "SELECT unnest(ARRAY['Docs at example.com, mail bob@x.org (v3.14)!', \
         'On se voit au Café de Flore ?', 'Привет, как дела?', '私は東京タワーに行きました。', \
         'مرحبا [بالعالم] الجميل', 'tab\tand\nnewline {braces} `ticks` ~tilde~', ''])",
    ];
    for texts in cases {
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                differ(texts),
            ))
            .await
            .expect("compare")
            .expect("a row");
        let n: i64 = row.try_get("", "n").expect("n");
        let differ: i64 = row.try_get("", "differ").expect("differ");
        assert!(n > 0, "no texts from {texts}");
        assert_eq!(differ, 0, "{differ} of {n} texts differ, from {texts}");
    }
    let split: String = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT chatsync_search_split('a.b-c_d{e}f~g h') AS s",
        ))
        .await
        .expect("split")
        .expect("a row")
        .try_get("", "s")
        .expect("s");
    assert_eq!(split, "a b c d e f g h");
    drop(store);
}

//! Bulk import: chats and their messages, in one write transaction per batch.
//!
//! Under the session's lock, an import reads what it decides on: which chats are stored (and
//! their names), which provider ids the chats that may hold some already have, and which
//! idempotency keys are stored (an incoming message carrying one is the echo of a message
//! chatsync sent). It then skips what is stored, settles echoes, takes seqs and writes. So a
//! sync run and a live source, on any replicas, can deliver the same messages concurrently and
//! each is stored exactly once.
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QuerySelect};

use super::entities::{change, chat, message};
use super::rows::{
    MESSAGES_COPY, ROWS_PER_COPY, change_row, messages_copy, messages_insert_sqlite,
};
use super::{FileRecord, ROWS_PER_INSERT, Store, WriteTxn, statement_chunks, storable};
use crate::error::Result;
use crate::model::{MessageStatus, NewMessage, People, now_ms};

/// One chat of an import batch ([`Store::import`]).
#[derive(Debug, Clone, Copy)]
pub struct ImportChat<'a> {
    pub chat_id: &'a str,
    /// The name as the source gives it now; a different stored name is a rename.
    pub name: &'a str,
    /// New messages, oldest first.
    pub messages: &'a [NewMessage],
    /// Whether some of `messages` may be stored already. Those are then skipped (and echoes
    /// of sent messages settled). `false` only when the caller knows the chat held no
    /// messages before this run, which saves reading its provider ids.
    pub may_be_stored: bool,
    /// The contacts and membership events the chat's history names (see
    /// [`super::people`]); [`crate::model::NO_PEOPLE`] when there are none.
    pub people: &'a People,
}

impl Store {
    /// Stores a batch of chats and their new messages in one write transaction, in order:
    /// each chat that is new or renamed takes a seq (a `chat_updated` change), then its
    /// messages not yet stored take consecutive seqs. Then the contacts and participants that
    /// are new or changed take a seq each. Returns, per chat, the number of messages stored.
    ///
    /// Rows go in multi-row INSERTs (SQLite: at most [`ROWS_PER_INSERT`] rows each;
    /// PostgreSQL: one `COPY … FROM STDIN` per 10,000 rows), so a batch of many small
    /// chats costs a handful of statements, not a few per chat. On SQLite the batch's messages
    /// are indexed for search by one statement per index after its rows (see
    /// `storage::search_index`).
    pub async fn import(&self, session_id: &str, chats: &[ImportChat<'_>]) -> Result<Vec<u64>> {
        self.import_with_files(session_id, chats, &[]).await
    }

    /// [`Store::import`], and in the same transaction the fingerprints of the files these
    /// chats were read from in full, as `(locator, record)` (see [`super::files`]).
    pub async fn import_with_files(
        &self,
        session_id: &str,
        chats: &[ImportChat<'_>],
        files: &[(&str, &FileRecord)],
    ) -> Result<Vec<u64>> {
        if chats.is_empty() && files.is_empty() {
            return Ok(Vec::new());
        }
        let mut txn = self.write(session_id).await?;
        let counts = txn.import_chats(chats).await?;
        txn.record_files(files).await?;
        txn.commit().await?;
        Ok(counts)
    }
}

impl Store {
    /// Runs several imports ([`Store::import`]) one after another in one write transaction:
    /// each step sees what the steps before it wrote, and seqs are taken in step order, as
    /// if each were its own `import`, but with one lock, one head update and one commit.
    /// The live sink uses it for a run of chats, contacts and messages (a webhook body).
    /// On error nothing of any step is stored.
    pub async fn import_steps(
        &self,
        session_id: &str,
        steps: &[Vec<ImportChat<'_>>],
    ) -> Result<()> {
        if steps.iter().all(Vec::is_empty) {
            return Ok(());
        }
        let mut txn = self.write(session_id).await?;
        for step in steps {
            if !step.is_empty() {
                txn.import_chats(step).await?;
            }
        }
        txn.commit().await?;
        Ok(())
    }
}

impl WriteTxn {
    /// The import of [`Store::import`], inside this transaction.
    pub(super) async fn import_chats(&mut self, chats: &[ImportChat<'_>]) -> Result<Vec<u64>> {
        let session_id = self.session_id().to_owned();
        let session_id = session_id.as_str();
        let mut ids: Vec<&str> = chats.iter().map(|c| c.chat_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut stored: HashMap<String, String> = HashMap::new();
        for chunk in statement_chunks(&ids, 512) {
            let rows = chat::Entity::find()
                .filter(chat::Column::SessionId.eq(session_id))
                .filter(chat::Column::ChatId.is_in(chunk.iter().copied()))
                .all(self.conn())
                .await?;
            stored.extend(rows.into_iter().map(|row| (row.chat_id, row.name)));
        }

        // What is stored already: provider ids of stored chats that may hold some, and the
        // echoes of messages chatsync sent.
        let mut checked: Vec<&str> = chats
            .iter()
            .filter(|c| c.may_be_stored && !c.messages.is_empty())
            .map(|c| c.chat_id)
            .filter(|id| stored.contains_key(*id))
            .collect();
        checked.sort_unstable();
        checked.dedup();
        // A small batch (live messages, a webhook body) looks up its own ids by the unique
        // (session, chat, provider id) index; a large one reads the chats' ids in full, which
        // costs less than long `IN` lists. Reading a whole chat per live message made each
        // one cost the size of its chat.
        let candidates: Vec<&str> = chats
            .iter()
            .filter(|c| c.may_be_stored && checked.binary_search(&c.chat_id).is_ok())
            .flat_map(|c| c.messages.iter().map(|m| m.provider_message_id.as_str()))
            .collect();
        let among = (candidates.len() <= SMALL_IMPORT_LOOKUP).then_some(candidates.as_slice());
        let known = provider_ids(self.conn(), self.session_id(), &checked, among).await?;
        let echoes: Vec<&NewMessage> = chats
            .iter()
            .filter(|c| c.may_be_stored)
            .flat_map(|c| c.messages.iter())
            .filter(|m| m.client_message_id.is_some())
            .collect();
        let settled = self.settle_echoes(&echoes).await?;

        // Plan: which chats change (new or renamed), and which messages are new, in order.
        let clean_names: Vec<Cow<'_, str>> = chats.iter().map(|c| storable(c.name)).collect();
        let mut names: HashMap<&str, &str> = stored
            .iter()
            .map(|(id, name)| (id.as_str(), name.as_str()))
            .collect();
        let now = now_ms();
        let mut counts = Vec::with_capacity(chats.len());
        let mut new_chats = Vec::new();
        let mut renamed = Vec::new();
        let mut change_rows = Vec::new();
        let mut message_rows: Vec<(&str, &NewMessage, u64)> = Vec::new();
        let mut inserted: HashSet<&str> = HashSet::new();
        // The provider ids this batch stores, by chat (a chat may come twice).
        let mut in_batch: HashMap<&str, HashSet<&str>> = HashMap::new();
        for (chat, name) in chats.iter().zip(&clean_names) {
            if names.get(chat.chat_id) != Some(&name.as_ref()) {
                names.insert(chat.chat_id, name);
                let seq = self.next_seq();
                if stored.contains_key(chat.chat_id) || inserted.contains(chat.chat_id) {
                    renamed.push((chat.chat_id, name.as_ref(), seq));
                } else {
                    inserted.insert(chat.chat_id);
                    new_chats.push(chat::ActiveModel {
                        id: NotSet,
                        session_id: Set(session_id.to_owned()),
                        chat_id: Set(chat.chat_id.to_owned()),
                        name: Set(name.to_string()),
                        seq: Set(seq as i64),
                        created_at: Set(now),
                    });
                }
                change_rows.push(change_row(
                    session_id,
                    seq,
                    change::KIND_CHAT,
                    chat.chat_id.to_owned(),
                    None,
                    None,
                    now,
                ));
            }
            let stored_ids = known.get(chat.chat_id);
            let batch_ids = in_batch.entry(chat.chat_id).or_default();
            batch_ids.reserve(chat.messages.len());
            let mut count = 0;
            for message in chat.messages {
                let echo = message
                    .client_message_id
                    .as_ref()
                    .is_some_and(|key| settled.contains(key));
                // Skips what is stored and what this batch already holds.
                let id = message.provider_message_id.as_str();
                if echo || stored_ids.is_some_and(|ids| ids.contains(id)) || !batch_ids.insert(id) {
                    continue;
                }
                message_rows.push((chat.chat_id, message, self.next_seq()));
                count += 1;
            }
            counts.push(count);
        }
        // 6 and 7 columns: well under the bound-variable limit at ROWS_PER_INSERT rows.
        self.insert_rows(&new_chats).await?;
        for (chat_id, name, seq) in renamed {
            chat::Entity::update_many()
                .col_expr(chat::Column::Name, Expr::value(name))
                .col_expr(chat::Column::Seq, Expr::value(seq as i64))
                .filter(chat::Column::SessionId.eq(session_id))
                .filter(chat::Column::ChatId.eq(chat_id))
                .exec(self.conn())
                .await?;
        }
        self.insert_rows(&change_rows).await?;
        if self.conn().get_database_backend() == DbBackend::Postgres {
            for rows in message_rows.chunks(ROWS_PER_COPY) {
                self.conn()
                    .copy_in(MESSAGES_COPY, messages_copy(session_id, rows, now))
                    .await?;
            }
        } else {
            self.insert_messages_sqlite(session_id, &message_rows, now)
                .await?;
        }
        let with_details: Vec<(u64, &NewMessage)> = message_rows
            .iter()
            .filter(|(_, message, _)| {
                !message.attachments.is_empty() || !message.reactions.is_empty()
            })
            .map(|(_, message, seq)| (*seq, *message))
            .collect();
        self.insert_attachments(&with_details).await?;
        self.insert_reactions(&with_details).await?;
        let people: Vec<(&str, &People)> = chats.iter().map(|c| (c.chat_id, c.people)).collect();
        self.store_people(&people).await?;
        Ok(counts)
    }

    /// SQLite: inserts the messages of an import, then puts them into the search indexes
    /// ([`WriteTxn::index_for_search`]: one statement for the word index, whatever their
    /// number).
    async fn insert_messages_sqlite(
        &self,
        session_id: &str,
        rows: &[(&str, &NewMessage, u64)],
        now: i64,
    ) -> Result<()> {
        let mut chunks = statement_chunks(rows, ROWS_PER_INSERT);
        let mut next = chunks
            .next()
            .map(|chunk| messages_insert_sqlite(session_id, chunk, now));
        while let Some(statement) = next.take() {
            let (sql, arguments) = statement?;
            // The next statement is built while this one runs on SQLite's thread: the first
            // poll of the insert hands it over, then the build runs, then the insert is awaited.
            let (done, following) =
                tokio::join!(self.conn().execute_sqlite(sql, arguments), async {
                    chunks
                        .next()
                        .map(|chunk| messages_insert_sqlite(session_id, chunk, now))
                });
            done?;
            next = following;
        }
        let inserted: Vec<(u64, &str)> = rows
            .iter()
            .map(|(_, message, seq)| (*seq, message.text.as_str()))
            .collect();
        self.index_for_search(&inserted).await
    }

    /// Settles the messages chatsync sent that these upstream messages echo: an incoming
    /// message whose `client_message_id` is stored already is the stored message coming back
    /// (Matrix `unsigned.transaction_id`). A PENDING or FAILED one becomes SENT (the echo
    /// proves it went out; a `status_updated` change) and takes the echo's provider id and
    /// time. Returns the idempotency keys that were found: those messages must not be stored
    /// again.
    async fn settle_echoes(&mut self, echoes: &[&NewMessage]) -> Result<HashSet<String>> {
        let mut found = HashSet::new();
        let keys: Vec<&str> = echoes
            .iter()
            .filter_map(|m| m.client_message_id.as_deref())
            .collect();
        for chunk in keys.chunks(500) {
            let rows = message::Entity::find()
                .filter(message::Column::SessionId.eq(self.session_id()))
                .filter(message::Column::ClientMessageId.is_in(chunk.iter().copied()))
                .all(self.conn())
                .await?;
            for row in rows {
                let Some(key) = row.client_message_id.clone() else {
                    continue;
                };
                let Some(echo) = echoes
                    .iter()
                    .find(|m| m.client_message_id.as_deref() == Some(key.as_str()))
                else {
                    continue;
                };
                found.insert(key);
                let status = MessageStatus::from_i16(row.status);
                if !matches!(status, MessageStatus::Pending | MessageStatus::Failed) {
                    continue;
                }
                let sent = MessageStatus::Sent.as_i16();
                let columns = vec![
                    (message::Column::Status, Expr::value(sent)),
                    (
                        message::Column::ProviderMessageId,
                        Expr::value(echo.provider_message_id.as_str()),
                    ),
                    (message::Column::SentAt, Expr::value(echo.sent_at_ms)),
                    // The account's own id upstream (a Matrix user id): receipts from the
                    // other participants complete the message's summary status without it.
                    (
                        message::Column::Sender,
                        Expr::value(storable(&echo.sender).as_ref()),
                    ),
                ];
                self.change_message(&row, change::KIND_STATUS, Some(sent), None, columns)
                    .await?;
            }
        }
        Ok(found)
    }
}

/// An import checking at most this many messages against stored ones looks each up by its
/// provider id rather than reading every provider id of their chats.
const SMALL_IMPORT_LOOKUP: usize = 256;

/// The provider ids stored in these chats of a session, by chat id; with `among`, only those
/// of its ids (at most [`SMALL_IMPORT_LOOKUP`], looked up by the unique index), else every id
/// of the chats. One query per 512 chats.
async fn provider_ids(
    db: &impl ConnectionTrait,
    session_id: &str,
    chat_ids: &[&str],
    among: Option<&[&str]>,
) -> Result<HashMap<String, HashSet<String>>> {
    let mut known: HashMap<String, HashSet<String>> = HashMap::new();
    if among.is_some_and(|ids| ids.is_empty()) {
        return Ok(known);
    }
    for ids in statement_chunks(chat_ids, 512) {
        let mut query = message::Entity::find()
            .select_only()
            .column(message::Column::ChatId)
            .column(message::Column::ProviderMessageId)
            .filter(message::Column::SessionId.eq(session_id))
            .filter(message::Column::ChatId.is_in(ids.iter().copied()));
        if let Some(among) = among {
            query = query.filter(message::Column::ProviderMessageId.is_in(among.iter().copied()));
        }
        let rows: Vec<(String, String)> = query.into_tuple().all(db).await?;
        for (chat_id, provider_message_id) in rows {
            known
                .entry(chat_id)
                .or_default()
                .insert(provider_message_id);
        }
    }
    Ok(known)
}

impl Store {
    /// The provider ids stored in one chat (read without a lock: what a source may skip
    /// work for, such as reading the files of messages that are stored already).
    pub async fn stored_provider_ids(
        &self,
        session_id: &str,
        chat_id: &str,
    ) -> Result<HashSet<String>> {
        Ok(provider_ids(&self.db, session_id, &[chat_id], None)
            .await?
            .remove(chat_id)
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MessageKind, NO_PEOPLE, SearchFilter};
    use crate::search::SearchQuery;
    use sea_orm::Statement;

    /// Words in several scripts, with diacritics, CJK (trigram index), an emoji (not ASCII, not
    /// CJK) and empty texts.
    const WORDS: &[&str] = &[
        "café",
        "cafe",
        "naïve",
        "straße",
        "привет",
        "مرحبا",
        "你好世界",
        "東京タワー",
        "서울역",
        "dinner",
        "train",
        "late",
        "example.com",
        "3.14",
        "IMG-20240102-WA0001.jpg",
        "🎉",
        "",
    ];

    fn history(count: usize) -> Vec<NewMessage> {
        (0..count)
            .map(|i| {
                let text: Vec<&str> = (0..1 + i % 5)
                    .map(|j| WORDS[(i * 7 + j * 3) % WORDS.len()])
                    .collect();
                NewMessage {
                    provider_message_id: format!("m{i}"),
                    sender: format!("sender {}", i % 3),
                    text: text.join(" "),
                    kind: MessageKind::Text,
                    status: MessageStatus::Sent,
                    sent_at_ms: 1_600_000_000_000 + i as i64 * 1_000,
                    ..NewMessage::default()
                }
            })
            .collect()
    }

    /// A store holding `messages` of two chats, imported `per_import` messages at a time.
    async fn store(dir: &std::path::Path, messages: &[NewMessage], per_import: usize) -> Store {
        let url = format!("sqlite://{}/c.db", dir.display());
        let store = Store::connect(&url).await.unwrap();
        store.ensure_session("s", "test").await.unwrap();
        let (first, second) = messages.split_at(messages.len() / 2);
        for (chat_id, messages) in [("a", first), ("b", second)] {
            for slice in messages.chunks(per_import) {
                let chat = ImportChat {
                    chat_id,
                    name: chat_id,
                    messages: slice,
                    may_be_stored: true,
                    people: &NO_PEOPLE,
                };
                let stored = store.import("s", &[chat]).await.unwrap();
                assert_eq!(stored, vec![slice.len() as u64]);
            }
        }
        store
    }

    /// Every query's hits: provider ids in rank order, with their scores.
    async fn hits(store: &Store, queries: &[&str]) -> Vec<Vec<(String, String)>> {
        let filter = SearchFilter {
            max_id: i64::MAX,
            ..SearchFilter::default()
        };
        let mut all = Vec::new();
        for query in queries {
            let query = SearchQuery::parse(query).unwrap();
            let found = store.search("s", &query, &filter, 0, 1_000).await.unwrap();
            all.push(
                found
                    .into_iter()
                    .map(|hit| (hit.message.provider_message_id, format!("{:.9}", hit.score)))
                    .collect(),
            );
        }
        all
    }

    /// FTS5's own checks: the word index matches its content table (every row), and the
    /// trigram index (which holds only the CJK rows, so differs from its content table) is
    /// consistent in itself.
    async fn integrity_check(store: &Store) {
        for sql in [
            "INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)",
            "INSERT INTO messages_fts_trigram(messages_fts_trigram) VALUES ('integrity-check')",
        ] {
            store.db.execute_unprepared(sql).await.unwrap();
        }
    }

    /// How many texts the trigram index holds (its `docsize` shadow table has a row for each).
    async fn trigram_rows(store: &Store) -> usize {
        use sea_orm::{ConnectionTrait, Statement};
        let row = store
            .db
            .query_one_raw(Statement::from_string(
                store.db.get_database_backend(),
                "SELECT count(*) AS n FROM messages_fts_trigram_docsize",
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<i64>("", "n").unwrap() as usize
    }

    /// A small import looks its own ids up ([`provider_ids`] with `among`), a large one reads
    /// the chat's ids (without): either way what is stored is skipped, once.
    #[tokio::test]
    async fn small_and_large_imports_skip_what_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let messages = history(2 * (SMALL_IMPORT_LOOKUP + 50));
        // Chat "a" holds the first half, chat "b" the second.
        let store = store(dir.path(), &messages, messages.len()).await;
        let half = messages.len() / 2;
        let mut fresh = history(1);
        fresh[0].provider_message_id = "new".into();
        // Small: two stored in "a", one stored in "b" only (new to "a"), one new.
        let small: Vec<NewMessage> = [&messages[0], &messages[1], &messages[half], &fresh[0]]
            .into_iter()
            .cloned()
            .collect();
        assert!(small.len() <= SMALL_IMPORT_LOOKUP);
        let chat = |messages| ImportChat {
            chat_id: "a",
            name: "a",
            messages,
            may_be_stored: true,
            people: &NO_PEOPLE,
        };
        assert_eq!(store.import("s", &[chat(&small)]).await.unwrap(), vec![2]);
        // Large: all of "a" again (and the two just stored), and two new.
        let mut large: Vec<NewMessage> = messages[..half].to_vec();
        large.extend(small.iter().cloned());
        let mut two = history(2);
        two[0].provider_message_id = "new 2".into();
        two[1].provider_message_id = "new 3".into();
        large.extend(two);
        assert!(large.len() > SMALL_IMPORT_LOOKUP);
        assert_eq!(store.import("s", &[chat(&large)]).await.unwrap(), vec![2]);
        let ids = store.stored_provider_ids("s", "a").await.unwrap();
        assert_eq!(ids.len(), half + 4);
    }

    /// The steps of [`Store::import_steps`] take seqs in order in one transaction, each
    /// seeing the steps before it: a chat created by the first is not created again.
    #[tokio::test]
    async fn import_steps_run_in_order_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/c.db", dir.path().display());
        let store = Store::connect(&url).await.unwrap();
        store.ensure_session("s", "test").await.unwrap();
        let messages = history(3);
        let steps = vec![
            vec![ImportChat {
                chat_id: "a",
                name: "A",
                messages: &[],
                may_be_stored: true,
                people: &NO_PEOPLE,
            }],
            vec![ImportChat {
                chat_id: "a",
                name: "A",
                messages: &messages,
                may_be_stored: true,
                people: &NO_PEOPLE,
            }],
            // The same messages again, and a rename.
            vec![ImportChat {
                chat_id: "a",
                name: "B",
                messages: &messages,
                may_be_stored: true,
                people: &NO_PEOPLE,
            }],
        ];
        let before = store.head_seq("s").await.unwrap();
        store.import_steps("s", &steps).await.unwrap();
        // The chat (1), its three messages (3), the rename (1): nothing twice.
        assert_eq!(store.head_seq("s").await.unwrap(), before + 5);
        assert_eq!(store.stored_provider_ids("s", "a").await.unwrap().len(), 3);
        assert_eq!(store.find_chat("s", "a").await.unwrap().unwrap().name, "B");
    }

    #[tokio::test]
    async fn a_bulk_import_finds_what_single_writes_find() {
        let messages = history(328);
        let (bulk_dir, single_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // One import of them all (each index fed by one statement over the batch), and one
        // import per message (one-row statements).
        let bulk = store(bulk_dir.path(), &messages, messages.len()).await;
        let single = store(single_dir.path(), &messages, 1).await;
        let queries = [
            "cafe",
            "café",
            "naive",
            "straße",
            "привет",
            "مرحبا",
            "你好",
            "東京",
            "タワー",
            "서울",
            "dinner example",
            "example",
            "3",
            "wa0001",
            "jpg",
            "café straße",
        ];
        let (bulk_hits, single_hits) = (hits(&bulk, &queries).await, hits(&single, &queries).await);
        for (query, hits) in queries.iter().zip(&bulk_hits) {
            assert!(!hits.is_empty(), "{query:?} finds nothing");
        }
        assert_eq!(bulk_hits, single_hits);
        integrity_check(&bulk).await;
        integrity_check(&single).await;
        // The trigram index holds exactly the texts with a CJK character, however many
        // messages an import held.
        let cjk = messages
            .iter()
            .filter(|m| crate::search::has_cjk(&m.text))
            .count();
        assert!(cjk > 0 && cjk < messages.len());
        for store in [&bulk, &single] {
            assert_eq!(trigram_rows(store).await, cjk);
        }
        // A later write of one message is indexed too.
        let late = NewMessage {
            provider_message_id: "late".into(),
            text: "zebra".into(),
            ..messages[0].clone()
        };
        let chat = ImportChat {
            chat_id: "a",
            name: "a",
            messages: std::slice::from_ref(&late),
            may_be_stored: true,
            people: &NO_PEOPLE,
        };
        bulk.import("s", &[chat]).await.unwrap();
        assert_eq!(hits(&bulk, &["zebra"]).await[0].len(), 1);
        integrity_check(&bulk).await;
    }

    /// Imported messages carry no idempotency key and put nothing into the key's unique index
    /// (migration `m20261207_000018`, a partial index), and a lookup by key still uses it.
    #[tokio::test]
    async fn messages_without_an_idempotency_key_stay_out_of_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let messages = history(300);
        let store = store(dir.path(), &messages, messages.len()).await;
        let rows = store
            .db
            .query_all_raw(Statement::from_string(
                DbBackend::Sqlite,
                "EXPLAIN QUERY PLAN SELECT id FROM messages \
                 WHERE session_id = 's' AND client_message_id IN ('k1', 'k2')",
            ))
            .await
            .unwrap();
        let plan: Vec<String> = rows
            .iter()
            .map(|row| row.try_get::<String>("", "detail").unwrap())
            .collect();
        assert!(
            plan.iter()
                .any(|step| step.contains("INDEX messages_session_client_id (session_id=? AND")),
            "{plan:?}"
        );
        // The index is partial: entries only for messages with a key.
        let row = store
            .db
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT sql FROM sqlite_master WHERE name = 'messages_session_client_id'",
            ))
            .await
            .unwrap()
            .unwrap();
        assert!(
            row.try_get::<String>("", "sql")
                .unwrap()
                .ends_with("WHERE client_message_id IS NOT NULL")
        );
    }
}

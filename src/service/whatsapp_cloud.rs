//! Pushed webhooks of `whatsapp-cloud` sessions (the WhatsApp Cloud API): the verification
//! handshake, and a signed body stored before it is acknowledged.
//!
//! A body is routed by `entry[].changes[].value.metadata.phone_number_id` to its session,
//! its `X-Hub-Signature-256` checked over the raw bytes with that session's app secret, and
//! each item of it applied on its own, in storage, before the answer:
//! - messages, reactions, edits and revokes through the live sink's path
//!   ([`LiveStore::store_events`]): a `wamid` stored already stores nothing. A body's
//!   consecutive contacts and messages go in one call, so its chat, contact and messages
//!   share one write transaction (each still its seq, in the order of one call per item);
//!   should that call fail for a reason of the items', they are applied one by one;
//! - statuses through [`Store::update_status`] (never backwards) or, in a group, a
//!   recipient's receipt; a status whose message is not stored is found by its
//!   `biz_opaque_callback_data` (the `client_message_id` of a send still waiting for its
//!   answer), or kept in the inbox and applied when the message arrives;
//! - an item that cannot be read is kept in the inbox with its error, logged and counted.
//! - a `history` chunk (coexistence) is imported as part of the session's history sync run
//!   ([`sync::SyncRuns::push_chunk`]); a placeholder's file fills its attachment
//!   ([`Store::store_missing_attachment`]).
//!
//! Any replica can take a webhook: every write goes through the session's lock.
use std::sync::atomic::{AtomicU64, Ordering};

use super::live::LiveStore;
use super::*;
use crate::model::{Attachment, NewContact, People, ReceiptKind, StatusError};
use crate::sources::LiveEvent;
use crate::sources::whatsapp_cloud::{
    HistoryChunk, Item, MEDIA_RETRY_MAX_PAUSE, MissingMedia, WhatsAppCloud, webhook,
};
use crate::storage::{ImportChat, MessageOp};

/// Webhook counts since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookCounts {
    /// Bodies accepted (answered 200).
    pub bodies: AtomicU64,
    /// Bodies refused for their signature (401).
    pub bad_signatures: AtomicU64,
    /// Bodies or changes naming a phone number no session has.
    pub unknown_numbers: AtomicU64,
    /// Items that could not be read, kept with their error.
    pub unreadable_items: AtomicU64,
    /// Statuses kept because their message is not stored yet.
    pub waiting_statuses: AtomicU64,
}

/// The process-wide webhook counts.
pub static WEBHOOK_COUNTS: WebhookCounts = WebhookCounts {
    bodies: AtomicU64::new(0),
    bad_signatures: AtomicU64::new(0),
    unknown_numbers: AtomicU64::new(0),
    unreadable_items: AtomicU64::new(0),
    waiting_statuses: AtomicU64::new(0),
};

/// What became of a webhook body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookAnswer {
    /// Everything in it is stored (applied, or kept in the inbox): answer 200.
    Stored,
    /// The signature is missing or wrong for the session the body names: answer 401, nothing
    /// is stored. The text says why (for the log).
    Unauthenticated(String),
}

/// The inbox keys of files waiting for a retried download ([`MissingMedia::key`]).
const MEDIA_KEY_PREFIX: &str = "media:";

/// How many waiting items one pass applies at most.
const WAITING_BATCH: u64 = 500;

impl ChatSync {
    /// The `whatsapp-cloud` sessions: (session id, source).
    fn whatsapp_sessions(&self) -> impl Iterator<Item = (&String, &WhatsAppCloud)> {
        self.inner
            .sessions
            .iter()
            .filter_map(|(id, session)| Some((id, session.source.whatsapp_cloud()?)))
    }

    /// The verification handshake (`GET /webhooks/whatsapp`): the challenge to answer when
    /// `mode` is `subscribe` and `token` is the verify token of some `whatsapp-cloud`
    /// session; `None` (answer 403) otherwise.
    pub fn whatsapp_verify(&self, mode: &str, token: &str, challenge: &str) -> Option<String> {
        if mode != "subscribe" {
            return None;
        }
        self.whatsapp_sessions()
            .any(|(_, source)| source.verify_token_matches(token))
            .then(|| challenge.to_owned())
    }

    /// Takes a webhook body (`POST /webhooks/whatsapp`, at most
    /// [`webhook::MAX_BODY_BYTES`], checked by the caller) and its `X-Hub-Signature-256`.
    ///
    /// Errors: a storage failure (`Unavailable`, ...): answer 5xx and Meta delivers the body
    /// again; what was stored of it is skipped then.
    pub async fn whatsapp_webhook(
        &self,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<WebhookAnswer> {
        let Some(signature) = signature else {
            WEBHOOK_COUNTS
                .bad_signatures
                .fetch_add(1, Ordering::Relaxed);
            return Ok(WebhookAnswer::Unauthenticated(
                "no X-Hub-Signature-256".into(),
            ));
        };
        let parsed = match webhook::parse(body) {
            Ok(parsed) => parsed,
            Err(error) => {
                // Keep a body Meta signed but nobody can read, in the first session whose
                // secret signed it; anyone else's is refused.
                let signed_for = self
                    .whatsapp_sessions()
                    .find(|(_, s)| webhook::signature_matches(signature, body, s.app_secret()));
                let Some((session_id, _)) = signed_for else {
                    WEBHOOK_COUNTS
                        .bad_signatures
                        .fetch_add(1, Ordering::Relaxed);
                    return Ok(WebhookAnswer::Unauthenticated(error));
                };
                tracing::warn!(session_id, %error, "keeping an unreadable webhook body");
                WEBHOOK_COUNTS
                    .unreadable_items
                    .fetch_add(1, Ordering::Relaxed);
                let key = format!(
                    "body:{}",
                    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body))
                );
                let text = String::from_utf8_lossy(body);
                self.inner
                    .store
                    .keep_webhook_item(session_id, &key, &text, Some(&error))
                    .await?;
                return Ok(WebhookAnswer::Stored);
            }
        };
        let numbers = webhook::phone_number_ids(&parsed);
        let targets: Vec<(&String, &WhatsAppCloud)> = self
            .whatsapp_sessions()
            .filter(|(_, s)| numbers.iter().any(|n| n == s.phone_number_id()))
            .collect();
        for (session_id, source) in &targets {
            if !webhook::signature_matches(signature, body, source.app_secret()) {
                WEBHOOK_COUNTS
                    .bad_signatures
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(WebhookAnswer::Unauthenticated(format!(
                    "the signature is not session {session_id:?}'s"
                )));
            }
        }
        for number in &numbers {
            if !targets.iter().any(|(_, s)| s.phone_number_id() == number) {
                WEBHOOK_COUNTS
                    .unknown_numbers
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    phone_number_id = number,
                    "a webhook for a phone number no session has; acknowledged and dropped"
                );
            }
        }
        for (session_id, source) in targets {
            let changes = parsed
                .entry
                .iter()
                .flat_map(|entry| &entry.changes)
                .filter(|change| change.phone_number_id() == Some(source.phone_number_id()));
            // The wamids of the messages this body stored: statuses kept for them apply now.
            let mut wamids = Vec::new();
            // Consecutive chats, contacts and messages share one write transaction.
            let mut events = Vec::new();
            for change in changes {
                for item in source.read_change(change).await {
                    if let Item::Events { key, .. } = &item
                        && let Some(wamid) = key.strip_prefix("message:")
                    {
                        wamids.push(wamid.to_owned());
                    }
                    if matches!(item, Item::Events { .. }) {
                        events.push(item);
                        continue;
                    }
                    self.apply_webhook_events(session_id, std::mem::take(&mut events))
                        .await?;
                    self.apply_webhook_item(session_id, item).await?;
                }
            }
            self.apply_webhook_events(session_id, events).await?;
            for wamid in &wamids {
                self.apply_waiting_statuses_of(session_id, wamid).await?;
            }
        }
        WEBHOOK_COUNTS.bodies.fetch_add(1, Ordering::Relaxed);
        Ok(WebhookAnswer::Stored)
    }

    fn webhook_sink(&self, session_id: &str) -> Result<LiveStore> {
        let session = self.session(session_id)?;
        Ok(LiveStore {
            session_id: session_id.to_owned(),
            store: self.inner.store.clone(),
            state: session.state.clone(),
            stop: CancellationToken::new(),
        })
    }

    /// Applies consecutive [`Item::Events`] of a body (its contacts, then its messages) in
    /// one write transaction ([`LiveStore::store_events`] over all their events, in order).
    /// Should that fail for a reason of its own (not storage's), each item is then applied on
    /// its own ([`apply_webhook_item`](Self::apply_webhook_item)), so one bad item still fails
    /// only itself. Nothing of the failed run of chats, contacts and messages was stored; an
    /// edit, reaction or revoke before the failure was, and applying it again changes
    /// nothing (every item is idempotent). Errors only for storage failures worth a
    /// redelivery.
    async fn apply_webhook_events(&self, session_id: &str, items: Vec<Item>) -> Result<()> {
        if items.len() < 2 {
            for item in items {
                self.apply_webhook_item(session_id, item).await?;
            }
            return Ok(());
        }
        let mut all = Vec::new();
        let mut missing = Vec::new();
        for item in &items {
            if let Item::Events {
                events,
                missing: files,
                ..
            } = item
            {
                all.extend(events.iter().cloned());
                missing.extend(files.iter().cloned());
            }
        }
        match self.store_webhook_events(session_id, all, &missing).await {
            Ok(()) => Ok(()),
            Err(error) if retry_worthy(&error) => Err(error),
            Err(error) => {
                tracing::debug!(session_id, %error, "a body's items failed together; applying them one by one");
                for item in items {
                    self.apply_webhook_item(session_id, item).await?;
                }
                Ok(())
            }
        }
    }

    /// Applies (or keeps) one item. Errors only for storage failures worth a redelivery.
    async fn apply_webhook_item(&self, session_id: &str, item: Item) -> Result<()> {
        let store = &self.inner.store;
        match item {
            Item::Events {
                key,
                events,
                missing,
            } => {
                let payload = format!("{events:?}");
                match self
                    .store_webhook_events(session_id, events, &missing)
                    .await
                {
                    Ok(()) => Ok(()),
                    Err(error) if retry_worthy(&error) => Err(error),
                    Err(error) => {
                        for media in &missing {
                            store.drop_webhook_item(session_id, &media.key()).await?;
                        }
                        self.keep_unreadable(session_id, &key, &payload, &error.to_string())
                            .await
                    }
                }
            }
            Item::Status {
                key,
                payload,
                status,
            } => match self.apply_status(session_id, &status).await {
                Ok(true) => Ok(()),
                Ok(false) => {
                    WEBHOOK_COUNTS
                        .waiting_statuses
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(session_id, key, "keeping a status until its message");
                    store
                        .keep_webhook_item(session_id, &key, &payload, None)
                        .await?;
                    // The message may have been stored meanwhile (by another request or
                    // replica), its look at the inbox done before this item was there: look
                    // again now that it is kept. Either that look sees the item, or this one
                    // sees the message.
                    match self.apply_status(session_id, &status).await {
                        Ok(true) => store.drop_webhook_item(session_id, &key).await,
                        Ok(false) => Ok(()),
                        Err(error) if retry_worthy(&error) => Err(error),
                        // Kept already; the message's arrival applies it (or says why not).
                        Err(_) => Ok(()),
                    }
                }
                Err(error) if retry_worthy(&error) => Err(error),
                Err(error) => {
                    self.keep_unreadable(session_id, &key, &payload, &error.to_string())
                        .await
                }
            },
            Item::Unreadable {
                key,
                payload,
                error,
            } => {
                self.keep_unreadable(session_id, &key, &payload, &error)
                    .await
            }
            Item::History(chunk) => self.apply_history(session_id, *chunk).await,
            Item::PlaceholderFile {
                chat_id,
                wamid,
                ordinal,
                attachment,
            } => {
                let reference = MessageRef::Provider {
                    chat_id,
                    provider_message_id: wamid,
                };
                match store
                    .store_missing_attachment(session_id, &reference, ordinal, &attachment)
                    .await
                {
                    // Filled, or stored with its file already (the file's webhook came first).
                    Ok(_) => Ok(()),
                    Err(error) if retry_worthy(&error) => Err(error),
                    Err(error) => {
                        let key = format!("file:{reference}");
                        self.keep_unreadable(
                            session_id,
                            &key,
                            &format!("{attachment:?}"),
                            &error.to_string(),
                        )
                        .await
                    }
                }
            }
        }
    }

    /// Imports one chunk of a `history` webhook as part of the session's history sync run
    /// (a pushed run, see `service::sync::pushed`): its threads' messages in one import, the
    /// run COMPLETED when Meta's `progress` reaches 100, FAILED when the business declined to
    /// share its history. Chats keep the names they have; a new one is named after its
    /// number, with the user as its contact. Then the chunk's other items (reactions,
    /// edits, unreadable messages) are applied as a `messages` webhook's are. Errors only for
    /// storage failures worth a redelivery.
    async fn apply_history(&self, session_id: &str, chunk: HistoryChunk) -> Result<()> {
        let store = &self.inner.store;
        let ids: Vec<&str> = chunk.threads.iter().map(|t| t.chat_id.as_str()).collect();
        let mut stored = store.find_chats(session_id, &ids).await?;
        let names: Vec<String> = chunk
            .threads
            .iter()
            .map(|thread| match stored.remove(&thread.chat_id) {
                Some(chat) => chat.name,
                None => format!("+{}", thread.chat_id),
            })
            .collect();
        let people: Vec<People> = chunk
            .threads
            .iter()
            .zip(&names)
            .map(|(thread, name)| People {
                contacts: vec![NewContact {
                    contact_id: thread.chat_id.clone(),
                    display_name: name.clone(),
                    phone: Some(format!("+{}", thread.chat_id)),
                    matrix_id: None,
                }],
                members: Vec::new(),
            })
            .collect();
        let chats = chunk
            .threads
            .iter()
            .zip(&names)
            .zip(&people)
            .map(|((thread, name), people)| ImportChat {
                chat_id: &thread.chat_id,
                name,
                messages: &thread.messages,
                may_be_stored: true,
                people,
            })
            .collect();
        let pushed = sync::PushedChunk {
            chats,
            last: chunk.progress == Some(100),
            error: chunk.error.clone(),
        };
        match self.inner.runs.push_chunk(store, session_id, pushed).await {
            Ok(frame) => tracing::info!(
                session_id,
                chunk = chunk.key,
                phase = chunk.phase,
                progress = chunk.progress,
                chats = chunk.threads.len(),
                sync_id = frame.as_ref().map(|f| f.sync_id.as_str()),
                new_messages = frame.as_ref().map(|f| f.messages_synced),
                "history chunk stored"
            ),
            Err(error) if retry_worthy(&error) => return Err(error),
            Err(error) => {
                let payload = format!("{:?}", chunk.threads);
                self.keep_unreadable(session_id, &chunk.key, &payload, &error.to_string())
                    .await?;
            }
        }
        for item in chunk.other {
            Box::pin(self.apply_webhook_item(session_id, item)).await?;
        }
        Ok(())
    }

    /// Stores a webhook's `events` through the live sink's path ([`LiveStore::store_events`],
    /// one write transaction), keeping the files whose download failed (`missing`) in the
    /// inbox first, so that a message stored with `stored = false` always has its retry kept
    /// (a crash in between is redelivered by Meta; the keys make that store nothing twice).
    /// Once the events are stored, the files' retries start
    /// ([`spawn_media_retry`](Self::spawn_media_retry)). Errors: storage's, or the events'
    /// own (then nothing of them is stored, and the kept files stay for the caller to drop).
    async fn store_webhook_events(
        &self,
        session_id: &str,
        events: Vec<LiveEvent>,
        missing: &[MissingMedia],
    ) -> Result<()> {
        for media in missing {
            let json =
                serde_json::to_string(media).map_err(|error| Error::Internal(error.to_string()))?;
            self.inner
                .store
                .keep_webhook_item(session_id, &media.key(), &json, None)
                .await?;
        }
        self.webhook_sink(session_id)?.store_events(events).await?;
        for media in missing {
            self.spawn_media_retry(session_id, media.clone());
        }
        Ok(())
    }

    async fn keep_unreadable(
        &self,
        session_id: &str,
        key: &str,
        payload: &str,
        error: &str,
    ) -> Result<()> {
        WEBHOOK_COUNTS
            .unreadable_items
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            session_id,
            key,
            error,
            "keeping a webhook item that cannot be applied"
        );
        self.inner
            .store
            .keep_webhook_item(session_id, key, payload, Some(error))
            .await
            .map(|_| ())
    }

    /// Applies a status. `Ok(false)`: its message is not stored (yet).
    async fn apply_status(&self, session_id: &str, status: &webhook::Status) -> Result<bool> {
        let store = &self.inner.store;
        let chat_id = status.chat_id().unwrap_or_default().to_owned();
        let next = match status.status.as_str() {
            "sent" => MessageStatus::Sent,
            "delivered" => MessageStatus::Delivered,
            "read" | "played" => MessageStatus::Read,
            "failed" => MessageStatus::Failed,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown status {other:?} of {}",
                    status.id
                )));
            }
        };
        let mut reason = None;
        if next == MessageStatus::Failed {
            reason = status.errors.first().map(|error| StatusError {
                code: error.code,
                title: error.title.clone(),
            });
            for error in &status.errors {
                tracing::warn!(
                    session_id,
                    wamid = status.id,
                    code = error.code,
                    title = error.title,
                    "WhatsApp could not deliver a message"
                );
            }
        }
        let by_wamid = MessageRef::Provider {
            chat_id: chat_id.clone(),
            provider_message_id: status.id.clone(),
        };
        // A group's delivered and read come per participant.
        if let Some(participant) = status.participant()
            && matches!(next, MessageStatus::Delivered | MessageStatus::Read)
        {
            let op = MessageOp::Receipt {
                recipient: participant.to_owned(),
                kind: if next == MessageStatus::Read {
                    ReceiptKind::Read
                } else {
                    ReceiptKind::Delivered
                },
                at_ms: status.at_ms(),
            };
            return match store.update_message(session_id, &by_wamid, &op, None).await {
                Ok(_) => Ok(true),
                Err(Error::NotFound(_)) => Ok(false),
                Err(error) => Err(error),
            };
        }
        match store
            .advance_status(session_id, &by_wamid, next, None, reason.as_ref())
            .await
        {
            Ok(_) => return Ok(true),
            Err(Error::NotFound(_)) => {}
            Err(error) => return Err(error),
        }
        // The send's answer has not come back yet: the message still has its pending id.
        let Some(client_message_id) = status.biz_opaque_callback_data.as_deref() else {
            return Ok(false);
        };
        let pending = MessageRef::Provider {
            chat_id,
            provider_message_id: format!("pending-{client_message_id}"),
        };
        match store
            .advance_status(
                session_id,
                &pending,
                next,
                Some(&status.id),
                reason.as_ref(),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Applies the statuses kept for `wamid` (a message a webhook just stored, or the wamid a
    /// send's answer just gave its message); each applied one leaves the inbox. Only that
    /// message's items are read, so a busy inbox costs a message body nothing.
    pub(super) async fn apply_waiting_statuses_of(
        &self,
        session_id: &str,
        wamid: &str,
    ) -> Result<()> {
        let store = &self.inner.store;
        let prefix = format!("status:{wamid}:");
        for item in store
            .waiting_webhook_items_with_prefix(session_id, &prefix, WAITING_BATCH)
            .await?
        {
            let Ok(status) = serde_json::from_str::<webhook::Status>(&item.payload) else {
                continue;
            };
            if status.id == wamid && self.apply_status(session_id, &status).await? {
                store.drop_webhook_item(session_id, &item.key).await?;
            }
        }
        Ok(())
    }

    /// Applies every status of the session that waits in the inbox and whose message is
    /// stored by now; each applied one leaves the inbox, the others stay. Reads the whole
    /// inbox, [`WAITING_BATCH`] items at a time, so a status whose message never comes (one
    /// sent from outside chatsync) holds back none behind it. Returns how many were applied.
    ///
    /// Files still waiting for their download ([`MissingMedia`], kept under `media:` keys)
    /// are handed to [`spawn_media_retry`](Self::spawn_media_retry) on the way.
    ///
    /// Run at start-up and then every `inbox_sweep_interval_ms` ([`spawn_inbox_sweeps`]): a
    /// crash can leave a status waiting for a message that is stored already (a body stored
    /// the message and died before it looked at the inbox, or a send saved its wamid and died
    /// before it did), and a replica that died leaves its media retries behind; nothing else
    /// would look at them again until Meta redelivers.
    ///
    /// Errors: storage failures; a status that cannot be applied otherwise stays, logged.
    pub(super) async fn apply_waiting_webhook_items(&self, session_id: &str) -> Result<u64> {
        let store = &self.inner.store;
        let mut applied = 0;
        let mut after = None;
        loop {
            let page = store
                .waiting_webhook_items(session_id, after.as_ref(), WAITING_BATCH)
                .await?;
            let full = page.len() as u64 == WAITING_BATCH;
            for item in &page {
                if item.key.starts_with(MEDIA_KEY_PREFIX) {
                    match serde_json::from_str::<MissingMedia>(&item.payload) {
                        Ok(media) => self.spawn_media_retry(session_id, media),
                        Err(error) => {
                            tracing::warn!(session_id, key = item.key, %error, "an unreadable media retry");
                        }
                    }
                    continue;
                }
                let Ok(status) = serde_json::from_str::<webhook::Status>(&item.payload) else {
                    continue;
                };
                match self.apply_status(session_id, &status).await {
                    Ok(true) => {
                        store.drop_webhook_item(session_id, &item.key).await?;
                        applied += 1;
                    }
                    Ok(false) => {}
                    Err(error) if retry_worthy(&error) => return Err(error),
                    Err(error) => {
                        tracing::warn!(session_id, key = item.key, %error, "a waiting status cannot be applied");
                    }
                }
            }
            after = page.into_iter().last();
            if !full {
                return Ok(applied);
            }
        }
    }
}

impl ChatSync {
    /// Downloads a file kept without its bytes ([`MissingMedia`]) again, in the background:
    /// after the session's `media_retry_backoff_ms`, then after twice that each time (at most
    /// [`MEDIA_RETRY_MAX_PAUSE`]), until it is stored or its media id is no longer valid
    /// ([`MissingMedia::expires_at_ms`]), or the server shuts down. Each try asks Graph for a
    /// fresh URL (a URL lasts 5 minutes). Stored, the attachment becomes `stored = true` with a
    /// `message_updated` change ([`crate::model::MessageChange::Attachment`]) and the inbox
    /// item is dropped; expired, the item is dropped and the attachment stays unstored. A file
    /// already being retried on this process is left to that task, and one whose retry
    /// another live replica holds (its claim, [`Store::claim`] under the inbox key, renewed
    /// before each try for [`media_claim`] of the pause) is left to that replica: the inbox
    /// sweeps take it up once the claim expires.
    pub(super) fn spawn_media_retry(&self, session_id: &str, media: MissingMedia) {
        let Ok(session) = self.session(session_id) else {
            return;
        };
        let source = session.source.clone();
        let Some(cloud) = source.whatsapp_cloud() else {
            return;
        };
        let key = media.key();
        if !cloud.media_retry_start(&key) {
            return;
        }
        let service = self.clone();
        let session_id = session_id.to_owned();
        tokio::spawn(async move {
            if let Some(cloud) = source.whatsapp_cloud() {
                service.retry_media(&session_id, cloud, &media).await;
                cloud.media_retry_done(&key);
            }
        });
    }

    async fn retry_media(&self, session_id: &str, cloud: &WhatsAppCloud, media: &MissingMedia) {
        let store = &self.inner.store;
        let shutdown = self.inner.shutdown.clone();
        let key = media.key();
        let holder = self.inner.replica_id.as_str();
        let mut pause = cloud.media_retry_backoff();
        let mut tries = 0u32;
        loop {
            // Held through the pause and the try that follows it; lost (another replica took
            // it up while this one stalled), the retry is that replica's now.
            match store
                .claim(session_id, &key, holder, media_claim(pause))
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(session_id, key, "another replica is retrying this download");
                    return;
                }
                Err(error) => {
                    // The next sweep tries again.
                    tracing::warn!(session_id, key, %error, "cannot claim a media retry");
                    return;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => return,
            }
            pause = (pause * 2).min(MEDIA_RETRY_MAX_PAUSE);
            if now_ms() >= media.expires_at_ms() {
                tracing::warn!(
                    session_id,
                    wamid = media.wamid,
                    media_id = media.media_id,
                    tries,
                    "giving up a media download: its media id has expired"
                );
                if let Err(error) = store.drop_webhook_item(session_id, &key).await {
                    // The next sweep finds it expired and drops it.
                    tracing::warn!(session_id, key, %error, "cannot drop an expired media retry");
                }
                self.release_media_claim(session_id, &key).await;
                return;
            }
            tries += 1;
            // A download can take a while: shutdown does not wait for it.
            let attempt = tokio::select! {
                attempt = self.store_missing_media(session_id, cloud, media) => attempt,
                _ = shutdown.cancelled() => return,
            };
            match attempt {
                Ok(stored) => {
                    tracing::info!(
                        session_id,
                        wamid = media.wamid,
                        media_id = media.media_id,
                        tries,
                        stored,
                        "a media download that had failed is done"
                    );
                    if let Err(error) = store.drop_webhook_item(session_id, &key).await {
                        // The next sweep downloads it again and finds it stored.
                        tracing::warn!(session_id, key, %error, "cannot drop a done media retry");
                    }
                    self.release_media_claim(session_id, &key).await;
                    return;
                }
                Err(why) => {
                    tracing::debug!(session_id, key, tries, why, "a media download failed again");
                }
            }
        }
    }

    /// Drops this replica's claim of a media retry that is over (a claim left behind only
    /// expires: nothing waits for it, its item is gone).
    async fn release_media_claim(&self, session_id: &str, key: &str) {
        let holder = self.inner.replica_id.as_str();
        if let Err(error) = self
            .inner
            .store
            .release_claim(session_id, key, holder)
            .await
        {
            tracing::debug!(session_id, key, %error, "cannot drop a media retry's claim");
        }
    }

    /// One try of [`retry_media`](Self::retry_media): `Ok(true)` when the file is stored now,
    /// `Ok(false)` when there is nothing to store any more (stored already, or the message
    /// deleted). Errors: why not (the message is not stored yet, the download or storage
    /// failed).
    async fn store_missing_media(
        &self,
        session_id: &str,
        cloud: &WhatsAppCloud,
        media: &MissingMedia,
    ) -> std::result::Result<bool, String> {
        let store = &self.inner.store;
        let reference = MessageRef::Provider {
            chat_id: media.chat_id.clone(),
            provider_message_id: media.wamid.clone(),
        };
        // No download for a message that is not stored (yet).
        store
            .message_by_ref(session_id, &reference)
            .await
            .map_err(|error| error.to_string())?;
        let blob = cloud
            .fetch_media(&media.media_id, media.sha256.as_deref())
            .await?;
        store
            .store_missing_attachment(
                session_id,
                &reference,
                media.ordinal,
                &Attachment {
                    sha256: blob.sha256,
                    size_bytes: blob.size,
                    stored: true,
                    ..Attachment::default()
                },
            )
            .await
            .map_err(|error| error.to_string())
    }
}

/// How long a replica's claim of a media retry lasts, renewed before each pause of `pause`:
/// twice the pause, so that it holds through the pause and the try after it, and a replica
/// that died holds its retries up for at most twice the longest pause.
fn media_claim(pause: Duration) -> i64 {
    (pause * 2).as_millis().try_into().unwrap_or(i64::MAX)
}

/// Sweeps the inbox of each `whatsapp-cloud` session in the background
/// ([`ChatSync::apply_waiting_webhook_items`]): at start-up, then every
/// `inbox_sweep_interval_ms` ([`WhatsAppCloud::inbox_sweep_interval`]), so that a running
/// replica takes up what a dead one left (its media retries, once their claims expire). A
/// storage failure is retried sooner, after a growing pause (1 s doubling, at most 64 s and
/// at most the interval). Ends when the server shuts down.
pub(super) fn spawn_inbox_sweeps(service: ChatSync) {
    let sessions: Vec<(String, Duration)> = service
        .whatsapp_sessions()
        .map(|(id, cloud)| (id.clone(), cloud.inbox_sweep_interval()))
        .collect();
    for (session_id, interval) in sessions {
        let service = service.clone();
        let shutdown = service.inner.shutdown.clone();
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let pause = match service.apply_waiting_webhook_items(&session_id).await {
                    Ok(applied) => {
                        if applied > 0 {
                            tracing::info!(
                                session_id,
                                applied,
                                "applied statuses that waited for their messages"
                            );
                        }
                        failures = 0;
                        interval
                    }
                    Err(error) => {
                        tracing::warn!(session_id, %error, "cannot sweep the webhook inbox; retrying");
                        failures = failures.saturating_add(1);
                        Duration::from_secs(1 << (failures - 1).min(6)).min(interval)
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        });
    }
}

/// Whether a failure is the storage's (worth Meta's redelivery) rather than the item's.
fn retry_worthy(error: &Error) -> bool {
    matches!(
        error,
        Error::Unavailable(_) | Error::Aborted(_) | Error::Storage(_) | Error::LeaseLost(_)
    )
}

//! GetSnapshot: each chat with its newest messages, consistent at one head seq, read as the
//! client takes the frames.
use super::*;

/// One frame of a snapshot (GetSnapshot): one chat, or none in the single frame of a session
/// without chats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFrame {
    /// The seq the whole snapshot is consistent at.
    pub head_seq: u64,
    /// How many frames the snapshot has (at least 1).
    pub n_chats: u32,
    pub chat: Option<Chat>,
    /// The chat's newest messages within the window, oldest first.
    pub messages: Vec<Message>,
    pub unread_count: u64,
    /// Older messages within the window exist beyond `messages`.
    pub has_more: bool,
}

/// How long a snapshot waits for its client to take the next frame before it ends the read
/// transaction and the stream (UNAVAILABLE).
pub const SNAPSHOT_STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// How many snapshots may be in progress at once: half the database connections (SQLite
/// keeps 8 readers), at least 2.
pub fn snapshot_slots(database_url: &str, database_max_connections: u32) -> usize {
    let connections = if database_url.starts_with("sqlite:") {
        8
    } else {
        database_max_connections
    };
    (connections as usize / 2).max(2)
}

impl ChatSync {
    /// A consistent snapshot of the session (GetSnapshot): one frame per chat, newest chat
    /// first, each with its newest `limit_per_chat` messages (`None`: [`DEFAULT_SNAPSHOT_LIMIT`];
    /// 0: none) sent at or after `since_ms`, and its unread count, all read in one read
    /// transaction at the head seq every frame carries. A session without chats gives one
    /// frame without a chat. Frames are read as the stream is consumed (the transaction stays
    /// open until the last one); a frame's messages stop at the page budget (as listings do),
    /// keeping the newest. The stream ends UNAVAILABLE when the server shuts down.
    ///
    /// At most [`snapshot_slots`] snapshots are in progress at once, since each holds a
    /// database connection while its client reads.
    ///
    /// Errors (before the stream starts): `InvalidArgument` for a limit over [`MAX_PAGE`];
    /// `NotFound` for an unknown session or chat; `ResourceExhausted` when every snapshot slot
    /// is taken.
    pub async fn snapshot(
        &self,
        session_id: &str,
        chat_ids: &[String],
        limit_per_chat: Option<u32>,
        since_ms: Option<i64>,
    ) -> Result<ReceiverStream<Result<SnapshotFrame>>> {
        self.source(session_id)?;
        let limit = limit_per_chat.unwrap_or(DEFAULT_SNAPSHOT_LIMIT);
        if limit > MAX_PAGE {
            return Err(Error::InvalidArgument(format!(
                "limit_per_chat {limit} is over the maximum of {MAX_PAGE}"
            )));
        }
        let slot = self
            .inner
            .snapshots
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Error::ResourceExhausted(
                    "the server is serving its maximum of concurrent snapshots; retry later".into(),
                )
            })?;
        let mut snapshot = self
            .inner
            .store
            .snapshot(session_id, chat_ids, since_ms)
            .await?;
        let head_seq = snapshot.head_seq();
        let n_chats = u32::try_from(snapshot.n_chats()).unwrap_or(u32::MAX);
        let budget = self.inner.page_bytes;
        let shutdown = self.shutdown();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let frame = move |chat: Option<Chat>| SnapshotFrame {
            head_seq,
            n_chats: n_chats.max(1),
            chat,
            messages: Vec::new(),
            unread_count: 0,
            has_more: false,
        };
        tokio::spawn(
            async move {
                let _slot = slot;
                if n_chats == 0 {
                    let _ = sender.send(Ok(frame(None))).await;
                    let _ = snapshot.close().await;
                    return;
                }
                loop {
                    let next = tokio::select! {
                        next = snapshot.next_chat(u64::from(limit)) => next,
                        _ = shutdown.cancelled() => {
                            let _ = sender.try_send(Err(Error::Unavailable("the server is shutting down".into())));
                            return;
                        }
                        _ = sender.closed() => return,
                    };
                    let item = match next {
                        Ok(None) => break,
                        Ok(Some(mut chat)) => {
                            let keep = fit_newest(&chat.messages, budget, EncodedLen::encoded_len);
                            let cut = chat.messages.len() - keep;
                            if cut > 0 {
                                chat.messages.drain(..cut);
                                chat.has_more = true;
                            }
                            Ok(SnapshotFrame {
                                messages: chat.messages,
                                unread_count: chat.unread,
                                has_more: chat.has_more,
                                ..frame(Some(chat.chat))
                            })
                        }
                        Err(error) => Err(error),
                    };
                    let failed = item.is_err();
                    tokio::select! {
                        sent = sender.send(item) => if sent.is_err() || failed { return },
                        _ = shutdown.cancelled() => {
                            let _ = sender.try_send(Err(Error::Unavailable("the server is shutting down".into())));
                            return;
                        }
                        _ = tokio::time::sleep(SNAPSHOT_STALL) => {
                            // A client that stops reading would hold the read transaction (and
                            // its pooled connection, and on SQLite the WAL's checkpoints) for as
                            // long as it likes: both are let go, then the client is told.
                            let _ = snapshot.close().await;
                            drop(_slot);
                            let error = Error::Unavailable(format!(
                                "the client read no snapshot frame for {} s; take the snapshot again",
                                SNAPSHOT_STALL.as_secs()
                            ));
                            tokio::select! {
                                _ = sender.send(Err(error)) => {}
                                _ = sender.closed() => {}
                                _ = shutdown.cancelled() => {}
                            }
                            return;
                        }
                    }
                }
                if let Err(error) = snapshot.close().await {
                    tracing::debug!(%error, "cannot end the snapshot's read transaction");
                }
            }
            .in_current_span(),
        );
        Ok(ReceiverStream::new(receiver))
    }
}

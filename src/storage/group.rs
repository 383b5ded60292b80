//! Group commit: concurrent sends and status changes of one session share a write transaction.
//!
//! A [`GroupedWrite`] (SendMessage's insert, UpdateMessageStatus's change) is queued on its
//! session's [`Groups`] queue. The first caller to find no leader spawns one: a task that takes
//! the session's writer turn, drains every write queued by then, runs them all in one
//! [`WriteTxn`] and commits once, then answers each caller and loops while more are queued. So
//! writes that arrive while a transaction is committing share the next one, and a lone write
//! costs the same statements as before.
//!
//! The group's sends are read and inserted in batches (`WriteTxn::insert_sends`), and so are its
//! statuses (`WriteTxn::set_statuses`: one read, one `UPDATE` per resulting status, one insert
//! of the changes), unless one of them sets a provider id (then each runs in turn).
//!
//! Every write still gets its own seq (in queue order) and its own answer:
//! - a write's *own* failure (an unknown chat on a source that refuses it, an unknown message)
//!   is decided from reads before that write changes anything, so it fails that call only and
//!   the transaction goes on;
//! - any other failure (a database error, a failed commit) rolls the whole group back, and its
//!   writes are then run again one transaction each, so only the write that fails alone fails.
//!
//! The leader is a spawned task, not one of the callers: a caller that goes away (a client
//! that disconnects) never strands the others.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::Store;
use crate::error::{Error, Result};
use crate::model::{Message, MessageRef, MessageStatus, MissingChat, NewMessage, StatusError};

/// One write that may share its transaction with others of its session.
#[derive(Debug, Clone)]
pub(super) enum GroupedWrite {
    /// [`Store::insert_outgoing`].
    Send {
        chat_id: String,
        new: NewMessage,
        missing_chat: MissingChat,
    },
    /// [`Store::update_status_because`].
    Status {
        reference: MessageRef,
        status: MessageStatus,
        provider_message_id: Option<String>,
        error: Option<StatusError>,
    },
}

/// What a grouped write answers: the message and whether it was written (`true`) or found
/// already stored / already at that status (`false`).
pub(super) type Answer = Result<(Message, bool)>;

type Waiting = (GroupedWrite, oneshot::Sender<Answer>);

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    /// Whether a leader task is running for this queue.
    leading: bool,
}

/// The per-session group-commit queues of one store, and their counters.
#[derive(Default)]
pub(super) struct Groups {
    queues: Mutex<HashMap<String, Arc<Mutex<Queue>>>>,
    transactions: AtomicU64,
    writes: AtomicU64,
}

/// How many group transactions committed, and how many grouped writes they held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Committed group transactions (a rolled-back group re-run one by one counts each run).
    pub transactions: u64,
    /// Grouped writes answered from those transactions.
    pub writes: u64,
}

impl Groups {
    fn queue(&self, session_id: &str) -> Arc<Mutex<Queue>> {
        lock(&self.queues)
            .entry(session_id.to_owned())
            .or_default()
            .clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Clears a queue's leader flag when its leader task ends without doing so itself (a panic):
/// the waiting callers are answered with an error (their senders drop) and the next caller
/// starts a new leader.
struct LeaderGuard {
    queue: Arc<Mutex<Queue>>,
    finished: bool,
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        if !self.finished {
            let mut queue = lock(&self.queue);
            queue.leading = false;
            queue.waiting.clear();
        }
    }
}

impl Store {
    /// Group-commit statistics since the store was opened.
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            transactions: self.groups.transactions.load(Ordering::Relaxed),
            writes: self.groups.writes.load(Ordering::Relaxed),
        }
    }

    /// Queues `write` for the session's next group transaction and waits for its answer.
    pub(super) async fn grouped(&self, session_id: &str, write: GroupedWrite) -> Answer {
        if self.fence.is_some() {
            // A lease holder's write is checked against its own fence: never grouped with
            // others' (a group runs under its leader's store).
            let turn = self.writers.turn(session_id).await?;
            let mut one = self
                .run_group(session_id, turn, std::slice::from_ref(&write))
                .await?;
            return one
                .pop()
                .ok_or_else(|| Error::Internal("a group of one gave no answer".into()))?;
        }
        let queue = self.groups.queue(session_id);
        let (answer, answered) = oneshot::channel();
        let lead = {
            let mut queue = lock(&queue);
            queue.waiting.push((write, answer));
            !std::mem::replace(&mut queue.leading, true)
        };
        if lead {
            tokio::spawn(self.clone().lead(session_id.to_owned(), queue));
        }
        answered
            .await
            .map_err(|_| Error::Internal("a group commit ended without an answer".into()))?
    }

    /// The leader: runs groups while writes are waiting.
    async fn lead(self, session_id: String, queue: Arc<Mutex<Queue>>) {
        let mut guard = LeaderGuard {
            queue: queue.clone(),
            finished: false,
        };
        loop {
            let turn = self.writers.turn(&session_id).await;
            let group = {
                let mut queue = lock(&queue);
                if queue.waiting.is_empty() {
                    queue.leading = false;
                    guard.finished = true;
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            let (writes, answers): (Vec<_>, Vec<_>) = group.into_iter().unzip();
            let began = std::time::Instant::now();
            let turn = match turn {
                Ok(turn) => turn,
                Err(error) => {
                    // No turn within its bound: every write of the group gets that answer.
                    let message = match error {
                        Error::Unavailable(message) => message,
                        other => other.to_string(),
                    };
                    for answer in answers {
                        let _ = answer.send(Err(Error::Unavailable(message.clone())));
                    }
                    continue;
                }
            };
            let outcomes = match self.run_group(&session_id, turn, &writes).await {
                Ok(outcomes) => outcomes,
                Err(error) if writes.len() == 1 => vec![Err(error)],
                // The database is away, or a lock wait ran out: one by one would only wait
                // again, each. Every write gets the answer; each caller may retry.
                Err(Error::Unavailable(message)) => writes
                    .iter()
                    .map(|_| Err(Error::Unavailable(message.clone())))
                    .collect(),
                Err(error) => {
                    tracing::warn!(
                        session_id,
                        writes = writes.len(),
                        %error,
                        "a group transaction failed; running its writes one by one"
                    );
                    let mut outcomes = Vec::with_capacity(writes.len());
                    for write in &writes {
                        let outcome = async {
                            let turn = self.writers.turn(&session_id).await?;
                            self.run_group(&session_id, turn, std::slice::from_ref(write))
                                .await
                        }
                        .await
                        .and_then(|mut one| {
                            one.pop().ok_or_else(|| {
                                Error::Internal("a group of one gave no answer".into())
                            })
                        })
                        .and_then(|answer| answer);
                        outcomes.push(outcome);
                    }
                    outcomes
                }
            };
            tracing::debug!(
                session_id,
                writes = writes.len(),
                micros = began.elapsed().as_micros() as u64,
                "group committed"
            );
            for (answer, outcome) in answers.into_iter().zip(outcomes) {
                // The caller may be gone (a client that disconnected): its write stands.
                let _ = answer.send(outcome);
            }
        }
    }

    /// Runs `writes` in one transaction and commits. The outer error is the group's (nothing
    /// was committed); the inner results are each write's own.
    async fn run_group(
        &self,
        session_id: &str,
        turn: tokio::sync::OwnedMutexGuard<()>,
        writes: &[GroupedWrite],
    ) -> Result<Vec<Answer>> {
        let mut txn = self.write_in_turn(session_id, turn).await?;
        let mut outcomes: Vec<Option<Answer>> = writes.iter().map(|_| None).collect();
        let sends: Vec<(usize, &str, &NewMessage, MissingChat)> = writes
            .iter()
            .enumerate()
            .filter_map(|(i, write)| match write {
                GroupedWrite::Send {
                    chat_id,
                    new,
                    missing_chat,
                } => Some((i, chat_id.as_str(), new, *missing_chat)),
                GroupedWrite::Status { .. } => None,
            })
            .collect();
        if !sends.is_empty() {
            let answers = txn.insert_sends(&sends).await?;
            for ((i, ..), answer) in sends.iter().zip(answers) {
                outcomes[*i] = Some(answer);
            }
        }
        // Statuses go in one batch, unless one sets a provider id (a send's answer): a later
        // status may name the message by that id, so then each is run in turn.
        let statuses: Vec<(usize, &GroupedWrite)> = writes
            .iter()
            .enumerate()
            .filter(|(_, write)| matches!(write, GroupedWrite::Status { .. }))
            .collect();
        let batch = statuses.len() > 1
            && statuses.iter().all(|(_, write)| {
                matches!(
                    write,
                    GroupedWrite::Status {
                        provider_message_id: None,
                        ..
                    }
                )
            });
        if batch {
            let changes: Vec<(&MessageRef, MessageStatus, Option<&StatusError>)> = statuses
                .iter()
                .filter_map(|(_, write)| match write {
                    GroupedWrite::Status {
                        reference,
                        status,
                        error,
                        ..
                    } => Some((reference, *status, error.as_ref())),
                    GroupedWrite::Send { .. } => None,
                })
                .collect();
            let answers = txn.set_statuses(&changes).await?;
            for ((i, _), answer) in statuses.iter().zip(answers) {
                outcomes[*i] = Some(answer);
            }
        } else {
            for (i, write) in statuses {
                if let GroupedWrite::Status {
                    reference,
                    status,
                    provider_message_id,
                    error,
                } = write
                {
                    let answer = txn
                        .set_status(
                            reference,
                            *status,
                            provider_message_id.as_deref(),
                            error.as_ref(),
                        )
                        .await?;
                    outcomes[i] = Some(answer);
                }
            }
        }
        txn.commit().await?;
        self.groups.transactions.fetch_add(1, Ordering::Relaxed);
        self.groups
            .writes
            .fetch_add(writes.len() as u64, Ordering::Relaxed);
        Ok(outcomes
            .into_iter()
            .map(|outcome| {
                outcome
                    .unwrap_or_else(|| Err(Error::Internal("a grouped write was skipped".into())))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Change, MessageKind, NO_PEOPLE};
    use crate::storage::ImportChat;

    /// Status changes queued while the session's writer turn is held share one transaction
    /// (the batched path, `WriteTxn::set_statuses`): each gets its own answer and seq, in
    /// order; a later change of a message sees the earlier one; a status never goes back;
    /// FAILED keeps its error; an unknown message fails only its own change.
    #[tokio::test]
    async fn a_group_of_statuses_is_decided_in_order_and_written_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/c.db", dir.path().display()))
            .await
            .unwrap();
        store.ensure_session("s", "test").await.unwrap();
        let messages: Vec<NewMessage> = (0..2)
            .map(|i| NewMessage {
                provider_message_id: format!("m{i}"),
                sender: "me".into(),
                text: format!("text {i}"),
                kind: MessageKind::Text,
                status: MessageStatus::Sent,
                from_me: true,
                sent_at_ms: 1_600_000_000_000 + i,
                ..NewMessage::default()
            })
            .collect();
        let chat = ImportChat {
            chat_id: "a",
            name: "a",
            messages: &messages,
            may_be_stored: false,
            people: &NO_PEOPLE,
        };
        store.import("s", &[chat]).await.unwrap();
        let head = store.session("s").await.unwrap().head_seq;
        assert_eq!(head, 3, "the chat and its two messages");
        let provider = |id: &str| MessageRef::Provider {
            chat_id: "a".into(),
            provider_message_id: id.into(),
        };
        let error = StatusError {
            code: 131026,
            title: "Message undeliverable".into(),
        };
        let writes = vec![
            (provider("m0"), MessageStatus::Delivered, None),
            (provider("m0"), MessageStatus::Read, None),
            // Backwards after the READ just before it in the same group.
            (provider("m0"), MessageStatus::Delivered, None),
            (provider("m1"), MessageStatus::Failed, Some(error.clone())),
            (provider("nope"), MessageStatus::Read, None),
        ];
        let before = store.group_commit_stats();
        // Hold the session's writer turn so that every write is queued before the leader runs.
        let turn = store.writers.turn("s").await.unwrap();
        let mut calls = Vec::new();
        for (reference, status, error) in writes.clone() {
            let caller = store.clone();
            calls.push(tokio::spawn(async move {
                caller
                    .advance_status("s", &reference, status, None, error.as_ref())
                    .await
            }));
            // Each call is queued before the next starts: the answers' order is the queue's.
            let queue = store.groups.queue("s");
            let queued = calls.len();
            while lock(&queue).waiting.len() < queued {
                tokio::task::yield_now().await;
            }
        }
        drop(turn);
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap());
        }
        let after = store.group_commit_stats();
        assert_eq!(
            after.transactions - before.transactions,
            1,
            "one transaction"
        );
        assert_eq!(after.writes - before.writes, writes.len() as u64);
        let outcome: Vec<Option<(String, MessageStatus, bool)>> = answers
            .iter()
            .map(|answer| {
                answer
                    .as_ref()
                    .ok()
                    .map(|(m, changed)| (m.provider_message_id.clone(), m.status, *changed))
            })
            .collect();
        assert_eq!(
            outcome,
            vec![
                Some(("m0".into(), MessageStatus::Delivered, true)),
                Some(("m0".into(), MessageStatus::Read, true)),
                Some(("m0".into(), MessageStatus::Read, false)),
                Some(("m1".into(), MessageStatus::Failed, true)),
                None,
            ]
        );
        assert!(
            matches!(answers[4], Err(Error::NotFound(_))),
            "{:?}",
            answers[4]
        );
        // The stored rows and the change feed: three status changes with consecutive seqs.
        let stored = |id: &str| {
            let store = store.clone();
            let reference = provider(id);
            async move { store.message_by_ref("s", &reference).await.unwrap().status }
        };
        assert_eq!(stored("m0").await, MessageStatus::Read);
        assert_eq!(stored("m1").await, MessageStatus::Failed);
        let now = store.session("s").await.unwrap().head_seq;
        let (changes, _) = store.changes("s", &[], head, now, 100).await.unwrap();
        let logged: Vec<(u64, String, MessageStatus, Option<StatusError>)> = changes
            .into_iter()
            .filter_map(|change| match change {
                Change::StatusUpdated(update) => Some((
                    update.seq,
                    update.provider_message_id,
                    update.status,
                    update.error,
                )),
                _ => None,
            })
            .collect();
        assert_eq!(
            logged,
            vec![
                (head + 1, "m0".into(), MessageStatus::Delivered, None),
                (head + 2, "m0".into(), MessageStatus::Read, None),
                (head + 3, "m1".into(), MessageStatus::Failed, Some(error)),
            ]
        );
    }
}

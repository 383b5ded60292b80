//! The `telegram-export` source: Telegram Desktop JSON exports (`result.json`).
//!
//! Settings (`[[sessions]]` keys):
//! - `path`: a `result.json` file or a folder whose `.json` files (also one level of
//!   sub-folders) are exports. A file may hold one chat or a whole-account export with
//!   `chats.list`; see [`parser`].
//! - `timezone`: IANA zone of the computer that exported, default `UTC`. It is used only for
//!   messages without `date_unixtime` (exports before 2021), whose `date` is local time.
//!
//! Chat ids are `tg-{telegram chat id}`; message ids are Telegram's own. Records without an id
//! (minimal exports) get a derived id, as WhatsApp messages do.
//!
//! A file that cannot be read or parsed does not fail the sync run: it is listed as one chat
//! (`tg-file-{hash of the path}`, named after the file) whose history fails, so the run reports
//! it as CHAT_FAILED with the parser's error and goes on with the other files.
//!
//! Media: a message's `photo` and `file` are paths relative to the export file's folder; the
//! files found there (read within the export limits) go to the blob store and become the
//! message's attachments (the message is then kind MEDIA, its text the caption). A file not
//! exported (Telegram's "File not included" note, or a missing path) is an attachment with
//! `stored = false`.
pub mod parser;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono_tz::Tz;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{
    ChatHistory, ExportLimits, Source, SourceChat, SourceContext, SourceError, keep_most_recent,
    media,
};
use crate::model::{
    Forwarded, MemberEvent, Membership, MessageKind, MessageStatus, NewContact, NewMessage, People,
    Reaction,
};
use crate::sources::SessionConfig;
use parser::TelegramChat;

/// The source kind in the configuration.
pub const KIND: &str = "telegram-export";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    path: PathBuf,
    #[serde(default)]
    timezone: Option<String>,
}

/// Telegram Desktop exports. See the module docs.
pub struct TelegramExport {
    path: PathBuf,
    timezone: Tz,
    limits: ExportLimits,
    /// Chats parsed by the last `list_chats`, by chat id: listing has to parse the files, so
    /// the run's `fetch_history` calls reuse the result instead of parsing again. A file that
    /// could not be parsed is held as its error.
    parsed: Mutex<HashMap<String, Result<Arc<TelegramChat>, String>>>,
    /// The blob store (where the `photo` and `file` bytes go) and the store.
    context: SourceContext,
}

impl TelegramExport {
    /// Builds the source from a session's settings.
    pub fn build(
        config: &SessionConfig,
        context: &SourceContext,
    ) -> Result<Arc<dyn Source>, String> {
        let settings: Settings = super::settings(config)?;
        Ok(Arc::new(Self {
            path: settings.path,
            timezone: super::export::parse_timezone(settings.timezone.as_deref())?,
            limits: context.export_limits,
            parsed: Mutex::default(),
            context: context.clone(),
        }))
    }
}

#[async_trait]
impl Source for TelegramExport {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn list_chats(&self) -> Result<Vec<SourceChat>, SourceError> {
        let path = self.path.clone();
        let timezone = self.timezone;
        let limits = self.limits;
        let files = tokio::task::spawn_blocking(move || -> Result<_, SourceError> {
            let mut parsed = Vec::new();
            for file in export_files(&path)? {
                let chats = read_file(&file, &limits)
                    .map_err(|error| error.to_string())
                    .and_then(|bytes| {
                        parser::parse(&bytes, timezone)
                            .map_err(|error| format!("{}: {error}", super::shown(&file)))
                    });
                parsed.push((file, chats));
            }
            Ok(parsed)
        })
        .await
        .map_err(|error| SourceError::Invalid(format!("listing task failed: {error}")))??;

        let mut chats = Vec::new();
        let mut cache = HashMap::new();
        for (file, file_chats) in files {
            let file_chats = match file_chats {
                Ok(file_chats) => file_chats,
                Err(error) => {
                    tracing::warn!(path = %file.display(), %error, "telegram export cannot be parsed");
                    let digest = Sha256::digest(file.display().to_string());
                    let chat_id = format!("tg-file-{}", hex::encode(&digest[..4]));
                    let name = file
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("result.json")
                        .to_owned();
                    chats.push(SourceChat {
                        chat_id: chat_id.clone(),
                        name,
                        locator: file.display().to_string(),
                    });
                    cache.insert(chat_id, Err(error));
                    continue;
                }
            };
            for chat in file_chats {
                let chat_id = match chat.id {
                    Some(id) => format!("tg-{id}"),
                    None => {
                        let digest = Sha256::digest(format!("{}\0{}", file.display(), chat.name));
                        format!("tg-x{}", hex::encode(&digest[..4]))
                    }
                };
                chats.push(SourceChat {
                    chat_id: chat_id.clone(),
                    name: chat.name.clone(),
                    locator: file.display().to_string(),
                });
                cache.insert(chat_id, Ok(Arc::new(chat)));
            }
        }
        *self.parsed.lock().unwrap_or_else(|p| p.into_inner()) = cache;
        Ok(chats)
    }

    async fn fetch_history(
        &self,
        chat: &SourceChat,
        limit: Option<usize>,
    ) -> Result<ChatHistory, SourceError> {
        let parsed = self
            .parsed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&chat.chat_id)
            .cloned()
            .ok_or_else(|| {
                SourceError::Invalid(format!("chat {} is no longer in the export", chat.chat_id))
            })?
            .map_err(SourceError::Invalid)?;
        let mut history = history_from_chat(&chat.chat_id, &parsed);
        keep_most_recent(&mut history.messages, limit);
        // The kept messages are the last ones of the chat: attach their files, read from the
        // folder of the export file (paths in it are relative to it).
        let folder = Path::new(&chat.locator)
            .parent()
            .map(Path::to_owned)
            .unwrap_or_default();
        let (context, limits) = (self.context.clone(), self.limits);
        let chat_id = chat.chat_id.clone();
        tokio::task::spawn_blocking(move || {
            let skipped = parsed.messages.len() - history.messages.len();
            let kept = &parsed.messages[skipped..];
            if kept.iter().all(|raw| raw.media_files.is_empty()) {
                return history;
            }
            // Stored messages are skipped by storage: their files are not read again.
            let stored = media::stored_ids_blocking(&context, &chat_id);
            for (message, raw) in history.messages.iter_mut().zip(kept) {
                if stored.contains(&message.provider_message_id) {
                    continue;
                }
                for file in &raw.media_files {
                    let mime = raw.mime_type.as_deref();
                    message.attachments.push(media::store_file_blocking(
                        context.blobs.as_ref(),
                        &folder,
                        file,
                        mime,
                        &limits,
                    ));
                }
                if !message.attachments.is_empty() {
                    message.kind = MessageKind::Media;
                }
            }
            history
        })
        .await
        .map_err(|error| SourceError::Invalid(format!("media task failed: {error}")))
    }
}

/// Converts a parsed chat into messages with provider ids, in file order.
pub fn history_from_chat(chat_id: &str, chat: &TelegramChat) -> ChatHistory {
    let mut occurrences: HashMap<String, u32> = HashMap::new();
    let messages = chat
        .messages
        .iter()
        .map(|message| {
            let provider_message_id = match message.id {
                Some(id) => id.to_string(),
                None => {
                    let digest = Sha256::digest(format!(
                        "{chat_id}\0{}\0{}\0{}",
                        message.sent_at_unix,
                        message.sender.as_deref().unwrap_or_default(),
                        message.text
                    ));
                    let key = hex::encode(&digest[..12]);
                    let occurrence = occurrences.entry(key.clone()).or_insert(0);
                    *occurrence += 1;
                    format!("x{key}-{}", *occurrence - 1)
                }
            };
            NewMessage {
                provider_message_id,
                client_message_id: None,
                sender: message.sender.clone().unwrap_or_default(),
                text: message.text.clone(),
                kind: message.kind,
                status: MessageStatus::Sent,
                from_me: false,
                sent_at_ms: message.sent_at_unix.saturating_mul(1000),
                attachments: Vec::new(),
                // Telegram's message ids are the provider ids of the messages that have one.
                reply_to: message.reply_to.map(|id| id.to_string()),
                forwarded: if message.forwarded {
                    Forwarded::Once
                } else {
                    Forwarded::No
                },
                forwarded_from: message.forwarded_from.clone(),
                edited: message.edited,
                edited_at_ms: message.edited_at_unix.map(|at| at.saturating_mul(1000)),
                reactions: message
                    .reactions
                    .iter()
                    .map(|reaction| Reaction {
                        emoji: reaction.emoji.clone(),
                        sender: reaction.sender().to_owned(),
                        at_ms: reaction.at_unix.saturating_mul(1000),
                        provider_reaction_id: None,
                    })
                    .collect(),
            }
        })
        .collect();
    let unattributed: u64 = chat
        .messages
        .iter()
        .map(|message| message.unattributed_reactions)
        .sum();
    if unattributed > 0 {
        tracing::debug!(
            chat_id,
            unattributed,
            "telegram reactions without a sender in `recent` are not stored"
        );
    }
    ChatHistory {
        messages,
        people: people(chat),
        unplaced_lines: chat.skipped as u64,
        content_sha256: None,
    }
}

/// The people of a chat: every sender (`from_id` / `actor_id`, named by `from` / `actor`) and
/// every reactor with a `from_id` is a contact and a participant; the members a service message
/// adds or removes join or leave.
/// `members` lists names only: a name resolves to the id it is sent under in the chat, else
/// to `tg:name:` and the first 16 hex digits of its SHA-256.
fn people(chat: &TelegramChat) -> People {
    let mut ids: HashMap<&str, &str> = HashMap::new();
    for message in &chat.messages {
        if let (Some(name), Some(id)) = (&message.sender, &message.sender_id) {
            ids.entry(name).or_insert(id);
        }
    }
    let contact_of = |name: &str| -> NewContact {
        let contact_id = match ids.get(name) {
            Some(id) => (*id).to_owned(),
            None => {
                let digest = Sha256::digest(name.as_bytes());
                let hex = hex::encode(&digest[..8]);
                format!("tg:name:{hex}")
            }
        };
        NewContact {
            contact_id,
            display_name: name.to_owned(),
            phone: None,
            matrix_id: None,
        }
    };
    let mut people = People::default();
    let mut add = |contact: NewContact, membership: Membership, at_ms: i64| {
        people.members.push(MemberEvent {
            contact_id: contact.contact_id.clone(),
            membership,
            at_ms,
        });
        people.contacts.push(contact);
    };
    for message in &chat.messages {
        let at_ms = message.sent_at_unix.saturating_mul(1000);
        let sender = match (&message.sender_id, &message.sender) {
            (Some(id), name) => Some(NewContact {
                contact_id: id.clone(),
                display_name: name.clone().unwrap_or_default(),
                phone: None,
                matrix_id: None,
            }),
            (None, Some(name)) => Some(contact_of(name)),
            (None, None) => None,
        };
        if let Some(sender) = sender {
            add(sender, Membership::Seen, at_ms);
        }
        if let Some(change) = &message.membership {
            for name in &change.names {
                add(contact_of(name), change.membership, at_ms);
            }
        }
        // A reactor named by id is a contact too, so a client can show the name behind a
        // reaction's sender.
        for reaction in &message.reactions {
            if let Some(id) = &reaction.from_id {
                let contact = NewContact {
                    contact_id: id.clone(),
                    display_name: reaction.from.clone().unwrap_or_default(),
                    phone: None,
                    matrix_id: None,
                };
                add(
                    contact,
                    Membership::Seen,
                    reaction.at_unix.saturating_mul(1000),
                );
            }
        }
    }
    people
}

/// Reads one export file within `limits.max_bytes`.
fn read_file(path: &Path, limits: &ExportLimits) -> Result<Vec<u8>, SourceError> {
    let shown = super::shown(path);
    let file = std::fs::File::open(path).map_err(|source| SourceError::Io {
        context: format!("cannot read {shown}"),
        source,
    })?;
    let declared = file.metadata().ok().map(|metadata| metadata.len());
    if declared.is_some_and(|len| len > limits.max_bytes) {
        return Err(super::too_large(&shown, limits));
    }
    super::read_bounded(file, &shown, declared, None, limits)
}

/// The export files under `path`: the file itself, or the `.json` files of the folder and of
/// its direct sub-folders, sorted.
fn export_files(path: &Path) -> Result<Vec<PathBuf>, SourceError> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let read = |dir: &Path| {
        std::fs::read_dir(dir).map_err(|source| SourceError::Io {
            context: format!("cannot read export folder {}", super::shown(dir)),
            source,
        })
    };
    let mut files = Vec::new();
    for entry in read(path)?.flatten() {
        let entry_path = entry.path();
        if entry_path.is_dir() {
            for inner in read(&entry_path)?.flatten() {
                if is_json(&inner.path()) {
                    files.push(inner.path());
                }
            }
        } else if is_json(&entry_path) {
            files.push(entry_path);
        }
    }
    files.sort();
    Ok(files)
}

fn is_json(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_fields_reach_new_message_and_reactors_become_contacts() {
        let input = r#"{"name": "G", "type": "private_group", "id": 3, "messages": [
            {"id": 10, "type": "message", "date_unixtime": "1000", "from": "Ann",
             "from_id": "user1", "text": "q"},
            {"id": 11, "type": "message", "date_unixtime": "1001", "from": "Bob",
             "from_id": "user2", "text": "a", "reply_to_message_id": 10,
             "forwarded_from": null, "edited": "1970-01-01T00:20:00", "edited_unixtime": "1200",
             "reactions": [{"type": "emoji", "count": 2, "emoji": "👍", "recent": [
               {"from": "Cy", "from_id": "user3", "date": "1970-01-01T00:30:00"},
               {"from": "Dee", "date": "1970-01-01T00:31:00"}]}]},
            {"type": "message", "date_unixtime": "1002", "from": "Bob", "text": "no id",
             "reply_to_message_id": 11, "forwarded_from": "News"}
        ]}"#;
        let chat = parser::parse(input.as_bytes(), Tz::UTC)
            .expect("parses")
            .remove(0);
        let history = history_from_chat("tg-3", &chat);
        let [first, second, third] = &history.messages[..] else {
            panic!("three messages: {:?}", history.messages);
        };
        assert_eq!(first.reply_to, None);
        assert_eq!(first.forwarded, Forwarded::No);
        assert!(!first.edited && first.reactions.is_empty());
        assert_eq!(second.reply_to.as_deref(), Some("10"));
        assert_eq!(
            (second.forwarded, second.forwarded_from.as_deref()),
            (Forwarded::Once, None)
        );
        assert_eq!(
            (second.edited, second.edited_at_ms),
            (true, Some(1_200_000))
        );
        assert_eq!(
            second.reactions,
            vec![
                Reaction {
                    emoji: "👍".to_owned(),
                    sender: "user3".to_owned(),
                    at_ms: 1_800_000,
                    provider_reaction_id: None,
                },
                Reaction {
                    emoji: "👍".to_owned(),
                    sender: "Dee".to_owned(),
                    at_ms: 1_860_000,
                    provider_reaction_id: None,
                },
            ]
        );
        assert!(second.has_relations());
        assert!(third.provider_message_id.starts_with('x'));
        assert_eq!(third.reply_to.as_deref(), Some("11"));
        assert_eq!(
            (third.forwarded, third.forwarded_from.as_deref()),
            (Forwarded::Once, Some("News"))
        );
        // The reactor with an id is a contact named after `from`; the one without is not.
        let reactor = history
            .people
            .contacts
            .iter()
            .find(|c| c.contact_id == "user3")
            .expect("reactor contact");
        assert_eq!(reactor.display_name, "Cy");
        assert!(
            history
                .people
                .contacts
                .iter()
                .all(|c| c.display_name != "Dee")
        );
        assert!(
            history
                .people
                .members
                .iter()
                .any(|m| m.contact_id == "user3"
                    && m.membership == Membership::Seen
                    && m.at_ms == 1_800_000)
        );
    }
}

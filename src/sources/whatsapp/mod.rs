//! The `whatsapp-export` source: a folder of WhatsApp "Export chat" files.
//!
//! Settings (`[[sessions]]` keys):
//! - `path`: the folder. It holds `.txt` exports, `.zip` exports containing `_chat.txt` (or
//!   one `.txt`), or sub-folders holding an unzipped `_chat.txt`. One file is one chat.
//! - `timezone`: IANA zone the export's wall-clock times are in. Default `UTC`.
//! - `date_order`: `auto` (default), `dmy`, `mdy` or `ymd`: decides files whose dates cannot
//!   decide themselves (see [`parser`]).
//!
//! Chat names come from the file name (`WhatsApp Chat with NAME.txt`,
//! `WhatsApp Chat - NAME.zip`, and the same in other phone languages); the `chat_id` is
//! derived from the name alone, so a re-export of the same chat maps to the same chat.
//! Exports carry no message ids, so `provider_message_id` is a hash of the chat id, the
//! timestamp, the sender, the text and the position among identical entries: re-importing the
//! same file, or a later export holding more messages, adds only the new ones.
//!
//! Media: a line `<attached: NAME>` (iOS) or `NAME (file attached)` (Android, in the phone
//! languages the parser knows) is matched to the file NAME in the same zip (or beside an
//! unzipped `_chat.txt`); its bytes go to the blob store, read within the export limits, and
//! become the message's attachment. A file that is not there gives an attachment with
//! `stored = false`, never an error.
pub mod day_periods;
mod day_periods_cldr;
pub mod marks;
mod members;
mod normalise;
pub mod parser;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDateTime;
use chrono_tz::Tz;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{
    ChatHistory, ExportLimits, Source, SourceChat, SourceContext, SourceError, apply_window, media,
};
use crate::blobs::BlobStore;
use crate::model::{Attachment, MessageKind, MessageStatus, NewMessage};
use crate::sources::SessionConfig;
use crate::sources::export::{parse_timezone, to_utc_ms};
use parser::{DateOrder, ParseOptions};

/// The source kind in the configuration.
pub const KIND: &str = "whatsapp-export";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    path: PathBuf,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    date_order: DateOrder,
}

/// A folder of WhatsApp exports. See the module docs.
pub struct WhatsAppExport {
    folder: PathBuf,
    timezone: Tz,
    options: ParseOptions,
    limits: ExportLimits,
    /// The blob store (where media files found in the exports go) and the store.
    context: SourceContext,
}

impl WhatsAppExport {
    /// Builds the source from a session's settings.
    pub fn build(
        config: &SessionConfig,
        context: &SourceContext,
    ) -> Result<Arc<dyn Source>, String> {
        let settings: Settings = super::settings(config)?;
        Ok(Arc::new(Self {
            folder: settings.path,
            timezone: parse_timezone(settings.timezone.as_deref())?,
            options: ParseOptions {
                date_order: settings.date_order,
            },
            limits: context.export_limits,
            context: context.clone(),
        }))
    }
}

#[async_trait]
impl Source for WhatsAppExport {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn list_chats(&self) -> Result<Vec<SourceChat>, SourceError> {
        let folder = self.folder.clone();
        tokio::task::spawn_blocking(move || list_exports(&folder))
            .await
            .map_err(|error| SourceError::Invalid(format!("listing task failed: {error}")))?
    }

    fn chat_file(&self, chat: &SourceChat) -> Option<PathBuf> {
        Some(PathBuf::from(&chat.locator))
    }

    async fn fetch_history(
        &self,
        chat: &SourceChat,
        limit: Option<usize>,
    ) -> Result<ChatHistory, SourceError> {
        self.fetch_history_since(chat, limit, None).await
    }

    /// The window is applied before the messages' files are read: a windowed sync reads only
    /// the files of the messages it keeps.
    async fn fetch_history_since(
        &self,
        chat: &SourceChat,
        limit: Option<usize>,
        since_ms: Option<i64>,
    ) -> Result<ChatHistory, SourceError> {
        let path = PathBuf::from(&chat.locator);
        let chat_id = chat.chat_id.clone();
        let timezone = self.timezone;
        let options = self.options.clone();
        let limits = self.limits;
        let context = self.context.clone();
        tokio::task::spawn_blocking(move || {
            let bytes = read_export(&path, &limits)?;
            let parsed = parser::parse(&bytes, &options);
            log_unplaced(&chat_id, &path, &parsed);
            log_date_order(&chat_id, &path, &parsed);
            let mut history = history_from_parsed(&chat_id, parsed, timezone);
            apply_window(&mut history.messages, limit, since_ms);
            attach_media(
                &path,
                &mut history.messages,
                &context.blobs,
                &limits,
                || media::stored_ids_blocking(&context, &chat_id),
            );
            // A plain file's bytes are the file: their hash is the file's (a zip's are not).
            if !is_zip(&path) {
                history.content_sha256 = Some(Sha256::digest(&bytes).into());
            }
            Ok(history)
        })
        .await
        .map_err(|error| SourceError::Invalid(format!("import task failed: {error}")))?
    }
}

/// Logs a file's unplaced-line count at INFO, with the first unplaced line (number, reason
/// and text), so that a user can report an export variant the parser does not know yet; the
/// next few follow at DEBUG.
fn log_unplaced(chat_id: &str, path: &Path, parsed: &parser::ParsedExport) {
    let Some(first) = parsed.unplaced.first() else {
        return;
    };
    tracing::info!(
        chat_id,
        path = %path.display(),
        unplaced_lines = parsed.unplaced.len(),
        messages = parsed.messages.len(),
        first_line = first.line,
        first_reason = first.reason,
        first_text = %first.text,
        "export lines could not be placed in any message"
    );
    for unplaced in parsed.unplaced.iter().skip(1).take(5) {
        tracing::debug!(chat_id, line = unplaced.line, reason = unplaced.reason, text = %unplaced.text, "unplaced line");
    }
}

/// Logs at INFO which order a file's dates were read in and which rule decided it
/// ([`parser::DateOrderRule`]), e.g. `date order month-first: decided by 12-hour clock with
/// AM/PM, US style (no date had a field above 12)`.
fn log_date_order(chat_id: &str, path: &Path, parsed: &parser::ParsedExport) {
    let (Some(order), Some(rule)) = (parsed.date_order, parsed.date_order_rule) else {
        return;
    };
    let order = match order {
        DateOrder::Mdy => "month-first",
        DateOrder::Ymd => "year-first",
        DateOrder::Dmy | DateOrder::Auto => "day-first",
    };
    tracing::info!(
        chat_id,
        path = %path.display(),
        "date order {order}: decided by {}",
        rule.describe()
    );
}

/// Parses one export's bytes into messages with derived ids, oldest first in file order.
pub fn history_from_export(
    chat_id: &str,
    bytes: &[u8],
    options: &ParseOptions,
    timezone: Tz,
) -> ChatHistory {
    history_from_parsed(chat_id, parser::parse(bytes, options), timezone)
}

/// Turns a parsed export into messages with derived ids, oldest first in file order.
fn history_from_parsed(chat_id: &str, parsed: parser::ParsedExport, timezone: Tz) -> ChatHistory {
    let mut occurrences: HashMap<[u8; 16], u32> = HashMap::with_capacity(parsed.messages.len());
    let messages = parsed
        .messages
        .into_iter()
        .map(|message| {
            let sender = message.sender.unwrap_or_default();
            // Ids hash the body as written, edit mark included, as before marks were removed.
            let digest = entry_digest(
                chat_id,
                &message.timestamp,
                &sender,
                &message.text,
                &message.edit_suffix,
            );
            let occurrence = occurrences.entry(digest).or_insert(0);
            let mut provider_message_id = hex::encode(digest);
            provider_message_id.push('-');
            let _ =
                std::fmt::Write::write_fmt(&mut provider_message_id, format_args!("{occurrence}"));
            *occurrence += 1;
            NewMessage {
                provider_message_id,
                client_message_id: None,
                sender,
                // A message deleted for everyone keeps no text: the export's sentence ("This
                // message was deleted") is what its kind says. The id above hashed it.
                text: if message.kind == MessageKind::Deleted {
                    String::new()
                } else {
                    message.text
                },
                kind: message.kind,
                status: MessageStatus::Sent,
                from_me: false,
                sent_at_ms: to_utc_ms(&message.timestamp, timezone),
                attachments: Vec::new(),
                // An export marks an edit, not when it was made.
                edited: message.edited,
                ..NewMessage::default()
            }
        })
        .collect::<Vec<_>>();
    ChatHistory {
        people: members::people(&messages),
        messages,
        unplaced_lines: parsed.unplaced.len() as u64,
        content_sha256: None,
    }
}

/// The digest of a message's id: chat, time, sender and body as written (`text` followed by
/// `edit_suffix`, the edit mark the parser removed), format characters ignored.
fn entry_digest(
    chat_id: &str,
    timestamp: &NaiveDateTime,
    sender: &str,
    text: &str,
    edit_suffix: &str,
) -> [u8; 16] {
    let mut hasher = Sha256::new();
    hasher.update(chat_id.as_bytes());
    hasher.update([0]);
    hasher.update(timestamp.and_utc().timestamp().to_le_bytes());
    hasher.update(sender.as_bytes());
    hasher.update([0]);
    // Texts keep their format characters, but ids ignore them: ids derived before texts kept
    // them stay the same, so re-importing an export adds nothing.
    for piece in parser::mark_free_pieces(text).chain(parser::mark_free_pieces(edit_suffix)) {
        hasher.update(piece.as_bytes());
    }
    let full = hasher.finalize();
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&full[..16]);
    digest
}

/// The exports in `folder`, sorted by chat name.
fn list_exports(folder: &Path) -> Result<Vec<SourceChat>, SourceError> {
    let entries = std::fs::read_dir(folder).map_err(|source| SourceError::Io {
        context: format!("cannot read export folder {}", super::shown(folder)),
        source,
    })?;
    let mut chats = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        let locator = if path.is_dir() {
            let inner = path.join("_chat.txt");
            if !inner.is_file() {
                continue;
            }
            inner
        } else {
            let lower = file_name.to_lowercase();
            if !(lower.ends_with(".txt") || lower.ends_with(".zip")) {
                continue;
            }
            path.clone()
        };
        let name = chat_name_from_path(&path);
        chats.push(SourceChat {
            chat_id: chat_id_for_name(&name),
            name,
            locator: locator.display().to_string(),
        });
    }
    chats.sort_by(|a, b| a.name.cmp(&b.name).then(a.locator.cmp(&b.locator)));
    Ok(chats)
}

/// Prefixes WhatsApp puts before the chat name in export file names, by phone language.
const NAME_PREFIXES: &[&str] = &[
    "WhatsApp Chat with ",
    "WhatsApp Chat - ",
    "WhatsApp Chat mit ",
    "WhatsApp-Chat mit ",
    "Chat de WhatsApp con ",
    "Conversa do WhatsApp com ",
    "Discussion WhatsApp avec ",
    "Chat WhatsApp con ",
    "WhatsApp-chat met ",
    "Чат WhatsApp с ",
];

/// The chat name an export's path implies: the file (or folder) name without extension and
/// without the "WhatsApp Chat with " prefix. A bare `_chat.txt` takes its folder's name.
pub fn chat_name_from_path(path: &Path) -> String {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let stem = if stem == "_chat" {
        path.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or(stem)
    } else {
        stem
    };
    let name = NAME_PREFIXES
        .iter()
        .find_map(|prefix| stem.strip_prefix(prefix))
        .unwrap_or(stem)
        .trim();
    if name.is_empty() {
        stem.to_owned()
    } else {
        name.to_owned()
    }
}

/// The stable chat id for a chat name: a readable slug plus a short hash of the exact name,
/// e.g. `family-group-3fa2c1d0`.
pub fn chat_id_for_name(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    for ch in name.chars().flat_map(char::to_lowercase) {
        if ch.is_alphanumeric() {
            slug.push(ch);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 48 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let digest = Sha256::digest(name.as_bytes());
    let short = hex::encode(&digest[..4]);
    if slug.is_empty() {
        format!("chat-{short}")
    } else {
        format!("{slug}-{short}")
    }
}

/// Attaches to each media message the file it names ([`parser::attachment_name`]): from the
/// same zip (an entry of that name in any folder of it), or, for an unzipped `_chat.txt`,
/// from its folder. Each file is read within `limits` and stored in `blobs`. A file that is
/// not there (a `.txt` export has none), cannot be read, or is over a limit gives an
/// attachment with `stored = false`; the message is imported either way. Messages whose
/// provider id is among `stored_ids()` (called once, only when some message names a file) are
/// stored already and skipped: their files are not read again.
fn attach_media(
    path: &Path,
    messages: &mut [NewMessage],
    blobs: &Arc<dyn BlobStore>,
    limits: &ExportLimits,
    stored_ids: impl FnOnce() -> std::collections::HashSet<String>,
) {
    let blobs = blobs.as_ref();
    let mut named: Vec<(usize, String)> = messages
        .iter()
        .enumerate()
        .filter(|(_, message)| message.kind == MessageKind::Media)
        .filter_map(|(i, message)| Some((i, parser::attachment_name(&message.text)?)))
        .collect();
    if named.is_empty() {
        return;
    }
    let stored = stored_ids();
    named.retain(|(i, _)| !stored.contains(&messages[*i].provider_message_id));
    if named.is_empty() {
        return;
    }
    let mut archive = if is_zip(path) {
        std::fs::File::open(path)
            .ok()
            .and_then(|file| zip::ZipArchive::new(std::io::BufReader::new(file)).ok())
    } else {
        None
    };
    // Entries by file name (the first of a name wins).
    let mut entries: HashMap<String, usize> = HashMap::new();
    if let Some(archive) = &archive {
        for index in 0..archive.len() {
            if let Some(name) = archive.name_for_index(index) {
                let base = name.rsplit('/').next().unwrap_or(name);
                entries.entry(base.to_owned()).or_insert(index);
            }
        }
    }
    let folder = path
        .file_name()
        .is_some_and(|name| name == "_chat.txt")
        .then(|| path.parent())
        .flatten();
    // Each file is read once, however many lines name it.
    let mut read: HashMap<String, Attachment> = HashMap::new();
    for (i, name) in named {
        if let Some(attachment) = read.get(&name) {
            messages[i].attachments.push(attachment.clone());
            continue;
        }
        let mime = media::mime_for(&name);
        let attachment = match (&mut archive, entries.get(&name), folder) {
            (Some(archive), Some(&index), _) => match archive.by_index(index) {
                Ok(file) if file.size() <= limits.max_bytes => {
                    let (declared, compressed) = (file.size(), file.compressed_size());
                    media::read_and_store(
                        blobs,
                        file,
                        &name,
                        mime,
                        Some(declared),
                        Some(compressed),
                        limits,
                    )
                }
                Ok(_) => {
                    tracing::warn!(
                        file_name = name,
                        "a zipped attachment is over max_export_bytes; not stored"
                    );
                    Attachment::missing(&name, mime)
                }
                Err(_) => Attachment::missing(&name, mime),
            },
            (None, _, Some(folder)) => {
                media::store_file_blocking(blobs, folder, &name, None, limits)
            }
            _ => Attachment::missing(&name, mime),
        };
        messages[i].attachments.push(attachment.clone());
        read.insert(name, attachment);
    }
}

/// Whether an export path names a zip archive (by its extension).
fn is_zip(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
}

/// Reads an export: a text file, or the `_chat.txt` (else the only `.txt`) inside a zip, within
/// `limits` (see [`read_zip_export`]).
fn read_export(path: &Path, limits: &ExportLimits) -> Result<Vec<u8>, SourceError> {
    let shown = super::shown(path);
    let io_error = |source| SourceError::Io {
        context: format!("cannot read {shown}"),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_error)?;
    if is_zip(path) {
        return read_zip_export(std::io::BufReader::new(file), &shown, limits);
    }
    let declared = file.metadata().ok().map(|metadata| metadata.len());
    if declared.is_some_and(|len| len > limits.max_bytes) {
        return Err(super::too_large(&shown, limits));
    }
    super::read_bounded(file, &shown, declared, None, limits)
}

/// Reads the chat text of a zipped export: the entry named `_chat.txt` (in any folder), else
/// the only `.txt` entry. `name` is how errors name the zip.
///
/// The entry is inflated as a stream, bounded by `limits`: an entry that declares more than
/// `max_bytes`, declares a compression ratio above `max_compression_ratio`, or turns out to
/// inflate beyond either while it is read (declared sizes can lie), is refused with
/// [`SourceError::Invalid`] naming the limit. Nothing is allocated by the declared size.
///
/// Errors: [`SourceError::Invalid`] for a zip that cannot be read, one without a chat text, or
/// one beyond the limits; [`SourceError::Io`] for a read error.
pub fn read_zip_export<R: Read + std::io::Seek>(
    reader: R,
    name: &str,
    limits: &ExportLimits,
) -> Result<Vec<u8>, SourceError> {
    let invalid = |error: zip::result::ZipError| {
        SourceError::Invalid(format!("{name} is not a readable zip: {error}"))
    };
    let mut archive = zip::ZipArchive::new(reader).map_err(invalid)?;
    let names: Vec<String> = archive.file_names().map(str::to_owned).collect();
    let entry = names
        .iter()
        .find(|n| n.rsplit('/').next() == Some("_chat.txt"))
        .or_else(|| {
            let texts: Vec<&String> = names.iter().filter(|n| n.ends_with(".txt")).collect();
            if texts.len() == 1 {
                texts.first().copied()
            } else {
                None
            }
        })
        .ok_or_else(|| {
            SourceError::Invalid(format!(
                "{name} holds no _chat.txt (nor a single .txt file)"
            ))
        })?
        .clone();
    let file = archive.by_name(&entry).map_err(invalid)?;
    let declared = file.size();
    let compressed = file.compressed_size();
    if declared > limits.max_bytes {
        return Err(super::too_large(name, limits));
    }
    if declared > super::RATIO_CHECK_FLOOR
        && declared > compressed.saturating_mul(limits.max_compression_ratio)
    {
        return Err(super::too_compressed(name, compressed, limits));
    }
    super::read_bounded(file, name, Some(declared), Some(compressed), limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(input: &str) -> Vec<(String, String, bool)> {
        history_from_export(
            "chat-1",
            input.as_bytes(),
            &ParseOptions::default(),
            chrono_tz::Tz::UTC,
        )
        .messages
        .into_iter()
        .map(|m| (m.provider_message_id, m.text, m.kind == MessageKind::Text))
        .collect()
    }

    /// The ids below are what the code gave before edit marks were removed from texts (the
    /// SHA-256 of the body with its mark): re-importing an export imported then adds nothing.
    #[test]
    fn ids_of_edited_lines_are_those_derived_before_marks_were_removed() {
        let got = ids("13/01/2023 09:02 - Ana: vou sim <Mensagem editada>\n");
        assert_eq!(
            got,
            vec![(
                "59d97b433268f438e47f7f1d3743da6d-0".to_owned(),
                "vou sim".to_owned(),
                true
            )]
        );
        let got = ids(
            "[13/01/2023, 09:02:00] Ana: Ho prenotato per le 9 \u{200e}<Questo messaggio è stato modificato>\n",
        );
        assert_eq!(got[0].0, "530aee43cd3af50b34734959877870ec-0");
        assert_eq!(got[0].1, "Ho prenotato per le 9");
    }

    #[test]
    fn an_edited_and_an_unedited_message_with_the_same_words_have_different_ids() {
        let got =
            ids("13/01/2023 09:02 - Ana: ok <Mensagem editada>\n13/01/2023 09:02 - Ana: ok\n");
        assert_eq!(got[0].1, got[1].1);
        assert_ne!(got[0].0, got[1].0);
        assert!(got[1].0.ends_with("-0"), "{got:?}");
    }
}

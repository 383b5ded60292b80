//! Unchanged export files are skipped: a file's size and modification time, proved by its
//! SHA-256 when the time is too close to when it was looked at (git's "racy" rule).
use super::job::{FileStat, Reader};
use super::*;

impl Reader {
    /// Reads the size and time of every chat's file (for sources with [`Source::chat_file`]),
    /// before any is read, and loads the session's recorded fingerprints into `self.files`.
    /// A file that cannot be looked at gets `None` (it is read, and its error reported, as
    /// usual).
    pub(super) async fn stat_files(&mut self, chats: &[SourceChat]) -> Vec<Option<FileStat>> {
        let paths: Vec<Option<PathBuf>> = chats.iter().map(|c| self.source.chat_file(c)).collect();
        if paths.iter().all(Option::is_none) {
            return vec![None; chats.len()];
        }
        match self.store.source_files(&self.session_id).await {
            Ok(files) => self.files = files,
            Err(error) => {
                tracing::warn!(%error, "cannot read file fingerprints; reading every file")
            }
        }
        tokio::task::spawn_blocking(move || {
            paths
                .iter()
                .map(|path| path.as_deref().and_then(stat_file))
                .collect()
        })
        .await
        .unwrap_or_else(|_| vec![None; chats.len()])
    }
    /// `Some(unplaced lines)` when the chat's file is proven unchanged by its size and time
    /// alone since an import that covered this run's limit.
    pub(super) fn unchanged(&self, chat: &SourceChat, stat: Option<&FileStat>) -> Option<u64> {
        let record = self.covering_record(chat)?;
        let stat = stat?;
        let same = record.fingerprint.size == stat.size
            && record.fingerprint.mtime_ns == stat.mtime_ns
            && !is_racy(record);
        same.then_some(record.unplaced_lines)
    }
    /// The chat's recorded fingerprint, when its import covered this run's limit.
    pub(super) fn covering_record(&self, chat: &SourceChat) -> Option<&FileRecord> {
        let record = self.files.get(&chat.locator)?;
        let covers = match (record.limit_per_chat, self.limit) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(recorded), Some(wanted)) => wanted as u64 <= recorded,
        };
        (covers && record.chat_id == chat.chat_id).then_some(record)
    }
}

/// Whether a recorded size and time cannot prove the file unchanged: the file was modified
/// within [`RACY_MS`] of when it was looked at.
pub(super) fn is_racy(record: &FileRecord) -> bool {
    record.fingerprint.mtime_ns >= record.checked_at_ms.saturating_sub(RACY_MS) * 1_000_000
}

/// A file's size and modification time, read now; `None` when it cannot be looked at.
pub(super) fn stat_file(path: &Path) -> Option<FileStat> {
    let checked_at_ms = now_ms();
    let metadata = std::fs::metadata(path).ok()?;
    let mtime = metadata.modified().ok()?;
    let mtime_ns = match mtime.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).ok()?,
        Err(before) => -i64::try_from(before.duration().as_nanos()).ok()?,
    };
    Some(FileStat {
        size: metadata.len(),
        mtime_ns,
        checked_at_ms,
    })
}

/// The SHA-256 of a file's bytes; `None` when it cannot be read.
pub(super) fn hash_file(path: &Path) -> Option<[u8; 32]> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).ok()?;
    Some(hasher.finalize().into())
}

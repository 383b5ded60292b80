//! What the export sources share for message media: MIME types from file names, and storing
//! a file's bytes in the blob store as an [`Attachment`].
//!
//! A file a message names but that cannot be had (not in the export, unreadable, over the
//! export limits) is an attachment with `stored = false`, never an error: the message is
//! still imported.
use std::io::Read;
use std::path::{Component, Path};

use std::collections::HashSet;

use super::{ExportLimits, SourceContext, read_bounded};
use crate::blobs::BlobStore;
use crate::model::Attachment;

/// MIME types by lowercase file extension: the formats chat apps export.
const MIME_TYPES: &[(&str, &str)] = &[
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("png", "image/png"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("heic", "image/heic"),
    ("bmp", "image/bmp"),
    ("svg", "image/svg+xml"),
    ("mp4", "video/mp4"),
    ("mov", "video/quicktime"),
    ("3gp", "video/3gpp"),
    ("webm", "video/webm"),
    ("mkv", "video/x-matroska"),
    ("opus", "audio/ogg"),
    ("ogg", "audio/ogg"),
    ("oga", "audio/ogg"),
    ("mp3", "audio/mpeg"),
    ("m4a", "audio/mp4"),
    ("aac", "audio/aac"),
    ("wav", "audio/wav"),
    ("amr", "audio/amr"),
    ("pdf", "application/pdf"),
    ("txt", "text/plain"),
    ("vcf", "text/vcard"),
    ("csv", "text/csv"),
    ("json", "application/json"),
    ("zip", "application/zip"),
    ("doc", "application/msword"),
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    ("xls", "application/vnd.ms-excel"),
    (
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    ("ppt", "application/vnd.ms-powerpoint"),
    (
        "pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
    ("tgs", "application/x-tgsticker"),
];

/// The MIME type for a file name's extension; `application/octet-stream` when unknown.
pub fn mime_for(file_name: &str) -> &'static str {
    let extension = file_name
        .rsplit_once('.')
        .map(|(_, extension)| extension.to_ascii_lowercase())
        .unwrap_or_default();
    MIME_TYPES
        .iter()
        .find(|(known, _)| *known == extension)
        .map_or("application/octet-stream", |(_, mime)| mime)
}

/// The provider ids of a chat's stored messages, read from a blocking task. A source skips the
/// files of those messages: storage skips the messages, so their files need not be read again.
/// Empty on a storage error (every file is then read, which is only slower).
pub fn stored_ids_blocking(context: &SourceContext, chat_id: &str) -> HashSet<String> {
    let read = context.stored.provider_ids(chat_id);
    tokio::runtime::Handle::current()
        .block_on(read)
        .unwrap_or_else(|error| {
            tracing::warn!(chat_id, %error, "cannot read the stored messages; reading every file");
            HashSet::new()
        })
}

/// Puts `bytes` in the blob store and describes them as an attachment named `file_name`.
/// Called from a blocking task (sources read exports in `spawn_blocking`). A store failure
/// is logged and gives `stored = false`.
pub fn store_blocking(
    blobs: &dyn BlobStore,
    file_name: &str,
    mime_type: &str,
    bytes: Vec<u8>,
) -> Attachment {
    match tokio::runtime::Handle::current().block_on(blobs.put(bytes)) {
        Ok(blob) => Attachment {
            file_name: file_name.to_owned(),
            mime_type: mime_type.to_owned(),
            size_bytes: blob.size,
            sha256: blob.sha256,
            stored: true,
        },
        Err(error) => {
            tracing::warn!(file_name, %error, "cannot store an attachment in the blob store");
            Attachment::missing(file_name, mime_type)
        }
    }
}

/// Reads the file `relative` names inside `folder` (an export's own folder), bounded by
/// `limits`, and stores it. A path that is absolute, climbs out of the folder (`..`), or
/// leads out of it through a symbolic link is never read, nor anything but a regular file. Missing or unreadable files, and files over the limits, give `stored = false`.
pub fn store_file_blocking(
    blobs: &dyn BlobStore,
    folder: &Path,
    relative: &str,
    mime_type: Option<&str>,
    limits: &ExportLimits,
) -> Attachment {
    let file_name = relative.rsplit(['/', '\\']).next().unwrap_or(relative);
    let mime_type = mime_type
        .filter(|mime| !mime.is_empty())
        .unwrap_or_else(|| mime_for(file_name));
    let relative_path = Path::new(relative);
    let inside = !relative.is_empty()
        && relative_path
            .components()
            .all(|component| matches!(component, Component::Normal(_) | Component::CurDir));
    if !inside {
        return Attachment::missing(file_name, mime_type);
    }
    // Symbolic links are resolved first: one may point anywhere (an unzipped export keeps
    // them), and only regular files are read (a FIFO would block the read for ever, a device
    // never ends).
    let (Ok(root), Ok(path)) = (
        folder.canonicalize(),
        folder.join(relative_path).canonicalize(),
    ) else {
        return Attachment::missing(file_name, mime_type);
    };
    if !path.starts_with(&root) || !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
        tracing::warn!(path = %super::shown(&path), "an attachment is not a regular file inside its export; not stored");
        return Attachment::missing(file_name, mime_type);
    }
    let Ok(file) = std::fs::File::open(&path) else {
        return Attachment::missing(file_name, mime_type);
    };
    let declared = file.metadata().ok().map(|metadata| metadata.len());
    if declared.is_some_and(|len| len > limits.max_bytes) {
        tracing::warn!(path = %super::shown(&path), "an attachment is over max_export_bytes; not stored");
        return Attachment::missing(file_name, mime_type);
    }
    read_and_store(blobs, file, file_name, mime_type, declared, None, limits)
}

/// Reads `reader` bounded by `limits` (`compressed` for a zip entry) and stores it as
/// `file_name`; a read over a limit or failing gives `stored = false`.
pub fn read_and_store(
    blobs: &dyn BlobStore,
    reader: impl Read,
    file_name: &str,
    mime_type: &str,
    declared: Option<u64>,
    compressed: Option<u64>,
    limits: &ExportLimits,
) -> Attachment {
    match read_bounded(reader, file_name, declared, compressed, limits) {
        Ok(bytes) => store_blocking(blobs, file_name, mime_type, bytes),
        Err(error) => {
            tracing::warn!(file_name, %error, "an attachment cannot be read; not stored");
            Attachment::missing(file_name, mime_type)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_types_come_from_the_extension() {
        assert_eq!(mime_for("IMG-20240102-WA0001.JPG"), "image/jpeg");
        assert_eq!(mime_for("PTT-20180129-WA0025.opus"), "audio/ogg");
        assert_eq!(mime_for("report.pdf"), "application/pdf");
        assert_eq!(mime_for("noextension"), "application/octet-stream");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_outside_the_export_folder_are_never_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("export");
        std::fs::create_dir_all(folder.join("photos")).expect("mkdir");
        std::fs::write(dir.path().join("secret.txt"), b"secret").expect("write");
        std::fs::write(folder.join("photos/p.jpg"), b"jpeg bytes").expect("write");
        let blobs = crate::blobs::DirBlobStore::new(dir.path().join("blobs"));
        let limits = ExportLimits::default();
        // A link out of the folder, a link inside it, and a FIFO (which would block a read).
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), folder.join("photos/l.jpg"))
            .expect("symlink");
        std::os::unix::fs::symlink(folder.join("photos/p.jpg"), folder.join("photos/m.jpg"))
            .expect("symlink");
        let fifo = std::ffi::CString::new(folder.join("photos/f.jpg").display().to_string())
            .expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
        let folder2 = folder.clone();
        let (inside, outside, absolute, linked_out, linked_in, pipe) =
            tokio::task::spawn_blocking(move || {
                (
                    store_file_blocking(&blobs, &folder2, "photos/p.jpg", None, &limits),
                    store_file_blocking(&blobs, &folder2, "../secret.txt", None, &limits),
                    store_file_blocking(
                        &blobs,
                        &folder2,
                        &dir.path().join("secret.txt").display().to_string(),
                        None,
                        &limits,
                    ),
                    store_file_blocking(&blobs, &folder2, "photos/l.jpg", None, &limits),
                    store_file_blocking(&blobs, &folder2, "photos/m.jpg", None, &limits),
                    store_file_blocking(&blobs, &folder2, "photos/f.jpg", None, &limits),
                )
            })
            .await
            .expect("task");
        assert!(!linked_out.stored, "a symbolic link out of the export");
        assert!(linked_in.stored, "a symbolic link within the export");
        assert_eq!(linked_in.sha256, inside.sha256);
        assert!(!pipe.stored, "a FIFO");
        assert!(inside.stored);
        assert_eq!(inside.size_bytes, 10);
        assert_eq!(inside.mime_type, "image/jpeg");
        assert!(!outside.stored);
        assert!(!absolute.stored);
    }
}

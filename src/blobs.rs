//! The blob store: message media, content-addressed by SHA-256.
//!
//! [`BlobStore`] is the small trait the rest of the server uses (put bytes or a stream of
//! chunks → sha256 and size; get a blob as a stream of chunks; has), so that an object store
//! can take the directory's place later. [`DirBlobStore`] is the implementation used today: a
//! directory (`blob_dir`, by default `DATA_DIR/blobs`) holding `ab/cdef…` (the first two hex
//! digits of the hash name a sub-directory, the other 62 the file).
//!
//! Guarantees:
//! - **Stored once per hash.** A put of bytes already stored writes nothing new.
//! - **No partial blob under its name.** Bytes are written to a temporary file in
//!   `blob_dir/tmp/`, synced, then renamed to their hash: a crash leaves at most an orphan
//!   temporary file, never a truncated blob.
//! - Blobs are never deleted by the server (a blob may be shared by many messages and sessions;
//!   which session may read it is decided by the `attachments` table, see GetMedia).
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::{Stream, StreamExt};

/// Bytes per chunk a blob is read (and GetMedia streamed) in: 64 KiB.
pub const CHUNK_BYTES: usize = 64 << 10;

/// A stream of a blob's bytes, in chunks.
pub type ChunkStream = Pin<Box<dyn Stream<Item = io::Result<Vec<u8>>> + Send>>;

/// What a put stored: the bytes' SHA-256 (64 lowercase hex digits) and their size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

/// A content-addressed store of bytes. See the module docs.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores the bytes of `chunks` under their SHA-256 (once: a blob already stored is kept).
    async fn put_stream(&self, chunks: ChunkStream) -> io::Result<BlobRef>;

    /// Stores `bytes` under their SHA-256 (once: a blob already stored is kept).
    async fn put(&self, bytes: Vec<u8>) -> io::Result<BlobRef> {
        self.put_stream(Box::pin(tokio_stream::once(Ok(bytes))))
            .await
    }

    /// The blob's size and its bytes in chunks of at most [`CHUNK_BYTES`], or `None` when no
    /// blob has this hash. `sha256` must be 64 lowercase hex digits ([`is_sha256`]).
    async fn get(&self, sha256: &str) -> io::Result<Option<(u64, ChunkStream)>>;

    /// Whether a blob has this hash.
    async fn has(&self, sha256: &str) -> io::Result<bool>;
}

/// Whether `text` is a SHA-256 in the store's spelling: 64 lowercase hex digits.
pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The blob store in a directory: `ROOT/ab/cdef…`, temporary files in `ROOT/tmp/`. The
/// directory is created on the first put.
#[derive(Debug, Clone)]
pub struct DirBlobStore {
    root: PathBuf,
}

impl DirBlobStore {
    /// A store rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this hash lives (`None` for a malformed hash, which never names a
    /// file, so no request can reach outside the directory).
    pub fn path_of(&self, sha256: &str) -> Option<PathBuf> {
        if !is_sha256(sha256) {
            return None;
        }
        Some(self.root.join(&sha256[..2]).join(&sha256[2..]))
    }
}

#[async_trait]
impl BlobStore for DirBlobStore {
    async fn put_stream(&self, mut chunks: ChunkStream) -> io::Result<BlobRef> {
        let tmp_dir = self.root.join("tmp");
        tokio::fs::create_dir_all(&tmp_dir).await?;
        let tmp = tmp_dir.join(uuid::Uuid::new_v4().simple().to_string());
        let written = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk).await?;
            }
            file.sync_all().await?;
            Ok::<_, io::Error>(BlobRef {
                sha256: hex::encode(hasher.finalize()),
                size,
            })
        }
        .await;
        let blob = match written {
            Ok(blob) => blob,
            Err(error) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(error);
            }
        };
        let path = self
            .path_of(&blob.sha256)
            .expect("a digest is a valid hash");
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            tokio::fs::remove_file(&tmp).await?;
            return Ok(blob);
        }
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        // The rename is atomic: the blob appears whole under its name, or not at all. Two
        // puts of the same bytes racing here both rename identical files.
        if let Err(error) = tokio::fs::rename(&tmp, &path).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(error);
        }
        Ok(blob)
    }

    async fn put(&self, bytes: Vec<u8>) -> io::Result<BlobRef> {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let path = self.path_of(&sha256).expect("a digest is a valid hash");
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(BlobRef {
                sha256,
                size: bytes.len() as u64,
            });
        }
        self.put_stream(Box::pin(tokio_stream::once(Ok(bytes))))
            .await
    }

    async fn get(&self, sha256: &str) -> io::Result<Option<(u64, ChunkStream)>> {
        let Some(path) = self.path_of(sha256) else {
            return Ok(None);
        };
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let size = file.metadata().await?.len();
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Vec<u8>>>(2);
        tokio::spawn(async move {
            loop {
                let mut chunk = vec![0u8; CHUNK_BYTES];
                let mut filled = 0;
                // Fill whole chunks: a short read is not the end of the file.
                while filled < CHUNK_BYTES {
                    match file.read(&mut chunk[filled..]).await {
                        Ok(0) => break,
                        Ok(read) => filled += read,
                        Err(error) => {
                            let _ = tx.send(Err(error)).await;
                            return;
                        }
                    }
                }
                if filled == 0 {
                    return;
                }
                chunk.truncate(filled);
                let last = filled < CHUNK_BYTES;
                if tx.send(Ok(chunk)).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Some((
            size,
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )))
    }

    async fn has(&self, sha256: &str) -> io::Result<bool> {
        match self.path_of(sha256) {
            Some(path) => tokio::fs::try_exists(&path).await,
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blobs_are_stored_once_whole_and_read_back_in_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DirBlobStore::new(dir.path().join("blobs"));
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let first = store.put(bytes.clone()).await.expect("put");
        let chunks: Vec<io::Result<Vec<u8>>> = bytes.chunks(1000).map(|c| Ok(c.to_vec())).collect();
        let second = store
            .put_stream(Box::pin(tokio_stream::iter(chunks)))
            .await
            .expect("put stream");
        assert_eq!(first, second);
        assert_eq!(first.size, 200_000);
        assert_eq!(first.sha256, hex::encode(Sha256::digest(&bytes)));
        assert!(store.has(&first.sha256).await.expect("has"));
        let shard = dir.path().join("blobs").join(&first.sha256[..2]);
        assert_eq!(std::fs::read_dir(&shard).expect("shard").count(), 1);
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs/tmp"))
                .expect("tmp")
                .count(),
            0,
            "no temporary file is left behind"
        );
        let (size, mut stream) = store.get(&first.sha256).await.expect("get").expect("found");
        assert_eq!(size, 200_000);
        let mut read = Vec::new();
        let mut sizes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.expect("chunk");
            sizes.push(chunk.len());
            read.extend(chunk);
        }
        assert_eq!(read, bytes);
        assert_eq!(
            sizes,
            vec![
                CHUNK_BYTES,
                CHUNK_BYTES,
                CHUNK_BYTES,
                200_000 - 3 * CHUNK_BYTES
            ]
        );
        assert!(store.get(&"0".repeat(64)).await.expect("get").is_none());
        assert!(store.get("../etc/passwd").await.expect("get").is_none());
        assert!(!is_sha256(&"A".repeat(64)));
    }
}

//! The demo exports (`samples/` in the source tree), embedded in the binary so that an
//! installed `chatsync` serves its demo from any directory, with no source tree.
//!
//! The default configuration's sessions read them from [`crate::config::samples_dir`]
//! (`DATA_DIR/samples`). [`prepare`] writes them there when the server starts with sessions
//! that use that directory: each file whose content differs from the embedded one (or that is
//! missing) is written anew, so an upgraded binary brings its own samples; other files in the
//! directory are left alone.
use std::io;
use std::path::{Path, PathBuf};

use crate::config::Config;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/samples.rs"));
}

/// Every embedded sample: its path relative to the samples directory (`/`-separated) and its
/// bytes.
pub fn files() -> &'static [(&'static str, &'static [u8])] {
    embedded::FILES
}

/// Writes the embedded samples under `dir`, skipping files already there with the same
/// content. Each file is written to a temporary name and renamed, so a reader (or a second
/// server starting at the same time) never sees half a file. Returns how many were written.
pub fn extract(dir: &Path) -> io::Result<usize> {
    let mut written = 0;
    for (relative, bytes) in files() {
        let target = dir.join(relative);
        if std::fs::read(&target).is_ok_and(|existing| existing == *bytes) {
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut partial = target.clone().into_os_string();
        // Unique per process and call: concurrent extractions never share a temporary file.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        partial.push(format!(".partial-{}-{n}", std::process::id()));
        let partial = PathBuf::from(partial);
        std::fs::write(&partial, bytes)?;
        std::fs::rename(&partial, &target)?;
        written += 1;
    }
    Ok(written)
}

/// Makes the data directory ready for `config`: creates it when the SQLite database lives in
/// it, and extracts the samples when a session reads from [`crate::config::samples_dir`].
pub fn prepare(config: &Config) -> anyhow::Result<()> {
    let data_dir = crate::config::data_dir();
    if let Some(database) = crate::storage::sqlite_file(&config.database_url)
        && database.starts_with(&data_dir)
    {
        std::fs::create_dir_all(&data_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the data directory {}: {e}",
                data_dir.display()
            )
        })?;
    }
    let samples = crate::config::samples_dir();
    let uses_samples = config.sessions.iter().any(|session| {
        session
            .settings
            .get("path")
            .and_then(|path| path.as_str())
            .is_some_and(|path| Path::new(path).starts_with(&samples))
    });
    if uses_samples {
        let written = extract(&samples).map_err(|e| {
            anyhow::anyhow!(
                "cannot write the demo samples to {}: {e}",
                samples.display()
            )
        })?;
        if written > 0 {
            tracing::info!(directory = %samples.display(), files = written, "demo samples written");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_in_the_tree_is_embedded_byte_for_byte() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
        assert!(files().len() >= 3, "{:?}", files().len());
        for (relative, bytes) in files() {
            let on_disk = std::fs::read(root.join(relative)).expect("sample in the tree");
            assert_eq!(on_disk, *bytes, "{relative}");
        }
    }

    #[test]
    fn extraction_writes_what_differs_and_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(extract(dir.path()).expect("extract"), files().len());
        assert_eq!(extract(dir.path()).expect("again"), 0, "nothing changed");
        let (first, bytes) = files()[0];
        std::fs::write(dir.path().join(first), b"edited").expect("edit");
        std::fs::write(dir.path().join("mine.txt"), b"kept").expect("own file");
        assert_eq!(extract(dir.path()).expect("repair"), 1);
        assert_eq!(std::fs::read(dir.path().join(first)).expect("read"), bytes);
        assert_eq!(
            std::fs::read(dir.path().join("mine.txt")).expect("read"),
            b"kept"
        );
    }
}

//! Watching files for changes: the configuration and every plugin `.wasm`.
//!
//! Watches each file's directory, not the file: `cargo build`, editors and
//! `cp` replace files, and a watch on the old inode goes stale. Events are
//! debounced, and a change is reported only when a file's content hash
//! differs from what was last seen, so touching or rewriting a file with the
//! same bytes does nothing.
//!
//! A reload reads files after the change that triggered it, maybe a later
//! version than the one reported, and writes made meanwhile may end with
//! bytes the watcher already saw: [`FileWatcher::loaded`] tells the watcher
//! what was read, so that it reports whatever differs from that.

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a burst of events is gathered before acting on it.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Each watched file's content hash as last seen (`None`: unreadable).
type Seen = Arc<Mutex<HashMap<PathBuf, Option<String>>>>;

/// Watches a set of files while it lives.
pub struct FileWatcher {
    _watcher: notify::RecommendedWatcher,
    seen: Seen,
    on_change: Arc<dyn Fn(Vec<PathBuf>) + Send + Sync>,
}

impl FileWatcher {
    /// Records that a reload read `files` with these content hashes
    /// ([`sha256_hex`]), and reports at once the files that now differ.
    pub fn loaded(&self, files: impl IntoIterator<Item = (PathBuf, String)>) {
        let changed: Vec<PathBuf> = {
            let mut seen = self.seen.lock().unwrap();
            files
                .into_iter()
                .filter_map(|(file, read)| {
                    let file = absolute(&file);
                    let last = seen.get_mut(&file)?;
                    let now = digest(&file);
                    let differs = now.as_deref() != Some(read.as_str());
                    *last = now;
                    differs.then_some(file)
                })
                .collect()
        };
        if !changed.is_empty() {
            (self.on_change)(changed);
        }
    }
}

/// The content hash the watcher compares: SHA-256 in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Calls `on_change` with the changed files after each burst of changes to
/// `files` (absolute or relative to the working directory).
pub fn watch_files<F>(files: Vec<PathBuf>, on_change: F) -> notify::Result<FileWatcher>
where
    F: Fn(Vec<PathBuf>) + Send + Sync + 'static,
{
    let on_change: Arc<dyn Fn(Vec<PathBuf>) + Send + Sync> = Arc::new(on_change);
    let files: Vec<PathBuf> = files.iter().map(|f| absolute(f)).collect();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Opening or reading a file is no change. Hashing a file opens it,
        // so without this every hash started the next burst: the files
        // were read again every `DEBOUNCE`, for ever.
        let write_done = AccessKind::Close(AccessMode::Write);
        if !matches!(event.kind, EventKind::Access(kind) if kind != write_done) {
            let _ = tx.send(event.paths);
        }
    })?;
    let dirs: HashSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    let seen: Seen = Arc::new(Mutex::new(
        files.iter().map(|f| (f.clone(), digest(f))).collect(),
    ));
    let (task_seen, task_on_change) = (seen.clone(), on_change.clone());
    tokio::spawn(async move {
        // Ends when the watcher (and with it the sender) is dropped.
        while let Some(paths) = rx.recv().await {
            let mut touched: HashSet<PathBuf> = paths.into_iter().collect();
            let settle = tokio::time::sleep(DEBOUNCE);
            tokio::pin!(settle);
            loop {
                tokio::select! {
                    more = rx.recv() => match more {
                        Some(paths) => touched.extend(paths),
                        None => return,
                    },
                    () = &mut settle => break,
                }
            }
            let changed: Vec<PathBuf> = task_seen
                .lock()
                .unwrap()
                .iter_mut()
                .filter(|(file, _)| touched.contains(*file))
                .filter_map(|(file, last)| {
                    let now = digest(file);
                    (now != *last).then(|| {
                        *last = now;
                        file.clone()
                    })
                })
                .collect();
            if !changed.is_empty() {
                task_on_change(changed);
            }
        }
    });
    Ok(FileWatcher {
        _watcher: watcher,
        seen,
        on_change,
    })
}

fn digest(file: &Path) -> Option<String> {
    std::fs::read(file).ok().map(|bytes| sha256_hex(&bytes))
}

fn absolute(file: &Path) -> PathBuf {
    std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    async fn wait_for(events: &Arc<Mutex<Vec<Vec<PathBuf>>>>, count: usize) {
        for _ in 0..100 {
            if events.lock().unwrap().len() >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "expected {count} change reports, got {:?}",
            events.lock().unwrap()
        );
    }

    #[tokio::test]
    async fn replaced_and_rewritten_files_are_reported_once_per_new_content() {
        let dir = std::env::temp_dir().join(format!("wasp-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("plugin.wasm");
        std::fs::write(&file, b"one").unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let _watcher = watch_files(vec![file.clone()], move |changed| {
            sink.lock().unwrap().push(changed)
        })
        .unwrap();

        // An atomic replace (write elsewhere, rename over) is seen.
        std::fs::write(dir.join("tmp"), b"two").unwrap();
        std::fs::rename(dir.join("tmp"), &file).unwrap();
        wait_for(&events, 1).await;
        // Same bytes again: not a change.
        std::fs::write(&file, b"two").unwrap();
        // An in-place write with new bytes is.
        std::fs::write(&file, b"three").unwrap();
        wait_for(&events, 2).await;
        // Unrelated files in the directory are ignored.
        std::fs::write(dir.join("other"), b"x").unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let events = events.lock().unwrap();
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(events.iter().all(|changed| changed == &vec![file.clone()]));
    }

    #[tokio::test]
    async fn a_file_loaded_in_another_version_than_on_disk_is_reported() {
        let dir = std::env::temp_dir().join(format!("wasp-watch-loaded-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("plugin.wasm");
        std::fs::write(&file, b"one").unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let watcher = watch_files(vec![file.clone()], move |changed| {
            sink.lock().unwrap().push(changed)
        })
        .unwrap();
        // Loaded as it is on disk: nothing to do.
        watcher.loaded([(file.clone(), sha256_hex(b"one"))]);
        // Loaded in a version replaced since: reported at once.
        watcher.loaded([(file.clone(), sha256_hex(b"two"))]);
        assert_eq!(*events.lock().unwrap(), vec![vec![file]]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

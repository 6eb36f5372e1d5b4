//! Watching files for changes: the configuration and every plugin `.wasm`.
//!
//! Watches each file's directory, not the file: `cargo build`, editors and
//! `cp` replace files, and a watch on the old inode goes stale. Events are
//! debounced, and a change is reported only when a file's content hash
//! differs from what was last seen, so touching or rewriting a file with the
//! same bytes does nothing.

use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a burst of events is gathered before acting on it.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Watches a set of files while it lives.
pub struct FileWatcher {
    _watcher: notify::RecommendedWatcher,
}

/// Calls `on_change` with the changed files after each burst of changes to
/// `files` (absolute or relative to the working directory).
pub fn watch_files<F>(files: Vec<PathBuf>, on_change: F) -> notify::Result<FileWatcher>
where
    F: Fn(Vec<PathBuf>) + Send + 'static,
{
    let files: Vec<PathBuf> = files.iter().map(|f| absolute(f)).collect();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
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
    let mut seen: HashMap<PathBuf, Option<Vec<u8>>> =
        files.iter().map(|f| (f.clone(), digest(f))).collect();
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
            let changed: Vec<PathBuf> = seen
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
                on_change(changed);
            }
        }
    });
    Ok(FileWatcher { _watcher: watcher })
}

fn digest(file: &Path) -> Option<Vec<u8>> {
    std::fs::read(file)
        .ok()
        .map(|bytes| Sha256::digest(bytes).to_vec())
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
}

//! Watching files for changes: the configuration, every plugin `.wasm`, and
//! the TLS certificates and keys.
//!
//! Watches each file's directory, not the file: `cargo build`, editors,
//! `cp` and deploys replace files, and a watch on the old inode goes stale.
//! Events are debounced, and a change is reported only when a file's content
//! hash differs from what was last seen, so touching or rewriting a file (or
//! its neighbours) with the same bytes does nothing.
//!
//! A reload reads files after the change that triggered it, maybe a later
//! version than the one reported, and writes made meanwhile may end with
//! bytes the watcher already saw: so the watcher is told what was read, and
//! reports whatever differs from that. A consumer that reloads later tells it
//! with [`FileWatcher::loaded`]; one that reloads in its callback
//! ([`watch_and_reload`]) returns it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::instrument::WithSubscriber;

use crate::digest::sha256_hex;

/// How long a burst of events is gathered before acting on it.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Files a reload read, each with the [`sha256_hex`] of the bytes it read.
pub type ReadFiles = Vec<(PathBuf, String)>;

/// Why files cannot be watched.
#[derive(Debug, thiserror::Error)]
#[error("watching {}: {source}", dir.display())]
pub struct WatchError {
    /// The directory that could not be watched.
    pub dir: PathBuf,
    /// notify's reason.
    #[source]
    pub source: notify::Error,
}

/// Watches a set of files while it lives.
pub struct FileWatcher {
    _watcher: notify::RecommendedWatcher,
    files: Arc<Files>,
}

impl FileWatcher {
    /// Records that a reload read `files` with these content hashes
    /// ([`sha256_hex`]), and reports at once the files that now differ.
    pub fn loaded(&self, files: impl IntoIterator<Item = (PathBuf, String)>) {
        let changed = self.files.record(files);
        self.files.report(changed);
    }
}

/// The watched files, shared by the watcher and its debounce task.
struct Files {
    /// Each file's content hash as last seen (`None`: unreadable).
    seen: Mutex<HashMap<PathBuf, Option<String>>>,
    /// Told the changed files; returns what it read if it reloaded them.
    on_change: Box<dyn Fn(Vec<PathBuf>) -> ReadFiles + Send + Sync>,
}

impl Files {
    /// The files whose content differs from what was last seen, among those
    /// in a directory where something was `touched`: a file may change with
    /// no event naming it, when a symbolic link it goes through is swapped
    /// (as Kubernetes updates the secrets and config maps it mounts).
    fn changed(&self, touched: &HashSet<PathBuf>) -> Vec<PathBuf> {
        let in_touched_dir = |file: &Path| {
            let dir = file.parent().unwrap_or(file);
            touched.iter().any(|path| path.starts_with(dir))
        };
        self.seen
            .lock()
            .unwrap()
            .iter_mut()
            .filter(|(file, _)| in_touched_dir(file))
            .filter_map(|(file, last)| {
                let now = digest(file);
                (now != *last).then(|| {
                    *last = now;
                    file.clone()
                })
            })
            .collect()
    }

    /// Takes in what a reload read; returns the files whose content on disk
    /// now differs from it.
    fn record(&self, read: impl IntoIterator<Item = (PathBuf, String)>) -> Vec<PathBuf> {
        let mut seen = self.seen.lock().unwrap();
        read.into_iter()
            .filter_map(|(file, read)| {
                let file = absolute(&file);
                let last = seen.get_mut(&file)?;
                let now = digest(&file);
                let differs = now.as_deref() != Some(read.as_str());
                *last = now;
                differs.then_some(file)
            })
            .collect()
    }

    /// Reports `changed`, and again whatever differs from what the reload
    /// read, until nothing does.
    fn report(&self, mut changed: Vec<PathBuf>) {
        while !changed.is_empty() {
            let read = (self.on_change)(changed);
            changed = self.record(read);
        }
    }
}

/// Calls `on_change` with the changed files after each burst of changes to
/// `files` (absolute or relative to the working directory). The consumer
/// reports what it then reads with [`FileWatcher::loaded`].
pub fn watch_files<F>(files: Vec<PathBuf>, on_change: F) -> Result<FileWatcher, WatchError>
where
    F: Fn(Vec<PathBuf>) + Send + Sync + 'static,
{
    watch_and_reload(files, move |changed| {
        on_change(changed);
        Vec::new()
    })
}

/// Like [`watch_files`], for a consumer that reloads within the callback:
/// `reload` returns the files it read with their hashes, and is called again
/// at once with those that differ on disk by then.
pub fn watch_and_reload<F>(files: Vec<PathBuf>, reload: F) -> Result<FileWatcher, WatchError>
where
    F: Fn(Vec<PathBuf>) -> ReadFiles + Send + Sync + 'static,
{
    let files: Vec<PathBuf> = files.iter().map(|f| absolute(f)).collect();
    let dirs: BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let all = files.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let paths = match event {
            // Opening or reading a file is no change. Hashing a file opens
            // it, so without this every hash started the next burst: the
            // files were read again every `DEBOUNCE`, for ever.
            Ok(event) => match event.kind {
                EventKind::Access(kind) if kind != AccessKind::Close(AccessMode::Write) => return,
                _ => event.paths,
            },
            // An error may stand for lost events: look at every file.
            Err(_) => all.clone(),
        };
        let _ = tx.send(paths);
    })
    .map_err(|source| WatchError {
        dir: dirs.first().cloned().unwrap_or_default(),
        source,
    })?;
    for dir in &dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError {
                dir: dir.clone(),
                source,
            })?;
    }
    let shared = Arc::new(Files {
        seen: Mutex::new(files.iter().map(|f| (f.clone(), digest(f))).collect()),
        on_change: Box::new(reload),
    });
    let task_files = shared.clone();
    // Logs go to the caller's subscriber, even a scoped one.
    tokio::spawn(
        async move {
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
                let changed = task_files.changed(&touched);
                task_files.report(changed);
            }
        }
        .with_current_subscriber(),
    );
    Ok(FileWatcher {
        _watcher: watcher,
        files: shared,
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
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
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
    async fn a_file_behind_a_swapped_symlink_is_reported() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("v1")).unwrap();
        std::fs::create_dir_all(dir.join("v2")).unwrap();
        std::fs::write(dir.join("v1/cert.pem"), b"one").unwrap();
        std::fs::write(dir.join("v2/cert.pem"), b"two").unwrap();
        // Kubernetes' layout: cert.pem -> ..data/cert.pem, ..data -> v1.
        symlink("v1", dir.join("..data")).unwrap();
        let file = dir.join("cert.pem");
        symlink("..data/cert.pem", &file).unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let _watcher = watch_files(vec![file.clone()], move |changed| {
            sink.lock().unwrap().push(changed)
        })
        .unwrap();

        // An update swaps `..data`; no event names cert.pem.
        symlink("v2", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        wait_for(&events, 1).await;
        assert_eq!(*events.lock().unwrap(), vec![vec![file]]);
    }

    #[tokio::test]
    async fn a_file_loaded_in_another_version_than_on_disk_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
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
    }

    #[tokio::test]
    async fn a_reload_that_read_another_version_than_on_disk_runs_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let file = dir.join("cert.pem");
        std::fs::write(&file, b"one").unwrap();
        let reloads = Arc::new(Mutex::new(Vec::new()));
        let sink = reloads.clone();
        let _watcher = watch_and_reload(vec![file.clone()], move |changed| {
            let mut reloads = sink.lock().unwrap();
            reloads.push(changed.clone());
            // The first reload read a version written before the one now on disk.
            let read = if reloads.len() == 1 {
                &b"stale"[..]
            } else {
                b"two"
            };
            changed.into_iter().map(|f| (f, sha256_hex(read))).collect()
        })
        .unwrap();

        std::fs::write(&file, b"two").unwrap();
        wait_for(&reloads, 2).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(*reloads.lock().unwrap(), vec![vec![file.clone()]; 2]);
    }
}

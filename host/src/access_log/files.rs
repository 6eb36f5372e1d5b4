//! Access-log files: opened when a configuration is loaded (a reload opens
//! them again), reopened on SIGUSR1 for log rotation, and written by one
//! writer thread so that a slow disk never stalls a worker's event loop.
//!
//! Workers hand lines over through a queue bounded at [`QUEUE_LINES`]: when
//! it is full the line is dropped and counted in
//! `wasp_access_log_dropped_lines_total` rather than waiting. Written by hand
//! rather than with `tracing-appender`'s non-blocking writer: that one has a
//! thread per file, cannot reopen a file, and its drop count is not a
//! Prometheus counter.
//!
//! Lines, new file handles and closes travel in one ordered channel, so a
//! line is written to the file that was open when it was logged: after a
//! rotation (`mv` then SIGUSR1) every earlier line is in the old file and
//! every later one in the new. The channel itself is unbounded (a worker's
//! send never waits, nor does a close sent from a worker when the last user
//! of a file goes away); the bound is a count of lines in flight.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

/// Lines waiting for the writer before new ones are dropped: at 50 000
/// requests a second, about 80 ms of a stalled disk.
pub const QUEUE_LINES: usize = 4096;

enum Message {
    Line(u64, String),
    /// New handles for these files (a first open or a reopen).
    Open(Vec<(u64, File)>),
    /// Nothing can write to this file any more.
    Close(u64),
    /// Answer once everything sent before is written.
    Sync(mpsc::SyncSender<()>),
}

/// The sending side, shared by every open file.
struct Queue {
    sender: Sender<Message>,
    /// Lines sent and not yet taken by the writer.
    queued: Arc<AtomicUsize>,
    dropped: Counter,
}

impl Queue {
    fn send(&self, message: Message) {
        // The writer thread only ends when every sender is gone.
        let _ = self.sender.send(message);
    }
}

/// One access-log file, shared by the servers that name it. When the last
/// user drops it, the writer closes the file (after its last line).
pub struct LogFile {
    id: u64,
    path: PathBuf,
    json: bool,
    queue: Arc<Queue>,
}

impl LogFile {
    /// Queues `line` (a newline is added), or drops and counts it when
    /// the queue is full. Never waits.
    pub fn write(&self, mut line: String) {
        if self.queue.queued.fetch_add(1, Ordering::Relaxed) >= QUEUE_LINES {
            self.queue.queued.fetch_sub(1, Ordering::Relaxed);
            self.queue.dropped.inc();
            return;
        }
        line.push('\n');
        self.queue.send(Message::Line(self.id, line));
    }

    /// Lines are JSON objects (`log_format = "json"`).
    pub fn json(&self) -> bool {
        self.json
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        self.queue.send(Message::Close(self.id));
    }
}

/// The process's access-log files and their writer thread.
pub struct LogFiles {
    queue: Arc<Queue>,
    json: bool,
    /// Files some site still writes to, by path: a path named again by a
    /// reload keeps its [`LogFile`].
    open: Mutex<HashMap<PathBuf, Weak<LogFile>>>,
    next_id: AtomicU64,
}

impl LogFiles {
    /// Starts the writer thread. `json`: lines are JSON objects; `dropped`
    /// counts the lines the queue had no room for.
    pub fn new(json: bool, dropped: Counter) -> io::Result<LogFiles> {
        let (sender, receiver) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = queued.clone();
        std::thread::Builder::new()
            .name("wasp-access-log".into())
            .spawn(move || write_lines(receiver, &taken))?;
        Ok(LogFiles {
            queue: Arc::new(Queue {
                sender,
                queued,
                dropped,
            }),
            json,
            open: Mutex::default(),
            next_id: AtomicU64::new(1),
        })
    }

    /// Access-log lines are JSON objects (`log_format = "json"` at start).
    pub fn json(&self) -> bool {
        self.json
    }

    /// Opens `path` for appending (creating it), as a configuration being
    /// loaded names it: a file already open gets a fresh handle, which is
    /// how a reload reopens its logs. Blocking (opens a file).
    pub fn open(&self, path: &Path) -> io::Result<Arc<LogFile>> {
        let handle = open_append(path)?;
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let file = match open.get(path).and_then(Weak::upgrade) {
            Some(file) => file,
            None => {
                let file = Arc::new(LogFile {
                    id: self.next_id.fetch_add(1, Ordering::Relaxed),
                    path: path.to_owned(),
                    json: self.json,
                    queue: self.queue.clone(),
                });
                open.insert(path.to_owned(), Arc::downgrade(&file));
                file
            }
        };
        open.retain(|_, file| file.strong_count() > 0);
        self.queue.send(Message::Open(vec![(file.id, handle)]));
        Ok(file)
    }

    /// Opens every file in use again, by path (SIGUSR1, after a rotation
    /// moved them away): the lines logged from now on go to the new files.
    /// A file that cannot be opened keeps its old handle. Blocking.
    pub fn reopen(&self) -> Result<usize, String> {
        let files: Vec<Arc<LogFile>> = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        let mut handles = Vec::new();
        let mut failed = Vec::new();
        for file in &files {
            match open_append(&file.path) {
                Ok(handle) => handles.push((file.id, handle)),
                Err(error) => failed.push(format!("{}: {error}", file.path.display())),
            }
        }
        let reopened = handles.len();
        self.queue.send(Message::Open(handles));
        if failed.is_empty() {
            Ok(reopened)
        } else {
            Err(failed.join("; "))
        }
    }

    /// Waits until every line logged so far is written, or `timeout`
    /// passes (a file that does not drain, such as a FIFO nobody reads).
    /// Blocking.
    pub fn sync(&self, timeout: Duration) -> bool {
        let (done, wait) = mpsc::sync_channel(1);
        self.queue.send(Message::Sync(done));
        wait.recv_timeout(timeout).is_ok()
    }
}

/// Appending, creating the file (mode 0644 under the umask). `O_NONBLOCK`
/// makes opening a FIFO with no reader fail (`ENXIO`) instead of hanging
/// the caller; it is cleared after, so writes wait for the disk or reader on
/// the writer thread.
fn open_append(path: &Path) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(file)
}

/// The writer thread: takes whatever is queued, writes it, and flushes each
/// file once per batch, so a burst of lines is one write per file.
fn write_lines(receiver: Receiver<Message>, queued: &AtomicUsize) {
    let mut files: HashMap<u64, Output> = HashMap::new();
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(id, line) => {
                    queued.fetch_sub(1, Ordering::Relaxed);
                    if let Some(file) = files.get_mut(&id) {
                        file.write(line.as_bytes());
                    }
                }
                Message::Open(handles) => {
                    for (id, handle) in handles {
                        if let Some(mut old) = files.insert(id, Output::new(handle)) {
                            old.flush();
                        }
                    }
                }
                Message::Close(id) => {
                    if let Some(mut file) = files.remove(&id) {
                        file.flush();
                    }
                }
                Message::Sync(done) => {
                    files.values_mut().for_each(Output::flush);
                    let _ = done.try_send(());
                }
            }
            next = receiver.try_recv().ok();
        }
        files.values_mut().for_each(Output::flush);
    }
}

/// A file being written, which reports a failure once rather than per line.
struct Output {
    writer: BufWriter<File>,
    failing: bool,
}

impl Output {
    fn new(file: File) -> Output {
        Output {
            writer: BufWriter::with_capacity(64 * 1024, file),
            failing: false,
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        let result = self.writer.write_all(bytes);
        self.outcome(result);
    }

    fn flush(&mut self) {
        let result = self.writer.flush();
        self.outcome(result);
    }

    fn outcome(&mut self, result: io::Result<()>) {
        match result {
            Ok(()) => self.failing = false,
            Err(error) if !self.failing => {
                self.failing = true;
                tracing::error!(%error, "cannot write the access log; its lines are lost until it works again");
            }
            Err(_) => {}
        }
    }
}

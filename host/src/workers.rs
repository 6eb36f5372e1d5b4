//! The threads that serve connections: one single-threaded tokio runtime
//! each, like nginx's worker processes.
//!
//! Every worker accepts on the same listening sockets and keeps each
//! connection it accepted on its own thread for the connection's whole life:
//! the socket's readiness, its tasks and its timers never cross threads. A
//! work-stealing runtime instead hands tasks between threads, each handoff
//! waking the other thread (a futex and an eventfd write per handshake, and
//! idle CPU while it wakes up). Measured on two cores (BENCHMARKS.md): 6 %
//! less CPU per relayed message, and the cores 96 % busy instead of 91 %.
//!
//! Balance comes from the kernel: a new connection wakes every worker whose
//! event loop waits on the listener, and whichever calls `accept` first takes
//! it, so a busy worker takes fewer.

use crate::shutdown::Shutdown;
use std::future::Future;
use std::io;
use std::thread;
use tokio::runtime::{Builder, Handle};
use tokio::sync::watch;

/// The running workers. Dropping this stops them: each thread drops its
/// runtime, which cancels the tasks still on it.
pub struct Workers {
    handles: Vec<Handle>,
    stop: watch::Sender<bool>,
}

impl Workers {
    /// Starts `count` workers (at least one).
    pub fn start(count: usize) -> io::Result<Workers> {
        let (stop, stopped) = watch::channel(false);
        let stopped = Shutdown::from(stopped);
        let mut handles = Vec::new();
        for index in 0..count.max(1) {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let mut stopped = stopped.clone();
            thread::Builder::new()
                .name(format!("wasp-worker-{index}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        stopped.signalled().await;
                    });
                })?;
        }
        Ok(Workers { handles, stop })
    }

    /// One worker per CPU the process may use.
    pub fn default_count() -> usize {
        thread::available_parallelism().map_or(1, |n| n.get())
    }

    pub fn count(&self) -> usize {
        self.handles.len()
    }

    /// Runs `make(index)`'s future on every worker.
    pub fn spawn_each<F>(&self, mut make: impl FnMut(usize) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        for (index, handle) in self.handles.iter().enumerate() {
            handle.spawn(make(index));
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

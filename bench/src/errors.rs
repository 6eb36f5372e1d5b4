//! Counting errors across connection tasks, keeping the first message for the report.

use std::{
    fmt::Display,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

/// A shared error counter that remembers the first error it saw.
#[derive(Debug, Default)]
pub struct ErrorLog {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl ErrorLog {
    /// Counts one error.
    pub fn add(&self, error: impl Display) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first.lock().expect("error log lock");
        if first.is_none() {
            *first = Some(error.to_string());
        }
    }

    /// Errors counted so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The first error's message, if any.
    pub fn first(&self) -> Option<String> {
        self.first.lock().expect("error log lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_keeps_the_first() {
        let log = ErrorLog::default();
        assert_eq!((log.count(), log.first()), (0, None));
        log.add("refused");
        log.add("reset");
        assert_eq!(log.count(), 2);
        assert_eq!(log.first().as_deref(), Some("refused"));
    }
}

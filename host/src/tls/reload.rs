//! Reloading a terminator's certificates when their files change, on the
//! host's file watcher: directories watched, events debounced, contents
//! already loaded or refused skipped.

use std::sync::Arc;

use super::{TlsError, TlsTerminator};
use crate::file_watch::{FileWatcher, watch_and_reload};

/// Keeps [`TlsTerminator::watch`] watching; dropping it stops.
pub struct CertWatcher {
    _watcher: FileWatcher,
}

impl TlsTerminator {
    /// Reloads the certificates when their files change, logging success
    /// (info) or the refused file and why (warn). Watching stops when the
    /// returned guard is dropped.
    pub fn watch(self: &Arc<Self>) -> Result<CertWatcher, TlsError> {
        let paths = self
            .files
            .iter()
            .flat_map(|files| [files.cert.clone(), files.key.clone()])
            .collect();
        let terminator = Arc::downgrade(self);
        let watcher = watch_and_reload(paths, move |_changed| {
            let Some(terminator) = terminator.upgrade() else {
                return Vec::new();
            };
            let (read, result) = terminator.reload_files();
            match result {
                Ok(()) => tracing::info!("reloaded TLS certificates: {}", terminator.cert_paths()),
                Err(err) => tracing::warn!(
                    "TLS certificates not reloaded, still serving the previous ones: {err}"
                ),
            }
            read
        })?;
        Ok(CertWatcher { _watcher: watcher })
    }

    fn cert_paths(&self) -> String {
        let paths: Vec<String> = self
            .files
            .iter()
            .map(|files| files.cert.display().to_string())
            .collect();
        paths.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use rcgen::KeyPair;

    use super::*;
    use crate::tls::fixtures::{Pki, connect, peer_cert, replace, round_trip, serve};

    /// Polls `check` until it holds, failing after 5 s.
    async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !check().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Collects what tracing writes.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Logs {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn contains(&self, text: &str) -> bool {
            String::from_utf8_lossy(&self.0.lock().unwrap()).contains(text)
        }
    }

    #[tokio::test]
    async fn watch_reloads_changed_files_and_keeps_open_connections() {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _logging = tracing::subscriber::set_default(subscriber);

        let pki = Pki::new();
        let first = pki.issue("a", &["a.test"]);
        let files = pki.files("a");
        let terminator = TlsTerminator::new(vec![(vec![], files.clone())], false).unwrap();
        let _watcher = terminator.watch().unwrap();
        let (addr, _snis) = serve(terminator).await;

        let mut open = connect(pki.client(), addr, "a.test").await.unwrap();
        round_trip(&mut open).await;
        assert_eq!(peer_cert(&open), first);

        let second = pki.issue("a", &["a.test"]);
        eventually("the new certificate", async || {
            let tls = connect(pki.client(), addr, "a.test").await.unwrap();
            peer_cert(&tls) == second
        })
        .await;
        assert!(logs.contains("reloaded TLS certificates"));
        round_trip(&mut open).await;

        replace(
            &files.key,
            KeyPair::generate().unwrap().serialize_pem().as_bytes(),
        );
        let refusal = format!("{} does not match", files.key.display());
        eventually("the refusal", async || logs.contains(&refusal)).await;
        let tls = connect(pki.client(), addr, "a.test").await.unwrap();
        assert_eq!(peer_cert(&tls), second);
        round_trip(&mut open).await;
    }
}

//! TLS termination for one listen address: tokio-rustls with the certificate
//! picked by SNI among the address's servers, TLS 1.2 and 1.3 only, ALPN
//! `http/1.1`, and certificates reloaded from disk without a restart.
//!
//! The certificate set sits behind an `ArcSwap`: a reload replaces it whole,
//! a handshake reads it once, and an established connection never looks at it
//! again, so reloads cannot disturb open connections. A set that fails to
//! load (unreadable file, bad PEM, key not matching its certificate) is never
//! installed: the previous one keeps serving.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

use crate::config::TlsFiles;

/// Quiet time after the last file event before reloading: one `cp`, editor
/// save or deploy is a burst of events.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Why certificates could not be loaded or watched. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: bad PEM: {source}", path.display())]
    Pem { path: PathBuf, source: pem::Error },
    #[error("{}: no certificate found", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no private key found", path.display())]
    NoKey { path: PathBuf },
    /// rustls refused a certificate it cannot parse or a key of an unsupported type.
    #[error("{}: {source}", path.display())]
    Refused {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{} does not match {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("no TLS certificate configured")]
    NoSites,
    #[error("watching {}: {source}", dir.display())]
    Watch { dir: PathBuf, source: notify::Error },
}

/// The certificates of one listen address, chosen by SNI.
pub struct TlsTerminator {
    /// Each site's files, in the order of the resolver's names and keys.
    files: Vec<TlsFiles>,
    provider: Arc<CryptoProvider>,
    resolver: Arc<SniResolver>,
    acceptor: TlsAcceptor,
    /// Digest of the file contents last loaded or refused, so that the
    /// watcher stays silent on events that changed nothing.
    last_read: Mutex<[u8; 32]>,
}

/// Raw PEM bytes of one site: (certificate chain, private key).
type Pems = (Vec<u8>, Vec<u8>);

impl TlsTerminator {
    /// `sites`: for each server on the address, its server names (empty or
    /// `""` = any) and files. The first is the default certificate (no SNI,
    /// or an SNI nothing matches). Fails on the first file that does not load.
    pub fn new(sites: Vec<(Vec<String>, TlsFiles)>) -> Result<Arc<Self>, TlsError> {
        if sites.is_empty() {
            return Err(TlsError::NoSites);
        }
        let (names, files): (Vec<Vec<String>>, Vec<TlsFiles>) = sites
            .into_iter()
            .map(|(names, files)| {
                let names = names.iter().map(|n| n.to_ascii_lowercase()).collect();
                (names, files)
            })
            .unzip();
        let provider = Arc::new(ring::default_provider());
        let pems = read_files(&files)?;
        let keys = certified_keys(&files, &pems, &provider)?;
        let resolver = Arc::new(SniResolver {
            names,
            keys: ArcSwap::from_pointee(keys),
        });
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring offers TLS 1.2 and 1.3 cipher suites")
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // A client that offers ALPN without http/1.1 (h2 only) is refused.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(Self {
            files,
            provider,
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            last_read: Mutex::new(digest(&pems)),
        }))
    }

    /// Completes the handshake; returns the stream and the SNI the client sent.
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> io::Result<(TlsStream<TcpStream>, Option<String>)> {
        let tls = self.acceptor.accept(tcp).await?;
        // rustls lowercases the SNI.
        let sni = tls.get_ref().1.server_name().map(str::to_owned);
        Ok((tls, sni))
    }

    /// Re-reads every certificate and key; on any error keeps the old ones
    /// and returns the error.
    pub fn reload(&self) -> Result<(), TlsError> {
        let mut last_read = self
            .last_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let pems = read_files(&self.files)?;
        *last_read = digest(&pems);
        self.install(&pems)
    }

    /// Like [`reload`](Self::reload), but `None` when the files hold what was
    /// last loaded or refused.
    fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let mut last_read = self
            .last_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let pems = match read_files(&self.files) {
            Ok(pems) => pems,
            Err(err) => return Some(Err(err)),
        };
        let digest = digest(&pems);
        if digest == *last_read {
            return None;
        }
        *last_read = digest;
        Some(self.install(&pems))
    }

    fn install(&self, pems: &[Pems]) -> Result<(), TlsError> {
        let keys = certified_keys(&self.files, pems, &self.provider)?;
        self.resolver.keys.store(Arc::new(keys));
        Ok(())
    }

    /// Reloads the certificates when their files change, logging success
    /// (info) or the refused file and why (warn). Watches the directories,
    /// not the files: editors, `cp` and deploys replace files, which would
    /// leave a watch on the old file stale. Events are debounced (100 ms) and
    /// contents already loaded or refused are skipped. Watching stops when the
    /// returned guard is dropped.
    pub fn watch(self: &Arc<Self>) -> Result<CertWatcher, TlsError> {
        let dirs: BTreeSet<&Path> = self
            .files
            .iter()
            .flat_map(|files| [&files.cert, &files.key])
            .map(|path| directory_of(path))
            .collect();
        let (tx, rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
            // An error may stand for lost events: treat it as a change.
            if event.map_or(true, |event| may_change_content(event.kind)) {
                let _ = tx.send(());
            }
        })
        .map_err(|source| TlsError::Watch {
            dir: dirs.first().expect("a site has files").to_path_buf(),
            source,
        })?;
        for dir in dirs {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|source| TlsError::Watch {
                    dir: dir.to_path_buf(),
                    source,
                })?;
        }

        let terminator = Arc::downgrade(self);
        // Log to the caller's subscriber, even a scoped one.
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        // The thread ends when the watcher is dropped (its closure holds `tx`).
        std::thread::spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                while rx.recv().is_ok() {
                    loop {
                        match rx.recv_timeout(DEBOUNCE) {
                            Ok(()) => continue,
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    let Some(terminator) = terminator.upgrade() else {
                        return;
                    };
                    match terminator.reload_if_changed() {
                        None => {}
                        Some(Ok(())) => {
                            tracing::info!("reloaded TLS certificates: {}", terminator.cert_paths())
                        }
                        Some(Err(err)) => tracing::warn!(
                            "TLS certificates not reloaded, still serving the previous ones: {err}"
                        ),
                    }
                }
            })
        });
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

/// Keeps [`TlsTerminator::watch`] watching; dropping it stops.
pub struct CertWatcher {
    _watcher: RecommendedWatcher,
}

/// Picks a site's certificate by SNI, from the current set.
#[derive(Debug)]
struct SniResolver {
    /// Lowercase server names of each site, in configuration order.
    names: Vec<Vec<String>>,
    /// Each site's certificate, same order; swapped whole by a reload.
    keys: ArcSwap<Vec<Arc<CertifiedKey>>>,
}

impl SniResolver {
    /// nginx's order: an exact name, then the longest matching `*.` wildcard,
    /// then the first site that accepts any name, and else the first site.
    /// Both sides are lowercase (rustls lowercases the SNI).
    fn site_for(&self, sni: Option<&str>) -> usize {
        let Some(sni) = sni else { return 0 };
        let names = || {
            self.names
                .iter()
                .enumerate()
                .flat_map(|(site, names)| names.iter().map(move |name| (site, name.as_str())))
        };
        let is_suffix = |name: &str| {
            name.strip_prefix('*')
                .is_some_and(|suffix| suffix.starts_with('.') && sni.ends_with(suffix))
        };
        names()
            .find(|(_, name)| *name == sni)
            .or_else(|| {
                names()
                    .filter(|(_, name)| is_suffix(name))
                    .min_by_key(|(_, name)| std::cmp::Reverse(name.len()))
            })
            .map(|(site, _)| site)
            .or_else(|| {
                self.names
                    .iter()
                    .position(|names| names.is_empty() || names.iter().any(String::is_empty))
            })
            .unwrap_or(0)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let site = self.site_for(hello.server_name());
        Some(self.keys.load()[site].clone())
    }
}

fn read_files(files: &[TlsFiles]) -> Result<Vec<Pems>, TlsError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.clone(),
            source,
        })
    };
    files
        .iter()
        .map(|files| Ok((read(&files.cert)?, read(&files.key)?)))
        .collect()
}

fn digest(pems: &[Pems]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in pems.iter().flat_map(|(cert, key)| [cert, key]) {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

fn certified_keys(
    files: &[TlsFiles],
    pems: &[Pems],
    provider: &CryptoProvider,
) -> Result<Vec<Arc<CertifiedKey>>, TlsError> {
    files
        .iter()
        .zip(pems)
        .map(|(files, pems)| certified_key(files, pems, provider))
        .collect()
}

fn certified_key(
    files: &TlsFiles,
    (cert_pem, key_pem): &Pems,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let (cert, key) = (&files.cert, &files.key);
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: cert.clone(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert.clone() });
    }
    let private_key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| match err {
        pem::Error::NoItemsFound => TlsError::NoKey { path: key.clone() },
        source => TlsError::Pem {
            path: key.clone(),
            source,
        },
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(private_key)
        .map_err(|source| TlsError::Refused {
            path: key.clone(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(Arc::new(certified)),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: cert.clone(),
            key: key.clone(),
        }),
        Err(source) => Err(TlsError::Refused {
            path: cert.clone(),
            source,
        }),
    }
}

/// The directory to watch for `path`; `.` for a bare file name.
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Whether a file event may have changed contents; our own reads of the
/// files show up as opens and closes, which must not trigger a reload.
fn may_change_content(kind: EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream as ClientTls;
    use tokio_rustls::rustls::pki_types::ServerName;
    use tokio_rustls::rustls::{
        ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion,
    };

    use super::*;

    /// A test CA, and a directory of leaf certificates it signs.
    struct Pki {
        ca: CertifiedIssuer<'static, KeyPair>,
        dir: tempfile::TempDir,
    }

    impl Pki {
        fn new() -> Self {
            let mut params = CertificateParams::new(Vec::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
            Self {
                ca,
                dir: tempfile::tempdir().unwrap(),
            }
        }

        /// The files of site `site` (which need not exist yet).
        fn files(&self, site: &str) -> TlsFiles {
            TlsFiles {
                cert: self.dir.path().join(format!("{site}.crt")),
                key: self.dir.path().join(format!("{site}.key")),
            }
        }

        /// Issues a new leaf certificate for `names` into the files of
        /// `site`; returns it as DER.
        fn issue(&self, site: &str, names: &[&str]) -> CertificateDer<'static> {
            let key = KeyPair::generate().unwrap();
            let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
            let params = CertificateParams::new(names).unwrap();
            let cert = params.signed_by(&key, &self.ca).unwrap();
            let files = self.files(site);
            replace(&files.cert, cert.pem().as_bytes());
            replace(&files.key, key.serialize_pem().as_bytes());
            cert.der().clone()
        }

        /// A client that trusts only this CA and offers ALPN http/1.1.
        fn client(&self) -> ClientConfig {
            self.client_of(rustls::DEFAULT_VERSIONS)
        }

        /// [`client`](Self::client) speaking only `versions`.
        fn client_of(&self, versions: &[&'static SupportedProtocolVersion]) -> ClientConfig {
            let mut roots = RootCertStore::empty();
            roots.add(self.ca.der().clone()).unwrap();
            let mut config =
                ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
                    .with_protocol_versions(versions)
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            config
        }
    }

    /// Writes `path` as a deploy does: a temporary file renamed over it.
    fn replace(path: &Path, contents: &[u8]) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    /// Serves `terminator` on loopback: each connection reports its SNI,
    /// then has its bytes echoed.
    async fn serve(
        terminator: Arc<TlsTerminator>,
    ) -> (SocketAddr, UnboundedReceiver<Option<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (terminator, tx) = (terminator.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok((tls, sni)) = terminator.accept(tcp).await {
                        let _ = tx.send(sni);
                        let (mut reader, mut writer) = tokio::io::split(tls);
                        let _ = tokio::io::copy(&mut reader, &mut writer).await;
                    }
                });
            }
        });
        (addr, rx)
    }

    async fn connect(
        config: ClientConfig,
        addr: SocketAddr,
        name: &str,
    ) -> io::Result<ClientTls<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(name.to_owned()).unwrap();
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }

    async fn round_trip(tls: &mut ClientTls<TcpStream>) {
        tls.write_all(b"ping").await.unwrap();
        let mut reply = [0; 4];
        tls.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"ping");
    }

    fn peer_cert(tls: &ClientTls<TcpStream>) -> CertificateDer<'static> {
        tls.get_ref().1.peer_certificates().unwrap()[0].clone()
    }

    /// Whether the certificate's subject alt names cover `name`.
    fn covers(cert: &CertificateDer<'_>, name: &str) -> bool {
        let name = ServerName::try_from(name).unwrap();
        webpki::EndEntityCert::try_from(cert)
            .unwrap()
            .verify_is_valid_for_subject_name(&name)
            .is_ok()
    }

    /// Polls `check` until it holds, failing after 5 s.
    async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !check().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn handshake_round_trip_and_alpn() {
        let pki = Pki::new();
        pki.issue("a", &["a.test"]);
        let terminator = TlsTerminator::new(vec![(vec![], pki.files("a"))]).unwrap();
        let (addr, mut snis) = serve(terminator).await;

        let mut client = pki.client();
        client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut tls = connect(client, addr, "a.test").await.unwrap();
        round_trip(&mut tls).await;
        let session = tls.get_ref().1;
        assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(session.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        assert_eq!(snis.recv().await.unwrap().as_deref(), Some("a.test"));

        let tls12 = pki.client_of(&[&rustls::version::TLS12]);
        let mut tls = connect(tls12, addr, "a.test").await.unwrap();
        round_trip(&mut tls).await;
        assert_eq!(
            tls.get_ref().1.protocol_version(),
            Some(ProtocolVersion::TLSv1_2)
        );

        let mut h2_only = pki.client();
        h2_only.alpn_protocols = vec![b"h2".to_vec()];
        assert!(connect(h2_only, addr, "a.test").await.is_err());
    }

    #[tokio::test]
    async fn certificate_chosen_by_sni() {
        let pki = Pki::new();
        // The default also covers other.test, so that a client asking for a
        // name no site has can still verify what it gets.
        pki.issue("default", &["default.test", "other.test"]);
        pki.issue("a", &["a.test"]);
        pki.issue("b", &["*.b.test"]);
        let terminator = TlsTerminator::new(vec![
            (vec!["default.test".into()], pki.files("default")),
            (vec!["A.Test".into()], pki.files("a")),
            (vec!["*.b.test".into()], pki.files("b")),
        ])
        .unwrap();
        let (addr, mut snis) = serve(terminator).await;

        for (name, sni, served) in [
            ("a.test", "a.test", "a.test"),
            ("A.TEST", "a.test", "a.test"),
            ("x.b.test", "x.b.test", "x.b.test"),
            ("other.test", "other.test", "default.test"),
        ] {
            let mut tls = connect(pki.client(), addr, name).await.unwrap();
            round_trip(&mut tls).await;
            let cert = peer_cert(&tls);
            assert!(
                covers(&cert, served),
                "{name}: expected the {served} certificate"
            );
            for site in ["default.test", "a.test", "x.b.test"] {
                assert_eq!(covers(&cert, site), site == served, "{name}: covers {site}");
            }
            assert_eq!(snis.recv().await.unwrap().as_deref(), Some(sni));
        }

        let mut no_sni = pki.client();
        no_sni.enable_sni = false;
        let mut tls = connect(no_sni, addr, "default.test").await.unwrap();
        round_trip(&mut tls).await;
        assert!(covers(&peer_cert(&tls), "default.test"));
        assert_eq!(snis.recv().await.unwrap(), None);
    }

    #[tokio::test]
    async fn bad_files_are_refused_and_old_certificate_kept() {
        let pki = Pki::new();
        let good = pki.issue("a", &["a.test"]);
        let files = pki.files("a");
        let (cert, key) = (files.cert.display(), files.key.display());
        let terminator = TlsTerminator::new(vec![(vec![], files.clone())]).unwrap();
        let (addr, _snis) = serve(terminator.clone()).await;
        let good_cert = std::fs::read(&files.cert).unwrap();
        let good_key = std::fs::read(&files.key).unwrap();

        let other_key = KeyPair::generate().unwrap().serialize_pem();
        for (cert_pem, key_pem, error) in [
            (
                &b"garbage"[..],
                &good_key[..],
                format!("{cert}: no certificate found"),
            ),
            (
                b"-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n",
                &good_key,
                format!("{cert}: bad PEM: base64 decode error"),
            ),
            (&good_cert, b"", format!("{key}: no private key found")),
            (
                &good_cert,
                other_key.as_bytes(),
                format!("{key} does not match {cert}"),
            ),
        ] {
            replace(&files.cert, cert_pem);
            replace(&files.key, key_pem);
            let err = terminator.reload().unwrap_err().to_string();
            assert!(
                err.starts_with(&error),
                "{err:?} should start with {error:?}"
            );
            let mut tls = connect(pki.client(), addr, "a.test").await.unwrap();
            round_trip(&mut tls).await;
            assert_eq!(peer_cert(&tls), good);
            // Nothing is loaded at startup either.
            let err = TlsTerminator::new(vec![(vec![], files.clone())])
                .err()
                .unwrap();
            assert!(err.to_string().starts_with(&error), "{err}");
        }

        std::fs::remove_file(&files.key).unwrap();
        let err = terminator.reload().unwrap_err().to_string();
        assert!(err.starts_with(&format!("{key}: ")), "{err}");
    }

    /// A real TLS 1.1 ClientHello (rustls clients cannot speak 1.1): legacy
    /// version 3.2, no supported_versions extension, one TLS 1.0/1.1 suite.
    #[tokio::test]
    async fn tls_1_1_client_is_refused() {
        let pki = Pki::new();
        pki.issue("a", &["a.test"]);
        let terminator = TlsTerminator::new(vec![(vec![], pki.files("a"))]).unwrap();

        let mut hello = vec![0x03, 0x02]; // client_version TLS 1.1
        hello.extend([7; 32]); // random
        hello.push(0); // no session id
        hello.extend([0x00, 0x02, 0xc0, 0x13]); // TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA
        hello.extend([0x01, 0x00]); // null compression
        let mut record = vec![0x16, 0x03, 0x02, 0x00, hello.len() as u8 + 4];
        record.extend([0x01, 0x00, 0x00, hello.len() as u8]); // ClientHello
        record.extend(hello);

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(&record).await.unwrap();
            let mut reply = Vec::new();
            tcp.read_to_end(&mut reply).await.unwrap();
            reply
        });
        let (tcp, _) = listener.accept().await.unwrap();
        assert!(terminator.accept(tcp).await.is_err());
        let reply = client.await.unwrap();
        // One fatal alert record, and no ServerHello. It is handshake_failure
        // (40): rustls wants the TLS 1.2 signature_algorithms extension before
        // it looks at the version.
        assert_eq!(reply, [0x15, 0x03, 0x03, 0x00, 0x02, 2, 40]);
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
        let terminator = TlsTerminator::new(vec![(vec![], files.clone())]).unwrap();
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

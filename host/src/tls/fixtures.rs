//! Test fixtures: a certificate authority issuing leaf certificates into
//! files, a client that trusts it, and a terminator served on loopback.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream as ClientTls;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, SupportedProtocolVersion};

use super::TlsTerminator;
use crate::config::TlsFiles;

/// A test CA, and a directory of leaf certificates it signs.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self {
            ca,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The CA's certificate in a PEM file, for a client that must trust it.
    pub fn ca_file(&self) -> std::path::PathBuf {
        let path = self.dir.path().join("ca.crt");
        std::fs::write(&path, self.ca.pem()).unwrap();
        path
    }

    /// The files of site `site` (which need not exist yet).
    pub fn files(&self, site: &str) -> TlsFiles {
        TlsFiles {
            cert: self.dir.path().join(format!("{site}.crt")),
            key: self.dir.path().join(format!("{site}.key")),
        }
    }

    /// Issues a new leaf certificate for `names` into the files of
    /// `site`; returns it as DER.
    pub fn issue(&self, site: &str, names: &[&str]) -> CertificateDer<'static> {
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
    pub fn client(&self) -> ClientConfig {
        self.client_of(rustls::DEFAULT_VERSIONS)
    }

    /// [`client`](Self::client) speaking only `versions`.
    pub fn client_of(&self, versions: &[&'static SupportedProtocolVersion]) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

/// Writes `path` as a deploy does: a temporary file renamed over it.
pub fn replace(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// Serves `terminator` on loopback: each connection reports its SNI,
/// then has its bytes echoed.
pub async fn serve(
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

/// A TLS connection to `addr` asking for `name`.
pub async fn connect(
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

/// Sends `ping` and expects it echoed.
pub async fn round_trip(tls: &mut ClientTls<TcpStream>) {
    tls.write_all(b"ping").await.unwrap();
    let mut reply = [0; 4];
    tls.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"ping");
}

/// The leaf certificate the server presented.
pub fn peer_cert(tls: &ClientTls<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// Whether the certificate's subject alt names cover `name`.
pub fn covers(cert: &CertificateDer<'_>, name: &str) -> bool {
    let name = ServerName::try_from(name).unwrap();
    webpki::EndEntityCert::try_from(cert)
        .unwrap()
        .verify_is_valid_for_subject_name(&name)
        .is_ok()
}

//! A CA made at test time (rcgen) and the leaf certificates it signs, for
//! wasp's TLS listeners and for TLS backends behind it.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig, crypto::ring};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A CA made for the test, and the leaf certificates it signs.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    pub dir: std::path::PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = super::temp_dir(&format!("pki-{name}"));
        Pki { ca, dir }
    }

    /// Issues a certificate for `host` into `host.crt`/`host.key` (replacing
    /// the files the way a deploy does: write aside, rename over).
    pub fn issue(&self, host: &str) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![host.to_string()])
            .unwrap()
            .signed_by(&key, &self.ca)
            .unwrap();
        replace(&self.dir.join(format!("{host}.crt")), cert.pem().as_bytes());
        replace(
            &self.dir.join(format!("{host}.key")),
            key.serialize_pem().as_bytes(),
        );
        cert.der().clone()
    }

    /// A server's `tls` setting: `host`'s certificate and key files.
    pub fn tls(&self, host: &str) -> toml::Table {
        let path = |ext: &str| self.dir.join(format!("{host}.{ext}")).display().to_string();
        toml::Table::from_iter([
            ("cert".to_owned(), path("crt").into()),
            ("key".to_owned(), path("key").into()),
        ])
    }

    /// A client trusting this CA only, offering HTTP/1.1 by ALPN.
    pub fn connector(&self) -> TlsConnector {
        self.connector_offering(&[b"http/1.1"])
    }

    /// A client trusting this CA only, offering `alpn` (in order).
    pub fn connector_offering(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }

    /// A TLS server with `host`'s certificate (issued first), for a
    /// backend.
    pub fn acceptor(&self, host: &str) -> TlsAcceptor {
        let read = |ext: &str| std::fs::read(self.dir.join(format!("{host}.{ext}"))).unwrap();
        let chain = CertificateDer::pem_slice_iter(&read("crt"))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(&read("key")).unwrap();
        let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }

    /// The CA's certificate in a PEM file, for what must trust it.
    pub fn ca_file(&self) -> std::path::PathBuf {
        let path = self.dir.join("ca.crt");
        std::fs::write(&path, self.ca.pem()).unwrap();
        path
    }
}

/// Writes `path` as a deploy does: aside, then renamed over.
pub fn replace(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

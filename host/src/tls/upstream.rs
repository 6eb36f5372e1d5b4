//! TLS towards upstreams (`proxy_pass https://`): the client side of
//! rustls with the roots, name and client certificate a location's
//! `proxy_ssl_*` settings ask for. Built once per loaded configuration (it
//! reads files); a handshake then only uses it.

use std::io;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    WebPkiSupportedAlgorithms, ring, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::TlsError;
use crate::config::UpstreamTls;

/// How one location connects to its upstream over TLS.
pub struct UpstreamConnector {
    connector: TlsConnector,
    /// The name verified (and sent as SNI unless `proxy_ssl_server_name`
    /// is off).
    name: ServerName<'static>,
}

impl UpstreamConnector {
    /// Reads the CA file (or the system's store) and the client
    /// certificate; fails naming the file that does not load.
    pub fn new(settings: &UpstreamTls) -> Result<UpstreamConnector, TlsError> {
        let provider = Arc::new(ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring offers TLS 1.2 and 1.3 cipher suites");
        let builder = match settings.verify {
            true => builder.with_root_certificates(roots(settings.trusted_certificate.as_deref())?),
            false => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                    provider.signature_verification_algorithms,
                ))),
        };
        let mut config = match &settings.client_certificate {
            None => builder.with_no_client_auth(),
            Some(files) => {
                let chain = read_certs(&files.cert)?;
                if chain.is_empty() {
                    return Err(TlsError::NoCertificate {
                        path: files.cert.clone(),
                    });
                }
                let key = std::fs::read(&files.key).map_err(|source| TlsError::Read {
                    path: files.key.clone(),
                    source,
                })?;
                let key = PrivateKeyDer::from_pem_slice(&key).map_err(|error| match error {
                    pem::Error::NoItemsFound => TlsError::NoKey {
                        path: files.key.clone(),
                    },
                    source => TlsError::Pem {
                        path: files.key.clone(),
                        source,
                    },
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|source| TlsError::Refused {
                        path: files.key.clone(),
                        source,
                    })?
            }
        };
        // wasp speaks HTTP/1.1 to upstreams (WebSocket upgrades need it).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.enable_sni = settings.server_name;
        let name = ServerName::try_from(settings.name.clone()).map_err(|_| TlsError::BadName {
            name: settings.name.clone(),
        })?;
        Ok(UpstreamConnector {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// The TLS handshake on a connected socket.
    pub async fn handshake(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.name.clone(), tcp).await
    }
}

/// The CAs of `file`, or the system's store.
fn roots(file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match file {
        Some(path) => {
            let certs = read_certs(path)?;
            if certs.is_empty() {
                return Err(TlsError::NoCertificate {
                    path: path.to_owned(),
                });
            }
            for cert in certs {
                roots.add(cert).map_err(|source| TlsError::Refused {
                    path: path.to_owned(),
                    source,
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "a certificate of the system's store could not be read");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::NoSystemRoots { ignored });
            }
        }
    }
    Ok(roots)
}

/// The certificates of the PEM file at `path`.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_owned(),
            source,
        })
}

/// `proxy_ssl_verify = false`: any certificate is accepted, but the
/// handshake's signatures are still checked (the peer holds the key of the
/// certificate it sent), as nginx does with verification off.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsFiles;
    use crate::tls::TlsTerminator;
    use crate::tls::fixtures::{Pki, serve};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn settings(pki: &Pki, name: &str) -> UpstreamTls {
        let ca = pki.ca_file();
        UpstreamTls {
            verify: true,
            trusted_certificate: Some(ca),
            server_name: true,
            name: name.to_owned(),
            client_certificate: None,
        }
    }

    #[tokio::test]
    async fn verifies_the_name_against_the_configured_ca() {
        let pki = Pki::new();
        pki.issue("a", &["backend.test"]);
        let server = TlsTerminator::new(vec![(vec![], pki.files("a"))], false).unwrap();
        let (addr, mut snis) = serve(server).await;

        let good = UpstreamConnector::new(&settings(&pki, "backend.test")).unwrap();
        let mut tls = good
            .handshake(TcpStream::connect(addr).await.unwrap())
            .await
            .unwrap();
        tls.write_all(b"ping").await.unwrap();
        let mut echoed = [0; 4];
        tls.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"ping");
        assert_eq!(snis.recv().await.unwrap().as_deref(), Some("backend.test"));

        // Another name: refused, unless verification is off.
        let wrong = UpstreamConnector::new(&settings(&pki, "other.test")).unwrap();
        assert!(
            wrong
                .handshake(TcpStream::connect(addr).await.unwrap())
                .await
                .is_err()
        );
        let mut unverified = settings(&pki, "other.test");
        unverified.verify = false;
        unverified.server_name = false;
        let lax = UpstreamConnector::new(&unverified).unwrap();
        lax.handshake(TcpStream::connect(addr).await.unwrap())
            .await
            .unwrap();
    }

    #[test]
    fn unreadable_files_are_named() {
        let mut bad = UpstreamTls {
            verify: true,
            trusted_certificate: Some("/nonexistent/ca.pem".into()),
            server_name: true,
            name: "a.test".into(),
            client_certificate: None,
        };
        let error = UpstreamConnector::new(&bad).err().unwrap().to_string();
        assert!(error.starts_with("/nonexistent/ca.pem: "), "{error}");
        bad.verify = false;
        bad.client_certificate = Some(TlsFiles {
            cert: "/nonexistent/client.crt".into(),
            key: "/nonexistent/client.key".into(),
        });
        let error = UpstreamConnector::new(&bad).err().unwrap().to_string();
        assert!(error.starts_with("/nonexistent/client.crt: "), "{error}");
    }
}

//! The TLS acceptor of one listen address and its certificate set.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

use super::TlsError;
use super::certs::{Pems, certified_keys, read_files};
use super::sni::SniResolver;
use crate::config::TlsFiles;
use crate::digest::sha256_hex;
use crate::file_watch::ReadFiles;

/// The certificates of one listen address, chosen by SNI.
pub struct TlsTerminator {
    /// Each site's files, in the order of the resolver's names and keys.
    pub(super) files: Vec<TlsFiles>,
    provider: Arc<CryptoProvider>,
    resolver: Arc<SniResolver>,
    acceptor: TlsAcceptor,
    /// Held through a reload, so that an older read is never installed over
    /// a newer one.
    reloading: Mutex<()>,
}

impl TlsTerminator {
    /// `sites`: for each server on the address, its server names (empty or
    /// `""` = any) and files. The first is the default certificate (no SNI,
    /// or an SNI nothing matches). `http2`: offer `h2` by ALPN before
    /// `http/1.1`. Fails on the first file that does not load.
    pub fn new(sites: Vec<(Vec<String>, TlsFiles)>, http2: bool) -> Result<Arc<Self>, TlsError> {
        if sites.is_empty() {
            return Err(TlsError::NoSites);
        }
        let (names, files): (Vec<Vec<String>>, Vec<TlsFiles>) = sites.into_iter().unzip();
        let provider = Arc::new(ring::default_provider());
        let keys = certified_keys(&files, &read_files(&files)?, &provider)?;
        let resolver = Arc::new(SniResolver::new(names, keys));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring offers TLS 1.2 and 1.3 cipher suites")
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // The server's preference order. Without `http2`, a client that
        // offers ALPN without http/1.1 (h2 only) is refused.
        config.alpn_protocols = match http2 {
            true => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            false => vec![b"http/1.1".to_vec()],
        };
        Ok(Arc::new(Self {
            files,
            provider,
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            reloading: Mutex::new(()),
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
        self.reload_files().1
    }

    /// [`reload`](Self::reload), also returning what it read for the file
    /// watcher: each file with its content hash (none when a file cannot be
    /// read), whether the set was installed or refused.
    pub(super) fn reload_files(&self) -> (ReadFiles, Result<(), TlsError>) {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let pems = match read_files(&self.files) {
            Ok(pems) => pems,
            Err(err) => return (Vec::new(), Err(err)),
        };
        let read = self
            .files
            .iter()
            .zip(&pems)
            .flat_map(|(files, (cert, key))| {
                [
                    (files.cert.clone(), sha256_hex(cert)),
                    (files.key.clone(), sha256_hex(key)),
                ]
            })
            .collect();
        (read, self.install(&pems))
    }

    fn install(&self, pems: &[Pems]) -> Result<(), TlsError> {
        let keys = certified_keys(&self.files, pems, &self.provider)?;
        self.resolver.install(keys);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::rustls::ProtocolVersion;

    use super::*;
    use crate::tls::fixtures::{Pki, connect, round_trip, serve};

    #[tokio::test]
    async fn handshake_round_trip_and_alpn() {
        let pki = Pki::new();
        pki.issue("a", &["a.test"]);
        let terminator = TlsTerminator::new(vec![(vec![], pki.files("a"))], false).unwrap();
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
        assert!(connect(h2_only.clone(), addr, "a.test").await.is_err());

        // With `http2`, h2 is preferred and HTTP/1.1 still offered.
        let terminator = TlsTerminator::new(vec![(vec![], pki.files("a"))], true).unwrap();
        let (addr, _snis) = serve(terminator).await;
        let mut both = pki.client();
        both.alpn_protocols = vec![b"http/1.1".to_vec(), b"h2".to_vec()];
        let tls = connect(both, addr, "a.test").await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let tls = connect(pki.client(), addr, "a.test").await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let tls = connect(h2_only, addr, "a.test").await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    }

    /// A real TLS 1.1 ClientHello (rustls clients cannot speak 1.1): legacy
    /// version 3.2, no supported_versions extension, one TLS 1.0/1.1 suite.
    #[tokio::test]
    async fn tls_1_1_client_is_refused() {
        let pki = Pki::new();
        pki.issue("a", &["a.test"]);
        let terminator = TlsTerminator::new(vec![(vec![], pki.files("a"))], false).unwrap();

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
}

//! Certified keys from PEM files: each site's certificate chain and private
//! key, read from disk and checked to belong together.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::sign::CertifiedKey;

use super::TlsError;
use crate::config::TlsFiles;

/// Raw PEM bytes of one site: (certificate chain, private key).
pub type Pems = (Vec<u8>, Vec<u8>);

/// Reads each site's files; fails on the first that cannot be read.
pub fn read_files(files: &[TlsFiles]) -> Result<Vec<Pems>, TlsError> {
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

/// Each site's certified key, in the order of `files`; fails on the first
/// that does not load.
pub fn certified_keys(
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

#[cfg(test)]
mod tests {
    use rcgen::KeyPair;

    use crate::tls::TlsTerminator;
    use crate::tls::fixtures::{Pki, connect, peer_cert, replace, round_trip, serve};

    #[tokio::test]
    async fn bad_files_are_refused_and_old_certificate_kept() {
        let pki = Pki::new();
        let good = pki.issue("a", &["a.test"]);
        let files = pki.files("a");
        let (cert, key) = (files.cert.display(), files.key.display());
        let terminator = TlsTerminator::new(vec![(vec![], files.clone())], false).unwrap();
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
            let err = TlsTerminator::new(vec![(vec![], files.clone())], false)
                .err()
                .unwrap();
            assert!(err.to_string().starts_with(&error), "{err}");
        }

        std::fs::remove_file(&files.key).unwrap();
        let err = terminator.reload().unwrap_err().to_string();
        assert!(err.starts_with(&format!("{key}: ")), "{err}");
    }
}

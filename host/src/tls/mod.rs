//! TLS termination for one listen address: tokio-rustls with the certificate
//! picked by SNI among the address's servers, TLS 1.2 and 1.3 only, ALPN
//! `h2` (when the server has `http2`) and `http/1.1`, and certificates
//! reloaded from disk without a restart. Also TLS towards upstreams.
//!
//! The certificate set sits behind an `ArcSwap`: a reload replaces it whole,
//! a handshake reads it once, and an established connection never looks at it
//! again, so reloads cannot disturb open connections. A set that fails to
//! load (unreadable file, bad PEM, key not matching its certificate) is never
//! installed: the previous one keeps serving.
//!
//! - `terminator`: the acceptor of one address and its certificate set;
//! - `sni`: which site's certificate a handshake gets;
//! - `certs`: certified keys from PEM files;
//! - `reload`: reloading the set when its files change;
//! - `upstream`: the client side, towards `proxy_pass https://` upstreams.

mod certs;
mod reload;
mod sni;
mod terminator;
mod upstream;

#[cfg(test)]
mod fixtures;

use std::io;
use std::path::PathBuf;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem;

use crate::file_watch::WatchError;

pub use reload::CertWatcher;
pub use terminator::TlsTerminator;
pub use upstream::UpstreamConnector;

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
    #[error("`{name}` is not a valid TLS server name (proxy_ssl_name)")]
    BadName { name: String },
    #[error(
        "the system's certificate store holds no usable CA ({ignored} unparsable); set proxy_ssl_trusted_certificate"
    )]
    NoSystemRoots { ignored: usize },
    #[error(transparent)]
    Watch(#[from] WatchError),
}

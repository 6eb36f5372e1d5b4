//! Which site's certificate a handshake gets, by the name the client sent
//! (SNI), chosen the way nginx chooses a server.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// Picks a site's certificate by SNI, from the current set.
#[derive(Debug)]
pub struct SniResolver {
    /// Lowercase server names of each site, in configuration order.
    names: Vec<Vec<String>>,
    /// Each site's certificate, same order; swapped whole by a reload.
    keys: ArcSwap<Vec<Arc<CertifiedKey>>>,
}

impl SniResolver {
    /// `names`: each site's server names (empty or `""` = any); `keys`: each
    /// site's certificate, in the same order.
    pub fn new(names: Vec<Vec<String>>, keys: Vec<Arc<CertifiedKey>>) -> Self {
        let names = names
            .into_iter()
            .map(|names| names.iter().map(|n| n.to_ascii_lowercase()).collect())
            .collect();
        SniResolver {
            names,
            keys: ArcSwap::from_pointee(keys),
        }
    }

    /// Replaces every site's certificate at once; handshakes under way keep
    /// the set they started with.
    pub fn install(&self, keys: Vec<Arc<CertifiedKey>>) {
        self.keys.store(Arc::new(keys));
    }

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

#[cfg(test)]
mod tests {
    use crate::tls::TlsTerminator;
    use crate::tls::fixtures::{Pki, connect, covers, peer_cert, round_trip, serve};

    #[tokio::test]
    async fn certificate_chosen_by_sni() {
        let pki = Pki::new();
        // The default also covers other.test, so that a client asking for a
        // name no site has can still verify what it gets.
        pki.issue("default", &["default.test", "other.test"]);
        pki.issue("a", &["a.test"]);
        pki.issue("b", &["*.b.test"]);
        let terminator = TlsTerminator::new(
            vec![
                (vec!["default.test".into()], pki.files("default")),
                (vec!["A.Test".into()], pki.files("a")),
                (vec!["*.b.test".into()], pki.files("b")),
            ],
            false,
        )
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
}

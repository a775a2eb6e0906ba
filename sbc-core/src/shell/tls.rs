//! TLS for SIP over TLS and WSS: the listeners' certificates (re-read when their files change)
//! and the client side toward trunks' `;transport=tls` targets.
//!
//! One crypto provider (ring) is used for everything; [`install_provider`] also makes it the
//! process default, so that nothing else picks another. TLS 1.2 and 1.3 only (rustls offers
//! nothing older). A listener's [`CertStore`] is read once per accepted connection: a reload
//! changes the certificate of new connections only, and a file that does not load (half
//! written, wrong key) keeps the previous certificate in service and is logged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{Config, ListenerId, TlsFiles, Transport};

/// How often the certificate files' modification times are looked at.
pub(super) const RELOAD_POLL: Duration = Duration::from_secs(2);

/// A TLS handshake that takes longer than this is abandoned (slowloris on the handshake).
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide provider; a second call (or another installer first) is harmless
/// because every config here names its provider explicitly.
pub(super) fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why a certificate, key or CA file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read or holds no PEM item of the expected kind.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the certificate and key together (e.g. the key is not the leaf's).
    #[error("{path}: {source}")]
    Rustls {
        /// The certificate file.
        path: String,
        /// rustls' reason.
        source: rustls::Error,
    },
}

fn file_error(path: &Path, why: impl ToString) -> TlsError {
    TlsError::File { path: path.display().to_string(), why: why.to_string() }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    match certs.is_empty() {
        true => Err(file_error(path, "no CERTIFICATE in the file")),
        false => Ok(certs),
    }
}

/// Builds a server config from the PEM files.
pub(super) fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let chain = certificates(&files.certificate)?;
    let key = PrivateKeyDer::from_pem_file(&files.private_key)
        .map_err(|e| file_error(&files.private_key, e))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            path: files.certificate.display().to_string(),
            source,
        })?;
    builder.with_no_client_auth().with_single_cert(chain, key).map_err(|source| TlsError::Rustls {
        path: files.certificate.display().to_string(),
        source,
    })
}

/// A listener's current certificate, replaced by [`CertStore::reload_if_changed`].
pub(super) struct CertStore {
    files: TlsFiles,
    // Written by the reload task, read by the accept loop once per connection.
    current: RwLock<Arc<ServerConfig>>,
    seen: RwLock<Stamp>,
}

/// What the files looked like when last read: (modified, length) of certificate and key.
type Stamp = [Option<(SystemTime, u64)>; 2];

fn stamp(files: &TlsFiles) -> Stamp {
    [&files.certificate, &files.private_key]
        .map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
}

impl CertStore {
    /// Loads the files; a listener does not start without a usable certificate.
    pub(super) fn load(files: &TlsFiles) -> Result<CertStore, TlsError> {
        let seen = stamp(files);
        let config = server_config(files)?;
        Ok(CertStore {
            files: files.clone(),
            current: RwLock::new(Arc::new(config)),
            seen: RwLock::new(seen),
        })
    }

    /// The acceptor for a new connection.
    pub(super) fn acceptor(&self) -> Option<TlsAcceptor> {
        self.current.read().ok().map(|c| TlsAcceptor::from(Arc::clone(&c)))
    }

    /// Re-reads the files if their time or size changed since the last attempt. `Ok(true)`: a
    /// new certificate is in service; an error leaves the old one and is not retried until
    /// the files change again (no log line every poll).
    pub(super) fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamp(&self.files);
        if self.seen.read().is_ok_and(|s| *s == now) {
            return Ok(false);
        }
        if let Ok(mut s) = self.seen.write() {
            *s = now;
        }
        let config = server_config(&self.files)?;
        if let Ok(mut c) = self.current.write() {
            *c = Arc::new(config);
        }
        Ok(true)
    }
}

/// Polls a listener's files for changes until the process ends.
pub(super) async fn reload_task(name: String, store: Arc<CertStore>) {
    let mut tick = tokio::time::interval(RELOAD_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Reading PEM files is blocking I/O, but small and rare (only after a change).
        match store.reload_if_changed() {
            Ok(true) => tracing::info!(listener = %name, "TLS certificate reloaded"),
            Ok(false) => {}
            Err(e) => tracing::error!(
                listener = %name,
                error = %e,
                "TLS certificate not reloaded; the previous one stays in service"
            ),
        }
    }
}

/// How to open TLS toward one trunk target.
#[derive(Clone)]
pub(super) struct Outbound {
    pub(super) connector: TlsConnector,
    pub(super) name: ServerName<'static>,
}

/// Client TLS of every `;transport=tls` trunk target, keyed like the connection table.
pub(super) fn outbound(
    config: &Config,
) -> Result<HashMap<(ListenerId, SocketAddr), Outbound>, TlsError> {
    let mut out = HashMap::new();
    for trunk in &config.trunks {
        let targets: Vec<_> =
            trunk.targets.iter().filter(|t| t.transport == Transport::Tls).collect();
        if targets.is_empty() {
            continue;
        }
        let tls = trunk.tls.clone().unwrap_or_default();
        let mut roots = RootCertStore::empty();
        match &tls.ca {
            Some(ca) => {
                for cert in certificates(ca)? {
                    roots.add(cert).map_err(|e| file_error(ca, e))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls { path: trunk.name.clone(), source })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = TlsConnector::from(Arc::new(client));
        for t in targets {
            let name = match &tls.server_name {
                Some(n) => ServerName::try_from(n.clone())
                    .map_err(|e| TlsError::File { path: trunk.name.clone(), why: e.to_string() })?,
                None => ServerName::IpAddress(t.addr.ip().into()),
            };
            let entry = Outbound { connector: connector.clone(), name };
            out.insert((trunk.listener, t.addr), entry);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn data(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls").join(name)
    }

    /// Whether a client that trusts only `ca` completes a handshake with what `store` serves.
    async fn handshake_trusting(store: &CertStore, ca: &str) -> bool {
        let mut roots = RootCertStore::empty();
        for c in certificates(&data(ca)).unwrap() {
            roots.add(c).unwrap();
        }
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (a, b) = tokio::io::duplex(16 * 1024);
        let acceptor = store.acceptor().unwrap();
        let server = tokio::spawn(async move { acceptor.accept(b).await.is_ok() });
        let name = ServerName::try_from("sbc.test").unwrap();
        let ok = TlsConnector::from(Arc::new(client)).connect(name, a).await.is_ok();
        let _ = server.await;
        ok
    }

    #[tokio::test]
    async fn certificate_is_reloaded_when_the_files_change_and_kept_when_broken() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            certificate: dir.path().join("cert.pem"),
            private_key: dir.path().join("key.pem"),
        };
        let put = |cert: &str, key: &str| {
            std::fs::copy(data(cert), &files.certificate).unwrap();
            std::fs::copy(data(key), &files.private_key).unwrap();
        };
        put("one-cert.pem", "one-key.pem");
        let store = CertStore::load(&files).unwrap();
        assert!(handshake_trusting(&store, "one-cert.pem").await);
        assert!(!handshake_trusting(&store, "two-cert.pem").await);
        assert!(matches!(store.reload_if_changed(), Ok(false)), "nothing changed");

        put("two-cert.pem", "two-key.pem");
        assert!(matches!(store.reload_if_changed(), Ok(true)));
        assert!(handshake_trusting(&store, "two-cert.pem").await, "new connections: new cert");
        assert!(!handshake_trusting(&store, "one-cert.pem").await);

        // A half-written key: refused, the certificate in service stays, no retry until the
        // files change again.
        std::fs::write(&files.private_key, "-----BEGIN PRIVATE KEY-----\nAAAA").unwrap();
        assert!(store.reload_if_changed().is_err());
        assert!(matches!(store.reload_if_changed(), Ok(false)));
        assert!(handshake_trusting(&store, "two-cert.pem").await);
        // A key that is not the certificate's.
        put("one-cert.pem", "two-key.pem");
        let err = store.reload_if_changed().unwrap_err().to_string();
        assert!(err.contains("cert.pem"), "{err}");
        assert!(handshake_trusting(&store, "two-cert.pem").await);
        put("one-cert.pem", "one-key.pem");
        assert!(matches!(store.reload_if_changed(), Ok(true)));
        assert!(handshake_trusting(&store, "one-cert.pem").await);
    }

    #[test]
    fn missing_or_empty_files_are_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let files = |c: &Path, k: &Path| TlsFiles { certificate: c.into(), private_key: k.into() };
        let key = data("one-key.pem");
        let missing = dir.path().join("missing.pem");
        assert!(CertStore::load(&files(&missing, &key)).is_err());
        let err = CertStore::load(&files(&empty, &key)).err().unwrap().to_string();
        assert!(err.contains("no CERTIFICATE"), "{err}");
        assert!(CertStore::load(&files(&data("one-cert.pem"), &empty)).is_err());
    }

    #[test]
    fn trunk_tls_targets_get_their_name_and_roots() {
        let text = format!(
            "listeners: [{{name: t, side: trunk, address: 127.0.0.1, port: 5061, \
             transports: [udp, tls], tls: {{certificate: a, private_key: b}}}}]
trunks:
  - {{name: c, listener: t, targets: [\"127.0.0.9:5061;transport=tls\", \"127.0.0.8:5060\"], \
      tls: {{ca: {}, server_name: sbc.test}}}}
  - {{name: d, listener: t, targets: [\"127.0.0.7:5061;transport=tls\"]}}
",
            data("one-cert.pem").display()
        );
        let config = crate::config::load_str("t.yaml", &text).unwrap();
        let out = outbound(&config).unwrap();
        assert_eq!(out.len(), 2, "only the tls targets");
        let name = |ip: &str| {
            let key = (ListenerId(0), SocketAddr::new(ip.parse().unwrap(), 5061));
            out.get(&key).map(|o| o.name.clone())
        };
        let expect = |s: &str| Some(ServerName::try_from(s.to_owned()).unwrap());
        assert_eq!(name("127.0.0.9"), expect("sbc.test"));
        assert_eq!(name("127.0.0.7"), expect("127.0.0.7"), "the IP without server_name");
        let mut broken = config.clone();
        broken.trunks[0].tls = Some(crate::config::TrunkTls {
            ca: Some("/nonexistent/ca.pem".into()),
            server_name: None,
        });
        assert!(outbound(&broken).is_err());
    }
}

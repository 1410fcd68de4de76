//! TLS a node serves: the optional HTTPS listener's certificate, and the reload of every TLS
//! file (peer and HTTP) on SIGHUP and at `tls.reload_interval`.
//!
//! The HTTPS listener takes its certificate through [`HttpCertificate`], a rustls certificate
//! resolver whose certified key is swapped on reload, so a renewed certificate is served to the
//! next client without rebinding. A reload that fails keeps what is in use and is logged and
//! counted (`parley_tls_reloads_total{outcome="refused"}`).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use parley_raft::tls::{self, PeerTls, Reloaded};
use parley_raft::TlsError;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The HTTPS listener's certificate and key files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpTlsPaths {
    /// Certificate chain, PEM (leaf first).
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// The HTTPS certificate in use, reloadable.
#[derive(Debug)]
pub struct HttpCertificate {
    paths: HttpTlsPaths,
    current: RwLock<(Arc<CertifiedKey>, blake3::Hash)>,
}

/// The files' contents and their digest.
fn read(paths: &HttpTlsPaths) -> Result<(Vec<u8>, Vec<u8>, blake3::Hash), TlsError> {
    let (cert, key) = (tls::read_file(&paths.cert)?, tls::read_file(&paths.key)?);
    let digest = tls::digest(&[&cert, &key]);
    Ok((cert, key, digest))
}

fn parse(paths: &HttpTlsPaths, cert: &[u8], key: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = tls::parse_certificates(&paths.cert, cert)?;
    let key = tls::parse_key(&paths.key, key)?;
    let certified = tls::certified_key(&paths.cert, &paths.key, chain, key, &tls::provider())?;
    Ok(Arc::new(certified))
}

impl HttpCertificate {
    /// Loads the certificate and key, checking that they match.
    pub fn load(paths: HttpTlsPaths) -> Result<Arc<Self>, TlsError> {
        let (cert, key, digest) = read(&paths)?;
        let certified = parse(&paths, &cert, &key)?;
        Ok(Arc::new(Self {
            paths,
            current: RwLock::new((certified, digest)),
        }))
    }

    /// Rereads the files; on error the certificate in use is kept.
    pub fn reload(&self) -> Result<Reloaded, TlsError> {
        let (cert, key, digest) = read(&self.paths)?;
        let unchanged = match self.current.read() {
            Ok(guard) => guard.1 == digest,
            Err(poisoned) => poisoned.into_inner().1 == digest,
        };
        if unchanged {
            return Ok(Reloaded::Unchanged);
        }
        let certified = parse(&self.paths, &cert, &key)?;
        let mut current = match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *current = (certified, digest);
        Ok(Reloaded::Changed)
    }

    /// The rustls server configuration of the HTTPS listener (HTTP/1.1; no client
    /// certificates), serving whatever certificate is current.
    pub fn server_config(self: &Arc<Self>) -> Result<ServerConfig, rustls::Error> {
        let mut config = ServerConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for HttpCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match self.current.read() {
            Ok(guard) => guard.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        })
    }
}

/// The TLS material a node reloads.
#[derive(Clone, Debug, Default)]
pub struct Reloadable {
    /// Peer (mutual TLS) material, unless peers talk plaintext.
    pub peer: Option<Arc<PeerTls>>,
    /// The HTTPS certificate, if HTTP is served over TLS.
    pub http: Option<Arc<HttpCertificate>>,
}

impl Reloadable {
    /// Reloads everything once; `why` names the trigger in the log.
    pub fn reload(&self, why: &'static str, metrics: &Metrics) {
        let results = [
            ("peer", self.peer.as_ref().map(|peer| peer.reload())),
            ("http", self.http.as_ref().map(|http| http.reload())),
        ];
        for (material, result) in results {
            match result {
                None => {}
                Some(Ok(Reloaded::Unchanged)) => {
                    tracing::debug!(material, why, "TLS files unchanged");
                }
                Some(Ok(Reloaded::Changed)) => {
                    metrics.count_tls_reload(material, "changed");
                    tracing::info!(
                        material,
                        why,
                        "TLS files reloaded; new connections use them"
                    );
                }
                Some(Err(error)) => {
                    metrics.count_tls_reload(material, "refused");
                    tracing::error!(material, why, %error, "new TLS files refused; keeping the ones in use");
                }
            }
        }
    }

    /// Reloads on SIGHUP and every `interval` until `stop`.
    pub async fn watch(
        self,
        interval: Duration,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup())?;
        if self.peer.is_none() && self.http.is_none() {
            stop.cancelled().await;
            return Ok(());
        }
        loop {
            let why = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = hangup.recv() => "SIGHUP",
                _ = tokio::time::sleep(interval) => "interval",
            };
            self.reload(why, &metrics);
        }
    }
}

//! The TLS sections of the configuration: `[tls]` (mutual TLS between nodes, required unless
//! explicitly `insecure`), `[http_tls]` (optional HTTPS) and the cluster id every
//! node-to-node call carries.

use std::path::PathBuf;
use std::time::Duration;

use parley_raft::route::{valid_cluster_id, CLUSTER_ID_BYTES_MAX};
use parley_raft::tls::{PeerTls, TlsPaths};
use parley_raft::NodeId;
use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};
use crate::tls::{HttpCertificate, HttpTlsPaths};

/// Shortest accepted TLS reload interval.
pub const TLS_RELOAD_INTERVAL_MIN: Duration = Duration::from_secs(1);
/// Longest accepted TLS reload interval.
pub const TLS_RELOAD_INTERVAL_MAX: Duration = Duration::from_secs(3_600);

/// Mutual TLS between nodes.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    /// PEM file of the CA certificates a peer's certificate must chain to: the cluster's CA,
    /// or the old and the new one during a CA rotation. `parley certs` makes one.
    pub ca_file: Option<PathBuf>,
    /// PEM file of this node's certificate (naming `node-<node_id>.parley`).
    pub cert_file: Option<PathBuf>,
    /// PEM file of the certificate's private key.
    pub key_file: Option<PathBuf>,
    /// How often the files (and `[http_tls]`'s) are checked for changes; they are also reread
    /// on SIGHUP. Default `10s` (1 second to 1 hour).
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Plaintext between nodes: anyone who reaches `grpc_listen` can then read the cluster's
    /// traffic and propose writes. Only for a cluster on one trusted host. Default false.
    pub insecure: bool,
}

impl Default for RawTls {
    fn default() -> Self {
        Self {
            ca_file: None,
            cert_file: None,
            key_file: None,
            reload_interval: Duration::from_secs(10),
            insecure: false,
        }
    }
}

/// TLS on the HTTP listener (off by default, e.g. behind a load balancer that terminates TLS).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpTls {
    /// PEM file of the certificate chain clients are shown, leaf first.
    pub cert_file: PathBuf,
    /// PEM file of its private key.
    pub key_file: PathBuf,
}

/// How this node talks to its peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerTransport {
    /// Mutual TLS with these files.
    MutualTls(TlsPaths),
    /// Plaintext (`tls.insecure = true`).
    Insecure,
}

/// The validated TLS settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// Peer transport.
    pub peers: PeerTransport,
    /// HTTPS, if configured.
    pub http: Option<HttpTlsPaths>,
    /// How often the files are checked for changes.
    pub reload_interval: Duration,
}

impl TlsConfig {
    /// Whether peers talk plaintext.
    pub fn insecure(&self) -> bool {
        self.peers == PeerTransport::Insecure
    }
}

/// Checks `[tls]` and `[http_tls]` for node `node`: the files are read and must fit together
/// (a node whose certificate would be refused by its peers does not start).
pub fn validate(
    node: NodeId,
    tls: &RawTls,
    http: Option<&RawHttpTls>,
) -> Result<TlsConfig, ConfigError> {
    if !(TLS_RELOAD_INTERVAL_MIN..=TLS_RELOAD_INTERVAL_MAX).contains(&tls.reload_interval) {
        return Err(invalid(
            "tls.reload_interval",
            "must be between 1 second and 1 hour",
        ));
    }
    let files = (&tls.ca_file, &tls.cert_file, &tls.key_file);
    let peers = match (tls.insecure, files) {
        (true, (None, None, None)) => PeerTransport::Insecure,
        (true, _) => {
            return Err(invalid(
                "tls.insecure",
                "is true but certificate files are given too: choose one",
            ))
        }
        (false, (Some(ca), Some(cert), Some(key))) => {
            let paths = TlsPaths {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            };
            PeerTls::load(node, paths.clone()).map_err(|e| invalid("tls", e.to_string()))?;
            PeerTransport::MutualTls(paths)
        }
        (false, _) => {
            return Err(invalid(
                "tls",
                "set ca_file, cert_file and key_file (`parley certs` makes them), or \
                 insecure = true for plaintext between nodes",
            ))
        }
    };
    let http = match http {
        None => None,
        Some(raw) => {
            let paths = HttpTlsPaths {
                cert: raw.cert_file.clone(),
                key: raw.key_file.clone(),
            };
            HttpCertificate::load(paths.clone()).map_err(|e| invalid("http_tls", e.to_string()))?;
            Some(paths)
        }
    };
    Ok(TlsConfig {
        peers,
        http,
        reload_interval: tls.reload_interval,
    })
}

/// The cluster id: the configured one, or one derived from the cluster secret (so clusters
/// with different secrets refuse each other's calls).
pub fn cluster_id(configured: Option<&str>, cluster_secret: &str) -> Result<String, ConfigError> {
    match configured {
        Some(id) if valid_cluster_id(id) => Ok(id.to_owned()),
        Some(_) => Err(invalid(
            "cluster_id",
            format!("must be 1 to {CLUSTER_ID_BYTES_MAX} letters, digits, '-', '_' or '.'"),
        )),
        None => {
            let key = blake3::derive_key("parley cluster id v1", cluster_secret.as_bytes());
            let hex: String = key[..8].iter().map(|b| format!("{b:02x}")).collect();
            Ok(format!("c-{hex}"))
        }
    }
}

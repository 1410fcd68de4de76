//! Mutual TLS between nodes: the certificate material a node loads, checks and reloads.
//!
//! Every node holds one certificate, signed by the cluster's CA, that names it: its only
//! subject alternative name that matters is [`node_name`] (`node-<id>.parley`), so a node is
//! identified by its id, never by an address that may change. The same certificate serves both
//! directions (server and client authentication).
//!
//! - A node dialing peer `n` accepts only a server certificate that chains to the CA bundle, is
//!   within its validity period and names node `n` ([`connect`]).
//! - A node accepting a connection requires a client certificate that chains to the CA bundle
//!   and is valid ([`accept`]); which node it names is checked per call against the caller's
//!   declared id (`route::RouteCheck`).
//! - The CA file is a bundle: during a CA rotation it holds the old and the new CA, so nodes
//!   with certificates from either keep talking.
//!
//! [`PeerTls::reload`] rereads the files; a node calls it on SIGHUP and at an interval. A
//! change that does not load (a half-written file, a key that does not match its certificate, a
//! certificate that does not name this node or has expired) is refused and the material in use
//! is kept. Connections already open keep the certificates they were made with; new ones use
//! the reloaded material.
//!
//! One crypto provider, *ring*, is passed explicitly everywhere; nothing relies on a process
//! default.

pub mod accept;
pub mod connect;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::TlsError;
use crate::types::NodeId;

/// The protocol negotiated on every peer connection.
const ALPN_H2: &[u8] = b"h2";

/// The DNS name a node's certificate carries: `node-<id>.parley`.
pub fn node_name(id: NodeId) -> String {
    format!("node-{id}.parley")
}

/// [`node_name`] as a name to verify a server certificate against.
pub fn node_server_name(id: NodeId) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(node_name(id)).map_err(|e| TlsError::Identity {
        node: id,
        problem: e.to_string(),
    })
}

/// Whether `certificate` names node `id` (its validity and chain are checked at the
/// handshake, not here).
pub fn certificate_names_node(certificate: &CertificateDer<'_>, id: NodeId) -> bool {
    let Ok(name) = node_server_name(id) else {
        return false;
    };
    webpki::EndEntityCert::try_from(certificate)
        .and_then(|cert| cert.verify_is_valid_for_subject_name(&name))
        .is_ok()
}

/// The crypto provider every TLS configuration here is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where a node's TLS material lives: three PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPaths {
    /// The CA bundle peers' certificates must chain to (one or more certificates).
    pub ca: PathBuf,
    /// This node's certificate, optionally followed by intermediates.
    pub cert: PathBuf,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The bytes of the TLS file at `path`.
pub fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A digest of several files' bytes, to tell whether a reread changed anything.
pub fn digest(files: &[&[u8]]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    for bytes in files {
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    }
    hasher.finalize()
}

/// Every certificate in the PEM `bytes` read from `path`; at least one.
pub fn parse_certificates(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            problem: e.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            problem: "holds no PEM certificate".to_owned(),
        });
    }
    Ok(certificates)
}

/// The private key in the PEM `bytes` read from `path`.
pub fn parse_key(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        problem: format!("holds no usable private key: {e}"),
    })
}

/// A certificate chain (read from `cert_path`) with its matching key (from `key_path`),
/// checked with `provider`.
pub fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Material {
        path: key_path.to_owned(),
        problem: format!(
            "does not match the certificate in {}: {e}",
            cert_path.display()
        ),
    })
}

/// The configurations built from one reading of the files.
struct Material {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// Digest of the three files' bytes, to tell whether a reread changed anything.
    digest: blake3::Hash,
}

/// Whether a reload changed the material in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The files are unchanged.
    Unchanged,
    /// New files were loaded; new connections use them.
    Changed,
}

/// A node's peer TLS material, reloadable.
pub struct PeerTls {
    node: NodeId,
    paths: TlsPaths,
    current: RwLock<Arc<Material>>,
    refused: AtomicU64,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("node", &self.node)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl PeerTls {
    /// Loads and checks node `node`'s material from `paths`.
    pub fn load(node: NodeId, paths: TlsPaths) -> Result<Arc<Self>, TlsError> {
        let material = load_material(node, &paths, &Files::read(&paths)?)?;
        Ok(Arc::new(Self {
            node,
            paths,
            current: RwLock::new(Arc::new(material)),
            refused: AtomicU64::new(0),
        }))
    }

    /// Rereads the files. On error the material in use is kept.
    pub fn reload(&self) -> Result<Reloaded, TlsError> {
        let files = Files::read(&self.paths)?;
        if files.digest() == self.material().digest {
            return Ok(Reloaded::Unchanged);
        }
        let material = load_material(self.node, &self.paths, &files)?;
        let mut current = match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *current = Arc::new(material);
        Ok(Reloaded::Changed)
    }

    /// The files this material is read from.
    pub fn paths(&self) -> &TlsPaths {
        &self.paths
    }

    fn material(&self) -> Arc<Material> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The server configuration for the next accepted connection.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.material().server.clone()
    }

    /// The client configuration for the next connection to a peer.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.material().client.clone()
    }

    /// How many incoming connections were refused at the TLS handshake since start.
    pub fn refused_total(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }
}

/// The three files' contents, read once.
struct Files {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Files {
    fn read(paths: &TlsPaths) -> Result<Self, TlsError> {
        Ok(Self {
            ca: read_file(&paths.ca)?,
            cert: read_file(&paths.cert)?,
            key: read_file(&paths.key)?,
        })
    }

    fn digest(&self) -> blake3::Hash {
        digest(&[&self.ca, &self.cert, &self.key])
    }
}

fn load_material(node: NodeId, paths: &TlsPaths, files: &Files) -> Result<Material, TlsError> {
    let digest = files.digest();
    let provider = provider();
    let roots = Arc::new(root_store(&paths.ca, &files.ca)?);
    let chain = parse_certificates(&paths.cert, &files.cert)?;
    let key = parse_key(&paths.key, &files.key)?;
    let certified = certified_key(
        &paths.cert,
        &paths.key,
        chain.clone(),
        key.clone_key(),
        &provider,
    )?;
    let material_error = |problem: String| TlsError::Material {
        path: paths.cert.clone(),
        problem,
    };

    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| material_error(format!("building the client verifier: {e}")))?;
    let server_verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| material_error(format!("building the server verifier: {e}")))?;
    // This node's own certificate must pass the checks its peers will make.
    check_own_certificate(node, &certified, &*server_verifier, &*client_verifier)
        .map_err(material_error)?;

    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| material_error(e.to_string()))?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| material_error(e.to_string()))?;
    server.alpn_protocols = vec![ALPN_H2.to_vec()];

    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| material_error(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(server_verifier)
        .with_client_auth_cert(chain, key)
        .map_err(|e| material_error(e.to_string()))?;
    client.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Material {
        server: Arc::new(server),
        client: Arc::new(client),
        digest,
    })
}

fn root_store(path: &Path, bytes: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in parse_certificates(path, bytes)? {
        roots.add(certificate).map_err(|e| TlsError::Material {
            path: path.to_owned(),
            problem: format!("holds a certificate that is not a usable CA: {e}"),
        })?;
    }
    Ok(roots)
}

fn check_own_certificate(
    node: NodeId,
    certified: &CertifiedKey,
    server_verifier: &dyn ServerCertVerifier,
    client_verifier: &dyn ClientCertVerifier,
) -> Result<(), String> {
    let (end_entity, intermediates) = certified
        .cert
        .split_first()
        .ok_or_else(|| "holds no certificate".to_owned())?;
    let name = node_server_name(node).map_err(|e| e.to_string())?;
    let now = UnixTime::now();
    server_verifier
        .verify_server_cert(end_entity, intermediates, &name, &[], now)
        .map_err(|e| {
            format!(
                "is not a valid certificate for node {node} (name {}) from the CA bundle: {e}",
                node_name(node)
            )
        })?;
    client_verifier
        .verify_client_cert(end_entity, intermediates, now)
        .map_err(|e| format!("cannot authenticate node {node} as a client: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests;

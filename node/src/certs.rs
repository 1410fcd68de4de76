//! `parley certs`: a cluster CA and node certificates for mutual TLS between nodes.
//!
//! The CA (`ca.pem`, `ca.key`) is created in the directory unless it is already there; each
//! node gets `node-<id>.pem` and `node-<id>.key`, naming it `node-<id>.parley`
//! ([`parley_raft::tls::node_name`]) plus any extra names given (for the HTTPS listener), and
//! usable for both server and client authentication. Keys are written readable by their owner
//! only; every file is written to a temporary name and renamed, so a node reloading the
//! directory never reads half a file.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parley_raft::tls::node_name;
use parley_raft::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Longest validity accepted, in days (about 20 years).
pub const VALIDITY_DAYS_MAX: u32 = 7_305;
/// Default validity of node certificates, in days.
pub const NODE_DAYS_DEFAULT: u32 = 365;
/// Default validity of a new CA, in days.
pub const CA_DAYS_DEFAULT: u32 = 3_650;

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Generating or signing failed, or an existing CA could not be read.
    #[error("{0}")]
    Generate(String),
    /// A file exists and overwriting was not asked for.
    #[error("{} exists (pass --force to replace it)", .0.display())]
    Exists(PathBuf),
    /// An argument is out of range.
    #[error("{0}")]
    Invalid(String),
}

fn generate(what: &str) -> impl FnOnce(rcgen::Error) -> CertsError + '_ {
    move |e| CertsError::Generate(format!("{what}: {e}"))
}

/// What to make.
#[derive(Clone, Debug)]
pub struct CertsRequest {
    /// Output directory (created if missing).
    pub dir: PathBuf,
    /// Nodes to make certificates for.
    pub nodes: Vec<NodeId>,
    /// Extra subject alternative names for every node certificate (DNS names or IPs).
    pub extra_names: Vec<String>,
    /// Validity of node certificates, in days.
    pub node_days: u32,
    /// Validity of a new CA, in days.
    pub ca_days: u32,
    /// Replace existing node files.
    pub force: bool,
}

impl CertsRequest {
    /// Certificates for `nodes` in `dir` with the default validities, no extra names, never
    /// replacing a file.
    pub fn new(dir: impl Into<PathBuf>, nodes: impl IntoIterator<Item = NodeId>) -> Self {
        Self {
            dir: dir.into(),
            nodes: nodes.into_iter().collect(),
            extra_names: Vec::new(),
            node_days: NODE_DAYS_DEFAULT,
            ca_days: CA_DAYS_DEFAULT,
            force: false,
        }
    }
}

/// Where [`issue`] writes the files of node `node` in `dir`: the CA bundle, the node's
/// certificate and its key.
pub fn node_paths(dir: &Path, node: NodeId) -> parley_raft::tls::TlsPaths {
    parley_raft::tls::TlsPaths {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("node-{node}.pem")),
        key: dir.join(format!("node-{node}.key")),
    }
}

/// The `[tls]` section of node `node`'s config for the files [`issue`] wrote in `dir`.
pub fn tls_section(dir: &Path, node: NodeId) -> String {
    let paths = node_paths(dir, node);
    format!(
        "[tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        paths.ca.display(),
        paths.cert.display(),
        paths.key.display()
    )
}

/// What was written.
#[derive(Clone, Debug, Default)]
pub struct CertsWritten {
    /// Whether a new CA was created (otherwise the one in the directory signed).
    pub new_ca: bool,
    /// Files written.
    pub files: Vec<PathBuf>,
}

fn validity(days: i64) -> Result<(time::OffsetDateTime, time::OffsetDateTime), CertsError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let now = i64::try_from(now).unwrap_or(i64::MAX / 2);
    let at = |secs: i64| {
        time::OffsetDateTime::from_unix_timestamp(secs)
            .map_err(|e| CertsError::Invalid(format!("validity out of range: {e}")))
    };
    // An hour of slack for clocks slightly behind.
    Ok((at(now - 3_600)?, at(now + days * 86_400)?))
}

fn read(path: &Path) -> Result<String, CertsError> {
    fs::read_to_string(path).map_err(|source| CertsError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `contents` to `path` through a temporary file and a rename; `secret` files are
/// readable by their owner only.
fn write_atomically(path: &Path, contents: &str, secret: bool) -> Result<(), CertsError> {
    let io = |source| CertsError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

fn ca_params(days: u32) -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate("CA"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "Parley cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params.not_before, params.not_after) = validity(i64::from(days))?;
    Ok(params)
}

/// Makes the CA (unless the directory has one) and the node certificates of `request`.
pub fn issue(request: &CertsRequest) -> Result<CertsWritten, CertsError> {
    for (what, days) in [
        ("--days", request.node_days),
        ("--ca-days", request.ca_days),
    ] {
        if !(1..=VALIDITY_DAYS_MAX).contains(&days) {
            return Err(CertsError::Invalid(format!(
                "{what} must be between 1 and {VALIDITY_DAYS_MAX}"
            )));
        }
    }
    if request.nodes.is_empty() || request.nodes.contains(&0) {
        return Err(CertsError::Invalid(
            "--nodes needs at least one node id, each a positive integer".to_owned(),
        ));
    }
    fs::create_dir_all(&request.dir).map_err(|source| CertsError::Io {
        path: request.dir.clone(),
        source,
    })?;
    let mut written = CertsWritten::default();
    let (ca_cert_path, ca_key_path) = (request.dir.join("ca.pem"), request.dir.join("ca.key"));
    let issuer = if ca_cert_path.exists() || ca_key_path.exists() {
        let key = KeyPair::from_pem(&read(&ca_key_path)?).map_err(generate("reading ca.key"))?;
        Issuer::from_ca_cert_pem(&read(&ca_cert_path)?, key).map_err(generate("reading ca.pem"))?
    } else {
        let params = ca_params(request.ca_days)?;
        let key = KeyPair::generate().map_err(generate("CA key"))?;
        let cert = params.self_signed(&key).map_err(generate("CA"))?;
        write_atomically(&ca_key_path, &key.serialize_pem(), true)?;
        write_atomically(&ca_cert_path, &cert.pem(), false)?;
        written.new_ca = true;
        written.files.extend([ca_cert_path, ca_key_path]);
        Issuer::new(params, key)
    };
    for &node in &request.nodes {
        let parley_raft::tls::TlsPaths {
            cert: cert_path,
            key: key_path,
            ..
        } = node_paths(&request.dir, node);
        for path in [&cert_path, &key_path] {
            if path.exists() && !request.force {
                return Err(CertsError::Exists(path.clone()));
            }
        }
        let mut names = vec![node_name(node)];
        names.extend(request.extra_names.iter().cloned());
        let mut params = CertificateParams::new(names).map_err(generate("node names"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, node_name(node));
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        (params.not_before, params.not_after) = validity(i64::from(request.node_days))?;
        let key = KeyPair::generate().map_err(generate("node key"))?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(generate("signing a node certificate"))?;
        write_atomically(&key_path, &key.serialize_pem(), true)?;
        write_atomically(&cert_path, &cert.pem(), false)?;
        written.files.extend([cert_path, key_path]);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_raft::tls::{PeerTls, TlsPaths};

    fn request(dir: &Path, nodes: &[NodeId]) -> CertsRequest {
        CertsRequest {
            extra_names: vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            ..CertsRequest::new(dir, nodes.iter().copied())
        }
    }

    fn paths(dir: &Path, node: NodeId) -> TlsPaths {
        node_paths(dir, node)
    }

    #[test]
    fn issued_certificates_load_for_their_node_only() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let written = issue(&request(dir.path(), &[1, 2]))?;
        assert!(written.new_ca);
        assert!(PeerTls::load(1, paths(dir.path(), 1)).is_ok());
        assert!(PeerTls::load(2, paths(dir.path(), 2)).is_ok());
        assert!(PeerTls::load(2, paths(dir.path(), 1)).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(dir.path().join("node-1.key"))?
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "a key is readable by others: {mode:o}");
        }
        Ok(())
    }

    #[test]
    fn a_later_run_signs_with_the_same_ca_and_never_overwrites_unasked(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        issue(&request(dir.path(), &[1]))?;
        let ca = fs::read(dir.path().join("ca.pem"))?;
        let written = issue(&request(dir.path(), &[4]))?;
        assert!(!written.new_ca);
        assert_eq!(fs::read(dir.path().join("ca.pem"))?, ca);
        // Node 4, signed later by the same CA, is trusted with node 1's bundle.
        assert!(PeerTls::load(4, paths(dir.path(), 4)).is_ok());
        assert!(matches!(
            issue(&request(dir.path(), &[1])),
            Err(CertsError::Exists(_))
        ));
        let mut forced = request(dir.path(), &[1]);
        forced.force = true;
        assert!(issue(&forced).is_ok());
        Ok(())
    }

    #[test]
    fn bad_arguments_are_refused() {
        let dir = std::env::temp_dir().join("parley-certs-never-written");
        assert!(issue(&request(&dir, &[])).is_err());
        assert!(issue(&request(&dir, &[0])).is_err());
        let mut long = request(&dir, &[1]);
        long.node_days = VALIDITY_DAYS_MAX + 1;
        assert!(matches!(issue(&long), Err(CertsError::Invalid(_))));
        assert!(!dir.exists());
    }
}

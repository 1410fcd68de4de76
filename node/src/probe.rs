//! `parley probe`: the health check of a container image that has no curl. It asks the node's
//! own HTTP listener (`http_listen` from the node's config, with the `PARLEY_*` environment
//! overrides the node itself sees) for `/readyz`, or `/livez` with `--live`, within a timeout,
//! prints one line saying what it found, and exits 0 when the node answered 200, 1 otherwise.
//!
//! ```sh
//! parley probe                                   # /readyz of /etc/parley/node.toml's node
//! parley probe --live --config /etc/parley/node.toml
//! parley probe --url http://10.0.1.2:8080        # another node, no config needed
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use parley_node::config::{Config, ConfigError, PeerTransport};

/// Longest `--timeout` a probe may be given.
const PROBE_TIMEOUT_MAX: Duration = Duration::from_secs(60);
/// Most of a refusal's body printed, in bytes.
const ANSWER_BYTES_MAX: u64 = 2048;

/// What to probe.
#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// The node's TOML config (with `PARLEY_*` overrides); the probe asks its `http_listen`,
    /// over HTTPS when `[http_tls]` is set. (Not an environment variable: every `PARLEY_*`
    /// variable is a config field to the node.)
    #[arg(long, default_value = "/etc/parley/node.toml")]
    pub config: PathBuf,
    /// Base URL to probe instead of the config's `http_listen` (the config is then not read).
    #[arg(long)]
    pub url: Option<String>,
    /// Ask `/livez` (the process is up) instead of `/readyz` (it serves clients).
    #[arg(long)]
    pub live: bool,
    /// PEM file of the CA that signed the node's HTTPS certificate; by default the node's
    /// `tls.ca_file` (a `parley certs --name 127.0.0.1` certificate then verifies).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// How long to wait for the answer, connecting included.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Why a probe failed: the node is not healthy, or it could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The node answered, but not 200.
    #[error("not {what}: {url} answered HTTP {status}: {body}")]
    Unhealthy {
        /// `ready` or `live`.
        what: &'static str,
        /// What was asked.
        url: String,
        /// Its status.
        status: u16,
        /// The start of its body.
        body: String,
    },
    /// The node could not be reached or did not answer within the timeout.
    #[error("not {what}: {url}: {source}")]
    Unreachable {
        /// `ready` or `live`.
        what: &'static str,
        /// What was asked.
        url: String,
        /// Why.
        source: ureq::Error,
    },
    /// The config could not be read or is invalid.
    #[error("reading the node's config {path}: {source}")]
    Config {
        /// The file.
        path: String,
        /// Why.
        source: ConfigError,
    },
    /// A flag cannot work, or the CA file is unusable.
    #[error("{0}")]
    Usage(String),
}

/// Where `listen` is reached from this host: an unspecified address (`0.0.0.0`, `::`) on
/// loopback.
fn local_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// The base URL and the CA file to trust, from the flags or the node's config.
fn target(args: &ProbeArgs) -> Result<(String, Option<PathBuf>), ProbeError> {
    if let Some(url) = &args.url {
        let url = url.trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ProbeError::Usage(format!(
                "--url {url:?} is not an http:// or https:// URL"
            )));
        }
        return Ok((url, args.ca_file.clone()));
    }
    let config = Config::load(&args.config).map_err(|source| ProbeError::Config {
        path: args.config.display().to_string(),
        source,
    })?;
    let address = local_address(config.http_listen);
    if config.tls.http.is_none() {
        return Ok((format!("http://{address}"), None));
    }
    let ca_file = args.ca_file.clone().or(match &config.tls.peers {
        PeerTransport::MutualTls(paths) => Some(paths.ca.clone()),
        PeerTransport::Insecure => None,
    });
    Ok((format!("https://{address}"), ca_file))
}

/// The CA certificates in the PEM file `path`.
fn roots(path: &std::path::Path) -> Result<Vec<ureq::tls::Certificate<'static>>, ProbeError> {
    let usage = |e: parley_raft::TlsError| ProbeError::Usage(e.to_string());
    let pem = parley_raft::tls::read_file(path).map_err(usage)?;
    Ok(parley_raft::tls::parse_certificates(path, &pem)
        .map_err(usage)?
        .iter()
        .map(|der| ureq::tls::Certificate::from_der(der.as_ref()).to_owned())
        .collect())
}

/// Runs the probe; prints what the node answered on success.
pub fn run(args: &ProbeArgs) -> Result<(), ProbeError> {
    if args.timeout.is_zero() || args.timeout > PROBE_TIMEOUT_MAX {
        return Err(ProbeError::Usage(format!(
            "--timeout must be between 1ms and {}s",
            PROBE_TIMEOUT_MAX.as_secs()
        )));
    }
    let (base, ca_file) = target(args)?;
    let (what, path) = if args.live {
        ("live", "/livez")
    } else {
        ("ready", "/readyz")
    };
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(path) = &ca_file {
        tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots(path)?)));
    }
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(args.timeout))
            .http_status_as_error(false)
            .tls_config(tls.build())
            .build(),
    );
    let url = format!("{base}{path}");
    let mut response = agent
        .get(&url)
        .call()
        .map_err(|source| ProbeError::Unreachable {
            what,
            url: url.clone(),
            source,
        })?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(ANSWER_BYTES_MAX)
        .read_to_string()
        .unwrap_or_default();
    let body = body.trim().to_owned();
    if status == 200 {
        println!("{what}: {url} answered HTTP 200 {body}");
        Ok(())
    } else {
        Err(ProbeError::Unhealthy {
            what,
            url,
            status,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_listen_address_is_probed_on_loopback() {
        let probed = |listen: &str| {
            local_address(listen.parse().expect("a socket address in the test")).to_string()
        };
        assert_eq!(probed("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(probed("[::]:8080"), "[::1]:8080");
        assert_eq!(probed("10.0.1.2:8080"), "10.0.1.2:8080");
    }

    #[test]
    fn a_node_that_does_not_answer_fails_the_probe_within_its_timeout() {
        // A port nothing listens on: bind one, learn it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("an ephemeral port")
            .port();
        let args = ProbeArgs {
            config: PathBuf::from("/nonexistent"),
            url: Some(format!("http://127.0.0.1:{port}")),
            live: false,
            ca_file: None,
            timeout: Duration::from_millis(500),
        };
        let started = std::time::Instant::now();
        let error = run(&args).expect_err("nothing listens there");
        assert!(matches!(error, ProbeError::Unreachable { .. }), "{error}");
        assert!(error.to_string().starts_with("not ready: "), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn bad_flags_are_refused() {
        let args = |url: &str, timeout_ms: u64| ProbeArgs {
            config: PathBuf::from("/nonexistent"),
            url: Some(url.to_owned()),
            live: true,
            ca_file: None,
            timeout: Duration::from_millis(timeout_ms),
        };
        assert!(matches!(
            run(&args("ftp://x", 100)),
            Err(ProbeError::Usage(_))
        ));
        assert!(matches!(
            run(&args("http://127.0.0.1:1", 0)),
            Err(ProbeError::Usage(_))
        ));
        let no_config = ProbeArgs {
            url: None,
            ..args("http://unused", 100)
        };
        assert!(matches!(run(&no_config), Err(ProbeError::Config { .. })));
    }
}

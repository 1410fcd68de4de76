//! `[email]` (how this node runs the email services) and `[[mailboxes]]` (mailboxes seeded into
//! the replicated directory), validated.
//!
//! A mailbox's passwords are never in the config as text: `password_env` names an environment
//! variable and `password_file` a file, read by each node when it connects. Only that
//! reference is replicated.

use std::path::{Path, PathBuf};
use std::time::Duration;

use parley_raft::command::email::{MailboxSpec, SecretRef, ServerSpec, TlsMode};
use parley_raft::Rejection;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::{check_range_ms, invalid, ConfigError};
use crate::email::ids::ThreadMac;

/// How this node runs the email services.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEmail {
    /// How long a fetch or send lease lasts unless renewed; its holder renews it every third
    /// of it, and another node takes a mailbox over within about this long after its holder
    /// died. Default `10s` (2s to 10m).
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Longest wait for new mail before the folder is checked again: one IMAP IDLE lasts at
    /// most this long, and a server without IDLE is polled this often. Default `30s` (1s to
    /// 29m).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Longest any one network step with a mail server may take (connect, TLS, login, a
    /// command, sending one mail). Default `30s` (1s to 10m).
    #[serde(with = "humantime_serde")]
    pub io_timeout: Duration,
    /// Longest pause between two attempts at a reply the SMTP server refused for now or could
    /// not be reached for (the pause doubles from 1s). Default `5m` (1s to 1h).
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
    /// A PEM file of CA certificates trusted for the mail servers' TLS (IMAP and SMTP), in
    /// addition to the public roots: for mail servers whose certificates come from a private
    /// CA. Read once at startup; it must hold at least one certificate.
    pub ca_file: Option<PathBuf>,
}

impl Default for RawEmail {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(10),
            poll_interval: Duration::from_secs(30),
            io_timeout: Duration::from_secs(30),
            retry_backoff_max: Duration::from_secs(300),
            ca_file: None,
        }
    }
}

/// A mail server of a mailbox.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Host name or address.
    pub host: String,
    /// TCP port. Default: 993 for IMAP with `tls`, 143 otherwise; 465 for SMTP with `tls`,
    /// 587 otherwise.
    #[serde(default)]
    pub port: Option<u16>,
    /// `tls` (TLS from the first byte, default), `starttls` (plain first, then STARTTLS before
    /// any credential) or `plain` (no TLS; with a password only for a server on loopback).
    #[serde(default = "default_tls")]
    pub tls: TlsMode,
    /// Login name; leave out for an SMTP server that needs none.
    #[serde(default)]
    pub username: String,
    /// The environment variable holding the password, on every node.
    #[serde(default)]
    pub password_env: Option<String>,
    /// The file holding the password (trailing newline ignored), on every node.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

fn default_tls() -> TlsMode {
    TlsMode::Tls
}

/// A mailbox to seed.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMailbox {
    /// Stable id (letters, digits, `-`, `_`, `.`; at most 64 bytes).
    pub id: String,
    /// The address customers write to; replies come from it.
    pub address: String,
    /// Display name on replies. Default: the id.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The email queue (`channel = "email"`) new mail enters.
    pub queue: String,
    /// The IMAP folder to take mail from. Default `INBOX`.
    #[serde(default = "default_folder")]
    pub folder: String,
    /// The IMAP server.
    pub imap: RawServer,
    /// The SMTP submission server.
    pub smtp: RawServer,
}

fn default_folder() -> String {
    "INBOX".to_owned()
}

/// The validated email settings.
#[derive(Clone, Debug)]
pub struct EmailConfig {
    /// See [`RawEmail::lease`].
    pub lease: Duration,
    /// See [`RawEmail::poll_interval`].
    pub poll_interval: Duration,
    /// See [`RawEmail::io_timeout`].
    pub io_timeout: Duration,
    /// See [`RawEmail::retry_backoff_max`].
    pub retry_backoff_max: Duration,
    /// The CA certificates of `email.ca_file` (DER), trusted for the mail servers' TLS in
    /// addition to the public roots; empty without it.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// The mailboxes to seed.
    pub mailboxes: Vec<MailboxSpec>,
    /// The key of the MACs in our Message-IDs and subject tags (from the cluster secret, so
    /// every node checks what any node made).
    pub mac: ThreadMac,
}

fn server(
    field: &str,
    raw: &RawServer,
    default_tls_port: u16,
    default_port: u16,
) -> Result<ServerSpec, ConfigError> {
    let password = match (&raw.password_env, &raw.password_file) {
        (None, None) => None,
        (Some(name), None) => Some(SecretRef::Env(name.clone())),
        (None, Some(path)) => Some(SecretRef::File(path.display().to_string())),
        (Some(_), Some(_)) => {
            return Err(invalid(
                format!("{field}.password_env"),
                "give either password_env or password_file, not both",
            ))
        }
    };
    let port = raw.port.unwrap_or(match raw.tls {
        TlsMode::Tls => default_tls_port,
        _ => default_port,
    });
    Ok(ServerSpec {
        host: raw.host.clone(),
        port,
        tls: raw.tls,
        username: raw.username.clone(),
        password,
    })
}

impl RawEmail {
    /// Checks the settings and the mailboxes (as `apply` will) and builds [`EmailConfig`].
    pub fn validate(
        &self,
        mailboxes: &[RawMailbox],
        cluster_secret: &str,
    ) -> Result<EmailConfig, ConfigError> {
        check_range_ms("email.lease", self.lease, 2_000, 600_000)?;
        check_range_ms(
            "email.poll_interval",
            self.poll_interval,
            1_000,
            29 * 60_000,
        )?;
        check_range_ms("email.io_timeout", self.io_timeout, 1_000, 600_000)?;
        check_range_ms(
            "email.retry_backoff_max",
            self.retry_backoff_max,
            1_000,
            3_600_000,
        )?;
        let extra_roots = match &self.ca_file {
            Some(path) => extra_roots(path)?,
            None => Vec::new(),
        };
        let mut specs = Vec::new();
        for (i, raw) in mailboxes.iter().enumerate() {
            let field = format!("mailboxes[{i}]");
            if specs.iter().any(|s: &MailboxSpec| s.id == raw.id) {
                return Err(invalid(
                    format!("{field}.id"),
                    format!("{} is listed twice", raw.id),
                ));
            }
            let imap = server(&format!("{field}.imap"), &raw.imap, 993, 143)?;
            let spec = MailboxSpec {
                id: raw.id.clone(),
                address: raw.address.clone(),
                display_name: raw.display_name.clone().unwrap_or_else(|| raw.id.clone()),
                queue_id: raw.queue.clone(),
                imap,
                folder: raw.folder.clone(),
                smtp: server(&format!("{field}.smtp"), &raw.smtp, 465, 587)?,
            };
            parley_raft::state::check_mailbox_spec(&spec).map_err(|e| match e {
                Rejection::Invalid { field: f, problem } => {
                    invalid(format!("{field}.{f}"), problem)
                }
                other => invalid(field.clone(), other.to_string()),
            })?;
            specs.push(spec);
        }
        Ok(EmailConfig {
            lease: self.lease,
            poll_interval: self.poll_interval,
            io_timeout: self.io_timeout,
            retry_backoff_max: self.retry_backoff_max,
            extra_roots,
            mailboxes: specs,
            mac: ThreadMac::from_cluster_secret(cluster_secret),
        })
    }
}

/// The CA certificates of `email.ca_file`: readable, PEM, at least one, each usable as a root.
fn extra_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    const FIELD: &str = "email.ca_file";
    let pem = parley_raft::tls::read_file(path).map_err(|e| invalid(FIELD, e.to_string()))?;
    let certificates = parley_raft::tls::parse_certificates(path, &pem)
        .map_err(|e| invalid(FIELD, e.to_string()))?;
    let mut store = rustls::RootCertStore::empty();
    for (i, certificate) in certificates.iter().enumerate() {
        store.add(certificate.clone()).map_err(|e| {
            invalid(
                FIELD,
                format!(
                    "{}: certificate {} cannot be a trusted root: {e}",
                    path.display(),
                    i + 1
                ),
            )
        })?;
    }
    Ok(certificates)
}

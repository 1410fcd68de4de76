//! `parley ctl`: the operator's client for a running cluster. It talks to any node's HTTP admin
//! API with the admin credential; the node forwards what only the leader can answer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::api::{Members, Upgrade};
use crate::error::CtlError;

/// Longest a `--wait` may be.
const WAIT_MAX: Duration = Duration::from_secs(3600);
/// Pause between two promotion tries while the learner catches up.
const PROMOTE_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Largest answer read from a node, in bytes.
const ANSWER_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// Where the cluster is and how to authenticate.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// Base URL of any node's HTTP listener.
    #[arg(long, env = "PARLEY_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// File holding the admin credential (the node's `admin_token`); else `PARLEY_ADMIN_TOKEN`.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the node's HTTPS certificate (the cluster CA when the
    /// node certificates serve HTTPS too); else the public web roots (webpki-roots).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Deadline of each request to the node.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print the node's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `parley ctl` commands.
#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// The cluster's members.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Rolling upgrades.
    #[command(subcommand)]
    Upgrade(UpgradeCommand),
    /// Backups.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

/// `parley ctl snapshot` commands.
#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Save a consistent snapshot of the cluster's state (taken by the node at --url) to FILE,
    /// checked before it is kept. `parley snapshot inspect` reads it, `parley snapshot restore`
    /// restores it.
    Save {
        /// Where to write it.
        file: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
}

/// `parley ctl upgrade` commands.
#[derive(Subcommand, Debug)]
pub enum UpgradeCommand {
    /// The cluster version and what every member's release supports.
    Status,
    /// Raise the cluster version to the highest every member supports (after every node
    /// runs the new release).
    Finalize,
}

/// `parley ctl member` commands.
#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// Every member with its site, role and how far behind the leader it is.
    List,
    /// Add a node as a learner (run it with `cluster_state = "existing"`).
    Add {
        /// Its node id, never used before in this cluster.
        id: u64,
        /// Its site.
        #[arg(long)]
        site: String,
        /// Its gRPC address, `host:port`, as the members reach it.
        #[arg(long)]
        grpc: String,
        /// Its HTTP address, `host:port`, as clients reach it.
        #[arg(long)]
        http: String,
    },
    /// Make a caught-up learner a voter.
    Promote {
        /// The learner.
        id: u64,
        /// Keep trying this long while the learner is still catching up.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// Remove a member.
    Remove {
        /// The member.
        id: u64,
        /// Even where the member does not say its island writes are merged (a node gone for
        /// good: what it took as an island is lost), the voters left would not keep a healthy
        /// quorum or its site would keep no voter (never the last voter).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// A client of one node's admin API.
struct Client {
    agent: ureq::Agent,
    base: String,
    token: String,
}

/// The methods `parley ctl` uses.
enum Method {
    Get,
    Post(Option<serde_json::Value>),
    Delete,
}

impl Client {
    fn new(args: &CtlArgs) -> Result<Self, CtlError> {
        let token = match &args.token_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|source| CtlError::Token {
                    what: path.display().to_string(),
                    source,
                })?
                .trim()
                .to_owned(),
            None => std::env::var("PARLEY_ADMIN_TOKEN").map_err(|_| CtlError::NoToken)?,
        };
        if token.is_empty() {
            return Err(CtlError::NoToken);
        }
        let base = args.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CtlError::Url(base));
        }
        if args.timeout.is_zero() || args.timeout > WAIT_MAX {
            return Err(CtlError::Usage(format!(
                "--timeout must be between 1ms and {}s",
                WAIT_MAX.as_secs()
            )));
        }
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = &args.ca_file {
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots(path)?)));
        }
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(args.timeout))
            .http_status_as_error(false)
            .tls_config(tls.build())
            .build();
        Ok(Self {
            agent: ureq::Agent::new_with_config(config),
            base,
            token,
        })
    }

    /// Sends a request to `path` under `/api/v1` and decodes the node's answer, or its error.
    fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<(T, String), CtlError> {
        let url = format!("{}/api/v1{path}", self.base);
        let bearer = format!("Bearer {}", self.token);
        let sent = match method {
            Method::Get => self.agent.get(&url).header("Authorization", &bearer).call(),
            Method::Delete => self
                .agent
                .delete(&url)
                .header("Authorization", &bearer)
                .call(),
            Method::Post(Some(body)) => self
                .agent
                .post(&url)
                .header("Authorization", &bearer)
                .send_json(body),
            Method::Post(None) => self
                .agent
                .post(&url)
                .header("Authorization", &bearer)
                .send_empty(),
        };
        let request_error = |source| CtlError::Request {
            url: url.clone(),
            source,
        };
        let mut response = sent.map_err(request_error)?;
        let status = response.status().as_u16();
        let text = answer_text(&mut response).map_err(request_error)?;
        if !(200..300).contains(&status) {
            return Err(refusal(status, &text));
        }
        let value = serde_json::from_str(&text)
            .map_err(|e| CtlError::Answer(format!("an unreadable answer ({e}): {text}")))?;
        Ok((value, text))
    }
}

impl Client {
    /// Downloads the backup at `path` under `/api/v1` into `to`: written to a temporary file
    /// beside it, checked (header, length, checksum), synced, then renamed, so `to` never holds
    /// a partial or damaged backup.
    fn download(
        &self,
        path: &str,
        to: &std::path::Path,
        force: bool,
    ) -> Result<parley_raft::backup::BackupHeader, CtlError> {
        if !force && to.exists() {
            return Err(CtlError::Usage(format!(
                "{} exists; pass --force to replace it",
                to.display()
            )));
        }
        let url = format!("{}/api/v1{path}", self.base);
        let request_error = |source| CtlError::Request {
            url: url.clone(),
            source,
        };
        let mut response = self
            .agent
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(request_error)?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let text = answer_text(&mut response).map_err(request_error)?;
            return Err(refusal(status, &text));
        }
        let file_error = |what: &str, source| CtlError::File {
            what: what.to_owned(),
            path: to.to_path_buf(),
            source,
        };
        let temporary = partial_path(to);
        let written = (|| {
            let mut out = std::fs::File::create(&temporary)
                .map_err(|e| file_error("creating a file beside", e))?;
            let mut body = response.body_mut().with_config().limit(u64::MAX).reader();
            std::io::copy(&mut body, &mut out).map_err(|e| file_error("downloading to", e))?;
            out.sync_all().map_err(|e| file_error("syncing", e))?;
            let checked =
                std::fs::File::open(&temporary).map_err(|e| file_error("reading back", e))?;
            let header = parley_raft::backup::file::verify(&mut std::io::BufReader::new(checked))
                .map_err(CtlError::Backup)?;
            std::fs::rename(&temporary, to).map_err(|e| file_error("renaming to", e))?;
            Ok(header)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written
    }
}

/// The file a download goes to before it is checked: `<to>.partial`.
fn partial_path(to: &std::path::Path) -> PathBuf {
    let mut name = to.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// A node's answer as text, at most [`ANSWER_BYTES_MAX`].
fn answer_text(response: &mut ureq::http::Response<ureq::Body>) -> Result<String, ureq::Error> {
    response
        .body_mut()
        .with_config()
        .limit(ANSWER_BYTES_MAX)
        .read_to_string()
}

/// The error a node's non-2xx answer `text` stands for.
fn refusal(status: u16, text: &str) -> CtlError {
    match serde_json::from_str::<ErrorAnswer>(text) {
        Ok(answer) => CtlError::Refused {
            status,
            code: answer.error.code,
            message: answer.error.message,
        },
        Err(_) => CtlError::Answer(format!("HTTP {status}: {text}")),
    }
}

/// The CA certificates in the PEM file `path`, to trust instead of the built-in roots.
fn roots(path: &std::path::Path) -> Result<Vec<ureq::tls::Certificate<'static>>, CtlError> {
    let pem = parley_raft::tls::read_file(path).map_err(CtlError::Tls)?;
    Ok(parley_raft::tls::parse_certificates(path, &pem)
        .map_err(CtlError::Tls)?
        .iter()
        .map(|der| ureq::tls::Certificate::from_der(der.as_ref()).to_owned())
        .collect())
}

/// Runs a `parley ctl` command; prints its answer to stdout.
pub fn run(args: CtlArgs) -> Result<(), CtlError> {
    let client = Client::new(&args)?;
    let (table, text) = match &args.command {
        CtlCommand::Member(command) => {
            let (members, text) = member(&client, command)?;
            (table(&members), text)
        }
        CtlCommand::Snapshot(SnapshotCommand::Save { file, force }) => {
            let header = client.download("/admin/snapshot", file, *force)?;
            let text = serde_json::to_string(&header)
                .map_err(|e| CtlError::Answer(format!("the backup's header: {e}")))?;
            (crate::snapshot::describe(&header, Some(file)), text)
        }
        CtlCommand::Upgrade(command) => {
            let (answer, text) = match command {
                UpgradeCommand::Status => client.send(Method::Get, "/admin/upgrade")?,
                UpgradeCommand::Finalize => {
                    client.send(Method::Post(None), "/admin/upgrade/finalize")?
                }
            };
            (upgrade_table(&answer), text)
        }
    };
    if args.json {
        println!("{text}");
    } else {
        print!("{table}");
    }
    Ok(())
}

fn member(client: &Client, command: &MemberCommand) -> Result<(Members, String), CtlError> {
    match command {
        MemberCommand::List => client.send(Method::Get, "/admin/members"),
        MemberCommand::Add {
            id,
            site,
            grpc,
            http,
        } => {
            let body = json!({"id": id, "site": site, "grpc_addr": grpc, "http_addr": http});
            client.send(Method::Post(Some(body)), "/admin/members")
        }
        MemberCommand::Promote { id, wait } => {
            if *wait > WAIT_MAX {
                return Err(CtlError::Usage(format!(
                    "--wait is at most {}s",
                    WAIT_MAX.as_secs()
                )));
            }
            let until = Instant::now() + *wait;
            loop {
                match client.send(Method::Post(None), &format!("/admin/members/{id}/promote")) {
                    Err(CtlError::Refused { code, .. })
                        if code == "member_behind" && Instant::now() < until =>
                    {
                        std::thread::sleep(PROMOTE_RETRY_PAUSE);
                    }
                    other => return other,
                }
            }
        }
        MemberCommand::Remove { id, force } => client.send(
            Method::Delete,
            &format!("/admin/members/{id}?force={force}"),
        ),
    }
}

/// The upgrade status as a table for people.
fn upgrade_table(answer: &Upgrade) -> String {
    let mut rows = vec![[
        "ID",
        "ROLE",
        "LOG FORMATS",
        "SNAPSHOT FORMATS",
        "CLUSTER VERSION MAX",
    ]
    .map(String::from)];
    for m in &answer.members {
        let role = if m.voter { "voter" } else { "learner" }.to_owned();
        rows.push(match &m.supported {
            Some(s) => [
                m.id.to_string(),
                role,
                format!("{}-{}", s.log_format_min, s.log_format),
                format!("{}-{}", s.snapshot_format_min, s.snapshot_format),
                s.cluster_version_max.to_string(),
            ],
            None => [
                m.id.to_string(),
                role,
                "?".to_owned(),
                "?".to_owned(),
                format!("no answer: {}", m.error.as_deref().unwrap_or("unknown")),
            ],
        });
    }
    let common = answer
        .common_version
        .map_or("unknown (a member did not answer)".to_owned(), |v| {
            v.to_string()
        });
    format!(
        "cluster version {}, highest every member supports {common}\n{}",
        answer.cluster_version,
        columns(&rows)
    )
}

/// Rows of cells as left-aligned columns, two spaces apart.
fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The members as a table for people.
fn table(answer: &Members) -> String {
    let dash = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    let mut out = format!(
        "leader {} term {} last log index {}\n",
        dash(answer.leader),
        answer.term,
        dash(answer.last_log_index)
    );
    let rows: Vec<[String; 8]> = std::iter::once(
        [
            "ID", "SITE", "ROLE", "MATCHED", "BEHIND", "LAST ACK", "GRPC", "HTTP",
        ]
        .map(String::from),
    )
    .chain(answer.members.iter().map(|m| {
        [
            m.id.to_string(),
            m.site.clone(),
            m.role.as_str().to_owned(),
            dash(m.matched_index),
            dash(m.entries_behind),
            m.last_ack_ms
                .map_or("never".to_owned(), |ms| format!("{ms}ms")),
            m.grpc_addr.clone(),
            m.http_addr.clone(),
        ]
    }))
    .collect();
    out.push_str(&columns(&rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_member_table_lines_up_and_shows_unknown_progress_as_dashes() {
        let answer: Members = serde_json::from_value(json!({
            "leader": 1, "term": 4, "last_log_index": 120, "membership_index": 7,
            "members": [
                {"id": 1, "site": "east", "grpc_addr": "a:7100", "http_addr": "a:8080",
                 "role": "leader", "matched_index": 120, "entries_behind": 0, "last_ack_ms": 0},
                {"id": 14, "site": "west", "grpc_addr": "bb:7100", "http_addr": "bb:8080",
                 "role": "learner", "matched_index": null, "entries_behind": null,
                 "last_ack_ms": null}
            ]
        }))
        .expect("a member list");
        let table = table(&answer);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "leader 1 term 4 last log index 120");
        assert!(
            lines[1].starts_with("ID  SITE  ROLE     MATCHED"),
            "{table}"
        );
        assert!(
            lines[2].starts_with("1   east  leader   120      0       0ms"),
            "{table}"
        );
        assert!(
            lines[3].starts_with("14  west  learner  -        -       never"),
            "{table}"
        );
        // Every column starts at the same offset on every row.
        let column = lines[1].find("GRPC").expect("a GRPC column");
        assert_eq!(&lines[2][column..column + 6], "a:7100");
        assert_eq!(&lines[3][column..column + 7], "bb:7100");
    }
}

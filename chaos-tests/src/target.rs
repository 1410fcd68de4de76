//! An existing cluster as the live runner's target: its nodes' HTTP addresses and, optionally,
//! the shell commands that inject each fault on it (through ssh, systemctl, docker, iptables,
//! whatever the site uses). The runner drives customers through the HTTP API, runs the commands
//! and checks the same invariants; without commands it only drives traffic and checks.
//!
//! ```toml
//! # The chat queue customers start chats in (it must exist on the cluster).
//! queue = "sales"
//! # The admin credential, to check every node's state invariants (optional).
//! admin_token = "…"
//!
//! [[nodes]]
//! id = 1
//! url = "http://10.0.0.1:8080"
//! # ... one [[nodes]] per node
//!
//! # Every command is optional and runs under `sh -c` with {id} replaced by a node id and
//! # {minority} / {majority} by comma-separated node ids. Each must finish within
//! # `command_timeout` (default 60 s).
//! [faults]
//! kill = "ssh node{id} sudo systemctl kill --signal=KILL parley"
//! start = "ssh node{id} sudo systemctl start parley"
//! pause = "ssh node{id} sudo systemctl kill --signal=STOP parley"
//! resume = "ssh node{id} sudo systemctl kill --signal=CONT parley"
//! restart = "ssh node{id} sudo systemctl restart parley"
//! partition = "./cut.sh {minority} {majority}"
//! heal = "./heal.sh"
//! ```

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// A target file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with the line.
        message: String,
    },
    /// The file parses but says something unusable.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A fault command failed or timed out.
    #[error("fault command `{command}`: {message}")]
    Command {
        /// The command as run.
        command: String,
        /// What happened.
        message: String,
    },
}

/// One node of the target cluster.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetNode {
    /// Its node id.
    pub id: u64,
    /// Its HTTP base URL.
    pub url: String,
}

/// The commands that inject faults; each is optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultCommands {
    /// Kill node {id} at once (as kill -9 does).
    pub kill: Option<String>,
    /// Start node {id} again after `kill`.
    pub start: Option<String>,
    /// Freeze node {id} (SIGSTOP).
    pub pause: Option<String>,
    /// Unfreeze node {id} (SIGCONT).
    pub resume: Option<String>,
    /// Stop node {id} gracefully and start it again.
    pub restart: Option<String>,
    /// Cut nodes {minority} off from nodes {majority}.
    pub partition: Option<String>,
    /// Undo every partition.
    pub heal: Option<String>,
}

/// A target file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The chat queue customers use.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// The nodes.
    pub nodes: Vec<TargetNode>,
    /// How to inject faults.
    #[serde(default)]
    pub faults: FaultCommands,
    /// The longest a fault command may run.
    #[serde(default = "default_command_timeout", with = "humantime_serde")]
    pub command_timeout: Duration,
    /// The cluster's admin credential, with which the runner reads every node's
    /// `GET /api/v1/admin/validate`; without it that check is skipped (the report says so).
    #[serde(default)]
    pub admin_token: Option<String>,
}

fn default_queue() -> String {
    "sales".to_owned()
}

fn default_command_timeout() -> Duration {
    Duration::from_secs(60)
}

/// Which faults the commands allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// `kill` and `start`.
    Kill,
    /// `pause` and `resume`.
    Pause,
    /// `restart`.
    Restart,
    /// `partition` and `heal`.
    Partition,
}

impl Target {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, TargetError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TargetError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// Parses and checks a target file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, TargetError> {
        let target: Self = toml::from_str(text).map_err(|e| TargetError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| TargetError::Invalid {
            path: path.to_owned(),
            message,
        };
        if target.nodes.is_empty() {
            return Err(invalid("no [[nodes]]: name at least one node".to_owned()));
        }
        let mut ids = std::collections::BTreeSet::new();
        for node in &target.nodes {
            if !ids.insert(node.id) {
                return Err(invalid(format!("node id {} appears twice", node.id)));
            }
            let parsed = reqwest::Url::parse(&node.url)
                .map_err(|e| invalid(format!("node {}: url {:?}: {e}", node.id, node.url)))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(format!(
                    "node {}: url {:?} must be http:// or https://",
                    node.id, node.url
                )));
            }
        }
        let faults = &target.faults;
        let pairs = [
            ("kill", &faults.kill, "start", &faults.start),
            ("pause", &faults.pause, "resume", &faults.resume),
            ("partition", &faults.partition, "heal", &faults.heal),
        ];
        for (fault, command, undo, undo_command) in pairs {
            if command.is_some() && undo_command.is_none() {
                return Err(invalid(format!(
                    "faults.{fault} needs faults.{undo}, or the fault could never be undone"
                )));
            }
        }
        if target.command_timeout.is_zero() {
            return Err(invalid("command_timeout must be above zero".to_owned()));
        }
        Ok(target)
    }

    /// The node ids, in the order of the file.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// The faults the commands allow.
    pub fn capabilities(&self) -> Vec<Capability> {
        let f = &self.faults;
        let mut caps = Vec::new();
        if f.kill.is_some() {
            caps.push(Capability::Kill);
        }
        if f.pause.is_some() {
            caps.push(Capability::Pause);
        }
        if f.restart.is_some() {
            caps.push(Capability::Restart);
        }
        if f.partition.is_some() {
            caps.push(Capability::Partition);
        }
        caps
    }

    /// Runs `template` (one of the fault commands) with its placeholders filled in.
    pub async fn run(
        &self,
        template: Option<&String>,
        id: Option<u64>,
        sides: Option<(&[u64], &[u64])>,
    ) -> Result<(), TargetError> {
        let Some(template) = template else {
            return Ok(());
        };
        let list = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let mut command = template.clone();
        if let Some(id) = id {
            command = command.replace("{id}", &id.to_string());
        }
        if let Some((minority, majority)) = sides {
            command = command
                .replace("{minority}", &list(minority))
                .replace("{majority}", &list(majority));
        }
        let failed = |message: String| TargetError::Command {
            command: command.clone(),
            message,
        };
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(self.command_timeout, child)
            .await
            .map_err(|_| failed(format!("did not finish within {:?}", self.command_timeout)))?
            .map_err(|e| failed(e.to_string()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(failed(format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "[[nodes]]\nid = 1\nurl = \"http://127.0.0.1:8081\"\n";

    #[test]
    fn a_minimal_target_has_no_faults_and_the_default_queue() {
        let target = Target::parse(NODES, "t.toml").expect("valid");
        assert_eq!(target.queue, "sales");
        assert_eq!(target.ids(), vec![1]);
        assert!(target.capabilities().is_empty());
        assert_eq!(target.command_timeout, Duration::from_secs(60));
    }

    #[test]
    fn bad_target_files_are_refused_with_the_reason() {
        let cases = [
            ("queue = \"sales\"\nnodes = []\n", "no [[nodes]]"),
            (
                "[[nodes]]\nid = 1\nurl = \"http://a:1\"\n[[nodes]]\nid = 1\nurl = \"http://b:1\"\n",
                "appears twice",
            ),
            ("[[nodes]]\nid = 1\nurl = \"not a url\"\n", "url"),
            ("[[nodes]]\nid = 1\nurl = \"ftp://a:1\"\n", "http://"),
            (&format!("{NODES}[faults]\nkill = \"x\"\n"), "needs faults.start"),
            (&format!("{NODES}[faults]\npause = \"x\"\n"), "needs faults.resume"),
            (&format!("{NODES}[faults]\npartition = \"x\"\n"), "needs faults.heal"),
            (&format!("{NODES}[faults]\nreboot = \"x\"\n"), "unknown field"),
            (&format!("command_timeout = \"0s\"\n{NODES}"), "above zero"),
            (&format!("command_timeout = \"soon\"\n{NODES}"), "t.toml"),
            ("[[nodes]]\nid = \"one\"\nurl = \"http://a:1\"\n", "t.toml"),
        ];
        for (text, expected) in cases {
            let error = Target::parse(text, "t.toml").expect_err(text).to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[tokio::test]
    async fn commands_get_their_placeholders_and_failures_are_reported() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let out = dir.path().join("out");
        let text = format!(
            "command_timeout = \"2s\"\n{NODES}[faults]\npartition = \"echo {{minority}} {{majority}} > {}\"\nheal = \"exit 3\"\nkill = \"sleep 5\"\nstart = \"true\"\n",
            out.display()
        );
        let target = Target::parse(&text, "t.toml").expect("valid");
        let (minority, majority) = (vec![2], vec![1, 3]);
        target
            .run(
                target.faults.partition.as_ref(),
                None,
                Some((&minority, &majority)),
            )
            .await
            .expect("partition command runs");
        let written = std::fs::read_to_string(&out).expect("the command wrote");
        assert_eq!(written.trim(), "2 1,3");
        let heal = target.run(target.faults.heal.as_ref(), None, None).await;
        assert!(
            heal.as_ref()
                .is_err_and(|e| e.to_string().contains("exit status: 3")),
            "{heal:?}"
        );
        let kill = target.run(target.faults.kill.as_ref(), Some(1), None).await;
        assert!(
            kill.as_ref()
                .is_err_and(|e| e.to_string().contains("did not finish")),
            "{kill:?}"
        );
    }
}

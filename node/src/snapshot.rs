//! `parley snapshot`: backups offline. `inspect` describes a backup file and checks it whole;
//! `restore` writes one into a fresh data directory as a node of a new cluster, configured by
//! the node's own config file (its data dir, node id, cluster id and `peers`). The backup
//! itself is taken from a live cluster with `parley ctl snapshot save`.

use std::fmt::Write as _;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use parley_raft::backup::{self, BackupHeader, RestoreTarget};

use crate::config::Config;
use crate::error::SnapshotError;

/// `parley snapshot` commands.
#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Describe a backup file and check its length and checksum.
    Inspect {
        /// The backup file.
        file: PathBuf,
        /// Print the header as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into the empty data directory of one node of a new cluster; run it on
    /// every node of the new cluster with that node's config, then start them.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The node's config: its data_dir (absent or empty), node_id, cluster_id (not the
        /// source cluster's) and peers (the new cluster's members, all voters).
        #[arg(long)]
        config: PathBuf,
    },
}

/// Runs a `parley snapshot` command; prints what it found or did to stdout.
pub fn run(command: &SnapshotCommand) -> Result<(), SnapshotError> {
    match command {
        SnapshotCommand::Inspect { file, json } => {
            let opened = std::fs::File::open(file).map_err(|source| SnapshotError::Open {
                path: file.clone(),
                source,
            })?;
            let header = backup::file::verify(&mut BufReader::new(opened))?;
            if *json {
                let text = serde_json::to_string_pretty(&header)
                    .map_err(|e| SnapshotError::Backup(parley_raft::BackupError::Header(e)))?;
                println!("{text}");
            } else {
                print!("{}", describe(&header, Some(file)));
            }
            Ok(())
        }
        SnapshotCommand::Restore { file, config } => {
            let config = Config::load(config)?;
            let target = RestoreTarget {
                data_dir: config.data_dir.clone(),
                node_id: config.node_id,
                cluster_id: config.cluster_id.clone(),
                members: config.members.clone(),
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(SnapshotError::Runtime)?;
            let restored = runtime.block_on(backup::restore(file, &target))?;
            print!("{}", describe(&restored.header, Some(file)));
            println!(
                "restored into {} as node {} of cluster {} with {} members; state digest {}",
                target.data_dir.display(),
                target.node_id,
                target.cluster_id,
                target.members.len(),
                restored.state_digest
            );
            println!("start it with: parley serve --config <the same config>");
            Ok(())
        }
    }
}

/// A backup's header for people; `file` names where it is (and that it was checked).
pub fn describe(header: &BackupHeader, file: Option<&Path>) -> String {
    let taken = jiff::Timestamp::from_millisecond(header.taken_at_ms as i64)
        .map_or_else(|_| format!("{} ms", header.taken_at_ms), |t| t.to_string());
    let mut out = String::new();
    if let Some(file) = file {
        let _ = writeln!(
            out,
            "{}: {} bytes of snapshot, checksum (blake3) verified",
            file.display(),
            header.payload_bytes
        );
    }
    let _ = writeln!(
        out,
        "cluster {} at log index {} (term {}, leader {}), taken by node {} at {} (release {}, \
         snapshot format {})",
        header.cluster_id,
        header.log_id.index,
        header.log_id.term,
        header.log_id.leader,
        header.taken_by,
        taken,
        header.release,
        header.snapshot_format
    );
    let _ = writeln!(
        out,
        "state digest {}: {} chats, {} activities, {} archived records",
        header.state_digest, header.chats, header.activities, header.archived_records
    );
    let _ = writeln!(out, "members at that index:");
    for m in &header.members {
        let _ = writeln!(
            out,
            "  {} {} site {} grpc {} http {}",
            m.id,
            if m.voter { "voter  " } else { "learner" },
            m.site,
            m.grpc_addr,
            m.http_addr
        );
    }
    out
}

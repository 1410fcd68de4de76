//! Formats and versions, for rolling upgrades.
//!
//! - Every log entry ([`crate::Request::format`]) and every snapshot records the format it was
//!   written in. A release reads a range of formats and refuses (stops, naming the format)
//!   what it cannot read instead of misreading it.
//! - The **cluster version** is replicated ([`crate::State::cluster_version`]): an operation
//!   that older releases cannot apply needs a cluster version ([`op_cluster_version`]) and is
//!   refused until the cluster runs it. It is raised by `Op::SetClusterVersion` (`parley ctl
//!   upgrade finalize`) once every voter's release supports it, so during a rolling upgrade
//!   new releases write only what the old ones still read.
//!
//! Log format 1 is JSON; log format 2 holds the same commands in the binary encoding
//! (`crate::codec`), entries and the messages that carry them between nodes alike. This
//! release reads log formats 1 and 2 and writes format 2 once the cluster version is
//! [`BINARY_LOG`] or higher ([`log_format_at`]), format 1 before: during a rolling upgrade from
//! a release that reads only JSON, nothing binary is written or sent. It writes snapshot
//! format 1 and implements cluster versions up to [`CLUSTER_VERSION_MAX`]. Golden fixtures of
//! every format are under `raft/tests/fixtures/`; every later release's tests decode them.
//!
//! What a cluster version means is fixed from the first release on: a change to what `apply`
//! does with an existing operation raises [`CLUSTER_VERSION_MAX`] and gates the change on it.

use serde::{Deserialize, Serialize};

use crate::command::Op;

/// The newest format of log entries this release writes (at cluster version [`BINARY_LOG`]).
pub const LOG_FORMAT: u32 = 2;
/// The oldest log format this release reads.
pub const LOG_FORMAT_MIN: u32 = 1;
/// The format of the snapshots this release writes.
pub const SNAPSHOT_FORMAT: u32 = 1;
/// The oldest snapshot format this release reads.
pub const SNAPSHOT_FORMAT_MIN: u32 = 1;
/// The highest cluster version this release implements. 2: island merges
/// ([`Op::MergeIsland`]). 3: the email channel ([`Op::Email`]). 4: agents on islands (an island
/// takes agents' sign-in, availability and work, a merge applies them, and agents' own actions are
/// stamped). 5: log entries and forwarded commands in the binary encoding (log format 2).
pub const CLUSTER_VERSION_MAX: u32 = 5;
/// The cluster version from which log format 2 (binary) is written.
pub const BINARY_LOG: u32 = 5;
/// The cluster version agents on islands need ([`island_op_cluster_version`]).
pub const AGENTS_ON_ISLANDS: u32 = 4;
/// The cluster version a new cluster starts at.
pub const CLUSTER_VERSION_INITIAL: u32 = 1;

/// What one node's release reads, writes and implements; each node reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supported {
    /// Log format written.
    pub log_format: u32,
    /// Oldest log format read.
    pub log_format_min: u32,
    /// Snapshot format written.
    pub snapshot_format: u32,
    /// Oldest snapshot format read.
    pub snapshot_format_min: u32,
    /// Highest cluster version implemented.
    pub cluster_version_max: u32,
}

/// What this release supports.
pub const SUPPORTED: Supported = Supported {
    log_format: LOG_FORMAT,
    log_format_min: LOG_FORMAT_MIN,
    snapshot_format: SNAPSHOT_FORMAT,
    snapshot_format_min: SNAPSHOT_FORMAT_MIN,
    cluster_version_max: CLUSTER_VERSION_MAX,
};

/// The log format written by a cluster at `cluster_version`: the newest one every release that
/// implements it reads.
pub fn log_format_at(cluster_version: u32) -> u32 {
    if cluster_version >= BINARY_LOG {
        LOG_FORMAT
    } else {
        first_format()
    }
}

/// Why a node running `node`'s release cannot be a member of a cluster at `cluster_version`
/// whose nodes run this release: it must implement the cluster version and read the log and
/// snapshot formats this release writes. `None` when it can.
pub fn unfit_to_join(node: &Supported, cluster_version: u32) -> Option<String> {
    if node.cluster_version_max < cluster_version {
        return Some(format!(
            "its release implements cluster version {} at most; the cluster is at {cluster_version}",
            node.cluster_version_max
        ));
    }
    let written = log_format_at(cluster_version);
    if !(node.log_format_min..=node.log_format).contains(&written) {
        return Some(format!(
            "its release reads log formats {}-{}; the cluster writes {written}",
            node.log_format_min, node.log_format
        ));
    }
    if !(node.snapshot_format_min..=node.snapshot_format).contains(&SNAPSHOT_FORMAT) {
        return Some(format!(
            "its release reads snapshot formats {}-{}; the cluster writes {SNAPSHOT_FORMAT}",
            node.snapshot_format_min, node.snapshot_format
        ));
    }
    None
}

/// The format of data written before formats were recorded.
pub fn first_format() -> u32 {
    1
}

/// The cluster version `op` needs. Every operation names one, so an operation added later
/// cannot forget to: give a new operation the cluster version of the release that adds it.
pub fn op_cluster_version(op: &Op) -> u32 {
    match op {
        Op::SeedDirectory(_)
        | Op::StartChat(_)
        | Op::PostMessage(_)
        | Op::EndChat(_)
        | Op::SubmitSurvey(_)
        | Op::RequestCallback(_)
        | Op::Login(_)
        | Op::Presence(_)
        | Op::Logout(_)
        | Op::SetAvailability(_)
        | Op::Accept(_)
        | Op::Transfer(_)
        | Op::Complete(_)
        | Op::Tick
        | Op::Upsert(_)
        | Op::Remove(_)
        | Op::SetRetention(_)
        | Op::SetClusterVersion { .. } => 1,
        Op::SetUnreachable { .. } => 2,
        Op::Email(_) => 3,
        Op::MergeIsland(chunk) => chunk
            .writes
            .iter()
            .map(|write| {
                let recorded = if write.agent.is_some() {
                    AGENTS_ON_ISLANDS
                } else {
                    2
                };
                recorded.max(island_op_cluster_version(&write.op))
            })
            .max()
            .unwrap_or(2),
    }
}

/// The cluster version an island needs to take `op` (and a merge to apply it).
pub fn island_op_cluster_version(op: &Op) -> u32 {
    match op {
        Op::Login(_)
        | Op::Presence(_)
        | Op::Logout(_)
        | Op::SetAvailability(_)
        | Op::Accept(_)
        | Op::Transfer(_)
        | Op::Complete(_) => AGENTS_ON_ISLANDS,
        _ => 2,
    }
}

/// Whether this release applies log entries of `format`.
pub fn reads_log_format(format: u32) -> bool {
    (LOG_FORMAT_MIN..=LOG_FORMAT).contains(&format)
}

/// Whether this release reads snapshots of `format`.
pub fn reads_snapshot_format(format: u32) -> bool {
    (SNAPSHOT_FORMAT_MIN..=SNAPSHOT_FORMAT).contains(&format)
}

/// The cluster version every node of `nodes` supports: the lowest of their maxima (`None`
/// for no nodes).
pub fn common_cluster_version<'a>(nodes: impl IntoIterator<Item = &'a Supported>) -> Option<u32> {
    nodes.into_iter().map(|s| s.cluster_version_max).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_version_is_the_lowest_maximum() {
        let at = |max| Supported {
            cluster_version_max: max,
            ..SUPPORTED
        };
        assert_eq!(common_cluster_version(&[at(3), at(2), at(4)]), Some(2));
        assert_eq!(common_cluster_version(&[]), None);
    }

    #[test]
    fn this_release_reads_what_it_writes_and_nothing_newer() {
        assert!(reads_log_format(LOG_FORMAT));
        assert!(reads_log_format(first_format()));
        assert!(!reads_log_format(LOG_FORMAT + 1));
        assert!(reads_snapshot_format(SNAPSHOT_FORMAT));
        assert!(!reads_snapshot_format(SNAPSHOT_FORMAT + 1));
        assert!(!reads_log_format(0));
    }

    #[test]
    fn binary_entries_are_written_only_from_their_cluster_version() {
        assert_eq!(log_format_at(CLUSTER_VERSION_INITIAL), 1);
        assert_eq!(log_format_at(BINARY_LOG - 1), 1);
        assert_eq!(log_format_at(BINARY_LOG), 2);
        assert_eq!(log_format_at(CLUSTER_VERSION_MAX), LOG_FORMAT);
        // A release that reads only JSON may still join a cluster that writes JSON.
        let json_only = Supported {
            log_format: 1,
            log_format_min: 1,
            cluster_version_max: BINARY_LOG - 1,
            ..SUPPORTED
        };
        assert_eq!(unfit_to_join(&json_only, BINARY_LOG - 1), None);
        assert!(unfit_to_join(&json_only, BINARY_LOG).is_some());
    }

    #[test]
    fn a_node_joins_only_with_a_release_that_runs_the_cluster() {
        assert_eq!(unfit_to_join(&SUPPORTED, CLUSTER_VERSION_MAX), None);
        let old = Supported {
            cluster_version_max: 1,
            ..SUPPORTED
        };
        let why = unfit_to_join(&old, 2).expect("an older release is refused");
        assert!(why.contains("cluster version 1 at most"), "{why}");
        let newer_logs_only = Supported {
            log_format_min: LOG_FORMAT + 1,
            log_format: LOG_FORMAT + 1,
            ..SUPPORTED
        };
        assert!(unfit_to_join(&newer_logs_only, 1).is_some_and(|w| w.contains("log formats")));
        let newer_snapshots_only = Supported {
            snapshot_format_min: SNAPSHOT_FORMAT + 1,
            snapshot_format: SNAPSHOT_FORMAT + 1,
            ..SUPPORTED
        };
        assert!(
            unfit_to_join(&newer_snapshots_only, 1).is_some_and(|w| w.contains("snapshot formats"))
        );
    }
}

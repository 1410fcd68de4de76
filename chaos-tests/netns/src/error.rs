//! What can go wrong setting up or changing a lab.

use std::process::ExitStatus;

/// Checking the host, or setting up or changing the network, failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A command could not start, or waiting for it failed.
    #[error("running `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command could not be given its input.
    #[error("writing to `{command}`: {source}")]
    Stdin {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A program the lab needs is not on `PATH`.
    #[error("`{program}` ({package}) is not on PATH")]
    Missing {
        /// The program.
        program: &'static str,
        /// The package that has it.
        package: &'static str,
    },
    /// `/proc/self/status` could not be read.
    #[error("reading /proc/self/status: {0}")]
    ProcStatus(#[source] std::io::Error),
    /// `/proc/self/status` names no effective user id.
    #[error("no effective user id in /proc/self/status")]
    NoEuid,
    /// This process is not root.
    #[error("not running as root: network namespaces, veth links and iptables rules need it")]
    NotRoot,
    /// A lab was asked for no node or more than fit its /24.
    #[error("a lab holds 1 to {max} nodes, not {nodes}", max = crate::lab::MAX_NODES)]
    NodeCount {
        /// The count asked for.
        nodes: u64,
    },
    /// Namespaces with the names a new lab would take exist already.
    #[error("network namespaces named {0}-… exist already")]
    Exists(String),
    /// Every /24 of the space's range is routed on this host already.
    #[error("no free 10.{second_octet}.X.0/24 network on this host")]
    NoSubnet {
        /// The range's second octet.
        second_octet: u8,
    },
    /// A node id outside the lab.
    #[error("node {id} is not in this lab (nodes 1 to {nodes})")]
    NoSuchNode {
        /// The id asked for.
        id: u64,
        /// The lab's node count.
        nodes: u64,
    },
    /// A node cut off twice.
    #[error("node {0} is cut off already")]
    AlreadyCut(u64),
}

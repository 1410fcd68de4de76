//! Network-namespace labs for live Parley clusters: each node in a Linux network namespace of
//! its own with its own address, all plugged into a bridge that lives in a switch namespace, and
//! one veth link from the runner's (root) namespace to that bridge, so the runner's clients (the
//! chaos runner's customers and oracle, the benchmark harness's load, probe and customer) reach
//! every node as they would reach machines on a LAN.
//!
//! ```text
//!   runner ns             switch ns                node namespaces
//!   <link> 10.O.X.254 ──── up0 ─┐
//!                               br0 ── n1 ── eth0 10.O.X.1  (parley serve, node 1)
//!                                  ├── n2 ── eth0 10.O.X.2  (node 2)
//!                                  └── n3 ── eth0 10.O.X.3  (node 3)
//! ```
//!
//! `O` is the second octet of the [`Space`] a kind of run owns (10.213 for the live chaos
//! runner, 10.214 for the benchmark harness), `X` a /24 no other run on the host routes. Each
//! space has its own names too, so a chaos run and a benchmark run can share a host.
//!
//! The bridge sits in a namespace of its own on purpose: the host's firewall (Docker sets the
//! FORWARD policy to DROP and filters bridged traffic) never sees node-to-node packets, and the
//! host's rules are never touched.
//!
//! Faults are packet filters inside the nodes' namespaces, written whole in one
//! `iptables-restore` transaction per node: a partition drops packets between nodes on different
//! sides, a lost host ("cut") drops everything in or out of its interface, both ways at the same
//! instant. The nodes' real TCP connections then see what a cut WAN link or a dead machine shows
//! them: silence, never a reset or a FIN; the processes keep running, unaware.
//!
//! Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN), iproute2 and iptables: [`probe`] tries and
//! says why it cannot run, [`preflight`] checks for root and the tools with clear messages.
//! Everything a [`Lab`] made is removed when it is dropped; namespaces a run that died left
//! behind (named after its process id) are removed by the next run of the same space.
//!
//! This crate is shared by `parley-chaos` (the live runner) and `parley-bench` (the host-loss
//! failover trial) and depends on nothing of Parley's, so the harness still never links the
//! server.
//!
//! # Layout
//! - [`command`]: running a program and answering its output or a typed error ([`run`], [`ip`]).
//! - [`host`]: what this host allows and holds: [`preflight`], [`probe`], the removal of stale
//!   namespaces and the choice of a free /24.
//! - [`lab`]: [`Space`] (the names and addresses of a kind of run) and [`Lab`] (one run's
//!   network: addresses, commands inside a node's namespace, partitions, cuts).
//! - `rules`: the filter table of a node as `iptables-restore` text, pure and tested.
//! - [`error`]: the one error type, [`NetnsError`].

#![warn(missing_docs)]

pub mod command;
pub mod error;
pub mod host;
pub mod lab;
mod rules;

pub use command::{ip, run};
pub use error::NetnsError;
pub use host::{preflight, probe, remove_stale};
pub use lab::{Lab, Space};

//! Parley's benchmark harness: the suites behind docs/BENCHMARKS.md, each starting its own
//! clusters on this machine from the `parley` binary next to `parley-bench` (or `--parley`),
//! and a load generator against a cluster that is already running. It talks to Parley only the
//! way a client does (HTTP, WebSocket, `/metrics`) and never links the server, save one suite
//! that measures Parley's log entry codec in process.
//!
//! # Layout
//! - [`compare`]: Parley, etcd and NATS JetStream side by side (`parley-bench compare`); etcd
//!   through [`etcd`], NATS through async-nats.
//! - [`e2e`]: customer send to agent WebSocket receipt (`parley-bench e2e`).
//! - [`connections`]: the WebSockets one node holds, memory per chat
//!   (`parley-bench connections`).
//! - [`failover`]: the leader stopped under load by kill -9, SIGTERM, or the loss of its host
//!   (its network namespace cut off): next write, stream resume (`parley-bench failover`).
//! - [`disk`]: bytes on disk per chat message (`parley-bench disk`).
//! - [`codec`]: the log entry encodings, JSON and binary, side by side: bytes and time per entry
//!   (`parley-bench codec`; in process, no cluster).
//! - [`island`]: writes through a node cut off from its quorum, then the merge on heal
//!   (`parley-bench island`).
//! - [`load`]: committed messages per second and commit latency against a running cluster
//!   (`parley-bench load`).
//! - [`soak`]: a steady workload for a long time: memory, state in memory, snapshot size and
//!   restart time sampled over time (`parley-bench soak`).
//! - [`driver`]: the closed-loop clients and their latency histograms.
//! - [`peers`]: starting and stopping the three-node clusters (Parley, etcd, NATS), the HTTP and
//!   WebSocket calls the suites share, Parley's write-path counters from `/metrics`.
//! - [`report`]: tables, ratios, JSON, CSV and SVG plots (plotters).
//! - [`etcd`]: the generated client for `proto/etcd_kv.proto`, a trimmed copy of etcd's
//!   `KV.Put`.

pub mod codec;
pub mod compare;
pub mod connections;
pub mod disk;
pub mod driver;
pub mod e2e;
pub mod failover;
pub mod island;
pub mod load;
pub mod peers;
pub mod report;
pub mod soak;

/// Generated client for etcd's `KV.Put` (package `etcdserverpb`).
#[allow(clippy::all, missing_docs)]
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}

//! `parley-bench`: the benchmark harness behind docs/BENCHMARKS.md (the suites live in the
//! library, see its crate map).
//!
//! ```sh
//! parley-bench compare                       # Parley, etcd and NATS JetStream side by side
//! parley-bench compare --systems parley --concurrency 64 --duration 30s
//! parley-bench failover --trials 20          # kill -9 the leader under load, 20 times
//! parley-bench failover --stop host-loss     # cut the leader's host off (root: namespaces)
//! parley-bench disk --messages 100000        # bytes on disk per chat message
//! parley-bench codec                         # log entries in JSON and binary: bytes, time
//! parley-bench e2e --chats 100,1000,5000     # customer send to agent WebSocket receipt
//! parley-bench connections --streams 10000   # WebSockets one node holds, memory per chat
//! parley-bench load --concurrency 1,16,64    # against a running cluster (./dev.sh cluster)
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use parley_bench::codec::{self, CodecArgs};
use parley_bench::compare::{self, CompareArgs};
use parley_bench::connections::{self, ConnectionsArgs};
use parley_bench::disk::{self, DiskArgs};
use parley_bench::e2e::{self, E2eArgs};
use parley_bench::failover::{self, FailoverArgs};
use parley_bench::island::{self, IslandArgs};
use parley_bench::load::{self, LoadArgs};
use parley_bench::soak::{self, SoakArgs};

/// Parley's benchmarks: figures printed, and written as JSON, CSV and SVG plots.
#[derive(Parser)]
#[command(name = "parley-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Three-node Parley, etcd and NATS JetStream clusters on this machine, one at a time, at
    /// each client concurrency: throughput, p50/p99/p999 latency, Parley's ratios.
    Compare(CompareArgs),
    /// Kill -9 the leader of a loaded three-node cluster, again and again: time to the next
    /// committed write, and for a customer's stream to resume on another node.
    Failover(FailoverArgs),
    /// Bytes on disk per chat message, against the incumbent's sizing formula.
    Disk(DiskArgs),
    /// Log entries in JSON and in the binary encoding: bytes and time to encode and decode.
    Codec(CodecArgs),
    /// Writes through a node cut off from its quorum (island mode), then the merge on heal.
    Island(IslandArgs),
    /// Customer send to agent WebSocket receipt at 100, 1,000 and 5,000 open chats.
    E2e(E2eArgs),
    /// The most customer WebSockets one node holds, and memory per open chat.
    Connections(ConnectionsArgs),
    /// Committed chat messages per second and commit latency against a cluster that is already
    /// running (by default the one `./dev.sh cluster` starts).
    Load(LoadArgs),
    /// A steady chat workload for a long time: memory, chats in memory, snapshot size and data
    /// directory sampled over time (flat when retention works), then a node's restart time.
    Soak(SoakArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Compare(args) => compare::run(args),
        Command::Failover(args) => failover::run(args),
        Command::Disk(args) => disk::run(args),
        Command::Codec(args) => codec::run(args),
        Command::Island(args) => island::run(args),
        Command::E2e(args) => e2e::run(args),
        Command::Connections(args) => connections::run(args),
        Command::Load(args) => load::run(args),
        Command::Soak(args) => soak::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("parley-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

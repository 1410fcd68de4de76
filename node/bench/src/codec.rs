//! The two log entry encodings side by side (`parley-bench codec`; docs/BENCHMARKS.md, "Log
//! entries in binary"): bytes per entry and the time to encode and decode one, in JSON (log
//! format 1) and in the binary encoding (log format 2), for batches of chat messages as the
//! proposer makes them. Every node pays the encoding once per entry it appends (leader and
//! followers), the leader once more per AppendEntries it sends, every follower a decode per
//! entry received. The one suite that runs Parley's code in process (its codec) rather than
//! talking to a cluster.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;

use openraft::entry::RaftEntry;
use openraft::type_config::alias::{CommittedLeaderIdOf, EntryOf};
use parley_raft::codec::{self, Encoding};
use parley_raft::command::{Command, Op, Participant, PostMessage, Request};
use parley_raft::types::{LogId, TypeConfig};

type Entry = EntryOf<TypeConfig>;

/// A log entry of `commands` chat messages with `text_bytes` of text each, in log format
/// `format`, ids shaped as the product generates them (UUIDs).
fn entry(format: u32, commands: usize, text_bytes: usize) -> Entry {
    let commands = (0..commands)
        .map(|i| Command {
            at_ms: 1_796_000_000_000 + i as u64,
            origin: 2,
            op: Op::PostMessage(PostMessage {
                chat_id: format!("6f1c2a9e-41d3-4c7b-9a8e-{:012x}", i),
                sender: Participant::Customer,
                client_msg_id: format!("0b7d3c52-8e1f-4a6b-b2c4-{:012x}", i),
                text: "x".repeat(text_bytes),
            }),
        })
        .collect();
    let log_id = LogId::new(
        CommittedLeaderIdOf::<TypeConfig> {
            term: 7,
            node_id: 1,
        },
        123_456,
    );
    Entry::new_normal(log_id, Request::in_format(format, commands))
}

/// Mean time of `f` over runs lasting `budget` in all, in microseconds.
fn time_us(budget: Duration, mut f: impl FnMut()) -> f64 {
    // Warm up, and learn how many runs fit in a tenth of the budget.
    let start = Instant::now();
    let mut runs = 0u64;
    while start.elapsed() < budget / 10 {
        f();
        runs += 1;
    }
    let batch = runs.max(1);
    let start = Instant::now();
    let mut total = 0u64;
    while start.elapsed() < budget {
        for _ in 0..batch {
            f();
        }
        total += batch;
    }
    start.elapsed().as_secs_f64() * 1e6 / total as f64
}

/// Options of `parley-bench codec`.
#[derive(Debug, Clone, Args)]
pub struct CodecArgs {
    /// Chat messages per entry, one figure each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub messages: Vec<usize>,
    /// Message text bytes.
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    /// How long each figure is measured.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
}

/// Measures and prints the table.
pub fn run(args: CodecArgs) -> anyhow::Result<()> {
    if !(1..=parley_raft::limits::MESSAGE_TEXT_BYTES_MAX).contains(&args.payload_bytes) {
        bail!(
            "--payload-bytes must be between 1 and {}",
            parley_raft::limits::MESSAGE_TEXT_BYTES_MAX
        );
    }
    if args.messages.iter().any(|&n| !(1..=4096).contains(&n)) {
        bail!("--messages must be between 1 and 4096");
    }
    if args.duration.is_zero() || args.duration > Duration::from_secs(600) {
        bail!("--duration must be above zero and at most 10 minutes");
    }
    let budget = args.duration;
    let text_bytes = args.payload_bytes;
    println!(
        "Chat messages of {text_bytes} bytes of text, one entry per batch; {budget:?} per figure.\n"
    );
    println!("| messages per entry | encoding | bytes per entry | encode µs | decode µs | encode + decode µs per message |");
    println!("|---:|---|---:|---:|---:|---:|");
    for &commands in &args.messages {
        for (format, encoding) in [(1, Encoding::Json), (2, Encoding::Binary)] {
            let entry = entry(format, commands, text_bytes);
            let bytes = codec::encode_entry(&entry).context("encoding")?;
            if codec::encoding_of(&bytes).ok() != Some(encoding) {
                bail!("log format {format} was not written as {encoding:?}");
            }
            let back: Entry = codec::decode(&bytes).context("decoding")?;
            if back != entry {
                bail!("log format {format} does not round-trip");
            }
            let encode = time_us(budget, || {
                black_box(codec::encode_entry(black_box(&entry)).ok());
            });
            let decode = time_us(budget, || {
                black_box(codec::decode::<Entry>(black_box(&bytes)).ok());
            });
            let name = match encoding {
                Encoding::Json => "JSON (format 1)",
                Encoding::Binary => "binary (format 2)",
            };
            println!(
                "| {commands} | {name} | {} | {encode:.2} | {decode:.2} | {:.3} |",
                bytes.len(),
                (encode + decode) / commands as f64
            );
        }
    }
    Ok(())
}

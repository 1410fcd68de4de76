//! Disk footprint per chat message: a fresh three-node cluster, a fixed number of messages
//! posted by concurrent clients, a graceful stop, then the bytes in each node's data directory
//! against the incumbent's sizing formula (`messages × (6 + 6 × KB per message) / 1024` MB).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use serde::Serialize;

use super::peers::{
    post_message, start_chat, start_parley, Chat, ClusterArgs, Setup, PARLEY_QUEUE,
};

/// Options of `parley-bench disk`.
#[derive(Debug, Clone, Args)]
pub struct DiskArgs {
    /// Messages to post.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Concurrent clients posting them.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Message text bytes.
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    /// The cluster's binary, data and output directories.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// What the run found.
#[derive(Debug, Clone, Serialize)]
pub struct DiskFigures {
    /// Messages committed.
    pub messages: u64,
    /// Message text bytes.
    pub payload_bytes: usize,
    /// Bytes of each node's data directory after a graceful stop.
    pub node_bytes: Vec<u64>,
    /// The same right after the cluster started (before any message).
    pub baseline_bytes: Vec<u64>,
    /// Mean over the nodes of (bytes − baseline) ÷ messages.
    pub bytes_per_message: f64,
    /// The incumbent's formula for one message of this size, in bytes.
    pub incumbent_bytes_per_message: f64,
}

/// The incumbent's sizing formula, `(6 + 6 × KB per message) / 1024` MB per message, in bytes.
pub fn incumbent_bytes_per_message(payload_bytes: usize) -> f64 {
    let kb = payload_bytes as f64 / 1024.0;
    (6.0 + 6.0 * kb) / 1024.0 * 1024.0 * 1024.0
}

/// Runs the disk measurement.
pub fn run(args: DiskArgs) -> anyhow::Result<()> {
    if args.messages == 0 || args.clients == 0 || args.clients > 4096 {
        bail!("--messages must be above zero and --clients between 1 and 4096");
    }
    if !(1..=parley_raft::limits::MESSAGE_TEXT_BYTES_MAX).contains(&args.payload_bytes) {
        bail!(
            "--payload-bytes must be between 1 and {}",
            parley_raft::limits::MESSAGE_TEXT_BYTES_MAX
        );
    }
    let setup = Setup::new(&args.cluster, "parley-disk-")?;
    setup.require_parley()?;
    let figures = setup
        .runtime
        .block_on(measure(&args, &setup.parley, &setup.dir))?;
    let table = format!(
        "| messages | text bytes | node data dirs after (bytes) | bytes per message | incumbent formula | ratio |\n\
         |---:|---:|---|---:|---:|---:|\n\
         | {} | {} | {} | {:.0} | {:.0} | {:.3} |\n",
        figures.messages,
        figures.payload_bytes,
        figures
            .node_bytes
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" / "),
        figures.bytes_per_message,
        figures.incumbent_bytes_per_message,
        figures.bytes_per_message / figures.incumbent_bytes_per_message
    );
    super::report::write_json_and_table(&args.cluster.out, "disk", &figures, &table)
}

async fn measure(
    args: &DiskArgs,
    parley: &std::path::Path,
    dir: &std::path::Path,
) -> anyhow::Result<DiskFigures> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(4096)
        .build()
        .context("building the HTTP client")?;
    let mut cluster = start_parley(parley, dir, &http, "").await?;
    let urls = cluster.urls.clone();
    let baseline: Vec<u64> = (0..urls.len())
        .map(|i| cluster.processes.bytes_under(&format!("data{}", i + 1)))
        .collect();
    println!(
        "parley-bench disk: posting {} messages of {} bytes with {} clients",
        args.messages, args.payload_bytes, args.clients
    );
    let next = Arc::new(AtomicU64::new(0));
    let committed = Arc::new(AtomicU64::new(0));
    let text: Arc<str> = Arc::from("x".repeat(args.payload_bytes).as_str());
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..args.clients {
        let (http, next, committed, text) =
            (http.clone(), next.clone(), committed.clone(), text.clone());
        let base = urls[worker % urls.len()].clone();
        let total = args.messages;
        workers.push(tokio::spawn(async move {
            let request = format!("disk-{}-{worker}", uuid::Uuid::new_v4().simple());
            let mut chat: Option<Chat> = None;
            let mut in_chat = 0u64;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return anyhow::Ok(());
                }
                let current = match chat.take() {
                    Some(current) if in_chat < 4_000 => current,
                    _ => {
                        in_chat = 0;
                        start_chat(&http, &base, PARLEY_QUEUE, &format!("{request}-{n}")).await?
                    }
                };
                post_message(&http, &base, &current, &format!("m{n}"), &text, None).await?;
                chat = Some(current);
                in_chat += 1;
                let done = committed.fetch_add(1, Ordering::Relaxed) + 1;
                if done % 20_000 == 0 {
                    println!(
                        "  {done} messages committed, {:.0} s",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }));
    }
    for worker in workers {
        worker.await.context("a client panicked")??;
    }
    let messages = committed.load(Ordering::Relaxed);
    // A graceful stop flushes what the nodes buffer; the bytes then are what a restart reads.
    cluster.processes.stop();
    let node_bytes: Vec<u64> = (0..urls.len())
        .map(|i| cluster.processes.bytes_under(&format!("data{}", i + 1)))
        .collect();
    let per_node: Vec<f64> = node_bytes
        .iter()
        .zip(&baseline)
        .map(|(after, before)| after.saturating_sub(*before) as f64 / messages.max(1) as f64)
        .collect();
    Ok(DiskFigures {
        messages,
        payload_bytes: args.payload_bytes,
        node_bytes,
        baseline_bytes: baseline,
        bytes_per_message: per_node.iter().sum::<f64>() / per_node.len().max(1) as f64,
        incumbent_bytes_per_message: incumbent_bytes_per_message(args.payload_bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_incumbent_formula_gives_about_7_kb_for_a_200_byte_message() {
        // (6 + 6 × 0.195) / 1024 MB = 7.17 KB.
        let bytes = incumbent_bytes_per_message(200);
        assert!((bytes - 7_344.0).abs() < 1.0, "{bytes}");
    }
}

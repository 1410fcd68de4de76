//! `parley-bench load`: posts chat messages to a running cluster at several client concurrencies
//! and prints committed messages per second and commit latency (p50/p99/max).
//!
//! Each client starts its own chat on one of the target nodes (round robin, so followers
//! forward to the leader as in production) and posts messages one after another; a message
//! counts once its `POST` has answered, i.e. once it is committed.

use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;

use super::{compare, driver};

/// Options of `parley-bench load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// HTTP base URLs of the nodes, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8001,http://127.0.0.1:8002,http://127.0.0.1:8003"
    )]
    pub targets: Vec<String>,
    /// Clients, measured time and warm-up.
    #[command(flatten)]
    pub load: driver::ClosedLoopArgs,
    /// Message text size in bytes.
    #[arg(long, default_value_t = 200)]
    pub text_bytes: usize,
    /// Queue to open the chats in.
    #[arg(long, default_value = "sales")]
    pub queue: String,
}

/// Runs the benchmark and prints a table.
pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    if args.targets.is_empty() {
        bail!("--targets must not be empty");
    }
    args.load.check()?;
    if !(1..=parley_raft::limits::MESSAGE_TEXT_BYTES_MAX).contains(&args.text_bytes) {
        bail!(
            "--text-bytes must be between 1 and {}",
            parley_raft::limits::MESSAGE_TEXT_BYTES_MAX
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4096)
            .build()
            .context("building the HTTP client")?;
        println!(
            "parley-bench load: targets {}, {} s per run, {} byte messages",
            args.targets.join(","),
            args.load.duration.as_secs_f64(),
            args.text_bytes
        );
        println!(
            "{:>11} {:>10} {:>12} {:>9} {:>9} {:>9} {:>7}",
            "concurrency", "messages", "messages/s", "p50 ms", "p99 ms", "max ms", "errors"
        );
        let text: std::sync::Arc<str> = std::sync::Arc::from("x".repeat(args.text_bytes).as_str());
        let targets: Vec<String> = args
            .targets
            .iter()
            .map(|t| t.trim_end_matches('/').to_owned())
            .collect();
        for &concurrency in &args.load.concurrency {
            let ops =
                compare::parley_ops(&client, &targets, &args.queue, concurrency, &text).await?;
            let result = driver::drive("parley", ops, args.load.warmup, args.load.duration).await?;
            println!(
                "{:>11} {:>10} {:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>7}",
                result.concurrency,
                result.ops,
                result.per_second,
                result.p50_ms,
                result.p99_ms,
                result.max_ms,
                result.errors
            );
        }
        Ok(())
    })
}

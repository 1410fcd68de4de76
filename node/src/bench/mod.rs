//! `parley bench`: posts chat messages to a running cluster at several client concurrencies and
//! prints committed messages per second and commit latency (p50/p99/max).
//!
//! Each client starts its own chat on one of the target nodes (round robin, so followers
//! forward to the leader as in production) and posts messages one after another; a message
//! counts once its `POST` has answered, i.e. once it is committed.

pub mod compare;
pub mod driver;
pub mod peers;
pub mod report;

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;

/// Options of `parley bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// HTTP base URLs of the nodes, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8001,http://127.0.0.1:8002,http://127.0.0.1:8003"
    )]
    pub targets: Vec<String>,
    /// Client concurrencies to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub concurrency: Vec<usize>,
    /// How long to measure each concurrency.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up before each run.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Message text size in bytes.
    #[arg(long, default_value_t = 200)]
    pub text_bytes: usize,
    /// Queue to open the chats in.
    #[arg(long, default_value = "sales")]
    pub queue: String,
}

#[derive(Deserialize)]
struct Started {
    chat_id: String,
    token: String,
}

/// One concurrency's figures.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Clients.
    pub concurrency: usize,
    /// Messages committed during the measured window.
    pub committed: u64,
    /// Failed posts during the measured window.
    pub errors: u64,
    /// Committed per second.
    pub per_second: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Largest latency, ms.
    pub max_ms: f64,
}

/// Runs the benchmark and prints a table.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.targets.is_empty() || args.concurrency.is_empty() {
        bail!("--targets and --concurrency must not be empty");
    }
    if args.concurrency.iter().any(|&c| c == 0 || c > 4096) {
        bail!("--concurrency values must be between 1 and 4096");
    }
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
            "parley bench: targets {}, {} s per run, {} byte messages",
            args.targets.join(","),
            args.duration.as_secs_f64(),
            args.text_bytes
        );
        println!(
            "{:>11} {:>10} {:>12} {:>9} {:>9} {:>9} {:>7}",
            "concurrency", "messages", "messages/s", "p50 ms", "p99 ms", "max ms", "errors"
        );
        for &concurrency in &args.concurrency {
            let result = run_one(&client, &args, concurrency).await?;
            println!(
                "{:>11} {:>10} {:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>7}",
                result.concurrency,
                result.committed,
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

async fn run_one(
    client: &reqwest::Client,
    args: &BenchArgs,
    concurrency: usize,
) -> anyhow::Result<RunResult> {
    let run_id = uuid::Uuid::new_v4();
    let text = "x".repeat(args.text_bytes);
    let mut workers = Vec::with_capacity(concurrency);
    let warm_until = Instant::now() + args.warmup;
    let stop_at = warm_until + args.duration;
    for worker in 0..concurrency {
        let client = client.clone();
        let base = args.targets[worker % args.targets.len()]
            .trim_end_matches('/')
            .to_owned();
        let queue = args.queue.clone();
        let text = text.clone();
        workers.push(tokio::spawn(async move {
            let started: Started = client
                .post(format!("{base}/api/v1/chats"))
                .json(&json!({
                    "request_id": format!("bench-{run_id}-{worker}"),
                    "queue_id": queue,
                    "customer": {"name": "Bench", "email": format!("bench-{run_id}-{worker}@example.com")},
                    "question": "load"
                }))
                .send()
                .await
                .context("starting a chat")?
                .error_for_status()
                .context("starting a chat")?
                .json()
                .await
                .context("reading the started chat")?;
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
            let mut errors = 0u64;
            let mut n = 0u64;
            loop {
                let now = Instant::now();
                if now >= stop_at {
                    break;
                }
                n += 1;
                let sent = Instant::now();
                let result = client
                    .post(format!("{base}/api/v1/chats/{}/messages", started.chat_id))
                    .bearer_auth(&started.token)
                    .json(&json!({"client_msg_id": format!("m{n}"), "text": text}))
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status);
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                if sent < warm_until {
                    continue;
                }
                match result {
                    Ok(_) => histogram.saturating_record(micros.max(1)),
                    Err(_) => errors += 1,
                }
            }
            anyhow::Ok((histogram, errors))
        }));
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    let mut errors = 0;
    for worker in workers {
        let (histogram, worker_errors) = worker.await.context("bench worker panicked")??;
        total.add(histogram).context("merging histograms")?;
        errors += worker_errors;
    }
    let committed = total.len();
    Ok(RunResult {
        concurrency,
        committed,
        errors,
        per_second: committed as f64 / args.duration.as_secs_f64(),
        p50_ms: total.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: total.value_at_quantile(0.99) as f64 / 1000.0,
        max_ms: total.max() as f64 / 1000.0,
    })
}

//! The closed-loop load driver every system is measured with: `concurrency` clients, each
//! issuing one operation after another, an unmeasured warm-up, then a measured window.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;

/// One operation in flight.
pub type OpFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// One client: called with the client's operation number, returns that operation.
pub type Op = Box<dyn FnMut(u64) -> OpFuture + Send>;

/// Throughput and latency of one measured window.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Figures {
    /// What was measured (`parley`, `etcd`, `nats`).
    pub system: String,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Operations acknowledged in the window.
    pub ops: u64,
    /// Operations that failed in the window.
    pub errors: u64,
    /// Acknowledged operations per second.
    pub per_second: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
    /// CPU seconds the servers spent (user + system, all nodes, from /proc) per 1,000
    /// acknowledged operations, where measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_s_per_1k: Option<f64>,
}

/// The closed-loop load every throughput suite takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ClosedLoopArgs {
    /// Client concurrencies, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub concurrency: Vec<usize>,
    /// Measured time per concurrency.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up before each measurement.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
}

impl ClosedLoopArgs {
    /// Refuses empty or out-of-range values.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.concurrency.is_empty() || self.concurrency.iter().any(|&c| c == 0 || c > 4096) {
            anyhow::bail!("--concurrency takes values between 1 and 4096");
        }
        if self.duration.is_zero() {
            anyhow::bail!("--duration must be above zero");
        }
        Ok(())
    }
}

/// Largest latency the histograms hold (60 s, in µs).
const LATENCY_MAX_US: u64 = 60_000_000;

/// Runs `ops` (one per client) for `warmup` unmeasured, then `duration` measured.
pub async fn drive(
    system: &str,
    ops: Vec<Op>,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Figures> {
    let concurrency = ops.len();
    let warm_until = Instant::now() + warmup;
    let stop_at = warm_until + duration;
    let mut workers = Vec::with_capacity(concurrency);
    for mut op in ops {
        workers.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_US, 3)
                .context("latency histogram")?;
            let mut errors = 0u64;
            let mut n = 0u64;
            while Instant::now() < stop_at {
                n += 1;
                let sent = Instant::now();
                let result = op(n).await;
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                if sent < warm_until {
                    continue;
                }
                match result {
                    Ok(()) => histogram.saturating_record(micros.max(1)),
                    Err(error) => {
                        if errors == 0 {
                            tracing::warn!(error = format!("{error:#}"), "operation failed");
                        }
                        errors += 1;
                    }
                }
            }
            anyhow::Ok((histogram, errors))
        }));
    }
    let mut total =
        Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_US, 3).context("latency histogram")?;
    let mut errors = 0;
    for worker in workers {
        let (histogram, worker_errors) = worker.await.context("a load client panicked")??;
        total.add(histogram).context("merging histograms")?;
        errors += worker_errors;
    }
    let ms = |q: f64| total.value_at_quantile(q) as f64 / 1000.0;
    Ok(Figures {
        system: system.to_owned(),
        concurrency,
        ops: total.len(),
        errors,
        per_second: total.len() as f64 / duration.as_secs_f64(),
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: total.max() as f64 / 1000.0,
        server_cpu_s_per_1k: None,
    })
}

//! Connections and memory: how many customers' WebSocket streams one node holds, and what an
//! open chat costs in memory. Chats are started across the cluster, then every chat's customer
//! opens its stream on node 1, in steps; after each step the harness reads node 1's resident
//! memory (`VmRSS`) and its `parley_streams` gauge, and checks that the streams still deliver
//! (a message posted to a sample of chats arrives on their streams).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use futures::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use super::peers::{
    open_stream, post_message, start_chat, start_parley, Chat, ClusterArgs, Setup, Ws, PARLEY_QUEUE,
};

/// Options of `parley-bench connections`.
#[derive(Debug, Clone, Args)]
pub struct ConnectionsArgs {
    /// Streams to open on node 1, in total.
    #[arg(long, default_value_t = 10_000)]
    pub streams: usize,
    /// Streams opened per step (memory and delivery are read after each).
    #[arg(long, default_value_t = 2_000)]
    pub step: usize,
    /// The cluster's binary, data and output directories.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// The figures after one step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Chats open in the cluster.
    pub chats: usize,
    /// Streams node 1 reports open.
    pub streams: u64,
    /// Node 1's resident memory, MiB.
    pub rss_mib: f64,
    /// Sampled streams that received a message posted after the step.
    pub delivered: usize,
    /// Streams sampled.
    pub sampled: usize,
}

/// A process's resident set in bytes, from /proc.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no VmRSS in /proc status")?;
    Ok(kib * 1024)
}

async fn streams_gauge(http: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .context("reading /metrics")?
        .text()
        .await
        .context("reading /metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix("parley_streams "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .context("no parley_streams gauge in /metrics")
}

/// Probe messages the held streams received, by chat index.
type Received = Arc<Mutex<std::collections::HashSet<(usize, String)>>>;

/// Keeps stream `index` read (answering the node's pings) and notes the probes it delivers.
async fn hold(mut ws: Ws, index: usize, received: Received) {
    while let Some(Ok(frame)) = ws.next().await {
        match frame {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).unwrap_or_default();
                if let Some(id) = value["client_msg_id"].as_str() {
                    received.lock().await.insert((index, id.to_owned()));
                }
            }
            Message::Ping(payload) => {
                let _ = ws.send(Message::Pong(payload)).await;
            }
            _ => {}
        }
    }
}

async fn measure(setup: &Setup, args: &ConnectionsArgs) -> anyhow::Result<(Vec<Step>, f64, f64)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build()
        .context("building the HTTP client")?;
    let cluster = start_parley(&setup.parley, &setup.dir, &http, "").await?;
    let urls = cluster.urls.clone();
    let pid = cluster.processes.pid(0).context("node 1 is not running")?;
    let idle = rss_bytes(pid)?;
    println!(
        "parley-bench connections: node 1 (pid {pid}) idle at {:.1} MiB",
        idle as f64 / 1048576.0
    );
    let run = uuid::Uuid::new_v4().simple().to_string();
    let received: Received = Arc::default();
    let mut held = Vec::new();
    let mut chats: Vec<Chat> = Vec::new();
    let mut steps = Vec::new();
    let (mut chats_only, mut with_streams) = (idle, idle);
    while chats.len() < args.streams {
        let target = (chats.len() + args.step).min(args.streams);
        // Start this step's chats across the nodes.
        let first = chats.len();
        for batch in (first..target).collect::<Vec<_>>().chunks(64) {
            let starts = batch.iter().map(|&c| {
                let (http, base) = (http.clone(), urls[c % urls.len()].clone());
                let request = format!("conn-{run}-{c}");
                async move { start_chat(&http, &base, PARLEY_QUEUE, &request).await }
            });
            for chat in futures::future::join_all(starts).await {
                chats.push(chat?);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        chats_only = rss_bytes(pid)?;
        // Then their customers' streams on node 1.
        for (offset, batch) in chats[first..target].chunks(128).enumerate() {
            let opens = batch.iter().map(|chat| {
                let path = format!("/api/v1/chats/{}/stream?after=0", chat.id);
                let (base, token) = (urls[0].clone(), chat.token.clone());
                async move { open_stream(&base, &path, &token, Duration::from_secs(30)).await }
            });
            let opened = futures::future::join_all(opens).await;
            for (k, ws) in opened.into_iter().enumerate() {
                match ws {
                    Ok(ws) => {
                        let index = first + offset * 128 + k;
                        held.push(tokio::spawn(hold(ws, index, received.clone())));
                    }
                    Err(error) => {
                        println!("  stream {} refused: {error:#}", held.len() + 1);
                        return finish(
                            steps,
                            idle,
                            chats_only,
                            with_streams,
                            chats.len(),
                            target - first,
                        );
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        with_streams = rss_bytes(pid)?;
        // Delivery still works: a message to ten chats of this step arrives on their streams.
        let sample: Vec<usize> = (first..target)
            .step_by(((target - first) / 10).max(1))
            .collect();
        let id = format!("probe-{target}");
        for &index in &sample {
            post_message(&http, &urls[1], &chats[index], &id, "are you there?", None).await?;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let delivered = loop {
            let got = {
                let received = received.lock().await;
                sample
                    .iter()
                    .filter(|&&i| received.contains(&(i, id.clone())))
                    .count()
            };
            if got == sample.len() || Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let step = Step {
            chats: chats.len(),
            streams: streams_gauge(&http, &urls[0]).await?,
            rss_mib: with_streams as f64 / 1048576.0,
            delivered,
            sampled: sample.len(),
        };
        println!(
            "  {:>6} chats, {:>6} streams on node 1, RSS {:>7.1} MiB, {}/{} sampled streams delivered",
            step.chats, step.streams, step.rss_mib, step.delivered, step.sampled
        );
        steps.push(step);
    }
    for task in held {
        task.abort();
    }
    let last_step = args.step.min(chats.len());
    finish(
        steps,
        idle,
        chats_only,
        with_streams,
        chats.len(),
        last_step,
    )
}

/// The steps, the memory one stream adds (measured over the last step: its streams opened on
/// top of its chats) and the memory per open chat with its stream (bytes).
fn finish(
    steps: Vec<Step>,
    idle: u64,
    chats_only: u64,
    with_streams: u64,
    chats: usize,
    last_step: usize,
) -> anyhow::Result<(Vec<Step>, f64, f64)> {
    let per_stream = with_streams.saturating_sub(chats_only) as f64 / last_step.max(1) as f64;
    let per_chat = with_streams.saturating_sub(idle) as f64 / chats.max(1) as f64;
    Ok((steps, per_stream, per_chat))
}

/// Runs the connections measurement and writes its table.
pub fn run(args: ConnectionsArgs) -> anyhow::Result<()> {
    if args.streams == 0 || args.streams > 100_000 || args.step == 0 {
        bail!("--streams must be between 1 and 100000 and --step above zero");
    }
    // Each stream is a file descriptor here and on the node (which inherits the limit).
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if (limit as usize) < args.streams + 1_000 => bail!(
            "the open-files limit is {limit}; {} streams need more (raise the hard limit, \
             e.g. ulimit -Hn)",
            args.streams
        ),
        Ok(_) => {}
        Err(error) => bail!("raising the open-files limit: {error}"),
    }
    let setup = Setup::new(&args.cluster, "parley-connections-")?;
    setup.require_parley()?;
    let (steps, per_stream, per_chat) = setup.runtime.block_on(measure(&setup, &args))?;
    let mut table = String::from(
        "| open chats | streams on node 1 | node 1 RSS MiB | sampled streams delivering |\n\
         |---:|---:|---:|---:|\n",
    );
    for s in &steps {
        table.push_str(&format!(
            "| {} | {} | {:.1} | {}/{} |\n",
            s.chats, s.streams, s.rss_mib, s.delivered, s.sampled
        ));
    }
    table.push_str(&format!(
        "\nMemory on node 1 per open chat with its customer's WebSocket stream there: {:.1} KiB; \
         of which the stream itself (the last step's streams over its chats): {:.1} KiB.\n",
        per_chat / 1024.0,
        per_stream / 1024.0
    ));
    println!("\n{table}");
    let out = &args.cluster.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let md = out.join("connections.md");
    std::fs::write(&md, &table).with_context(|| format!("writing {}", md.display()))?;
    println!("wrote {}", md.display());
    Ok(())
}

//! Island mode, measured: a three-node Parley cluster loses two nodes, the third becomes an
//! island, and clients post messages through it (each answered once synced to its island
//! journal). Then the two return and the island merges. The harness prints
//!
//! - **island writes**: throughput and latency of messages the island answered
//!   (`"island": true`), closed loop at `--clients`;
//! - **merge**: from the restart of the two nodes to the island ending, and to its journal
//!   being empty (every island write merged into the cluster), and how many were merged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::failover::quantile;
use super::peers::{start_chat, start_parley, Chat, ClusterArgs, Setup, PARLEY_QUEUE};

/// Options of `parley-bench island`.
#[derive(Debug, Clone, Args)]
pub struct IslandArgs {
    /// Messages posted through the island in all.
    #[arg(long, default_value_t = 2000)]
    pub writes: usize,
    /// Clients posting at once, each to its own chat.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// The cluster's binary, data and output directories.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

async fn view(client: &reqwest::Client, url: &str) -> Option<Value> {
    client
        .get(format!("{url}/api/v1/cluster"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Waits until node `url`'s cluster view satisfies `want`, at most `within`; how long it took.
async fn until(
    client: &reqwest::Client,
    url: &str,
    within: Duration,
    what: &str,
    want: impl Fn(&Value) -> bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if view(client, url).await.is_some_and(|v| want(&v)) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            bail!("{url}: {what} not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the island benchmark and writes its table.
pub fn run(args: IslandArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.clients > 1024 {
        bail!("--clients must be between 1 and 1024");
    }
    if args.writes < args.clients || args.writes > 10_000_000 {
        bail!("--writes must be at least --clients and at most 10,000,000");
    }
    let setup = Setup::new(&args.cluster, "parley-island-")?;
    setup.require_parley()?;
    let table = setup.runtime.block_on(measure(&args, &setup))?;
    println!("\n{table}");
    std::fs::create_dir_all(&args.cluster.out)
        .with_context(|| format!("creating {}", args.cluster.out.display()))?;
    let md = args.cluster.out.join("island.md");
    std::fs::write(&md, &table).with_context(|| format!("writing {}", md.display()))?;
    println!("wrote {}", md.display());
    Ok(())
}

async fn measure(args: &IslandArgs, setup: &Setup) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    let mut cluster = start_parley(&setup.parley, &setup.dir, &http, "").await?;
    let island = cluster.urls[2].clone();
    until(
        &http,
        &island,
        Duration::from_secs(60),
        "cluster version 2",
        |v| v["cluster_version"].as_u64() >= Some(2),
    )
    .await?;
    let mut chats = Vec::with_capacity(args.clients);
    for client in 0..args.clients {
        chats.push(start_chat(&http, &island, PARLEY_QUEUE, &format!("island-{client}")).await?);
    }
    cluster.processes.kill9(0);
    cluster.processes.kill9(1);
    let became = until(&http, &island, Duration::from_secs(60), "island", |v| {
        v["island"] == true
    })
    .await?;
    println!(
        "parley-bench island: node 3 is an island {} ms after nodes 1 and 2 were killed; \
         {} writes from {} clients",
        became.as_millis(),
        args.writes,
        args.clients
    );

    let latencies = Arc::new(Mutex::new(Vec::with_capacity(args.writes)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (index, chat) in chats.into_iter().enumerate() {
        let share = args.writes / args.clients + usize::from(index < args.writes % args.clients);
        let (http, url, latencies) = (http.clone(), island.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            post_all(&http, &url, &chat, index, share, &latencies).await
        }));
    }
    for task in tasks {
        task.await.context("a client task failed")??;
    }
    let elapsed = started.elapsed();
    let latencies = std::mem::take(&mut *latencies.lock().await);
    let journal = view(&http, &island)
        .await
        .and_then(|v| v["island_journal_entries"].as_u64())
        .unwrap_or(0);

    cluster.processes.restart(0)?;
    cluster.processes.restart(1)?;
    let healed = Instant::now();
    until(
        &http,
        &island,
        Duration::from_secs(120),
        "end of the island",
        |v| v["island"] == false,
    )
    .await?;
    let ended = healed.elapsed();
    let merged_view = {
        until(
            &http,
            &island,
            Duration::from_secs(600),
            "an empty journal",
            |v| v["island_journal_entries"] == 0,
        )
        .await?;
        view(&http, &island).await.unwrap_or(Value::Null)
    };
    let merged_in = healed.elapsed();
    let merged = merged_view["island_merged_writes"].as_u64().unwrap_or(0);
    let refused = merged_view["island_merge_refused"].as_u64().unwrap_or(0);
    cluster.processes.stop();

    let ms = |q| quantile(&latencies, q);
    Ok(format!(
        "| measure | value |\n|---|---:|\n\
         | island writes answered | {} |\n\
         | island writes per second | {:.0} |\n\
         | island write p50 / p99 / p999 ms | {:.1} / {:.1} / {:.1} |\n\
         | journal entries before the heal | {journal} |\n\
         | restart of the quorum → island ended, ms | {} |\n\
         | restart of the quorum → journal empty (all merged), ms | {} |\n\
         | writes merged / refused at merge | {merged} / {refused} |\n",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        ended.as_millis(),
        merged_in.as_millis(),
    ))
}

/// Posts `count` messages to `chat` through the island, one after another; every answer must
/// say it was taken in island mode.
async fn post_all(
    http: &reqwest::Client,
    url: &str,
    chat: &Chat,
    client: usize,
    count: usize,
    latencies: &Mutex<Vec<f64>>,
) -> anyhow::Result<()> {
    for n in 0..count {
        let sent = Instant::now();
        let answer: Value = http
            .post(format!("{url}/api/v1/chats/{}/messages", chat.id))
            .bearer_auth(&chat.token)
            .json(&json!({"client_msg_id": format!("c{client}-{n}"), "text": "island load"}))
            .send()
            .await
            .context("posting to the island")?
            .error_for_status()
            .context("posting to the island")?
            .json()
            .await
            .context("reading the island's answer")?;
        if answer["island"] != true {
            bail!("the island answered a write without the island mark: {answer}");
        }
        latencies
            .lock()
            .await
            .push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(())
}

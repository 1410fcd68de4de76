//! End to end: from a customer's `POST` of a chat message to the agent's WebSocket receiving
//! it, at several numbers of concurrently open chats. Agents (50 chats each, the most an agent
//! may hold) log in across the nodes, follow their feed over WebSocket, and accept every offer;
//! once every chat is assigned, each customer posts at a steady pace (the whole cluster at most
//! `--rate` messages per second) through a node of its own, and the latency of every message is
//! taken when the agent's stream delivers it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use super::peers::{
    open_stream, post_message, start_chat, start_parley, ClusterArgs, Setup, PARLEY_QUEUE,
};

/// The most chats an agent holds (the product's per-channel limit ceiling).
const CHATS_PER_AGENT: usize = 50;

/// The agents' password.
const PASSWORD: &str = "bench-agent-password";

/// Options of `parley-bench e2e`.
#[derive(Debug, Clone, Args)]
pub struct E2eArgs {
    /// Concurrently open chats, comma separated; each level runs on a fresh cluster.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    pub chats: Vec<usize>,
    /// Messages per second over the whole cluster while measuring.
    #[arg(long, default_value_t = 500)]
    pub rate: usize,
    /// Measured time per level.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// The cluster's binary, data and output directories.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// One level's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    /// Open chats.
    pub chats: usize,
    /// Agents holding them.
    pub agents: usize,
    /// Messages committed per second while measuring.
    pub rate: f64,
    /// Messages received by agents in the window.
    pub received: u64,
    /// Sent in the window but never received.
    pub lost: u64,
    /// Send to agent receipt, median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

/// Send instants by (chat id, client message id), shared by customers and agents.
type Sent = Arc<Mutex<HashMap<(String, String), Instant>>>;

fn agents_config(agents: usize, hash: &str) -> String {
    (1..=agents)
        .map(|a| {
            format!(
                "\n[[agents]]\nid = \"a{a}\"\nname = \"Agent {a}\"\nlimits = {{ chat = {CHATS_PER_AGENT} }}\n\
                 password_hash = \"{hash}\"\n"
            )
        })
        .collect()
}

async fn agent_login(http: &reqwest::Client, base: &str, agent: &str) -> anyhow::Result<String> {
    let body: Value = http
        .post(format!("{base}/api/v1/agents/login"))
        .json(&json!({"agent_id": agent, "password": PASSWORD}))
        .send()
        .await
        .context("logging in")?
        .error_for_status()
        .context("logging in")?
        .json()
        .await
        .context("reading the login")?;
    let token = body["token"].as_str().context("no token")?.to_owned();
    http.put(format!("{base}/api/v1/agents/me/availability"))
        .bearer_auth(&token)
        .json(&json!({"channels": {"chat": true}}))
        .send()
        .await
        .context("getting ready")?
        .error_for_status()
        .context("getting ready")?;
    Ok(token)
}

/// One agent: follows their feed, accepts offers, times every customer message.
async fn agent(
    http: reqwest::Client,
    base: String,
    token: String,
    sent: Sent,
    latencies: Arc<Mutex<Histogram<u64>>>,
    assigned: Arc<std::sync::atomic::AtomicUsize>,
) -> anyhow::Result<()> {
    let mut ws = open_stream(
        &base,
        "/api/v1/agents/me/stream?after=0",
        &token,
        Duration::from_secs(10),
    )
    .await?;
    while let Some(frame) = ws.next().await {
        let Message::Text(text) = frame.context("reading the agent stream")? else {
            continue;
        };
        let received = Instant::now();
        let value: Value = serde_json::from_str(&text).context("a frame that is not JSON")?;
        match value["type"].as_str() {
            Some("offered") => {
                let activity = value["activity_id"].as_str().unwrap_or_default().to_owned();
                let accepted = http
                    .post(format!("{base}/api/v1/activities/{activity}/accept"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status);
                if accepted.is_ok() {
                    assigned.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Some("chat_event") if value["event"]["type"] == "message" => {
                let key = (
                    value["chat_id"].as_str().unwrap_or_default().to_owned(),
                    value["event"]["client_msg_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                );
                if let Some(at) = sent.lock().await.remove(&key) {
                    let micros = u64::try_from((received - at).as_micros()).unwrap_or(u64::MAX);
                    latencies.lock().await.saturating_record(micros.max(1));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

async fn level(setup: &Setup, args: &E2eArgs, chats: usize, hash: &str) -> anyhow::Result<Level> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(4096)
        .build()
        .context("building the HTTP client")?;
    let agents = chats.div_ceil(CHATS_PER_AGENT);
    let dir = setup.dir.join(format!("e2e-{chats}"));
    let cluster = start_parley(&setup.parley, &dir, &http, &agents_config(agents, hash)).await?;
    let urls = cluster.urls.clone();
    let sent: Sent = Arc::new(Mutex::new(HashMap::new()));
    let latencies = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?,
    ));
    let assigned = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut agent_tasks = Vec::new();
    for a in 1..=agents {
        let base = urls[a % urls.len()].clone();
        let token = agent_login(&http, &base, &format!("a{a}")).await?;
        agent_tasks.push(tokio::spawn(agent(
            http.clone(),
            base,
            token,
            sent.clone(),
            latencies.clone(),
            assigned.clone(),
        )));
    }
    // The customers: chats started through every node, in parallel batches.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut open = Vec::with_capacity(chats);
    for batch in (0..chats).collect::<Vec<_>>().chunks(64) {
        let starts = batch.iter().map(|&c| {
            let (http, base) = (http.clone(), urls[c % urls.len()].clone());
            let request = format!("e2e-{run}-{c}");
            async move { start_chat(&http, &base, PARLEY_QUEUE, &request).await }
        });
        for chat in futures::future::join_all(starts).await {
            open.push(chat?);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while assigned.load(std::sync::atomic::Ordering::Relaxed) < chats {
        if Instant::now() > deadline {
            bail!(
                "only {} of {chats} chats were assigned within 120 s",
                assigned.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("  {chats} chats open and assigned to {agents} agents; measuring");
    // Each customer posts every `interval`, starting at a random offset.
    let interval = Duration::from_secs_f64((chats as f64 / args.rate as f64).max(0.05));
    let stop_at = Instant::now() + args.duration;
    let mut customers = Vec::with_capacity(chats);
    for (c, chat) in open.into_iter().enumerate() {
        let (http, base, sent) = (
            http.clone(),
            urls[(c + 1) % urls.len()].clone(),
            sent.clone(),
        );
        let offset = interval.mul_f64((c as f64 / chats as f64).fract());
        customers.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut ticker = tokio::time::interval(interval);
            let mut n = 0u64;
            let mut count = 0u64;
            while Instant::now() < stop_at {
                ticker.tick().await;
                n += 1;
                let id = format!("m{n}");
                sent.lock()
                    .await
                    .insert((chat.id.clone(), id.clone()), Instant::now());
                if post_message(&http, &base, &chat, &id, "hello from the benchmark", None)
                    .await
                    .is_ok()
                {
                    count += 1;
                }
            }
            count
        }));
    }
    let mut posted = 0u64;
    for customer in customers {
        posted += customer.await.context("a customer panicked")?;
    }
    // Let the last messages arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for task in &agent_tasks {
        task.abort();
    }
    let latencies = latencies.lock().await;
    let lost = sent.lock().await.len() as u64;
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    let level = Level {
        chats,
        agents,
        rate: posted as f64 / args.duration.as_secs_f64(),
        received: latencies.len(),
        lost: lost.min(posted),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: latencies.max() as f64 / 1000.0,
    };
    println!(
        "  {:>5} chats: {:>6} messages received, p50 {:>7.2} ms, p99 {:>7.2} ms, max {:>7.2} ms, \
         not received {}",
        level.chats, level.received, level.p50_ms, level.p99_ms, level.max_ms, level.lost
    );
    drop(cluster);
    Ok(level)
}

/// Runs every level and writes the table.
pub fn run(args: E2eArgs) -> anyhow::Result<()> {
    if args.chats.is_empty() || args.chats.iter().any(|&c| c == 0 || c > 20_000) {
        bail!("--chats takes levels between 1 and 20000");
    }
    if args.rate == 0 || args.rate > 100_000 {
        bail!("--rate must be between 1 and 100000");
    }
    let setup = Setup::new(&args.cluster, "parley-e2e-")?;
    setup.require_parley()?;
    let hash = setup
        .hash_password(PASSWORD)
        .context("hashing the agents' password")?;
    println!(
        "parley-bench e2e: customer POST to agent WebSocket receipt; {} msg/s, {} s per level",
        args.rate,
        args.duration.as_secs_f64()
    );
    let mut levels = Vec::new();
    for &chats in &args.chats {
        levels.push(setup.runtime.block_on(level(&setup, &args, chats, &hash))?);
    }
    let mut table = String::from(
        "| open chats | agents | messages/s | received | p50 ms | p99 ms | max ms | not received |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for l in &levels {
        table.push_str(&format!(
            "| {} | {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {} |\n",
            l.chats, l.agents, l.rate, l.received, l.p50_ms, l.p99_ms, l.max_ms, l.lost
        ));
    }
    println!("\n{table}");
    let out = &args.cluster.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let md = out.join("e2e.md");
    std::fs::write(&md, &table).with_context(|| format!("writing {}", md.display()))?;
    let json_path = out.join("e2e.json");
    std::fs::write(
        &json_path,
        serde_json::to_vec_pretty(&levels).context("encoding")?,
    )
    .with_context(|| format!("writing {}", json_path.display()))?;
    println!("wrote {} and {}", md.display(), json_path.display());
    Ok(())
}

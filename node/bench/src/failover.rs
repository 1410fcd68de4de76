//! Leader failover, measured: a three-node Parley cluster under steady load; in each trial the
//! leader is stopped, with SIGKILL (`--stop kill9`, a crash) or SIGTERM (`--stop sigterm`, a
//! graceful restart: the leader hands leadership over, then closes its streams), and the
//! harness measures
//!
//! - **write**: from the signal to the first chat message committed through a surviving node
//!   (a probe posting every 10 ms, each post with a 1 s deadline): the write stall, and
//! - **resume**: a customer following the probe chat on the stopped node's WebSocket reconnects
//!   to a surviving node with `after=<last seq>`; from the signal to the new stream being open,
//!   and to the first message posted after the signal arriving on it.
//!
//! The stopped node is restarted and caught up before the next trial.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use futures::StreamExt as _;
use serde::Serialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::peers::{
    open_stream, post_message, start_chat, start_parley, wait_ready, Chat, ClusterArgs, Setup, Ws,
    PARLEY_QUEUE,
};

/// How the leader is stopped in each trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stop {
    /// SIGKILL: the process dies at once, as in a crash.
    Kill9,
    /// SIGTERM: the node hands leadership over and shuts down gracefully.
    Sigterm,
}

impl Stop {
    fn verb(self) -> &'static str {
        match self {
            Stop::Kill9 => "kill",
            Stop::Sigterm => "SIGTERM",
        }
    }
}

/// Longest a node given SIGTERM may take to exit before it is killed.
const GRACEFUL_EXIT_MAX: Duration = Duration::from_secs(30);

/// Options of `parley-bench failover`.
#[derive(Debug, Clone, Args)]
pub struct FailoverArgs {
    /// Leader stops.
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
    /// How the leader is stopped.
    #[arg(long, value_enum, default_value_t = Stop::Kill9)]
    pub stop: Stop,
    /// Clients posting steadily through all nodes meanwhile (0: an idle cluster).
    #[arg(long, default_value_t = 16)]
    pub load_clients: usize,
    /// The cluster's binary, data and output directories.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The nodes' Raft heartbeat (default: the product default, 100ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub heartbeat: Option<Duration>,
    /// The nodes' election timeout range, `MIN,MAX` (default: 300ms,600ms).
    #[arg(long, value_delimiter = ',', value_parser = humantime::parse_duration)]
    pub election_timeout: Vec<Duration>,
    /// A name for this configuration in the output files (`failover-<label>.csv`).
    #[arg(long, default_value = "default")]
    pub label: String,
}

impl FailoverArgs {
    /// The `[raft]` table these options ask for.
    fn raft_table(&self) -> anyhow::Result<String> {
        let mut table = String::from("[raft]\n");
        if let Some(heartbeat) = self.heartbeat {
            table.push_str(&format!("heartbeat = \"{}ms\"\n", heartbeat.as_millis()));
        }
        match self.election_timeout.as_slice() {
            [] => {}
            [min, max] if min < max => table.push_str(&format!(
                "election_timeout_min = \"{}ms\"\nelection_timeout_max = \"{}ms\"\n",
                min.as_millis(),
                max.as_millis()
            )),
            _ => bail!("--election-timeout takes MIN,MAX with MIN below MAX, e.g. 150ms,300ms"),
        }
        Ok(table)
    }
}

/// One trial's figures.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Trial {
    /// Trial number from 1.
    pub trial: usize,
    /// How it was stopped.
    pub stop: Stop,
    /// The node stopped.
    pub killed: u64,
    /// Kill to the first committed write through a survivor, ms.
    pub write_ms: f64,
    /// Kill to the customer's stream open again on a survivor, ms.
    pub reconnect_ms: f64,
    /// Kill to the first post-kill message arriving on the new stream, ms.
    pub resume_ms: f64,
}

async fn json(client: &reqwest::Client, url: String) -> anyhow::Result<Value> {
    client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .json()
        .await
        .with_context(|| format!("reading {url}"))
}

/// The leader's node id as the first answering node in `urls` sees it.
async fn leader(client: &reqwest::Client, urls: &[String]) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for url in urls {
            if let Ok(view) = json(client, format!("{url}/api/v1/cluster")).await {
                if let Some(leader) = view["leader"].as_u64() {
                    return Ok(leader);
                }
            }
        }
        if Instant::now() > deadline {
            bail!("no leader within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every node has applied what the others have.
async fn caught_up(client: &reqwest::Client, urls: &[String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut applied = Vec::new();
        for url in urls {
            let view = json(client, format!("{url}/api/v1/cluster")).await.ok();
            applied.push(view.and_then(|v| v["applied_index"].as_u64()));
        }
        let max = applied.iter().flatten().max().copied().unwrap_or(0);
        // Under load the heads move; within 200 entries of each other is caught up.
        if applied.iter().all(|a| a.is_some_and(|a| a + 200 >= max)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nodes did not catch up: {applied:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    chat: &Chat,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<u64> {
    post_message(client, base, chat, id, "failover probe", Some(timeout)).await
}

async fn open_chat_stream(base: &str, chat: &Chat, after: u64) -> anyhow::Result<Ws> {
    let path = format!("/api/v1/chats/{}/stream?after={after}", chat.id);
    open_stream(base, &path, &chat.token, Duration::from_secs(5)).await
}

/// Reads frames until a chat event with `seq > after`; returns its seq.
async fn next_event(ws: &mut Ws, after: u64, within: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, ws.next())
            .await
            .context("no event in time")?
            .context("the stream closed")?
            .context("reading the stream")?;
        if let Message::Text(text) = frame {
            let value: Value = serde_json::from_str(&text).context("a frame that is not JSON")?;
            if let Some(seq) = value["seq"].as_u64() {
                if seq > after {
                    return Ok(seq);
                }
            }
        }
    }
}

/// The `q` quantile of `values` (nearest rank); NaN when empty.
pub(crate) fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Runs the failover trials and writes their figures.
pub fn run(args: FailoverArgs) -> anyhow::Result<()> {
    if args.trials == 0 || args.trials > 1000 {
        bail!("--trials must be between 1 and 1000");
    }
    if args.load_clients > 1024 {
        bail!("--load-clients must be at most 1024");
    }
    if args.label.is_empty()
        || !args
            .label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        bail!("--label takes letters, digits and dashes");
    }
    let raft = args.raft_table()?;
    let setup = Setup::new(&args.cluster, "parley-failover-")?;
    setup.require_parley()?;
    let trials = setup
        .runtime
        .block_on(trials(&args, &setup.parley, &setup.dir, &raft))?;
    let writes: Vec<f64> = trials.iter().map(|t| t.write_ms).collect();
    let reconnects: Vec<f64> = trials.iter().map(|t| t.reconnect_ms).collect();
    let resumes: Vec<f64> = trials.iter().map(|t| t.resume_ms).collect();
    let mut table =
        String::from("| measure | median ms | p90 ms | max ms |\n|---|---:|---:|---:|\n");
    let verb = args.stop.verb();
    for (name, values) in [
        (format!("{verb} → next committed write"), &writes),
        (
            format!("{verb} → customer stream open on another node"),
            &reconnects,
        ),
        (
            format!("{verb} → first new message on that stream"),
            &resumes,
        ),
    ] {
        table.push_str(&format!(
            "| {name} | {:.0} | {:.0} | {:.0} |\n",
            quantile(values, 0.5),
            quantile(values, 0.9),
            values.iter().copied().fold(f64::NAN, f64::max)
        ));
    }
    println!("\n{table}");
    std::fs::create_dir_all(&args.cluster.out)
        .with_context(|| format!("creating {}", args.cluster.out.display()))?;
    let csv_path = args
        .cluster
        .out
        .join(format!("failover-{}.csv", args.label));
    let mut csv = csv::Writer::from_path(&csv_path)
        .with_context(|| format!("writing {}", csv_path.display()))?;
    for trial in &trials {
        csv.serialize(trial).context("writing a CSV row")?;
    }
    csv.flush().context("writing the CSV")?;
    let md = args.cluster.out.join(format!("failover-{}.md", args.label));
    std::fs::write(&md, &table).with_context(|| format!("writing {}", md.display()))?;
    println!("wrote {} and {}", csv_path.display(), md.display());
    Ok(())
}

async fn trials(
    args: &FailoverArgs,
    parley: &std::path::Path,
    dir: &std::path::Path,
    raft: &str,
) -> anyhow::Result<Vec<Trial>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    let mut cluster = start_parley(parley, dir, &http, raft).await?;
    let urls = cluster.urls.clone();
    println!(
        "parley-bench failover: {} trials, {} load clients, nodes {}, raft settings: {}",
        args.trials,
        args.load_clients,
        urls.join(" "),
        if raft.is_empty() {
            "defaults"
        } else {
            raft.trim()
        }
        .replace('\n', ", ")
    );
    // Steady load through every node; failures during the failover are retried.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..args.load_clients {
        let (http, urls, stop) = (http.clone(), urls.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let base = urls[worker % urls.len()].clone();
            let request = format!("failover-load-{}-{worker}", uuid::Uuid::new_v4().simple());
            let Ok(mut chat) = start_chat(&http, &base, PARLEY_QUEUE, &request).await else {
                return;
            };
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                // A chat holds at most 10,000 events: move on to a new one now and then.
                if n.is_multiple_of(4_000) {
                    if let Ok(next) =
                        start_chat(&http, &base, PARLEY_QUEUE, &format!("{request}-{n}")).await
                    {
                        chat = next;
                    }
                }
                let base = &urls[(worker + n as usize) % urls.len()];
                let id = format!("m{n}");
                if post(&http, base, &chat, &id, Duration::from_secs(2))
                    .await
                    .is_err()
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    let mut results = Vec::new();
    for trial in 1..=args.trials {
        let leader = leader(&http, &urls).await?;
        let leader_index = usize::try_from(leader - 1).context("node id")?;
        let survivor = &urls[(leader_index + 1) % urls.len()];
        let doomed = &urls[leader_index];
        let chat = start_chat(
            &http,
            survivor,
            PARLEY_QUEUE,
            &format!("failover-probe-{}-{trial}", uuid::Uuid::new_v4().simple()),
        )
        .await?;
        let seq = post(&http, survivor, &chat, "before", Duration::from_secs(5)).await?;
        // The customer follows the chat on the node about to die, caught up to `seq`.
        let mut ws = open_chat_stream(doomed, &chat, 0).await?;
        next_event(&mut ws, seq - 1, Duration::from_secs(5)).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;

        let killed = Instant::now();
        match args.stop {
            Stop::Kill9 => cluster.processes.kill9(leader_index),
            Stop::Sigterm => cluster.processes.sigterm(leader_index)?,
        }
        // The customer notices the close and reconnects elsewhere; meanwhile the probe posts.
        let resume = {
            let chat = chat.clone();
            let survivor = survivor.clone();
            tokio::spawn(async move {
                // Drain the dead connection until it reports the close.
                while let Some(Ok(_)) = ws.next().await {}
                let mut stream = loop {
                    match open_chat_stream(&survivor, &chat, seq).await {
                        Ok(stream) => break stream,
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                };
                let reconnected = killed.elapsed();
                next_event(&mut stream, seq, Duration::from_secs(30)).await?;
                anyhow::Ok((reconnected, killed.elapsed()))
            })
        };
        let mut n = 0;
        let write = loop {
            n += 1;
            if post(
                &http,
                survivor,
                &chat,
                &format!("after-{n}"),
                Duration::from_secs(1),
            )
            .await
            .is_ok()
            {
                break killed.elapsed();
            }
            if killed.elapsed() > Duration::from_secs(30) {
                bail!(
                    "trial {trial}: no write committed within 30 s of the {}",
                    args.stop.verb()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let (reconnected, resumed) = resume.await.context("the resuming customer panicked")??;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let figures = Trial {
            trial,
            stop: args.stop,
            killed: leader,
            write_ms: ms(write),
            reconnect_ms: ms(reconnected),
            resume_ms: ms(resumed),
        };
        println!(
            "  trial {trial:>3}: {} node {leader}, next write after {:>6.0} ms, stream \
             reopened after {:>5.0} ms, first new message after {:>6.0} ms",
            args.stop.verb(),
            figures.write_ms,
            figures.reconnect_ms,
            figures.resume_ms
        );
        results.push(figures);
        if args.stop == Stop::Sigterm {
            let deadline = Instant::now() + GRACEFUL_EXIT_MAX;
            while !cluster.processes.exited(leader_index) {
                if Instant::now() > deadline {
                    println!(
                        "  trial {trial:>3}: node {leader} did not exit within \
                         {GRACEFUL_EXIT_MAX:?} of SIGTERM; killed"
                    );
                    cluster.processes.kill9(leader_index);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        cluster.processes.restart(leader_index)?;
        wait_ready(&http, &[format!("{doomed}/readyz")], None, "parley").await?;
        caught_up(&http, &urls).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let _ = task.await;
    }
    Ok(results)
}

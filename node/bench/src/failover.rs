//! Leader failover, measured: a three-node Parley cluster under steady load; in each trial the
//! leader is stopped, with SIGKILL (`--stop kill9`, a crash), SIGTERM (`--stop sigterm`, a
//! graceful restart: the leader hands leadership over, then closes its streams) or by losing its
//! host (`--stop host-loss`: every node runs in a network namespace of its own, and the leader's
//! is cut off by dropping every packet in and out of it, so no reset and no FIN reaches anyone,
//! as when a machine or its link dies; see [`parley_netns`]), and the harness measures
//!
//! - **write**: from the stop to the first chat message committed through a surviving node
//!   (a probe posting every 10 ms, each post with a 1 s deadline), and the **stall**: the
//!   longest time without a committed probe write from the stop on (after a SIGTERM the
//!   draining leader still serves for `drain_wait`, and the stall comes at its hand-over), and
//! - **resume**: a customer following the probe chat on the stopped node's WebSocket, exactly as
//!   the product's pages follow a stream ([`customer`]: pings every 250 ms, gives up on a stream
//!   silent for 1.5 s or closed, reconnects to the next node with `after=<last seq>`); from the
//!   stop to the customer leaving the lost node, to its stream being open on another node, and
//!   to the first message posted after the stop arriving on it.
//!
//! The stopped node is restarted (or its link restored) and caught up before the next trial.
//! The clients (load, probe, customer) stay in the harness's own namespace.

mod customer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use parley_netns::{Lab, Space};
use serde::Serialize;
use serde_json::Value;

use self::customer::{Customer, PageTimers, Seen};
use super::peers::{
    loopback_places, post_message, start_chat, start_parley_placed, wait_ready, Chat, ClusterArgs,
    NodePlace, Setup, PARLEY_QUEUE,
};

/// How the leader is stopped in each trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stop {
    /// SIGKILL: the process dies at once, as in a crash.
    Kill9,
    /// SIGTERM: the node hands leadership over and shuts down gracefully.
    Sigterm,
    /// The node's host lost: its network namespace cut off, every packet in and out dropped
    /// (no reset, no FIN), its process still running; the link is restored after the trial.
    /// Needs root, `ip` and `iptables`.
    #[serde(rename = "host-loss")]
    HostLoss,
}

impl Stop {
    fn verb(self) -> &'static str {
        match self {
            Stop::Kill9 => "kill",
            Stop::Sigterm => "SIGTERM",
            Stop::HostLoss => "cut",
        }
    }
}

/// Longest a node given SIGTERM may take to exit before it is killed.
const GRACEFUL_EXIT_MAX: Duration = Duration::from_secs(30);

/// Longest the customer may take, from the stop, to receive a new message on another node.
const RESUME_WITHIN: Duration = Duration::from_secs(60);

/// Longest the customer may take to follow the probe chat on the leader before the stop.
const FOLLOW_WITHIN: Duration = Duration::from_secs(5);

/// The nodes' listen ports inside their namespaces (each namespace has ports of its own).
const NETNS_HTTP_PORT: u16 = 8080;
const NETNS_GRPC_PORT: u16 = 7100;

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
    /// The nodes' election timeout range, `MIN,MAX` (default: the product default, 300ms,400ms).
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

/// The probe's committed writes after a stop.
struct Probe {
    /// Stop to the first committed write.
    first: Option<Duration>,
    /// The last commit (the stop before the first).
    last: Instant,
    /// The longest time between two commits, the stop counting as one.
    longest: Duration,
    stopped: Instant,
}

impl Probe {
    fn new(stopped: Instant) -> Self {
        Self {
            first: None,
            last: stopped,
            longest: Duration::ZERO,
            stopped,
        }
    }

    /// A probe write committed (its answer arrived) at `at`.
    fn committed(&mut self, at: Instant) {
        self.first
            .get_or_insert_with(|| at.saturating_duration_since(self.stopped));
        self.longest = self.longest.max(at.saturating_duration_since(self.last));
        self.last = at;
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
    /// Stop to the first committed write through a survivor, ms.
    pub write_ms: f64,
    /// The longest time without a committed probe write, from the stop until the customer
    /// resumed (after a SIGTERM: until a write committed after the node exited), ms: the write
    /// stall. After a kill or a host loss it is usually the time to the first write.
    #[serde(default)]
    pub stall_ms: f64,
    /// Stop to the customer leaving the stopped node (its stream closed, or silent too long), ms.
    pub detect_ms: f64,
    /// Stop to the customer's stream open again on a survivor, ms.
    pub reconnect_ms: f64,
    /// Stop to the first message posted after the stop arriving on the new stream, ms.
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
    if args.stop == Stop::HostLoss {
        parley_netns::preflight().context(
            "--stop host-loss cannot run here (run it as root with iproute2 and iptables, or use \
             --stop kill9)",
        )?;
    }
    let setup = Setup::new(&args.cluster, "parley-failover-")?;
    setup.require_parley()?;
    let trials = setup.runtime.block_on(async {
        tokio::select! {
            trials = trials(&args, &setup.parley, &setup.dir, &raft) => trials,
            // Dropping the trials removes the cluster and its network on the way out.
            signal = interrupted() => bail!("stopped by {signal}"),
        }
    })?;
    let writes: Vec<f64> = trials.iter().map(|t| t.write_ms).collect();
    let stalls: Vec<f64> = trials.iter().map(|t| t.stall_ms).collect();
    let detections: Vec<f64> = trials.iter().map(|t| t.detect_ms).collect();
    let reconnects: Vec<f64> = trials.iter().map(|t| t.reconnect_ms).collect();
    let resumes: Vec<f64> = trials.iter().map(|t| t.resume_ms).collect();
    let mut table =
        String::from("| measure | median ms | p90 ms | max ms |\n|---|---:|---:|---:|\n");
    let verb = args.stop.verb();
    for (name, values) in [
        (format!("{verb} → next committed write"), &writes),
        (
            format!("{verb}: longest time without a committed write"),
            &stalls,
        ),
        (
            format!("{verb} → customer drops its stream on that node"),
            &detections,
        ),
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

/// Resolves on SIGINT or SIGTERM, naming it, so that a run stopped by hand still drops (and so
/// removes) its cluster and its network; never, where signals cannot be listened for.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!(
            "cannot listen for SIGINT and SIGTERM; an interrupted run cleans nothing up"
        );
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// Where the three nodes run: on loopback, or each in its own network namespace of `net`.
fn places(net: Option<&Lab>) -> anyhow::Result<Vec<NodePlace>> {
    let Some(net) = net else {
        return loopback_places(3);
    };
    Ok((1..=3)
        .map(|id| NodePlace {
            http: format!("{}:{NETNS_HTTP_PORT}", net.addr(id)),
            grpc: format!("{}:{NETNS_GRPC_PORT}", net.addr(id)),
            wrapper: net.wrapper(id),
        })
        .collect())
}

/// Waits until the customer, on node 0 of its list, has received the event `seq`.
async fn follows(customer: &mut Customer, seq: u64, node_id: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + FOLLOW_WITHIN;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match customer
            .next(left)
            .await
            .with_context(|| format!("the customer following the probe chat on node {node_id}"))?
        {
            Seen::Event {
                node: 0, seq: s, ..
            } if s >= seq => return Ok(()),
            Seen::Open { node: 0, .. } | Seen::Event { node: 0, .. } => {}
            other => {
                bail!("the customer could not follow the probe chat on node {node_id}: {other:?}")
            }
        }
    }
}

/// When the customer left the stopped node, had its stream open on another and received a
/// new message there.
struct Resumed {
    left: Instant,
    opened: Instant,
    received: Instant,
}

/// Follows the customer (on node 0 of its list, stopped at `stopped`) until an event after
/// `seq` arrives on another node.
async fn resume(
    mut customer: Customer,
    seq: u64,
    stopped: Instant,
    node_id: u64,
) -> anyhow::Result<Resumed> {
    let deadline = stopped + RESUME_WITHIN;
    let (mut left, mut opened) = (None, None);
    loop {
        let within = deadline.saturating_duration_since(Instant::now());
        let seen = customer.next(within).await.with_context(|| {
            format!("the customer of node {node_id} did not resume within {RESUME_WITHIN:?}")
        })?;
        match seen {
            Seen::Closed { node: 0, at } | Seen::Silent { node: 0, at } => {
                if at < stopped {
                    bail!("the customer's stream on node {node_id} failed before the stop");
                }
                left.get_or_insert(at);
            }
            Seen::Open { node, at } if node != 0 => opened = Some(at),
            Seen::Event { node, seq: s, at } if node != 0 && s > seq => {
                return Ok(Resumed {
                    left: left.context("the customer moved without leaving the stopped node")?,
                    opened: opened.context("an event on a stream that never opened")?,
                    received: at,
                });
            }
            _ => {}
        }
    }
}

async fn trials(
    args: &FailoverArgs,
    parley: &std::path::Path,
    dir: &std::path::Path,
    raft: &str,
) -> anyhow::Result<Vec<Trial>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    // Made before the cluster, so dropped after it: the nodes stop, then their network goes.
    let mut net = match args.stop {
        Stop::HostLoss => Some(tokio::task::block_in_place(|| {
            Lab::create(Space::BENCH, 3).context("building the nodes' network namespaces")
        })?),
        Stop::Kill9 | Stop::Sigterm => None,
    };
    let places = places(net.as_ref())?;
    let mut cluster = start_parley_placed(parley, dir, &http, raft, &places).await?;
    let urls = cluster.urls.clone();
    println!(
        "parley-bench failover: {} trials ({}), {} load clients, nodes {}{}, raft settings: {}",
        args.trials,
        args.stop.verb(),
        args.load_clients,
        urls.join(" "),
        match &net {
            Some(net) => format!(
                " in network namespaces of their own, clients at {}",
                net.runner_addr()
            ),
            None => String::new(),
        },
        // The table always has its header; with nothing under it, the product defaults.
        match raft.trim() {
            "" | "[raft]" => "defaults",
            table => table,
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
    let timers = PageTimers::of_pages()?;
    let mut results = Vec::new();
    for trial in 1..=args.trials {
        let leader = leader(&http, &urls).await?;
        let leader_index = usize::try_from(leader - 1).context("node id")?;
        // The customer's page lists the nodes from the one about to be stopped; the next in its
        // list is the survivor the probe writes through.
        let page_nodes: Vec<String> = (0..urls.len())
            .map(|k| urls[(leader_index + k) % urls.len()].clone())
            .collect();
        let (doomed, survivor) = (&page_nodes[0], &page_nodes[1]);
        let chat = start_chat(
            &http,
            survivor,
            PARLEY_QUEUE,
            &format!("failover-probe-{}-{trial}", uuid::Uuid::new_v4().simple()),
        )
        .await?;
        let seq = post(&http, survivor, &chat, "before", Duration::from_secs(5)).await?;
        // The customer follows the chat on the node about to stop, caught up to `seq`.
        let mut customer = Customer::follow(timers, page_nodes.clone(), chat.clone(), 0);
        follows(&mut customer, seq, leader).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;

        let stopped = Instant::now();
        match args.stop {
            Stop::Kill9 => cluster.processes.kill9(leader_index),
            Stop::Sigterm => cluster.processes.sigterm(leader_index)?,
            Stop::HostLoss => {
                let net = net.as_mut().context("host loss without a host network")?;
                tokio::task::block_in_place(|| net.cut(leader))
                    .with_context(|| format!("cutting node {leader} off"))?;
            }
        }
        let cut_took = stopped.elapsed();
        // The customer notices as its page would and reconnects elsewhere; meanwhile the probe
        // posts every 10 ms until the customer has resumed and, after a SIGTERM, the stopped node
        // has exited and a write committed after that (a draining leader still serves for
        // `drain_wait`; the stall comes when it hands over).
        let mut resuming = tokio::spawn(resume(customer, seq, stopped, leader));
        let mut probe = Probe::new(stopped);
        let mut exited_at = None;
        let mut attempt = 0u64;
        let resumed = loop {
            attempt += 1;
            let posted = post(
                &http,
                survivor,
                &chat,
                &format!("after-{attempt}"),
                Duration::from_secs(1),
            )
            .await;
            if posted.is_ok() {
                probe.committed(Instant::now());
            }
            if args.stop == Stop::Sigterm
                && exited_at.is_none()
                && cluster.processes.exited(leader_index)
            {
                exited_at = Some(Instant::now());
            }
            let writes_done = match args.stop {
                Stop::Kill9 | Stop::HostLoss => probe.first.is_some(),
                Stop::Sigterm => exited_at.is_some_and(|exit| probe.last > exit),
            };
            if writes_done && resuming.is_finished() {
                break (&mut resuming)
                    .await
                    .context("the resuming customer panicked")?
                    .with_context(|| format!("trial {trial}"))?;
            }
            if probe.first.is_none() && stopped.elapsed() > Duration::from_secs(30) {
                bail!(
                    "trial {trial}: no write committed within 30 s of the {}",
                    args.stop.verb()
                );
            }
            if stopped.elapsed() > RESUME_WITHIN + Duration::from_secs(5) {
                resuming.abort();
                bail!(
                    "trial {trial}: {} {RESUME_WITHIN:?} after the {}",
                    if writes_done {
                        "the customer had not resumed"
                    } else {
                        "the stopped node had not exited, or no write committed after it did,"
                    },
                    args.stop.verb()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let write = probe
            .first
            .context("the probe stopped before a write committed")?;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let since = |at: Instant| ms(at.saturating_duration_since(stopped));
        let figures = Trial {
            trial,
            stop: args.stop,
            killed: leader,
            write_ms: ms(write),
            stall_ms: ms(probe.longest),
            detect_ms: since(resumed.left),
            reconnect_ms: since(resumed.opened),
            resume_ms: since(resumed.received),
        };
        println!(
            "  trial {trial:>3}: {} node {leader} ({:.0} ms), next write after {:>6.0} ms, \
             longest without a write {:>6.0} ms, customer left it after {:>5.0} ms, stream reopened after {:>5.0} ms, first new \
             message after {:>6.0} ms",
            args.stop.verb(),
            ms(cut_took),
            figures.write_ms,
            figures.stall_ms,
            figures.detect_ms,
            figures.reconnect_ms,
            figures.resume_ms
        );
        results.push(figures);
        match args.stop {
            Stop::Kill9 => cluster.processes.restart(leader_index)?,
            Stop::Sigterm => {
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
                cluster.processes.restart(leader_index)?;
            }
            Stop::HostLoss => {
                let net = net.as_mut().context("host loss without a host network")?;
                tokio::task::block_in_place(|| net.restore(leader))
                    .with_context(|| format!("restoring node {leader}'s link"))?;
            }
        }
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

//! The live fault runner: real `parley serve` processes, customers posting through the HTTP
//! API with retries, and real faults: kill -9 and restart, SIGSTOP/SIGCONT (a frozen node, as a
//! long GC pause or a stuck VM would be), SIGTERM and restart, and network partitions (a random
//! minority, or the current leader, cut off from the rest). Afterwards every node must hold
//! every acknowledged message exactly once, in order, pass its own `State::validate`
//! (`GET /api/v1/admin/validate`), and all nodes show the same digest at the same index.
//!
//! Nodes run in network namespaces of their own ([`parley_netns`]) when the runner may create
//! them (root); otherwise on loopback, where partitions cannot be made and are skipped (the
//! report says so).

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley_netns::{Lab, NetnsError, Space};
use parley_raft::state::ChatEvent;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::oracle::{check_all, Observation, Oracle, Violation};
use crate::target::{Capability, Target, TargetError};

/// Where the nodes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Network {
    /// Namespaces when they can be made here, loopback otherwise.
    #[default]
    Auto,
    /// Every node on 127.0.0.1 (no partitions).
    Loopback,
    /// Every node in a network namespace of its own (needs root); partitions included.
    Netns,
}

/// The cluster under test.
#[derive(Clone, Debug)]
pub enum ClusterSpec {
    /// Start `nodes` processes of the `parley` binary here, on `network`.
    Local {
        /// The `parley` binary.
        parley: PathBuf,
        /// Cluster size.
        nodes: u64,
        /// Where the nodes run.
        network: Network,
    },
    /// An existing cluster and the commands that inject its faults.
    Target(Box<Target>),
}

/// What to run.
#[derive(Clone, Debug)]
pub struct LiveSpec {
    /// The cluster.
    pub cluster: ClusterSpec,
    /// How long faults are injected while customers post.
    pub duration: Duration,
    /// Concurrent customers, one chat each.
    pub customers: usize,
    /// Seed of the fault and node choices.
    pub seed: u64,
}

/// What a live run did.
#[derive(Clone, Debug, Default)]
pub struct LiveReport {
    /// Faults injected, in order.
    pub faults: Vec<String>,
    /// Acknowledged writes checked on every node.
    pub writes_checked: usize,
    /// Broken guarantees; empty on success.
    pub violations: Vec<Violation>,
    /// Where the nodes ran (network namespaces, loopback, or the target's nodes).
    pub network: String,
    /// Why partitions were not injected, when they were not.
    pub partitions_skipped: Option<String>,
    /// Fault kinds that could not be injected, and why.
    pub faults_skipped: Option<String>,
    /// Nodes whose `validate` result was checked (every node, unless skipped).
    pub nodes_validated: usize,
    /// Why the nodes' `validate` was not checked, when it was not.
    pub validate_skipped: Option<String>,
}

/// The runner could not run (not a guarantee broken: the environment failed).
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// Starting or signalling a process, or a file, failed.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The cluster never became ready.
    #[error("{0}")]
    NotReady(String),
    /// The private network could not be made or changed.
    #[error("network namespaces: {0}")]
    Network(#[from] NetnsError),
    /// The target file or one of its commands failed.
    #[error(transparent)]
    Target(#[from] TargetError),
}

const SECRET: &str = "live-chaos-cluster-secret-0123456789abcdef";

/// The admin credential of the clusters the runner starts (and of the CI target-file test).
pub const ADMIN_TOKEN: &str = "live-chaos-admin-token-0123456789abcdef";

struct Node {
    http: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    stopped: bool,
}

/// A cluster of `parley serve` processes started here.
struct Local {
    parley: PathBuf,
    nodes: Vec<Node>,
    /// The nodes' namespaces; `None` on loopback. Dropped after the processes are killed.
    net: Option<Lab>,
    _dir: tempfile::TempDir,
}

/// HTTP and gRPC listen addresses of `n` nodes on loopback, chosen while holding every
/// listener so no port is handed out twice.
pub fn loopback_addrs(n: u64) -> Result<Vec<(String, String)>, LiveError> {
    let mut listeners = Vec::new();
    for _ in 0..2 * n {
        listeners.push(
            TcpListener::bind("127.0.0.1:0")
                .map_err(|e| LiveError::Io("binding an ephemeral port".to_owned(), e))?,
        );
    }
    let mut ports = Vec::new();
    for listener in &listeners {
        ports.push(
            listener
                .local_addr()
                .map_err(|e| LiveError::Io("reading an ephemeral port".to_owned(), e))?
                .port(),
        );
    }
    Ok(ports
        .chunks(2)
        .map(|pair| {
            (
                format!("127.0.0.1:{}", pair[0]),
                format!("127.0.0.1:{}", pair[1]),
            )
        })
        .collect())
}

/// The config of node `id` of a live cluster whose nodes listen on `addrs` (HTTP, gRPC), with
/// the queue `sales` customers use and mutual TLS between nodes with the certificates in
/// `certs` (see [`make_certs`]).
pub fn node_config(id: u64, data: &Path, certs: &Path, addrs: &[(String, String)]) -> String {
    let (http, grpc) = &addrs[(id - 1) as usize];
    let mut text = format!(
        r#"node_id = {id}
site = "live"
data_dir = "{data}"
http_listen = "{http}"
grpc_listen = "{grpc}"
cluster_secret = "{SECRET}"
admin_token = "{ADMIN_TOKEN}"

# Every customer of the run comes from the runner's one address, retrying through faults.
[rate_limits]
chat_starts_per_address_per_minute = 100000
logins_per_address_per_minute = 100000
logins_per_agent_per_minute = 100000

[timeouts]
write = "3s"
shutdown_grace = "2s"
# A short drain, so a SIGTERM fault exercises it and the stop still fits its 10 s.
drain_wait = "1s"

{tls}
[[queues]]
id = "sales"
name = "Sales"
"#,
        data = data.display(),
        tls = parley_node::certs::tls_section(certs, id),
    );
    for (index, (http, grpc)) in addrs.iter().enumerate() {
        text.push_str(&format!(
            "\n[[peers]]\nid = {}\nsite = \"live\"\ngrpc = \"{grpc}\"\nhttp = \"{http}\"\n",
            index + 1
        ));
    }
    text
}

/// Makes a cluster CA and the certificates of nodes 1 to `n` in `certs`.
pub fn make_certs(certs: &Path, n: u64) -> Result<(), LiveError> {
    parley_node::certs::issue(&parley_node::certs::CertsRequest {
        force: true,
        ..parley_node::certs::CertsRequest::new(certs, 1..=n)
    })
    .map(|_| ())
    .map_err(|e| {
        LiveError::Io(
            format!("making certificates in {}", certs.display()),
            std::io::Error::other(e),
        )
    })
}

impl Local {
    fn create(parley: &Path, n: u64, net: Option<Lab>) -> Result<Self, LiveError> {
        let dir =
            tempfile::tempdir().map_err(|e| LiveError::Io("temporary directory".into(), e))?;
        let certs = dir.path().join("certs");
        make_certs(&certs, n)?;
        let addrs = match &net {
            // Every node has an address of its own: the same ports everywhere.
            Some(net) => (1..=n)
                .map(|id| {
                    (
                        format!("{}:8080", net.addr(id)),
                        format!("{}:7100", net.addr(id)),
                    )
                })
                .collect(),
            None => loopback_addrs(n)?,
        };
        let mut nodes = Vec::new();
        for id in 1..=n {
            let config = dir.path().join(format!("node{id}.toml"));
            let data = dir.path().join(format!("data{id}"));
            fs::write(&config, node_config(id, &data, &certs, &addrs))
                .map_err(|e| LiveError::Io(format!("writing {}", config.display()), e))?;
            nodes.push(Node {
                http: format!("http://{}", addrs[(id - 1) as usize].0),
                config,
                log: dir.path().join(format!("node{id}.log")),
                child: None,
                stopped: false,
            });
        }
        Ok(Self {
            parley: parley.to_path_buf(),
            nodes,
            net,
            _dir: dir,
        })
    }

    fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    fn spawn(&mut self, id: u64) -> Result<(), LiveError> {
        let parley = self.parley.clone();
        let mut command = match &self.net {
            Some(net) => net.command(id, &parley),
            None => Command::new(&parley),
        };
        let node = self.node(id);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|e| LiveError::Io(format!("opening {}", node.log.display()), e))?;
        let err = log
            .try_clone()
            .map_err(|e| LiveError::Io("cloning a log handle".into(), e))?;
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&node.config)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| LiveError::Io(format!("starting {}", parley.display()), e))?;
        node.child = Some(child);
        node.stopped = false;
        Ok(())
    }

    fn signal(&mut self, id: u64, signal: &str) -> Result<(), LiveError> {
        let Some(pid) = self.node(id).child.as_ref().map(Child::id) else {
            return Ok(());
        };
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .map_err(|e| LiveError::Io(format!("kill -{signal} {pid}"), e))?;
        Ok(())
    }

    fn kill9(&mut self, id: u64) {
        if let Some(mut child) = self.node(id).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every node running and not stopped.
    fn revive_all(&mut self) -> Result<(), LiveError> {
        if let Some(net) = &mut self.net {
            net.heal()?;
        }
        for id in 1..=self.nodes.len() as u64 {
            if self.node(id).stopped {
                self.signal(id, "CONT")?;
                self.node(id).stopped = false;
            }
            if self.node(id).child.is_none() {
                self.spawn(id)?;
            }
        }
        Ok(())
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        for id in 1..=self.nodes.len() as u64 {
            if self.node(id).stopped {
                let _ = self.signal(id, "CONT");
            }
            self.kill9(id);
        }
    }
}

/// The cluster under test and how its faults are injected.
enum Control {
    /// Processes started here: signals, and namespaces' packet filters.
    Local(Box<Local>),
    /// An existing cluster: its fault commands.
    Target(Box<Target>),
}

impl Control {
    fn urls(&self) -> Vec<String> {
        match self {
            Control::Local(local) => local.nodes.iter().map(|n| n.http.clone()).collect(),
            Control::Target(target) => target.nodes.iter().map(|n| n.url.clone()).collect(),
        }
    }

    fn ids(&self) -> Vec<u64> {
        match self {
            Control::Local(local) => (1..=local.nodes.len() as u64).collect(),
            Control::Target(target) => target.ids(),
        }
    }

    fn capabilities(&self) -> Vec<Capability> {
        match self {
            Control::Local(local) => {
                let mut caps = vec![Capability::Kill, Capability::Pause, Capability::Restart];
                if local.net.is_some() {
                    caps.push(Capability::Partition);
                }
                caps
            }
            Control::Target(target) => target.capabilities(),
        }
    }

    /// The admin credential, if known.
    fn admin_token(&self) -> Option<String> {
        match self {
            Control::Local(_) => Some(ADMIN_TOKEN.to_owned()),
            Control::Target(target) => target.admin_token.clone(),
        }
    }

    fn queue(&self) -> String {
        match self {
            Control::Local(_) => "sales".to_owned(),
            Control::Target(target) => target.queue.clone(),
        }
    }

    async fn kill(&mut self, id: u64) -> Result<(), LiveError> {
        match self {
            Control::Local(local) => local.kill9(id),
            Control::Target(t) => t.run(t.faults.kill.as_ref(), Some(id), None).await?,
        }
        Ok(())
    }

    async fn start(&mut self, id: u64) -> Result<(), LiveError> {
        match self {
            Control::Local(local) => local.spawn(id),
            Control::Target(t) => Ok(t.run(t.faults.start.as_ref(), Some(id), None).await?),
        }
    }

    async fn pause(&mut self, id: u64) -> Result<(), LiveError> {
        match self {
            Control::Local(local) => {
                local.signal(id, "STOP")?;
                local.node(id).stopped = true;
                Ok(())
            }
            Control::Target(t) => Ok(t.run(t.faults.pause.as_ref(), Some(id), None).await?),
        }
    }

    async fn resume(&mut self, id: u64) -> Result<(), LiveError> {
        match self {
            Control::Local(local) => {
                local.signal(id, "CONT")?;
                local.node(id).stopped = false;
                Ok(())
            }
            Control::Target(t) => Ok(t.run(t.faults.resume.as_ref(), Some(id), None).await?),
        }
    }

    /// A graceful stop (SIGTERM) and a start.
    async fn restart(&mut self, id: u64) -> Result<(), LiveError> {
        match self {
            Control::Local(local) => {
                local.signal(id, "TERM")?;
                if let Some(mut child) = local.node(id).child.take() {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                }
                local.spawn(id)
            }
            Control::Target(t) => Ok(t.run(t.faults.restart.as_ref(), Some(id), None).await?),
        }
    }

    async fn partition(&mut self, minority: &[u64], majority: &[u64]) -> Result<(), LiveError> {
        match self {
            Control::Local(local) => {
                if let Some(net) = &mut local.net {
                    net.partition(&[minority.to_vec(), majority.to_vec()])?;
                }
                Ok(())
            }
            Control::Target(t) => Ok(t
                .run(
                    t.faults.partition.as_ref(),
                    None,
                    Some((minority, majority)),
                )
                .await?),
        }
    }

    async fn heal(&mut self) -> Result<(), LiveError> {
        match self {
            Control::Local(local) => {
                if let Some(net) = &mut local.net {
                    net.heal()?;
                }
                Ok(())
            }
            Control::Target(t) => Ok(t.run(t.faults.heal.as_ref(), None, None).await?),
        }
    }

    /// Every partition healed and (for processes started here) every node running.
    async fn revive_all(&mut self) -> Result<(), LiveError> {
        match self {
            Control::Local(local) => local.revive_all(),
            Control::Target(t) => Ok(t.run(t.faults.heal.as_ref(), None, None).await?),
        }
    }
}

async fn wait_ready(
    client: &reqwest::Client,
    urls: &[String],
    within: Duration,
) -> Result<(), LiveError> {
    let deadline = Instant::now() + within;
    for url in urls {
        loop {
            let ready = client
                .get(format!("{url}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            if Instant::now() > deadline {
                return Err(LiveError::NotReady(format!(
                    "{url} not ready within {within:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

struct Shared {
    oracle: Mutex<Oracle>,
    tokens: Mutex<BTreeMap<String, String>>,
}

/// One customer: starts a chat and posts until `until`, through random nodes, retrying each
/// write with the same ids until it is acknowledged.
async fn customer(
    client: reqwest::Client,
    nodes: Vec<(u64, String)>,
    queue: String,
    index: usize,
    seed: u64,
    until: Instant,
    shared: Arc<Shared>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (chat_id, token) = loop {
        let (_, url) = &nodes[rng.random_range(0..nodes.len())];
        let started = client
            .post(format!("{url}/api/v1/chats"))
            .json(
                &json!({"request_id": format!("live-{seed}-{index}"), "queue_id": queue,
                "customer": {"name": "Live", "email": format!("live-{index}@example.com")}}),
            )
            .send()
            .await;
        if let Ok(response) = started {
            if let Ok(body) = response.json::<Value>().await {
                if let (Some(chat), Some(token)) =
                    (body["chat_id"].as_str(), body["token"].as_str())
                {
                    break (chat.to_owned(), token.to_owned());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if let Ok(mut tokens) = shared.tokens.lock() {
        tokens.insert(chat_id.clone(), token.clone());
    }
    if let Ok(mut oracle) = shared.oracle.lock() {
        oracle.chat_started(&chat_id);
    }
    let mut n = 0;
    while Instant::now() < until {
        let id = format!("m{n}");
        loop {
            let (node, url) = &nodes[rng.random_range(0..nodes.len())];
            let posted = client
                .post(format!("{url}/api/v1/chats/{chat_id}/messages"))
                .bearer_auth(&token)
                .json(&json!({"client_msg_id": id, "text": format!("live message {n}")}))
                .send()
                .await;
            let answer = match posted {
                Ok(response) if response.status().is_success() => {
                    response.json::<Value>().await.ok().and_then(|b| {
                        // An island answer names the island node whose journal took it.
                        let island = (b["island"].as_bool() == Some(true))
                            .then(|| b["island_node"].as_u64().unwrap_or(*node));
                        b["seq"].as_u64().map(|seq| (seq, island))
                    })
                }
                _ => None,
            };
            if let Some((seq, island)) = answer {
                if let Ok(mut oracle) = shared.oracle.lock() {
                    if let Some(island_node) = island {
                        oracle.acked_on_island(&chat_id, &id, island_node, seq);
                    } else {
                        oracle.acked(&chat_id, &id, seq);
                    }
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
    }
}

/// The network `network` asks for: namespaces, or loopback and why partitions are skipped.
fn make_network(network: Network, nodes: u64) -> Result<(Option<Lab>, Option<String>), LiveError> {
    match network {
        Network::Loopback => Ok((None, Some("--network loopback".to_owned()))),
        Network::Netns => Ok((Some(Lab::create(Space::CHAOS, nodes)?), None)),
        Network::Auto => match parley_netns::probe(Space::CHAOS) {
            Ok(()) => Ok((Some(Lab::create(Space::CHAOS, nodes)?), None)),
            Err(why) => Ok((
                None,
                Some(format!(
                    "network namespaces unavailable (needs root, iproute2, iptables): {why}"
                )),
            )),
        },
    }
}

/// The leader as the first answering node sees it.
async fn leader(client: &reqwest::Client, urls: &[String]) -> Option<u64> {
    for url in urls {
        let view = client.get(format!("{url}/api/v1/cluster")).send().await;
        if let Ok(view) = view {
            if let Ok(view) = view.json::<Value>().await {
                if let Some(leader) = view["leader"].as_u64() {
                    return Some(leader);
                }
            }
        }
    }
    None
}

/// The fault draws for `kinds`: one per kind, and partitions twice (the leader alone, a random
/// minority). Draw `d < kinds.len()` is `kinds[d]`; the extra one is the minority partition.
fn draws(kinds: &[Capability]) -> usize {
    kinds.len() + usize::from(kinds.contains(&Capability::Partition))
}

/// Injects fault `draw` (see [`draws`]) on a node chosen by `rng`, holds it, and undoes it.
async fn inject(
    control: &mut Control,
    kinds: &[Capability],
    draw: usize,
    client: &reqwest::Client,
    urls: &[String],
    rng: &mut StdRng,
) -> Result<String, LiveError> {
    let ids = control.ids();
    let victim = ids[rng.random_range(0..ids.len())];
    let hold = Duration::from_millis(rng.random_range(500..2_500));
    let kind = kinds.get(draw).copied().unwrap_or(Capability::Partition);
    let fault = match kind {
        Capability::Kill => {
            control.kill(victim).await?;
            tokio::time::sleep(hold).await;
            control.start(victim).await?;
            format!("kill -9 node {victim}, restart after {hold:?}")
        }
        Capability::Pause => {
            control.pause(victim).await?;
            tokio::time::sleep(hold).await;
            control.resume(victim).await?;
            format!("SIGSTOP node {victim} for {hold:?}")
        }
        Capability::Restart => {
            control.restart(victim).await?;
            format!("SIGTERM node {victim}, restart")
        }
        Capability::Partition => {
            // A partition: the leader alone, or a random minority, cut off from the rest.
            let hold = hold * 2;
            let leader_alone = draw < kinds.len();
            let (minority, what) = match (leader_alone, leader(client, urls).await) {
                (true, Some(leader)) if ids.contains(&leader) => (vec![leader], "the leader"),
                _ => {
                    let mut rest = ids.clone();
                    let size = rng.random_range(1..=(ids.len().saturating_sub(1) / 2).max(1));
                    let mut minority = Vec::new();
                    for _ in 0..size {
                        minority.push(rest.remove(rng.random_range(0..rest.len())));
                    }
                    minority.sort_unstable();
                    (minority, "a minority")
                }
            };
            let majority: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|id| !minority.contains(id))
                .collect();
            control.partition(&minority, &majority).await?;
            tokio::time::sleep(hold).await;
            control.heal().await?;
            format!("partition: {what} {minority:?} cut off from {majority:?} for {hold:?}")
        }
    };
    Ok(fault)
}

/// Sets up the cluster the spec names; the report says where it runs and what is skipped.
fn control(spec: &LiveSpec, report: &mut LiveReport) -> Result<Control, LiveError> {
    match &spec.cluster {
        ClusterSpec::Local {
            parley,
            nodes,
            network,
        } => {
            let (net, partitions_skipped) = make_network(*network, *nodes)?;
            report.network = net.as_ref().map_or_else(
                || "loopback".to_owned(),
                |net| format!("network namespaces, nodes at {}", net.addr(1)),
            );
            report.partitions_skipped = partitions_skipped;
            let mut local = Local::create(parley, *nodes, net)?;
            for id in 1..=*nodes {
                local.spawn(id)?;
            }
            Ok(Control::Local(Box::new(local)))
        }
        ClusterSpec::Target(target) => {
            report.network = format!(
                "the target's nodes {}",
                target
                    .nodes
                    .iter()
                    .map(|n| n.url.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let caps = target.capabilities();
            if !caps.contains(&Capability::Partition) {
                report.partitions_skipped =
                    Some("the target file has no faults.partition command".to_owned());
            }
            let missing: Vec<&str> = [
                (Capability::Kill, "kill/start"),
                (Capability::Pause, "pause/resume"),
                (Capability::Restart, "restart"),
            ]
            .iter()
            .filter(|(cap, _)| !caps.contains(cap))
            .map(|(_, name)| *name)
            .collect();
            if !missing.is_empty() {
                report.faults_skipped = Some(format!(
                    "the target file has no commands for {}",
                    missing.join(", ")
                ));
            }
            Ok(Control::Target(target.clone()))
        }
    }
}

/// Runs the live suite.
pub async fn run_live(spec: &LiveSpec) -> Result<LiveReport, LiveError> {
    let mut report = LiveReport::default();
    let mut control = control(spec, &mut report)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| LiveError::NotReady(e.to_string()))?;
    let urls = control.urls();
    wait_ready(&client, &urls, Duration::from_secs(60)).await?;

    let shared = Arc::new(Shared {
        oracle: Mutex::new(Oracle::default()),
        tokens: Mutex::new(BTreeMap::new()),
    });
    let until = Instant::now() + spec.duration;
    let mut customers = Vec::new();
    for index in 0..spec.customers {
        customers.push(tokio::spawn(customer(
            client.clone(),
            control.ids().into_iter().zip(urls.clone()).collect(),
            control.queue(),
            index,
            spec.seed.wrapping_add(index as u64),
            until,
            shared.clone(),
        )));
    }

    let kinds = control.capabilities();
    let mut rng = StdRng::seed_from_u64(spec.seed);
    // Rounds in which every fault comes once, in a seeded order, so even a short run covers
    // every kind the cluster allows.
    let mut round: Vec<usize> = Vec::new();
    while !kinds.is_empty() && Instant::now() + Duration::from_secs(3) < until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..1_500))).await;
        if round.is_empty() {
            round = (0..draws(&kinds)).collect();
            round.shuffle(&mut rng);
        }
        let Some(draw) = round.pop() else {
            break;
        };
        let fault = inject(&mut control, &kinds, draw, &client, &urls, &mut rng).await?;
        tracing::info!(%fault, "injected");
        report.faults.push(fault);
        // Let the cluster recover before the next fault, so a majority is always back.
        wait_ready(&client, &urls, Duration::from_secs(30)).await?;
    }
    for task in customers {
        let _ = task.await;
    }
    control.revive_all().await?;
    wait_ready(&client, &urls, Duration::from_secs(60)).await?;
    check(
        &client,
        &urls,
        &control.ids(),
        control.admin_token().as_deref(),
        &shared,
        &mut report,
    )
    .await;
    // Leave no open chats behind (an existing cluster goes on serving real customers).
    let tokens = shared.tokens.lock().map(|t| t.clone()).unwrap_or_default();
    for (chat_id, token) in tokens {
        let _ = client
            .post(format!("{}/api/v1/chats/{chat_id}/end", urls[0]))
            .bearer_auth(token)
            .send()
            .await;
    }
    Ok(report)
}

/// What one node showed: applied index, digest, and what `validate` found.
type Seen = (u64, String, Vec<String>);

/// One node's `GET /api/v1/cluster`: applied index and digest.
async fn cluster_view(client: &reqwest::Client, url: &str) -> Result<Seen, String> {
    let view: Value = client
        .get(format!("{url}/api/v1/cluster"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("{url}/api/v1/cluster: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{url}/api/v1/cluster: {e}"))?;
    match (
        view["applied_index"].as_u64(),
        view["state_digest"].as_str(),
    ) {
        (Some(index), Some(digest)) => Ok((index, digest.to_owned(), Vec::new())),
        _ => Err(format!(
            "{url}/api/v1/cluster: no applied index or digest: {view}"
        )),
    }
}

/// One node's `GET /api/v1/admin/validate`: applied index, digest, and what `validate` found.
async fn validate_view(client: &reqwest::Client, url: &str, token: &str) -> Result<Seen, String> {
    let view: Value = client
        .get(format!("{url}/api/v1/admin/validate"))
        .bearer_auth(token)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("{url}/api/v1/admin/validate: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{url}/api/v1/admin/validate: {e}"))?;
    let shape = || format!("{url}/api/v1/admin/validate: unexpected answer {view}");
    let violations = view["violations"]
        .as_array()
        .ok_or_else(shape)?
        .iter()
        .map(|v| v.as_str().unwrap_or("(not a string)").to_owned())
        .collect();
    match (view["applied_index"].as_u64(), view["digest"].as_str()) {
        (Some(index), Some(digest)) => Ok((index, digest.to_owned(), violations)),
        _ => Err(shape()),
    }
}

/// Every acknowledged message of `chats` on the node at `url`, through `GET /events`.
async fn chat_events(
    client: &reqwest::Client,
    url: &str,
    tokens: &BTreeMap<String, String>,
) -> BTreeMap<String, Vec<ChatEvent>> {
    let mut chats = BTreeMap::new();
    for (chat_id, token) in tokens {
        let mut events = Vec::new();
        loop {
            let after = events.len();
            let page = client
                .get(format!(
                    "{url}/api/v1/chats/{chat_id}/events?after={after}&limit=1000"
                ))
                .bearer_auth(token)
                .send()
                .await;
            let batch: Vec<ChatEvent> = match page {
                Ok(response) => match response.json::<Value>().await {
                    Ok(body) => body["events"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(state_event)
                        .collect::<Option<Vec<_>>>()
                        .unwrap_or_default(),
                    Err(_) => Vec::new(),
                },
                Err(_) => Vec::new(),
            };
            if batch.is_empty() {
                break;
            }
            events.extend(batch);
        }
        chats.insert(chat_id.clone(), events);
    }
    chats
}

/// A chat event as the API shows it, in the state's shape: the API names an island event's
/// node `node_id` and leaves out the island's clock (stamped zero here, so the island clock
/// check is not run on what the API shows; see [`check`]).
fn state_event(event: &Value) -> Option<ChatEvent> {
    let mut event = event.clone();
    if let Some(island) = event.get_mut("island") {
        *island = json!({
            "origin": island["node_id"],
            "epoch": island["epoch"],
            "seq": island["seq"],
            "hlc": {"wall_ms": 0, "logical": 0},
        });
    }
    serde_json::from_value(event).ok()
}

/// After the faults: waits until every node shows the same applied index (through `validate`
/// when the admin credential is known, so index, digest and invariants come from one read),
/// then runs the oracle's checks over every node.
async fn check(
    client: &reqwest::Client,
    urls: &[String],
    ids: &[u64],
    admin_token: Option<&str>,
    shared: &Shared,
    report: &mut LiveReport,
) {
    if admin_token.is_none() {
        report.validate_skipped = Some(
            "no admin credential (admin_token in the target file): each node's \
             State::validate was not checked"
                .to_owned(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut observations: Vec<Observation>;
    loop {
        observations = Vec::new();
        let mut errors = Vec::new();
        for (url, id) in urls.iter().zip(ids) {
            let seen = match admin_token {
                Some(token) => validate_view(client, url, token).await,
                None => cluster_view(client, url).await,
            };
            match seen {
                Ok((applied_index, digest, invariant_violations)) => {
                    observations.push(Observation {
                        node: *id,
                        applied_index,
                        digest,
                        invariant_violations,
                        ..Observation::default()
                    })
                }
                Err(error) => errors.push(error),
            }
        }
        let converged = observations.len() == urls.len()
            && observations
                .iter()
                .all(|o| o.applied_index == observations[0].applied_index);
        if converged {
            break;
        }
        if Instant::now() > deadline {
            let applied: Vec<(u64, u64)> = observations
                .iter()
                .map(|o| (o.node, o.applied_index))
                .collect();
            report.violations.push(Violation(format!(
                "replicas did not converge within 30 s (node, applied index): {applied:?} of {} \
                 nodes; {errors:?}",
                urls.len()
            )));
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if admin_token.is_some() {
        report.nodes_validated = observations.len();
    }
    let tokens = shared.tokens.lock().map(|t| t.clone()).unwrap_or_default();
    // Every customer is done: the oracle is final.
    let oracle = match shared.oracle.lock() {
        Ok(mut guard) => std::mem::take(&mut *guard),
        Err(_) => {
            report
                .violations
                .push(Violation("oracle poisoned".to_owned()));
            return;
        }
    };
    report.writes_checked = oracle.acked_count();
    for (observation, url) in observations.iter_mut().zip(urls) {
        observation.chats = chat_events(client, url, &tokens).await;
    }
    // The island clock check (HLC) needs the clock stamps of island events, which the API does
    // not show: only the simulation, which reads the state itself, runs it.
    report.violations.extend(
        check_all(&oracle, &observations)
            .into_iter()
            .filter(|violation| !violation.0.starts_with(ISLAND_CLOCK_CHECK)),
    );
}

/// How the island clock check's violations begin (`oracle::islands::island_clocks`).
const ISLAND_CLOCK_CHECK: &str = "HLC: ";

//! The live fault runner: real `parley serve` processes on loopback, customers posting through
//! the HTTP API with retries, and real faults: kill -9 and restart, SIGSTOP/SIGCONT (a frozen
//! node, as a long GC pause or a stuck VM would be), SIGTERM and restart. Afterwards every node
//! must hold every acknowledged message exactly once, in order, and all nodes the same digest.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley_raft::state::ChatEvent;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::oracle::{Oracle, Violation};

/// What to run.
#[derive(Clone, Debug)]
pub struct LiveSpec {
    /// The `parley` binary.
    pub parley: PathBuf,
    /// Cluster size.
    pub nodes: u64,
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
}

const SECRET: &str = "live-chaos-cluster-secret-0123456789abcdef";

struct Node {
    http: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    stopped: bool,
}

struct Cluster {
    parley: PathBuf,
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

fn config_text(id: u64, data: &Path, addrs: &[(String, String)]) -> String {
    let (http, grpc) = &addrs[(id - 1) as usize];
    let mut text = format!(
        r#"node_id = {id}
site = "live"
data_dir = "{data}"
http_listen = "{http}"
grpc_listen = "{grpc}"
cluster_secret = "{SECRET}"

[timeouts]
write = "3s"
shutdown_grace = "2s"

[[queues]]
id = "sales"
name = "Sales"
"#,
        data = data.display()
    );
    for (index, (http, grpc)) in addrs.iter().enumerate() {
        text.push_str(&format!(
            "\n[[peers]]\nid = {}\nsite = \"live\"\ngrpc = \"{grpc}\"\nhttp = \"{http}\"\n",
            index + 1
        ));
    }
    text
}

impl Cluster {
    fn create(parley: &Path, n: u64) -> Result<Self, LiveError> {
        let dir =
            tempfile::tempdir().map_err(|e| LiveError::Io("temporary directory".into(), e))?;
        // Hold every listener until all ports are chosen, so no port is handed out twice.
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
        drop(listeners);
        let addrs: Vec<(String, String)> = ports
            .chunks(2)
            .map(|pair| {
                (
                    format!("127.0.0.1:{}", pair[0]),
                    format!("127.0.0.1:{}", pair[1]),
                )
            })
            .collect();
        let mut nodes = Vec::new();
        for id in 1..=n {
            let config = dir.path().join(format!("node{id}.toml"));
            let data = dir.path().join(format!("data{id}"));
            fs::write(&config, config_text(id, &data, &addrs))
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
            _dir: dir,
        })
    }

    fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    fn spawn(&mut self, id: u64) -> Result<(), LiveError> {
        let parley = self.parley.clone();
        let node = self.node(id);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|e| LiveError::Io(format!("opening {}", node.log.display()), e))?;
        let err = log
            .try_clone()
            .map_err(|e| LiveError::Io("cloning a log handle".into(), e))?;
        let child = Command::new(&parley)
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

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in 1..=self.nodes.len() as u64 {
            if self.node(id).stopped {
                let _ = self.signal(id, "CONT");
            }
            self.kill9(id);
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
    urls: Vec<String>,
    index: usize,
    seed: u64,
    until: Instant,
    shared: Arc<Shared>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (chat_id, token) = loop {
        let url = &urls[rng.random_range(0..urls.len())];
        let started = client
            .post(format!("{url}/api/v1/chats"))
            .json(
                &json!({"request_id": format!("live-{seed}-{index}"), "queue_id": "sales",
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
            let url = &urls[rng.random_range(0..urls.len())];
            let posted = client
                .post(format!("{url}/api/v1/chats/{chat_id}/messages"))
                .bearer_auth(&token)
                .json(&json!({"client_msg_id": id, "text": format!("live message {n}")}))
                .send()
                .await;
            let seq = match posted {
                Ok(response) if response.status().is_success() => response
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|b| b["seq"].as_u64()),
                _ => None,
            };
            if let Some(seq) = seq {
                if let Ok(mut oracle) = shared.oracle.lock() {
                    oracle.acked(&chat_id, &id, seq);
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
    }
}

/// Runs the live suite.
pub async fn run_live(spec: &LiveSpec) -> Result<LiveReport, LiveError> {
    let mut cluster = Cluster::create(&spec.parley, spec.nodes)?;
    for id in 1..=spec.nodes {
        cluster.spawn(id)?;
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| LiveError::NotReady(e.to_string()))?;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.http.clone()).collect();
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
            urls.clone(),
            index,
            spec.seed.wrapping_add(index as u64),
            until,
            shared.clone(),
        )));
    }

    let mut report = LiveReport::default();
    let mut rng = StdRng::seed_from_u64(spec.seed);
    while Instant::now() + Duration::from_secs(3) < until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..1_500))).await;
        let victim = rng.random_range(1..=spec.nodes);
        let hold = Duration::from_millis(rng.random_range(500..2_500));
        match rng.random_range(0..3) {
            0 => {
                report
                    .faults
                    .push(format!("kill -9 node {victim}, restart after {hold:?}"));
                cluster.kill9(victim);
                tokio::time::sleep(hold).await;
                cluster.spawn(victim)?;
            }
            1 => {
                report
                    .faults
                    .push(format!("SIGSTOP node {victim} for {hold:?}"));
                cluster.signal(victim, "STOP")?;
                cluster.node(victim).stopped = true;
                tokio::time::sleep(hold).await;
                cluster.signal(victim, "CONT")?;
                cluster.node(victim).stopped = false;
            }
            _ => {
                report
                    .faults
                    .push(format!("SIGTERM node {victim}, restart"));
                cluster.signal(victim, "TERM")?;
                if let Some(mut child) = cluster.node(victim).child.take() {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                }
                cluster.spawn(victim)?;
            }
        }
        // Let the cluster recover before the next fault, so a majority is always back.
        wait_ready(&client, &urls, Duration::from_secs(30)).await?;
    }
    for task in customers {
        let _ = task.await;
    }
    cluster.revive_all()?;
    wait_ready(&client, &urls, Duration::from_secs(60)).await?;
    check(&client, &urls, &shared, &mut report).await;
    Ok(report)
}

async fn check(
    client: &reqwest::Client,
    urls: &[String],
    shared: &Shared,
    report: &mut LiveReport,
) {
    // Converge: every node at the same applied index with the same digest.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut views = Vec::new();
        for url in urls {
            if let Ok(response) = client.get(format!("{url}/api/v1/cluster")).send().await {
                if let Ok(view) = response.json::<Value>().await {
                    views.push(view);
                }
            }
        }
        let applied: Vec<Option<u64>> = views.iter().map(|v| v["applied_index"].as_u64()).collect();
        if views.len() == urls.len() && applied.iter().all(|a| a.is_some() && *a == applied[0]) {
            let digests: Vec<&str> = views
                .iter()
                .map(|v| v["state_digest"].as_str().unwrap_or(""))
                .collect();
            if digests.iter().any(|d| *d != digests[0]) {
                report.violations.push(Violation(format!(
                    "G7: digests differ at {:?}: {digests:?}",
                    applied[0]
                )));
            }
            break;
        }
        if Instant::now() > deadline {
            report
                .violations
                .push(Violation(format!("replicas did not converge: {applied:?}")));
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
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
    report.violations.extend(oracle.unexpected_answers());
    for (index, url) in urls.iter().enumerate() {
        let mut chats: BTreeMap<String, Vec<ChatEvent>> = BTreeMap::new();
        for (chat_id, token) in &tokens {
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
                        Ok(body) => {
                            serde_json::from_value(body["events"].clone()).unwrap_or_default()
                        }
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
        report
            .violations
            .extend(oracle.verify(index as u64 + 1, &chats));
    }
}

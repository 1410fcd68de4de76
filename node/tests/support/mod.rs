//! A cluster of real `parley serve` processes on loopback, for tests that kill and restart
//! them.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

/// The cluster secret every test cluster uses.
pub const SECRET: &str = "test-cluster-secret-0123456789abcdef-0123456789";
/// The admin credential of every test cluster.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef-0123456789";
/// Every test agent's password, and its argon2 hash.
pub const PASSWORD: &str = "test-password";
const PASSWORD_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$DXzqStHXjsKuhqRi33GQxQ$gkwELxz4WEdMkRIezV428sJvA4ZIF/X/dt4D3RfoIJg";

/// One node process.
pub struct Node {
    pub id: u64,
    pub http: String,
    pub grpc: String,
    pub config: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

/// A cluster of node processes; killed when dropped.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    pub client: reqwest::Client,
}

/// `count` distinct free ports: every listener is held until all are chosen, so the kernel
/// cannot hand the same ephemeral port out twice.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// Makes the cluster CA and the certificates of nodes 1 to `n` in `dir` (see
/// [`config_text`]).
pub fn make_certs(dir: &Path, n: u64) {
    parley_node::certs::issue(&parley_node::certs::CertsRequest {
        force: true,
        ..parley_node::certs::CertsRequest::new(dir, 1..=n)
    })
    .expect("making test certificates");
}

/// The `[tls]` section of node `id` with its files in `certs` (mutual TLS, as in production).
pub fn tls_section(id: u64, certs: &Path) -> String {
    parley_node::certs::tls_section(certs, id)
}

/// The config file of node `id` among `addrs` (id → (http, grpc)). Unless `raft_extra` brings
/// its own `[tls]` table, the node uses mutual TLS with the files [`make_certs`] wrote into
/// `certs` next to `data_dir`.
pub fn config_text(
    id: u64,
    data_dir: &Path,
    addrs: &BTreeMap<u64, (String, String)>,
    raft_extra: &str,
) -> String {
    let (http, grpc) = &addrs[&id];
    let tls = if raft_extra.contains("[tls]") {
        String::new()
    } else {
        let certs = data_dir.parent().unwrap_or(data_dir).join("certs");
        tls_section(id, &certs)
    };
    let raft_extra = if raft_extra.contains("snapshot_every_entries") {
        raft_extra.to_owned()
    } else {
        format!("snapshot_every_entries = 200\n{raft_extra}")
    };
    // Tests start many chats and logins from one address; a test of the limits themselves
    // brings its own `[rate_limits]` table in `raft_extra`.
    let rate_limits = if raft_extra.contains("[rate_limits]") {
        ""
    } else {
        "\n[rate_limits]\nlogins_per_address_per_minute = 100000\n\
         logins_per_agent_per_minute = 100000\nchat_starts_per_address_per_minute = 100000\n"
    };
    let mut text = format!(
        r#"node_id = {id}
site = "local"
data_dir = "{data}"
http_listen = "{http}"
grpc_listen = "{grpc}"
cluster_secret = "{SECRET}"
admin_token = "{ADMIN_TOKEN}"

[raft]
heartbeat = "100ms"
election_timeout_min = "300ms"
election_timeout_max = "400ms"
{raft_extra}

{rate_limits}
[timeouts]
write = "3s"
shutdown_grace = "2s"
drain_wait = "0s"

{tls}
[[skills]]
id = "sales"
name = "Sales"

[[skills]]
id = "french"
name = "French"

[[queues]]
id = "sales"
name = "Sales"
skills = ["sales"]
offer_timeout = "20s"

[[queues]]
id = "french"
name = "French sales"
skills = ["sales", "french"]
offer_timeout = "1500ms"

[[queues]]
id = "brief"
name = "Brief chats"
skills = ["sales"]
inactivity_timeout = "1500ms"

[[queues]]
id = "closed"
name = "Closed"
business_hours = {{ time_zone = "UTC", intervals = [] }}
off_hours_message = "We are closed for the test."

[[queues]]
id = "callbacks"
name = "Callbacks"
channel = "callback"

[[agents]]
id = "alice"
name = "Alice"
skills = ["sales"]
limits = {{ chat = 2, callback = 1 }}
password_hash = "{PASSWORD_HASH}"

[[agents]]
id = "bob"
name = "Bob"
skills = ["sales", "french"]
limits = {{ chat = 2, callback = 1 }}
password_hash = "{PASSWORD_HASH}"

[[agents]]
id = "carmen"
name = "Carmen"
skills = ["sales", "french"]
limits = {{ chat = 1 }}
password_hash = "{PASSWORD_HASH}"
"#,
        data = data_dir.display()
    );
    for (peer, (http, grpc)) in addrs {
        text.push_str(&format!(
            "\n[[peers]]\nid = {peer}\nsite = \"local\"\ngrpc = \"{grpc}\"\nhttp = \"{http}\"\n"
        ));
    }
    text
}

impl Cluster {
    /// Writes configs for `n` nodes and starts them all.
    pub fn start(n: u64) -> Self {
        Self::start_with(n, "")
    }

    /// Like [`Cluster::start`], with extra lines in each node's `[raft]` section.
    pub fn start_with(n: u64, raft_extra: &str) -> Self {
        let mut cluster = Self::configure(n, raft_extra, "");
        for id in 1..=n {
            cluster.spawn(id);
        }
        cluster
    }

    /// Writes the configs (and certificates) of `n` nodes on fresh ports without starting
    /// them: extra `[raft]` lines as in [`Cluster::start_with`], `top_extra` before everything
    /// else in each file (top-level keys such as `cluster_id`).
    pub fn configure(n: u64, raft_extra: &str, top_extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        make_certs(&dir.path().join("certs"), n);
        let ports = free_ports(2 * n as usize);
        let addrs: BTreeMap<u64, (String, String)> = (1..=n)
            .map(|id| {
                let i = 2 * (id - 1) as usize;
                (
                    id,
                    (
                        format!("127.0.0.1:{}", ports[i]),
                        format!("127.0.0.1:{}", ports[i + 1]),
                    ),
                )
            })
            .collect();
        let nodes = addrs
            .iter()
            .map(|(&id, (http, grpc))| {
                let config = dir.path().join(format!("node{id}.toml"));
                let data = dir.path().join(format!("data{id}"));
                let text = format!(
                    "{top_extra}\n{}",
                    config_text(id, &data, &addrs, raft_extra)
                );
                fs::write(&config, text).expect("writing config");
                Node {
                    id,
                    http: format!("http://{http}"),
                    grpc: grpc.clone(),
                    config,
                    log: dir.path().join(format!("node{id}.log")),
                    child: None,
                }
            })
            .collect();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // The nodes close a keep-alive connection after 5 s idle (actix-web's default); a
            // request sent on one just then fails (IncompleteMessage). Idle connections are
            // dropped well before.
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        Self { dir, nodes, client }
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("data{id}"))
    }

    /// Adds node `id` to this test cluster's processes (not yet to its membership): its own
    /// certificate from the cluster CA, a config with `cluster_state = "existing"` and no
    /// `peers`; started unless `start` is false. Returns its (http, grpc) addresses.
    pub fn add_joining_node(&mut self, id: u64, start: bool) -> (String, String) {
        assert_eq!(
            self.nodes.len() as u64 + 1,
            id,
            "nodes are added in id order"
        );
        let certs = self.dir.path().join("certs");
        parley_node::certs::issue(&parley_node::certs::CertsRequest::new(&certs, [id]))
            .expect("a certificate for the new node");
        let ports = free_ports(2);
        let (http, grpc) = (
            format!("127.0.0.1:{}", ports[0]),
            format!("127.0.0.1:{}", ports[1]),
        );
        let data = self.dir.path().join(format!("data{id}"));
        let addrs = BTreeMap::from([(id, (http.clone(), grpc.clone()))]);
        let text = config_text(id, &data, &addrs, "");
        let (head, _peers) = text
            .split_once("\n[[peers]]")
            .expect("a config lists its peers last");
        let text = format!("cluster_state = \"existing\"\n{head}\n");
        let config = self.dir.path().join(format!("node{id}.toml"));
        fs::write(&config, text).expect("writing config");
        self.nodes.push(Node {
            id,
            http: format!("http://{http}"),
            grpc: grpc.clone(),
            config,
            log: self.dir.path().join(format!("node{id}.log")),
            child: None,
        });
        if start {
            self.spawn(id);
        }
        (http, grpc)
    }

    /// Starts `n` nodes (extra `[raft]` lines as in [`Cluster::start_with`]) and waits until
    /// every one is ready.
    pub async fn start_ready(n: u64, raft_extra: &str, within: Duration) -> Self {
        let cluster = Self::start_with(n, raft_extra);
        for id in 1..=n {
            cluster.wait_ready(id, within).await;
        }
        cluster
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    pub fn url(&self, id: u64, path: &str) -> String {
        format!("{}{}", self.node(id).http, path)
    }

    /// Starts (or restarts) node `id`'s process.
    pub fn spawn(&mut self, id: u64) {
        self.spawn_with_env(id, &[]);
    }

    /// Starts (or restarts) node `id`'s process with extra environment variables (`PARLEY_*`
    /// overrides of its config).
    pub fn spawn_with_env(&mut self, id: u64, env: &[(&str, &str)]) {
        let node = &mut self.nodes[(id - 1) as usize];
        assert!(node.child.is_none(), "node {id} is already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("opening node log");
        let child = Command::new(env!("CARGO_BIN_EXE_parley"))
            .arg("serve")
            .arg("--config")
            .arg(&node.config)
            .env("RUST_LOG", "info,openraft=warn")
            .envs(env.iter().copied())
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning parley");
        node.child = Some(child);
    }

    /// kill -9.
    pub fn kill9(&mut self, id: u64) {
        let node = &mut self.nodes[(id - 1) as usize];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`HUP`, `STOP`, …) to node `id`'s process.
    pub fn signal(&self, id: u64, signal: &str) {
        let child = self.node(id).child.as_ref().expect("node is running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} node {id}");
    }

    /// Waits (at most `within`) for node `id`'s process to exit; its status.
    pub fn wait_exit(&mut self, id: u64, within: Duration) -> std::process::ExitStatus {
        let node = &mut self.nodes[(id - 1) as usize];
        let mut child = node.child.take().expect("node is running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("waiting for node") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("node {id} did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait for a clean exit (bounded).
    pub fn terminate(&mut self, id: u64) -> std::process::ExitStatus {
        self.signal(id, "TERM");
        self.wait_exit(id, Duration::from_secs(20))
    }

    /// Waits until `/readyz` of node `id` answers 200.
    pub async fn wait_ready(&self, id: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(response) = self.client.get(self.url(id, "/readyz")).send().await {
                if response.status().is_success() {
                    return;
                }
            }
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("node {id} not ready within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn cluster_view(&self, id: u64) -> Option<Value> {
        let response = self
            .client
            .get(self.url(id, "/api/v1/cluster"))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// The leader according to live node `via`.
    pub async fn leader(&self, via: u64) -> Option<u64> {
        self.cluster_view(via).await?["leader"].as_u64()
    }

    /// Waits until a leader other than `not` is known by node `via`.
    pub async fn wait_leader(&self, via: u64, not: Option<u64>, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(leader) = self.leader(via).await {
                if Some(leader) != not {
                    return leader;
                }
            }
            assert!(Instant::now() < deadline, "no leader within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn dump_logs(&self) {
        for node in &self.nodes {
            let text = fs::read_to_string(&node.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("----- node {} log (last 40 lines) -----", node.id);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A chat opened by a test.
/// Posts one message to `chat` through the node at `url` (for tasks that hold no [`Cluster`]);
/// its seq once acknowledged, `None` on any failure.
pub async fn post_at(
    client: &reqwest::Client,
    url: &str,
    chat: &Chat,
    client_msg_id: &str,
    text: &str,
) -> Option<u64> {
    let response = client
        .post(format!("{url}/api/v1/chats/{}/messages", chat.chat_id))
        .bearer_auth(&chat.token)
        .json(&json!({"client_msg_id": client_msg_id, "text": text}))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    body["seq"].as_u64()
}

#[derive(Debug, Clone, Deserialize)]
pub struct Chat {
    pub chat_id: String,
    pub token: String,
}

impl Cluster {
    pub async fn start_chat(&self, via: u64, request_id: &str) -> Chat {
        self.start_chat_in(via, request_id, "sales").await
    }

    /// Starts a chat in `queue` through node `via`; the customer's email derives from the
    /// request id.
    pub async fn start_chat_in(&self, via: u64, request_id: &str, queue: &str) -> Chat {
        let response = self
            .client
            .post(self.url(via, "/api/v1/chats"))
            .json(&json!({
                "request_id": request_id,
                "queue_id": queue,
                "customer": {"name": "Test Customer", "email": format!("{request_id}@example.com")},
                "question": "testing"
            }))
            .send()
            .await
            .expect("start chat request");
        assert!(
            response.status().is_success(),
            "start chat: {}",
            response.status()
        );
        response.json().await.expect("start chat body")
    }

    /// Posts one message; `Ok(seq)` once committed, `Err` with the reason otherwise.
    pub async fn post(
        &self,
        via: u64,
        chat: &Chat,
        client_msg_id: &str,
        text: &str,
    ) -> Result<u64, String> {
        let response = self
            .client
            .post(self.url(via, &format!("/api/v1/chats/{}/messages", chat.chat_id)))
            .bearer_auth(&chat.token)
            .json(&json!({"client_msg_id": client_msg_id, "text": text}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            body["seq"]
                .as_u64()
                .ok_or_else(|| format!("no seq in {body}"))
        } else {
            Err(format!("{status}: {body}"))
        }
    }

    /// Posts with retries through the given nodes until committed or `within` elapses.
    pub async fn post_until_committed(
        &self,
        via: &[u64],
        chat: &Chat,
        client_msg_id: &str,
        text: &str,
        within: Duration,
    ) -> u64 {
        let deadline = Instant::now() + within;
        let mut attempt = 0usize;
        loop {
            let node = via[attempt % via.len()];
            attempt += 1;
            match self.post(node, chat, client_msg_id, text).await {
                Ok(seq) => return seq,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "message {client_msg_id} not committed within {within:?}: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Every event of `chat` as node `via` has applied it.
    pub async fn events(&self, via: u64, chat: &Chat) -> Result<Vec<Value>, String> {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let response = self
                .client
                .get(self.url(
                    via,
                    &format!(
                        "/api/v1/chats/{}/events?after={after}&limit=1000",
                        chat.chat_id
                    ),
                ))
                .bearer_auth(&chat.token)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("events: {}", response.status()));
            }
            let page: Value = response.json().await.map_err(|e| e.to_string())?;
            let batch = page["events"].as_array().cloned().unwrap_or_default();
            if batch.is_empty() {
                return Ok(events);
            }
            after = batch
                .last()
                .and_then(|e| e["seq"].as_u64())
                .unwrap_or(after);
            events.extend(batch);
        }
    }

    /// Checks, on node `via`, that `chat` holds exactly the acknowledged messages `acked`
    /// (client id → seq) in a gap-free sequence, each once. Retries while the node catches up.
    pub async fn assert_chat_complete(
        &self,
        via: u64,
        chat: &Chat,
        acked: &BTreeMap<String, u64>,
        within: Duration,
    ) {
        let deadline = Instant::now() + within;
        loop {
            let problem = match self.events(via, chat).await {
                Err(error) => Some(error),
                Ok(events) => check_events(&events, acked).err(),
            };
            match problem {
                None => return,
                Some(problem) => {
                    if Instant::now() > deadline {
                        panic!("node {via}, chat {}: {problem}", chat.chat_id);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Waits until every listed node reports the same applied index, then checks their digests
    /// are equal. Returns the common applied index.
    pub async fn assert_converged(&self, ids: &[u64], within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let mut views = Vec::new();
            for &id in ids {
                if let Some(view) = self.cluster_view(id).await {
                    views.push(view);
                }
            }
            if views.len() == ids.len() {
                let applied: Vec<Option<u64>> =
                    views.iter().map(|v| v["applied_index"].as_u64()).collect();
                if applied.iter().all(|a| a.is_some() && *a == applied[0]) {
                    let digests: Vec<&str> = views
                        .iter()
                        .map(|v| v["state_digest"].as_str().unwrap_or(""))
                        .collect();
                    assert!(
                        digests.iter().all(|d| *d == digests[0]),
                        "digests differ at applied index {:?}: {digests:?}",
                        applied[0]
                    );
                    return applied[0].unwrap_or(0);
                }
            }
            assert!(
                Instant::now() < deadline,
                "nodes did not reach one applied index within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The events hold exactly the acknowledged messages at their acknowledged seqs, the sequence
/// has no gaps and no message id appears twice.
pub fn check_events(events: &[Value], acked: &BTreeMap<String, u64>) -> Result<(), String> {
    let mut seen = BTreeMap::new();
    for (i, event) in events.iter().enumerate() {
        let seq = event["seq"].as_u64().ok_or("event without seq")?;
        if seq != i as u64 + 1 {
            return Err(format!("gap: event {i} has seq {seq}"));
        }
        if event["type"] == "message" {
            let id = event["client_msg_id"]
                .as_str()
                .ok_or("message without id")?
                .to_owned();
            if seen.insert(id.clone(), seq).is_some() {
                return Err(format!("message {id} appears twice"));
            }
        }
    }
    for (id, seq) in acked {
        match seen.get(id) {
            None => return Err(format!("acknowledged message {id} (seq {seq}) missing")),
            Some(found) if found != seq => {
                return Err(format!(
                    "message {id} acknowledged as seq {seq} but stored at {found}"
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

impl Cluster {
    /// The `parley_state_entries{kind="chats"}` gauge of node `id`: the chats its memory holds
    /// (`None` if it does not answer).
    pub async fn chats_in_memory(&self, id: u64) -> Option<u64> {
        let text = reqwest::get(self.url(id, "/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        counter_value(&text, "parley_state_entries{kind=\"chats\"}")
    }

    /// The value of the counter or gauge `name` (with its labels, as exposed) on node `id`'s
    /// metrics page; 0 when absent.
    pub async fn metric(&self, id: u64, name: &str) -> u64 {
        let text = self
            .client
            .get(self.url(id, "/metrics"))
            .send()
            .await
            .expect("metrics request")
            .text()
            .await
            .expect("metrics body");
        counter_value(&text, name).unwrap_or(0)
    }
}

/// The value of `name` (with its labels, as exposed) in a Prometheus text page.
pub fn counter_value(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// A WebSocket client connection.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What a WebSocket read gave.
#[derive(Debug)]
pub enum Frame {
    /// A JSON text frame.
    Json(Value),
    /// The server closed with this code and reason.
    Closed(u16, String),
    /// Nothing within the wait.
    Timeout,
    /// The connection broke without a close frame.
    Broken(String),
}

/// A logged-in agent.
#[derive(Clone, Debug)]
pub struct Agent {
    pub id: String,
    pub token: String,
}

impl Cluster {
    /// Any request; answers the status and the JSON body (Null when none).
    pub async fn api(
        &self,
        via: u64,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (reqwest::StatusCode, Value) {
        let mut request = self.client.request(method, self.url(via, path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// An agent acts on an activity (`accept`, `transfer`, `complete`) through node `via`.
    pub async fn act(
        &self,
        via: u64,
        token: &str,
        activity_id: &str,
        action: &str,
        body: Option<Value>,
    ) -> (reqwest::StatusCode, Value) {
        let path = format!("/api/v1/activities/{activity_id}/{action}");
        self.api(via, reqwest::Method::POST, &path, Some(token), body)
            .await
    }

    /// Repeats a request until `want` holds for its answer, within ten seconds: for reads on
    /// a node other than the one that took the write, which apply it moments later.
    pub async fn api_until(
        &self,
        via: u64,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        want: impl Fn(reqwest::StatusCode, &Value) -> bool,
    ) -> (reqwest::StatusCode, Value) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = self.api(via, method.clone(), path, token, None).await;
            if want(status, &body) {
                return (status, body);
            }
            assert!(
                Instant::now() < deadline,
                "{method} {path} on node {via} never matched: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Logs `agent` in through node `via` and makes them ready for chats and callbacks.
    pub async fn login_ready(&self, via: u64, agent: &str) -> Agent {
        let (status, body) = self
            .api(
                via,
                reqwest::Method::POST,
                "/api/v1/agents/login",
                None,
                Some(json!({"agent_id": agent, "password": PASSWORD})),
            )
            .await;
        assert_eq!(status, 200, "login {agent}: {body}");
        let token = body["token"].as_str().expect("token").to_owned();
        let (status, body) = self
            .api(
                via,
                reqwest::Method::PUT,
                "/api/v1/agents/me/availability",
                Some(&token),
                Some(json!({"channels": {"chat": true, "callback": true}})),
            )
            .await;
        assert_eq!(status, 200, "availability {agent}: {body}");
        Agent {
            id: agent.to_owned(),
            token,
        }
    }

    /// Opens a WebSocket to `path` on node `via` with a bearer token.
    pub async fn connect(&self, via: u64, path: &str, token: &str) -> Result<Ws, String> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = self.url(via, path).replacen("http://", "ws://", 1);
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        request.headers_mut().insert("authorization", value);
        match tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(request),
        )
        .await
        {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
                Err(format!("http {}", response.status().as_u16()))
            }
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("connect timed out".to_owned()),
        }
    }
}

/// The next frame within `within` (pings are answered by the client library).
pub async fn next_frame(ws: &mut Ws, within: Duration) -> Frame {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Frame::Timeout,
            Ok(None) => return Frame::Broken("stream ended".to_owned()),
            Ok(Some(Err(error))) => return Frame::Broken(error.to_string()),
            Ok(Some(Ok(Message::Text(text)))) => {
                return match serde_json::from_str(text.as_str()) {
                    Ok(value) => Frame::Json(value),
                    Err(error) => Frame::Broken(format!("not JSON: {error}: {text}")),
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                return match frame {
                    Some(frame) => Frame::Closed(u16::from(frame.code), frame.reason.to_string()),
                    None => Frame::Closed(1005, String::new()),
                }
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Reads frames until one matches `want`, returning it; panics with what was seen otherwise.
pub async fn wait_for(
    ws: &mut Ws,
    what: &str,
    within: Duration,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_frame(ws, left).await {
            Frame::Json(value) if want(&value) => return value,
            Frame::Json(value) => seen.push(value),
            other => panic!("waiting for {what}: got {other:?} after {seen:#?}"),
        }
    }
}

/// Sends a JSON text frame.
pub async fn send_json(ws: &mut Ws, value: Value) {
    use futures::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        value.to_string(),
    ))
    .await
    .expect("sending a frame");
}

/// iptables rules that drop every packet to and from a local TCP port (a silent node: no reset,
/// no answer), removed when dropped.
pub struct Silenced {
    port: u16,
}

impl Silenced {
    pub fn port(port: u16) -> Self {
        for rule in Self::rules(port) {
            let status = Command::new("iptables")
                .args(["-I", "INPUT"])
                .args(&rule)
                .status()
                .unwrap_or_else(|e| {
                    panic!("iptables is needed to drop packets (./dev.sh test installs it): {e}")
                });
            assert!(
                status.success(),
                "iptables -I INPUT {rule:?} failed (root is needed)"
            );
        }
        Self { port }
    }

    fn rules(port: u16) -> [Vec<String>; 2] {
        let rule = |dir: &str| {
            ["-p", "tcp", dir, &port.to_string(), "-j", "DROP"]
                .map(str::to_owned)
                .to_vec()
        };
        [rule("--dport"), rule("--sport")]
    }
}

impl Drop for Silenced {
    fn drop(&mut self) {
        for rule in Self::rules(self.port) {
            let _ = Command::new("iptables")
                .args(["-D", "INPUT"])
                .args(&rule)
                .status();
        }
    }
}

//! The clusters the comparison runs: three `parley serve` processes, three etcd members, three
//! JetStream-enabled nats-server nodes, all on loopback with their data in one directory per
//! run. Each is started, waited for until it serves, and stopped (SIGTERM, then SIGKILL after a
//! grace period) when dropped. Parley's nodes may also be placed elsewhere ([`NodePlace`]: the
//! failover's host-loss trial runs each in a network namespace of its own).

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Deserialize;
use serde_json::{json, Value};

/// How long a cluster may take to serve after its processes start.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// How long a stopped process may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// `n` free loopback ports, chosen while holding every listener so none is handed out twice.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("binding ephemeral ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr().context("reading an ephemeral port")?.port()))
        .collect()
}

/// How a process was started, to start it again.
struct Launch {
    label: String,
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
}

/// Processes of one cluster; stopped on drop.
pub struct Processes {
    name: &'static str,
    children: Vec<Option<Child>>,
    launches: Vec<Launch>,
    dir: PathBuf,
}

impl Processes {
    fn new(name: &'static str, dir: &Path) -> anyhow::Result<Self> {
        let dir = dir.join(name);
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            name,
            children: Vec::new(),
            launches: Vec::new(),
            dir,
        })
    }

    fn start(&self, launch: &Launch) -> anyhow::Result<Child> {
        let log_path = self.dir.join(format!("{}.log", launch.label));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let err = log.try_clone().context("cloning a log handle")?;
        Command::new(&launch.program)
            .args(&launch.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} of {}: {:?}",
                    launch.label, self.name, launch.program
                )
            })
    }

    fn spawn(&mut self, label: &str, command: &Command) -> anyhow::Result<()> {
        let launch = Launch {
            label: label.to_owned(),
            program: command.get_program().to_owned(),
            args: command.get_args().map(ToOwned::to_owned).collect(),
        };
        let child = self.start(&launch)?;
        self.children.push(Some(child));
        self.launches.push(launch);
        Ok(())
    }

    /// Kills process `index` at once (kill -9).
    pub fn kill9(&mut self, index: usize) {
        if let Some(mut child) = self.children.get_mut(index).and_then(Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks process `index` to stop (SIGTERM), without waiting; see [`Processes::reap`].
    pub fn sigterm(&self, index: usize) -> anyhow::Result<()> {
        let pid = self
            .pid(index)
            .with_context(|| format!("process {index} of {} is not running", self.name))?;
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("running kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {pid} failed: {status}");
        }
        Ok(())
    }

    /// Whether process `index` has exited (after [`Processes::sigterm`]); an exited process
    /// is reaped and may be restarted.
    pub fn exited(&mut self, index: usize) -> bool {
        let Some(slot) = self.children.get_mut(index) else {
            return true;
        };
        match slot.as_mut().map(Child::try_wait) {
            None | Some(Ok(Some(_))) | Some(Err(_)) => {
                *slot = None;
                true
            }
            Some(Ok(None)) => false,
        }
    }

    /// Starts process `index` again after [`Processes::kill9`].
    pub fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        let launch = self
            .launches
            .get(index)
            .with_context(|| format!("no process {index} in {}", self.name))?;
        let child = self.start(launch)?;
        self.children[index] = Some(child);
        Ok(())
    }

    /// The OS process id of process `index`, while it runs.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.children.get(index)?.as_ref().map(Child::id)
    }

    /// CPU seconds (user + system) the running processes have used so far, from
    /// `/proc/<pid>/stat`; processes that cannot be read count 0.
    pub fn cpu_seconds(&self) -> f64 {
        let ticks_per_second = clock_ticks_per_second();
        self.children
            .iter()
            .flatten()
            .filter_map(|child| fs::read_to_string(format!("/proc/{}/stat", child.id())).ok())
            .filter_map(|stat| cpu_ticks(&stat))
            .map(|ticks| ticks as f64 / ticks_per_second)
            .sum()
    }

    /// The directory holding this cluster's data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of the files under `relative` in this cluster's directory.
    pub fn bytes_under(&self, relative: &str) -> u64 {
        fn walk(path: &Path) -> u64 {
            let Ok(entries) = fs::read_dir(path) else {
                return 0;
            };
            entries
                .flatten()
                .map(|entry| match entry.metadata() {
                    Ok(meta) if meta.is_dir() => walk(&entry.path()),
                    Ok(meta) => meta.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.dir.join(relative))
    }

    /// SIGTERM to every process, SIGKILL to those still running after the grace period.
    pub fn stop(&mut self) {
        for child in self.children.iter().flatten() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        let deadline = Instant::now() + STOP_GRACE;
        for child in self.children.iter_mut().flatten() {
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop();
    }
}

/// User plus system time, in clock ticks, from the text of `/proc/<pid>/stat` (fields 14 and
/// 15; the command name in field 2 may hold spaces, so counting starts after its `)`).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`, asked once), 100 where it cannot be
/// read.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|ticks| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

/// Polls `urls` until each answers success (and, with `body`, contains it).
pub async fn wait_ready(
    client: &reqwest::Client,
    urls: &[String],
    body: Option<&str>,
    what: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_WITHIN;
    for url in urls {
        loop {
            let answer = client.get(url).send().await;
            let ok = match answer {
                Ok(response) if response.status().is_success() => match body {
                    None => true,
                    Some(expected) => response
                        .text()
                        .await
                        .is_ok_and(|text| text.contains(expected)),
                },
                _ => false,
            };
            if ok {
                break;
            }
            if Instant::now() > deadline {
                bail!("{what}: {url} did not become ready within {READY_WITHIN:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// A running three-node Parley cluster.
pub struct ParleyCluster {
    /// The processes.
    pub processes: Processes,
    /// HTTP base URLs.
    pub urls: Vec<String>,
}

/// The queue the benchmark's chats go to.
pub const PARLEY_QUEUE: &str = "bench";

/// Starts three `parley serve` processes with fsync on every write (the production default).
/// Every client of a benchmark comes from one address: abuse limits sized for real customers
/// would refuse the load itself, so benchmark clusters lift them.
const BENCH_RATE_LIMITS: &str = "\n[rate_limits]\nlogins_per_address_per_minute = 1000000\n\
    logins_per_agent_per_minute = 1000000\nchat_starts_per_address_per_minute = 1000000\n";

/// `extra` is appended to every node's config (a `[raft]` table, `[[agents]]`; empty: none).
pub async fn start_parley(
    parley: &Path,
    dir: &Path,
    client: &reqwest::Client,
    extra: &str,
) -> anyhow::Result<ParleyCluster> {
    start_parley_placed(parley, dir, client, extra, &loopback_places(3)?).await
}

/// Where one node of a Parley cluster listens, and what runs it.
#[derive(Debug, Clone)]
pub struct NodePlace {
    /// Its HTTP listen address, `ip:port`.
    pub http: String,
    /// Its gRPC listen address, `ip:port`.
    pub grpc: String,
    /// A program and its first arguments that run `parley` in their turn, put in front of it
    /// (e.g. `ip netns exec <namespace>`: the node in a network namespace of its own); empty:
    /// `parley` runs directly.
    pub wrapper: Vec<std::ffi::OsString>,
}

/// `n` nodes on loopback, on free ports, run directly.
pub fn loopback_places(n: usize) -> anyhow::Result<Vec<NodePlace>> {
    let ports = free_ports(2 * n)?;
    Ok(ports
        .chunks(2)
        .map(|p| NodePlace {
            http: format!("127.0.0.1:{}", p[0]),
            grpc: format!("127.0.0.1:{}", p[1]),
            wrapper: Vec::new(),
        })
        .collect())
}

/// A cluster CA and one certificate per member (ids from 1), made by `parley certs`: Parley's
/// nodes use them for mutual TLS, and so do etcd's and NATS's members in the comparison, so
/// every system pays for encrypted traffic between its members.
#[derive(Debug, Clone)]
pub struct MemberCerts {
    dir: PathBuf,
}

impl MemberCerts {
    /// Makes a CA and certificates for members `1..=members` in `dir` with `parley certs`,
    /// each also valid for the names in `names` (addresses a peer dials it by).
    pub fn issue(
        parley: &Path,
        dir: &Path,
        members: usize,
        names: &[&str],
    ) -> anyhow::Result<Self> {
        let ids: Vec<String> = (1..=members).map(|id| id.to_string()).collect();
        let mut command = Command::new(parley);
        command
            .arg("certs")
            .arg("--dir")
            .arg(dir)
            .arg("--nodes")
            .arg(ids.join(","))
            .arg("--force");
        if !names.is_empty() {
            command.arg("--name").arg(names.join(","));
        }
        let made = command
            .output()
            .with_context(|| format!("running {} certs", parley.display()))?;
        if !made.status.success() {
            bail!(
                "parley certs failed: {}",
                String::from_utf8_lossy(&made.stderr).trim()
            );
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The CA's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Member `id`'s certificate.
    pub fn cert(&self, id: usize) -> PathBuf {
        self.dir.join(format!("node-{id}.pem"))
    }

    /// Member `id`'s private key.
    pub fn key(&self, id: usize) -> PathBuf {
        self.dir.join(format!("node-{id}.key"))
    }
}

/// Starts one `parley serve` process per place (node ids from 1 in order), configured as
/// [`start_parley`] does, and waits until every node is ready.
pub async fn start_parley_placed(
    parley: &Path,
    dir: &Path,
    client: &reqwest::Client,
    extra: &str,
    places: &[NodePlace],
) -> anyhow::Result<ParleyCluster> {
    let mut processes = Processes::new("parley", dir)?;
    let addrs: Vec<(String, String)> = places
        .iter()
        .map(|place| (place.http.clone(), place.grpc.clone()))
        .collect();
    let mut peers = String::new();
    for (index, (http, grpc)) in addrs.iter().enumerate() {
        let _ = write!(
            peers,
            "\n[[peers]]\nid = {}\nsite = \"bench\"\ngrpc = \"{grpc}\"\nhttp = \"{http}\"\n",
            index + 1
        );
    }
    // Mutual TLS between nodes, as in production.
    let certs = MemberCerts::issue(parley, &processes.dir().join("certs"), places.len(), &[])?;
    for (index, (http, grpc)) in addrs.iter().enumerate() {
        let id = index + 1;
        let data = processes.dir().join(format!("data{id}"));
        let tls = format!(
            "\n[tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            certs.ca().display(),
            certs.cert(id).display(),
            certs.key(id).display()
        );
        let config = processes.dir().join(format!("node{id}.toml"));
        let text = format!(
            "node_id = {id}\nsite = \"bench\"\ndata_dir = \"{}\"\nhttp_listen = \"{http}\"\n\
             grpc_listen = \"{grpc}\"\ncluster_secret = \"bench-cluster-secret-0123456789abcdef\"\n\
             {BENCH_RATE_LIMITS}{tls}\n[[queues]]\nid = \"{PARLEY_QUEUE}\"\nname = \"Benchmark\"\n{peers}\n{extra}",
            data.display()
        );
        fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        let mut command = match places[index].wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(parley);
                command
            }
            None => Command::new(parley),
        };
        command.arg("serve").arg("--config").arg(&config);
        processes.spawn(&format!("node{id}"), &command)?;
    }
    let urls: Vec<String> = addrs.iter().map(|(h, _)| format!("http://{h}")).collect();
    let ready: Vec<String> = urls.iter().map(|u| format!("{u}/readyz")).collect();
    wait_ready(client, &ready, None, "parley").await?;
    Ok(ParleyCluster { processes, urls })
}

/// A running three-member etcd cluster.
pub struct EtcdCluster {
    /// The processes.
    pub processes: Processes,
    /// Client endpoints.
    pub endpoints: Vec<String>,
}

/// Starts a three-member etcd cluster (static bootstrap; etcd fsyncs its WAL per batch). With
/// `tls`, the members talk to each other over mutual TLS (clients still use plain HTTP/2).
pub async fn start_etcd(
    etcd: &Path,
    dir: &Path,
    client: &reqwest::Client,
    tls: Option<&MemberCerts>,
) -> anyhow::Result<EtcdCluster> {
    let mut processes = Processes::new("etcd", dir)?;
    let ports = free_ports(6)?;
    let (client_ports, peer_ports) = ports.split_at(3);
    let peer_scheme = if tls.is_some() { "https" } else { "http" };
    let initial: Vec<String> = peer_ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("e{}={peer_scheme}://127.0.0.1:{p}", i + 1))
        .collect();
    let initial = initial.join(",");
    for i in 0..3 {
        let name = format!("e{}", i + 1);
        let client_url = format!("http://127.0.0.1:{}", client_ports[i]);
        let peer_url = format!("{peer_scheme}://127.0.0.1:{}", peer_ports[i]);
        let data = processes.dir().join(format!("{name}.data"));
        let mut command = Command::new(etcd);
        if let Some(certs) = tls {
            command
                .arg("--peer-cert-file")
                .arg(certs.cert(i + 1))
                .arg("--peer-key-file")
                .arg(certs.key(i + 1))
                .arg("--peer-trusted-ca-file")
                .arg(certs.ca())
                .arg("--peer-client-cert-auth");
        }
        processes.spawn(
            &name,
            command
                .arg("--name")
                .arg(&name)
                .arg("--data-dir")
                .arg(&data)
                .arg("--listen-client-urls")
                .arg(&client_url)
                .arg("--advertise-client-urls")
                .arg(&client_url)
                .arg("--listen-peer-urls")
                .arg(&peer_url)
                .arg("--initial-advertise-peer-urls")
                .arg(&peer_url)
                .arg("--initial-cluster")
                .arg(&initial)
                .arg("--initial-cluster-token")
                .arg("parley-bench")
                .arg("--initial-cluster-state")
                .arg("new"),
        )?;
    }
    let endpoints: Vec<String> = client_ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let health: Vec<String> = endpoints.iter().map(|e| format!("{e}/health")).collect();
    wait_ready(client, &health, Some("\"health\":\"true\""), "etcd").await?;
    Ok(EtcdCluster {
        processes,
        endpoints,
    })
}

/// A running three-node NATS cluster with JetStream.
pub struct NatsCluster {
    /// The processes.
    pub processes: Processes,
    /// Client URLs.
    pub urls: Vec<String>,
}

/// Starts three nats-server nodes clustered with JetStream on file storage. With `fsync`,
/// JetStream syncs every write to disk before acknowledging it (`sync_interval: always`,
/// nats-server 2.10 and later); without, it syncs on its own schedule. With `tls`, the routes
/// between the servers use mutual TLS (clients still connect in plain text).
pub async fn start_nats(
    nats_server: &Path,
    dir: &Path,
    client: &reqwest::Client,
    fsync: bool,
    tls: Option<&MemberCerts>,
) -> anyhow::Result<NatsCluster> {
    let mut processes = Processes::new(if fsync { "nats-fsync" } else { "nats" }, dir)?;
    let sync = if fsync { ", sync_interval: always" } else { "" };
    let ports = free_ports(9)?;
    let (client_ports, rest) = ports.split_at(3);
    let (route_ports, monitor_ports) = rest.split_at(3);
    let routes: Vec<String> = route_ports
        .iter()
        .map(|p| format!("nats-route://127.0.0.1:{p}"))
        .collect();
    for i in 0..3 {
        let name = format!("n{}", i + 1);
        let store = processes.dir().join(format!("{name}.data"));
        let config = processes.dir().join(format!("{name}.conf"));
        let route_tls = match tls {
            Some(certs) => format!(
                "  tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify: true, \
                 timeout: 2 }}\n",
                certs.cert(i + 1).display(),
                certs.key(i + 1).display(),
                certs.ca().display()
            ),
            None => String::new(),
        };
        let text = format!(
            "server_name: {name}\nhost: 127.0.0.1\nport: {}\nhttp_port: {}\n\
             jetstream {{ store_dir: \"{}\", max_memory_store: 256MB, max_file_store: 8GB{sync} }}\n\
             cluster {{\n  name: parley-bench\n  listen: 127.0.0.1:{}\n  routes: [ {} ]\n{route_tls}}}\n",
            client_ports[i],
            monitor_ports[i],
            store.display(),
            route_ports[i],
            routes.join(", ")
        );
        fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        processes.spawn(&name, Command::new(nats_server).arg("-c").arg(&config))?;
    }
    let health: Vec<String> = monitor_ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}/healthz?js-server-only=true"))
        .collect();
    wait_ready(client, &health, None, "nats").await?;
    let urls = client_ports
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect();
    Ok(NatsCluster { processes, urls })
}

/// A chat a benchmark client posts to.
#[derive(Clone, Debug, Deserialize)]
pub struct Chat {
    /// Its id.
    #[serde(rename = "chat_id")]
    pub id: String,
    /// The customer's token for it.
    pub token: String,
}

/// Starts a chat in `queue` through `base` (one customer per request id).
pub async fn start_chat(
    client: &reqwest::Client,
    base: &str,
    queue: &str,
    request_id: &str,
) -> anyhow::Result<Chat> {
    client
        .post(format!("{base}/api/v1/chats"))
        .json(&json!({
            "request_id": request_id,
            "queue_id": queue,
            "customer": {"name": "Bench", "email": format!("{request_id}@example.com")},
            "question": "load"
        }))
        .send()
        .await
        .context("starting a chat")?
        .error_for_status()
        .context("starting a chat")?
        .json()
        .await
        .context("reading the started chat")
}

/// Posts `text` to `chat` through `base`; answers the message's sequence number once committed.
pub async fn post_message(
    client: &reqwest::Client,
    base: &str,
    chat: &Chat,
    client_msg_id: &str,
    text: &str,
    timeout: Option<Duration>,
) -> anyhow::Result<u64> {
    let mut request = client
        .post(format!("{base}/api/v1/chats/{}/messages", chat.id))
        .bearer_auth(&chat.token)
        .json(&json!({"client_msg_id": client_msg_id, "text": text}));
    if let Some(timeout) = timeout {
        request = request.timeout(timeout);
    }
    let body: Value = request
        .send()
        .await
        .context("posting")?
        .error_for_status()
        .context("posting")?
        .json()
        .await
        .context("reading the post answer")?;
    body["seq"].as_u64().context("no seq in the answer")
}

/// The Prometheus text page of the node at `url`.
pub async fn metrics_page(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("reading {url}/metrics"))?
        .text()
        .await
        .with_context(|| format!("reading {url}/metrics"))
}

/// The value of `name` (with its labels, as exposed) in a Prometheus text page.
pub fn counter_value(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// Write-path counters of a Parley cluster, summed over its nodes: what group commit and
/// forward batching did during a measurement.
#[derive(Debug, Clone, Copy, Default)]
pub struct WritePath {
    /// Raft log appends written (every node).
    pub log_appends: u64,
    /// WAL syncs those appends waited for.
    pub wal_syncs: u64,
    /// Forward RPCs followers sent to the leader.
    pub forward_rpcs: u64,
    /// Writes those RPCs carried.
    pub forwarded_writes: u64,
}

impl WritePath {
    /// Reads the counters of every node in `urls`.
    pub async fn read(client: &reqwest::Client, urls: &[String]) -> anyhow::Result<Self> {
        let mut sum = Self::default();
        for url in urls {
            let text = metrics_page(client, url).await?;
            let get = |name: &str| counter_value(&text, name).unwrap_or(0);
            sum.log_appends += get("parley_storage_log_appends_total");
            sum.wal_syncs += get("parley_storage_wal_syncs_total");
            sum.forward_rpcs += get("parley_forward_rpcs_total");
            sum.forwarded_writes += get("parley_forwarded_writes_total");
        }
        Ok(sum)
    }

    /// One line on what happened between `before` and `self`.
    pub fn describe_since(&self, before: &Self) -> String {
        let ratio = |a: u64, b: u64| {
            if b == 0 {
                "-".to_owned()
            } else {
                format!("{:.1}", a as f64 / b as f64)
            }
        };
        let appends = self.log_appends.saturating_sub(before.log_appends);
        format!(
            "write path: {} writes/forward RPC, {} log appends/WAL sync, {} appends",
            ratio(
                self.forwarded_writes
                    .saturating_sub(before.forwarded_writes),
                self.forward_rpcs.saturating_sub(before.forward_rpcs)
            ),
            ratio(appends, self.wal_syncs.saturating_sub(before.wal_syncs)),
            appends,
        )
    }
}

/// Options every suite that starts its own cluster takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// The `parley` binary (default: next to this one).
    #[arg(long)]
    pub parley: Option<PathBuf>,
    /// Where the clusters keep their data (default: a fresh temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where the tables, JSON, CSV and plots go.
    #[arg(long, default_value = "docs/bench")]
    pub out: PathBuf,
}

/// What every suite that starts its own cluster needs: the `parley` binary, a data directory
/// (a fresh temporary one unless given) and a runtime.
pub struct Setup {
    /// The `parley` binary.
    pub parley: PathBuf,
    /// Where the clusters keep their data.
    pub dir: PathBuf,
    /// The runtime the suite runs on.
    pub runtime: tokio::runtime::Runtime,
    _temp: Option<tempfile::TempDir>,
}

impl Setup {
    /// `parley` defaults to the binary next to this one; `data_dir` to a fresh temporary
    /// directory named `prefix…`, removed at the end.
    pub fn new(args: &ClusterArgs, prefix: &str) -> anyhow::Result<Self> {
        let parley = match &args.parley {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .context("locating this binary")?
                .with_file_name("parley"),
        };
        let (dir, temp) = match &args.data_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix(prefix)
                    .tempdir()
                    .context("creating a data directory")?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("building the tokio runtime")?;
        Ok(Self {
            parley,
            dir,
            runtime,
            _temp: temp,
        })
    }

    /// Fails unless the `parley` binary exists.
    pub fn require_parley(&self) -> anyhow::Result<()> {
        if !self.parley.is_file() {
            bail!(
                "parley binary not found at {} (build the workspace or pass --parley)",
                self.parley.display()
            );
        }
        Ok(())
    }

    /// Hashes `password` for an agent's `password_hash` the way an operator does, with
    /// `parley hash-password`, so the harness needs none of the server's code.
    pub fn hash_password(&self, password: &str) -> anyhow::Result<String> {
        let mut child = Command::new(&self.parley)
            .arg("hash-password")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} hash-password", self.parley.display()))?;
        // Dropping the handle at the end of the block closes the child's stdin.
        {
            let mut stdin = child.stdin.take().context("no stdin for hash-password")?;
            writeln!(stdin, "{password}").context("writing to hash-password")?;
        }
        let output = child
            .wait_with_output()
            .context("waiting for hash-password")?;
        if !output.status.success() {
            bail!(
                "parley hash-password failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let hash = String::from_utf8(output.stdout)
            .context("hash-password printed no text")?
            .trim()
            .to_owned();
        if hash.is_empty() {
            bail!("parley hash-password printed nothing");
        }
        Ok(hash)
    }
}

/// A client's WebSocket stream to a node.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the stream at `path` (with its query, e.g. `/api/v1/chats/{id}/stream?after=0`) on
/// `base` with `token` as its credential, waiting at most `within`.
pub async fn open_stream(
    base: &str,
    path: &str,
    token: &str,
    within: Duration,
) -> anyhow::Result<Ws> {
    let url = format!(
        "{}{path}&access_token={token}",
        base.replacen("http://", "ws://", 1)
    );
    let (ws, _) = tokio::time::timeout(within, tokio_tungstenite::connect_async(url))
        .await
        .with_context(|| format!("opening {path} timed out"))?
        .with_context(|| format!("opening {path}"))?;
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        // pid (comm, may hold spaces and parentheses) state ppid ..., utime and stime are the
        // 14th and 15th fields.
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 1 2 3";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("garbage"), None);
        assert_eq!(cpu_ticks("1 (x) S 1"), None);
    }
}

//! The clusters the comparison runs: three `parley serve` processes, three etcd members, three
//! JetStream-enabled nats-server nodes, all on loopback with their data in one directory per
//! run. Each is started, waited for until it serves, and stopped (SIGTERM, then SIGKILL after a
//! grace period) when dropped.

use std::fmt::Write as _;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

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

/// Processes of one cluster; stopped on drop.
pub struct Processes {
    name: &'static str,
    children: Vec<Child>,
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
            dir,
        })
    }

    fn spawn(&mut self, label: &str, command: &mut Command) -> anyhow::Result<()> {
        let log_path = self.dir.join(format!("{label}.log"));
        let log = fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let err = log.try_clone().context("cloning a log handle")?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("starting {label} of {}: {command:?}", self.name))?;
        self.children.push(child);
        Ok(())
    }

    /// The directory holding this cluster's data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes under this cluster's data directories (logs excluded).
    pub fn data_bytes(&self) -> u64 {
        fn walk(path: &Path) -> u64 {
            let Ok(entries) = fs::read_dir(path) else {
                return 0;
            };
            entries
                .flatten()
                .map(|entry| match entry.metadata() {
                    Ok(meta) if meta.is_dir() => walk(&entry.path()),
                    Ok(_) if entry.path().extension().is_some_and(|e| e == "log") => 0,
                    Ok(meta) => meta.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.dir)
    }

    /// SIGTERM to every process, SIGKILL to those still running after the grace period.
    pub fn stop(&mut self) {
        for child in &self.children {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        let deadline = Instant::now() + STOP_GRACE;
        for child in &mut self.children {
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

/// Polls `urls` until each answers success (and, with `body`, contains it).
async fn wait_ready(
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
pub async fn start_parley(
    parley: &Path,
    dir: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<ParleyCluster> {
    let mut processes = Processes::new("parley", dir)?;
    let ports = free_ports(6)?;
    let addrs: Vec<(String, String)> = ports
        .chunks(2)
        .map(|p| (format!("127.0.0.1:{}", p[0]), format!("127.0.0.1:{}", p[1])))
        .collect();
    let mut peers = String::new();
    for (index, (http, grpc)) in addrs.iter().enumerate() {
        let _ = write!(
            peers,
            "\n[[peers]]\nid = {}\nsite = \"bench\"\ngrpc = \"{grpc}\"\nhttp = \"{http}\"\n",
            index + 1
        );
    }
    for (index, (http, grpc)) in addrs.iter().enumerate() {
        let id = index + 1;
        let data = processes.dir().join(format!("data{id}"));
        let config = processes.dir().join(format!("node{id}.toml"));
        let text = format!(
            "node_id = {id}\nsite = \"bench\"\ndata_dir = \"{}\"\nhttp_listen = \"{http}\"\n\
             grpc_listen = \"{grpc}\"\ncluster_secret = \"bench-cluster-secret-0123456789abcdef\"\n\
             \n[[queues]]\nid = \"{PARLEY_QUEUE}\"\nname = \"Benchmark\"\n{peers}",
            data.display()
        );
        fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        processes.spawn(
            &format!("node{id}"),
            Command::new(parley)
                .arg("serve")
                .arg("--config")
                .arg(&config),
        )?;
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

/// Starts a three-member etcd cluster (static bootstrap; etcd fsyncs its WAL per batch).
pub async fn start_etcd(
    etcd: &Path,
    dir: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<EtcdCluster> {
    let mut processes = Processes::new("etcd", dir)?;
    let ports = free_ports(6)?;
    let (client_ports, peer_ports) = ports.split_at(3);
    let initial: Vec<String> = peer_ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("e{}=http://127.0.0.1:{p}", i + 1))
        .collect();
    let initial = initial.join(",");
    for i in 0..3 {
        let name = format!("e{}", i + 1);
        let client_url = format!("http://127.0.0.1:{}", client_ports[i]);
        let peer_url = format!("http://127.0.0.1:{}", peer_ports[i]);
        let data = processes.dir().join(format!("{name}.data"));
        processes.spawn(
            &name,
            Command::new(etcd)
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

/// Starts three nats-server nodes clustered with JetStream on file storage.
pub async fn start_nats(
    nats_server: &Path,
    dir: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<NatsCluster> {
    let mut processes = Processes::new("nats", dir)?;
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
        let text = format!(
            "server_name: {name}\nhost: 127.0.0.1\nport: {}\nhttp_port: {}\n\
             jetstream {{ store_dir: \"{}\", max_memory_store: 256MB, max_file_store: 8GB }}\n\
             cluster {{\n  name: parley-bench\n  listen: 127.0.0.1:{}\n  routes: [ {} ]\n}}\n",
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

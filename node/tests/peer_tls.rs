//! Mutual TLS between real node processes: who may talk to a node's gRPC port, and a
//! certificate rotation (CA included) under load.
//!
//! Every refused caller sends a forwarded write that would add a skill to the directory; the
//! test then reads the directory and asserts that none of those skills exists, while the same
//! write from a genuine peer identity (the positive control) does.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parley_proto::v1 as pb;
use parley_raft::command::{Command, Directory, Op, SkillSpec};
use parley_raft::network::{ChannelSettings, Connector, TcpConnector};
use parley_raft::route::RouteHeaders;
use parley_raft::tls::connect::tls_channel;
use parley_raft::tls::{self as peer_tls, PeerTls, TlsPaths};
use pb::cluster_client::ClusterClient;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use support::{Cluster, ADMIN_TOKEN, SECRET};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const READY: Duration = Duration::from_secs(30);

fn cluster_id() -> String {
    parley_node::config::tls::cluster_id(None, SECRET).expect("derived cluster id")
}

fn paths(dir: &Path, node: u64) -> TlsPaths {
    parley_node::certs::node_paths(dir, node)
}

/// A forwarded write that adds skill `skill`.
fn forward_request(skill: &str) -> pb::ForwardRequest {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let command = Command {
        at_ms: now_ms,
        origin: 2,
        op: Op::SeedDirectory(Directory {
            departments: Vec::new(),
            skills: vec![SkillSpec {
                id: skill.to_owned(),
                name: skill.to_owned(),
            }],
            queues: Vec::new(),
            agents: Vec::new(),
        }),
    };
    pb::ForwardRequest {
        commands_json: vec![serde_json::to_vec(&command).expect("encoding a command")],
        deadline_ms: 3_000,
    }
}

/// Sends the forwarded write adding `skill` on `channel` with the route headers
/// cluster/`from`/`to`; the gRPC outcome.
async fn forward(
    channel: Channel,
    cluster: &str,
    from: u64,
    to: u64,
    skill: &str,
) -> Result<(), String> {
    let channel = InterceptedService::new(channel, RouteHeaders::new(cluster, from, to));
    let mut client = ClusterClient::new(channel);
    let call = client.forward(forward_request(skill));
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Err(_) => Err("no answer within 10 s".to_owned()),
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Ok(Ok(reply)) => {
            let results = reply.into_inner().results;
            match results.first().and_then(|r| r.outcome.as_ref()) {
                Some(pb::forward_result::Outcome::OutcomeJson(_)) => Ok(()),
                other => Err(format!("not committed: {other:?}")),
            }
        }
    }
}

async fn skills(cluster: &Cluster, via: u64) -> Vec<String> {
    let (status, body) = cluster
        .api(
            via,
            reqwest::Method::GET,
            "/api/v1/admin/directory",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert!(status.is_success(), "directory: {status} {body}");
    body["skills"]
        .as_array()
        .map(|skills| {
            skills
                .iter()
                .filter_map(|s| s["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A rustls client configuration trusting `ca_pem` and presenting `chain`/`key` (or no
/// certificate at all).
fn client_config(ca_pem: &[u8], identity: Option<(&[u8], &[u8])>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let builder = rustls::ClientConfig::builder_with_provider(peer_tls::provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(chain)
                    .collect::<Result<Vec<_>, _>>()
                    .expect("chain PEM"),
                PrivateKeyDer::from_pem_slice(key).expect("key PEM"),
            )
            .expect("client identity"),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A certificate for node `node` signed by the CA in `ca_dir`, valid from `from_days` to
/// `until_days` from now: its PEM and its key's PEM.
fn node_certificate(ca_dir: &Path, node: u64, from_days: i64, until_days: i64) -> (String, String) {
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("ca.key")).expect("ca.key"))
            .expect("CA key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(ca_dir.join("ca.pem")).expect("ca.pem"),
        ca_key,
    )
    .expect("CA");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut params =
        rcgen::CertificateParams::new(vec![peer_tls::node_name(node)]).expect("params");
    params.not_before =
        time::OffsetDateTime::from_unix_timestamp(now + from_days * 86_400).expect("time");
    params.not_after =
        time::OffsetDateTime::from_unix_timestamp(now + until_days * 86_400).expect("time");
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &issuer).expect("signing");
    (cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_peer_with_a_cluster_certificate_naming_it_gets_a_write_committed() {
    let cluster = Cluster::start_ready(3, "", READY).await;
    let certs = cluster.dir.path().join("certs");
    // The calls go to the leader (only it commits a forwarded write) from the identity of a
    // follower `peer`; `other` is the third node.
    let leader = cluster.wait_leader(1, None, READY).await;
    let peer = (1..=3).find(|id| *id != leader).expect("a follower");
    let other = (1..=3)
        .find(|id| *id != leader && *id != peer)
        .expect("a third node");
    let target = cluster.node(leader).grpc.clone();
    let settings = ChannelSettings::default();
    let id = cluster_id();
    let ca_pem = std::fs::read(certs.join("ca.pem")).expect("ca.pem");

    // Positive control: the follower's own identity.
    let material = PeerTls::load(peer, paths(&certs, peer)).expect("the follower's material");
    let genuine =
        tls_channel(&settings, &target, leader, move || material.client_config()).expect("channel");
    forward(genuine.clone(), &id, peer, leader, "genuine")
        .await
        .expect("a genuine peer's write is committed");

    let mut refused = Vec::new();
    // Plaintext.
    let plain = TcpConnector { settings }
        .channel(leader, &target)
        .expect("channel");
    refused.push((
        "plaintext",
        forward(plain, &id, peer, leader, "rogue-plaintext").await,
    ));
    // No client certificate.
    let config = client_config(&ca_pem, None);
    let anonymous =
        tls_channel(&settings, &target, leader, move || config.clone()).expect("channel");
    refused.push((
        "no certificate",
        forward(anonymous, &id, peer, leader, "rogue-anonymous").await,
    ));
    // A certificate from another CA (the client trusts the cluster's CA, so only the server's
    // check stands in the way).
    let foreign_dir = cluster.dir.path().join("foreign");
    support::make_certs(&foreign_dir, 3);
    let foreign_paths = paths(&foreign_dir, peer);
    let chain = std::fs::read(&foreign_paths.cert).expect("foreign cert");
    let key = std::fs::read(&foreign_paths.key).expect("foreign key");
    let config = client_config(&ca_pem, Some((chain.as_slice(), key.as_slice())));
    let foreign = tls_channel(&settings, &target, leader, move || config.clone()).expect("channel");
    refused.push((
        "foreign CA",
        forward(foreign, &id, peer, leader, "rogue-foreign").await,
    ));
    // An expired certificate from the cluster's CA.
    let (chain, key) = node_certificate(&certs, peer, -30, -1);
    let config = client_config(&ca_pem, Some((chain.as_bytes(), key.as_bytes())));
    let expired = tls_channel(&settings, &target, leader, move || config.clone()).expect("channel");
    refused.push((
        "expired",
        forward(expired, &id, peer, leader, "rogue-expired").await,
    ));
    // The follower's certificate claiming to be the third node.
    refused.push((
        "claims another node",
        forward(genuine.clone(), &id, other, leader, "rogue-impostor").await,
    ));
    // The right identity, another cluster.
    refused.push((
        "another cluster",
        forward(
            genuine.clone(),
            "other-cluster",
            peer,
            leader,
            "rogue-cluster",
        )
        .await,
    ));
    // Meant for the third node, sent to the leader's address: the leader is refused by the
    // caller (its certificate does not name the third node) and would refuse the call (not
    // meant for it).
    let material = PeerTls::load(peer, paths(&certs, peer)).expect("the follower's material");
    let misdirected =
        tls_channel(&settings, &target, other, move || material.client_config()).expect("channel");
    refused.push((
        "wrong node at the address",
        forward(misdirected, &id, peer, other, "rogue-misdirected").await,
    ));
    refused.push((
        "headers for another node",
        forward(genuine, &id, peer, other, "rogue-misrouted").await,
    ));

    for (what, outcome) in &refused {
        assert!(outcome.is_err(), "{what}: the call was accepted");
    }
    // The leader counted the connections its handshake refused (no, foreign, expired
    // certificate; a client that refused the leader shows up as an aborted handshake).
    let counted = cluster
        .metric(leader, "parley_peer_handshakes_refused_total")
        .await;
    assert!(counted >= 3, "refused handshakes counted: {counted}");

    // Nothing a refused caller sent committed, on any node; the genuine write did.
    for via in 1..=3 {
        let (_, body) = cluster
            .api_until(
                via,
                reqwest::Method::GET,
                "/api/v1/admin/directory",
                Some(ADMIN_TOKEN),
                |_, body: &Value| {
                    body["skills"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|s| s["id"] == "genuine"))
                },
            )
            .await;
        let skills = body["skills"].as_array().cloned().unwrap_or_default();
        let rogue: Vec<_> = skills
            .iter()
            .filter_map(|s| s["id"].as_str())
            .filter(|id| id.starts_with("rogue-"))
            .collect();
        assert!(rogue.is_empty(), "node {via} committed {rogue:?}");
    }
    assert!(skills(&cluster, 1).await.contains(&"genuine".to_owned()));
}

/// Writes `contents` to `path` through a temporary file and a rename, as a careful operator
/// (or a secret mount) replaces a file.
fn replace(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).expect("writing a file");
    std::fs::rename(&tmp, path).expect("renaming a file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_and_every_certificate_rotate_under_load_without_a_failed_write() {
    let cluster = Cluster::start_ready(3, "", READY).await;
    let certs = cluster.dir.path().join("certs");
    let next = cluster.dir.path().join("next");
    support::make_certs(&next, 3);
    let old_ca = std::fs::read(certs.join("ca.pem")).expect("ca.pem");
    let new_ca = std::fs::read(next.join("ca.pem")).expect("next ca.pem");

    // Customers post through nodes 2 and 3 throughout (node 1 restarts at the end).
    let cluster_ref = Arc::new(cluster);
    let chat = cluster_ref.start_chat(2, "rotation").await;
    let stop = Arc::new(AtomicBool::new(false));
    let (posted, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = tokio::spawn({
        let (cluster, stop, posted, failed) = (
            cluster_ref.clone(),
            stop.clone(),
            posted.clone(),
            failed.clone(),
        );
        async move {
            let mut failures = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let via = 2 + n % 2;
                match cluster.post(via, &chat, &format!("m{n}"), "rotating").await {
                    Ok(_) => posted.fetch_add(1, Ordering::Relaxed),
                    Err(error) => {
                        failures.push(format!("m{n} via {via}: {error}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            failures
        }
    });
    let reload_all = |cluster: &Cluster| {
        for id in 1..=3 {
            cluster.signal(id, "HUP");
        }
    };
    let settle = || tokio::time::sleep(Duration::from_millis(1_500));

    // 1. Trust both CAs.
    let bundle = [old_ca.as_slice(), new_ca.as_slice()].concat();
    replace(&certs.join("ca.pem"), &bundle);
    reload_all(&cluster_ref);
    settle().await;
    let old_chain = std::fs::read(certs.join("node-2.pem")).expect("node-2.pem");
    let old_key = std::fs::read(certs.join("node-2.key")).expect("node-2.key");
    // 2. New certificates from the new CA (key first: a reload between the two refuses the
    // mismatched pair and keeps the old one, the next reload takes both).
    for id in 1..=3 {
        for ext in ["key", "pem"] {
            let file = format!("node-{id}.{ext}");
            replace(
                &certs.join(&file),
                &std::fs::read(next.join(&file)).expect("new file"),
            );
        }
    }
    reload_all(&cluster_ref);
    settle().await;
    // 3. Trust only the new CA.
    replace(&certs.join("ca.pem"), &new_ca);
    reload_all(&cluster_ref);
    settle().await;

    stop.store(true, Ordering::Relaxed);
    let failures = load.await.expect("load task");
    assert!(
        posted.load(Ordering::Relaxed) > 10,
        "too few writes to show anything"
    );
    assert!(
        failures.is_empty(),
        "writes failed during the rotation: {failures:?}"
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    for id in 1..=3 {
        let changed = cluster_ref
            .metric(
                id,
                "parley_tls_reloads_total{material=\"peer\",outcome=\"changed\"}",
            )
            .await;
        assert!(changed >= 3, "node {id} reloaded {changed} times");
    }

    // Every node now presents a new certificate and trusts only the new CA: node 1, restarted
    // with nothing but the new material, rejoins and its writes commit. Had the others kept
    // their old certificates, its handshakes with them would fail.
    let mut cluster = Arc::try_unwrap(cluster_ref).unwrap_or_else(|_| panic!("cluster shared"));
    cluster.kill9(1);
    cluster.spawn(1);
    cluster.wait_ready(1, READY).await;
    let chat = cluster.start_chat(1, "after-rotation").await;
    cluster
        .post_until_committed(&[1], &chat, "after", "new CA only", Duration::from_secs(10))
        .await;
    // And a certificate from the old CA is now refused.
    let config = client_config(&new_ca, Some((old_chain.as_slice(), old_key.as_slice())));
    let target = cluster.node(1).grpc.clone();
    let stale = tls_channel(&ChannelSettings::default(), &target, 1, move || {
        config.clone()
    })
    .expect("channel");
    let outcome = forward(stale, &cluster_id(), 2, 1, "rogue-old-ca").await;
    assert!(
        outcome.is_err(),
        "a certificate from the retired CA was accepted"
    );
}

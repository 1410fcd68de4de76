//! Writes through a follower travel to the leader in batches (one `Cluster.Forward` RPC for
//! every write waiting on the follower) and each commits exactly once; a malformed forward from
//! a peer is refused, never half-applied.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use parley_proto::v1 as pb;
use parley_raft::network::ChannelSettings;
use parley_raft::route::RouteHeaders;
use parley_raft::tls::connect::tls_channel;
use parley_raft::tls::PeerTls;
use pb::cluster_client::ClusterClient;
use support::{check_events, Cluster};
use tonic::service::interceptor::InterceptedService;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_through_a_follower_share_forwards_and_commit_once() {
    // One forward in flight: every write arriving while it travels waits for the next one.
    let cluster =
        Cluster::start_ready(3, "forward_inflight_max = 1", Duration::from_secs(30)).await;
    let leader = cluster.wait_leader(1, None, Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let chat = cluster.start_chat(follower, "forwarding-1").await;

    const WRITES: usize = 200;
    let posts = (0..WRITES).map(|i| {
        let (cluster, chat) = (&cluster, &chat);
        async move {
            let id = format!("m{i}");
            let seq = cluster
                .post(follower, chat, &id, &format!("message {i}"))
                .await
                .unwrap_or_else(|e| panic!("post {id} through node {follower}: {e}"));
            (id, seq)
        }
    });
    let acked: BTreeMap<String, u64> = futures::future::join_all(posts).await.into_iter().collect();
    let mut seqs: Vec<u64> = acked.values().copied().collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(
        seqs.len(),
        WRITES,
        "every write got a sequence number of its own"
    );

    // Read your writes on the node written through: every acknowledged message is there now.
    let events = cluster.events(follower, &chat).await.expect("events");
    check_events(&events, &acked).unwrap_or_else(|e| panic!("node {follower}: {e}"));

    let rpcs = cluster.metric(follower, "parley_forward_rpcs_total").await;
    let forwarded = cluster
        .metric(follower, "parley_forwarded_writes_total")
        .await;
    assert!(
        forwarded >= WRITES as u64,
        "{forwarded} writes forwarded, expected at least {WRITES}"
    );
    assert!(
        rpcs < forwarded,
        "{forwarded} writes took {rpcs} forward RPCs: none shared one"
    );
    println!("{forwarded} forwarded writes in {rpcs} forward RPCs");
    cluster
        .assert_converged(&[1, 2, 3], Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_a_follower_is_readable_there_when_acknowledged() {
    let cluster = Cluster::start_ready(3, "", Duration::from_secs(30)).await;
    let leader = cluster.wait_leader(1, None, Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let chat = cluster.start_chat(follower, "forwarding-read").await;
    let mut acked = BTreeMap::new();
    for i in 0..150 {
        let id = format!("r{i}");
        let seq = cluster
            .post(follower, &chat, &id, &format!("read me {i}"))
            .await
            .unwrap_or_else(|e| panic!("post {id} through node {follower}: {e}"));
        acked.insert(id, seq);
        // Read at once, on the node written through: the answer came only after it applied.
        // The follower usually applies before the leader's answer arrives anyway; without the
        // wait, one run in three of these 150 writes found a write missing.
        let events = cluster.events(follower, &chat).await.expect("events");
        check_events(&events, &acked)
            .unwrap_or_else(|e| panic!("node {follower} after write {i}: {e}"));
    }
    let forwarded = cluster
        .metric(follower, "parley_forwarded_writes_total")
        .await;
    assert!(
        forwarded >= 150,
        "{forwarded} writes forwarded: the writes did not go through the leader"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_forwards_are_refused() {
    let cluster = Cluster::start_ready(3, "", Duration::from_secs(30)).await;
    let leader = cluster.wait_leader(1, None, Duration::from_secs(10)).await;
    let applied_before = cluster
        .assert_converged(&[1, 2, 3], Duration::from_secs(10))
        .await;
    // A genuine peer (a follower's certificate and route headers): only its input is wrong.
    let peer = (1..=3).find(|id| *id != leader).expect("a follower");
    let certs = cluster.dir.path().join("certs");
    let material = PeerTls::load(peer, parley_node::certs::node_paths(&certs, peer))
        .expect("the follower's TLS material");
    let channel = tls_channel(
        &ChannelSettings::default(),
        &cluster.node(leader).grpc,
        leader,
        move || material.client_config(),
    )
    .expect("a channel to the leader");
    let cluster_id =
        parley_node::config::tls::cluster_id(None, support::SECRET).expect("the cluster id");
    let mut client = ClusterClient::new(InterceptedService::new(
        channel,
        RouteHeaders::new(&cluster_id, peer, leader),
    ));

    let refused = |commands_json: Vec<Vec<u8>>| pb::ForwardRequest {
        commands_json,
        deadline_ms: 1_000,
    };
    let cases = [
        ("too many commands", refused(vec![b"{}".to_vec(); 513])),
        ("not json", refused(vec![b"{not json".to_vec()])),
        ("not a command", refused(vec![br#"{"at_ms":1}"#.to_vec()])),
    ];
    for (what, request) in cases {
        let status = client
            .forward(request)
            .await
            .expect_err(&format!("{what}: refused"));
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status}");
    }
    let empty = client
        .forward(refused(Vec::new()))
        .await
        .expect("an empty forward is answered")
        .into_inner();
    assert!(empty.results.is_empty());

    // A well-formed command out of bounds (a message of 5,000 bytes) is answered as `apply`
    // would answer it, without being proposed.
    let long = parley_raft::Command {
        at_ms: 1,
        origin: 9,
        op: parley_raft::Op::PostMessage(parley_raft::command::PostMessage {
            chat_id: "any-chat".into(),
            sender: parley_raft::command::Participant::Customer,
            client_msg_id: "long-1".into(),
            text: "x".repeat(5_000),
        }),
    };
    let json = serde_json::to_vec(&long).expect("encoding a command");
    let reply = client
        .forward(refused(vec![json]))
        .await
        .expect("a forward of a well-formed command is answered")
        .into_inner();
    let [result] = reply.results.as_slice() else {
        panic!("one result per command: {reply:?}");
    };
    assert_eq!(result.log_index, 0, "a refused command names no log index");
    let Some(pb::forward_result::Outcome::OutcomeJson(outcome)) = &result.outcome else {
        panic!("an outcome: {result:?}");
    };
    let outcome: serde_json::Value = serde_json::from_slice(outcome).expect("outcome JSON");
    assert!(
        outcome.to_string().contains("text"),
        "rejected for its text: {outcome}"
    );

    // Nothing of the refused forwards reached the log (the nodes agree on an unchanged index).
    let applied_after = cluster
        .assert_converged(&[1, 2, 3], Duration::from_secs(10))
        .await;
    assert_eq!(applied_before, applied_after);
}

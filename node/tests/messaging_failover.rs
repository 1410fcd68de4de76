//! Mid-chat, the customer's node and then the agent's node are killed (kill -9); both sides
//! resume their WebSocket streams on other nodes from the last seq they saw, and nothing is
//! lost or duplicated. A stopping node closes its streams with 1012.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use support::{next_frame, wait_for, Cluster, Frame, Ws};

const WAIT: Duration = Duration::from_secs(15);

/// What one side has received of a chat: the chat sequence numbers, in arrival order.
#[derive(Default)]
struct Seen {
    seqs: Vec<u64>,
    texts: BTreeMap<u64, String>,
    /// Agent streams: the last feed seq.
    feed: u64,
}

impl Seen {
    /// A customer stream frame: chat events carry a seq; typing and queue status do not.
    fn record_chat_event(&mut self, event: &Value) {
        if let Some(seq) = event["seq"].as_u64() {
            self.seqs.push(seq);
            if let Some(text) = event["text"].as_str() {
                self.texts.insert(seq, text.to_owned());
            }
        }
    }

    /// An agent stream frame: a feed item, which for chat events carries the chat event.
    fn record_feed_item(&mut self, item: &Value) {
        if let Some(seq) = item["seq"].as_u64() {
            self.feed = seq;
        }
        if item["type"] == "chat_event" {
            self.record_chat_event(&item["event"]);
        }
    }

    fn record(&mut self, frame: &Value, agent: bool) {
        if agent {
            self.record_feed_item(frame);
        } else {
            self.record_chat_event(frame);
        }
    }

    fn last(&self) -> u64 {
        self.seqs.last().copied().unwrap_or(0)
    }

    /// Every seq from `first` on, once, in order.
    fn assert_exactly_once(&self, who: &str, first: u64) {
        let expected: Vec<u64> = (first..first + self.seqs.len() as u64).collect();
        assert_eq!(self.seqs, expected, "{who} saw gaps or duplicates");
    }
}

/// Reads frames until the side has seen chat seq `upto`.
async fn read_until(ws: &mut Ws, seen: &mut Seen, upto: u64, who: &str) {
    let deadline = Instant::now() + WAIT;
    let agent = who.starts_with("agent");
    while seen.last() < upto {
        match next_frame(ws, deadline.saturating_duration_since(Instant::now())).await {
            Frame::Json(frame) => seen.record(&frame, agent),
            other => panic!(
                "{who} waiting for seq {upto} (at {}): {other:?}",
                seen.last()
            ),
        }
    }
}

/// Posts into `chat_id` with `token` through the listed nodes in turn until committed.
async fn post(
    cluster: &Cluster,
    via: &[u64],
    chat_id: &str,
    token: &str,
    id: String,
    text: String,
) -> u64 {
    let deadline = Instant::now() + WAIT;
    let mut attempt = 0;
    loop {
        let node = via[attempt % via.len()];
        attempt += 1;
        let (status, body) = cluster
            .api(
                node,
                Method::POST,
                &format!("/api/v1/chats/{chat_id}/messages"),
                Some(token),
                Some(json!({"client_msg_id": id, "text": text})),
            )
            .await;
        if status.is_success() {
            return body["seq"].as_u64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{id} not committed: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_and_agent_nodes_die_mid_chat() {
    let mut cluster = Cluster::start_ready(3, "", Duration::from_secs(60)).await;
    let alice = cluster.login_ready(2, "alice").await;
    let chat = cluster.start_chat(1, "failover-chat").await;
    let (status, _) = cluster
        .act(2, &alice.token, &chat.chat_id, "accept", None)
        .await;
    assert_eq!(status, 200);

    let mut customer = Seen::default();
    let mut agent = Seen::default();
    let mut customer_ws = cluster
        .connect(
            1,
            &format!("/api/v1/chats/{}/stream?after=0", chat.chat_id),
            &chat.token,
        )
        .await
        .unwrap();
    let mut agent_ws = cluster
        .connect(2, "/api/v1/agents/me/stream?after=0", &alice.token)
        .await
        .unwrap();
    let agent_first_chat_seq = {
        // The agent's feed starts with login, availability, offer, assignment; its first chat
        // event is the agent-joined notice (seq 2 of the chat).
        let joined = wait_for(&mut agent_ws, "agent joined", WAIT, |v| {
            v["type"] == "chat_event" && v["event"]["type"] == "agent_joined"
        })
        .await;
        agent.record_feed_item(&joined);
        joined["event"]["seq"].as_u64().unwrap()
    };

    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..5 {
        let seq = post(
            &cluster,
            &[1],
            &chat.chat_id,
            &chat.token,
            format!("c-{i}"),
            format!("customer {i}"),
        )
        .await;
        acked.insert(format!("c-{i}"), seq);
        let seq = post(
            &cluster,
            &[2],
            &chat.chat_id,
            &alice.token,
            format!("a-{i}"),
            format!("agent {i}"),
        )
        .await;
        acked.insert(format!("a-{i}"), seq);
    }
    let last = *acked.values().max().unwrap();
    read_until(&mut customer_ws, &mut customer, last, "customer").await;
    read_until(&mut agent_ws, &mut agent, last, "agent").await;

    // The customer's node dies. The agent keeps writing through node 2 (retrying through node
    // 3 while a new leader is elected); the customer resumes on node 3 from the last seq seen.
    cluster.kill9(1);
    drop(customer_ws);
    for i in 5..10 {
        let seq = post(
            &cluster,
            &[2, 3],
            &chat.chat_id,
            &alice.token,
            format!("a-{i}"),
            format!("agent {i}"),
        )
        .await;
        acked.insert(format!("a-{i}"), seq);
    }
    let resume_at = customer.last();
    let mut customer_ws = cluster
        .connect(
            3,
            &format!("/api/v1/chats/{}/stream?after={resume_at}", chat.chat_id),
            &chat.token,
        )
        .await
        .unwrap();
    let last = *acked.values().max().unwrap();
    read_until(
        &mut customer_ws,
        &mut customer,
        last,
        "customer after failover",
    )
    .await;

    // Node 1 comes back; then the agent's node dies and the agent resumes on node 1.
    cluster.spawn(1);
    cluster.wait_ready(1, Duration::from_secs(30)).await;
    cluster.kill9(2);
    drop(agent_ws);
    for i in 5..10 {
        let seq = post(
            &cluster,
            &[3, 1],
            &chat.chat_id,
            &chat.token,
            format!("c-{i}"),
            format!("customer {i}"),
        )
        .await;
        acked.insert(format!("c-{i}"), seq);
    }
    let feed_resume = agent.feed;
    let mut agent_ws = cluster
        .connect(
            1,
            &format!("/api/v1/agents/me/stream?after={feed_resume}"),
            &alice.token,
        )
        .await
        .unwrap();
    let last = *acked.values().max().unwrap();
    read_until(&mut agent_ws, &mut agent, last, "agent after failover").await;
    read_until(&mut customer_ws, &mut customer, last, "customer live").await;

    // Both sides saw every event exactly once, in order, across two reconnects.
    customer.assert_exactly_once("customer", 1);
    agent.assert_exactly_once("agent", agent_first_chat_seq);
    for (id, seq) in &acked {
        let text = if id.starts_with('c') {
            "customer"
        } else {
            "agent"
        };
        assert!(
            customer.texts[seq].starts_with(text),
            "customer copy of {id}"
        );
        assert!(agent.texts[seq].starts_with(text), "agent copy of {id}");
    }

    // The agent's console is true: still logged in, the chat still theirs, now on node 1.
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, console) = cluster
            .api(
                1,
                Method::GET,
                "/api/v1/agents/me/activities",
                Some(&alice.token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{console}");
        assert_eq!(console["logged_in"], true);
        assert_eq!(console["activities"][0]["id"], chat.chat_id.as_str());
        assert_eq!(console["activities"][0]["status"]["state"], "assigned");
        if console["node"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "presence never moved to node 1: {console}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, view) = cluster
        .api(
            3,
            Method::GET,
            &format!("/api/v1/chats/{}", chat.chat_id),
            Some(&chat.token),
            None,
        )
        .await;
    assert_eq!(view["status"], "open");
    assert_eq!(view["agent"]["agent_id"], "alice");

    cluster.spawn(2);
    cluster.wait_ready(2, Duration::from_secs(30)).await;
    for node in [1, 2, 3] {
        cluster
            .assert_chat_complete(node, &chat, &acked, WAIT)
            .await;
    }
    cluster.assert_converged(&[1, 2, 3], WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_closes_streams_with_1012() {
    let mut cluster = Cluster::start_ready(1, "", Duration::from_secs(60)).await;
    let chat = cluster.start_chat(1, "stopping").await;
    let mut ws = cluster
        .connect(
            1,
            &format!("/api/v1/chats/{}/stream?after=0", chat.chat_id),
            &chat.token,
        )
        .await
        .unwrap();
    wait_for(&mut ws, "started", WAIT, |v| v["type"] == "started").await;
    let stopper = std::thread::spawn(move || {
        let status = cluster.terminate(1);
        (cluster, status)
    });
    let deadline = Instant::now() + WAIT;
    let code = loop {
        match next_frame(&mut ws, deadline.saturating_duration_since(Instant::now())).await {
            Frame::Json(_) => continue,
            Frame::Closed(code, reason) => {
                assert!(reason.contains("another node"), "{reason}");
                break code;
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, 1012);
    let (_cluster, status) = stopper.join().unwrap();
    assert!(status.success(), "{status:?}");
}

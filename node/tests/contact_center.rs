//! The contact-center service through HTTP and WebSocket against real processes: a chat's whole
//! life across nodes, routing rules, callbacks, business hours, admin and supervision.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use support::{send_json, wait_for, Cluster, ADMIN_TOKEN, PASSWORD};

const WAIT: Duration = Duration::from_secs(10);

/// A bad request: method, path, token, body, then the expected status and error code.
type Case = (
    Method,
    String,
    Option<String>,
    Option<Value>,
    u16,
    &'static str,
);

fn is_type(kind: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == kind
}

fn chat_event(kind: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == "chat_event" && v["event"]["type"] == kind
}

/// Customer on node 1, agents on nodes 2 and 3: offer, accept, messages both ways, typing
/// across nodes, transfer to another agent, end by the agent, survey, transcript.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_lifecycle_across_nodes() {
    let cluster = Cluster::start_ready(3, "", Duration::from_secs(60)).await;
    let alice = cluster.login_ready(2, "alice").await;
    let mut alice_ws = cluster
        .connect(2, "/api/v1/agents/me/stream?after=0", &alice.token)
        .await
        .unwrap();
    wait_for(
        &mut alice_ws,
        "alice's login in her feed",
        WAIT,
        is_type("logged_in"),
    )
    .await;

    let chat = cluster.start_chat(1, "life-1").await;
    let path = |suffix: &str| format!("/api/v1/chats/{}{suffix}", chat.chat_id);
    let mut customer_ws = cluster
        .connect(1, &path("/stream?after=0"), &chat.token)
        .await
        .unwrap();
    let started = wait_for(&mut customer_ws, "started", WAIT, is_type("started")).await;
    assert_eq!(started["seq"], 1);

    // Offered to alice (the only ready agent with the sales skill); she accepts on node 3.
    let offered = wait_for(&mut alice_ws, "offer", WAIT, is_type("offered")).await;
    assert_eq!(offered["activity_id"], chat.chat_id.as_str());
    let (status, activity) = cluster
        .act(3, &alice.token, &chat.chat_id, "accept", None)
        .await;
    assert_eq!(status, 200, "{activity}");
    assert_eq!(activity["status"]["state"], "assigned");
    let joined = wait_for(
        &mut customer_ws,
        "agent joined",
        WAIT,
        is_type("agent_joined"),
    )
    .await;
    assert_eq!(joined["agent_name"], "Alice");

    // Messages both ways, each delivered to the other side's stream on another node.
    let seq = cluster
        .post(1, &chat, "c-1", "hello, my order is late")
        .await
        .unwrap();
    let got = wait_for(
        &mut alice_ws,
        "customer message",
        WAIT,
        chat_event("message"),
    )
    .await;
    assert_eq!(got["event"]["seq"], seq);
    assert_eq!(got["event"]["text"], "hello, my order is late");
    let (status, body) = cluster
        .api(
            2,
            Method::POST,
            &path("/messages"),
            Some(&alice.token),
            Some(json!({"client_msg_id": "a-1", "text": "Let me check that for you."})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let reply = wait_for(&mut customer_ws, "agent message", WAIT, |v| {
        v["type"] == "message" && v["from"]["role"] == "agent"
    })
    .await;
    assert_eq!(reply["from"]["role"], "agent");
    assert_eq!(reply["text"], "Let me check that for you.");

    // Typing: ephemeral, from node 1 to alice's stream on node 2.
    send_json(&mut customer_ws, json!({"type": "typing"})).await;
    let typing = wait_for(&mut alice_ws, "typing", WAIT, is_type("typing")).await;
    assert_eq!(typing["chat_id"], chat.chat_id.as_str());
    assert!(
        typing.get("seq").is_none(),
        "typing is not sequenced: {typing}"
    );

    // The customer's view on node 3.
    let (status, view) = cluster
        .api(3, Method::GET, &path(""), Some(&chat.token), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(view["agent"]["name"], "Alice");
    assert_eq!(view["status"], "open");

    // Transfer to bob, logged in on node 3.
    let bob = cluster.login_ready(3, "bob").await;
    let (status, body) = cluster
        .act(
            2,
            &alice.token,
            &chat.chat_id,
            "transfer",
            Some(json!({"to": "agent", "agent_id": "bob"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_for(&mut customer_ws, "agent left", WAIT, is_type("agent_left")).await;
    let transferred = wait_for(
        &mut customer_ws,
        "transferred",
        WAIT,
        is_type("transferred"),
    )
    .await;
    assert_eq!(transferred["agent_id"], "bob");
    wait_for(&mut alice_ws, "released", WAIT, is_type("released")).await;
    let (_, alice_view) = cluster
        .api(
            2,
            Method::GET,
            "/api/v1/agents/me/activities",
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(alice_view["activities"], json!([]), "{alice_view}");
    let (status, body) = cluster
        .act(3, &bob.token, &chat.chat_id, "accept", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let joined = wait_for(
        &mut customer_ws,
        "bob joined",
        WAIT,
        is_type("agent_joined"),
    )
    .await;
    assert_eq!(joined["agent_name"], "Bob");

    // Bob completes: the chat ends and the customer is told.
    let (status, body) = cluster
        .act(3, &bob.token, &chat.chat_id, "complete", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"]["state"], "completed");
    let ended = wait_for(&mut customer_ws, "ended", WAIT, is_type("ended")).await;
    assert_eq!(ended["by"]["role"], "agent");

    // Survey, once; a different second rating is refused.
    let (status, view) = cluster
        .api(
            2,
            Method::POST,
            &path("/survey"),
            Some(&chat.token),
            Some(json!({"rating": 5, "comment": "great"})),
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["survey"]["rating"], 5);
    let (status, _) = cluster
        .api(
            1,
            Method::POST,
            &path("/survey"),
            Some(&chat.token),
            Some(json!({"rating": 1})),
        )
        .await;
    assert_eq!(status, 409);
    // The agent cannot rate.
    let (status, _) = cluster
        .api(
            1,
            Method::POST,
            &path("/survey"),
            Some(&bob.token),
            Some(json!({"rating": 1})),
        )
        .await;
    assert!(status == 403 || status == 401, "{status}");

    // Transcripts.
    let text = cluster
        .client
        .get(cluster.url(2, &path("/transcript?format=text")))
        .bearer_auth(&chat.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "hello, my order is late",
        "Alice joined",
        "Transferred to Bob",
        "Bob joined",
        "Chat ended",
        "Rated 5/5",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from\n{text}");
    }
    let (status, json) = cluster
        .api(
            3,
            Method::GET,
            &path("/transcript"),
            Some(&chat.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let events = json["events"].as_array().unwrap();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["seq"], i as u64 + 1);
    }
    assert_eq!(json["chat"]["status"], "ended");

    cluster.assert_converged(&[1, 2, 3], WAIT).await;
}

/// Longest idle first, skills, per-agent limits, and an unanswered offer pushed back to the
/// queue with the agent made not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_rules_and_offer_timeout() {
    let cluster = Cluster::start_ready(3, "", Duration::from_secs(60)).await;
    let bob = cluster.login_ready(1, "bob").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let carmen = cluster.login_ready(2, "carmen").await;
    cluster.login_ready(3, "alice").await;

    // The French queue needs the french skill (bob, carmen); bob has been idle longest.
    let c1 = cluster.start_chat_in(1, "route-1", "french").await;
    let agent_of = |view: &Value| {
        view["activity"]["agent_id"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let (_, view) = cluster
        .api(
            1,
            Method::GET,
            &format!("/api/v1/chats/{}", c1.chat_id),
            Some(&c1.token),
            None,
        )
        .await;
    assert_eq!(view["activity"]["state"], "offered", "{view}");
    assert_eq!(agent_of(&view), "bob");

    // Bob lets the 1.5 s offer expire: it goes to carmen, and bob is made not ready.
    let mut bob_ws = cluster
        .connect(1, "/api/v1/agents/me/stream?after=0", &bob.token)
        .await
        .unwrap();
    let withdrawn = wait_for(
        &mut bob_ws,
        "offer withdrawn",
        WAIT,
        is_type("offer_withdrawn"),
    )
    .await;
    assert_eq!(withdrawn["reason"], "offer_timeout");
    let availability = wait_for(&mut bob_ws, "not ready", WAIT, is_type("availability")).await;
    assert_eq!(availability["ready"]["chat"], false);
    assert_eq!(availability["reason"], "missed_offer");
    let (_, view) = cluster
        .api_until(
            2,
            Method::GET,
            &format!("/api/v1/chats/{}", c1.chat_id),
            Some(&c1.token),
            |_, view| view["activity"]["agent_id"] == "carmen",
        )
        .await;
    assert_eq!(view["activity"]["state"], "offered", "{view}");
    let (status, _) = cluster
        .act(2, &carmen.token, &c1.chat_id, "accept", None)
        .await;
    assert_eq!(status, 200);

    // Carmen is at her limit of one chat, bob is not ready, alice lacks the skill: the next
    // French chat waits, with a position and an estimated wait.
    let c2 = cluster.start_chat_in(3, "route-2", "french").await;
    let (_, view) = cluster
        .api(
            3,
            Method::GET,
            &format!("/api/v1/chats/{}", c2.chat_id),
            Some(&c2.token),
            None,
        )
        .await;
    assert_eq!(view["activity"]["state"], "queued", "{view}");
    assert_eq!(view["position"], 1);
    assert!(view["estimated_wait_s"].as_u64().unwrap() > 0);
    // Node 3 took the last write, so it has applied everything before it too.
    let (_, stats) = cluster
        .api(
            3,
            Method::GET,
            "/api/v1/supervisor/queues",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    let french = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue_id"] == "french")
        .unwrap();
    assert_eq!(french["waiting"], 1, "{stats}");
    assert_eq!(french["assigned"], 1);

    // A sales chat goes to alice (carmen is full, bob not ready).
    let c3 = cluster.start_chat(2, "route-3").await;
    let (_, view) = cluster
        .api(
            2,
            Method::GET,
            &format!("/api/v1/chats/{}", c3.chat_id),
            Some(&c3.token),
            None,
        )
        .await;
    assert_eq!(agent_of(&view), "alice", "{view}");

    // Carmen finishes: the waiting French chat is offered to her.
    let (status, _) = cluster
        .act(
            1,
            &carmen.token,
            &c1.chat_id,
            "complete",
            Some(json!({"outcome": "solved"})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, view) = cluster
        .api(
            1,
            Method::GET,
            &format!("/api/v1/chats/{}", c2.chat_id),
            Some(&c2.token),
            None,
        )
        .await;
    assert_eq!(agent_of(&view), "carmen", "{view}");

    // Queue-to-queue: carmen accepts it and sends it to the sales queue, where alice (sales
    // skill, one chat of two) is the only ready agent with room. The customer is told.
    let (status, _) = cluster
        .act(1, &carmen.token, &c2.chat_id, "accept", None)
        .await;
    assert_eq!(status, 200);
    let (status, moved) = cluster
        .act(
            1,
            &carmen.token,
            &c2.chat_id,
            "transfer",
            Some(json!({"to": "queue", "queue_id": "sales"})),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["queue_id"], "sales");
    assert_eq!(moved["status"]["agent_id"], "alice", "{moved}");
    let (_, events) = cluster
        .api(
            1,
            Method::GET,
            &format!("/api/v1/chats/{}/events", c2.chat_id),
            Some(&c2.token),
            None,
        )
        .await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["started", "agent_joined", "agent_left", "transferred"],
        "{events}"
    );
    assert_eq!(events["events"][3]["queue_id"], "sales");

    // Bob's missed offer is on record for supervisors.
    let (_, agent_view) = cluster
        .api(
            2,
            Method::GET,
            "/api/v1/supervisor/agents",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert!(agent_view
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["agent_id"] == "bob" && a["not_ready_reason"] == "missed_offer"));
    // A supervisor reads any activity, with its whole history; nobody else does.
    let path = format!("/api/v1/supervisor/activities/{}", c2.chat_id);
    let (status, activity) = cluster
        .api(3, Method::GET, &path, Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200, "{activity}");
    assert_eq!(activity["id"], c2.chat_id.as_str());
    assert_eq!(activity["status"]["agent_id"], "alice", "{activity}");
    let reasons: Vec<&str> = activity["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"transferred"), "{reasons:?}");
    assert!(
        activity.get("island_conflicts").is_none(),
        "no site was cut off: {activity}"
    );
    let (status, _) = cluster
        .api(3, Method::GET, &path, Some(&c2.token), None)
        .await;
    assert!(status == 401 || status == 403, "a chat token: {status}");
    let (status, body) = cluster
        .api(
            3,
            Method::GET,
            "/api/v1/supervisor/activities/no-such-activity",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_activity", "{body}");
    cluster.assert_converged(&[1, 2, 3], WAIT).await;
}

/// A callback is routed when due and completed with an outcome; a closed queue answers its
/// off-hours message; a customer abandoning before assignment frees the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_off_hours_and_abandonment() {
    let cluster = Cluster::start_ready(3, "", Duration::from_secs(60)).await;

    let (status, body) = cluster
        .api(
            1,
            Method::POST,
            "/api/v1/chats",
            None,
            Some(json!({"request_id": "closed-1", "queue_id": "closed",
            "customer": {"name": "Eve", "email": "eve@example.com"}})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "off_hours");
    assert_eq!(body["error"]["message"], "We are closed for the test.");

    // Abandonment: nobody is ready, the customer leaves.
    let waiting = cluster.start_chat(2, "abandon-1").await;
    let (status, body) = cluster
        .api(
            3,
            Method::POST,
            &format!("/api/v1/chats/{}/end", waiting.chat_id),
            Some(&waiting.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, view) = cluster
        .api_until(
            1,
            Method::GET,
            &format!("/api/v1/chats/{}", waiting.chat_id),
            Some(&waiting.token),
            |_, view| view["activity"]["state"] == "abandoned",
        )
        .await;
    assert_eq!(view["status"], "ended", "{view}");

    // A callback due in two seconds, while alice is ready for callbacks.
    let alice = cluster.login_ready(1, "alice").await;
    let mut alice_ws = cluster
        .connect(1, "/api/v1/agents/me/stream?after=0", &alice.token)
        .await
        .unwrap();
    let due = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2);
    let body = json!({"request_id": "cb-1", "queue_id": "callbacks", "name": "Dan",
        "phone": "+33123456789", "requested_at": due.to_string()});
    let (status, created) = cluster
        .api(
            2,
            Method::POST,
            "/api/v1/callbacks",
            None,
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let (status, again) = cluster
        .api(3, Method::POST, "/api/v1/callbacks", None, Some(body))
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["activity_id"], created["activity_id"]);
    let id = created["activity_id"].as_str().unwrap().to_owned();
    let offered = wait_for(&mut alice_ws, "callback offer", WAIT, is_type("offered")).await;
    assert_eq!(offered["activity_id"], id.as_str());
    assert_eq!(offered["channel"], "callback");
    assert!(offered["at_ms"].as_u64().unwrap() >= created["due_at_ms"].as_u64().unwrap());
    let (status, _) = cluster
        .api(
            2,
            Method::POST,
            &format!("/api/v1/activities/{id}/accept"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (_, console) = cluster
        .api(
            2,
            Method::GET,
            "/api/v1/agents/me/activities",
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(
        console["activities"][0]["callback"]["phone"], "+33123456789",
        "{console}"
    );
    let (status, body) = cluster
        .api(
            3,
            Method::POST,
            &format!("/api/v1/activities/{id}/complete"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 400, "a callback needs an outcome: {body}");
    let (status, body) = cluster
        .api(
            3,
            Method::POST,
            &format!("/api/v1/activities/{id}/complete"),
            Some(&alice.token),
            Some(json!({"outcome": "reached"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"]["outcome"], "reached");
    let states: Vec<&str> = body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"]["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["scheduled", "queued", "offered", "assigned", "completed"]
    );
    cluster.assert_converged(&[1, 2, 3], WAIT).await;
}

/// The admin API changes the directory on every node; supervisors see live views.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_directory_and_supervision() {
    let cluster = Cluster::start_ready(3, "", Duration::from_secs(60)).await;
    let admin = Some(ADMIN_TOKEN);
    let (status, body) = cluster
        .api(
            1,
            Method::GET,
            "/api/v1/admin/directory",
            Some("wrong-token"),
            None,
        )
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = cluster
        .api(1, Method::GET, "/api/v1/admin/directory", None, None)
        .await;
    assert_eq!(status, 401);

    let (status, body) = cluster
        .api(
            1,
            Method::PUT,
            "/api/v1/admin/skills/german",
            admin,
            Some(json!({"name": "German"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = cluster
        .api(
            2,
            Method::PUT,
            "/api/v1/admin/departments/dach",
            admin,
            Some(json!({"name": "DACH"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = cluster
        .api(3, Method::PUT, "/api/v1/admin/queues/german", admin,
            Some(json!({"name": "German", "department": "dach", "skills": ["german"], "offer_timeout_ms": 5000})))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = cluster
        .api(1, Method::PUT, "/api/v1/admin/agents/dieter", admin,
            Some(json!({"name": "Dieter", "skills": ["german"], "limits": {"chat": 2}, "password": "dieter-password"})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.to_string().find("argon2").is_none(),
        "no hash leaks: {body}"
    );
    // Refused changes: a skill in use, an unknown skill, a bad time zone.
    let (status, body) = cluster
        .api(
            2,
            Method::DELETE,
            "/api/v1/admin/skills/german",
            admin,
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = cluster
        .api(
            2,
            Method::PUT,
            "/api/v1/admin/queues/x",
            admin,
            Some(json!({"name": "X", "skills": ["klingon"]})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = cluster
        .api(
            2,
            Method::PUT,
            "/api/v1/admin/queues/german/business_hours",
            admin,
            Some(json!({"time_zone": "Mars/Base", "intervals": []})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // The new agent logs in on another node and takes a chat from the new queue.
    let (status, body) = cluster
        .api(
            2,
            Method::POST,
            "/api/v1/agents/login",
            None,
            Some(json!({"agent_id": "dieter", "password": "dieter-password"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let dieter = body["token"].as_str().unwrap().to_owned();
    let (status, _) = cluster
        .api(
            3,
            Method::PUT,
            "/api/v1/agents/me/availability",
            Some(&dieter),
            Some(json!({"channels": {"chat": true}})),
        )
        .await;
    assert_eq!(status, 200);

    let mut supervisor = cluster
        .connect(3, "/api/v1/supervisor/stream", ADMIN_TOKEN)
        .await
        .unwrap();
    wait_for(&mut supervisor, "first snapshot", WAIT, is_type("snapshot")).await;
    let chat = cluster.start_chat_in(1, "german-1", "german").await;
    let snapshot = wait_for(&mut supervisor, "dieter offered", WAIT, |v| {
        v["type"] == "snapshot"
            && v["agents"].as_array().is_some_and(|agents| {
                agents
                    .iter()
                    .any(|a| a["agent_id"] == "dieter" && a["load"]["chat"] == 1)
            })
    })
    .await;
    assert!(snapshot["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["queue_id"] == "german" && q["offered"] == 1));
    let (status, _) = cluster.act(1, &dieter, &chat.chat_id, "accept", None).await;
    assert_eq!(status, 200);

    // The queue cannot go while it holds live work.
    let (status, _) = cluster
        .api(
            1,
            Method::DELETE,
            "/api/v1/admin/queues/german",
            admin,
            None,
        )
        .await;
    assert_eq!(status, 409);
    let (status, directory) = cluster
        .api(2, Method::GET, "/api/v1/admin/directory", admin, None)
        .await;
    assert_eq!(status, 200);
    assert!(directory["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["id"] == "german" && q["department"] == "dach"));
    cluster.assert_converged(&[1, 2, 3], WAIT).await;
}

/// Agent sessions: a token works on every node until logout, a new login replaces the old
/// session, logout is refused while holding work, bad credentials are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sessions_and_bad_input() {
    let cluster = Cluster::start_ready(3, "", Duration::from_secs(60)).await;
    let login = |agent: &str, password: &str| {
        let body = json!({"agent_id": agent, "password": password});
        cluster.api(2, Method::POST, "/api/v1/agents/login", None, Some(body))
    };
    let (status, body) = login("alice", "wrong-password").await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (401, Some("invalid_credentials"))
    );
    let (status, body) = login("nobody", PASSWORD).await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (401, Some("invalid_credentials"))
    );
    let (status, _) = login(&"a".repeat(100), PASSWORD).await;
    assert_eq!(status, 400);
    let chat = cluster.start_chat(1, "sessions-1").await;
    cluster.assert_converged(&[1, 2, 3], WAIT).await;
    let digest_before = cluster.cluster_view(1).await.unwrap()["state_digest"].clone();
    let cases: Vec<Case> = vec![
        (
            Method::GET,
            "/api/v1/agents/me/activities".into(),
            None,
            None,
            401,
            "unauthorized",
        ),
        (
            Method::GET,
            "/api/v1/agents/me/activities".into(),
            Some(chat.token.clone()),
            None,
            401,
            "unauthorized",
        ),
        (
            Method::GET,
            "/api/v1/agents/me/activities".into(),
            Some("pa1.alice.s.00".into()),
            None,
            401,
            "unauthorized",
        ),
        (
            Method::POST,
            "/api/v1/agents/login".into(),
            None,
            Some(json!({"agent_id": "alice"})),
            400,
            "malformed_json",
        ),
        (
            Method::GET,
            "/api/v1/admin/directory".into(),
            Some(chat.token.clone()),
            None,
            401,
            "unauthorized",
        ),
        (
            Method::POST,
            "/api/v1/callbacks".into(),
            None,
            Some(
                json!({"request_id": "cb", "queue_id": "callbacks", "name": "D", "phone": "12345"}),
            ),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/api/v1/callbacks".into(),
            None,
            Some(
                json!({"request_id": "cb", "queue_id": "sales", "name": "D", "phone": "+3312345678"}),
            ),
            // Well-formed, but the queue takes chats: a conflict with the directory.
            409,
            "conflict",
        ),
        (
            Method::POST,
            "/api/v1/callbacks".into(),
            None,
            Some(
                json!({"request_id": "cb", "queue_id": "callbacks", "name": "D", "phone": "+3312345678", "requested_at": "tomorrow"}),
            ),
            400,
            "invalid_field",
        ),
        (
            Method::GET,
            format!("/api/v1/chats/{}/transcript?format=pdf", chat.chat_id),
            Some(chat.token.clone()),
            None,
            400,
            "invalid_query",
        ),
        (
            Method::POST,
            format!("/api/v1/chats/{}/survey", chat.chat_id),
            Some(chat.token.clone()),
            Some(json!({"rating": 9})),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            format!("/api/v1/chats/{}/survey", chat.chat_id),
            Some(chat.token.clone()),
            Some(json!({"rating": 4})),
            409,
            "conflict",
        ),
    ];
    for (i, (method, path, token, body, status, code)) in cases.into_iter().enumerate() {
        let (got, body) = cluster.api(3, method, &path, token.as_deref(), body).await;
        assert_eq!(
            (got.as_u16(), body["error"]["code"].as_str().unwrap_or("")),
            (status, code),
            "case {i} {path}: {body}"
        );
    }
    // None of it changed the state.
    cluster.assert_converged(&[1, 2, 3], WAIT).await;
    assert_eq!(
        cluster.cluster_view(2).await.unwrap()["state_digest"],
        digest_before
    );

    let alice = cluster.login_ready(1, "alice").await;
    let agent_cases: Vec<(Method, String, Option<Value>, u16, &str)> = vec![
        (
            Method::POST,
            "/api/v1/activities/nope/accept".into(),
            None,
            404,
            "unknown_activity",
        ),
        (
            Method::POST,
            format!("/api/v1/activities/{}/transfer", chat.chat_id),
            Some(json!({"to": "moon"})),
            400,
            "malformed_json",
        ),
        (
            Method::POST,
            format!("/api/v1/activities/{}/complete", chat.chat_id),
            Some(json!({"outcome": "x"})),
            409,
            "conflict",
        ),
        (
            Method::PUT,
            "/api/v1/agents/me/availability".into(),
            Some(json!({"channels": {"fax": true}})),
            400,
            "malformed_json",
        ),
        (
            Method::PUT,
            "/api/v1/agents/me/availability".into(),
            Some(json!({"channels": {}, "reason": "Lunch Break"})),
            400,
            "invalid_field",
        ),
        (
            Method::GET,
            "/api/v1/agents/me/events?after=0&limit=5000".into(),
            None,
            400,
            "invalid_query",
        ),
    ];
    for (i, (method, path, body, status, code)) in agent_cases.into_iter().enumerate() {
        let (got, body) = cluster
            .api(2, method, &path, Some(&alice.token), body)
            .await;
        assert_eq!(
            (got.as_u16(), body["error"]["code"].as_str().unwrap_or("")),
            (status, code),
            "agent case {i} {path}: {body}"
        );
    }

    // Alice holds the chat: logout refused; the token works on every node.
    let (status, _) = cluster
        .act(3, &alice.token, &chat.chat_id, "accept", None)
        .await;
    assert_eq!(status, 200);
    let (status, body) = cluster
        .api(
            2,
            Method::POST,
            "/api/v1/agents/logout",
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    // Another chat's agent cannot read this chat; the customer of another chat neither.
    let other = cluster.start_chat(1, "sessions-2").await;
    let (status, _) = cluster
        .api(
            1,
            Method::GET,
            &format!("/api/v1/chats/{}/events", chat.chat_id),
            Some(&other.token),
            None,
        )
        .await;
    assert_eq!(status, 401);
    // A second login replaces the first session everywhere; the work stays, and a stream
    // of the old session is told and closed.
    let mut old_stream = cluster
        .connect(1, "/api/v1/agents/me/stream?after=0", &alice.token)
        .await
        .unwrap();
    let again = cluster.login_ready(3, "alice").await;
    wait_for(&mut old_stream, "logged out", WAIT, is_type("logged_out")).await;
    let closed = loop {
        match support::next_frame(&mut old_stream, WAIT).await {
            support::Frame::Json(_) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(closed, support::Frame::Closed(4001, _)),
        "{closed:?}"
    );
    let (status, body) = cluster
        .api_until(
            1,
            Method::GET,
            "/api/v1/agents/me/activities",
            Some(&alice.token),
            |status, _| status != 200,
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (401, Some("session_ended"))
    );
    let (_, console) = cluster
        .api_until(
            2,
            Method::GET,
            "/api/v1/agents/me/activities",
            Some(&again.token),
            |status, _| status == 200,
        )
        .await;
    let held = console["activities"].as_array().unwrap();
    assert!(
        held.iter()
            .any(|a| a["id"] == chat.chat_id.as_str() && a["status"]["state"] == "assigned"),
        "{console}"
    );
    // A stream with the old token is refused at the handshake.
    let refused = cluster
        .connect(1, "/api/v1/agents/me/stream", &alice.token)
        .await
        .err();
    assert_eq!(refused.as_deref(), Some("http 401"));
    // Complete, then logout works and ends the session.
    let (status, _) = cluster
        .act(2, &again.token, &chat.chat_id, "complete", None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = cluster
        .api(
            2,
            Method::POST,
            "/api/v1/agents/logout",
            Some(&again.token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    cluster
        .api_until(
            3,
            Method::GET,
            "/api/v1/agents/me/activities",
            Some(&again.token),
            |status, _| status == 401,
        )
        .await;
    cluster.assert_converged(&[1, 2, 3], WAIT).await;
}

/// The customer ends an assigned chat and the agent is told and freed; a silent customer's chat
/// is ended by the system after the queue's inactivity timeout, and both sides are told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_end_and_inactivity_timeout() {
    let cluster = Cluster::start_ready(3, "", Duration::from_secs(60)).await;
    let alice = cluster.login_ready(2, "alice").await;
    let mut alice_ws = cluster
        .connect(3, "/api/v1/agents/me/stream?after=0", &alice.token)
        .await
        .unwrap();

    let chat = cluster.start_chat(1, "ending-1").await;
    let (status, _) = cluster
        .act(2, &alice.token, &chat.chat_id, "accept", None)
        .await;
    assert_eq!(status, 200);
    let (status, body) = cluster
        .api(
            1,
            Method::POST,
            &format!("/api/v1/chats/{}/end", chat.chat_id),
            Some(&chat.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ended = wait_for(
        &mut alice_ws,
        "the customer's end",
        WAIT,
        chat_event("ended"),
    )
    .await;
    assert_eq!(ended["event"]["by"]["role"], "customer");
    let released = wait_for(&mut alice_ws, "release", WAIT, is_type("released")).await;
    assert_eq!(released["reason"], "ended_by_customer");
    assert_eq!(released["activity_id"], chat.chat_id.as_str());

    // The brief queue ends an assigned chat after 1.5 s of customer silence.
    let quiet = cluster.start_chat_in(3, "quiet-1", "brief").await;
    let (status, _) = cluster
        .act(3, &alice.token, &quiet.chat_id, "accept", None)
        .await;
    assert_eq!(status, 200);
    let mut customer_ws = cluster
        .connect(
            2,
            &format!("/api/v1/chats/{}/stream?after=0", quiet.chat_id),
            &quiet.token,
        )
        .await
        .unwrap();
    let ended = wait_for(&mut customer_ws, "inactivity end", WAIT, is_type("ended")).await;
    assert_eq!(ended["by"]["role"], "system");
    assert_eq!(ended["reason"], "inactivity");
    let released = wait_for(&mut alice_ws, "release", WAIT, |v| {
        v["type"] == "released" && v["activity_id"] == quiet.chat_id.as_str()
    })
    .await;
    assert_eq!(released["reason"], "inactivity");
    let (_, console) = cluster
        .api_until(
            2,
            Method::GET,
            "/api/v1/agents/me/activities",
            Some(&alice.token),
            |_, console| console["activities"] == json!([]),
        )
        .await;
    assert_eq!(console["logged_in"], true);
    cluster.assert_converged(&[1, 2, 3], WAIT).await;
}

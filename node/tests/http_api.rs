//! The HTTP edge against a real process: the chat slice, idempotency, and bad input that must
//! get the right status and leave the state unharmed.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::Cluster;

async fn status_and_code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_slice_and_bad_input() {
    let cluster = Cluster::start_ready(1, "", Duration::from_secs(60)).await;
    let client = &cluster.client;
    let url = |path: &str| cluster.url(1, path);

    // Health endpoints.
    assert_eq!(
        client.get(url("/livez")).send().await.unwrap().status(),
        StatusCode::OK
    );
    let metrics = client
        .get(url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "parley_raft_term",
        "parley_raft_leader_id",
        "parley_raft_commit_index",
        "parley_raft_applied_index",
        "parley_write_latency_seconds_bucket",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    let view = cluster.cluster_view(1).await.unwrap();
    assert_eq!(view["leader"], 1);
    assert_eq!(view["members"][0]["site"], "local");
    assert_eq!(view["state_digest"].as_str().unwrap().len(), 64);

    // Start a chat; a retry with the same request id returns the same chat.
    let chat = cluster.start_chat(1, "req-1").await;
    let again = client
        .post(url("/api/v1/chats"))
        .json(&json!({"request_id": "req-1", "queue_id": "sales",
            "customer": {"name": "Test Customer", "email": "req-1@example.com"}, "question": "testing"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["chat_id"], chat.chat_id.as_str());
    assert_eq!(again["replayed"], true);
    let other = cluster.start_chat(1, "req-2").await;
    assert_ne!(other.chat_id, chat.chat_id);

    // Post, then retry the same client id: same seq, not duplicated.
    let mut acked = BTreeMap::new();
    let seq = cluster.post(1, &chat, "m1", "hello").await.unwrap();
    assert_eq!(seq, 2);
    acked.insert("m1".to_owned(), seq);
    assert_eq!(cluster.post(1, &chat, "m1", "hello").await.unwrap(), 2);
    let seq = cluster.post(1, &chat, "m2", "second").await.unwrap();
    assert_eq!(seq, 3);
    acked.insert("m2".to_owned(), seq);

    let post = |chat_id: &str, token: Option<&str>, body: Value| {
        let mut request = client
            .post(url(&format!("/api/v1/chats/{chat_id}/messages")))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let id = chat.chat_id.as_str();
    let token = Some(chat.token.as_str());
    let cases: Vec<(reqwest::Response, StatusCode, &str)> = vec![
        (
            post(id, token, json!({"client_msg_id": "m1", "text": "changed"}))
                .await
                .unwrap(),
            StatusCode::CONFLICT,
            "idempotency_conflict",
        ),
        (
            post(id, None, json!({"client_msg_id": "x1", "text": "hi"}))
                .await
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            post(
                id,
                Some("garbage"),
                json!({"client_msg_id": "x2", "text": "hi"}),
            )
            .await
            .unwrap(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            post(
                id,
                Some(other.token.as_str()),
                json!({"client_msg_id": "x3", "text": "hi"}),
            )
            .await
            .unwrap(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            post(
                id,
                token,
                json!({"client_msg_id": "x4", "text": "x".repeat(5000)}),
            )
            .await
            .unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            post(id, token, json!({"client_msg_id": "x5", "text": ""}))
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            post(id, token, json!({"client_msg_id": "", "text": "hi"}))
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            post(id, token, json!({"text": "missing id"}))
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            post(
                id,
                token,
                json!({"client_msg_id": "x6", "text": "hi", "extra": 1}),
            )
            .await
            .unwrap(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            post(
                id,
                token,
                json!({"client_msg_id": "x7", "text": "y".repeat(70_000)}),
            )
            .await
            .unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            client
                .post(url(&format!("/api/v1/chats/{id}/messages")))
                .bearer_auth(&chat.token)
                .header("content-type", "application/json")
                .body("{not json")
                .send()
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            client
                .post(url(&format!("/api/v1/chats/{id}/messages")))
                .bearer_auth(&chat.token)
                .header("content-type", "text/plain")
                .body("hi")
                .send()
                .await
                .unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            client
                .post(url("/api/v1/chats"))
                .json(&json!({"request_id": "r9", "queue_id": "nope",
                "customer": {"name": "A", "email": "a@example.com"}}))
                .send()
                .await
                .unwrap(),
            StatusCode::NOT_FOUND,
            "unknown_queue",
        ),
        (
            client
                .post(url("/api/v1/chats"))
                .json(&json!({"request_id": "r10", "queue_id": "sales",
                "customer": {"name": "", "email": "a@example.com"}}))
                .send()
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            client
                .get(url(&format!("/api/v1/chats/{id}/events?after=-1")))
                .bearer_auth(&chat.token)
                .send()
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            client
                .get(url(&format!("/api/v1/chats/{id}/events?limit=0")))
                .bearer_auth(&chat.token)
                .send()
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            client
                .get(url(&format!("/api/v1/chats/{id}/events")))
                .bearer_auth(&other.token)
                .send()
                .await
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            client
                .get(url("/api/v1/nothing-here"))
                .send()
                .await
                .unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (i, (response, status, code)) in cases.into_iter().enumerate() {
        let (got_status, got_code) = status_and_code(response).await;
        assert_eq!((got_status, got_code.as_str()), (status, code), "case {i}");
    }

    // A token that is valid for a chat id that does not exist: 404, not 401.
    let keys = parley_node::token::TokenKeys::new(
        parley_node::token::TokenKey::new("cluster", support::SECRET.as_bytes()),
        Vec::new(),
    );
    let tokens = parley_node::token::ChatTokens::new(keys, Duration::from_secs(60));
    let ghost = tokens.issue("ghost-chat");
    let response = post(
        "ghost-chat",
        Some(&ghost),
        json!({"client_msg_id": "g1", "text": "hi"}),
    )
    .await
    .unwrap();
    assert_eq!(
        status_and_code(response).await,
        (StatusCode::NOT_FOUND, "unknown_chat".to_owned())
    );

    // Nothing above changed the chat.
    cluster
        .assert_chat_complete(1, &chat, &acked, Duration::from_secs(5))
        .await;
    let events = cluster.events(1, &chat).await.unwrap();
    assert_eq!(events.len(), 3, "start + two messages: {events:?}");
    assert_eq!(events[1]["text"], "hello");

    // Long poll: a waiting reader is woken by a new message.
    let waiter = {
        let client = client.clone();
        let url = url(&format!("/api/v1/chats/{id}/events?after=3&wait_ms=10000"));
        let token = chat.token.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let page: Value = client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (page, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cluster.post(1, &chat, "m3", "wake up").await.unwrap(), 4);
    let (page, waited) = waiter.await.unwrap();
    assert_eq!(page["events"][0]["seq"], 4);
    assert_eq!(page["events"][0]["text"], "wake up");
    assert!(
        waited < Duration::from_secs(9),
        "the long poll was not woken ({waited:?})"
    );
}

#[test]
fn bad_config_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "node_id = 1\nsite = \"x\"\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("missing field"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["serve", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent.toml"), "{stderr}");
}

/// The OpenAPI document is served, parses, and describes every fixed path of the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_describes_every_endpoint() {
    let cluster = Cluster::start_ready(1, "", Duration::from_secs(60)).await;
    let response = cluster
        .client
        .get(cluster.url(1, "/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("/api/v1/chats", "post"),
        ("/api/v1/chats/{chat_id}", "get"),
        ("/api/v1/chats/{chat_id}/messages", "post"),
        ("/api/v1/chats/{chat_id}/events", "get"),
        ("/api/v1/chats/{chat_id}/stream", "get"),
        ("/api/v1/chats/{chat_id}/end", "post"),
        ("/api/v1/chats/{chat_id}/survey", "post"),
        ("/api/v1/chats/{chat_id}/transcript", "get"),
        ("/api/v1/callbacks", "post"),
        ("/api/v1/agents/login", "post"),
        ("/api/v1/agents/logout", "post"),
        ("/api/v1/agents/me/availability", "put"),
        ("/api/v1/agents/me/activities", "get"),
        ("/api/v1/agents/me/events", "get"),
        ("/api/v1/agents/me/stream", "get"),
        ("/api/v1/activities/{activity_id}/accept", "post"),
        ("/api/v1/activities/{activity_id}/transfer", "post"),
        ("/api/v1/activities/{activity_id}/complete", "post"),
        ("/api/v1/cluster", "get"),
        ("/api/v1/admin/directory", "get"),
        ("/api/v1/admin/queues/{id}", "put"),
        ("/api/v1/admin/agents/{id}", "delete"),
        ("/api/v1/supervisor/queues", "get"),
        ("/api/v1/supervisor/stream", "get"),
    ];
    for (path, method) in expected {
        assert!(
            paths.get(path).is_some_and(|p| p.get(method).is_some()),
            "{method} {path} is not described"
        );
    }
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for scheme in ["chat_token", "agent_token", "admin_token"] {
        assert!(schemes.contains_key(scheme), "{scheme} missing");
    }
    // Every referenced schema exists.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling reference to {name}");
    }
}

/// Input out of bounds is refused before it is proposed: the answer is the one `apply` would
/// give (400 `invalid_field`), and no log entry is written on any node, whether the write came
/// in through the leader or through a follower that would forward it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_bounds_input_never_reaches_the_log() {
    let cluster = Cluster::start_ready(3, "", Duration::from_secs(60)).await;
    let client = &cluster.client;
    let leader = cluster.wait_leader(1, None, Duration::from_secs(30)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap_or(1);
    let chat = cluster.start_chat(leader, "bounds-1").await;
    let converged = cluster
        .assert_converged(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let log_index = |view: &Value| view["last_log_index"].as_u64();
    let before = log_index(&cluster.cluster_view(leader).await.unwrap());
    for via in [leader, follower] {
        let url = |path: &str| cluster.url(via, path);
        let cases = [
            client
                .post(url(&format!("/api/v1/chats/{}/messages", chat.chat_id)))
                .bearer_auth(&chat.token)
                .json(&json!({"client_msg_id": "long", "text": "x".repeat(5000)})),
            client
                .post(url(&format!("/api/v1/chats/{}/messages", chat.chat_id)))
                .bearer_auth(&chat.token)
                .json(&json!({"client_msg_id": "has space", "text": "hi"})),
            client.post(url("/api/v1/chats")).json(&json!({
                "request_id": "bounds-2", "queue_id": "sales",
                "customer": {"name": "Ada", "email": "not-an-address"}, "question": "?"})),
            client.post(url("/api/v1/chats")).json(&json!({
                "request_id": "bounds-3", "queue_id": "sales",
                "customer": {"name": "Ada", "email": "ada@example.com"},
                "question": "q".repeat(2001)})),
            client.post(url("/api/v1/callbacks")).json(&json!({
                "request_id": "bounds-4", "queue_id": "callbacks", "name": "Ada",
                "phone": "12345"})),
        ];
        for request in cases {
            let response = request.send().await.unwrap();
            assert_eq!(
                status_and_code(response).await,
                (StatusCode::BAD_REQUEST, "invalid_field".to_owned()),
                "through node {via}"
            );
        }
    }
    for id in 1..=3 {
        let view = cluster.cluster_view(id).await.unwrap();
        assert_eq!(log_index(&view), before, "node {id} logged refused input");
    }
    // A well-formed start naming a queue of another kind conflicts with the directory (409),
    // it is not malformed input.
    let wrong_kind = client
        .post(cluster.url(leader, "/api/v1/chats"))
        .json(&json!({"request_id": "bounds-5", "queue_id": "callbacks",
            "customer": {"name": "Ada", "email": "ada@example.com"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_and_code(wrong_kind).await,
        (StatusCode::CONFLICT, "conflict".to_owned())
    );
    // The cluster still takes valid writes afterwards, at the next index.
    assert_eq!(cluster.post(follower, &chat, "ok", "fine").await, Ok(2));
    assert!(converged > 0);
}

/// Abuse limits: chat starts per address and logins per agent are answered 429 with a
/// `Retry-After` once over their quota; a wrong password for an unknown agent costs the same
/// password check as for a known one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    let limits = "\n[rate_limits]\nchat_starts_per_address_per_minute = 3\n\
                  logins_per_agent_per_minute = 2\nlogins_per_address_per_minute = 100\n";
    let cluster = Cluster::start_with(1, limits);
    cluster.wait_ready(1, Duration::from_secs(60)).await;
    let client = &cluster.client;
    let url = |path: &str| cluster.url(1, path);

    let start = |n: u32| {
        client.post(url("/api/v1/chats")).json(&json!({
            "request_id": format!("limit-{n}"), "queue_id": "sales",
            "customer": {"name": "Ada", "email": format!("ada{n}@example.com")}, "question": "?"}))
    };
    for n in 0..3 {
        assert!(start(n).send().await.unwrap().status().is_success());
    }
    let refused = start(3).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((1..=21).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(status_and_code(refused).await.1, "rate_limited".to_owned());

    let login = |agent: &str, password: &str| {
        client
            .post(url("/api/v1/agents/login"))
            .json(&json!({"agent_id": agent, "password": password}))
            .send()
    };
    // Two wrong passwords for alice, then even the right one waits out the quota.
    for _ in 0..2 {
        let (status, code) = status_and_code(login("alice", "wrong-password").await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "invalid_credentials")
        );
    }
    let (status, code) = status_and_code(login("alice", support::PASSWORD).await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );

    // An unknown agent is refused like a wrong password, after a password check of the same
    // cost: the fastest of a few known-agent refusals is not several times slower than the
    // slowest unknown one (without the dummy check it is ~50x).
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for n in 0..2 {
        let started = std::time::Instant::now();
        let (status, _) = status_and_code(login("bob", "wrong-password").await.unwrap()).await;
        if status == StatusCode::UNAUTHORIZED {
            known.push(started.elapsed());
        }
        let started = std::time::Instant::now();
        let (status, code) = status_and_code(
            login(&format!("nobody-{n}"), "wrong-password")
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "invalid_credentials")
        );
        unknown.push(started.elapsed());
    }
    let fastest_known = known.iter().min().copied().unwrap_or_default();
    let slowest_unknown = unknown.iter().max().copied().unwrap_or_default();
    assert!(
        slowest_unknown * 5 > fastest_known,
        "unknown agents answered in {unknown:?}, known ones in {known:?}"
    );
}

/// Rotating the token signing key: with the new key active and the old one verify-only,
/// tokens issued before keep working and new ones are signed by the new key; once the old key
/// is removed, its tokens are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_keys_rotate_without_logging_anyone_out() {
    let mut cluster = Cluster::start_ready(1, "", Duration::from_secs(60)).await;
    let chat = cluster.start_chat(1, "rotate-1").await;
    let agent = cluster.login_ready(1, "alice").await;
    assert!(chat.token.starts_with("pc1.cluster."), "{}", chat.token);
    assert!(agent.token.starts_with("pa2.cluster."), "{}", agent.token);

    let config = cluster.node(1).config.clone();
    let original = std::fs::read_to_string(&config).unwrap();
    let next_key = "\n[[token_keys]]\nid = \"next\"\nsecret = \"a brand new token secret of 32 bytes+\"\nactive = true\n";
    let old_key = format!(
        "\n[[token_keys]]\nid = \"cluster\"\nsecret = \"{}\"\n",
        support::SECRET
    );
    let restart = |cluster: &mut Cluster, text: String| {
        std::fs::write(&config, text).unwrap();
        cluster.terminate(1);
        cluster.spawn(1);
    };
    let chat_status = |cluster: &Cluster, token: String| {
        let request = cluster
            .client
            .get(cluster.url(1, &format!("/api/v1/chats/{}", chat.chat_id)))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status() }
    };
    let agent_status = |cluster: &Cluster| {
        let request = cluster
            .client
            .get(cluster.url(1, "/api/v1/agents/me/activities"))
            .bearer_auth(&agent.token);
        async move { request.send().await.unwrap().status() }
    };

    restart(&mut cluster, format!("{original}{next_key}{old_key}"));
    cluster.wait_ready(1, Duration::from_secs(60)).await;
    assert_eq!(
        chat_status(&cluster, chat.token.clone()).await,
        StatusCode::OK
    );
    assert_eq!(
        agent_status(&cluster).await,
        StatusCode::OK,
        "the old agent token stopped working during the rotation"
    );
    let renewed = cluster.start_chat(1, "rotate-1").await;
    assert!(renewed.token.starts_with("pc1.next."), "{}", renewed.token);
    assert_eq!(renewed.chat_id, chat.chat_id);

    restart(&mut cluster, format!("{original}{next_key}"));
    cluster.wait_ready(1, Duration::from_secs(60)).await;
    assert_eq!(
        chat_status(&cluster, chat.token.clone()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        chat_status(&cluster, renewed.token.clone()).await,
        StatusCode::OK
    );
    assert_eq!(
        agent_status(&cluster).await,
        StatusCode::UNAUTHORIZED,
        "a token of a removed key still works"
    );
}

/// The cluster view answers anyone, and its digest encodes the whole state: it is computed at
/// most once a second however often the view is asked for while writes go on, and once they
/// stop the next view after a second names the latest index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_view_bounds_its_digest_work() {
    let cluster = Cluster::start_ready(1, "", Duration::from_secs(60)).await;
    let digests = || async {
        let text = cluster
            .client
            .get(cluster.url(1, "/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("parley_state_digests_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let chat = cluster.start_chat(1, "digest-1").await;
    let before = digests().await;
    let started = std::time::Instant::now();
    for n in 0..100 {
        if n % 4 == 0 {
            cluster
                .post(1, &chat, &format!("m{n}"), "moving on")
                .await
                .unwrap();
        }
        let view = cluster.cluster_view(1).await.unwrap();
        assert_eq!(view["state_digest"].as_str().map(str::len), Some(64));
    }
    let computed = digests().await - before;
    let bound = started.elapsed().as_secs() + 2;
    assert!(
        computed <= bound,
        "{computed} digests for 100 views (bound {bound})"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let view = cluster.cluster_view(1).await.unwrap();
    assert_eq!(view["applied_index"], view["last_log_index"], "{view}");
}

//! The web pages in a real Chromium against real node processes: a chat between the widget and
//! the console through two nodes, both nodes killed (-9) or silenced (packets dropped) while
//! both sides keep typing, an offer moving to another console, the wallboard against the
//! supervisor API, and the widget embedded on an allowed and a disallowed origin.

mod browser;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use browser::{Browser, Driver, HostPage};
use reqwest::Method;
use serde_json::{json, Value};
use support::{Cluster, ADMIN_TOKEN, PASSWORD};

const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long a page may take to show messages after a failover.
const SETTLE: Duration = Duration::from_secs(45);

/// Signs `agent` in on the console at `url` and makes them ready for chats.
async fn sign_in(page: &Browser, url: &str, agent: &str) {
    page.goto(url).await;
    page.fill("form[data-test=login] input[name=agent_id]", agent)
        .await;
    page.fill("form[data-test=login] input[name=password]", PASSWORD)
        .await;
    page.click("form[data-test=login] button").await;
    page.click("input[data-test=ready-chat]").await;
    page.until(
        "the console saved its availability",
        "const f = document.querySelector('[data-test=availability]'); \
         return f && f.dataset.saved && JSON.parse(f.dataset.saved).chat;",
        browser::STEP_TIMEOUT,
    )
    .await;
}

/// Fills the widget's pre-chat form at `url` and waits for the chat view.
async fn start_chat(page: &Browser, url: &str, name: &str) {
    page.goto(url).await;
    page.fill("form[data-test=pre-chat] input[name=name]", name)
        .await;
    page.fill(
        "form[data-test=pre-chat] input[name=email]",
        &format!("{}@example.com", name.to_lowercase()),
    )
    .await;
    page.fill(
        "form[data-test=pre-chat] textarea[name=question]",
        "Where is my order?",
    )
    .await;
    page.click("form[data-test=pre-chat] button").await;
    page.find("[data-test=messages]").await;
}

/// Types `text` into the composer under `scope` and sends it.
async fn say(page: &Browser, scope: &str, text: &str) {
    page.fill(&format!("{scope} [data-test=composer]"), text)
        .await;
    page.click(&format!("{scope} [data-test=send]")).await;
}

/// The chat id the widget in `page` holds.
async fn widget_chat(page: &Browser) -> (String, String) {
    let saved = page
        .js("return sessionStorage.getItem('parley.chat');", vec![])
        .await;
    let saved: Value = serde_json::from_str(saved.as_str().unwrap_or("null")).unwrap_or_default();
    (
        saved["chat_id"].as_str().unwrap_or_default().to_owned(),
        saved["token"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The texts of a chat's messages as the cluster committed them (through node `via`), in order.
async fn committed_texts(cluster: &Cluster, via: u64, chat_id: &str, token: &str) -> Vec<String> {
    let (status, body) = cluster
        .api(
            via,
            Method::GET,
            &format!("/api/v1/chats/{chat_id}/events?limit=1000"),
            Some(token),
            None,
        )
        .await;
    assert!(status.is_success(), "events: {status} {body}");
    body["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == "message")
                .filter_map(|e| e["text"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `page` shows exactly `want` (as a multiset, each once) under `css`, and answers
/// what it shows, in page order.
async fn shows_exactly(page: &Browser, who: &str, css: &str, want: &[String]) -> Vec<String> {
    let deadline = Instant::now() + SETTLE;
    let mut want_sorted = want.to_vec();
    want_sorted.sort();
    loop {
        let shown = page.messages(css).await;
        let mut sorted = shown.clone();
        sorted.sort();
        if sorted == want_sorted {
            return shown;
        }
        assert!(
            Instant::now() < deadline,
            "the {who} page shows {shown:?}, the cluster committed {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `texts` keep the order of `sent` among themselves.
fn in_order(texts: &[String], sent: &[&str]) -> bool {
    let mine: Vec<&str> = texts
        .iter()
        .map(String::as_str)
        .filter(|t| sent.contains(t))
        .collect();
    mine == sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_between_widget_and_console_survives_killing_both_their_nodes() {
    let mut cluster = Cluster::start_ready(5, "", READY_WITHIN).await;
    cluster.wait_leader(3, None, READY_WITHIN).await;
    let driver = Driver::start().await;
    let agent = driver.browser().await;
    let customer = driver.browser().await;

    sign_in(&agent, &cluster.url(2, "/agent"), "alice").await;
    start_chat(&customer, &cluster.url(1, "/chat?queue=sales"), "Ada").await;
    agent.click(".offer button[data-test=accept]").await;
    agent.find(".chat-panel [data-test=composer]").await;
    customer
        .until(
            "the customer sees the agent join",
            "return document.querySelector('[data-test=chat-status]').textContent.includes('joined');",
            browser::STEP_TIMEOUT,
        )
        .await;

    let customer_sent = [
        "c1",
        "c2",
        "c3",
        "c4 during the outage",
        "c5 during the outage",
    ];
    let agent_sent = [
        "a1",
        "a2",
        "a3",
        "a4 during the outage",
        "a5 during the outage",
    ];
    for i in 0..3 {
        say(&customer, "#parley-chat", customer_sent[i]).await;
        say(&agent, ".chat-panel", agent_sent[i]).await;
    }
    let (chat_id, token) = widget_chat(&customer).await;
    assert!(!chat_id.is_empty(), "the widget keeps its chat id");
    customer
        .until(
            "the customer page shows three agent messages",
            "return document.querySelectorAll('#parley-chat .message.theirs').length >= 3;",
            SETTLE,
        )
        .await;
    customer.screenshot("widget").await;
    agent.screenshot("agent-console").await;

    // Both pages' nodes die at once (5 nodes: a majority is left); both sides keep typing.
    cluster.kill9(1);
    cluster.kill9(2);
    for i in 3..5 {
        say(&customer, "#parley-chat", customer_sent[i]).await;
        say(&agent, ".chat-panel", agent_sent[i]).await;
    }
    let dead = [cluster.node(1).http.clone(), cluster.node(2).http.clone()];
    for (page, who) in [(&customer, "customer"), (&agent, "agent")] {
        page.until(
            &format!("the {who} page reconnects to a live node"),
            &format!(
                "const n = document.documentElement.dataset.parleyStreamNode || ''; \
                 return n && n !== '{}' && n !== '{}';",
                dead[0], dead[1]
            ),
            SETTLE,
        )
        .await;
        page.until(
            &format!("every message the {who} sent is marked sent"),
            "const all = document.querySelectorAll('.message.mine[data-client-msg-id]'); \
             return all.length === 5 && Array.from(all).every(m => m.dataset.state === 'sent');",
            SETTLE,
        )
        .await;
    }

    let committed = committed_texts(&cluster, 3, &chat_id, &token).await;
    let mut expected: Vec<String> = customer_sent
        .iter()
        .chain(agent_sent.iter())
        .map(|s| (*s).to_owned())
        .collect();
    let mut sorted = committed.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(
        sorted, expected,
        "every message sent through the pages is committed exactly once"
    );
    let shown = shows_exactly(
        &customer,
        "customer",
        "#parley-chat .message:not(.question)",
        &committed,
    )
    .await;
    assert!(
        in_order(&shown, &customer_sent),
        "customer's own order: {shown:?}"
    );
    assert!(
        in_order(&shown, &agent_sent),
        "agent's order on the customer page: {shown:?}"
    );
    let shown = shows_exactly(&agent, "agent", ".chat-panel .message", &committed).await;
    assert!(
        in_order(&shown, &agent_sent),
        "agent's own order: {shown:?}"
    );
    assert!(
        in_order(&shown, &customer_sent),
        "customer's order on the console: {shown:?}"
    );
    customer.close().await;
    agent.close().await;
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_leave_a_node_that_went_silent_and_lose_nothing() {
    let cluster = Cluster::start_ready(3, "", READY_WITHIN).await;
    cluster.wait_leader(2, None, READY_WITHIN).await;
    let driver = Driver::start().await;
    let agent = driver.browser().await;
    let customer = driver.browser().await;
    sign_in(&agent, &cluster.url(1, "/agent"), "alice").await;
    start_chat(&customer, &cluster.url(1, "/chat?queue=sales"), "Grace").await;
    agent.click(".offer button[data-test=accept]").await;
    agent.find(".chat-panel [data-test=composer]").await;
    say(&customer, "#parley-chat", "before").await;
    agent
        .until(
            "the console shows the customer's first message",
            "return document.querySelectorAll('.chat-panel .message.theirs').length === 1;",
            SETTLE,
        )
        .await;

    let node1 = cluster.node(1).http.clone();
    let silenced = support::Silenced::port(port_of(&node1));
    let cut = Instant::now();
    let mut moved = BTreeMap::new();
    for (page, who) in [(&customer, "customer"), (&agent, "agent")] {
        let script = format!(
            "const n = document.documentElement.dataset.parleyStreamNode; \
             return n && n !== '{node1}' ? n : null;"
        );
        page.until(
            &format!("the {who} page leaves the silent node"),
            &script,
            Duration::from_secs(15),
        )
        .await;
        moved.insert(who, cut.elapsed());
    }
    // The figure the design aims at (3 s); printed, not asserted: the bound above is liveness.
    println!("pages moved off the silent node after {moved:?}");
    say(&customer, "#parley-chat", "while silent").await;
    say(&agent, ".chat-panel", "answer while silent").await;
    let (chat_id, token) = widget_chat(&customer).await;
    let want: Vec<String> = ["before", "while silent", "answer while silent"]
        .map(str::to_owned)
        .to_vec();
    let deadline = Instant::now() + SETTLE;
    loop {
        let mut committed = committed_texts(&cluster, 2, &chat_id, &token).await;
        committed.sort();
        let mut sorted = want.clone();
        sorted.sort();
        if committed == sorted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "committed {committed:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shows_exactly(
        &customer,
        "customer",
        "#parley-chat .message:not(.question)",
        &want,
    )
    .await;
    shows_exactly(&agent, "agent", ".chat-panel .message", &want).await;
    drop(silenced);
    customer.close().await;
    agent.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_not_accepted_in_time_moves_to_another_console() {
    let cluster = Cluster::start_ready(3, "", READY_WITHIN).await;
    cluster.wait_leader(1, None, READY_WITHIN).await;
    let driver = Driver::start().await;
    let bob = driver.browser().await;
    let carmen = driver.browser().await;
    sign_in(&bob, &cluster.url(2, "/agent"), "bob").await;
    sign_in(&carmen, &cluster.url(3, "/agent"), "carmen").await;
    // A queue only bob and carmen have the skills for, offering for 4 s.
    let (status, body) = cluster
        .api(
            1,
            Method::PUT,
            "/api/v1/admin/queues/short-offers",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "Short offers", "skills": ["french"], "offer_timeout_ms": 4000})),
        )
        .await;
    assert!(status.is_success(), "adding the queue: {status} {body}");
    let chat = cluster
        .start_chat_in(1, "offer-moves", "short-offers")
        .await;
    let selector = format!(".offer[data-activity-id=\"{}\"]", chat.chat_id);
    let script = format!("return document.querySelector('{selector}') !== null;");
    let first = tokio::select! {
        _ = bob.until("bob's offer", &script, browser::STEP_TIMEOUT) => "bob",
        _ = carmen.until("carmen's offer", &script, browser::STEP_TIMEOUT) => "carmen",
    };
    let (missed, other) = if first == "bob" {
        (&bob, &carmen)
    } else {
        (&carmen, &bob)
    };
    // Nobody accepts: the offer times out and goes to the other console, which takes it.
    other
        .until(
            "the offer moves to the other console",
            &script,
            Duration::from_secs(20),
        )
        .await;
    other
        .click(&format!("{selector} button[data-test=accept]"))
        .await;
    missed
        .until(
            "the missed offer leaves the first console",
            &format!("return document.querySelector('{selector}') === null;"),
            Duration::from_secs(20),
        )
        .await;
    other
        .find(&format!(
            ".chat-panel[data-chat-id=\"{}\"] [data-test=composer]",
            chat.chat_id
        ))
        .await;
    bob.close().await;
    carmen.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallboard_shows_what_the_supervisor_api_says() {
    let cluster = Cluster::start_ready(3, "", READY_WITHIN).await;
    cluster.wait_leader(1, None, READY_WITHIN).await;
    for i in 0..3 {
        cluster.start_chat(1, &format!("wallboard-{i}")).await;
    }
    let alice = cluster.login_ready(2, "alice").await;
    let driver = Driver::start().await;
    let page = driver.browser().await;
    page.goto(&cluster.url(3, "/supervisor")).await;
    page.fill("form[data-test=admin-login] input[name=token]", ADMIN_TOKEN)
        .await;
    page.click("form[data-test=admin-login] button").await;
    page.find("[data-test=queues] tbody tr").await;

    let deadline = Instant::now() + SETTLE;
    loop {
        let (status, api) = cluster
            .api(
                3,
                Method::GET,
                "/api/v1/supervisor/queues",
                Some(ADMIN_TOKEN),
                None,
            )
            .await;
        assert!(status.is_success());
        let shown = page
            .js(
                "return Array.from(document.querySelectorAll('[data-test=queues] tbody tr')).map(r => \
                 [r.dataset.queueId, +r.dataset.waiting, +r.dataset.offered, +r.dataset.assigned, \
                 +r.dataset.agentsReady]);",
                vec![],
            )
            .await;
        let want: Vec<Value> = api
            .as_array()
            .map(|queues| {
                queues
                    .iter()
                    .map(|q| {
                        json!([
                            q["queue_id"],
                            q["waiting"],
                            q["offered"],
                            q["assigned"],
                            q["agents_ready"]
                        ])
                    })
                    .collect()
            })
            .unwrap_or_default();
        let total: u64 = want
            .iter()
            .map(|q| q[1].as_u64().unwrap_or(0) + q[2].as_u64().unwrap_or(0))
            .sum();
        if shown == json!(want) && total == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the wallboard shows {shown}, the supervisor API says {api}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    page.until(
        "the wallboard lists alice signed in",
        "const r = document.querySelector('[data-test=agents] tr[data-agent-id=alice]'); \
         return r && r.dataset.loggedIn === 'true';",
        browser::STEP_TIMEOUT,
    )
    .await;
    page.until(
        "the wallboard lists the three members",
        "return document.querySelectorAll('[data-test=cluster] tbody tr').length === 3;",
        browser::STEP_TIMEOUT,
    )
    .await;
    page.screenshot("wallboard").await;
    let _ = alice;

    // The admin page of the same node (the tab keeps the credential per origin): add a skill.
    page.goto(&cluster.url(3, "/admin")).await;
    page.fill("form[data-test=add-skill] input[name=id]", "billing")
        .await;
    page.fill("form[data-test=add-skill] input[name=name]", "Billing")
        .await;
    page.click("form[data-test=add-skill] button").await;
    page.until(
        "the admin page lists the new skill",
        "return document.querySelector('[data-test=section-skills]').textContent.includes('billing');",
        browser::STEP_TIMEOUT,
    )
    .await;
    let (_, directory) = cluster
        .api(
            2,
            Method::GET,
            "/api/v1/admin/directory",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert!(
        directory["skills"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["id"] == "billing")),
        "the skill added on the admin page is in the replicated directory: {directory}"
    );
    page.screenshot("admin").await;
    page.close().await;
}

/// A page of another site that embeds the widget of the node named in its `?node=` query.
fn host_page() -> String {
    r#"<!doctype html><html><head><meta charset="utf-8"><title>Shop</title></head><body>
<h1>Shop</h1><div id="parley-chat"></div>
<script type="module">
const node = new URLSearchParams(location.search).get("node");
import(node + "/ui/widget.js")
  .then((m) => m.mount(document.getElementById("parley-chat"), { node, queue: "sales" }))
  .catch((e) => { document.body.dataset.embedError = String(e); });
</script></body></html>"#
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_works_embedded_on_an_allowed_origin_and_is_refused_on_another() {
    let allowed = HostPage::serve(host_page()).await;
    let other = HostPage::serve(host_page()).await;
    let web = format!("\n[web]\nallowed_origins = [\"{}\"]\n", allowed.origin);
    let cluster = Cluster::start_ready(3, &web, READY_WITHIN).await;
    cluster.wait_leader(1, None, READY_WITHIN).await;
    let node = cluster.node(1).http.clone();
    let driver = Driver::start().await;

    let page = driver.browser().await;
    start_chat(&page, &format!("{}/?node={node}", allowed.origin), "Lin").await;
    say(&page, "#parley-chat", "hello from the shop").await;
    let (chat_id, token) = widget_chat(&page).await;
    let deadline = Instant::now() + SETTLE;
    while committed_texts(&cluster, 2, &chat_id, &token).await != ["hello from the shop"] {
        assert!(
            Instant::now() < deadline,
            "the embedded widget's message never committed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    page.until(
        "the embedded widget's stream is open",
        "return document.documentElement.dataset.parleyStreamNode;",
        browser::STEP_TIMEOUT,
    )
    .await;

    let refused = driver.browser().await;
    refused
        .goto(&format!("{}/?node={node}", other.origin))
        .await;
    refused
        .until(
            "the widget refuses to load on a site not allowed",
            "return document.body.dataset.embedError;",
            browser::STEP_TIMEOUT,
        )
        .await;
    let fetch = refused
        .js(
            "return fetch(arguments[0] + '/api/v1/queues').then(() => 'answered', e => 'refused');",
            vec![json!(node)],
        )
        .await;
    assert_eq!(fetch, json!("refused"), "a disallowed origin read the API");
    let socket = refused
        .js(
            "return new Promise((done) => { \
               const ws = new WebSocket(arguments[0].replace('http', 'ws') + \
                 '/api/v1/chats/' + arguments[1] + '/stream', ['parley', 'parley-token.' + \
                 btoa(arguments[2]).replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '')]); \
               ws.onopen = () => done('open'); ws.onclose = () => done('refused'); });",
            vec![json!(node), json!(chat_id), json!(token)],
        )
        .await;
    assert_eq!(
        socket,
        json!("refused"),
        "a page of a disallowed origin opened a stream with a valid token"
    );
    page.close().await;
    refused.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_offers_a_callback_off_hours_and_takes_the_rating_after_a_chat() {
    let cluster = Cluster::start_ready(3, "", READY_WITHIN).await;
    cluster.wait_leader(1, None, READY_WITHIN).await;
    let driver = Driver::start().await;
    let page = driver.browser().await;

    // The "closed" queue is outside its hours: its message and the callback form instead.
    page.goto(&cluster.url(1, "/chat?queue=closed")).await;
    page.until(
        "the widget shows the off-hours message",
        "const p = document.querySelector('[data-test=off-hours]'); \
         return p && p.textContent === 'We are closed for the test.';",
        browser::STEP_TIMEOUT,
    )
    .await;
    page.fill("form[data-test=callback-form] input[name=name]", "Dan")
        .await;
    page.fill(
        "form[data-test=callback-form] input[name=phone]",
        "+33123456789",
    )
    .await;
    page.click("form[data-test=callback-form] button").await;
    page.find("[data-test=callback-done]").await;
    let (status, waiting) = cluster
        .api(
            2,
            Method::GET,
            "/api/v1/supervisor/queues",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert!(status.is_success());
    let callbacks = waiting
        .as_array()
        .and_then(|q| q.iter().find(|q| q["queue_id"] == "callbacks"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        callbacks["waiting"], 1,
        "the callback asked for on the page waits in its queue: {waiting}"
    );

    // A chat the agent takes through the API; the customer ends it and rates it on the page.
    start_chat(&page, &cluster.url(1, "/chat?queue=sales"), "Eve").await;
    let (chat_id, token) = widget_chat(&page).await;
    let alice = cluster.login_ready(2, "alice").await;
    let (status, body) = cluster.act(2, &alice.token, &chat_id, "accept", None).await;
    assert!(status.is_success(), "accept: {status} {body}");
    let (status, body) = cluster
        .api(
            3,
            Method::POST,
            &format!("/api/v1/chats/{chat_id}/messages"),
            Some(&alice.token),
            Some(json!({"client_msg_id": "agent-1", "text": "How can I help?"})),
        )
        .await;
    assert!(status.is_success(), "agent message: {status} {body}");
    page.until(
        "the agent's message reaches the widget",
        "return Array.from(document.querySelectorAll('#parley-chat .message.theirs .text')) \
         .some(e => e.textContent === 'How can I help?');",
        SETTLE,
    )
    .await;
    page.click("[data-test=end]").await;
    page.click("[data-test=rate-4]").await;
    page.find("[data-test=rated]").await;
    let (status, chat) = cluster
        .api(
            2,
            Method::GET,
            &format!("/api/v1/chats/{chat_id}"),
            Some(&token),
            None,
        )
        .await;
    assert!(status.is_success(), "chat: {status} {chat}");
    assert_eq!(chat["status"], "ended", "the page ended the chat: {chat}");
    assert_eq!(
        chat["survey"]["rating"], 4,
        "the page's rating is recorded: {chat}"
    );
    page.close().await;
}

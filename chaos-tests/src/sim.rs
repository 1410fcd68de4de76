//! A seeded simulation of a whole cluster: nodes, simulated customers posting chat messages
//! through random nodes, a fault schedule, and the oracle's check after healing.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use parley_proto::sim::sim_node_client::SimNodeClient;
use parley_proto::sim::{AgentFeedRequest, InspectRequest, SimWrite};
use parley_raft::command::{
    ActivityAction, AgentSession, AgentSpec, Channel, Customer, Directory, Login, Op, Participant,
    PostMessage, QueueSpec, SetAvailability, StartChat, Transfer, TransferTarget,
};
use parley_raft::state::{AgentEvent, AgentEventBody, ChatEvent};
use parley_raft::{NodeId, Outcome};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::net::{SimConnector, GRPC_PORT};
use crate::node::{self, host_name};
use crate::oracle::{Oracle, Violation};

/// Largest network latency between hosts outside latency spikes.
const MAX_LATENCY: Duration = Duration::from_millis(20);

/// One fault the schedule injects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Crash (kill -9) a node.
    Crash(NodeId),
    /// Restart a crashed node.
    Restart(NodeId),
    /// Cut the link between two nodes, both ways.
    Partition(NodeId, NodeId),
    /// Cut one node off from every other.
    Isolate(NodeId),
    /// Heal every cut link.
    HealAll,
    /// Crash whichever node leads now.
    CrashLeader,
    /// Cut the current leader off from every other node.
    IsolateLeader,
    /// Restart every crashed node.
    RestartAll,
    /// Cut every customer and the agent off from one node (their network to it drops).
    CutClients(NodeId),
    /// A latency spike on the link between two nodes: messages take up to this many ms.
    Slow(NodeId, NodeId, u64),
    /// A lossy link between two nodes: each message fails the link with this probability
    /// (per mille) until the next message repairs it.
    Lossy(NodeId, NodeId, u32),
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Cluster size.
    pub nodes: u64,
    /// Simulated customers, each with one chat.
    pub customers: usize,
    /// Messages each customer posts.
    pub messages: usize,
    /// Faults at simulated times.
    pub schedule: Vec<(Duration, Fault)>,
    /// Seed of the network, the workload and the fault choices.
    pub seed: u64,
    /// Customers send every message twice, the second time through another node, as a client
    /// on a weak connection does; both must be answered with the same seq.
    pub double_submit: bool,
    /// The agent waits this long before accepting anything (offers time out meanwhile).
    pub agent_delay: Duration,
}

impl Spec {
    /// A run of `nodes` nodes with 3 customers posting 15 messages each under `schedule`.
    pub fn new(nodes: u64, seed: u64, schedule: Vec<(Duration, Fault)>) -> Self {
        Self {
            nodes,
            customers: 3,
            messages: 15,
            schedule,
            seed,
            double_submit: false,
            agent_delay: Duration::ZERO,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Faults injected.
    pub faults: usize,
    /// Acknowledged writes the oracle checked.
    pub writes_checked: usize,
    /// Broken guarantees; empty on success.
    pub violations: Vec<Violation>,
    /// Simulated time the run took.
    pub simulated: Duration,
    /// The highest Raft term at the end: how many elections the faults caused, plus one.
    pub term: u64,
    /// Chats assigned to the agent at the end.
    pub assigned: u64,
    /// Offers that timed out and were routed again.
    pub offer_timeouts: u64,
    /// The converged state digest: equal across reruns of a seed when the run replayed exactly.
    pub digest: String,
}

/// A seeded random fault schedule over `window`: crashes and restarts of one node at a time,
/// a node cut off, a link cut, a latency spike or a lossy link, each healed before the next,
/// so a majority is back in time.
pub fn random_schedule(nodes: u64, seed: u64, window: Duration) -> Vec<(Duration, Fault)> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_fa17);
    let mut schedule = Vec::new();
    let mut at = Duration::from_millis(rng.random_range(500..2_000));
    while at < window {
        let victim = rng.random_range(1..=nodes);
        let hold = Duration::from_millis(rng.random_range(500..4_000));
        let other = victim % nodes + 1;
        match rng.random_range(0..5) {
            0 => {
                schedule.push((at, Fault::Crash(victim)));
                schedule.push((at + hold, Fault::Restart(victim)));
            }
            1 => {
                schedule.push((at, Fault::Isolate(victim)));
                schedule.push((at + hold, Fault::HealAll));
            }
            2 => {
                schedule.push((at, Fault::Partition(victim, other)));
                schedule.push((at + hold, Fault::HealAll));
            }
            3 => {
                let ms = rng.random_range(100..1_500);
                schedule.push((at, Fault::Slow(victim, other, ms)));
                schedule.push((at + hold, Fault::HealAll));
            }
            _ => {
                let per_mille = rng.random_range(10..200);
                schedule.push((at, Fault::Lossy(victim, other, per_mille)));
                schedule.push((at + hold, Fault::HealAll));
            }
        }
        at += hold + Duration::from_millis(rng.random_range(1_000..3_000));
    }
    schedule
}

fn directory() -> Directory {
    Directory {
        departments: Vec::new(),
        skills: Vec::new(),
        queues: vec![QueueSpec {
            id: "sales".to_owned(),
            name: "Sales".to_owned(),
            department: None,
            channel: Channel::Chat,
            skills: Vec::new(),
            offer_timeout_ms: 5_000,
            not_ready_on_missed_offer: true,
            inactivity_timeout_ms: 0,
            business_hours: None,
            off_hours_message: parley_raft::command::default_off_hours_message(),
        }],
        agents: vec![AgentSpec {
            id: "alice".to_owned(),
            name: "Alice".to_owned(),
            skills: Vec::new(),
            limits: BTreeMap::from([(Channel::Chat, 3)]),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        }],
    }
}

/// A client of node `node`'s `SimNode` service, over the simulated network.
fn sim_client(
    node: NodeId,
) -> Result<SimNodeClient<tonic::transport::Channel>, tonic::transport::Error> {
    let connector = SimConnector {
        settings: node::settings(),
    };
    let channel = parley_raft::network::Connector::channel(
        &connector,
        &format!("{}:{GRPC_PORT}", host_name(node)),
    )?;
    Ok(SimNodeClient::new(channel))
}

/// Why a submission got no outcome.
#[derive(Debug)]
enum SubmitError {
    /// The node could not commit it now (no leader, timeout, crashed, cut off): retry.
    Retry(String),
    /// The command itself was refused (the HTTP answer would be 4xx).
    Refused(String),
}

/// A client of the simulated nodes: submits through one node's app actor with a deadline, as
/// a real client would with its HTTP timeout.
async fn submit(node: NodeId, op: &Op) -> Result<Outcome, SubmitError> {
    let mut client = sim_client(node).map_err(|e| SubmitError::Retry(e.to_string()))?;
    let op_json = serde_json::to_vec(op).map_err(|e| SubmitError::Refused(e.to_string()))?;
    let call = client.submit(SimWrite { op_json });
    let reply = tokio::time::timeout(Duration::from_secs(6), call)
        .await
        .map_err(|_| SubmitError::Retry("timed out".to_owned()))?
        .map_err(|status| SubmitError::Retry(status.to_string()))?
        .into_inner();
    match (reply.error.is_empty(), reply.retryable) {
        (true, _) => serde_json::from_slice(&reply.outcome_json)
            .map_err(|e| SubmitError::Refused(e.to_string())),
        (false, true) => Err(SubmitError::Retry(reply.error)),
        (false, false) => Err(SubmitError::Refused(reply.error)),
    }
}

/// Submits `op` through random nodes until it commits or is refused, as a retrying client
/// does (same ids, so a retry never duplicates). `Err` is the refusal.
async fn submit_until_answered(op: &Op, nodes: u64, rng: &mut StdRng) -> Result<Outcome, String> {
    loop {
        let node = rng.random_range(1..=nodes);
        match submit(node, op).await {
            Ok(outcome) => return Ok(outcome),
            Err(SubmitError::Refused(why)) => return Err(why),
            Err(SubmitError::Retry(why)) => {
                tracing::debug!(node, %why, "retrying through another node");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// A page of an agent's feed.
enum FeedPage {
    /// Events after the cursor (none when nothing came within the wait).
    Events(Vec<AgentEvent>),
    /// Events after the cursor are no longer kept; this is the first kept.
    Gone(u64),
}

/// Long-polls `agent_id`'s feed on `node` through its messaging actor.
async fn agent_feed(node: NodeId, agent_id: &str, after: u64) -> Result<FeedPage, String> {
    let mut client = sim_client(node).map_err(|e| e.to_string())?;
    let call = client.agent_feed(AgentFeedRequest {
        agent_id: agent_id.to_owned(),
        after,
        wait_ms: 2_000,
    });
    let reply = tokio::time::timeout(Duration::from_secs(6), call)
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|status| status.to_string())?
        .into_inner();
    if reply.first_kept > 0 {
        return Ok(FeedPage::Gone(reply.first_kept));
    }
    serde_json::from_slice(&reply.events_json)
        .map(FeedPage::Events)
        .map_err(|e| e.to_string())
}

/// Runs `spec` and checks the oracle. The report lists any violation.
pub fn run(spec: &Spec) -> Report {
    let dirs: Vec<tempfile::TempDir> = (0..spec.nodes)
        .map(|_| tempfile::tempdir().expect("a temporary directory for a simulated node"))
        .collect();
    let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(600))
        .epoch(epoch)
        .tcp_capacity(65_536)
        .max_message_latency(MAX_LATENCY)
        .rng_seed(spec.seed)
        .enable_random_order()
        .build();
    let members = node::members(spec.nodes);
    let leaders = node::Leaders::default();
    for (index, dir) in dirs.iter().enumerate() {
        let id = index as u64 + 1;
        let members = members.clone();
        let path = dir.path().to_path_buf();
        let leaders = leaders.clone();
        sim.host(host_name(id), move || {
            node::run(
                id,
                members.clone(),
                directory(),
                path.clone(),
                leaders.clone(),
            )
        });
    }

    let oracle = Rc::new(RefCell::new(Oracle::default()));
    let done = Rc::new(RefCell::new(0usize));
    let nodes = spec.nodes;
    // Every node's app actor seeds the directory at start, as `parley serve` does.
    for customer in 0..spec.customers {
        let oracle = oracle.clone();
        let done = done.clone();
        let messages = spec.messages;
        let double_submit = spec.double_submit;
        let seed = spec.seed.wrapping_add(customer as u64);
        sim.client(format!("customer{customer}"), async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let chat_id = format!("chat-{customer}");
            let start = Op::StartChat(StartChat {
                chat_id: chat_id.clone(),
                request_id: format!("start-{customer}"),
                queue_id: "sales".to_owned(),
                customer: Customer {
                    name: format!("Customer {customer}"),
                    email: format!("c{customer}@example.com"),
                },
                question: "chaos".to_owned(),
            });
            // The queue exists once a node's seed committed; until then starts are refused.
            loop {
                match submit_until_answered(&start, nodes, &mut rng).await {
                    Ok(Outcome::ChatStarted { .. }) => break,
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            oracle.borrow_mut().chat_started(&chat_id);
            for n in 0..messages {
                let client_msg_id = format!("m{n}");
                let post = Op::PostMessage(PostMessage {
                    chat_id: chat_id.clone(),
                    sender: Participant::Customer,
                    client_msg_id: client_msg_id.clone(),
                    text: format!("message {n} of customer {customer}"),
                });
                match submit_until_answered(&post, nodes, &mut rng).await {
                    Ok(Outcome::MessagePosted { seq, .. }) => {
                        oracle.borrow_mut().acked(&chat_id, &client_msg_id, seq);
                        if double_submit {
                            match submit_until_answered(&post, nodes, &mut rng).await {
                                Ok(Outcome::MessagePosted {
                                    seq: again,
                                    replayed: true,
                                    ..
                                }) if again == seq => {}
                                other => oracle.borrow_mut().unexpected(
                                    &chat_id,
                                    &format!("resubmitted {client_msg_id}: {other:?}"),
                                ),
                            }
                        }
                    }
                    other => oracle
                        .borrow_mut()
                        .unexpected(&chat_id, &format!("{other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..1_500))).await;
            }
            *done.borrow_mut() += 1;
            Ok(())
        });
    }

    // An agent on its own host, working as the agent console does: logs in, gets ready,
    // follows their feed by long polls through random nodes' messaging actors, accepts every
    // offer, sends each chat back to the queue once and takes it again; stops when the
    // customers are done and every chat came back. Offers it misses under faults time out
    // through the services actors' ticks (which also make it not ready) and are routed again.
    let agent_done = Rc::new(RefCell::new(false));
    {
        let done = done.clone();
        let agent_done = agent_done.clone();
        let customers = spec.customers;
        let seed = spec.seed ^ 0xa9e7;
        let delay = spec.agent_delay;
        let oracle = oracle.clone();
        let double_submit = spec.double_submit;
        sim.client("agent", async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut transferred = std::collections::BTreeSet::new();
            let mut settled = std::collections::BTreeSet::new();
            let session = AgentSession {
                agent_id: "alice".to_owned(),
                session_id: "sim-session".to_owned(),
            };
            let login = Op::Login(Login {
                agent_id: session.agent_id.clone(),
                session_id: session.session_id.clone(),
            });
            let ready = Op::SetAvailability(SetAvailability {
                session: session.clone(),
                channels: BTreeMap::from([(Channel::Chat, true)]),
                reason: None,
            });
            // Log in and get ready first; then, if the scenario says so, stay away from the
            // console while offers arrive.
            while !delay.is_zero() {
                if matches!(
                    submit(rng.random_range(1..=nodes), &login).await,
                    Ok(Outcome::Done)
                ) && matches!(
                    submit(rng.random_range(1..=nodes), &ready).await,
                    Ok(Outcome::Done)
                ) {
                    tokio::time::sleep(delay).await;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let (mut logged_in, mut is_ready, mut cursor) = (false, false, 0u64);
            while *done.borrow() < customers || settled.len() < customers {
                // Before the directory is seeded the login is refused; retry.
                if !logged_in {
                    logged_in = matches!(
                        submit(rng.random_range(1..=nodes), &login).await,
                        Ok(Outcome::Done)
                    );
                    if !logged_in {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        continue;
                    }
                }
                if !is_ready {
                    is_ready = matches!(
                        submit(rng.random_range(1..=nodes), &ready).await,
                        Ok(Outcome::Done)
                    );
                }
                let events = match agent_feed(
                    rng.random_range(1..=nodes),
                    &session.agent_id,
                    cursor,
                )
                .await
                {
                    Ok(FeedPage::Events(events)) => events,
                    Ok(FeedPage::Gone(first_kept)) => {
                        cursor = first_kept.saturating_sub(1);
                        continue;
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                for event in events {
                    cursor = event.seq;
                    match event.body {
                        AgentEventBody::LoggedOut { .. } => logged_in = false,
                        AgentEventBody::Availability { ready, .. } => {
                            is_ready = ready.get(&Channel::Chat).copied().unwrap_or(false);
                        }
                        AgentEventBody::Offered { activity_id, .. } => {
                            // A lost answer is fine: the feed shows the assignment, or the
                            // offer times out and comes again.
                            let accept = Op::Accept(ActivityAction {
                                session: session.clone(),
                                activity_id,
                            });
                            let _ = submit(rng.random_range(1..=nodes), &accept).await;
                        }
                        AgentEventBody::Assigned { activity_id } => {
                            if !transferred.insert(activity_id.clone()) {
                                settled.insert(activity_id);
                                continue;
                            }
                            // Once per chat, the agent sends it back to the queue (it is
                            // routed to them again), retrying through random nodes until
                            // answered: a retry of a transfer that did commit must be answered
                            // as done, not refused.
                            let transfer = Op::Transfer(Transfer {
                                action: ActivityAction {
                                    session: session.clone(),
                                    activity_id: activity_id.clone(),
                                },
                                target: TransferTarget::Queue {
                                    queue_id: "sales".to_owned(),
                                },
                            });
                            // On a weak connection (double-submit runs) the agent sends it
                            // twice.
                            for _ in 0..(1 + usize::from(double_submit)) {
                                match submit_until_answered(&transfer, nodes, &mut rng).await {
                                    Ok(Outcome::Done) => {}
                                    other => oracle
                                        .borrow_mut()
                                        .unexpected(&activity_id, &format!("transfer: {other:?}")),
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            *agent_done.borrow_mut() = true;
            Ok(())
        });
    }

    let mut report = Report {
        seed: spec.seed,
        ..Report::default()
    };
    let mut schedule = spec.schedule.clone();
    schedule.sort_by_key(|(at, _)| *at);
    let mut schedule = schedule.into_iter().peekable();
    let mut crashed: Vec<NodeId> = Vec::new();
    // Drive the simulation: inject faults on time until every customer and the agent are done
    // and the schedule is spent.
    loop {
        while let Some((at, _)) = schedule.peek() {
            if sim.elapsed() < *at {
                break;
            }
            let Some((_, fault)) = schedule.next() else {
                break;
            };
            report.faults += 1;
            inject(
                &mut sim,
                &fault,
                nodes,
                &mut crashed,
                &leaders,
                spec.customers,
            );
        }
        if *done.borrow() == spec.customers && *agent_done.borrow() && schedule.peek().is_none() {
            break;
        }
        match sim.step() {
            Ok(_) => {}
            Err(error) => {
                report
                    .violations
                    .push(Violation(format!("simulation failed: {error}")));
                return report;
            }
        }
    }
    // Heal everything, restart every crashed node, and let the cluster settle.
    inject(
        &mut sim,
        &Fault::HealAll,
        nodes,
        &mut crashed,
        &leaders,
        spec.customers,
    );
    for id in std::mem::take(&mut crashed) {
        sim.bounce(host_name(id));
    }
    let chat_ids: Vec<String> = oracle.borrow().chat_ids();
    // Every customer is done: the oracle is final.
    let oracle = std::mem::take(&mut *oracle.borrow_mut());
    report.writes_checked = oracle.acked_count();
    let verdict: Rc<RefCell<Verdict>> = Rc::new(RefCell::new(None));
    {
        let verdict = verdict.clone();
        sim.client("checker", async move {
            let result = check(nodes, chat_ids, &oracle).await;
            *verdict.borrow_mut() = Some(result);
            Ok(())
        });
    }
    while verdict.borrow().is_none() {
        if let Err(error) = sim.step() {
            report
                .violations
                .push(Violation(format!("simulation failed: {error}")));
            return report;
        }
    }
    report.simulated = sim.elapsed();
    match verdict.borrow_mut().take() {
        Some(Err(mut violations)) => report.violations.append(&mut violations),
        Some(Ok((settled, digest))) => {
            report.digest = digest;
            report.term = settled.term;
            report.assigned = settled.assigned;
            report.offer_timeouts = settled.offer_timeouts;
        }
        None => {}
    }
    report
}

/// The checker's answer: the highest term, or what is broken; `None` until it is done.
type Verdict = Option<Result<Checked, Vec<Violation>>>;

/// What the converged cluster shows.
#[derive(Clone, Copy, Debug)]
struct Settled {
    term: u64,
    assigned: u64,
    offer_timeouts: u64,
}

/// The checker's answer with the converged digest.
type Checked = (Settled, String);

/// The leader most live nodes agree on, if any.
fn current_leader(leaders: &node::Leaders, crashed: &[NodeId]) -> Option<NodeId> {
    let mut votes: BTreeMap<NodeId, usize> = BTreeMap::new();
    for (node, leader) in leaders.borrow().iter() {
        if let (false, Some(leader)) = (crashed.contains(node), leader) {
            if !crashed.contains(leader) {
                *votes.entry(*leader).or_default() += 1;
            }
        }
    }
    votes.into_iter().max_by_key(|(_, n)| *n).map(|(id, _)| id)
}

fn client_hosts(customers: usize) -> Vec<String> {
    (0..customers)
        .map(|c| format!("customer{c}"))
        .chain(["agent".to_owned()])
        .collect()
}

fn inject(
    sim: &mut turmoil::Sim<'_>,
    fault: &Fault,
    nodes: u64,
    crashed: &mut Vec<NodeId>,
    leaders: &node::Leaders,
    customers: usize,
) {
    match fault {
        Fault::Crash(id) => {
            if !crashed.contains(id) {
                sim.crash(host_name(*id));
                crashed.push(*id);
            }
        }
        Fault::Restart(id) => {
            if let Some(position) = crashed.iter().position(|c| c == id) {
                crashed.remove(position);
                sim.bounce(host_name(*id));
            }
        }
        Fault::RestartAll => {
            for id in std::mem::take(crashed) {
                sim.bounce(host_name(id));
            }
        }
        Fault::Partition(a, b) => sim.partition(host_name(*a), host_name(*b)),
        Fault::Isolate(id) => {
            for other in (1..=nodes).filter(|o| o != id) {
                sim.partition(host_name(*id), host_name(other));
            }
        }
        Fault::CrashLeader => {
            if let Some(leader) = current_leader(leaders, crashed) {
                inject(
                    sim,
                    &Fault::Crash(leader),
                    nodes,
                    crashed,
                    leaders,
                    customers,
                );
            }
        }
        Fault::IsolateLeader => {
            if let Some(leader) = current_leader(leaders, crashed) {
                inject(
                    sim,
                    &Fault::Isolate(leader),
                    nodes,
                    crashed,
                    leaders,
                    customers,
                );
            }
        }
        Fault::CutClients(id) => {
            for client in client_hosts(customers) {
                sim.partition(client, host_name(*id));
            }
        }
        Fault::Slow(a, b, ms) => sim.set_link_max_message_latency(
            host_name(*a),
            host_name(*b),
            Duration::from_millis(*ms),
        ),
        Fault::Lossy(a, b, per_mille) => {
            sim.set_link_fail_rate(host_name(*a), host_name(*b), f64::from(*per_mille) / 1000.0)
        }
        Fault::HealAll => {
            for a in 1..=nodes {
                for b in (a + 1)..=nodes {
                    sim.repair(host_name(a), host_name(b));
                    sim.set_link_max_message_latency(host_name(a), host_name(b), MAX_LATENCY);
                    sim.set_link_fail_rate(host_name(a), host_name(b), 0.0);
                }
                for client in client_hosts(customers) {
                    sim.repair(client, host_name(a));
                }
            }
        }
    }
}

/// After healing: waits until every node has applied the same index, then checks the
/// guarantees on every node.
async fn check(
    nodes: u64,
    chat_ids: Vec<String>,
    oracle: &Oracle,
) -> Result<Checked, Vec<Violation>> {
    let deadline = Duration::from_secs(60);
    let started = tokio::time::Instant::now();
    loop {
        let mut replies = Vec::new();
        for id in 1..=nodes {
            let Ok(mut client) = sim_client(id) else {
                continue;
            };
            let call = client.inspect(InspectRequest {
                chat_ids: chat_ids.clone(),
            });
            if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(2), call).await {
                replies.push((id, reply.into_inner()));
            }
        }
        let settled = replies.len() == nodes as usize
            && replies
                .iter()
                .all(|(_, r)| r.applied_index == replies[0].1.applied_index);
        if settled {
            let mut violations = oracle.unexpected_answers();
            let digest = &replies[0].1.digest;
            for (id, reply) in &replies {
                if &reply.digest != digest {
                    violations.push(Violation(format!(
                        "G7: node {id} digest {} differs from node 1's {digest} at index {}",
                        reply.digest, reply.applied_index
                    )));
                }
                if !reply.invariant_violation.is_empty() {
                    violations.push(Violation(format!(
                        "node {id}: {}",
                        reply.invariant_violation
                    )));
                }
                match serde_json::from_slice::<BTreeMap<String, Vec<ChatEvent>>>(&reply.chats_json)
                {
                    Ok(chats) => violations.extend(oracle.verify(*id, &chats)),
                    Err(error) => violations.push(Violation(format!("node {id}: {error}"))),
                }
            }
            return if violations.is_empty() {
                let term = replies.iter().map(|(_, r)| r.term).max().unwrap_or(0);
                Ok((
                    Settled {
                        term,
                        assigned: replies[0].1.assigned,
                        offer_timeouts: replies[0].1.offer_timeouts,
                    },
                    replies[0].1.digest.clone(),
                ))
            } else {
                Err(violations)
            };
        }
        if started.elapsed() > deadline {
            let indexes: Vec<(NodeId, u64)> = replies
                .iter()
                .map(|(id, r)| (*id, r.applied_index))
                .collect();
            return Err(vec![Violation(format!(
                "replicas did not converge within {deadline:?} after healing: {indexes:?}"
            ))]);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

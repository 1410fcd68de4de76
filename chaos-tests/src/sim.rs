//! A seeded simulation of a whole cluster: nodes, simulated customers posting chat messages
//! through random nodes, simulated agents competing for their chats, a fault schedule, and the
//! oracle's check after healing.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use parley_raft::command::{
    ActivityAction, AgentSession, AgentSpec, Channel, Complete, Customer, Directory, Login, Op,
    Participant, PostMessage, QueueSpec, SetAvailability, StartChat, Transfer, TransferTarget,
};
use parley_raft::membership::MemberChange;
use parley_raft::proposer::Clock;
use parley_raft::state::island::MERGED_TRANSFER;
use parley_raft::state::{ActivityStatus, AgentEvent, AgentEventBody, EventCursor};
use parley_raft::{NodeId, Outcome};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::membership::{Changes, SharedChanges};
use crate::net::{SimConnector, GRPC_PORT};
use crate::node::{self, host_name, SimClock};
use crate::oracle::lease_acks::FencedAck;
use crate::oracle::lease_history::{LeaseEntry, LeaseFigures};
use crate::oracle::{check_all, AgentAction, Observation, Oracle, Violation, Window};
use crate::proto::sim_node_client::SimNodeClient;
use crate::proto::{AgentFeedRequest, InspectReply, InspectRequest, LeaseHistoryRequest, SimWrite};

/// The client host of the simulated customers.
const CUSTOMERS_HOST: &str = "customers";

/// The client host of the simulated agents.
const AGENTS_HOST: &str = "agents";

/// Largest network latency between hosts outside latency spikes.
const MAX_LATENCY: Duration = Duration::from_millis(20);
/// How often a run longer than this reports its progress, in simulated time.
const PROGRESS_EVERY: Duration = Duration::from_secs(3_600);

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
    /// Cut one follower (the highest-numbered live node that does not lead now) off from every
    /// other node.
    IsolateFollower,
    /// Restart every crashed node.
    RestartAll,
    /// Cut every customer and agent off from one node (their network to it drops).
    CutClients(NodeId),
    /// A latency spike on the link between two nodes: messages take up to this many ms.
    Slow(NodeId, NodeId, u64),
    /// A lossy link between two nodes: each message fails the link with this probability
    /// (per mille) until the next message repairs it.
    Lossy(NodeId, NodeId, u32),
    /// An operator adds this spare node as a learner (retried until the leader accepts).
    Join(NodeId),
    /// An operator promotes this learner to voter (retried while it catches up).
    Promote(NodeId),
    /// An operator removes this member (retried while the checks refuse it).
    Remove(NodeId),
    /// Cut every link between the nodes of one site (an index into [`Spec::sites`]) and the
    /// nodes of the other sites, both ways: the site's WAN link drops.
    CutSite(usize),
    /// Set a node's clock off the true time by this many ms (either sign): a skewed clock,
    /// or, set below its skew before, a clock stepped back. Kept across the node's restarts.
    Skew(NodeId, i64),
    /// Hold every message between a node and the other nodes, both ways, until the next
    /// [`Fault::HealAll`] delivers them all at once: a node paused (a stopped process, a
    /// stalled VM) as the others see it. (The gRPC keepalives on both sides give up on the
    /// held connections within 2 s; what reaches the others late is the node's retries.)
    Hold(NodeId),
    /// [`Fault::Isolate`] the node that holds the run's lease now (see [`Spec::leases`]).
    IsolateHolder,
    /// [`Fault::Hold`] the node that holds the run's lease now.
    HoldHolder,
    /// [`Fault::Skew`] the clock of the node that holds the run's lease now.
    SkewHolder(i64),
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Cluster size.
    pub nodes: u64,
    /// Spare nodes, ids after the cluster's, started as joining nodes that form no cluster and
    /// wait to be added ([`Fault::Join`]).
    pub spares: u64,
    /// How many nodes each site has, in id order (see [`node::site_of`]); spares join the last.
    pub sites: Vec<u64>,
    /// Simulated customers, each with one chat.
    pub customers: usize,
    /// Messages each customer posts.
    pub messages: usize,
    /// One simulated agent per entry, with this chat limit. Agents hold each chat until its
    /// customer is done, so with fewer places than chats, chats wait for one to free up.
    pub agent_limits: Vec<u32>,
    /// Faults at simulated times.
    pub schedule: Vec<(Duration, Fault)>,
    /// Seed of the network, the workload and the fault choices.
    pub seed: u64,
    /// Customers send every message twice, the second time through another node, as a client
    /// on a weak connection does; both must be answered with the same seq. Agents send every
    /// transfer twice.
    pub double_submit: bool,
    /// The agents wait this long after getting ready before accepting anything (offers time
    /// out meanwhile).
    pub agent_delay: Duration,
    /// A customer waits between this many ms and less than the second figure between two
    /// messages.
    pub message_gap_ms: (u64, u64),
    /// Log entries each node keeps behind a snapshot.
    pub log_entries_kept_after_snapshot: u64,
    /// Entries between two snapshots of a node.
    pub snapshot_every_entries: u64,
    /// Simulated time after which a run that has not finished fails.
    pub time_limit: Duration,
    /// Dials across a cut link fail at once (see [`crate::net::fail_dials_across_cuts`]):
    /// for runs over simulated days. Off by default, so old seeds replay unchanged.
    pub fail_dials_across_cuts: bool,
    /// The simulation's step: every host runs once per step of simulated time. 1 ms by
    /// default; a run over simulated days takes a coarser one (timers fire at step
    /// boundaries, so it must stay well below the heartbeat and election timeouts).
    pub tick: Duration,
    /// Every node timer the run depends on (heartbeat, election timeouts, `island_after`, gRPC
    /// keepalives) multiplied by this: 1 by default; a run over simulated days takes a larger
    /// one, as a WAN deployment would, so its day costs fewer core-loop turns.
    pub timers_scale: u32,
    /// Every node contends for a mailbox's fetch lease and its holder proposes fenced commands
    /// (see [`crate::lease`]); the oracle then checks the lease's applied history. `None` by
    /// default, so old seeds replay unchanged.
    pub leases: Option<crate::lease::Workload>,
}

impl Spec {
    /// The largest clock skew (either sign) the schedule gives any node, in ms: how far apart
    /// a command's stamp and the true time of its window may be.
    pub fn clock_skew_max_ms(&self) -> u64 {
        self.schedule
            .iter()
            .filter_map(|(_, fault)| match fault {
                Fault::Skew(_, ms) | Fault::SkewHolder(ms) => Some(ms.unsigned_abs()),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// A run of `nodes` nodes under `schedule`: 6 customers posting 5 messages each, and
    /// three agents with chat limits 1, 2 and 1 (4 places for 6 chats).
    pub fn new(nodes: u64, seed: u64, schedule: Vec<(Duration, Fault)>) -> Self {
        Self {
            nodes,
            spares: 0,
            sites: vec![nodes],
            customers: 6,
            messages: 5,
            agent_limits: vec![1, 2, 1],
            schedule,
            seed,
            double_submit: false,
            agent_delay: Duration::ZERO,
            message_gap_ms: (100, 1_500),
            log_entries_kept_after_snapshot: 1_000,
            snapshot_every_entries: 500,
            time_limit: Duration::from_secs(600),
            tick: Duration::from_millis(1),
            timers_scale: 1,
            fail_dials_across_cuts: false,
            leases: None,
        }
    }

    /// When the schedule's last heal comes: the time after which the lease must be usable
    /// again (see [`Spec::lease_resume_bound`]).
    pub fn last_heal(&self) -> Duration {
        self.schedule
            .iter()
            .filter(|(_, fault)| *fault == Fault::HealAll)
            .map(|(at, _)| *at)
            .max()
            .unwrap_or_default()
    }

    /// How soon after the last heal a fenced command must be accepted again: the take-over
    /// the lease promises (a lease duration plus a second, docs/ARCHITECTURE.md), plus the
    /// fetcher's longest pause after failed sessions (30 s), plus the largest clock skew (a
    /// holder whose clock ran ahead stamped a later expiry).
    pub fn lease_resume_bound(&self) -> Duration {
        let duration = self.leases.map(|l| l.duration).unwrap_or_default();
        duration
            + Duration::from_secs(1)
            + Duration::from_secs(30)
            + Duration::from_millis(self.clock_skew_max_ms())
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Faults injected (heals and restarts included; leader faults that found no leader
    /// are not).
    pub faults: usize,
    /// Leader faults (`CrashLeader`, `IsolateLeader`) injected.
    pub leader_faults: usize,
    /// Leader faults skipped because no leader was known at the time.
    pub leader_faults_skipped: usize,
    /// Leader faults after which no other node was seen leading in a later term.
    pub leader_faults_without_election: usize,
    /// Acknowledged writes the oracle checked (chats started and messages).
    pub writes_checked: usize,
    /// Messages islands acknowledged that the oracle checked (part of `writes_checked`).
    pub island_writes_checked: usize,
    /// Of the agent actions checked, those islands acknowledged.
    pub island_agent_actions_checked: usize,
    /// The island nodes whose journals took those messages.
    pub island_journals: BTreeSet<NodeId>,
    /// Acknowledged agent actions the oracle checked (logins, availability, accepts,
    /// transfers, completions).
    pub agent_actions_checked: usize,
    /// Broken guarantees; empty on success.
    pub violations: Vec<Violation>,
    /// Simulated time the run took.
    pub simulated: Duration,
    /// The highest Raft term at the end: how many elections the faults caused, plus one.
    pub term: u64,
    /// Chats still assigned to an agent at the end.
    pub assigned: u64,
    /// Chats completed by an agent at the end.
    pub completed: u64,
    /// Offers that timed out and were routed again.
    pub offer_timeouts: u64,
    /// The converged state digest: equal across reruns of a seed when the run replayed exactly.
    pub digest: String,
    /// How many times each node became an island.
    pub islands_entered: BTreeMap<NodeId, u64>,
    /// Snapshots leaders sent that members installed (counted since each node's last start).
    pub snapshots_installed: u64,
    /// With a lease workload: what the lease's applied history shows (on the first member).
    pub lease: crate::oracle::lease_history::LeaseFigures,
    /// With a lease workload: fenced commands their proposer was answered about without a
    /// commit (refused by an island, no leader, timed out).
    pub fenced_not_committed: u64,
    /// With a lease workload: how long after the last heal the first fenced command was
    /// answered accepted.
    pub lease_resumed_after: Option<Duration>,
    /// Faults aimed at the lease's holder that found one.
    pub holder_faults: usize,
    /// Faults aimed at the lease's holder that found none (not injected).
    pub holder_faults_skipped: usize,
}

/// A seeded random fault schedule over `window`: crashes and restarts of one node at a time,
/// a node cut off, a link cut, a latency spike or a lossy link, each healed before the next,
/// so a majority is back in time.
pub fn random_schedule(nodes: u64, seed: u64, window: Duration) -> Vec<(Duration, Fault)> {
    random_site_schedule(&[nodes], seed, window)
}

/// [`random_schedule`] over nodes split into `sites` (sizes in id order): with more than one
/// site, a site's WAN link may also drop, for 0.5 s up to 8 s (an island from 2 s on: see
/// [`node::SIM_ISLAND_AFTER`]), and heal. With one site the schedule is exactly
/// [`random_schedule`]'s, so its seeds replay as before.
pub fn random_site_schedule(sites: &[u64], seed: u64, window: Duration) -> Vec<(Duration, Fault)> {
    let nodes = sites.iter().sum::<u64>().max(1);
    let kinds = if sites.len() > 1 { 6 } else { 5 };
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_fa17);
    let mut schedule = Vec::new();
    let mut at = Duration::from_millis(rng.random_range(500..2_000));
    while at < window {
        let victim = rng.random_range(1..=nodes);
        let mut hold = Duration::from_millis(rng.random_range(500..4_000));
        let other = victim % nodes + 1;
        match rng.random_range(0..kinds) {
            5 => {
                hold = Duration::from_millis(rng.random_range(500..8_000));
                let site = rng.random_range(0..sites.len());
                schedule.push((at, Fault::CutSite(site)));
                schedule.push((at + hold, Fault::HealAll));
            }
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

/// The id of simulated agent `index`.
pub fn agent_id(index: usize) -> String {
    format!("agent{}", index + 1)
}

fn directory(agent_limits: &[u32], email: bool) -> Directory {
    let mut directory = chat_directory(agent_limits);
    if email {
        directory.queues.push(crate::lease::email_queue());
    }
    directory
}

fn chat_directory(agent_limits: &[u32]) -> Directory {
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
        agents: agent_limits
            .iter()
            .enumerate()
            .map(|(index, limit)| AgentSpec {
                id: agent_id(index),
                name: format!("Agent {}", index + 1),
                skills: Vec::new(),
                limits: BTreeMap::from([(Channel::Chat, *limit)]),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
            })
            .collect(),
    }
}

/// Now on the clock the nodes stamp commands with (simulated time since the Unix epoch), in ms.
fn now_ms() -> u64 {
    SimClock.now_ms()
}

/// A client of node `node`'s `SimNode` service, over the simulated network.
pub fn sim_client(
    node: NodeId,
) -> Result<SimNodeClient<tonic::transport::Channel>, tonic::transport::Error> {
    let connector = SimConnector {
        settings: node::settings(),
        from: None,
    };
    let channel = parley_raft::network::Connector::channel(
        &connector,
        node,
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
    submit_marked(node, op).await.map(|answer| answer.outcome)
}

/// An answer to a submission.
struct Answer {
    /// What the write did.
    outcome: Outcome,
    /// Whether it took the write in island mode.
    island: bool,
    /// With `island`: the island node whose journal took it.
    island_node: NodeId,
}

/// Like [`submit`], with whether (and by which island node) it was taken in island mode.
async fn submit_marked(node: NodeId, op: &Op) -> Result<Answer, SubmitError> {
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
            .map(|outcome| Answer {
                outcome,
                island: reply.island,
                island_node: reply.island_node,
            })
            .map_err(|e| SubmitError::Refused(e.to_string())),
        (false, true) => Err(SubmitError::Retry(reply.error)),
        (false, false) => Err(SubmitError::Refused(reply.error)),
    }
}

/// Submits `op` through random nodes until it commits or is refused, as a retrying client
/// does (same ids, so a retry never duplicates). `Err` is the refusal.
async fn submit_until_answered(op: &Op, nodes: u64, rng: &mut StdRng) -> Result<Outcome, String> {
    submit_until_answered_marked(op, nodes, rng)
        .await
        .map(|answer| answer.outcome)
}

/// Like [`submit_until_answered`], trying node `via` first: a console acting on work an
/// island gave it stays on that island's node while it answers (another side does not know
/// the work yet), and moves on as any client does once it stops answering.
async fn submit_until_answered_via(
    op: &Op,
    via: Option<NodeId>,
    nodes: u64,
    rng: &mut StdRng,
) -> Result<Answer, String> {
    if let Some(node) = via {
        for _ in 0..VIA_ATTEMPTS {
            match submit_marked(node, op).await {
                Ok(answer) => return Ok(answer),
                Err(SubmitError::Refused(why)) => return Err(why),
                Err(SubmitError::Retry(why)) => {
                    tracing::debug!(node, %why, "retrying through the same node");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    submit_until_answered_marked(op, nodes, rng).await
}

/// The island node whose journal took a write that was done (`Some(None)`: the cluster
/// took it), or `None` when it was not done.
fn done_where<E>(answer: &Result<Answer, E>) -> Option<Option<NodeId>> {
    match answer {
        Ok(Answer {
            outcome: Outcome::Done,
            island,
            island_node,
        }) => Some(island.then_some(*island_node)),
        _ => None,
    }
}

thread_local! {
    /// Nodes an operator took out of the clients' rotation (as from a load balancer) before
    /// removing them from the cluster. The simulation runs every host on one thread.
    static DRAINED: std::cell::RefCell<BTreeSet<NodeId>> =
        const { std::cell::RefCell::new(BTreeSet::new()) };
}

/// Takes node `id` out of the clients' rotation (the runbook's first step before removing a
/// member: docs/OPERATIONS.md).
pub fn drain(id: NodeId) {
    DRAINED.with(|drained| drained.borrow_mut().insert(id));
}

/// A node for a client's next request: any of the `nodes`, but not one taken out of rotation
/// while another is left.
fn client_node(rng: &mut StdRng, nodes: u64) -> NodeId {
    let drained = DRAINED.with(|drained| drained.borrow().clone());
    loop {
        let node = rng.random_range(1..=nodes);
        if !drained.contains(&node) || drained.len() as u64 >= nodes {
            return node;
        }
    }
}

/// How often a console retries the node an island gave it work through before moving on.
const VIA_ATTEMPTS: usize = 10;

/// Like [`submit_until_answered`], with whether (and by which island node) it was taken in
/// island mode.
async fn submit_until_answered_marked(
    op: &Op,
    nodes: u64,
    rng: &mut StdRng,
) -> Result<Answer, String> {
    loop {
        let node = client_node(rng, nodes);
        match submit_marked(node, op).await {
            Ok(answer) => return Ok(answer),
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
    /// Events after the cursor (none when nothing came within the wait), each with the
    /// cursor after it.
    Events(Vec<(AgentEvent, EventCursor)>),
    /// Events after the cursor are no longer kept; this is the first kept.
    Gone(u64),
}

/// Long-polls `agent_id`'s feed on `node` through its messaging actor.
async fn agent_feed(node: NodeId, agent_id: &str, after: &EventCursor) -> Result<FeedPage, String> {
    let mut client = sim_client(node).map_err(|e| e.to_string())?;
    let call = client.agent_feed(AgentFeedRequest {
        agent_id: agent_id.to_owned(),
        after: after.to_string(),
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
    let events: Vec<AgentEvent> =
        serde_json::from_slice(&reply.events_json).map_err(|e| e.to_string())?;
    if events.len() != reply.cursors.len() {
        return Err(format!(
            "{} feed events with {} cursors",
            events.len(),
            reply.cursors.len()
        ));
    }
    let cursors = reply
        .cursors
        .iter()
        .map(|c| c.parse::<EventCursor>())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FeedPage::Events(events.into_iter().zip(cursors).collect()))
}

/// What the simulated clients share: how far the customers are and which chats the agents
/// sent back to the queue and completed (one thread: turmoil runs every host on the caller's).
#[derive(Debug, Default)]
struct Board {
    /// Customers done posting.
    customers_done: usize,
    /// Chats whose customers are done posting: their agent may complete them.
    finished: BTreeSet<String>,
    /// Chats an agent sent back to the queue once.
    transferred: BTreeSet<String>,
    /// Chats an agent completed (acknowledged).
    completed: BTreeSet<String>,
    /// Agents that stopped.
    agents_done: usize,
}

type Shared<T> = Rc<RefCell<T>>;

/// Runs `spec` and checks the oracle. The report lists any violation.
pub fn run(spec: &Spec) -> Report {
    count_panics();
    DRAINED.with(|drained| drained.borrow_mut().clear());
    crate::lease::reset();
    crate::net::fail_dials_across_cuts(spec.fail_dials_across_cuts);
    let panics_before = PANICS.with(std::cell::Cell::get);
    let hosts = spec.nodes + spec.spares;
    let dirs: Vec<tempfile::TempDir> = (0..hosts)
        .map(|_| tempfile::tempdir().expect("a temporary directory for a simulated node"))
        .collect();
    let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut sim = turmoil::Builder::new()
        .simulation_duration(spec.time_limit)
        .tick_duration(spec.tick)
        .epoch(epoch)
        .tcp_capacity(65_536)
        .max_message_latency(MAX_LATENCY)
        .rng_seed(spec.seed)
        .enable_random_order()
        .build();
    let members = node::members(spec.nodes, &spec.sites);
    let leaders = node::Leaders::default();
    let islands = node::Islands::default();
    let journals = node::Journals::default();
    let leases = crate::lease::Records::default();
    let clocks: BTreeMap<NodeId, node::SkewedClock> = (1..=hosts)
        .map(|id| (id, node::SkewedClock::default()))
        .collect();
    for (index, dir) in dirs.iter().enumerate() {
        let id = index as u64 + 1;
        // A spare joins an existing cluster: no members to form one with.
        let members = if id <= spec.nodes {
            members.clone()
        } else {
            BTreeMap::new()
        };
        let path = dir.path().to_path_buf();
        let leaders = leaders.clone();
        let islands = islands.clone();
        let journals = journals.clone();
        let leases = leases.clone();
        let limits = spec.agent_limits.clone();
        let email = spec.leases.is_some();
        let site = node::site_of(id, &spec.sites);
        let tuning = node::Tuning {
            clock: clocks.get(&id).cloned().unwrap_or_default(),
            log_entries_kept_after_snapshot: spec.log_entries_kept_after_snapshot,
            snapshot_every_entries: spec.snapshot_every_entries,
            lease: spec.leases,
            timers_scale: spec.timers_scale,
        };
        sim.host(host_name(id), move || {
            node::run(
                id,
                members.clone(),
                directory(&limits, email),
                path.clone(),
                site.clone(),
                node::Recorders {
                    leaders: leaders.clone(),
                    islands: islands.clone(),
                    journals: journals.clone(),
                    leases: leases.clone(),
                },
                tuning.clone(),
            )
        });
    }

    let oracle: Shared<Oracle> = Rc::default();
    let board: Shared<Board> = Rc::default();
    // Every node's app actor seeds the directory at start, as `parley serve` does. The
    // customers share one client host and the agents another (each works on its own, through
    // nodes of its own choosing): fewer hosts for turmoil to step.
    {
        let (oracle, board, spec) = (oracle.clone(), board.clone(), spec.clone());
        sim.client(CUSTOMERS_HOST, async move {
            let chats = (0..spec.customers).map(|customer| {
                let (oracle, board, spec) = (&oracle, &board, &spec);
                async move {
                    let seed = spec.seed.wrapping_add(customer as u64);
                    customer_chat(customer, spec, seed, oracle).await;
                    let mut board = board.borrow_mut();
                    board.finished.insert(chat_id(customer));
                    board.customers_done += 1;
                }
            });
            futures::future::join_all(chats).await;
            Ok(())
        });
    }
    {
        let (oracle, board, spec) = (oracle.clone(), board.clone(), spec.clone());
        sim.client(AGENTS_HOST, async move {
            let agents = (0..spec.agent_limits.len()).map(|index| {
                let (oracle, board, spec) = (&oracle, &board, &spec);
                async move {
                    let seed = spec.seed ^ (0xa9e7 + index as u64);
                    agent_console(index, spec, seed, oracle, board).await;
                    board.borrow_mut().agents_done += 1;
                }
            });
            futures::future::join_all(agents).await;
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
    let mut awaiting_election: Vec<LeaderFault> = Vec::new();
    let changes: SharedChanges = Rc::new(RefCell::new(Changes {
        expected: (1..=spec.nodes).collect(),
        ..Changes::default()
    }));
    let faults = Faults {
        nodes: hosts,
        sites: spec.sites.clone(),
        leaders: leaders.clone(),
        changes: changes.clone(),
        operators: std::cell::Cell::new(0),
        clocks,
        holders: leases.holders.clone(),
        held: RefCell::new(Vec::new()),
    };
    let everyone_done = |board: &Board| {
        board.customers_done == spec.customers
            && board.agents_done == spec.agent_limits.len()
            && changes.borrow().pending == 0
    };
    // With a lease workload, the run goes on after the last heal until a fenced command was
    // accepted again (or the bound passed: the oracle then reports it), and until every late
    // write a holder fault asked for was answered or given up.
    let epoch_ms = u64::try_from(
        epoch
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX);
    let heal_ms = epoch_ms + u64::try_from(spec.last_heal().as_millis()).unwrap_or(u64::MAX);
    let lease_done = |elapsed: Duration| {
        spec.leases.is_none()
            || (elapsed >= spec.last_heal()
                && !crate::lease::late_writes_pending()
                && (elapsed >= spec.last_heal() + spec.lease_resume_bound()
                    || leases.acks.borrow().iter().any(|ack| {
                        ack.answer == crate::oracle::lease_acks::FencedAnswer::Applied
                            && ack.answered_ms >= heal_ms
                    })))
    };
    // Drive the simulation: inject faults on time until every customer and agent is done and
    // the schedule is spent. A run that is not done a minute before its time limit is stuck:
    // it is reported as such, and the cluster is still healed and inspected, so the report
    // says where the unfinished work stands.
    let give_up_at = spec.time_limit.saturating_sub(Duration::from_secs(60));
    let mut stuck_at: Option<String> = None;
    // Runs over simulated hours say how far they got, every simulated hour.
    let wall_start = std::time::Instant::now();
    let mut next_progress = (spec.time_limit > PROGRESS_EVERY).then_some(PROGRESS_EVERY);
    loop {
        if let Some(at) = next_progress.filter(|at| sim.elapsed() >= *at) {
            eprintln!(
                "seed {}: {} h simulated after {} s of wall time; dialled connections open {:?}, \
                 dials failed or given up {:?}",
                spec.seed,
                at.as_secs() / 3_600,
                wall_start.elapsed().as_secs(),
                crate::net::open_dials(),
                crate::net::unfinished_dials()
            );
            next_progress = Some(at + PROGRESS_EVERY);
        }
        while let Some((at, _)) = schedule.peek() {
            if sim.elapsed() < *at {
                break;
            }
            let Some((_, fault)) = schedule.next() else {
                break;
            };
            match faults.inject(&mut sim, &fault, &mut crashed) {
                Injected::Done => report.faults += 1,
                Injected::Leader(fault) => {
                    report.faults += 1;
                    report.leader_faults += 1;
                    awaiting_election.push(fault);
                }
                Injected::NoLeader => report.leader_faults_skipped += 1,
                Injected::Holder => {
                    report.faults += 1;
                    report.holder_faults += 1;
                }
                Injected::NoHolder => report.holder_faults_skipped += 1,
            }
        }
        awaiting_election.retain(|fault| !fault.elected_after(&leaders));
        if everyone_done(&board.borrow()) && schedule.peek().is_none() && lease_done(sim.elapsed())
        {
            break;
        }
        if sim.elapsed() >= give_up_at {
            stuck_at = Some(stuck(
                &board.borrow(),
                spec,
                &changes.borrow(),
                &leaders,
                &islands,
            ));
            break;
        }
        if let Err(error) = sim.step() {
            let stuck = stuck(&board.borrow(), spec, &changes.borrow(), &leaders, &islands);
            report
                .violations
                .push(Violation(format!("simulation failed: {error}; {stuck}")));
            return report;
        }
    }
    // Heal everything, restart every crashed node, stop the lease workload (its keepers
    // release the lease) and let the cluster settle.
    faults.inject(&mut sim, &Fault::HealAll, &mut crashed);
    crate::lease::stop_all();
    for id in std::mem::take(&mut crashed) {
        sim.bounce(host_name(id));
    }
    if let Some(stuck) = stuck_at {
        report.violations.push(Violation(format!(
            "the clients were not done after {:?}: {stuck}",
            sim.elapsed()
        )));
    }
    // Every client is done (or stuck): the oracle is final. Windows are in true time; a skewed node
    // stamps its commands off it by up to its skew.
    let mut oracle = std::mem::take(&mut *oracle.borrow_mut());
    oracle.widen_windows(spec.clock_skew_max_ms());
    report.writes_checked = oracle.acked_count();
    report.island_writes_checked = oracle.acked_island_count();
    report.island_agent_actions_checked = oracle.actions_on_islands();
    report.island_journals = oracle.island_journals();
    report.agent_actions_checked = oracle.actions_count();
    let verdict: Shared<Verdict> = Rc::default();
    for failed in std::mem::take(&mut changes.borrow_mut().failed) {
        report.violations.push(Violation(format!(
            "a membership change never went through: {failed}"
        )));
    }
    let acks: Vec<crate::oracle::lease_acks::FencedAck> = leases.acks.borrow().clone();
    {
        let verdict = verdict.clone();
        let members: Vec<NodeId> = changes.borrow().expected.iter().copied().collect();
        let agents = spec.agent_limits.len();
        let lease_acks = spec.leases.is_some().then(|| acks.clone());
        sim.client("checker", async move {
            let result = check(&members, agents, &oracle, lease_acks.as_deref()).await;
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
        awaiting_election.retain(|fault| !fault.elected_after(&leaders));
    }
    let panics = PANICS.with(std::cell::Cell::get) - panics_before;
    if panics > 0 {
        report.violations.push(Violation(format!(
            "{panics} panic(s) in the simulation (a node's task or a host died of one; see the \
             output above)"
        )));
    }
    report.leader_faults_without_election = awaiting_election.len();
    report.simulated = sim.elapsed();
    let (entered, mut broken) = crate::oracle::islands::check_islands(&islands.borrow());
    report.islands_entered = entered;
    report.violations.append(&mut broken);
    match verdict.borrow_mut().take() {
        Some(Err(mut violations)) => report.violations.append(&mut violations),
        Some(Ok(settled)) => {
            if !report.violations.is_empty() && !settled.unfinished.is_empty() {
                report.violations.push(Violation(format!(
                    "work not finished at the end: {}",
                    settled.unfinished.join("; ")
                )));
            }
            report.digest = settled.digest;
            report.term = settled.term;
            report.snapshots_installed = settled.snapshots_installed;
            report.assigned = settled.assigned;
            report.completed = settled.completed;
            report.offer_timeouts = settled.offer_timeouts;
            report.lease = settled.lease;
        }
        None => {}
    }
    if spec.leases.is_some() {
        let bound = spec.lease_resume_bound();
        report
            .violations
            .extend(crate::oracle::lease_liveness::fenced_writes_resume(
                heal_ms,
                u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
                &acks,
            ));
        report.fenced_not_committed = acks
            .iter()
            .filter(|ack| {
                matches!(
                    ack.answer,
                    crate::oracle::lease_acks::FencedAnswer::NotCommitted(_)
                )
            })
            .count() as u64;
        report.lease_resumed_after = acks
            .iter()
            .filter(|ack| {
                ack.answer == crate::oracle::lease_acks::FencedAnswer::Applied
                    && ack.answered_ms >= heal_ms
            })
            .map(|ack| Duration::from_millis(ack.answered_ms - heal_ms))
            .min();
    }
    report
}

thread_local! {
    /// Panics on this thread (a simulation runs all its hosts on the thread that runs it).
    static PANICS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Counts every panic on the thread it happens on (then reports it as before): turmoil
/// catches a host's panic and takes the host as crashed, and a spawned task's panic only ends
/// the task, so without this a panicking node would look like a crashed one.
fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|count| count.set(count.get() + 1));
            previous(info);
        }));
    });
}

/// The activities a node holds that are not completed, each with its status and last
/// transitions: where a stuck run's work stands.
fn unfinished(observation: &Observation) -> Vec<String> {
    observation
        .activities
        .values()
        .filter(|a| !matches!(a.status, ActivityStatus::Completed { .. }))
        .map(|a| {
            format!(
                "{} {:?} after [{}]",
                a.id,
                a.status,
                crate::oracle::check::history_tail(a, 4)
            )
        })
        .collect()
}

/// What was not done when a simulation ran out of time, to tell a hang from a slow run.
fn stuck(
    board: &Board,
    spec: &Spec,
    changes: &Changes,
    leaders: &node::Leaders,
    islands: &node::Islands,
) -> String {
    let unfinished: Vec<String> = (0..spec.customers)
        .map(chat_id)
        .filter(|chat| !board.finished.contains(chat))
        .collect();
    format!(
        "customers done {}/{} (still posting: {unfinished:?}), chats completed {}, agents \
         done {}/{}, membership changes pending {}, leaders as last seen by each node \
         (leader, term) {:?}, island statuses of each node (island, epoch) {:?}",
        board.customers_done,
        spec.customers,
        board.completed.len(),
        board.agents_done,
        spec.agent_limits.len(),
        changes.pending,
        leaders.borrow(),
        islands.borrow(),
    )
}

fn chat_id(customer: usize) -> String {
    format!("chat-{customer}")
}

/// One customer: starts a chat and posts `spec.messages` messages, each through a random
/// node, retrying with the same ids until answered; every acknowledgement goes to the oracle.
async fn customer_chat(customer: usize, spec: &Spec, seed: u64, oracle: &Shared<Oracle>) {
    let nodes = spec.nodes;
    let mut rng = StdRng::seed_from_u64(seed);
    let chat_id = chat_id(customer);
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
    for n in 0..spec.messages {
        let client_msg_id = format!("m{n}");
        let post = Op::PostMessage(PostMessage {
            chat_id: chat_id.clone(),
            sender: Participant::Customer,
            client_msg_id: client_msg_id.clone(),
            text: format!("message {n} of customer {customer}"),
        });
        match post_until_answered(&post, nodes, &mut rng).await {
            Ok(answer) => {
                let Outcome::MessagePosted { seq, .. } = answer.outcome else {
                    oracle
                        .borrow_mut()
                        .unexpected(&chat_id, &format!("{:?}", answer.outcome));
                    continue;
                };
                record_post(oracle, &chat_id, &client_msg_id, &answer, seq);
                if spec.double_submit {
                    match post_until_answered(&post, nodes, &mut rng).await {
                        Ok(Answer {
                            outcome:
                                Outcome::MessagePosted {
                                    seq: again,
                                    replayed: true,
                                    ..
                                },
                            island: false,
                            ..
                        }) if again == seq && !answer.island => {}
                        // Either side an island: the other side has not seen the first answer
                        // yet and may take the message again; the merge keeps it once.
                        Ok(
                            again @ Answer {
                                outcome: Outcome::MessagePosted { .. },
                                ..
                            },
                        ) if answer.island || again.island => {
                            if let Outcome::MessagePosted { seq, .. } = again.outcome {
                                record_post(oracle, &chat_id, &client_msg_id, &again, seq);
                            }
                        }
                        Ok(other) => oracle.borrow_mut().unexpected(
                            &chat_id,
                            &format!("resubmitted {client_msg_id}: {:?}", other.outcome),
                        ),
                        Err(other) => oracle
                            .borrow_mut()
                            .unexpected(&chat_id, &format!("resubmitted {client_msg_id}: {other}")),
                    }
                }
            }
            Err(other) => oracle.borrow_mut().unexpected(&chat_id, &other),
        }
        let (least, most) = spec.message_gap_ms;
        tokio::time::sleep(Duration::from_millis(
            rng.random_range(least..most.max(least + 1)),
        ))
        .await;
    }
}

/// How long a customer goes on trying nodes that do not know its chat, in ms of simulated time.
const UNKNOWN_CHAT_RETRY_MS: u64 = 120_000;

/// Posts as [`submit_until_answered_marked`] does, also retrying a node that does not know the
/// chat: an island forked before the chat's start committed, or the quorum side of a chat an
/// island started, answers `unknown_chat` until the island merged. A real client does the same
/// (its chat was acknowledged, so it exists somewhere).
async fn post_until_answered(op: &Op, nodes: u64, rng: &mut StdRng) -> Result<Answer, String> {
    let deadline = now_ms() + UNKNOWN_CHAT_RETRY_MS;
    loop {
        match submit_until_answered_marked(op, nodes, rng).await {
            Err(why) if why.starts_with("unknown_chat") && now_ms() < deadline => {
                tracing::debug!(%why, "the chat is not known there yet; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

/// Records an answered post: committed at `seq`, or taken by an island at island seq `seq`.
fn record_post(
    oracle: &Shared<Oracle>,
    chat_id: &str,
    client_msg_id: &str,
    answer: &Answer,
    seq: u64,
) {
    if answer.island {
        oracle
            .borrow_mut()
            .acked_on_island(chat_id, client_msg_id, answer.island_node, seq);
    } else {
        oracle.borrow_mut().acked(chat_id, client_msg_id, seq);
    }
}

/// Submits `op` once through `node`, timing it for the oracle.
async fn submit_timed(node: NodeId, op: &Op) -> (Result<Answer, SubmitError>, Window) {
    let sent_ms = now_ms();
    let result = submit_marked(node, op).await;
    let window = Window {
        sent_ms,
        answered_ms: now_ms(),
    };
    (result, window)
}

/// One agent, working as the agent console does: logs in, gets ready, follows their feed by
/// long polls through random nodes' messaging actors, accepts every offer, sends each chat
/// back to the queue once (whoever gets it first; it is routed to whoever is idle longest) and
/// completes it the next time, once its customer is done. Stops when every chat is completed.
/// Offers missed under faults time out through the services actors' ticks (which also make
/// the agent not ready; they get ready again) and are routed again. Every acknowledged action
/// goes to the oracle with its window.
async fn agent_console(
    index: usize,
    spec: &Spec,
    seed: u64,
    oracle: &Shared<Oracle>,
    board: &Shared<Board>,
) {
    let nodes = spec.nodes;
    let mut rng = StdRng::seed_from_u64(seed);
    let session = AgentSession {
        agent_id: agent_id(index),
        session_id: format!("{}-session", agent_id(index)),
    };
    let me = session.agent_id.clone();
    let login = Op::Login(Login {
        agent_id: me.clone(),
        session_id: session.session_id.clone(),
    });
    let ready = Op::SetAvailability(SetAvailability {
        session: session.clone(),
        channels: BTreeMap::from([(Channel::Chat, true)]),
        reason: None,
    });
    let record = |action: AgentAction, window: Window, island: Option<NodeId>| {
        oracle.borrow_mut().agent_acked(&me, action, window, island);
    };
    let login_action = || AgentAction::Login {
        session_id: session.session_id.clone(),
    };
    let ready_action = || AgentAction::Availability {
        channel: Channel::Chat,
        ready: true,
    };
    // Log in and get ready first; then, if the scenario says so, stay away from the console
    // while offers arrive.
    while !spec.agent_delay.is_zero() {
        let (logged_in, window) = submit_timed(client_node(&mut rng, nodes), &login).await;
        if let Some(island) = done_where(&logged_in) {
            record(login_action(), window, island);
            let (is_ready, window) = submit_timed(client_node(&mut rng, nodes), &ready).await;
            if let Some(island) = done_where(&is_ready) {
                record(ready_action(), window, island);
                tokio::time::sleep(spec.agent_delay).await;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (mut logged_in, mut is_ready) = (false, false);
    let mut cursor = EventCursor::After(0);
    let mut presence_node: Option<NodeId> = None;
    // Completions and transfers refused because the chat was taken away (its agent looked
    // unreachable and its customer wrote, or a merge gave it to the other side's agent): fine
    // once the feed shows that release; a violation otherwise.
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    // Chats taken the second time, to complete once their customers are done.
    let mut to_complete: BTreeSet<String> = BTreeSet::new();
    // Work an island's feed gave this agent, and that island's node: acted on through it.
    let mut island_work: BTreeMap<String, NodeId> = BTreeMap::new();
    loop {
        {
            let board = board.borrow();
            if board.customers_done == spec.customers && board.completed.len() == spec.customers {
                for (activity_id, why) in std::mem::take(&mut refused) {
                    oracle
                        .borrow_mut()
                        .unexpected(&activity_id, &format!("complete by {me}: {why}"));
                }
                return;
            }
        }
        // Before the directory is seeded the login is refused; retry.
        if !logged_in {
            let (answer, window) = submit_timed(client_node(&mut rng, nodes), &login).await;
            let Some(island) = done_where(&answer) else {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            };
            logged_in = true;
            record(login_action(), window, island);
        }
        if !is_ready {
            let (answer, window) = submit_timed(client_node(&mut rng, nodes), &ready).await;
            if let Some(island) = done_where(&answer) {
                is_ready = true;
                record(ready_action(), window, island);
            }
        }
        let finished: Vec<String> = {
            let board = board.borrow();
            to_complete
                .iter()
                .filter(|chat| board.finished.contains(*chat))
                .cloned()
                .collect()
        };
        for activity_id in finished {
            to_complete.remove(&activity_id);
            let complete = Op::Complete(Complete {
                action: ActivityAction {
                    session: session.clone(),
                    activity_id: activity_id.clone(),
                },
                outcome: None,
            });
            let sent_ms = now_ms();
            let via = island_work.get(&activity_id).copied();
            let answer = submit_until_answered_via(&complete, via, nodes, &mut rng).await;
            if let Some(island) = done_where(&answer) {
                let window = Window {
                    sent_ms,
                    answered_ms: now_ms(),
                };
                record(
                    AgentAction::Complete {
                        activity_id: activity_id.clone(),
                    },
                    window,
                    island,
                );
                board.borrow_mut().completed.insert(activity_id);
                continue;
            }
            match answer.map(|a| a.outcome) {
                Err(why) if why.contains("is not assigned to agent") => {
                    refused.insert(activity_id, why);
                }
                other => oracle
                    .borrow_mut()
                    .unexpected(&activity_id, &format!("complete by {me}: {other:?}")),
            }
        }
        // The console reads its feed through a node; when that is another node than before,
        // it says so (`Op::Presence`), as a real console's stream does, so routing knows the
        // agent is reached through it.
        let via = client_node(&mut rng, nodes);
        if logged_in && presence_node != Some(via) {
            if let Ok(Outcome::Done) = submit(via, &Op::Presence(session.clone())).await {
                presence_node = Some(via);
            }
        }
        let events = match agent_feed(via, &me, &cursor).await {
            Ok(FeedPage::Events(events)) => events,
            Ok(FeedPage::Gone(first_kept)) => {
                cursor = EventCursor::After(first_kept.saturating_sub(1));
                continue;
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        for (event, after) in events {
            let from_island = matches!(after, EventCursor::Island(_));
            cursor = after;
            match event.body {
                AgentEventBody::LoggedOut { .. } => logged_in = false,
                AgentEventBody::Availability { ready, .. } => {
                    is_ready = ready.get(&Channel::Chat).copied().unwrap_or(false);
                }
                AgentEventBody::Offered { activity_id, .. } => {
                    // A lost answer is fine: the feed shows the assignment, or the offer times
                    // out and comes again. A refusal too: the offer timed out meanwhile. An
                    // island's offer is accepted through the island's node.
                    if from_island {
                        island_work.insert(activity_id.clone(), via);
                    } else {
                        island_work.remove(&activity_id);
                    }
                    let accept = Op::Accept(ActivityAction {
                        session: session.clone(),
                        activity_id: activity_id.clone(),
                    });
                    let node = if from_island {
                        via
                    } else {
                        client_node(&mut rng, nodes)
                    };
                    let (answer, window) = submit_timed(node, &accept).await;
                    if let Some(island) = done_where(&answer) {
                        record(AgentAction::Accept { activity_id }, window, island);
                    }
                }
                AgentEventBody::Assigned { activity_id } => {
                    if from_island {
                        island_work.insert(activity_id.clone(), via);
                    }
                    if !board.borrow_mut().transferred.insert(activity_id.clone()) {
                        to_complete.insert(activity_id);
                        continue;
                    }
                    // Once per chat, an agent sends it back to the queue (it is routed to
                    // whoever is idle longest), retrying through random nodes until answered:
                    // a retry of a transfer that did commit must be answered as done, not
                    // refused. On a weak connection (double-submit runs) it is sent twice.
                    let target = TransferTarget::Queue {
                        queue_id: "sales".to_owned(),
                    };
                    let transfer = Op::Transfer(Transfer {
                        action: ActivityAction {
                            session: session.clone(),
                            activity_id: activity_id.clone(),
                        },
                        target: target.clone(),
                    });
                    let sent_ms = now_ms();
                    let mut done = true;
                    let mut island = None;
                    let island_via = island_work.get(&activity_id).copied();
                    for _ in 0..(1 + usize::from(spec.double_submit)) {
                        let answer =
                            submit_until_answered_via(&transfer, island_via, nodes, &mut rng).await;
                        if let Some(taken_by) = done_where(&answer) {
                            // The first answer is the write; a second is its replay.
                            island = island.or(Some(taken_by));
                            continue;
                        }
                        match answer.map(|a| a.outcome) {
                            // Taken away meanwhile: the agent looked unreachable and its
                            // customer wrote (a console catching up on its feed acts on an
                            // assignment a later item of the same page releases), or a merge
                            // gave work an island gave to an agent of the cluster side. Fine
                            // once the feed shows that release; a violation otherwise.
                            Err(why) if why.contains("is not assigned to agent") => {
                                done = false;
                                refused.insert(activity_id.clone(), why);
                            }
                            other => {
                                done = false;
                                oracle.borrow_mut().unexpected(
                                    &activity_id,
                                    &format!("transfer by {me}: {other:?}"),
                                );
                            }
                        }
                    }
                    if done {
                        let window = Window {
                            sent_ms,
                            answered_ms: now_ms(),
                        };
                        record(
                            AgentAction::Transfer {
                                activity_id,
                                target,
                            },
                            window,
                            island.flatten(),
                        );
                    }
                }
                AgentEventBody::Released {
                    activity_id,
                    reason,
                } => {
                    to_complete.remove(&activity_id);
                    island_work.remove(&activity_id);
                    if reason == "agent_unreachable" || reason == MERGED_TRANSFER {
                        refused.remove(&activity_id);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The checker's answer, or what is broken; `None` until it is done.
type Verdict = Option<Result<Settled, Vec<Violation>>>;

/// What the converged cluster shows.
#[derive(Clone, Debug)]
struct Settled {
    term: u64,
    snapshots_installed: u64,
    assigned: u64,
    completed: u64,
    offer_timeouts: u64,
    digest: String,
    /// What the lease's applied history shows (on the first member), with a lease workload.
    lease: crate::oracle::lease_history::LeaseFigures,
    /// Activities not completed at the end, each with its status and last transitions (on
    /// the first node observed).
    unfinished: Vec<String>,
}

/// A leader fault injected, waiting for another node to lead in a later term.
#[derive(Clone, Copy, Debug)]
struct LeaderFault {
    victim: NodeId,
    term: u64,
}

impl LeaderFault {
    /// Whether some node now sees a leader other than the victim in a later term.
    fn elected_after(&self, leaders: &node::Leaders) -> bool {
        leaders.borrow().values().any(|(leader, term)| {
            *term > self.term && leader.is_some_and(|leader| leader != self.victim)
        })
    }
}

/// What an injection did.
enum Injected {
    /// The fault was injected.
    Done,
    /// A leader fault was injected on this leader in this term.
    Leader(LeaderFault),
    /// A leader fault found no leader to aim at: nothing was done.
    NoLeader,
    /// A fault aimed at the lease's holder was injected.
    Holder,
    /// A fault aimed at the lease's holder found none: nothing was done.
    NoHolder,
}

/// What the fault injector needs to know of the run.
struct Faults {
    /// Every simulated node host, spares included.
    nodes: u64,
    /// Site sizes, as in [`Spec::sites`].
    sites: Vec<u64>,
    leaders: node::Leaders,
    /// The membership changes operators were asked for.
    changes: SharedChanges,
    /// Operator hosts started so far (each change runs on a client host of its own).
    operators: std::cell::Cell<u64>,
    /// Every node's clock, by id.
    clocks: BTreeMap<NodeId, node::SkewedClock>,
    /// What each node's lease keeper holds.
    holders: crate::lease::Holders,
    /// Nodes whose links are held ([`Fault::Hold`]) until the next heal.
    held: RefCell<Vec<NodeId>>,
}

impl Faults {
    /// The live node that holds the run's lease now (the highest token, if two nodes still
    /// believe they hold it).
    fn current_holder(&self, crashed: &[NodeId]) -> Option<NodeId> {
        self.holders
            .borrow()
            .iter()
            .filter(|(id, _)| !crashed.contains(id))
            .filter_map(|(id, token)| token.map(|token| (token, *id)))
            .max()
            .map(|(_, id)| id)
    }

    /// The leader most live nodes agree on, if any, and the term they see it leading in.
    fn current_leader(&self, crashed: &[NodeId]) -> Option<(NodeId, u64)> {
        let leaders = self.leaders.borrow();
        let mut votes: BTreeMap<NodeId, (usize, u64)> = BTreeMap::new();
        for (node, (leader, term)) in leaders.iter() {
            if let (false, Some(leader)) = (crashed.contains(node), leader) {
                if !crashed.contains(leader) {
                    let entry = votes.entry(*leader).or_default();
                    entry.0 += 1;
                    entry.1 = entry.1.max(*term);
                }
            }
        }
        votes
            .into_iter()
            .max_by_key(|(_, (n, _))| *n)
            .map(|(id, (_, term))| (id, term))
    }

    fn client_hosts(&self) -> [&'static str; 2] {
        [CUSTOMERS_HOST, AGENTS_HOST]
    }

    fn inject(
        &self,
        sim: &mut turmoil::Sim<'_>,
        fault: &Fault,
        crashed: &mut Vec<NodeId>,
    ) -> Injected {
        let nodes = self.nodes;
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
            Fault::Partition(a, b) => {
                sim.partition(host_name(*a), host_name(*b));
                crate::net::link_cut(*a, *b, true);
            }
            Fault::CutSite(site) => {
                let name = format!("site{}", site + 1);
                let (inside, outside): (Vec<NodeId>, Vec<NodeId>) =
                    (1..=nodes).partition(|id| node::site_of(*id, &self.sites) == name);
                for a in &inside {
                    for b in &outside {
                        sim.partition(host_name(*a), host_name(*b));
                        crate::net::link_cut(*a, *b, true);
                    }
                }
            }
            Fault::Skew(id, ms) => {
                if let Some(clock) = self.clocks.get(id) {
                    clock
                        .skew_ms
                        .store(*ms, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Fault::Isolate(id) => {
                for other in (1..=nodes).filter(|o| o != id) {
                    sim.partition(host_name(*id), host_name(other));
                    crate::net::link_cut(*id, other, true);
                }
            }
            Fault::IsolateFollower => {
                let leader = self.current_leader(crashed).map(|(id, _)| id);
                let Some(victim) = (1..=nodes)
                    .rev()
                    .find(|id| Some(*id) != leader && !crashed.contains(id))
                else {
                    return Injected::Done;
                };
                self.inject(sim, &Fault::Isolate(victim), crashed);
            }
            Fault::CrashLeader | Fault::IsolateLeader => {
                let Some((victim, term)) = self.current_leader(crashed) else {
                    return Injected::NoLeader;
                };
                let fault = match fault {
                    Fault::CrashLeader => Fault::Crash(victim),
                    _ => Fault::Isolate(victim),
                };
                self.inject(sim, &fault, crashed);
                return Injected::Leader(LeaderFault { victim, term });
            }
            Fault::Hold(id) => {
                for other in (1..=nodes).filter(|o| o != id) {
                    sim.hold(host_name(*id), host_name(other));
                }
                self.held.borrow_mut().push(*id);
            }
            Fault::IsolateHolder | Fault::HoldHolder | Fault::SkewHolder(_) => {
                let Some(victim) = self.current_holder(crashed) else {
                    return Injected::NoHolder;
                };
                let fault = match fault {
                    Fault::IsolateHolder => Fault::Isolate(victim),
                    Fault::HoldHolder => Fault::Hold(victim),
                    Fault::SkewHolder(ms) => Fault::Skew(victim, *ms),
                    _ => return Injected::NoHolder,
                };
                tracing::info!(?fault, "aimed at the lease's holder");
                self.inject(sim, &fault, crashed);
                // Once cut off or paused, the holder stamps a fenced command it delivers only
                // after its successor's take (see `lease::request_late_write`).
                if matches!(fault, Fault::Isolate(_) | Fault::Hold(_)) {
                    crate::lease::request_late_write(victim);
                }
                return Injected::Holder;
            }
            Fault::CutClients(id) => {
                for client in self.client_hosts() {
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
            Fault::Join(id) | Fault::Promote(id) | Fault::Remove(id) => {
                let change = match fault {
                    Fault::Join(_) => crate::membership::add(*id, node::site_of(*id, &self.sites)),
                    Fault::Promote(_) => MemberChange::Promote { id: *id },
                    _ => MemberChange::Remove {
                        id: *id,
                        force: false,
                    },
                };
                // Through every member expected now, crashed ones included (a try through a
                // crashed node fails and the next goes elsewhere).
                let through: Vec<NodeId> = self.changes.borrow().expected.iter().copied().collect();
                self.changes.borrow_mut().pending += 1;
                let operator = self.operators.get() + 1;
                self.operators.set(operator);
                let changes = self.changes.clone();
                sim.client(format!("operator{operator}"), async move {
                    crate::membership::operate(change, through, changes).await;
                    Ok(())
                });
            }
            Fault::HealAll => {
                // Held messages are delivered first, all at once (a repair alone would leave
                // them held for good).
                for id in std::mem::take(&mut *self.held.borrow_mut()) {
                    for other in (1..=nodes).filter(|o| *o != id) {
                        sim.release(host_name(id), host_name(other));
                    }
                }
                for a in 1..=nodes {
                    for b in (a + 1)..=nodes {
                        sim.repair(host_name(a), host_name(b));
                        crate::net::link_cut(a, b, false);
                        sim.set_link_max_message_latency(host_name(a), host_name(b), MAX_LATENCY);
                        sim.set_link_fail_rate(host_name(a), host_name(b), 0.0);
                    }
                    for client in self.client_hosts() {
                        sim.repair(client, host_name(a));
                    }
                }
            }
        }
        Injected::Done
    }
}

/// One node's applied state through its inspection RPC, as the oracle reads it, with the
/// figures the report shows.
async fn observe(
    id: NodeId,
    request: &InspectRequest,
) -> Result<(Observation, InspectReply), String> {
    let mut client = sim_client(id).map_err(|e| e.to_string())?;
    let reply = tokio::time::timeout(Duration::from_secs(2), client.inspect(request.clone()))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|status| status.to_string())?
        .into_inner();
    let parse = |what: &str, e: serde_json::Error| format!("node {id} {what}: {e}");
    let observation = Observation {
        node: id,
        applied_index: reply.applied_index,
        digest: reply.digest.clone(),
        invariant_violations: if reply.invariant_violation.is_empty() {
            Vec::new()
        } else {
            vec![reply.invariant_violation.clone()]
        },
        chats: serde_json::from_slice(&reply.chats_json).map_err(|e| parse("chats", e))?,
        activities: serde_json::from_slice(&reply.activities_json)
            .map_err(|e| parse("activities", e))?,
        agents: serde_json::from_slice(&reply.agents_json).map_err(|e| parse("agents", e))?,
    };
    Ok((observation, reply))
}

/// After healing: waits until every member has applied the same index, then checks that the
/// replicated membership is `members` and the guarantees on every member.
async fn check(
    members: &[NodeId],
    agents: usize,
    oracle: &Oracle,
    lease_acks: Option<&[FencedAck]>,
) -> Result<Settled, Vec<Violation>> {
    let deadline = Duration::from_secs(60);
    let started = tokio::time::Instant::now();
    let request = InspectRequest {
        chat_ids: oracle.chat_ids(),
        activity_ids: oracle.activity_ids(),
        agent_ids: (0..agents).map(agent_id).collect(),
    };
    loop {
        let mut observed = Vec::new();
        let mut errors = Vec::new();
        for &id in members {
            match observe(id, &request).await {
                Ok(o) => observed.push(o),
                Err(error) => errors.push(error),
            }
        }
        let settled = observed.len() == members.len()
            && observed
                .iter()
                .all(|(o, _)| o.applied_index == observed[0].0.applied_index);
        if settled {
            let observations: Vec<Observation> = observed.iter().map(|(o, _)| o.clone()).collect();
            let mut violations = check_all(oracle, &observations);
            let mut lease = LeaseFigures::default();
            if let Some(acks) = lease_acks {
                for (position, &id) in members.iter().enumerate() {
                    match check_lease(id, acks).await {
                        Ok((figures, mut broken)) => {
                            if position == 0 {
                                lease = figures;
                            }
                            violations.append(&mut broken);
                        }
                        Err(error) => violations.push(Violation(format!(
                            "reading node {id}'s lease history: {error}"
                        ))),
                    }
                }
            }
            match crate::membership::request(members[0], None).await {
                Ok(list) => {
                    let replicated: Vec<NodeId> = list.members.iter().map(|m| m.id).collect();
                    if replicated != members {
                        violations.push(Violation(format!(
                            "the replicated membership is {replicated:?}, the changes made \
                             {members:?}"
                        )));
                    }
                }
                Err(error) => violations.push(Violation(format!(
                    "listing the members through node {}: {error}",
                    members[0]
                ))),
            }
            return match (violations.is_empty(), observed.first()) {
                (true, Some((_, first))) => Ok(Settled {
                    term: observed.iter().map(|(_, r)| r.term).max().unwrap_or(0),
                    snapshots_installed: observed.iter().map(|(_, r)| r.snapshots_installed).sum(),
                    assigned: first.assigned,
                    completed: first.completed,
                    offer_timeouts: first.offer_timeouts,
                    digest: first.digest.clone(),
                    lease,
                    unfinished: unfinished(&observations[0]),
                }),
                _ => Err(violations),
            };
        }
        if started.elapsed() > deadline {
            let indexes: Vec<(NodeId, u64)> = observed
                .iter()
                .map(|(o, _)| (o.node, o.applied_index))
                .collect();
            return Err(vec![Violation(format!(
                "replicas did not converge within {deadline:?} after healing: {indexes:?} \
                 ({errors:?})"
            ))]);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Reads node `id`'s lease history (its log replayed) and checks it: the replay is what the
/// node applied (same digest, from the log's start), grants, fenced commands, and what the
/// holders were answered (`acks`). Returns what the history shows, and what broke.
async fn check_lease(
    id: NodeId,
    acks: &[FencedAck],
) -> Result<(LeaseFigures, Vec<Violation>), String> {
    let name = crate::lease::lease_name();
    let mut client = sim_client(id).map_err(|e| e.to_string())?;
    let request = LeaseHistoryRequest { name: name.clone() };
    let reply = tokio::time::timeout(Duration::from_secs(10), client.lease_history(request))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|status| status.to_string())?
        .into_inner();
    let history: Vec<LeaseEntry> =
        serde_json::from_slice(&reply.entries_json).map_err(|e| e.to_string())?;
    let mut broken = Vec::new();
    if reply.first_index > 1 {
        broken.push(Violation(format!(
            "node {id}'s log starts at index {}: the lease history before it is unknown",
            reply.first_index
        )));
    }
    if reply.replayed_digest != reply.digest {
        broken.push(Violation(format!(
            "node {id}: replaying its log to index {} gives digest {}, the node applied {}",
            reply.applied_index, reply.replayed_digest, reply.digest
        )));
    }
    broken.extend(crate::oracle::lease_tokens::lease_grants(
        id, &name, &history,
    ));
    broken.extend(crate::oracle::fencing::fenced_writes(id, &name, &history));
    broken.extend(crate::oracle::lease_acks::acknowledged_fenced(
        id, acks, &history,
    ));
    Ok((crate::oracle::lease_history::figures(&history), broken))
}

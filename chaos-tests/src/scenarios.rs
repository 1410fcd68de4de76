//! One named scenario per row of the failure matrix (DESIGN.md §3). The incumbents run web,
//! application, messaging and services as separate servers; in Parley every node runs all of
//! them, so "the application server dies" is a node dying, and the scenarios differ in which
//! node fails, when, and what clients are doing at the time.

use std::time::Duration;

use crate::sim::{Fault, Report, Spec};

/// A named scenario.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// Short name, used to run it alone.
    pub name: &'static str,
    /// The failure-matrix row it answers.
    pub row: &'static str,
    /// What the incumbent does (reference documents).
    pub incumbent: &'static str,
    /// The faults and workload for a seed.
    pub spec: fn(u64) -> Spec,
    /// Whether every chat must end up completed by an agent (queued work survives, is routed,
    /// taken and finished; offers that time out are routed again).
    pub all_completed: bool,
    /// Whether offers must have timed out (the timers fired despite the faults).
    pub offers_time_out: bool,
    /// Whether the first leader must lead to the end, in the first term: no fault in the
    /// scenario may cost an election.
    pub leader_survives: bool,
    /// How many nodes must have become islands (cut off from the quorum for
    /// `SIM_ISLAND_AFTER`); `None`: not checked.
    pub islands: Option<usize>,
    /// Whether islands must have taken (and so merged) acknowledged writes.
    pub island_writes_taken: bool,
    /// How many island journals must have taken those writes (the nodes of one site cut off
    /// together keep one); `None`: not checked.
    pub island_journals: Option<usize>,
    /// Whether some member must have caught up by installing a leader's snapshot (the log it
    /// needed was compacted away meanwhile).
    pub snapshot_installed: bool,
    /// Whether a fenced command of a holder that lost its lease must have reached the log
    /// after its successor's take (and been refused there): the case a lease scenario's
    /// timing is made for.
    pub lease_writes_superseded: bool,
}

impl Scenario {
    /// What this scenario expects of a run beyond the oracle's guarantees, and the run did
    /// not show: empty when all of it held.
    pub fn unmet(&self, spec: &Spec, report: &Report) -> Vec<String> {
        let mut unmet = Vec::new();
        if self.all_completed && report.completed as usize != spec.customers {
            unmet.push(format!(
                "queued work was not all routed and completed after the faults ({} of {})",
                report.completed, spec.customers
            ));
        }
        if self.leader_survives && report.term != 1 {
            unmet.push(format!(
                "a node that was cut off deposed the leader on its return (term {}; pre-vote \
                 should keep it from campaigning)",
                report.term
            ));
        }
        if let Some(islands) = self.islands {
            let became = report.islands_entered.values().filter(|n| **n > 0).count();
            if became != islands {
                unmet.push(format!(
                    "{became} nodes became islands, not {islands}: {:?}",
                    report.islands_entered
                ));
            }
        }
        if self.snapshot_installed && report.snapshots_installed == 0 {
            unmet.push("no member caught up by installing a snapshot".to_owned());
        }
        if self.island_writes_taken && report.island_writes_checked == 0 {
            unmet.push("no island acknowledged a write".to_owned());
        }
        if let Some(journals) = self.island_journals {
            if report.island_journals.len() != journals {
                unmet.push(format!(
                    "island journals that took writes: {:?}, not {journals}",
                    report.island_journals
                ));
            }
        }
        if self.offers_time_out && report.offer_timeouts == 0 {
            unmet.push("no offer timed out".to_owned());
        }
        let aimed_at_leader = spec
            .schedule
            .iter()
            .any(|(_, f)| matches!(f, Fault::CrashLeader | Fault::IsolateLeader));
        if aimed_at_leader {
            // The leader faults bit: each found a leader, and another node was elected in a
            // later term after each.
            if report.leader_faults == 0 || report.leader_faults_skipped > 0 {
                unmet.push(format!(
                    "a leader fault found no leader ({} injected, {} skipped)",
                    report.leader_faults, report.leader_faults_skipped
                ));
            }
            if report.leader_faults_without_election > 0 {
                unmet.push("no other node was elected after a leader fault".to_owned());
            }
        }
        if spec.leases.is_some() {
            let aimed_at_holder = spec
                .schedule
                .iter()
                .filter(|(_, f)| {
                    matches!(
                        f,
                        Fault::IsolateHolder | Fault::HoldHolder | Fault::SkewHolder(_)
                    )
                })
                .count();
            if report.holder_faults != aimed_at_holder || report.holder_faults_skipped > 0 {
                unmet.push(format!(
                    "a fault aimed at the lease's holder found none ({} injected of {}, {} \
                     skipped)",
                    report.holder_faults, aimed_at_holder, report.holder_faults_skipped
                ));
            }
            if report.lease.fenced_applied == 0 {
                unmet.push("no fenced command was accepted".to_owned());
            }
            if report.lease.hand_overs == 0 {
                unmet.push("the lease never changed hands".to_owned());
            }
        }
        if self.lease_writes_superseded && report.lease.fenced_superseded == 0 {
            unmet.push(
                "no fenced command of a holder that lost its lease reached the log after the \
                 take of its successor"
                    .to_owned(),
            );
        }
        unmet
    }
}

fn at(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds)
}

/// The lease scenarios' workload: a 2 s lease (renewed every 667 ms), a mail every 200 ms, and
/// every log entry kept (the oracle replays the log from its start).
fn with_leases(spec: Spec) -> Spec {
    Spec {
        leases: Some(crate::lease::Workload {
            duration: Duration::from_secs(2),
            mail_every: Duration::from_millis(200),
        }),
        log_entries_kept_after_snapshot: 1_000_000,
        ..spec
    }
}

/// Every scenario.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "application-node-dies",
            row: "Application server dies",
            incumbent:
                "customer told messages are lost and must start a new chat; agent sees errors",
            spec: |seed| {
                Spec::new(
                    3,
                    seed,
                    vec![(at(2.0), Fault::Crash(2)), (at(12.0), Fault::Restart(2))],
                )
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: false,
            islands: None,
            island_writes_taken: false,
            island_journals: None,
            snapshot_installed: false,
            lease_writes_superseded: false,
        },
        Scenario {
            name: "application-node-restored",
            row: "Application server restored",
            incumbent: "chat history lost; agent wrongly told the session is still active",
            spec: |seed| {
                Spec::new(
                    3,
                    seed,
                    vec![(at(1.0), Fault::Crash(3)), (at(6.0), Fault::Restart(3))],
                )
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: false,
            islands: None,
            island_writes_taken: false,
            island_journals: None,
            snapshot_installed: false,
            lease_writes_superseded: false,
        },
        Scenario {
            name: "services-node-dies",
            row: "Services server dies",
            incumbent: "agent can chat but cannot take other work; must log out",
            // Node 1 fires timers first. It dies while offers are pending and the agents are
            // away: the next node's services take over, the offers time out and are routed
            // again when the agents are back.
            spec: |seed| Spec {
                agent_delay: at(8.0),
                ..Spec::new(
                    3,
                    seed,
                    vec![(at(1.0), Fault::Crash(1)), (at(14.0), Fault::Restart(1))],
                )
            },
            all_completed: true,
            offers_time_out: true,
            leader_survives: false,
            islands: None,
            island_writes_taken: false,
            island_journals: None,
            snapshot_installed: false,
            lease_writes_superseded: false,
        },
        Scenario {
            name: "messaging-node-dies",
            row: "Messaging server dies",
            incumbent: "messages not delivered, and those sent meanwhile lost",
            spec: |seed| {
                Spec::new(
                    3,
                    seed,
                    vec![
                        (at(1.0), Fault::CutClients(1)),
                        (at(3.0), Fault::Crash(1)),
                        (at(10.0), Fault::Restart(1)),
                        (at(10.5), Fault::HealAll),
                    ],
                )
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: false,
            islands: None,
            island_writes_taken: false,
            island_journals: None,
            snapshot_installed: false,
            lease_writes_superseded: false,
        },
        Scenario {
            name: "messaging-and-application-die",
            row: "Messaging + application die",
            incumbent: "desktop times out; on restore chat lost, ghost session",
            spec: |seed| {
                Spec::new(
                    3,
                    seed,
                    vec![
                        (at(2.0), Fault::Crash(2)),
                        (at(4.0), Fault::Restart(2)),
                        (at(6.0), Fault::CrashLeader),
                        (at(9.0), Fault::RestartAll),
                    ],
                )
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: false,
            islands: None,
            island_writes_taken: false,
            island_journals: None,
            snapshot_installed: false,
            lease_writes_superseded: false,
        },
        Scenario {
            name: "all-roles-die-quorum-lost",
            row: "Messaging + application + services die",
            incumbent: "\"customer not connected\", session lost",
            // Two of three nodes die: writes stop (no quorum) and clients keep retrying; when
            // they return, nothing acknowledged is missing.
            spec: |seed| {
                Spec::new(
                    3,
                    seed,
                    vec![
                        (at(3.0), Fault::Crash(2)),
                        (at(3.0), Fault::Crash(3)),
                        (at(8.0), Fault::RestartAll),
                    ],
                )
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: false,
            islands: None,
            island_writes_taken: false,
            island_journals: None,
            snapshot_installed: false,
            lease_writes_superseded: false,
        },
        Scenario {
            name: "leader-failover",
            row: "Engine/leader failover",
            incumbent: "queued chats discarded; chat ends on redirect; agents re-login",
            spec: |seed| {
                Spec::new(
                    3,
                    seed,
                    vec![
                        (at(2.0), Fault::CrashLeader),
                        (at(5.0), Fault::RestartAll),
                        (at(8.0), Fault::CrashLeader),
                        (at(11.0), Fault::RestartAll),
                    ],
                )
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: false,
            islands: None,
            island_writes_taken: false,
            island_journals: None,
            snapshot_installed: false,
            lease_writes_superseded: false,
        },
        Scenario {
            name: "follower-cut-off-returns",
            row: "WAN split (one node cut off, then back)",
            incumbent: "the returning server forces a new election or acts as master itself",
            spec: |seed| {
                Spec::new(
                    3,
                    seed,
                    vec![
                        // Far longer than an election timeout: without pre-vote the cut-off
                        // node would campaign again and again and depose the leader on return.
                        (at(2.0), Fault::IsolateFollower),
                        (at(7.0), Fault::HealAll),
                    ],
                )
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: true,
            islands: Some(1),
            island_writes_taken: false,
            island_journals: None,
            snapshot_installed: false,
            lease_writes_superseded: false,
        },
        Scenario {
            name: "wan-minority-cut-off",
            row: "WAN split (minority side)",
            incumbent: "both sides act as master; on heal one side drops its active work",
            spec: |seed| {
                Spec::new(
                    5,
                    seed,
                    vec![
                        (at(2.0), Fault::IsolateLeader),
                        (at(2.5), Fault::Partition(1, 2)),
                        (at(9.0), Fault::HealAll),
                    ],
                )
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: false,
            // The cut-off leader becomes an island; whether a node across the cut link does too
            // depends on which node leads next.
            islands: None,
            island_writes_taken: false,
            island_journals: None,
            snapshot_installed: false,
            lease_writes_superseded: false,
        },
        Scenario {
            name: "agent-node-disconnects",
            row: "Primary interaction server disconnects",
            incumbent: "agents marked logged out; clients must re-register with a backup",
            // The agents' and customers' node vanishes for them, then dies; the agents'
            // sessions (in the replicated state) stay valid through other nodes.
            spec: |seed| {
                Spec::new(
                    3,
                    seed,
                    vec![
                        (at(1.5), Fault::CutClients(3)),
                        (at(2.0), Fault::Crash(3)),
                        (at(9.0), Fault::Restart(3)),
                        (at(9.5), Fault::HealAll),
                    ],
                )
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: false,
            islands: None,
            island_writes_taken: false,
            island_journals: None,
            snapshot_installed: false,
            lease_writes_superseded: false,
        },
        Scenario {
            name: "client-network-drops",
            row: "Customer/agent network drops briefly",
            incumbent: "missed messages not replayed after a reconnect",
            spec: |seed| {
                let mut schedule = Vec::new();
                for (i, node) in [1, 2, 3, 1, 2].into_iter().enumerate() {
                    let start = 1.0 + 2.0 * i as f64;
                    schedule.push((at(start), Fault::CutClients(node)));
                    schedule.push((at(start + 1.0), Fault::HealAll));
                }
                Spec::new(3, seed, schedule)
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: false,
            islands: None,
            island_writes_taken: false,
            island_journals: None,
            snapshot_installed: false,
            lease_writes_superseded: false,
        },
        Scenario {
            name: "double-submit",
            row: "Double submit on a weak connection",
            incumbent: "duplicate messages or tickets",
            spec: |seed| Spec {
                double_submit: true,
                ..Spec::new(
                    3,
                    seed,
                    vec![(at(3.0), Fault::IsolateLeader), (at(6.0), Fault::HealAll)],
                )
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: false,
            islands: None,
            island_writes_taken: false,
            island_journals: None,
            snapshot_installed: false,
            lease_writes_superseded: false,
        },
        Scenario {
            name: "node-replaced-under-faults",
            row: "A server is replaced (membership change)",
            incumbent: "a new server joins only with a maintenance window; work is lost meanwhile",
            // A spare (node 4) is added, promoted and node 1 removed while random faults hit
            // the first three nodes; the operator retries each change until the leader takes
            // it, as with `parley ctl`.
            spec: |seed| {
                let mut schedule = crate::sim::random_schedule(3, seed, at(16.0));
                schedule.extend([
                    (at(2.0), Fault::Join(4)),
                    (at(6.0), Fault::Promote(4)),
                    (at(10.0), Fault::Remove(1)),
                ]);
                Spec {
                    spares: 1,
                    ..Spec::new(3, seed, schedule)
                }
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: false,
            islands: None,
            island_writes_taken: false,
            island_journals: None,
            snapshot_installed: false,
            lease_writes_superseded: false,
        },
        Scenario {
            name: "site-cut-off-island-merges",
            row: "WAN split between two sites (island mode)",
            incumbent: "both sides act as master, no chat on the island; on heal one side's work \
                        is dropped",
            // Two sites, three nodes and two: the link between them breaks for longer than
            // `island_after`. The small site has no quorum: both its nodes become islands, and
            // the lower one keeps their one island journal (the other forwards to it); the large
            // site goes on. On heal the island merges, and every write either side acknowledged
            // is there once.
            spec: |seed| {
                let mut schedule = vec![(at(2.0), Fault::CutSite(1))];
                schedule.push((at(10.0), Fault::HealAll));
                Spec {
                    sites: vec![3, 2],
                    ..Spec::new(5, seed, schedule)
                }
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: false,
            islands: Some(2),
            island_writes_taken: true,
            island_journals: Some(1),
            snapshot_installed: false,
            lease_writes_superseded: false,
        },
        Scenario {
            name: "two-equal-sites-both-islands",
            row: "WAN split between two equal sites (no quorum anywhere)",
            incumbent: "both sides act as master; on heal one side's work is dropped",
            // Two sites of two nodes: no side has a quorum, so all four nodes become islands,
            // one island (one journal) per site. On heal both merge; every write either side
            // acknowledged is there once.
            spec: |seed| {
                let mut schedule = vec![(at(2.0), Fault::CutSite(1))];
                schedule.push((at(10.0), Fault::HealAll));
                Spec {
                    sites: vec![2, 2],
                    ..Spec::new(4, seed, schedule)
                }
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: false,
            islands: Some(4),
            island_writes_taken: true,
            island_journals: Some(2),
            snapshot_installed: false,
            lease_writes_superseded: false,
        },
        Scenario {
            name: "island-node-killed",
            row: "WAN split, then the island's journal node dies (kill -9) during the island and \
                  again during its merge",
            incumbent: "island work lost with the server; manual rebuild",
            // The small site is cut off; its keeper (node 4) is killed mid-island and restarted,
            // then killed again just after the heal, while it merges, and restarted. Its
            // journal survives both: every write it acknowledged is merged once.
            spec: |seed| {
                let mut schedule = vec![(at(2.0), Fault::CutSite(1))];
                schedule.push((at(6.0), Fault::Crash(4)));
                schedule.push((at(7.0), Fault::Restart(4)));
                schedule.push((at(12.0), Fault::HealAll));
                schedule.push((at(12.3), Fault::Crash(4)));
                schedule.push((at(13.5), Fault::Restart(4)));
                Spec {
                    sites: vec![3, 2],
                    ..Spec::new(5, seed, schedule)
                }
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: false,
            islands: Some(2),
            island_writes_taken: true,
            island_journals: None,
            snapshot_installed: false,
            lease_writes_superseded: false,
        },
        Scenario {
            name: "site-link-flaps",
            row: "WAN link between two sites flapping, a new split during a merge",
            incumbent: "repeated failovers; work dropped on each heal",
            // The link between the sites breaks, heals, breaks again 0.4 s into the merge,
            // heals, and breaks once more: islands come and go, merges are cut short and resume.
            // Customers post through all three cuts (10 messages, 0.8-2 s apart), so the
            // islands take writes whatever order the run's tasks take.
            spec: |seed| {
                let mut schedule = Vec::new();
                let cuts = [(2.0, 5.5), (5.9, 9.5), (12.0, 15.0)];
                for (cut, heal) in cuts {
                    schedule.push((at(cut), Fault::CutSite(1)));
                    schedule.push((at(heal), Fault::HealAll));
                }
                Spec {
                    sites: vec![3, 2],
                    messages: 10,
                    message_gap_ms: (800, 2_000),
                    ..Spec::new(5, seed, schedule)
                }
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: false,
            islands: Some(2),
            island_writes_taken: true,
            island_journals: None,
            snapshot_installed: false,
            lease_writes_superseded: false,
        },
        Scenario {
            name: "island-clocks-skewed",
            row: "WAN split with the island's clocks off by minutes, one stepped back, across \
                  a restart",
            incumbent: "replication ordered by wall clock: a skewed or stepped-back clock \
                        reorders or drops work",
            // The small site's clocks are off: node 4 runs 5 minutes fast, node 5 five
            // minutes slow. Cut off at 2 s, node 4 (the island's journal node) has its clock
            // stepped back 10 minutes at 5 s, is killed at 6 s and restarts at 7 s with that
            // clock, behind every stamp it issued. Its island clock must not go back (the HLC
            // check), and the merge still keeps everything once.
            spec: |seed| {
                let schedule = vec![
                    (at(0.0), Fault::Skew(4, 300_000)),
                    (at(0.0), Fault::Skew(5, -300_000)),
                    (at(2.0), Fault::CutSite(1)),
                    (at(5.0), Fault::Skew(4, -300_000)),
                    (at(6.0), Fault::Crash(4)),
                    (at(7.0), Fault::Restart(4)),
                    (at(12.0), Fault::HealAll),
                ];
                Spec {
                    sites: vec![3, 2],
                    ..Spec::new(5, seed, schedule)
                }
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: false,
            islands: Some(2),
            island_writes_taken: true,
            island_journals: None,
            snapshot_installed: false,
            lease_writes_superseded: false,
        },
        Scenario {
            name: "site-cut-off-random-faults",
            row: "WAN splits between three sites among random node and link faults",
            incumbent: "both sides act as master; work dropped on heal",
            // Five nodes over three sites (2 + 2 + 1): random faults, among them a site's WAN
            // link dropping for up to 8 s (an island from 2 s on).
            spec: |seed| Spec {
                sites: vec![2, 2, 1],
                ..Spec::new(
                    5,
                    seed,
                    crate::sim::random_site_schedule(&[2, 2, 1], seed, at(15.0)),
                )
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: false,
            islands: None,
            island_writes_taken: false,
            island_journals: None,
            snapshot_installed: false,
            lease_writes_superseded: false,
        },
        Scenario {
            name: "lease-holder-cut-off",
            row: "The mail fetcher's node cut off, then paused (its requests arriving late)",
            incumbent: "two servers fetch the same mailbox: mail taken in twice, or a stale \
                        server's writes land after its successor's",
            // The node holding the mailbox's fetch lease is cut off at 4 s for 3.5 s: its 2 s
            // lease lapses and another node takes it, and the fenced command it was proposing
            // when cut off, still retried by its proposer (the write timeout is 5 s), reaches
            // the leader after that take if the reconnection leaves it time. Then whoever
            // holds the lease at 10 s is paused for 3.5 s as the others see it: every message
            // to and from it is held, delivered at once at 13.5 s, and its proposer's retries
            // follow. At each fault the holder also stamps a late write inside its lease and
            // sends it once it applied its successor's take (`lease::request_late_write`):
            // the superseded command this scenario asserts, whatever the timing.
            spec: |seed| {
                with_leases(Spec::new(
                    3,
                    seed,
                    vec![
                        (at(4.0), Fault::IsolateHolder),
                        (at(7.5), Fault::HealAll),
                        (at(10.0), Fault::HoldHolder),
                        (at(13.5), Fault::HealAll),
                    ],
                ))
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: false,
            islands: None,
            island_writes_taken: false,
            island_journals: None,
            snapshot_installed: false,
            lease_writes_superseded: true,
        },
        Scenario {
            name: "lease-holder-clock-skewed",
            row: "The mail fetcher's clock stepped back, then its successor's run ahead and it \
                  is cut off",
            incumbent: "leases on wall clocks: two servers each believe they hold the mailbox",
            // At 4 s the holder's clock steps 5 s back: its renewals stamp expiries already
            // past for the others, one of which takes the lease while the holder still
            // believes it holds it. At 9 s whoever holds it then runs 5 s fast, and at 10 s it
            // is cut off until 22 s: the others must wait out the later expiry it stamped
            // (about 7 s after the cut, on their clocks).
            spec: |seed| {
                with_leases(Spec::new(
                    3,
                    seed,
                    vec![
                        (at(4.0), Fault::SkewHolder(-5_000)),
                        (at(9.0), Fault::SkewHolder(5_000)),
                        (at(10.0), Fault::IsolateHolder),
                        (at(22.0), Fault::HealAll),
                    ],
                ))
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: false,
            islands: None,
            island_writes_taken: false,
            island_journals: None,
            snapshot_installed: false,
            lease_writes_superseded: false,
        },
        Scenario {
            name: "site-cut-off-ten-minutes",
            row: "WAN split between two sites for ten minutes, traffic on both sides",
            incumbent: "both sides act as master; the island's work is dropped on heal; a long \
                        island needs a manual rebuild",
            // Sites 1-3 and 4-5 are cut apart from 2 s to 10 min; customers post every 5-15 s
            // through any node for those ten minutes. The quorum side snapshots and compacts
            // its log meanwhile (a snapshot every 50 entries, 20 kept behind it), so the
            // island's nodes catch up by installing a snapshot, then merge everything they
            // took.
            spec: |seed| {
                let mut schedule = vec![(at(2.0), Fault::CutSite(1))];
                schedule.push((at(600.0), Fault::HealAll));
                Spec {
                    sites: vec![3, 2],
                    messages: 60,
                    message_gap_ms: (5_000, 15_000),
                    log_entries_kept_after_snapshot: 20,
                    snapshot_every_entries: 50,
                    time_limit: std::time::Duration::from_secs(1_800),
                    ..Spec::new(5, seed, schedule)
                }
            },
            all_completed: true,
            offers_time_out: false,
            leader_survives: false,
            islands: Some(2),
            island_writes_taken: true,
            island_journals: Some(1),
            snapshot_installed: true,
            lease_writes_superseded: false,
        },
    ]
}

/// Scenarios over simulated days: run by name only (`parley-chaos --scenarios --scenario
/// <name>`), each taking many minutes of wall time, so neither the scenarios test nor a
/// plain `--scenarios` run includes them.
///
/// Turmoil 0.7 keeps the ephemeral port of every connect that never got its SYN-ACK, so a
/// node dialling the cut-off site about once a second per channel would run out of its 16,384
/// ports hours into the cut (the host panics, "ports exhausted"): these runs set
/// [`Spec::fail_dials_across_cuts`].
pub fn long() -> Vec<Scenario> {
    vec![Scenario {
        name: "site-cut-off-one-day",
        row: "WAN split between two sites for a day, traffic on both sides",
        incumbent: "a long island needs a manual rebuild (UCCX: after four days); the island's \
                    work is dropped on heal",
        // Sites 1-3 and 4-5 are cut apart from 2 s to 24 h; customers post every 25-35 min
        // through any node for that day, agents work on both sides. The quorum side snapshots
        // and compacts its log meanwhile, so the island's nodes catch up by installing a
        // snapshot, then merge everything they took. A 10 ms step and node timers five times
        // the usual (heartbeat 500 ms, elections from 1.8 s, islands after 10 s, as on a WAN)
        // keep the day affordable.
        spec: |seed| {
            let schedule = vec![(at(2.0), Fault::CutSite(1)), (at(86_400.0), Fault::HealAll)];
            Spec {
                sites: vec![3, 2],
                messages: 48,
                message_gap_ms: (25 * 60_000, 35 * 60_000),
                log_entries_kept_after_snapshot: 20,
                snapshot_every_entries: 50,
                time_limit: Duration::from_secs(2 * 86_400),
                tick: Duration::from_millis(10),
                timers_scale: 5,
                fail_dials_across_cuts: true,
                ..Spec::new(5, seed, schedule)
            }
        },
        all_completed: true,
        offers_time_out: false,
        leader_survives: false,
        islands: Some(2),
        island_writes_taken: true,
        island_journals: Some(1),
        snapshot_installed: true,
        lease_writes_superseded: false,
    }]
}

//! The oracle against planted bugs: a healthy two-node observation passes, and each test plants
//! one bug (a lost message, a duplicate, a gap, a double assignment, an agent over their limit,
//! a lost agent action, a diverging digest) and requires the oracle to name it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use parley_raft::command::{AgentSpec, Channel, Participant, TransferTarget};
use parley_raft::state::{
    Activity, ActivityDetail, ActivityStatus, Agent, AgentEvent, AgentEventBody, ChatEvent,
    EventBody, IslandConflict, Session, Transition,
};

use super::{check_all, AgentAction, Observation, Oracle, Violation, Window};

const CHAT: &str = "chat-1";

fn transition(at_ms: u64, status: ActivityStatus, reason: &str) -> Transition {
    Transition {
        at_ms,
        status,
        queue_id: "sales".to_owned(),
        reason: reason.to_owned(),
    }
}

fn offered(agent: &str, until_ms: u64) -> ActivityStatus {
    ActivityStatus::Offered {
        agent_id: agent.to_owned(),
        until_ms,
    }
}

fn assigned(agent: &str) -> ActivityStatus {
    ActivityStatus::Assigned {
        agent_id: agent.to_owned(),
    }
}

fn event(seq: u64, body: EventBody) -> ChatEvent {
    ChatEvent {
        seq,
        at_ms: 100 * seq,
        body,
        island: None,
    }
}

fn message(seq: u64, client_msg_id: &str) -> ChatEvent {
    event(
        seq,
        EventBody::Message {
            from: Participant::Customer,
            client_msg_id: client_msg_id.to_owned(),
            text: format!("text of {client_msg_id}"),
        },
    )
}

fn activity(id: &str, history: Vec<Transition>) -> Activity {
    let status = history
        .last()
        .map_or(ActivityStatus::Queued, |t| t.status.clone());
    Activity {
        id: id.to_owned(),
        channel: Channel::Chat,
        queue_id: "sales".to_owned(),
        status,
        created_at_ms: 100,
        enqueued_at_ms: 100,
        assigned_at_ms: None,
        history,
        detail: ActivityDetail::Chat,
        request_key: None,
        island_conflicts: Vec::new(),
    }
}

fn agent(id: &str, limit: u32, feed: Vec<(u64, AgentEventBody)>) -> Agent {
    let feed: VecDeque<AgentEvent> = feed
        .into_iter()
        .enumerate()
        .map(|(index, (at_ms, body))| AgentEvent {
            seq: index as u64 + 1,
            at_ms,
            body,
        })
        .collect();
    Agent {
        spec: AgentSpec {
            id: id.to_owned(),
            name: id.to_owned(),
            skills: Vec::new(),
            limits: BTreeMap::from([(Channel::Chat, limit)]),
            password_hash: String::new(),
        },
        session: Some(Session {
            session_id: format!("{id}-session"),
            since_ms: 50,
            node: 1,
        }),
        ready: BTreeMap::from([(Channel::Chat, true)]),
        not_ready_reason: None,
        idle_since_ms: 0,
        work: BTreeSet::new(),
        feed_next_seq: feed.len() as u64 + 1,
        feed,
        own_stamp: None,
    }
}

fn offered_event(activity_id: &str) -> AgentEventBody {
    AgentEventBody::Offered {
        activity_id: activity_id.to_owned(),
        channel: Channel::Chat,
        queue_id: "sales".to_owned(),
        until_ms: 10_000,
    }
}

fn released_event(activity_id: &str, reason: &str) -> AgentEventBody {
    AgentEventBody::Released {
        activity_id: activity_id.to_owned(),
        reason: reason.to_owned(),
    }
}

fn window(sent_ms: u64, answered_ms: u64) -> Window {
    Window {
        sent_ms,
        answered_ms,
    }
}

/// A healthy run: alice logs in, gets ready, accepts chat-1, sends it back to the queue, takes
/// it again and completes it; its customer posted two messages. Every node shows it alike.
fn healthy() -> (Oracle, Vec<Observation>) {
    let mut oracle = Oracle::default();
    oracle.chat_started(CHAT);
    oracle.acked(CHAT, "m0", 2);
    oracle.acked(CHAT, "m1", 3);
    let session_id = "alice-session".to_owned();
    for (action, w) in [
        (
            AgentAction::Login {
                session_id: session_id.clone(),
            },
            window(40, 55),
        ),
        (
            AgentAction::Availability {
                channel: Channel::Chat,
                ready: true,
            },
            window(55, 65),
        ),
        (
            AgentAction::Accept {
                activity_id: CHAT.to_owned(),
            },
            window(150, 210),
        ),
        (
            AgentAction::Transfer {
                activity_id: CHAT.to_owned(),
                target: TransferTarget::Queue {
                    queue_id: "sales".to_owned(),
                },
            },
            window(250, 310),
        ),
        (
            AgentAction::Accept {
                activity_id: CHAT.to_owned(),
            },
            window(350, 410),
        ),
        (
            AgentAction::Complete {
                activity_id: CHAT.to_owned(),
            },
            window(450, 510),
        ),
    ] {
        oracle.agent_acked("alice", action, w, None);
    }
    let chat = vec![
        event(
            1,
            EventBody::Started {
                queue_id: "sales".to_owned(),
                customer_name: "C".to_owned(),
                question: "q".to_owned(),
            },
        ),
        message(2, "m0"),
        message(3, "m1"),
    ];
    let history = vec![
        transition(100, ActivityStatus::Queued, "created"),
        transition(100, offered("alice", 5_100), "routed"),
        transition(200, assigned("alice"), "accepted"),
        transition(300, ActivityStatus::Queued, "transferred"),
        transition(300, offered("alice", 5_300), "routed"),
        transition(400, assigned("alice"), "accepted"),
        transition(
            500,
            ActivityStatus::Completed {
                outcome: Some("completed".to_owned()),
            },
            "completed",
        ),
    ];
    let alice = agent(
        "alice",
        1,
        vec![
            (50, AgentEventBody::LoggedIn { session_id }),
            (
                60,
                AgentEventBody::Availability {
                    ready: BTreeMap::from([(Channel::Chat, true)]),
                    reason: None,
                },
            ),
            (100, offered_event(CHAT)),
            (
                200,
                AgentEventBody::Assigned {
                    activity_id: CHAT.to_owned(),
                },
            ),
            (300, released_event(CHAT, "transferred")),
            (300, offered_event(CHAT)),
            (
                400,
                AgentEventBody::Assigned {
                    activity_id: CHAT.to_owned(),
                },
            ),
            (500, released_event(CHAT, "completed")),
        ],
    );
    let bob = agent("bob", 1, Vec::new());
    let observation = Observation {
        node: 1,
        applied_index: 42,
        digest: "d1".to_owned(),
        invariant_violations: Vec::new(),
        chats: BTreeMap::from([(CHAT.to_owned(), chat)]),
        activities: BTreeMap::from([(CHAT.to_owned(), activity(CHAT, history))]),
        agents: BTreeMap::from([("alice".to_owned(), alice), ("bob".to_owned(), bob)]),
    };
    let second = Observation {
        node: 2,
        ..observation.clone()
    };
    (oracle, vec![observation, second])
}

/// Runs the oracle over a planted bug: it must report something containing `expected`.
fn assert_caught(oracle: &Oracle, observations: &[Observation], expected: &str) {
    let violations: Vec<Violation> = check_all(oracle, observations);
    assert!(
        violations.iter().any(|v| v.0.contains(expected)),
        "the oracle missed a planted bug (expected a violation containing {expected:?}); it \
         reported {violations:#?}"
    );
}

fn node1(observations: &mut [Observation]) -> &mut Observation {
    &mut observations[0]
}

fn chat_history(observation: &mut Observation) -> &mut Vec<Transition> {
    &mut observation
        .activities
        .get_mut(CHAT)
        .expect("the fixture has the chat's activity")
        .history
}

#[test]
fn oracle_passes_a_healthy_run() {
    let (oracle, observations) = healthy();
    assert_eq!(check_all(&oracle, &observations), Vec::<Violation>::new());
}

#[test]
fn oracle_catches_a_lost_acknowledged_message() {
    let (oracle, mut observations) = healthy();
    node1(&mut observations)
        .chats
        .get_mut(CHAT)
        .expect("chat")
        .truncate(2);
    assert_caught(
        &oracle,
        &observations,
        "G1: node 1 chat chat-1: acknowledged m1 is missing",
    );
}

#[test]
fn oracle_catches_a_lost_acknowledged_chat() {
    let (oracle, mut observations) = healthy();
    node1(&mut observations).chats.clear();
    assert_caught(
        &oracle,
        &observations,
        "G1: node 1 lost acknowledged chat chat-1",
    );
}

#[test]
fn oracle_catches_a_message_stored_at_another_seq() {
    let (mut oracle, observations) = healthy();
    oracle.acked(CHAT, "m1", 4);
    assert_caught(
        &oracle,
        &observations,
        "m1 acknowledged at 4 but stored at 3",
    );
}

#[test]
fn oracle_catches_a_client_id_stored_twice() {
    let (oracle, mut observations) = healthy();
    node1(&mut observations)
        .chats
        .get_mut(CHAT)
        .expect("chat")
        .push(message(4, "m1"));
    assert_caught(
        &oracle,
        &observations,
        "G2: node 1 chat chat-1: m1 appears twice",
    );
}

#[test]
fn oracle_catches_an_event_applied_twice() {
    let (oracle, mut observations) = healthy();
    let events = node1(&mut observations).chats.get_mut(CHAT).expect("chat");
    let again = events[1].clone();
    events.insert(2, again);
    assert_caught(
        &oracle,
        &observations,
        "G3: node 1 chat chat-1: event 2 has seq 2",
    );
}

#[test]
fn oracle_catches_a_gap_in_seq() {
    let (oracle, mut observations) = healthy();
    let events = node1(&mut observations).chats.get_mut(CHAT).expect("chat");
    events[2].seq = 4;
    assert_caught(
        &oracle,
        &observations,
        "G3: node 1 chat chat-1: event 2 has seq 4",
    );
}

#[test]
fn oracle_catches_a_diverging_digest() {
    let (oracle, mut observations) = healthy();
    observations[1].digest = "d2".to_owned();
    assert_caught(&oracle, &observations, "G7: node 2 digest d2 differs");
}

#[test]
fn oracle_catches_replicas_that_did_not_converge() {
    let (oracle, mut observations) = healthy();
    observations[1].applied_index = 41;
    assert_caught(&oracle, &observations, "replicas did not converge");
}

#[test]
fn oracle_reports_what_validate_found() {
    let (oracle, mut observations) = healthy();
    node1(&mut observations)
        .invariant_violations
        .push("state invariant violated: timer is stale".to_owned());
    assert_caught(&oracle, &observations, "node 1: state invariant violated");
}

#[test]
fn oracle_catches_an_activity_held_by_two_agents() {
    let (oracle, mut observations) = healthy();
    // Bob takes alice's chat while she works it, and both list it as their work.
    let observation = node1(&mut observations);
    let history = chat_history(observation);
    history.truncate(6);
    history.push(transition(450, assigned("bob"), "accepted"));
    let chat = observation.activities.get_mut(CHAT).expect("activity");
    chat.status = assigned("bob");
    for id in ["alice", "bob"] {
        observation
            .agents
            .get_mut(id)
            .expect("agent")
            .work
            .insert(CHAT.to_owned());
    }
    assert_caught(
        &oracle,
        &observations,
        "G6: node 1 activity chat-1: assigned to bob at 450 ms while Assigned",
    );
    assert_caught(
        &oracle,
        &observations,
        "G6: node 1 activity chat-1 is held by [\"alice\", \"bob\"] at once",
    );
}

#[test]
fn oracle_catches_an_offer_to_a_second_agent() {
    let (oracle, mut observations) = healthy();
    // Routing offers the chat to bob while alice still has the offer.
    chat_history(node1(&mut observations))
        .insert(2, transition(150, offered("bob", 5_150), "routed"));
    assert_caught(
        &oracle,
        &observations,
        "G6: node 1 activity chat-1: offered to bob at 150 ms while held by alice",
    );
}

#[test]
fn oracle_catches_an_agent_above_their_limit() {
    let (oracle, mut observations) = healthy();
    let observation = node1(&mut observations);
    // A second chat offered to alice (limit 1) while she works the first.
    let other = "chat-2";
    observation.activities.insert(
        other.to_owned(),
        activity(
            other,
            vec![
                transition(220, ActivityStatus::Queued, "created"),
                transition(220, offered("alice", 5_220), "routed"),
            ],
        ),
    );
    let alice = observation.agents.get_mut("alice").expect("alice");
    alice.feed.insert(
        4,
        AgentEvent {
            seq: 0,
            at_ms: 220,
            body: offered_event(other),
        },
    );
    for (index, event) in alice.feed.iter_mut().enumerate() {
        event.seq = index as u64 + 1;
    }
    alice.feed_next_seq = alice.feed.len() as u64 + 1;
    alice.work.insert(other.to_owned());
    // Over the limit while replaying the feed (alice held chat-1 and chat-2)...
    assert_caught(
        &oracle,
        &observations,
        "G6: node 1 agent alice held 2 chat activities at feed seq 5, over a limit of 1",
    );
    // ... unless a merge gave it to her: the work she took on an island is hers whatever her
    // load (ISLAND.md rule 4), and only that offer is excused.
    {
        let mut merged = observations.clone();
        let history = &mut node1(&mut merged)
            .activities
            .get_mut(other)
            .expect("chat-2")
            .history;
        history[1].reason = "merged_accept".to_owned();
        let violations = check_all(&oracle, &merged);
        assert!(
            !violations
                .iter()
                .any(|v| v.0.contains("held 2 chat activities at feed seq 5")),
            "{violations:?}"
        );
    }
    // ... and at the end, with a third.
    let observation = node1(&mut observations);
    let third = "chat-3";
    observation.activities.insert(
        third.to_owned(),
        activity(
            third,
            vec![
                transition(600, ActivityStatus::Queued, "created"),
                transition(600, offered("alice", 5_600), "routed"),
            ],
        ),
    );
    observation
        .agents
        .get_mut("alice")
        .expect("alice")
        .work
        .insert(third.to_owned());
    assert_caught(
        &oracle,
        &observations,
        "G6: node 1 agent alice holds 2 chat activities, over a limit of 1",
    );
}

#[test]
fn oracle_catches_an_assignment_without_an_offer_in_the_feed() {
    let (oracle, mut observations) = healthy();
    // The feed lost the second offer: alice is assigned what she was not offered.
    let alice = node1(&mut observations)
        .agents
        .get_mut("alice")
        .expect("alice");
    alice.feed.remove(5);
    for (index, event) in alice.feed.iter_mut().enumerate() {
        event.seq = index as u64 + 1;
    }
    assert_caught(
        &oracle,
        &observations,
        "G6: node 1 agent alice: assigned chat-1 (feed seq 6) without an offer",
    );
}

#[test]
fn oracle_catches_a_lost_acknowledged_accept() {
    let (oracle, mut observations) = healthy();
    // The second acceptance is gone: the chat was completed from the offer.
    chat_history(node1(&mut observations)).remove(5);
    assert_caught(
        &oracle,
        &observations,
        "G1: node 1: alice's acknowledged Accept { activity_id: \"chat-1\" } (applied between \
         350 and 410 ms) is not in the state",
    );
}

#[test]
fn oracle_passes_an_accept_whose_next_transition_was_stamped_earlier() {
    let (oracle, mut observations) = healthy();
    // The transition after the first acceptance (200 ms) was stamped at 140 ms, before the
    // accept's window (150-210 ms), where it arrived, and committed after the accept: the
    // acceptance was still in effect when it was made (double-submit seeds 24, 38 and 71
    // reported such an accept as lost).
    chat_history(node1(&mut observations))[3].at_ms = 140;
    assert_eq!(check_all(&oracle, &observations), Vec::<Violation>::new());
}

#[test]
fn oracle_catches_an_accept_acknowledged_before_it_applied() {
    let (oracle, mut observations) = healthy();
    // The first acceptance applied only after its answer was sent.
    chat_history(node1(&mut observations))[2].at_ms = 240;
    assert_caught(
        &oracle,
        &observations,
        "alice's acknowledged Accept { activity_id: \"chat-1\" } (applied between 150 and 210 ms)",
    );
}

#[test]
fn oracle_catches_a_lost_acknowledged_transfer() {
    let (oracle, mut observations) = healthy();
    // The transfer never applied: the chat stays with alice until completed.
    let history = chat_history(node1(&mut observations));
    for _ in 3..6 {
        history.remove(3);
    }
    assert_caught(
        &oracle,
        &observations,
        "alice's acknowledged Transfer { activity_id: \"chat-1\"",
    );
}

#[test]
fn oracle_catches_a_transfer_to_the_wrong_target() {
    let (oracle, mut observations) = healthy();
    for transition in chat_history(node1(&mut observations)).iter_mut() {
        if transition.reason == "transferred" {
            transition.queue_id = "support".to_owned();
        }
    }
    assert_caught(
        &oracle,
        &observations,
        "alice's acknowledged Transfer { activity_id: \"chat-1\"",
    );
}

#[test]
fn oracle_catches_a_lost_acknowledged_completion() {
    let (oracle, mut observations) = healthy();
    let observation = node1(&mut observations);
    chat_history(observation).pop();
    let chat = observation.activities.get_mut(CHAT).expect("activity");
    chat.status = assigned("alice");
    observation
        .agents
        .get_mut("alice")
        .expect("alice")
        .work
        .insert(CHAT.to_owned());
    assert_caught(
        &oracle,
        &observations,
        "alice's acknowledged Complete { activity_id: \"chat-1\" }",
    );
}

#[test]
fn oracle_catches_a_lost_acknowledged_login() {
    let (oracle, mut observations) = healthy();
    let alice = node1(&mut observations)
        .agents
        .get_mut("alice")
        .expect("alice");
    alice.feed[0].body = AgentEventBody::LoggedIn {
        session_id: "another-session".to_owned(),
    };
    assert_caught(
        &oracle,
        &observations,
        "alice's acknowledged Login { session_id: \"alice-session\" }",
    );
}

#[test]
fn oracle_catches_a_lost_acknowledged_availability_change() {
    let (oracle, mut observations) = healthy();
    let alice = node1(&mut observations)
        .agents
        .get_mut("alice")
        .expect("alice");
    alice.feed[1].body = AgentEventBody::Availability {
        ready: BTreeMap::from([(Channel::Chat, false)]),
        reason: Some("missed_offer".to_owned()),
    };
    assert_caught(
        &oracle,
        &observations,
        "alice's acknowledged Availability { channel: Chat, ready: true }",
    );
}

#[test]
fn oracle_catches_a_lost_agent() {
    let (oracle, mut observations) = healthy();
    node1(&mut observations).agents.remove("alice");
    assert_caught(&oracle, &observations, "G1: node 1 has no agent alice");
}

#[test]
fn oracle_reports_an_unexpected_answer() {
    let (mut oracle, observations) = healthy();
    oracle.unexpected(CHAT, "transfer: Err(\"conflict\")");
    assert_caught(
        &oracle,
        &observations,
        "unexpected answer: chat-1: transfer",
    );
}

#[test]
fn oracle_passes_a_retried_accept_answered_as_done() {
    let (mut oracle, observations) = healthy();
    // A second accept of the same offer, answered as done because the first had applied: the
    // assignment it finds is still in effect in its window.
    oracle.agent_acked(
        "alice",
        AgentAction::Accept {
            activity_id: CHAT.to_owned(),
        },
        window(220, 230),
        None,
    );
    assert_eq!(check_all(&oracle, &observations), Vec::<Violation>::new());
    // Once the chat went back to the queue (300 ms), an accept answered as done is a lie.
    oracle.agent_acked(
        "alice",
        AgentAction::Accept {
            activity_id: CHAT.to_owned(),
        },
        window(320, 330),
        None,
    );
    assert_caught(
        &oracle,
        &observations,
        "alice's acknowledged Accept { activity_id: \"chat-1\" } (applied between 320 and 330 ms)",
    );
}

/// Plants, on every node, the second acceptance (400 ms) as made by an island's merge rather
/// than by alice's acknowledged accept, and an island conflict of `action` by `agent_id`
/// stamped `at_ms` on the chat.
fn second_accept_lost_on_an_island(
    observations: &mut [Observation],
    agent_id: &str,
    action: &str,
    at_ms: u64,
) {
    for observation in observations.iter_mut() {
        chat_history(observation)[5].reason = "merged_accept".to_owned();
        let activity = observation
            .activities
            .get_mut(CHAT)
            .expect("the healthy run's chat");
        activity.island_conflicts.push(IslandConflict {
            agent_id: agent_id.to_owned(),
            action: action.to_owned(),
            at_ms,
            origin: 4,
            epoch: 1,
            reason: "assigned_elsewhere".to_owned(),
        });
    }
}

#[test]
fn oracle_passes_an_island_accept_kept_as_a_conflict() {
    let (mut oracle, mut observations) = healthy();
    oracle.actions[4].island = Some(4);
    // Alice's second accept (350-410 ms) was taken by an island and lost at its merge: the
    // chat keeps it as a conflict stamped inside the window.
    second_accept_lost_on_an_island(&mut observations, "alice", "accept", 380);
    assert_eq!(check_all(&oracle, &observations), Vec::<Violation>::new());
}

#[test]
fn oracle_catches_a_conflict_that_is_not_the_acknowledged_action() {
    for (agent_id, action, at_ms, taken_by) in [
        ("bob", "accept", 380, Some(4)),     // another agent's
        ("alice", "complete", 380, Some(4)), // another action
        ("alice", "accept", 420, Some(4)),   // outside the window
        ("alice", "accept", 380, Some(5)),   // taken by another island
        ("alice", "accept", 380, None),      // the cluster took it: no island conflict
    ] {
        let (mut oracle, mut observations) = healthy();
        oracle.actions[4].island = taken_by;
        second_accept_lost_on_an_island(&mut observations, agent_id, action, at_ms);
        assert_caught(
            &oracle,
            &observations,
            "G1: node 1: alice's acknowledged Accept { activity_id: \"chat-1\" } (applied \
             between 350 and 410 ms) is not in the state",
        );
    }
}

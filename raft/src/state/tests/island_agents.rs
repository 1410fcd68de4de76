//! Agents on an island: who the island routes to, and how their actions merge (ISLAND.md
//! rules 2, 3, 4 and 6); their feed cursors across the merge.

use super::island::{before_split, island_ready, merge, texts, Island};
use super::*;
use crate::state::EventCursor;

fn login(agent_id: &str) -> Op {
    Op::Login(Login {
        agent_id: agent_id.into(),
        session_id: format!("s-{agent_id}"),
    })
}

fn availability(agent_id: &str, ready: bool, reason: Option<&str>) -> Op {
    Op::SetAvailability(SetAvailability {
        session: session(agent_id),
        channels: BTreeMap::from([(Channel::Chat, ready)]),
        reason: reason.map(str::to_owned),
    })
}

fn complete(agent_id: &str, activity_id: &str) -> Op {
    Op::Complete(Complete {
        action: action(agent_id, activity_id),
        outcome: None,
    })
}

fn agent_post(chat_id: &str, agent_id: &str, client_msg_id: &str, text: &str) -> Op {
    post_as(
        chat_id,
        Participant::Agent {
            agent_id: agent_id.into(),
        },
        client_msg_id,
        text,
    )
}

fn reasons(state: &State, activity_id: &str) -> Vec<String> {
    state.activities[activity_id]
        .history
        .iter()
        .map(|t| t.reason.clone())
        .collect()
}

#[test]
fn an_island_routes_the_chats_it_started_to_agents_who_acted_there_and_merges_their_work() {
    let mut fork = island_ready();
    // Alice is signed in and ready before the split, on the quorum side; a French chat waits.
    login_ready(&mut fork, 10, "alice");
    apply_ok(&mut fork, 20, start_in("c0", "r0", "fr"));
    assert_eq!(status(&fork, "c0"), ActivityStatus::Queued);
    let mut island = Island::fork(&fork, 4, 1);
    island.take(100, login("bob"));
    island.take(101, availability("bob", true, None));
    assert_eq!(
        status(&island.view, "c0"),
        ActivityStatus::Queued,
        "bob speaks French, but work of before the split waits for the merge (rule 6)"
    );
    island.take(110, start("c2", "r2"));
    assert!(
        offered_to("bob")(&status(&island.view, "c2")),
        "alice has room and waited longer, but only bob acted on the island: {:?}",
        status(&island.view, "c2")
    );
    assert!(!matches!(
        island.take(120, Op::Accept(action("bob", "c2"))),
        Outcome::Rejected(_)
    ));
    island.take(130, agent_post("c2", "bob", "b1", "hello from bob"));
    island.take(140, complete("bob", "c2"));
    assert!(status(&island.view, "c2").is_terminal());

    let mut quorum = fork.clone();
    let (merged, skipped, refused) = merge(&mut quorum, 200, island.all());
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!((merged, skipped), (6, 0));
    assert_eq!(
        status(&quorum, "c2"),
        ActivityStatus::Completed {
            outcome: Some("completed".into())
        }
    );
    let history = reasons(&quorum, "c2");
    assert!(
        history.contains(&"accepted".to_owned()),
        "bob's accept merged: {history:?}"
    );
    assert_eq!(texts(&quorum, "c2"), vec!["hello from bob"]);
    assert!(quorum.agents["bob"].has_session("s-bob"));
    assert!(
        offered_to("bob")(&status(&quorum, "c0")),
        "once merged, the cluster routes the French chat to bob: {:?}",
        status(&quorum, "c0")
    );
    quorum.validate().unwrap();
}

#[test]
fn an_agent_on_both_sides_keeps_the_latest_availability_and_all_their_work() {
    // Alice works c1 (her limit is 2) when the site is cut off; she reaches both sides.
    let fork = before_split();
    let mut quorum = fork.clone();
    apply_ok(&mut quorum, 250, start("c3", "r3"));
    assert!(offered_to("alice")(&status(&quorum, "c3")));
    apply_ok(&mut quorum, 260, Op::Accept(action("alice", "c3")));
    apply_ok(
        &mut quorum,
        300,
        availability("alice", false, Some("lunch")),
    );

    let mut island = Island::fork(&fork, 4, 1);
    island.take(150, availability("alice", true, None));
    island.take(160, start("c2", "r2"));
    island.take(170, Op::Accept(action("alice", "c2")));
    let (_, _, refused) = merge(&mut quorum.clone(), 400, island.all());
    assert!(refused.is_empty(), "{refused:?}");

    // The cluster's "lunch" (300) is later than the island's "ready" (150): it stands.
    let mut merged = quorum.clone();
    merge(&mut merged, 400, island.all());
    let alice = &merged.agents["alice"];
    assert_eq!(alice.ready.get(&Channel::Chat), Some(&false));
    assert_eq!(alice.not_ready_reason.as_deref(), Some("lunch"));
    // Assigned work is the union, never revoked: three chats over a limit of two.
    let assigned: Vec<&str> = ["c1", "c2", "c3"]
        .into_iter()
        .filter(|id| {
            status(&merged, id)
                == ActivityStatus::Assigned {
                    agent_id: "alice".into(),
                }
        })
        .collect();
    assert_eq!(assigned, vec!["c1", "c2", "c3"]);

    // Had she said "ready" on the island after her lunch, that would stand, and still no new
    // chat is offered to her while she is over her limit.
    island.take(350, availability("alice", true, None));
    let mut merged = quorum.clone();
    merge(&mut merged, 400, island.all());
    assert_eq!(
        merged.agents["alice"].ready.get(&Channel::Chat),
        Some(&true)
    );
    apply_ok(&mut merged, 500, start("c4", "r4"));
    assert_eq!(status(&merged, "c4"), ActivityStatus::Queued);
    merged.validate().unwrap();
}

#[test]
fn a_sign_in_on_the_island_loses_to_a_later_one_on_the_cluster_and_the_work_stays() {
    let fork = island_ready();
    let mut quorum = fork.clone();
    apply_ok(
        &mut quorum,
        300,
        Op::Login(Login {
            agent_id: "bob".into(),
            session_id: "s-bob-desk".into(),
        }),
    );
    let mut island = Island::fork(&fork, 4, 1);
    island.take(100, login("bob"));
    island.take(101, availability("bob", true, None));
    island.take(110, start("c2", "r2"));
    island.take(120, Op::Accept(action("bob", "c2")));
    island.take(130, agent_post("c2", "bob", "b1", "on it"));
    let (_, _, refused) = merge(&mut quorum, 400, island.all());
    assert!(refused.is_empty(), "{refused:?}");
    let bob = &quorum.agents["bob"];
    assert!(
        bob.has_session("s-bob-desk"),
        "the later sign-in (300) is bob's session: {:?}",
        bob.session
    );
    assert_eq!(
        status(&quorum, "c2"),
        ActivityStatus::Assigned {
            agent_id: "bob".into()
        },
        "what bob did on the island counts by bob, whatever his session"
    );
    assert_eq!(texts(&quorum, "c2"), vec!["on it"]);
}

/// A cluster where alice works `c1` and bob, signed in through another node, is ready; alice's
/// node is cut off, and c1's customer writes on the quorum side, so c1 goes back to its queue
/// and bob takes it (ISLAND.md rule 3, the quorum side).
fn rerouted_on_the_quorum_side() -> (State, State) {
    let mut fork = before_split();
    apply_ok(
        &mut fork,
        45,
        Op::Login(Login {
            agent_id: "bob".into(),
            session_id: "s-bob".into(),
        }),
    );
    let mut bob_node = command(46, Op::Presence(session("bob")));
    bob_node.origin = 2;
    assert_eq!(fork.apply(&bob_node), Outcome::Done);
    let mut quorum = fork.clone();
    apply_ok(
        &mut quorum,
        50,
        Op::SetUnreachable {
            nodes: BTreeSet::from([1]),
        },
    );
    apply_ok(&mut quorum, 60, availability("bob", true, None));
    apply_ok(&mut quorum, 200, post("c1", "q1", "anyone there?"));
    assert!(
        offered_to("bob")(&status(&quorum, "c1")),
        "{:?}",
        status(&quorum, "c1")
    );
    apply_ok(&mut quorum, 210, Op::Accept(action("bob", "c1")));
    (fork, quorum)
}

#[test]
fn a_chat_worked_on_both_sides_goes_to_the_side_its_customer_wrote_to_last() {
    // The customer's last word was on the island (300, after 200 on the quorum side): alice
    // works the chat after the merge, bob is released with `merged_transfer`.
    let (fork, quorum) = rerouted_on_the_quorum_side();
    let mut island = Island::fork(&fork, 4, 1);
    island.take(250, agent_post("c1", "alice", "a1", "still here"));
    island.take(300, post("c1", "i1", "thanks alice"));
    let mut merged = quorum.clone();
    let (_, _, refused) = merge(&mut merged, 400, island.all());
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(
        status(&merged, "c1"),
        ActivityStatus::Assigned {
            agent_id: "alice".into()
        }
    );
    assert_eq!(merged.chats["c1"].agent_id.as_deref(), Some("alice"));
    assert!(reasons(&merged, "c1").contains(&"merged_transfer".to_owned()));
    assert!(
        !merged.agents["bob"].work.contains("c1"),
        "bob has his capacity back"
    );
    assert!(merged.chats["c1"].events.iter().any(|e| matches!(
        &e.body,
        EventBody::AgentLeft { agent_id, reason } if agent_id == "bob" && reason == "merged_transfer"
    )));
    merged.validate().unwrap();

    // The customer's last word was on the quorum side (the island's is earlier): bob keeps
    // the chat, alice's island messages stay in the transcript.
    let mut island = Island::fork(&fork, 4, 1);
    island.take(150, post("c1", "i1", "hello?"));
    island.take(160, agent_post("c1", "alice", "a1", "here"));
    let mut merged = quorum.clone();
    let (_, _, refused) = merge(&mut merged, 400, island.all());
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(
        status(&merged, "c1"),
        ActivityStatus::Assigned {
            agent_id: "bob".into()
        }
    );
    assert!(texts(&merged, "c1").contains(&"here".to_owned()));
    merged.validate().unwrap();
}

#[test]
fn an_island_accept_that_loses_is_kept_as_a_conflict_and_releases_the_island_agent() {
    // Carol takes the chat on the island, but its customer wrote last on the quorum side,
    // where bob works it: bob keeps it, carol's accept and her transfer are kept as conflicts
    // (not dropped, not refused), and her feed says the chat is not hers.
    let (mut fork, mut quorum) = rerouted_on_the_quorum_side();
    for state in [&mut fork, &mut quorum] {
        let carol = agent("carol", &["sales"], 2);
        apply_ok(state, 47, Op::Upsert(DirectoryEntry::Agent(carol)));
        apply_ok(state, 48, login("carol"));
    }
    let mut island = Island::fork(&fork, 4, 1);
    // The chat was alice's before the split; she hands it to carol on the island.
    island.take(120, availability("carol", true, None));
    island.take(
        130,
        Op::Transfer(Transfer {
            action: action("alice", "c1"),
            target: TransferTarget::Agent {
                agent_id: "carol".into(),
            },
        }),
    );
    island.take(140, Op::Accept(action("carol", "c1")));
    island.take(
        150,
        Op::Transfer(Transfer {
            action: action("carol", "c1"),
            target: TransferTarget::Queue {
                queue_id: "sales".into(),
            },
        }),
    );
    let mut merged = quorum.clone();
    let (_, _, refused) = merge(&mut merged, 400, island.all());
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(
        status(&merged, "c1"),
        ActivityStatus::Assigned {
            agent_id: "bob".into()
        }
    );
    let kept: Vec<(String, String, String)> = merged.activities["c1"]
        .island_conflicts
        .iter()
        .map(|c| (c.agent_id.clone(), c.action.clone(), c.reason.clone()))
        .collect();
    assert_eq!(
        kept,
        vec![
            (
                "alice".into(),
                "transfer".into(),
                "assigned_elsewhere".into()
            ),
            ("carol".into(), "accept".into(), "assigned_elsewhere".into()),
            (
                "carol".into(),
                "transfer".into(),
                "assigned_elsewhere".into()
            ),
        ]
    );
    assert!(merged.activities["c1"]
        .island_conflicts
        .iter()
        .all(|c| c.origin == 4 && c.epoch == 1));
    assert!(
        merged.agents["carol"].feed.iter().any(|e| matches!(
            &e.body,
            AgentEventBody::Released { activity_id, reason }
                if activity_id == "c1" && reason == "merged_transfer"
        )),
        "carol's console is told to let go"
    );
    assert!(!merged.agents["carol"].work.contains("c1"));
    merged.validate().unwrap();
    // Merging the same chunk again changes nothing.
    let again = merged.clone();
    let (_, skipped, _) = merge(&mut merged, 500, island.all());
    assert_eq!(skipped as usize, island.journal.len());
    assert_eq!(merged.activities["c1"], again.activities["c1"]);
}

#[test]
fn an_island_accept_of_work_the_cluster_ended_is_kept_as_a_conflict() {
    let fork = island_ready();
    let mut island = Island::fork(&fork, 4, 1);
    island.take(100, login("bob"));
    island.take(101, availability("bob", true, None));
    island.take(110, start("c2", "r2"));
    island.take(120, Op::Accept(action("bob", "c2")));
    island.take(130, complete("bob", "c2"));
    // The same chat (same request id) reached the cluster too, and alice finished it there.
    let mut quorum = fork.clone();
    login_ready(&mut quorum, 105, "alice");
    let started = apply_ok(&mut quorum, 111, start("c2", "r2"));
    assert!(
        matches!(started, Outcome::ChatStarted { .. }),
        "{started:?}"
    );
    apply_ok(&mut quorum, 115, Op::Accept(action("alice", "c2")));
    apply_ok(&mut quorum, 118, complete("alice", "c2"));
    let (_, _, refused) = merge(&mut quorum, 400, island.all());
    assert!(refused.is_empty(), "{refused:?}");
    let kept: Vec<(&str, &str)> = quorum.activities["c2"]
        .island_conflicts
        .iter()
        .map(|c| (c.action.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(kept, vec![("accept", "ended"), ("complete", "ended")]);
    let history = reasons(&quorum, "c2");
    assert_eq!(
        history.iter().filter(|r| *r == "accepted").count(),
        1,
        "{history:?}"
    );
    quorum.validate().unwrap();
}

#[test]
fn two_islands_with_the_same_agent_merge_to_one_state_in_either_order() {
    // Both sides are islands (2 + 2); alice reaches both.
    let mut fork = island_ready();
    login_ready(&mut fork, 10, "alice");
    let mut a = Island::fork(&fork, 1, 1);
    let mut b = Island::fork(&fork, 3, 1);
    a.take(100, availability("alice", false, Some("site-a")));
    b.take(110, availability("alice", false, Some("site-b")));
    a.take(120, availability("alice", true, None));
    a.take(130, start("ca", "ra"));
    a.take(140, Op::Accept(action("alice", "ca")));
    b.take(150, login("bob"));
    b.take(151, availability("bob", true, None));
    b.take(160, start("cb", "rb"));
    b.take(170, Op::Accept(action("bob", "cb")));

    let mut ab = fork.clone();
    merge(&mut ab, 200, a.all());
    merge(&mut ab, 201, b.all());
    let mut ba = fork.clone();
    merge(&mut ba, 200, b.all());
    merge(&mut ba, 201, a.all());
    for state in [&ab, &ba] {
        let alice = &state.agents["alice"];
        assert_eq!(
            (
                alice.ready.get(&Channel::Chat),
                alice.not_ready_reason.as_deref()
            ),
            (Some(&true), None),
            "site a's ready (120) is alice's latest"
        );
        assert_eq!(
            status(state, "ca"),
            ActivityStatus::Assigned {
                agent_id: "alice".into()
            }
        );
        assert_eq!(
            status(state, "cb"),
            ActivityStatus::Assigned {
                agent_id: "bob".into()
            }
        );
        state.validate().unwrap();
    }
    assert_eq!(ab.agents["alice"].own_stamp, ba.agents["alice"].own_stamp);
}

#[test]
fn an_island_feed_cursor_resumes_on_its_island_exactly_and_elsewhere_from_the_fork() {
    let fork = before_split();
    let fork_seq = fork.agents["alice"].feed_last_seq();
    let mut island = Island::fork(&fork, 4, 2);
    island.take(100, availability("alice", true, None));
    island.take(110, start("c2", "r2"));
    let page = island
        .view
        .feed_page("alice", &EventCursor::After(fork_seq), 100)
        .unwrap()
        .unwrap();
    assert!(page.len() >= 2, "{page:?}");
    let (first, first_cursor) = &page[0];
    assert_eq!(first.seq, fork_seq + 1);
    assert_eq!(
        first_cursor.to_string(),
        format!("i.4.2.{fork_seq}.{}", fork_seq + 1)
    );
    // On the island, the cursor resumes right after the event it stands after.
    let (_, last_cursor) = page.last().unwrap();
    let again = island
        .view
        .feed_page("alice", last_cursor, 100)
        .unwrap()
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    let rest = island
        .view
        .feed_page("alice", first_cursor, 100)
        .unwrap()
        .unwrap();
    assert_eq!(rest.len(), page.len() - 1);

    // On the cluster after the merge the island's numbers mean other events: the cursor
    // resumes at the fork, so alice's console sees the merged versions of what it saw.
    let mut quorum = fork.clone();
    apply_ok(&mut quorum, 105, start("c3", "r3"));
    merge(&mut quorum, 200, island.all());
    let page = quorum
        .feed_page("alice", last_cursor, 100)
        .unwrap()
        .unwrap();
    assert_eq!(page[0].0.seq, fork_seq + 1);
    assert!(page
        .iter()
        .any(|(e, _)| matches!(&e.body, AgentEventBody::Offered { activity_id, .. } if activity_id == "c3")));
    assert!(page
        .iter()
        .all(|(_, cursor)| matches!(cursor, EventCursor::After(_))));
    // A plain cursor on the cluster is unchanged by the merge.
    let last = quorum.agents["alice"].feed_last_seq();
    assert!(quorum
        .feed_page("alice", &EventCursor::After(last), 100)
        .unwrap()
        .unwrap()
        .is_empty());
}

#[test]
fn an_island_leaves_offers_and_work_from_before_the_split_to_the_cluster() {
    // Before the split the French chat was offered to bob, and alice worked a sales chat.
    let mut fork = island_ready();
    login_ready(&mut fork, 10, "alice");
    login_ready(&mut fork, 11, "bob");
    apply_ok(&mut fork, 20, start("c1", "r1"));
    assert!(offered_to("alice")(&status(&fork, "c1")));
    apply_ok(&mut fork, 21, Op::Accept(action("alice", "c1")));
    apply_ok(&mut fork, 30, start_in("c0", "r0", "fr"));
    assert!(offered_to("bob")(&status(&fork, "c0")));
    let mut island = Island::fork(&fork, 4, 1);
    // The offer is the cluster's to time out and route again: the island does not take its
    // accept (a retryable island refusal: the console retries on the cluster).
    let accepted = island.take(100, Op::Accept(action("bob", "c0")));
    assert!(
        matches!(accepted, Outcome::Rejected(Rejection::Island { .. })),
        "{accepted:?}"
    );
    assert!(offered_to("bob")(&status(&island.view, "c0")));
    // Alice's chat was hers at the split: she works it on the island (rule: chats already
    // assigned to the island's agents go on there) ...
    island.take(110, agent_post("c1", "alice", "a1", "still with you"));
    // ... but a completion of work the island holds only as it stood at the split, by someone
    // who does not hold it there, is not the island's to refuse: it may have moved to them on
    // the cluster side since. The refusal is a retryable island refusal, not a conflict.
    let completed = island.take(120, complete("bob", "c1"));
    assert!(
        matches!(completed, Outcome::Rejected(Rejection::Island { .. })),
        "{completed:?}"
    );
    assert_eq!(island.journal.len(), 1, "only alice's message was taken");
}

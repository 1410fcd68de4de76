//! Island mode in the state: an island's view routes only its own chats to agents on the
//! island and marks what it adds; a merge applies each island write once, by the rules of
//! `state::island` (agents' actions included), whichever order islands merge in; an island
//! cursor resumes with exactly the events its client did not see, an island feed cursor with
//! at least them.

use super::*;
use crate::command::{IslandChunk, IslandWrite};
use crate::island::Stamp;
use crate::state::{EventCursor, IslandCursor, IslandMark};
use crate::types::NodeId;

/// An island forked from a state: its view and its journal.
pub(super) struct Island {
    origin: NodeId,
    epoch: u64,
    pub(super) view: State,
    pub(super) journal: Vec<IslandWrite>,
}

impl Island {
    pub(super) fn fork(state: &State, origin: NodeId, epoch: u64) -> Self {
        let mut view = state.clone();
        view.on_island_view = true;
        Self {
            origin,
            epoch,
            view,
            journal: Vec::new(),
        }
    }

    /// Takes a write as an island node does: applied to the view, journaled unless refused.
    pub(super) fn take(&mut self, at_ms: u64, op: Op) -> Outcome {
        let mut write = IslandWrite {
            position: self.journal.len() as u64,
            hlc: Stamp {
                wall_ms: at_ms,
                logical: 0,
            },
            at_ms,
            op,
            seq: None,
            agent: None,
        };
        let outcome = self.view.apply_island(self.origin, self.epoch, &mut write);
        if !matches!(outcome, Outcome::Rejected(_)) {
            self.journal.push(write);
        }
        if let Err(violation) = self.view.validate() {
            panic!("island view after {outcome:?}: {violation}");
        }
        outcome
    }

    fn chunk(&self, writes: std::ops::Range<usize>) -> Op {
        Op::MergeIsland(IslandChunk {
            origin: self.origin,
            epoch: self.epoch,
            writes: self.journal[writes].to_vec(),
        })
    }

    pub(super) fn all(&self) -> Op {
        self.chunk(0..self.journal.len())
    }
}

pub(super) fn merge(
    state: &mut State,
    at: u64,
    chunk: Op,
) -> (u32, u32, Vec<crate::command::RefusedWrite>) {
    match apply_ok(state, at, chunk) {
        Outcome::IslandMerged {
            merged,
            skipped,
            refused,
            conflicts,
            ..
        } => {
            let kept: usize = state
                .activities
                .values()
                .map(|a| a.island_conflicts.len())
                .sum();
            assert!(
                conflicts as usize <= kept,
                "{conflicts} conflicts counted, {kept} kept"
            );
            (merged, skipped, refused)
        }
        other => panic!("a merge answered {other:?}"),
    }
}

/// A seeded cluster at the cluster version island merges need.
pub(super) fn island_ready() -> State {
    let mut state = seeded();
    apply_ok(
        &mut state,
        2,
        Op::SetClusterVersion {
            version: crate::version::CLUSTER_VERSION_MAX,
        },
    );
    state
}

/// A cluster where alice works chat `c1` (three events) when the site is cut off.
pub(super) fn before_split() -> State {
    let mut state = island_ready();
    login_ready(&mut state, 10, "alice");
    apply_ok(&mut state, 20, start("c1", "r1"));
    apply_ok(&mut state, 30, Op::Accept(action("alice", "c1")));
    apply_ok(&mut state, 40, post("c1", "m1", "hello"));
    assert_eq!(state.chats["c1"].last_seq(), 3);
    state
}

pub(super) fn texts(state: &State, chat_id: &str) -> Vec<String> {
    state.chats[chat_id]
        .events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Message { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_island_view_routes_only_to_agents_on_the_island_marks_what_it_adds_and_refuses_the_rest() {
    let fork = before_split();
    let mut island = Island::fork(&fork, 4, 2);
    island.take(100, start("c2", "r2"));
    assert_eq!(
        status(&island.view, "c2"),
        ActivityStatus::Queued,
        "alice has room, but she did not act on the island"
    );
    let posted = island.take(110, post("c1", "m2", "still there?"));
    assert_eq!(
        posted,
        Outcome::MessagePosted {
            chat_id: "c1".into(),
            seq: 4,
            replayed: false
        }
    );
    let event = island.view.chats["c1"].event(4).unwrap();
    assert_eq!(
        event.island,
        Some(IslandMark {
            origin: 4,
            epoch: 2,
            seq: 4,
            hlc: Stamp {
                wall_ms: 110,
                logical: 0
            }
        })
    );
    assert_eq!(
        island.journal[1].seq,
        Some(4),
        "the journal keeps the island's number"
    );
    assert!(
        island.view.chats["c1"].event(3).unwrap().island.is_none(),
        "events from before the split stay unmarked"
    );
    for refused in [
        Op::Tick,
        Op::Remove(DirectoryKey::Queue("sales".into())),
        Op::SetClusterVersion { version: 3 },
    ] {
        let outcome = island.take(120, refused.clone());
        assert!(
            matches!(outcome, Outcome::Rejected(Rejection::Island { .. })),
            "{refused:?}: {outcome:?}"
        );
    }
    assert_eq!(island.journal.len(), 2, "refused writes are not journaled");
}

#[test]
fn a_merge_applies_each_island_write_once_and_a_replay_changes_nothing() {
    let fork = before_split();
    let mut island = Island::fork(&fork, 4, 1);
    island.take(100, start("c2", "r2"));
    island.take(110, post("c2", "x1", "my order is late"));
    island.take(120, post("c1", "m2", "are you there?"));

    // The quorum side goes on meanwhile: alice's chat gets a message there too.
    let mut quorum = fork.clone();
    apply_ok(&mut quorum, 105, post("c1", "q1", "from the other site"));

    let (merged, skipped, refused) = merge(&mut quorum, 200, island.all());
    assert_eq!((merged, skipped), (3, 0));
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(
        texts(&quorum, "c1"),
        vec!["hello", "from the other site", "are you there?"]
    );
    let c1 = &quorum.chats["c1"];
    let merged_event = c1.event(5).unwrap();
    assert_eq!(
        merged_event.island.map(|m| m.seq),
        Some(4),
        "seen as 4 on the island"
    );
    assert_eq!(texts(&quorum, "c2"), vec!["my order is late"]);
    assert!(
        quorum.chats["c2"].events.iter().all(|e| e.island.is_some()),
        "the chat started on the island keeps every mark"
    );
    // The island's chat reached the cluster's routing: alice has room.
    assert!(offered_to("alice")(&status(&quorum, "c2")));

    let digest = quorum.digest().unwrap();
    let (merged, skipped, _) = merge(&mut quorum, 300, island.all());
    assert_eq!((merged, skipped), (0, 3));
    assert_eq!(
        quorum.digest().unwrap(),
        digest,
        "a replayed chunk changes nothing"
    );
    // A chunk overlapping what was merged applies only the rest.
    island.take(130, post("c2", "x2", "hello?"));
    let (merged, skipped, _) = merge(&mut quorum, 310, island.chunk(1..4));
    assert_eq!((merged, skipped), (1, 2));
    assert_eq!(texts(&quorum, "c2"), vec!["my order is late", "hello?"]);
}

#[test]
fn the_end_wins_and_messages_after_it_are_kept() {
    let fork = before_split();
    let mut island = Island::fork(&fork, 4, 1);
    island.take(100, post("c1", "m2", "one more thing"));
    island.take(
        110,
        Op::EndChat(EndChat {
            chat_id: "c1".into(),
            by: Participant::Customer,
        }),
    );
    island.take(
        120,
        Op::SubmitSurvey(SubmitSurvey {
            chat_id: "c1".into(),
            rating: 5,
            comment: "thanks".into(),
        }),
    );

    // The cluster ended the chat first (alice ended it on a quorum node).
    let mut quorum = fork.clone();
    apply_ok(
        &mut quorum,
        90,
        Op::EndChat(EndChat {
            chat_id: "c1".into(),
            by: Participant::Agent {
                agent_id: "alice".into(),
            },
        }),
    );
    let (merged, _, refused) = merge(&mut quorum, 200, island.all());
    assert_eq!(merged, 3);
    assert!(refused.is_empty(), "{refused:?}");
    let chat = &quorum.chats["c1"];
    assert_eq!(chat.status, ChatStatus::Ended);
    let ends = chat
        .events
        .iter()
        .filter(|e| matches!(e.body, EventBody::Ended { .. }))
        .count();
    assert_eq!(ends, 1, "ended once");
    assert_eq!(texts(&quorum, "c1"), vec!["hello", "one more thing"]);
    assert_eq!(chat.survey.as_ref().map(|s| s.rating), Some(5));

    // The other way round: the island ended it, the cluster did not.
    let mut quorum = fork.clone();
    merge(&mut quorum, 200, island.all());
    assert_eq!(quorum.chats["c1"].status, ChatStatus::Ended);
    assert!(status(&quorum, "c1").is_terminal());
    assert!(
        !quorum.agents["alice"].work.contains("c1"),
        "alice got her capacity back"
    );
}

#[test]
fn a_message_sent_on_both_sides_is_kept_once() {
    let fork = before_split();
    let mut island = Island::fork(&fork, 4, 1);
    island.take(100, post("c1", "m2", "did this arrive?"));
    let mut quorum = fork.clone();
    // The customer's retry of the same message reached the cluster too.
    apply_ok(&mut quorum, 101, post("c1", "m2", "did this arrive?"));
    merge(&mut quorum, 200, island.all());
    assert_eq!(texts(&quorum, "c1"), vec!["hello", "did this arrive?"]);
}

#[test]
fn a_chat_started_on_both_sides_keeps_the_clusters_and_a_removed_queue_ends_it() {
    let fork = before_split();
    let mut island = Island::fork(&fork, 4, 1);
    island.take(100, start("island-chat", "same-request"));
    island.take(101, start_in("lost-queue", "r3", "fr"));
    island.take(102, post("lost-queue", "x1", "bonjour"));
    let mut quorum = fork.clone();
    apply_ok(&mut quorum, 100, start("cluster-chat", "same-request"));
    apply_ok(
        &mut quorum,
        101,
        Op::Remove(DirectoryKey::Queue("fr".into())),
    );
    let (merged, _, refused) = merge(&mut quorum, 200, island.all());
    assert_eq!(merged, 3);
    assert!(refused.is_empty(), "{refused:?}");
    assert!(!quorum.chats.contains_key("island-chat"));
    assert!(quorum.chats.contains_key("cluster-chat"));
    let lost = &quorum.chats["lost-queue"];
    assert_eq!(lost.status, ChatStatus::Ended, "its queue is gone");
    assert_eq!(
        texts(&quorum, "lost-queue"),
        vec!["bonjour"],
        "but nothing is lost"
    );
}

#[test]
fn writes_the_merged_state_cannot_take_are_listed_not_dropped() {
    let fork = before_split();
    let mut island = Island::fork(&fork, 4, 1);
    island.take(100, post("c1", "m2", "hi"));
    let mut quorum = island_ready(); // a state that never had c1
    let (merged, _, refused) = merge(&mut quorum, 200, island.all());
    assert_eq!(merged, 0);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].position, 0);
    assert!(matches!(
        refused[0].rejection,
        Rejection::UnknownChat { .. }
    ));
    assert_eq!(
        quorum.islands_merged.get(&4),
        Some(&1),
        "and not retried forever"
    );
}

/// What two merges must agree on whatever their order: per chat its status, survey and the
/// events by content and mark (their sequence numbers follow the order of the merges). An end
/// or a rating taken on both islands is kept once, from whichever island merged first, so for
/// those only the content counts, not the mark.
fn content(state: &State) -> BTreeMap<String, (ChatStatus, Option<u8>, Vec<String>)> {
    state
        .chats
        .iter()
        .map(|(id, chat)| {
            let mut events: Vec<String> = chat
                .events
                .iter()
                .map(|e| match e.body {
                    EventBody::Ended { .. } | EventBody::Rated { .. } => format!("{:?}", e.body),
                    _ => format!("{:?} {:?}", e.body, e.island),
                })
                .collect();
            events.sort();
            (
                id.clone(),
                (chat.status, chat.survey.as_ref().map(|s| s.rating), events),
            )
        })
        .collect()
}

#[test]
fn two_islands_merge_to_the_same_content_in_either_order() {
    // Both sides are islands (2 + 2): nobody is ready, nothing is routed on either side.
    let mut fork = island_ready();
    apply_ok(&mut fork, 20, start("c1", "r1"));
    apply_ok(&mut fork, 30, post("c1", "m1", "hello"));
    let mut a = Island::fork(&fork, 1, 1);
    let mut b = Island::fork(&fork, 3, 1);
    a.take(100, post("c1", "a1", "from site a"));
    b.take(101, post("c1", "b1", "from site b"));
    a.take(102, start("ca", "ra"));
    b.take(103, start("cb", "rb"));
    b.take(
        104,
        Op::EndChat(EndChat {
            chat_id: "c1".into(),
            by: Participant::Customer,
        }),
    );
    a.take(105, post("c1", "a2", "after b ended it"));
    a.take(
        106,
        Op::EndChat(EndChat {
            chat_id: "c1".into(),
            by: Participant::Customer,
        }),
    );

    let mut ab = fork.clone();
    merge(&mut ab, 200, a.all());
    merge(&mut ab, 201, b.all());
    let mut ba = fork.clone();
    merge(&mut ba, 200, b.all());
    merge(&mut ba, 201, a.all());
    assert_eq!(content(&ab), content(&ba));
    for state in [&ab, &ba] {
        let c1 = &state.chats["c1"];
        assert_eq!(c1.status, ChatStatus::Ended);
        assert_eq!(
            c1.events
                .iter()
                .filter(|e| matches!(e.body, EventBody::Ended { .. }))
                .count(),
            1
        );
        assert_eq!(texts(state, "c1").len(), 4, "{:?}", texts(state, "c1"));
    }
}

#[test]
fn an_island_cursor_resumes_with_exactly_the_events_its_client_missed() {
    let fork = before_split();
    let mut island = Island::fork(&fork, 4, 1);
    island.take(100, post("c1", "i1", "island one")); // island seq 4
    island.take(101, post("c1", "i2", "island two")); // island seq 5
    island.take(102, post("c1", "i3", "island three")); // island seq 6, not seen
    let mut quorum = fork.clone();
    apply_ok(&mut quorum, 99, post("c1", "q1", "quorum one"));
    merge(&mut quorum, 200, island.all());
    apply_ok(&mut quorum, 201, post("c1", "q2", "after the merge"));

    // The client saw the island up to its seq 5.
    let cursor = IslandCursor {
        origin: 4,
        epoch: 1,
        fork: 3,
        seq: 5,
    };
    let missed: Vec<String> = quorum
        .events_after_island("c1", &cursor, 100)
        .unwrap()
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Message { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        missed,
        vec!["quorum one", "island three", "after the merge"]
    );
    // On the island's own view the same cursor is just "after 5".
    let on_island: Vec<u64> = island
        .view
        .events_after_island("c1", &cursor, 100)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(on_island, vec![6]);
    // A cursor of another island sees every island event as new.
    let other = IslandCursor {
        origin: 5,
        ..cursor
    };
    assert_eq!(
        quorum.events_after_island("c1", &other, 100).unwrap().len(),
        5
    );
}

fn page_texts(page: &[(&ChatEvent, EventCursor)]) -> Vec<String> {
    page.iter()
        .map(|(e, _)| match &e.body {
            EventBody::Message { text, .. } => text.clone(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn event_pages_hand_out_cursors_that_resume_anywhere_with_exactly_what_was_missed() {
    let fork = before_split();
    let mut island = Island::fork(&fork, 4, 1);
    island.take(100, post("c1", "i1", "island one")); // provisional seq 4
    island.take(101, post("c1", "i2", "island two")); // provisional seq 5

    // A client reads the island's view in pages of two from after 2.
    let page = island
        .view
        .events_page("c1", &EventCursor::After(2), 2)
        .unwrap();
    let cursors: Vec<EventCursor> = page.iter().map(|(_, at)| *at).collect();
    let island_at = |seq| {
        EventCursor::Island(IslandCursor {
            origin: 4,
            epoch: 1,
            fork: 3,
            seq,
        })
    };
    assert_eq!(cursors, vec![EventCursor::After(3), island_at(4)]);
    let page = island.view.events_page("c1", &island_at(4), 10).unwrap();
    assert_eq!(page_texts(&page), vec!["island two"]);
    let cursor = page[0].1;
    assert_eq!(cursor, island_at(5));
    assert_eq!(cursor.to_string(), "i.4.1.3.5");
    assert_eq!("i.4.1.3.5".parse::<EventCursor>(), Ok(cursor));
    assert_eq!("17".parse::<EventCursor>(), Ok(EventCursor::After(17)));
    for bad in [
        "",
        "x",
        "-1",
        "i.4.1.3",
        "i.4.1.3.5.6",
        "i.4..3.5",
        "99999999999999999999999",
    ] {
        assert!(bad.parse::<EventCursor>().is_err(), "{bad:?} parsed");
    }
    // Nothing new on the island: an empty page, the cursor stays.
    assert!(island
        .view
        .events_page("c1", &cursor, 10)
        .unwrap()
        .is_empty());

    island.take(102, post("c1", "i3", "island three")); // not seen by the client
    let mut quorum = fork.clone();
    apply_ok(&mut quorum, 99, post("c1", "q1", "quorum one"));
    merge(&mut quorum, 200, island.all());
    apply_ok(&mut quorum, 201, post("c1", "q2", "after the merge"));

    // On the merged state, one event a page: exactly what the client missed, then a plain
    // cursor again at the end.
    let mut at = cursor;
    let mut missed = Vec::new();
    loop {
        let page = quorum.events_page("c1", &at, 1).unwrap();
        let Some((_, next)) = page.first() else { break };
        missed.extend(page_texts(&page));
        at = *next;
    }
    assert_eq!(
        missed,
        vec!["quorum one", "island three", "after the merge"]
    );
    assert_eq!(at, EventCursor::After(quorum.chats["c1"].last_seq()));
    // A page that ends before the island's events keeps the island cursor.
    let page = quorum.events_page("c1", &cursor, 1).unwrap();
    assert!(matches!(page[0].1, EventCursor::Island(c) if c.fork == 4 && c.seq == 5));
    // On the island's own view the cursor resumes with the island's newer write only.
    let page = island.view.events_page("c1", &cursor, 10).unwrap();
    assert_eq!(page_texts(&page), vec!["island three"]);
    // A plain cursor on the merged state is the cluster's numbering, unchanged by the merge.
    let page = quorum.events_page("c1", &EventCursor::After(3), 1).unwrap();
    assert_eq!(page_texts(&page), vec!["quorum one"]);
}

#[test]
fn merge_chunks_are_checked_before_anything_changes() {
    let fork = before_split();
    let mut island = Island::fork(&fork, 4, 1);
    island.take(100, post("c1", "m2", "x"));
    island.take(101, post("c1", "m3", "y"));
    let mut reversed = island.journal.clone();
    reversed.reverse();
    let timer = IslandWrite {
        op: Op::Tick,
        ..island.journal[0].clone()
    };
    let bad_agent = IslandWrite {
        agent: Some("not an id".into()),
        ..island.journal[0].clone()
    };
    let too_long = IslandWrite {
        op: post(
            "c1",
            "m4",
            &"z".repeat(crate::limits::MESSAGE_TEXT_BYTES_MAX + 1),
        ),
        ..island.journal[0].clone()
    };
    for writes in [
        Vec::new(),
        reversed,
        vec![timer],
        vec![bad_agent],
        vec![too_long],
    ] {
        let mut state = fork.clone();
        let digest = state.digest().unwrap();
        let outcome = state.apply(&command(
            200,
            Op::MergeIsland(IslandChunk {
                origin: 4,
                epoch: 1,
                writes,
            }),
        ));
        assert!(matches!(outcome, Outcome::Rejected(_)), "{outcome:?}");
        assert_eq!(state.digest().unwrap(), digest);
    }
}

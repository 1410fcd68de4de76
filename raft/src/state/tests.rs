use super::*;
use crate::command::{AgentSpec, QueueSpec};

fn command(at_ms: u64, op: Op) -> Command {
    Command {
        at_ms,
        origin: 1,
        op,
    }
}

fn seeded() -> State {
    let mut state = State::default();
    let outcome = state.apply(&command(
        1,
        Op::SeedDirectory(Directory {
            queues: vec![QueueSpec {
                id: "sales".into(),
                name: "Sales".into(),
                skills: vec!["sales".into()],
            }],
            agents: vec![AgentSpec {
                id: "alice".into(),
                name: "Alice".into(),
                skills: vec!["sales".into()],
                chat_limit: 3,
            }],
        }),
    ));
    assert_eq!(
        outcome,
        Outcome::Seeded {
            queues_added: 1,
            agents_added: 1
        }
    );
    state
}

fn start(chat_id: &str, request_id: &str) -> Op {
    Op::StartChat(StartChat {
        chat_id: chat_id.into(),
        request_id: request_id.into(),
        queue_id: "sales".into(),
        customer: Customer {
            name: "Carol".into(),
            email: "carol@example.com".into(),
        },
        question: "Where is my order?".into(),
    })
}

fn post(chat_id: &str, client_msg_id: &str, text: &str) -> Op {
    Op::PostMessage(PostMessage {
        chat_id: chat_id.into(),
        sender: Participant::Customer,
        client_msg_id: client_msg_id.into(),
        text: text.into(),
    })
}

#[test]
fn start_chat_then_messages_get_gap_free_sequence() {
    let mut state = seeded();
    assert!(matches!(
        state.apply(&command(10, start("c1", "r1"))),
        Outcome::ChatStarted {
            seq: 1,
            replayed: false,
            ..
        }
    ));
    for i in 0..5 {
        let outcome = state.apply(&command(11 + i, post("c1", &format!("m{i}"), "hi")));
        assert_eq!(
            outcome,
            Outcome::MessagePosted {
                chat_id: "c1".into(),
                seq: i + 2,
                replayed: false
            }
        );
    }
    let events = state.chat_events("c1", 0, 100).unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(state.chat_events("c1", 4, 100).unwrap().len(), 2);
    assert_eq!(state.chat_events("c1", 6, 100).unwrap().len(), 0);
    assert_eq!(state.chat_events("c1", 600, 100).unwrap().len(), 0);
    assert_eq!(state.chat_events("c1", 0, 2).unwrap().len(), 2);
    assert!(state.chat_events("nope", 0, 2).is_none());
    state.validate().unwrap();
}

#[test]
fn retried_post_is_not_applied_twice() {
    let mut state = seeded();
    state.apply(&command(10, start("c1", "r1")));
    let first = state.apply(&command(11, post("c1", "m1", "hello")));
    let before = state.clone();
    let retry = state.apply(&command(99, post("c1", "m1", "hello")));
    assert_eq!(
        retry,
        Outcome::MessagePosted {
            chat_id: "c1".into(),
            seq: 2,
            replayed: true
        }
    );
    assert!(matches!(
        first,
        Outcome::MessagePosted {
            seq: 2,
            replayed: false,
            ..
        }
    ));
    assert_eq!(state, before, "a replay must not change the state");
    // Same id, different text: refused, nothing changes.
    let conflict = state.apply(&command(100, post("c1", "m1", "other")));
    assert!(matches!(
        conflict,
        Outcome::Rejected(Rejection::IdempotencyConflict { .. })
    ));
    assert_eq!(state, before);
    // The same client id from another sender is a different message.
    let agent = state.apply(&command(
        101,
        Op::PostMessage(PostMessage {
            chat_id: "c1".into(),
            sender: Participant::Agent {
                agent_id: "alice".into(),
            },
            client_msg_id: "m1".into(),
            text: "hello".into(),
        }),
    ));
    assert!(matches!(
        agent,
        Outcome::MessagePosted {
            seq: 3,
            replayed: false,
            ..
        }
    ));
    state.validate().unwrap();
}

#[test]
fn retried_start_returns_the_same_chat() {
    let mut state = seeded();
    state.apply(&command(10, start("c1", "r1")));
    let before = state.clone();
    // The retry carries a fresh chat id from another proposer; the original chat wins.
    let replay = state.apply(&command(20, start("c2", "r1")));
    assert_eq!(
        replay,
        Outcome::ChatStarted {
            chat_id: "c1".into(),
            seq: 1,
            replayed: true
        }
    );
    assert_eq!(state, before);
    assert!(!state.chats.contains_key("c2"));
}

#[test]
fn rejected_commands_change_nothing() {
    let mut state = seeded();
    state.apply(&command(10, start("c1", "r1")));
    let before = state.clone();
    let cases = vec![
        post("missing", "m1", "hi"),
        post("c1", "", "hi"),
        post("c1", "m 1", "hi"),
        post("c1", "m1", ""),
        post("c1", "m1", "   "),
        post("c1", "m1", &"x".repeat(limits::MESSAGE_TEXT_BYTES_MAX + 1)),
        post("c1", "m1", "bell\u{7}"),
        post("c1", &"i".repeat(limits::CLIENT_ID_BYTES_MAX + 1), "hi"),
        Op::StartChat(StartChat {
            queue_id: "nope".into(),
            ..match start("c9", "r9") {
                Op::StartChat(s) => s,
                _ => unreachable!(),
            }
        }),
        Op::StartChat(StartChat {
            customer: Customer {
                name: "".into(),
                email: "".into(),
            },
            ..match start("c9", "r9") {
                Op::StartChat(s) => s,
                _ => unreachable!(),
            }
        }),
        start("c1", "r-other"),
        Op::PostMessage(PostMessage {
            chat_id: "c1".into(),
            sender: Participant::Agent {
                agent_id: "mallory".into(),
            },
            client_msg_id: "x".into(),
            text: "hi".into(),
        }),
    ];
    for op in cases {
        let outcome = state.apply(&command(50, op.clone()));
        assert!(
            matches!(outcome, Outcome::Rejected(_)),
            "{op:?} gave {outcome:?}"
        );
        assert_eq!(state, before, "{op:?} changed the state");
    }
    state.validate().unwrap();
}

#[test]
fn seeding_is_idempotent_and_never_resurrects() {
    let mut state = seeded();
    let directory = Directory {
        queues: vec![QueueSpec {
            id: "sales".into(),
            name: "Renamed".into(),
            skills: vec![],
        }],
        agents: vec![],
    };
    let outcome = state.apply(&command(2, Op::SeedDirectory(directory.clone())));
    assert_eq!(
        outcome,
        Outcome::Seeded {
            queues_added: 0,
            agents_added: 0
        }
    );
    assert_eq!(state.queues["sales"].name, "Sales");
    // Removed by an operator: a later seed does not bring it back.
    state.queues.remove("sales");
    state.apply(&command(3, Op::SeedDirectory(directory)));
    assert!(!state.queues.contains_key("sales"));
}

#[test]
fn validate_catches_broken_invariants() {
    let mut state = seeded();
    state.apply(&command(10, start("c1", "r1")));
    state.apply(&command(11, post("c1", "m1", "a")));
    state.apply(&command(12, post("c1", "m2", "b")));
    state.validate().unwrap();

    let mut gap = state.clone();
    gap.chats.get_mut("c1").unwrap().events.remove(1);
    assert!(gap.validate().is_err());

    let mut duplicate = state.clone();
    let chat = duplicate.chats.get_mut("c1").unwrap();
    let mut copy = chat.events[1].clone();
    copy.seq = 4;
    chat.events.push(copy);
    assert!(duplicate.validate().is_err());

    let mut orphan = state.clone();
    orphan.chat_requests.insert("r2".into(), "ghost".into());
    assert!(orphan.validate().is_err());

    let mut unknown_queue = state.clone();
    unknown_queue.chats.get_mut("c1").unwrap().queue_id = "nope".into();
    assert!(unknown_queue.validate().is_err());
}

#[test]
fn digest_is_stable_and_sensitive() {
    let build = || {
        let mut state = seeded();
        state.apply(&command(10, start("c1", "r1")));
        state.apply(&command(11, post("c1", "m1", "a")));
        state
    };
    let a = build();
    let b = build();
    assert_eq!(a.digest().unwrap(), b.digest().unwrap());
    // Round trip through the snapshot encoding keeps the digest.
    let restored: State = serde_json::from_slice(&serde_json::to_vec(&a).unwrap()).unwrap();
    assert_eq!(restored.digest().unwrap(), a.digest().unwrap());
    let mut c = build();
    c.apply(&command(12, post("c1", "m2", "b")));
    assert_ne!(a.digest().unwrap(), c.digest().unwrap());
}

/// Replays a long pseudo-random workload with retries and checks the invariants and
/// exactly-once delivery against a simple model.
#[test]
fn random_workload_with_retries_keeps_invariants() {
    let mut state = seeded();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut model: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut sent: Vec<(String, String)> = Vec::new();
    for step in 0..5_000u64 {
        let roll = next() % 100;
        if roll < 5 || model.is_empty() {
            let chat = format!("c{}", model.len());
            state.apply(&command(step, start(&chat, &format!("r-{chat}"))));
            model.insert(chat, Vec::new());
        } else if roll < 75 {
            let chats: Vec<String> = model.keys().cloned().collect();
            let chat = chats[(next() % chats.len() as u64) as usize].clone();
            let id = format!("m{step}");
            let outcome = state.apply(&command(step, post(&chat, &id, &format!("text {step}"))));
            assert!(matches!(
                outcome,
                Outcome::MessagePosted {
                    replayed: false,
                    ..
                }
            ));
            model.get_mut(&chat).unwrap().push(id.clone());
            sent.push((chat, id));
        } else if !sent.is_empty() {
            let (chat, id) = sent[(next() % sent.len() as u64) as usize].clone();
            let text = format!("text {}", &id[1..]);
            let outcome = state.apply(&command(step, post(&chat, &id, &text)));
            assert!(matches!(
                outcome,
                Outcome::MessagePosted { replayed: true, .. }
            ));
        }
    }
    state.validate().unwrap();
    for (chat, ids) in &model {
        let got: Vec<String> = state.chats[chat]
            .events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::Message { client_msg_id, .. } => Some(client_msg_id.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(&got, ids, "chat {chat}");
    }
}

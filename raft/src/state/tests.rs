use super::*;
use crate::command::{
    ActivityAction, AgentSession, BusinessHours, Complete, DepartmentSpec, Directory,
    DirectoryEntry, DirectoryKey, EndChat, Login, OpenInterval, PostMessage, RequestCallback,
    SetAvailability, SkillSpec, StartChat, SubmitSurvey, Transfer, Weekday,
};

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g";

fn command(at_ms: u64, op: Op) -> Command {
    Command {
        at_ms,
        origin: 1,
        op,
    }
}

fn queue(id: &str, skills: &[&str]) -> QueueSpec {
    QueueSpec {
        id: id.into(),
        name: id.to_uppercase(),
        department: Some("front".into()),
        channel: Channel::Chat,
        skills: skills.iter().map(|s| (*s).into()).collect(),
        offer_timeout_ms: 10_000,
        not_ready_on_missed_offer: true,
        inactivity_timeout_ms: 60_000,
        business_hours: None,
        off_hours_message: "closed".into(),
    }
}

fn agent(id: &str, skills: &[&str], chats: u32) -> AgentSpec {
    AgentSpec {
        id: id.into(),
        name: format!("Agent {id}"),
        skills: skills.iter().map(|s| (*s).into()).collect(),
        limits: BTreeMap::from([(Channel::Chat, chats), (Channel::Callback, 1)]),
        password_hash: HASH.into(),
    }
}

fn directory() -> Directory {
    let mut callbacks = queue("callbacks", &[]);
    callbacks.channel = Channel::Callback;
    Directory {
        departments: vec![DepartmentSpec {
            id: "front".into(),
            name: "Front office".into(),
        }],
        skills: vec![
            SkillSpec {
                id: "sales".into(),
                name: "Sales".into(),
            },
            SkillSpec {
                id: "french".into(),
                name: "French".into(),
            },
        ],
        queues: vec![
            queue("sales", &["sales"]),
            queue("fr", &["sales", "french"]),
            callbacks,
        ],
        agents: vec![
            agent("alice", &["sales"], 2),
            agent("bob", &["sales", "french"], 2),
        ],
    }
}

fn seeded() -> State {
    let mut state = State::default();
    let outcome = state.apply(&command(1, Op::SeedDirectory(directory())));
    assert_eq!(outcome, Outcome::Seeded { added: 8 });
    state.validate().unwrap();
    state
}

fn apply_ok(state: &mut State, at: u64, op: Op) -> Outcome {
    let outcome = state.apply(&command(at, op.clone()));
    assert!(
        !matches!(outcome, Outcome::Rejected(_)),
        "{op:?} was rejected: {outcome:?}"
    );
    if let Err(violation) = state.validate() {
        panic!("after {op:?}: {violation}");
    }
    outcome
}

fn start_in(chat_id: &str, request_id: &str, queue_id: &str) -> Op {
    Op::StartChat(StartChat {
        chat_id: chat_id.into(),
        request_id: request_id.into(),
        queue_id: queue_id.into(),
        customer: Customer {
            name: "Carol".into(),
            email: format!("{chat_id}@example.com"),
        },
        question: "Where is my order?".into(),
    })
}

fn start(chat_id: &str, request_id: &str) -> Op {
    start_in(chat_id, request_id, "sales")
}

fn post_as(chat_id: &str, sender: Participant, client_msg_id: &str, text: &str) -> Op {
    Op::PostMessage(PostMessage {
        chat_id: chat_id.into(),
        sender,
        client_msg_id: client_msg_id.into(),
        text: text.into(),
    })
}

fn post(chat_id: &str, client_msg_id: &str, text: &str) -> Op {
    post_as(chat_id, Participant::Customer, client_msg_id, text)
}

fn session(agent_id: &str) -> AgentSession {
    AgentSession {
        agent_id: agent_id.into(),
        session_id: format!("s-{agent_id}"),
    }
}

fn login_ready(state: &mut State, at: u64, agent_id: &str) {
    apply_ok(
        state,
        at,
        Op::Login(Login {
            agent_id: agent_id.into(),
            session_id: format!("s-{agent_id}"),
        }),
    );
    apply_ok(
        state,
        at,
        Op::SetAvailability(SetAvailability {
            session: session(agent_id),
            channels: BTreeMap::from([(Channel::Chat, true), (Channel::Callback, true)]),
            reason: None,
        }),
    );
}

fn action(agent_id: &str, activity_id: &str) -> ActivityAction {
    ActivityAction {
        session: session(agent_id),
        activity_id: activity_id.into(),
    }
}

fn status(state: &State, id: &str) -> ActivityStatus {
    state.activities[id].status.clone()
}

fn offered_to(agent_id: &str) -> impl Fn(&ActivityStatus) -> bool + '_ {
    move |s| matches!(s, ActivityStatus::Offered { agent_id: a, .. } if a == agent_id)
}

#[test]
fn start_chat_then_messages_get_gap_free_sequence() {
    let mut state = seeded();
    assert!(matches!(
        apply_ok(&mut state, 10, start("c1", "r1")),
        Outcome::ChatStarted {
            seq: 1,
            replayed: false,
            ..
        }
    ));
    for i in 0..5 {
        let outcome = apply_ok(&mut state, 11 + i, post("c1", &format!("m{i}"), "hi"));
        assert_eq!(
            outcome,
            Outcome::MessagePosted {
                chat_id: "c1".into(),
                seq: i + 2,
                replayed: false
            }
        );
    }
    assert_eq!(state.chat_events("c1", 3, 100).unwrap().len(), 3);
    assert_eq!(state.chat_events("c1", 6, 100).unwrap().len(), 0);
    assert!(state.chat_events("nope", 0, 100).is_none());
}

#[test]
fn retries_are_not_applied_twice() {
    let mut state = seeded();
    apply_ok(&mut state, 10, start("c1", "r1"));
    apply_ok(&mut state, 11, post("c1", "m1", "hello"));
    let before = state.clone();
    assert_eq!(
        apply_ok(&mut state, 12, post("c1", "m1", "hello")),
        Outcome::MessagePosted {
            chat_id: "c1".into(),
            seq: 2,
            replayed: true
        }
    );
    let Op::StartChat(mut retry) = start("c1", "r1") else {
        unreachable!()
    };
    retry.chat_id = "c2".into();
    assert_eq!(
        apply_ok(&mut state, 13, Op::StartChat(retry)),
        Outcome::ChatStarted {
            chat_id: "c1".into(),
            seq: 1,
            replayed: true
        }
    );
    assert_eq!(state, before);
    // Same id, different text: refused, not overwritten.
    assert!(matches!(
        state.apply(&command(14, post("c1", "m1", "changed"))),
        Outcome::Rejected(Rejection::IdempotencyConflict { .. })
    ));
    // The same client id from another sender is another message.
    login_ready(&mut state, 15, "alice");
    apply_ok(&mut state, 16, Op::Accept(action("alice", "c1")));
    let agent = Participant::Agent {
        agent_id: "alice".into(),
    };
    assert!(matches!(
        apply_ok(&mut state, 17, post_as("c1", agent, "m1", "hello")),
        Outcome::MessagePosted {
            replayed: false,
            ..
        }
    ));
}

#[test]
fn rejected_commands_change_nothing() {
    let mut state = seeded();
    apply_ok(&mut state, 10, start("c1", "r1"));
    login_ready(&mut state, 11, "alice");
    let before = state.clone();
    let start_with = |f: &dyn Fn(&mut StartChat)| {
        let Op::StartChat(mut s) = start("c9", "r9") else {
            unreachable!()
        };
        f(&mut s);
        Op::StartChat(s)
    };
    let cases = vec![
        post("missing", "m1", "hi"),
        post("c1", "", "hi"),
        post("c1", "m 1", "hi"),
        post("c1", "m1", ""),
        post("c1", "m1", "   "),
        post("c1", "m1", &"x".repeat(limits::MESSAGE_TEXT_BYTES_MAX + 1)),
        post("c1", "m1", "bell\u{7}"),
        post("c1", &"i".repeat(limits::CLIENT_ID_BYTES_MAX + 1), "hi"),
        post_as("c1", Participant::System, "m1", "hi"),
        // Offered to alice, not accepted: she cannot post yet; bob never could.
        post_as(
            "c1",
            Participant::Agent {
                agent_id: "alice".into(),
            },
            "m1",
            "hi",
        ),
        post_as(
            "c1",
            Participant::Agent {
                agent_id: "bob".into(),
            },
            "m1",
            "hi",
        ),
        start_with(&|s| s.queue_id = "nope".into()),
        start_with(&|s| s.queue_id = "callbacks".into()),
        start_with(&|s| s.customer.name = String::new()),
        start_with(&|s| s.customer.email = "not-an-address".into()),
        start_with(&|s| s.chat_id = "c1".into()),
        start("c1", "r-other"),
        Op::Accept(action("bob", "c1")),
        Op::Accept(ActivityAction {
            session: AgentSession {
                agent_id: "alice".into(),
                session_id: "stale".into(),
            },
            activity_id: "c1".into(),
        }),
        Op::Complete(Complete {
            action: action("alice", "c1"),
            outcome: None,
        }),
        Op::EndChat(EndChat {
            chat_id: "c1".into(),
            by: Participant::Agent {
                agent_id: "bob".into(),
            },
        }),
        Op::SubmitSurvey(SubmitSurvey {
            chat_id: "c1".into(),
            rating: 5,
            comment: String::new(),
        }),
        Op::Logout(AgentSession {
            agent_id: "alice".into(),
            session_id: "stale".into(),
        }),
        Op::SetAvailability(SetAvailability {
            session: session("alice"),
            channels: BTreeMap::new(),
            reason: Some("Not A Reason".into()),
        }),
        Op::Remove(DirectoryKey::Queue("sales".into())),
        Op::Remove(DirectoryKey::Skill("sales".into())),
        Op::Remove(DirectoryKey::Department("front".into())),
        Op::Remove(DirectoryKey::Agent("alice".into())),
        Op::Upsert(DirectoryEntry::Agent(agent("alice", &["sales"], 0))),
        Op::Upsert(DirectoryEntry::Queue(queue("q2", &["unknown-skill"]))),
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
fn routing_offers_to_the_longest_idle_skilled_agent_with_capacity() {
    let mut state = seeded();
    login_ready(&mut state, 10, "bob");
    login_ready(&mut state, 20, "alice");
    // Bob has been ready longer: he gets the first sales chat.
    apply_ok(&mut state, 30, start("c1", "r1"));
    assert!(offered_to("bob")(&status(&state, "c1")));
    apply_ok(&mut state, 31, Op::Accept(action("bob", "c1")));
    // Bob was just assigned, so Alice is now idle longest.
    apply_ok(&mut state, 32, start("c2", "r2"));
    assert!(offered_to("alice")(&status(&state, "c2")));
    // The French queue needs a skill only Bob has.
    apply_ok(&mut state, 33, start_in("c3", "r3", "fr"));
    assert!(offered_to("bob")(&status(&state, "c3")));
    // Bob is at his limit of 2 (one assigned, one offered): the next French chat waits.
    apply_ok(&mut state, 34, start_in("c4", "r4", "fr"));
    assert_eq!(status(&state, "c4"), ActivityStatus::Queued);
    assert_eq!(state.queue_position("c4").map(|p| p.position), Some(1));
    apply_ok(&mut state, 35, start_in("c5", "r5", "fr"));
    assert_eq!(state.queue_position("c5").map(|p| p.position), Some(2));
    assert!(state.queue_position("c5").unwrap().estimated_wait_ms > 0);
    // Completing frees capacity and routes the oldest waiting chat.
    apply_ok(
        &mut state,
        40,
        Op::Complete(Complete {
            action: action("bob", "c1"),
            outcome: None,
        }),
    );
    assert!(offered_to("bob")(&status(&state, "c4")));
    assert_eq!(state.queue_position("c5").map(|p| p.position), Some(1));
    // The completed chat ended and its customer was told.
    assert_eq!(state.chats["c1"].status, ChatStatus::Ended);
    assert!(matches!(
        state.chats["c1"].events.last().unwrap().body,
        EventBody::Ended { .. }
    ));
    // Handling time recorded for the estimated wait.
    assert_eq!(state.queues["sales"].recent_handle_ms, VecDeque::from([9]));
}

#[test]
fn missed_offer_returns_to_the_queue_front_and_agent_goes_not_ready() {
    let mut state = seeded();
    login_ready(&mut state, 10, "alice");
    apply_ok(&mut state, 100, start("c1", "r1"));
    apply_ok(&mut state, 101, start("c2", "r2"));
    assert!(offered_to("alice")(&status(&state, "c1")));
    assert!(offered_to("alice")(&status(&state, "c2")));
    assert_eq!(state.next_timer_ms(), Some(10_100));
    // Nothing due yet.
    assert_eq!(
        apply_ok(&mut state, 10_099, Op::Tick),
        Outcome::Ticked { fired: 0 }
    );
    assert_eq!(
        apply_ok(&mut state, 10_101, Op::Tick),
        Outcome::Ticked { fired: 2 }
    );
    assert_eq!(status(&state, "c1"), ActivityStatus::Queued);
    assert_eq!(state.queue_position("c1").map(|p| p.position), Some(1));
    let alice = &state.agents["alice"];
    assert_eq!(alice.ready.get(&Channel::Chat), Some(&false));
    assert_eq!(alice.not_ready_reason.as_deref(), Some("missed_offer"));
    assert!(alice.work.is_empty());
    // A second tick finds nothing (another node's duplicate tick is harmless).
    assert_eq!(
        apply_ok(&mut state, 10_102, Op::Tick),
        Outcome::Ticked { fired: 0 }
    );
    // Ready again: the queue is routed in order.
    login_ready(&mut state, 10_200, "alice");
    assert!(offered_to("alice")(&status(&state, "c1")));
    let reasons: Vec<&str> = state.activities["c1"]
        .history
        .iter()
        .map(|t| t.reason.as_str())
        .collect();
    assert_eq!(reasons, ["created", "routed", "offer_timeout", "routed"]);
    // Accepting too late is refused.
    apply_ok(&mut state, 20_300, Op::Tick);
    assert!(matches!(
        state.apply(&command(20_301, Op::Accept(action("alice", "c1")))),
        Outcome::Rejected(Rejection::Conflict { .. })
    ));
}

#[test]
fn transfers_to_agent_and_queue_tell_the_customer() {
    let mut state = seeded();
    login_ready(&mut state, 10, "alice");
    apply_ok(&mut state, 20, start("c1", "r1"));
    apply_ok(&mut state, 21, Op::Accept(action("alice", "c1")));
    login_ready(&mut state, 22, "bob");
    let to_bob = Op::Transfer(Transfer {
        action: action("alice", "c1"),
        target: TransferTarget::Agent {
            agent_id: "bob".into(),
        },
    });
    apply_ok(&mut state, 30, to_bob);
    assert!(offered_to("bob")(&status(&state, "c1")));
    assert!(state.agents["alice"].work.is_empty());
    assert_eq!(state.chats["c1"].agent_id, None);
    apply_ok(&mut state, 31, Op::Accept(action("bob", "c1")));
    let kinds: Vec<&str> = state.chats["c1"]
        .events
        .iter()
        .map(|e| match &e.body {
            EventBody::Started { .. } => "started",
            EventBody::AgentJoined { .. } => "joined",
            EventBody::AgentLeft { .. } => "left",
            EventBody::Transferred { .. } => "transferred",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["started", "joined", "left", "transferred", "joined"]
    );
    // Queue transfer: to the French queue, where only Bob qualifies but he holds it now,
    // so it is offered back to him as the only skilled agent with capacity.
    let to_queue = Op::Transfer(Transfer {
        action: action("bob", "c1"),
        target: TransferTarget::Queue {
            queue_id: "fr".into(),
        },
    });
    apply_ok(&mut state, 40, to_queue);
    assert_eq!(state.activities["c1"].queue_id, "fr");
    assert!(offered_to("bob")(&status(&state, "c1")));
    // A chat cannot move to a callback queue; nor to yourself.
    apply_ok(&mut state, 41, Op::Accept(action("bob", "c1")));
    for target in [
        TransferTarget::Queue {
            queue_id: "callbacks".into(),
        },
        TransferTarget::Agent {
            agent_id: "bob".into(),
        },
    ] {
        let op = Op::Transfer(Transfer {
            action: action("bob", "c1"),
            target,
        });
        assert!(matches!(
            state.apply(&command(42, op)),
            Outcome::Rejected(_)
        ));
    }
}

#[test]
fn customer_end_abandons_queued_work_and_completes_assigned_work() {
    let mut state = seeded();
    apply_ok(&mut state, 10, start("c1", "r1"));
    let end = |chat: &str| {
        Op::EndChat(EndChat {
            chat_id: chat.into(),
            by: Participant::Customer,
        })
    };
    apply_ok(&mut state, 11, end("c1"));
    assert_eq!(status(&state, "c1"), ActivityStatus::Abandoned);
    assert!(state.waiting.is_empty());
    // Ending twice answers the same end event.
    assert_eq!(
        apply_ok(&mut state, 12, end("c1")),
        Outcome::ChatEnded {
            chat_id: "c1".into(),
            seq: 2
        }
    );
    login_ready(&mut state, 20, "alice");
    apply_ok(&mut state, 21, start("c2", "r2"));
    apply_ok(&mut state, 22, Op::Accept(action("alice", "c2")));
    apply_ok(&mut state, 23, end("c2"));
    assert!(matches!(
        status(&state, "c2"),
        ActivityStatus::Completed { .. }
    ));
    assert!(state.agents["alice"].work.is_empty());
    // Alice's feed saw the end of her chat, then the release.
    let tail: Vec<&AgentEventBody> = state.agents["alice"]
        .feed
        .iter()
        .rev()
        .take(2)
        .map(|e| &e.body)
        .collect();
    assert!(matches!(tail[0], AgentEventBody::Released { .. }));
    assert!(matches!(tail[1], AgentEventBody::ChatEvent { .. }));
    // The customer rates it once.
    let survey = Op::SubmitSurvey(SubmitSurvey {
        chat_id: "c2".into(),
        rating: 4,
        comment: "quick".into(),
    });
    apply_ok(&mut state, 30, survey.clone());
    apply_ok(&mut state, 31, survey);
    assert_eq!(state.chats["c2"].survey.as_ref().map(|s| s.rating), Some(4));
    let other = Op::SubmitSurvey(SubmitSurvey {
        chat_id: "c2".into(),
        rating: 1,
        comment: String::new(),
    });
    assert!(matches!(
        state.apply(&command(32, other)),
        Outcome::Rejected(_)
    ));
    // Posting into an ended chat is refused.
    assert!(matches!(
        state.apply(&command(33, post("c2", "late", "hello?"))),
        Outcome::Rejected(Rejection::ChatEnded { .. })
    ));
}

#[test]
fn silent_customer_ends_the_chat_after_the_inactivity_timeout() {
    let mut state = seeded();
    login_ready(&mut state, 10, "alice");
    apply_ok(&mut state, 20, start("c1", "r1"));
    apply_ok(&mut state, 21, Op::Accept(action("alice", "c1")));
    apply_ok(&mut state, 30_000, post("c1", "m1", "still here"));
    // Re-armed by the message: nothing at 60 021.
    assert_eq!(
        apply_ok(&mut state, 60_100, Op::Tick),
        Outcome::Ticked { fired: 0 }
    );
    assert_eq!(
        apply_ok(&mut state, 90_000, Op::Tick),
        Outcome::Ticked { fired: 1 }
    );
    assert_eq!(state.chats["c1"].status, ChatStatus::Ended);
    assert!(matches!(
        &state.chats["c1"].events.last().unwrap().body,
        EventBody::Ended { by: Participant::System, reason } if reason == "inactivity"
    ));
    assert!(state.agents["alice"].work.is_empty());
}

#[test]
fn callbacks_wait_until_due_then_route_and_complete_with_an_outcome() {
    let mut state = seeded();
    login_ready(&mut state, 10, "alice");
    let request = Op::RequestCallback(RequestCallback {
        activity_id: "cb1".into(),
        request_id: "q1".into(),
        queue_id: "callbacks".into(),
        name: "Dan".into(),
        phone: "+33123456789".into(),
        requested_at_ms: 5_000,
    });
    assert_eq!(
        apply_ok(&mut state, 100, request.clone()),
        Outcome::CallbackRequested {
            activity_id: "cb1".into(),
            due_at_ms: 5_000,
            replayed: false
        }
    );
    assert!(matches!(
        apply_ok(&mut state, 101, request),
        Outcome::CallbackRequested { replayed: true, .. }
    ));
    assert_eq!(status(&state, "cb1"), ActivityStatus::Scheduled);
    apply_ok(&mut state, 5_001, Op::Tick);
    assert!(offered_to("alice")(&status(&state, "cb1")));
    apply_ok(&mut state, 5_002, Op::Accept(action("alice", "cb1")));
    let without = Op::Complete(Complete {
        action: action("alice", "cb1"),
        outcome: None,
    });
    assert!(matches!(
        state.apply(&command(5_003, without)),
        Outcome::Rejected(Rejection::Invalid { .. })
    ));
    apply_ok(
        &mut state,
        5_004,
        Op::Complete(Complete {
            action: action("alice", "cb1"),
            outcome: Some("reached".into()),
        }),
    );
    assert_eq!(
        status(&state, "cb1"),
        ActivityStatus::Completed {
            outcome: Some("reached".into())
        }
    );
}

#[test]
fn sessions_survive_node_changes_and_logout_needs_empty_hands() {
    let mut state = seeded();
    login_ready(&mut state, 10, "alice");
    apply_ok(&mut state, 20, start("c1", "r1"));
    apply_ok(&mut state, 21, Op::Accept(action("alice", "c1")));
    // The agent's node died; she reconnects through node 3.
    state.apply(&Command {
        at_ms: 30,
        origin: 3,
        op: Op::Presence(session("alice")),
    });
    assert_eq!(
        state.agents["alice"].session.as_ref().map(|s| s.node),
        Some(3)
    );
    assert!(state.agents["alice"].work.contains("c1"));
    assert!(matches!(
        state.apply(&command(31, Op::Logout(session("alice")))),
        Outcome::Rejected(Rejection::Conflict { .. })
    ));
    // A new login replaces the session and keeps the work.
    apply_ok(
        &mut state,
        40,
        Op::Login(Login {
            agent_id: "alice".into(),
            session_id: "s-new".into(),
        }),
    );
    assert!(matches!(
        state.apply(&command(41, Op::Accept(action("alice", "c1")))),
        Outcome::Rejected(Rejection::SessionEnded)
    ));
    assert_eq!(
        status(&state, "c1"),
        ActivityStatus::Assigned {
            agent_id: "alice".into()
        }
    );
}

#[test]
fn business_hours_and_open_chat_limits_refuse_new_chats() {
    let mut state = seeded();
    let mut spec = queue("sales", &["sales"]);
    spec.business_hours = Some(BusinessHours {
        time_zone: "UTC".into(),
        intervals: vec![OpenInterval {
            days: vec![Weekday::Mon],
            open: "09:00".into(),
            close: "17:00".into(),
        }],
    });
    apply_ok(&mut state, 1, Op::Upsert(DirectoryEntry::Queue(spec)));
    // 2026-11-23 is a Monday. 08:00 UTC is closed, 10:00 open.
    let at = |rfc: &str| rfc.parse::<jiff::Timestamp>().unwrap().as_millisecond() as u64;
    let closed = state.apply(&command(at("2026-11-23T08:00:00Z"), start("c1", "r1")));
    assert_eq!(
        closed,
        Outcome::Rejected(Rejection::OffHours {
            message: "closed".into()
        })
    );
    let open_at = at("2026-11-23T10:00:00Z");
    apply_ok(&mut state, open_at, start("c1", "r1"));
    // Three open chats per customer address.
    let same_customer = |chat: &str| {
        let Op::StartChat(mut s) = start(chat, &format!("r-{chat}")) else {
            unreachable!()
        };
        s.customer.email = "C1@Example.com".into();
        Op::StartChat(s)
    };
    apply_ok(&mut state, open_at, same_customer("c2"));
    apply_ok(&mut state, open_at, same_customer("c3"));
    assert!(matches!(
        state.apply(&command(open_at, same_customer("c4"))),
        Outcome::Rejected(Rejection::LimitReached { .. })
    ));
}

#[test]
fn seeding_is_idempotent_and_never_resurrects() {
    let mut state = seeded();
    let mut renamed = directory();
    renamed.queues[0].name = "Renamed".into();
    assert_eq!(
        apply_ok(&mut state, 2, Op::SeedDirectory(renamed.clone())),
        Outcome::Seeded { added: 0 }
    );
    assert_eq!(state.queues["sales"].spec.name, "SALES");
    // Removed by an operator: a later seed does not bring it back.
    apply_ok(
        &mut state,
        3,
        Op::Remove(DirectoryKey::Queue("sales".into())),
    );
    apply_ok(&mut state, 4, Op::SeedDirectory(renamed));
    assert!(!state.queues.contains_key("sales"));
}

#[test]
fn validate_catches_broken_invariants() {
    let mut state = seeded();
    login_ready(&mut state, 5, "alice");
    apply_ok(&mut state, 10, start("c1", "r1"));
    apply_ok(&mut state, 11, post("c1", "m1", "a"));
    apply_ok(&mut state, 12, post("c1", "m2", "b"));

    let mut gap = state.clone();
    Arc::make_mut(gap.chats.get_mut("c1").unwrap())
        .events
        .remove(1);
    assert!(gap.validate().is_err());

    let mut orphan = state.clone();
    orphan.requests.insert("chat:r2".into(), "ghost".into());
    assert!(orphan.validate().is_err());

    // G6: the same activity held by two agents.
    let mut double = state.clone();
    double
        .agents
        .get_mut("bob")
        .unwrap()
        .work
        .insert("c1".into());
    assert!(double.validate().is_err());

    // Over the limit.
    let mut over = state.clone();
    over.agents
        .get_mut("alice")
        .unwrap()
        .spec
        .limits
        .insert(Channel::Chat, 0);
    assert!(over.validate().is_err());

    let mut stale_timer = state.clone();
    stale_timer.timers.insert((1, Timer::Offer("c1".into())));
    assert!(stale_timer.validate().is_err());

    let mut ghost = state.clone();
    Arc::make_mut(ghost.chats.get_mut("c1").unwrap()).status = ChatStatus::Ended;
    assert!(ghost.validate().is_err());
}

#[test]
fn digest_is_stable_and_sensitive() {
    let build = || {
        let mut state = seeded();
        apply_ok(&mut state, 10, start("c1", "r1"));
        apply_ok(&mut state, 11, post("c1", "m1", "a"));
        state
    };
    let a = build();
    let b = build();
    assert_eq!(a.digest().unwrap(), b.digest().unwrap());
    // Round trip through the snapshot encoding keeps the digest.
    let restored: State = serde_json::from_slice(&serde_json::to_vec(&a).unwrap()).unwrap();
    assert_eq!(restored.digest().unwrap(), a.digest().unwrap());
    let mut c = build();
    apply_ok(&mut c, 12, post("c1", "m2", "b"));
    assert_ne!(a.digest().unwrap(), c.digest().unwrap());
}

#[test]
fn client_message_ids_serialize_in_key_order_whatever_the_hash() {
    // Two hashed maps with the same ids, filled in opposite orders (each with its own hash
    // keys), encode exactly as the sorted map does: snapshots and digests do not depend on
    // the hash.
    let ids: Vec<String> = (0..200).map(|i| format!("customer/m-{i}")).collect();
    let numbered: Vec<(String, u64)> = ids.iter().cloned().zip(1..).collect();
    let mut forward = ClientMsgIds::default();
    let mut backward = ClientMsgIds::default();
    for (id, seq) in &numbered {
        forward.insert(id.clone(), *seq);
    }
    for (id, seq) in numbered.iter().rev() {
        backward.insert(id.clone(), *seq);
    }
    let sorted: BTreeMap<&String, &u64> = numbered.iter().map(|(id, seq)| (id, seq)).collect();
    let expected = serde_json::to_string(&sorted).unwrap();
    for map in [&forward, &backward] {
        assert_eq!(serde_json::to_string(map).unwrap(), expected);
    }
    // A chat's digest after many posts survives a snapshot round trip (decoded into a new map).
    let mut state = seeded();
    apply_ok(&mut state, 10, start("c1", "r1"));
    for (i, id) in ids.iter().take(50).enumerate() {
        apply_ok(&mut state, 11 + i as u64, post("c1", id, "text"));
    }
    let restored: State = serde_json::from_slice(&serde_json::to_vec(&state).unwrap()).unwrap();
    assert_eq!(restored.digest().unwrap(), state.digest().unwrap());
    assert_eq!(restored.chats["c1"].client_msg_ids.len(), 50);
}

#[test]
fn agent_feed_keeps_a_bounded_tail() {
    let mut state = seeded();
    login_ready(&mut state, 10, "alice");
    apply_ok(&mut state, 20, start("c1", "r1"));
    apply_ok(&mut state, 21, Op::Accept(action("alice", "c1")));
    for i in 0..limits::AGENT_FEED_RETAINED as u64 + 10 {
        state.apply(&command(22 + i, post("c1", &format!("m{i}"), "x")));
    }
    let alice = &state.agents["alice"];
    assert_eq!(alice.feed.len(), limits::AGENT_FEED_RETAINED);
    let last = alice.feed_last_seq();
    assert_eq!(alice.feed_after(last - 3, 100).unwrap().len(), 3);
    assert!(alice.feed_after(0, 100).is_err());
    state.validate().unwrap();
}

/// Replays a long pseudo-random workload (chats, messages with retries, agents logging in,
/// accepting, transferring, completing, timers) and checks every invariant after every
/// command, plus exactly-once delivery against a simple model.
#[test]
fn random_workload_keeps_invariants() {
    random_workload(None);
}

#[test]
fn random_workload_with_short_retention_keeps_invariants_and_loses_nothing() {
    let archived = random_workload(Some(Retention {
        hot_ms: 300_000,
        archive_ms: 1_200_000,
    }));
    assert!(archived > 50, "only {archived} activities were retired");
}

/// Runs a random workload, checking invariants after every command and, at the end, that
/// every chat holds exactly the messages acknowledged as new, in memory or (with a
/// `retention`) in the archive until purged. Returns how many activities were archived.
fn random_workload(retention: Option<Retention>) -> usize {
    let mut state = seeded();
    if let Some(retention) = retention {
        apply_ok(&mut state, 2, Op::SetRetention(retention));
    }
    // The archive as the store would hold it: key to (record, expiry).
    let mut archive: BTreeMap<String, (Retired, u64)> = BTreeMap::new();
    let mut archived_total = 0;
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n.max(1)
    };
    let agents = ["alice", "bob"];
    let mut model: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut sent: Vec<(String, String, String)> = Vec::new();
    let mut at = 1_000;
    for step in 0..3_000u64 {
        at += next(3_000);
        let agent_id = agents[next(2) as usize];
        let chats: Vec<String> = model.keys().cloned().collect();
        let mut chat =
            (!chats.is_empty()).then(|| chats[next(chats.len() as u64) as usize].clone());
        let roll = next(100);
        // Agent actions mostly pick an activity the agent holds, sometimes any chat.
        let held: Vec<String> = state.agents[agent_id].work.iter().cloned().collect();
        if (70..=87).contains(&roll) && !held.is_empty() && next(5) != 0 {
            chat = Some(held[next(held.len() as u64) as usize].clone());
        }
        let op = match (roll, chat) {
            (0..=9, _) | (_, None) => {
                let id = format!("c{step}");
                let queue = if next(2) == 0 { "sales" } else { "fr" };
                model.insert(id.clone(), Vec::new());
                start_in(&id, &format!("r{step}"), queue)
            }
            (10..=49, Some(chat)) => {
                let id = format!("m{step}");
                let text = format!("text {step}");
                sent.push((chat.clone(), id.clone(), text.clone()));
                post(&chat, &id, &text)
            }
            (50..=59, _) if !sent.is_empty() => {
                let (chat, id, text) = sent[next(sent.len() as u64) as usize].clone();
                post(&chat, &id, &text)
            }
            (60..=64, _) => Op::Login(Login {
                agent_id: agent_id.into(),
                session_id: format!("s-{agent_id}"),
            }),
            (65..=69, _) => Op::SetAvailability(SetAvailability {
                session: session(agent_id),
                channels: BTreeMap::from([(Channel::Chat, next(4) != 0)]),
                reason: Some("break".into()),
            }),
            (70..=79, Some(chat)) => Op::Accept(action(agent_id, &chat)),
            (80..=84, Some(chat)) => Op::Complete(Complete {
                action: action(agent_id, &chat),
                outcome: None,
            }),
            (85..=87, Some(chat)) => Op::Transfer(Transfer {
                action: action(agent_id, &chat),
                target: if next(2) == 0 {
                    TransferTarget::Queue {
                        queue_id: "sales".into(),
                    }
                } else {
                    TransferTarget::Agent {
                        agent_id: agents[next(2) as usize].into(),
                    }
                },
            }),
            (88..=89, Some(chat)) => Op::EndChat(EndChat {
                chat_id: chat,
                by: Participant::Customer,
            }),
            (90..=91, _) => Op::Logout(session(agent_id)),
            _ => Op::Tick,
        };
        let outcome = state.apply(&command(at, op.clone()));
        if let (Op::PostMessage(p), Outcome::MessagePosted { replayed, .. }) = (&op, &outcome) {
            let ids = model.get_mut(&p.chat_id).unwrap();
            assert_eq!(*replayed, ids.contains(&p.client_msg_id), "{op:?}");
            if !replayed {
                ids.push(p.client_msg_id.clone());
            }
        }
        if let Err(violation) = state.validate() {
            panic!("step {step}, after {op:?} -> {outcome:?}: {violation}");
        }
        for archive_op in std::mem::take(&mut state.archive_outbox) {
            match archive_op {
                parley_storage::ArchiveOp::Put {
                    key,
                    value,
                    expires_at_ms,
                } => {
                    let record: Retired = serde_json::from_str(&value).unwrap();
                    assert!(record.activity.status.is_terminal(), "step {step}: {key}");
                    assert!(!state.activities.contains_key(&record.activity.id));
                    archived_total += 1;
                    archive.insert(key, (record, expires_at_ms));
                }
                parley_storage::ArchiveOp::PurgeBefore { at_ms } => {
                    archive.retain(|_, (_, expires)| *expires > at_ms);
                }
                parley_storage::ArchiveOp::Expire { key, .. } => {
                    panic!("step {step}: no email here, yet {key}'s expiry moved")
                }
            }
        }
        // The one-pass positions streams share agree with each activity's own position.
        if step % 50 == 0 {
            let all = state.queue_positions();
            for id in state.activities.keys() {
                assert_eq!(
                    all.get(id).copied(),
                    state.queue_position(id),
                    "step {step}: {id}"
                );
            }
        }
    }
    let mut purged = 0;
    for (chat, ids) in &model {
        let archived = archive
            .get(&archive_key(chat))
            .and_then(|(r, _)| r.chat.as_ref());
        let Some(kept) = state.chats.get(chat).map(|c| &**c).or(archived) else {
            assert!(
                retention.is_some(),
                "chat {chat} vanished without retention"
            );
            purged += 1;
            continue;
        };
        let got: Vec<String> = kept
            .events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::Message { client_msg_id, .. } => Some(client_msg_id.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(&got, ids, "chat {chat}");
    }
    let completed = state
        .activities
        .values()
        .map(|a| &**a)
        .chain(archive.values().map(|(r, _)| &r.activity))
        .filter(|a| matches!(a.status, ActivityStatus::Completed { .. }))
        .count();
    assert!(
        completed + purged > 10,
        "the workload completed only {completed} activities ({purged} purged)"
    );
    archived_total
}

#[test]
fn a_missed_offer_goes_to_the_next_eligible_agent() {
    let mut state = seeded();
    let mut carmen = agent("carmen", &["sales", "french"], 1);
    carmen.limits = BTreeMap::from([(Channel::Chat, 1)]);
    apply_ok(&mut state, 2, Op::Upsert(DirectoryEntry::Agent(carmen)));
    login_ready(&mut state, 10, "bob");
    login_ready(&mut state, 20, "carmen");
    login_ready(&mut state, 30, "alice");
    apply_ok(&mut state, 100, start_in("c1", "r1", "fr"));
    assert!(offered_to("bob")(&status(&state, "c1")));
    apply_ok(&mut state, 10_100, Op::Tick);
    assert!(
        offered_to("carmen")(&status(&state, "c1")),
        "{:?}",
        status(&state, "c1")
    );
}

/// Found by the chaos suite's double-submit scenario: a transfer sent twice (or retried after
/// its answer was lost) was refused with a conflict although the first one had applied.
#[test]
fn a_retried_transfer_is_answered_as_done() {
    let mut state = seeded();
    login_ready(&mut state, 10, "alice");
    login_ready(&mut state, 11, "bob");
    apply_ok(&mut state, 20, start("c1", "r1"));
    let holder = match status(&state, "c1") {
        ActivityStatus::Offered { agent_id, .. } => agent_id,
        other => panic!("{other:?}"),
    };
    let other = if holder == "alice" { "bob" } else { "alice" };
    apply_ok(&mut state, 21, Op::Accept(action(&holder, "c1")));
    let to_other = Op::Transfer(Transfer {
        action: action(&holder, "c1"),
        target: TransferTarget::Agent {
            agent_id: other.into(),
        },
    });
    apply_ok(&mut state, 30, to_other.clone());
    let after_first = state.clone();
    assert_eq!(apply_ok(&mut state, 31, to_other.clone()), Outcome::Done);
    assert_eq!(state, after_first, "the retry changed the state");
    // A different target is not a retry: refused, the holder no longer has it.
    let elsewhere = Op::Transfer(Transfer {
        action: action(&holder, "c1"),
        target: TransferTarget::Queue {
            queue_id: "sales".into(),
        },
    });
    assert!(matches!(
        state.apply(&command(32, elsewhere)),
        Outcome::Rejected(Rejection::Conflict { .. })
    ));
    // Queue transfers too.
    apply_ok(&mut state, 40, Op::Accept(action(other, "c1")));
    let to_queue = Op::Transfer(Transfer {
        action: action(other, "c1"),
        target: TransferTarget::Queue {
            queue_id: "sales".into(),
        },
    });
    apply_ok(&mut state, 41, to_queue.clone());
    let after_queue = state.clone();
    assert_eq!(apply_ok(&mut state, 42, to_queue), Outcome::Done);
    assert_eq!(state, after_queue);
}

mod retention;

mod email;

mod golden;

mod island;

mod island_agents;

#[test]
fn agents_connected_through_an_unreachable_member_get_no_new_work_until_reached() {
    let mut state = seeded();
    apply_ok(&mut state, 1, Op::SetClusterVersion { version: 2 });
    // Bob is idle longest, so he would get the first chat; he is connected through node 3.
    login_ready(&mut state, 10, "bob");
    login_ready(&mut state, 20, "alice");
    state.apply(&Command {
        at_ms: 21,
        origin: 3,
        op: Op::Presence(session("bob")),
    });
    let unreachable = |nodes: &[u64]| Op::SetUnreachable {
        nodes: nodes.iter().copied().collect(),
    };
    apply_ok(&mut state, 25, unreachable(&[3]));
    assert!(state.agent_unreachable(&state.agents["bob"]));
    apply_ok(&mut state, 30, start("c1", "r1"));
    assert!(offered_to("alice")(&status(&state, "c1")), "not bob");
    apply_ok(&mut state, 31, Op::Accept(action("alice", "c1")));
    // Alice takes two chats: the third waits while bob is unreachable.
    apply_ok(&mut state, 33, start("c2", "r2"));
    assert!(offered_to("alice")(&status(&state, "c2")));
    apply_ok(&mut state, 34, start("c3", "r3"));
    assert_eq!(status(&state, "c3"), ActivityStatus::Queued);
    // Bob reconnects through node 1, which the leader reaches: routed to at once.
    state.apply(&Command {
        at_ms: 40,
        origin: 1,
        op: Op::Presence(session("bob")),
    });
    assert!(offered_to("bob")(&status(&state, "c3")));
    // Node 3 reached again: the set empties (and routes what waits).
    apply_ok(&mut state, 50, unreachable(&[]));
    assert!(state.unreachable_nodes.is_empty());
    // Bounded, and needs cluster version 2.
    let many: Vec<u64> = (0..=crate::limits::UNREACHABLE_NODES_MAX as u64).collect();
    assert!(matches!(
        state.apply(&command(60, unreachable(&many))),
        Outcome::Rejected(Rejection::Invalid { .. })
    ));
    let mut old = seeded();
    assert!(matches!(
        old.apply(&command(1, unreachable(&[3]))),
        Outcome::Rejected(Rejection::NotEnabled { .. })
    ));
    state.validate().expect("invariants hold");
}

#[test]
fn a_chat_whose_agent_is_unreachable_is_rerouted_once_its_customer_writes_here() {
    let mut state = seeded();
    apply_ok(&mut state, 1, Op::SetClusterVersion { version: 2 });
    login_ready(&mut state, 10, "bob");
    state.apply(&Command {
        at_ms: 11,
        origin: 3,
        op: Op::Presence(session("bob")),
    });
    apply_ok(&mut state, 20, start("c1", "r1"));
    apply_ok(&mut state, 21, Op::Accept(action("bob", "c1")));
    login_ready(&mut state, 22, "alice");
    apply_ok(
        &mut state,
        30,
        Op::SetUnreachable {
            nodes: [3].into_iter().collect(),
        },
    );
    // Nothing moves until the customer writes on this side.
    assert_eq!(state.chats["c1"].agent_id.as_deref(), Some("bob"));
    apply_ok(&mut state, 40, post("c1", "m1", "anyone there?"));
    assert!(offered_to("alice")(&status(&state, "c1")));
    assert!(!state.agents["bob"].work.contains("c1"));
    assert!(state.chats["c1"].events.iter().any(|e| matches!(
        &e.body,
        EventBody::AgentLeft { agent_id, reason } if agent_id == "bob" && reason == "unreachable"
    )));
    state.validate().expect("invariants hold");
    // A reachable agent's chat stays where it is.
    apply_ok(&mut state, 41, Op::Accept(action("alice", "c1")));
    apply_ok(&mut state, 42, post("c1", "m2", "thanks"));
    assert_eq!(state.chats["c1"].agent_id.as_deref(), Some("alice"));
}

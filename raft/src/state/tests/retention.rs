//! Retention: finished work leaves memory for the archive after `hot_ms`; the archive is
//! purged after `archive_ms`; live work never leaves.

use super::*;
use parley_storage::ArchiveOp;

const HOT_MS: u64 = 60_000;
const ARCHIVE_MS: u64 = 600_000;

fn with_retention() -> State {
    let mut state = seeded();
    apply_ok(
        &mut state,
        2,
        Op::SetRetention(Retention {
            hot_ms: HOT_MS,
            archive_ms: ARCHIVE_MS,
        }),
    );
    state
}

fn end(chat_id: &str) -> Op {
    Op::EndChat(EndChat {
        chat_id: chat_id.into(),
        by: Participant::Customer,
    })
}

/// The records put into the archive, decoded, and the purges, in order.
fn archived(ops: &[ArchiveOp]) -> (Vec<(String, Retired, u64)>, Vec<u64>) {
    let mut puts = Vec::new();
    let mut purges = Vec::new();
    for op in ops {
        match op {
            ArchiveOp::Put {
                key,
                value,
                expires_at_ms,
            } => puts.push((
                key.clone(),
                serde_json::from_str(value).expect("a retired record decodes"),
                *expires_at_ms,
            )),
            ArchiveOp::PurgeBefore { at_ms } => purges.push(*at_ms),
            ArchiveOp::Expire { key, .. } => panic!("no attachment here, yet {key} moved"),
        }
    }
    (puts, purges)
}

#[test]
fn an_ended_chat_leaves_memory_after_the_hot_retention_with_its_transcript() {
    let mut state = with_retention();
    login_ready(&mut state, 10, "alice");
    apply_ok(&mut state, 20, start("c1", "r1"));
    apply_ok(&mut state, 21, Op::Accept(action("alice", "c1")));
    apply_ok(&mut state, 22, post("c1", "m1", "hello"));
    apply_ok(&mut state, 30, end("c1"));
    assert!(state.archive_outbox.is_empty());

    // One ms before it is due, it is still in memory: it can be rated.
    apply_ok(&mut state, 30 + HOT_MS - 1, Op::Tick);
    apply_ok(
        &mut state,
        30 + HOT_MS - 1,
        Op::SubmitSurvey(SubmitSurvey {
            chat_id: "c1".into(),
            rating: 5,
            comment: String::new(),
        }),
    );
    assert!(state.chats.contains_key("c1"));

    apply_ok(&mut state, 30 + HOT_MS, Op::Tick);
    assert!(!state.chats.contains_key("c1"));
    assert!(!state.activities.contains_key("c1"));
    assert!(
        !state.requests.contains_key("chat:r1"),
        "its request id is released"
    );
    let (puts, purges) = archived(&std::mem::take(&mut state.archive_outbox));
    assert!(purges.is_empty());
    let [(key, record, expires)] = puts.as_slice() else {
        panic!("one record archived, got {puts:?}");
    };
    assert_eq!(key, &archive_key("c1"));
    assert_eq!(*expires, 30 + HOT_MS + ARCHIVE_MS);
    let chat = record
        .chat
        .as_ref()
        .expect("the chat is archived with its activity");
    assert_eq!(
        chat.events.len(),
        5,
        "started, joined, message, ended, rated: {chat:?}"
    );
    assert!(record.activity.status.is_terminal());
    // The record reads like the live state did.
    let restored = record.clone().into_state();
    assert_eq!(
        restored.chat_events("c1", 0, 100).map(|page| page.len()),
        Some(5)
    );

    // The dedupe window is over: the same request id starts a new chat.
    assert!(matches!(
        apply_ok(&mut state, 30 + HOT_MS + 1, start("c9", "r1")),
        Outcome::ChatStarted {
            replayed: false,
            ..
        }
    ));
}

#[test]
fn live_work_never_leaves_memory_and_retention_counts_from_the_end() {
    let mut state = with_retention();
    login_ready(&mut state, 10, "alice");
    apply_ok(&mut state, 20, start("open", "r1"));
    apply_ok(&mut state, 21, Op::Accept(action("alice", "open")));
    apply_ok(&mut state, 22, start("queued", "r2"));
    let far = 20 + 10 * HOT_MS;
    apply_ok(&mut state, far, post("open", "m1", "still here"));
    apply_ok(&mut state, far, Op::Tick);
    assert!(state.chats.contains_key("open"));
    assert!(state.chats.contains_key("queued"));
    assert!(state.archive_outbox.is_empty());

    apply_ok(&mut state, far + 1, end("queued"));
    apply_ok(&mut state, far + HOT_MS, Op::Tick);
    assert!(state.chats.contains_key("queued"), "counted from its end");
    apply_ok(&mut state, far + 1 + HOT_MS, Op::Tick);
    assert!(!state.chats.contains_key("queued"));
    assert!(state.chats.contains_key("open"));
}

#[test]
fn the_archive_is_purged_until_everything_archived_has_expired() {
    let mut state = with_retention();
    apply_ok(&mut state, 10, start("c1", "r1"));
    apply_ok(&mut state, 11, end("c1"));
    apply_ok(&mut state, 11 + HOT_MS, Op::Tick);
    let retired_at = 11 + HOT_MS;
    assert_eq!(state.archived_until_ms, retired_at + ARCHIVE_MS);
    state.archive_outbox.clear();

    // Purges every tenth of the archive retention, until the last expiry passed.
    let mut purges = Vec::new();
    let mut now = retired_at;
    while let Some(due) = state.next_timer_ms() {
        now = due;
        apply_ok(&mut state, now, Op::Tick);
        purges.extend(archived(&std::mem::take(&mut state.archive_outbox)).1);
        assert!(purges.len() <= 20, "purging goes on forever: {purges:?}");
    }
    assert_eq!(purges.len(), 10, "{purges:?}");
    assert!(purges.windows(2).all(|w| w[1] - w[0] == ARCHIVE_MS / 10));
    assert!(now >= state.archived_until_ms);
    assert_eq!(state.archive_purge_due_ms, None);
}

#[test]
fn retention_out_of_bounds_is_refused_and_a_new_one_applies_to_later_ends() {
    let mut state = with_retention();
    for bad in [
        Retention {
            hot_ms: 0,
            archive_ms: ARCHIVE_MS,
        },
        Retention {
            hot_ms: HOT_MS,
            archive_ms: limits::RETENTION_ARCHIVE_MS_MAX + 1,
        },
        Retention {
            hot_ms: limits::RETENTION_HOT_MS_MAX + 1,
            archive_ms: ARCHIVE_MS,
        },
    ] {
        assert!(matches!(
            state.apply(&command(3, Op::SetRetention(bad))),
            Outcome::Rejected(Rejection::Invalid { .. })
        ));
    }
    assert_eq!(state.retention.hot_ms, HOT_MS);

    apply_ok(&mut state, 10, start("c1", "r1"));
    apply_ok(&mut state, 11, end("c1"));
    apply_ok(
        &mut state,
        12,
        Op::SetRetention(Retention {
            hot_ms: 2 * HOT_MS,
            archive_ms: ARCHIVE_MS,
        }),
    );
    apply_ok(&mut state, 13, start("c2", "r2"));
    apply_ok(&mut state, 14, end("c2"));
    apply_ok(&mut state, 11 + HOT_MS, Op::Tick);
    assert!(!state.chats.contains_key("c1"), "armed before the change");
    assert!(state.chats.contains_key("c2"));
    apply_ok(&mut state, 14 + 2 * HOT_MS, Op::Tick);
    assert!(!state.chats.contains_key("c2"));
}

#[test]
fn validate_catches_work_that_never_leaves_memory() {
    let mut state = with_retention();
    apply_ok(&mut state, 10, start("c1", "r1"));
    apply_ok(&mut state, 11, end("c1"));
    let mut broken = state.clone();
    broken
        .timers
        .retain(|(_, t)| !matches!(t, Timer::Retire(_)));
    assert!(broken.validate().is_err());
    let mut broken = state.clone();
    broken.requests.insert("chat:other".into(), "c1".into());
    assert!(broken.validate().is_err());
}

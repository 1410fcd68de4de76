//! Golden fixtures: log entries and a snapshot written by the release that introduced format 1,
//! committed under `raft/tests/fixtures/format-1/`, and the same entries in log format 2 (the
//! binary encoding) under `format-2/`. Every later release must decode them and reach the same
//! state, so a change to the log or snapshot format that would break a rolling upgrade fails
//! here. `PARLEY_WRITE_FIXTURES=<format>` writes those of one format (only ever for a new
//! format's directory: fixtures of a released format never change).

use std::path::PathBuf;

use openraft::entry::RaftEntry;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::{CommittedLeaderIdOf, EntryOf};
use parley_storage::{Db, DbOptions, StateMachineStore};
use serde::{Deserialize, Serialize};

use super::*;
use crate::types::{LogId, TypeConfig};

type Entry = EntryOf<TypeConfig>;

fn fixtures(format: u32) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/format-{format}"))
}

/// Whether this run writes the fixtures of `format`.
fn writes_fixtures(format: u32) -> bool {
    std::env::var("PARLEY_WRITE_FIXTURES").is_ok_and(|v| v == format.to_string())
}

fn log_id(index: u64) -> LogId {
    LogId::new(
        CommittedLeaderIdOf::<TypeConfig> {
            term: 1,
            node_id: 1,
        },
        index,
    )
}

/// What the fixtures must decode to.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Expected {
    /// The state's digest after every entry.
    digest: String,
    /// The index of the last entry (the snapshot covers it).
    last_index: u64,
    /// The texts of chat `c1`'s messages, in order.
    c1_texts: Vec<String>,
}

/// A day of the contact center in six entries: the directory, a chat, an agent taking it, the
/// chat's end and survey, a callback, timers and settings; in log format `format`.
fn script(format: u32) -> Vec<Entry> {
    let batches: Vec<(u64, Vec<Op>)> = vec![
        (1_000, vec![Op::SeedDirectory(directory())]),
        (
            2_000,
            vec![start("c1", "r1"), post("c1", "m1", "hello, I need help")],
        ),
        (
            3_000,
            vec![
                Op::Login(Login {
                    agent_id: "alice".into(),
                    session_id: "s-alice".into(),
                }),
                Op::SetAvailability(SetAvailability {
                    session: session("alice"),
                    channels: BTreeMap::from([(Channel::Chat, true), (Channel::Callback, true)]),
                    reason: None,
                }),
            ],
        ),
        (
            4_000,
            vec![
                Op::Accept(action("alice", "c1")),
                post_as(
                    "c1",
                    Participant::Agent {
                        agent_id: "alice".into(),
                    },
                    "a1",
                    "hello, how can I help?",
                ),
            ],
        ),
        (
            5_000,
            vec![
                Op::EndChat(EndChat {
                    chat_id: "c1".into(),
                    by: Participant::Customer,
                }),
                Op::SubmitSurvey(SubmitSurvey {
                    chat_id: "c1".into(),
                    rating: 4,
                    comment: "quick".into(),
                }),
                Op::Complete(Complete {
                    action: action("alice", "c1"),
                    outcome: None,
                }),
            ],
        ),
        (
            6_000,
            vec![
                Op::RequestCallback(RequestCallback {
                    activity_id: "cb1".into(),
                    request_id: "q1".into(),
                    queue_id: "callbacks".into(),
                    name: "Dan".into(),
                    phone: "+33123456789".into(),
                    requested_at_ms: 60_000,
                }),
                Op::Tick,
                Op::SetRetention(Retention::default()),
                Op::SetClusterVersion { version: 1 },
            ],
        ),
    ];
    batches
        .into_iter()
        .enumerate()
        .map(|(i, (at, ops))| {
            let commands = ops.into_iter().map(|op| command(at, op)).collect();
            Entry::new_normal(log_id(i as u64 + 1), Request::in_format(format, commands))
        })
        .collect()
}

fn apply_all(entries: &[Entry]) -> State {
    let mut state = State::default();
    for entry in entries {
        if let openraft::EntryPayload::Normal(request) = &entry.payload {
            <State as parley_storage::Machine>::check_request(request)
                .unwrap_or_else(|(format, reads)| panic!("format {format}: {reads}"));
            state.apply_request(request);
        }
    }
    state
}

fn expected(state: &State, last_index: u64) -> Expected {
    Expected {
        digest: state.digest().expect("a digest"),
        last_index,
        c1_texts: state
            .chat_events("c1", 0, 100)
            .unwrap_or_default()
            .iter()
            .filter_map(|e| match &e.body {
                crate::state::EventBody::Message { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect(),
    }
}

/// The state a real store's snapshot file holds after applying `entries`: the JSON of its
/// state section.
async fn snapshot_bytes(entries: Vec<Entry>) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = Db::open(dir.path(), DbOptions::default()).expect("a database");
    let mut store = StateMachineStore::<TypeConfig, State>::open(db)
        .await
        .expect("a store");
    store.apply_entries(entries).await.expect("applying");
    let mut builder = store.get_snapshot_builder().await;
    let file = builder.build_snapshot().await.expect("a snapshot").snapshot;
    let mut frames = file.frames().expect("a snapshot file");
    let mut json = Vec::new();
    std::io::Read::read_to_end(
        &mut frames.section_reader().expect("its state section"),
        &mut json,
    )
    .expect("reading the state section");
    json
}

fn read(format: u32, name: &str) -> Vec<u8> {
    let path = fixtures(format).join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (fixtures are committed; PARLEY_WRITE_FIXTURES=<format> writes those of a \
             new format)",
            path.display()
        )
    })
}

#[tokio::test]
async fn format_1_fixtures_decode_and_reach_the_same_state() {
    if writes_fixtures(1) {
        let entries = script(1);
        let state = apply_all(&entries);
        let dir = fixtures(1);
        std::fs::create_dir_all(&dir).expect("the fixture directory");
        std::fs::write(dir.join("entries.json"), pretty(&entries)).expect("entries.json");
        std::fs::write(dir.join("snapshot.json"), snapshot_bytes(entries).await)
            .expect("snapshot.json");
        std::fs::write(dir.join("expected.json"), pretty(&expected(&state, 6)))
            .expect("expected.json");
    }
    let want: Expected = serde_json::from_slice(&read(1, "expected.json")).expect("expected.json");

    // The entries decode, are of a format this release applies, and reach the recorded state.
    let entries: Vec<Entry> =
        serde_json::from_slice(&read(1, "entries.json")).expect("entries.json");
    // As the log store reads them back.
    for entry in &entries {
        let stored = crate::codec::encode_entry(entry).expect("encoding");
        assert_eq!(stored.first(), Some(&b'{'), "format 1 is stored as JSON");
        assert_eq!(
            &crate::codec::decode::<Entry>(&stored).expect("decoding"),
            entry
        );
    }
    assert_eq!(entries.len() as u64, want.last_index);
    let state = apply_all(&entries);
    assert_eq!(expected(&state, want.last_index), want);
    state.validate().expect("the state's invariants");
    assert!(!want.c1_texts.is_empty(), "the fixture holds no messages");

    // The snapshot decodes to the same state at the same log id.
    let (format, last, machine) =
        parley_storage::decode_snapshot::<TypeConfig, State>(&read(1, "snapshot.json"))
            .expect("snapshot.json decodes");
    assert_eq!(format, 1);
    assert_eq!(last.map(|l| l.index), Some(want.last_index));
    assert_eq!(machine.digest().expect("a digest"), want.digest);
}

/// The entries as the log store keeps them, one after another, each after its length (4 bytes,
/// big-endian).
fn stored_entries(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let bytes = crate::codec::encode_entry(entry).expect("encoding");
        out.extend_from_slice(
            &u32::try_from(bytes.len())
                .expect("a small entry")
                .to_be_bytes(),
        );
        out.extend_from_slice(&bytes);
    }
    out
}

/// The entries [`stored_entries`] wrote, each still encoded.
fn split_stored(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some((head, rest)) = bytes.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*head) as usize;
        assert!(rest.len() >= len, "a truncated fixture");
        out.push(rest[..len].to_vec());
        bytes = &rest[len..];
    }
    assert!(bytes.is_empty(), "trailing bytes in the fixture");
    out
}

#[tokio::test]
async fn format_2_fixtures_decode_and_reach_the_same_state() {
    if writes_fixtures(2) {
        let entries = script(2);
        let state = apply_all(&entries);
        let dir = fixtures(2);
        std::fs::create_dir_all(&dir).expect("the fixture directory");
        std::fs::write(dir.join("entries.bin"), stored_entries(&entries)).expect("entries.bin");
        std::fs::write(dir.join("expected.json"), pretty(&expected(&state, 6)))
            .expect("expected.json");
    }
    let want: Expected = serde_json::from_slice(&read(2, "expected.json")).expect("expected.json");
    let stored = split_stored(&read(2, "entries.bin"));
    assert_eq!(stored.len() as u64, want.last_index);
    let entries: Vec<Entry> = stored
        .iter()
        .map(|bytes| {
            assert_eq!(bytes.first(), Some(&crate::codec::BINARY_FORMAT));
            crate::codec::decode(bytes).expect("a format 2 entry decodes")
        })
        .collect();
    for entry in &entries {
        let openraft::EntryPayload::Normal(request) = &entry.payload else {
            panic!("the script holds normal entries only");
        };
        assert_eq!(request.format, 2);
    }
    let state = apply_all(&entries);
    assert_eq!(expected(&state, want.last_index), want);
    state.validate().expect("the state's invariants");

    // The same commands as format 1, so the same state: the encoding changed, nothing else.
    let format_1: Expected =
        serde_json::from_slice(&read(1, "expected.json")).expect("expected.json");
    assert_eq!(want, format_1);
    // And this release encodes them to the very bytes the fixture holds.
    assert_eq!(stored_entries(&script(2)), read(2, "entries.bin"));
}

#[tokio::test]
async fn data_of_a_newer_format_is_refused_not_misread() {
    // A log entry of a format this release does not read stops the store before anything of
    // its batch is applied.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = Db::open(dir.path(), DbOptions::default()).expect("a database");
    let store = StateMachineStore::<TypeConfig, State>::open(db)
        .await
        .expect("a store");
    let mut newer = Request::new(vec![command(1_000, Op::SeedDirectory(directory()))]);
    newer.format = crate::version::LOG_FORMAT + 1;
    let batch = vec![
        Entry::new_normal(log_id(1), Request::new(vec![command(1_000, Op::Tick)])),
        Entry::new_normal(log_id(2), newer),
    ];
    let error = store.apply_entries(batch).await.expect_err("refused");
    assert!(
        matches!(error, parley_storage::StoreError::Format { format, .. } if format == crate::version::LOG_FORMAT + 1),
        "{error}"
    );
    assert_eq!(store.read(|_, applied| applied.cloned()), None);
    assert!(store.read(|state, _| state.queues.is_empty()));

    // A snapshot of a newer format is refused by name, even where its machine would decode.
    let mut snapshot: serde_json::Value =
        serde_json::from_slice(&read(1, "snapshot.json")).expect("snapshot.json");
    snapshot["format"] = serde_json::json!(crate::version::SNAPSHOT_FORMAT + 1);
    let bytes = serde_json::to_vec(&snapshot).expect("encoding");
    let error = parley_storage::decode_snapshot::<TypeConfig, State>(&bytes)
        .map(|_| ())
        .expect_err("refused");
    assert!(
        matches!(error, parley_storage::StoreError::Format { .. }),
        "{error}"
    );
}

/// `value` as pretty JSON with a final newline, as the fixture files hold it.
fn pretty<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("encoding a fixture");
    bytes.push(b'\n');
    bytes
}

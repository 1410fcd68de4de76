//! Backups: a cut of a store restores, in an empty database, to the same machine, log position
//! and archive; a database that holds anything is refused, and so are bytes that are not a
//! whole backup.

mod common;

use common::{fresh, lid, membership, put, KvConfig, KvMachine, Log, Sm, Vote};
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::RaftSnapshotBuilder;
use parley_storage::backup::restore;
use parley_storage::snapshot_file::{FrameReader, FrameWriter, Section};
use parley_storage::{DbOptions, SnapshotCut, StoreError};
use std::io::{Read, Write};

type Cut = SnapshotCut<KvConfig, KvMachine>;

/// A store with a membership, three keys, one of them retired to the archive.
async fn source() -> (tempfile::TempDir, Sm) {
    let (dir, db) = fresh(DbOptions::default());
    let sm = Sm::open(db).await.unwrap();
    sm.apply_entries(vec![
        membership(2, 1, &[1, 2, 3]),
        put(2, 2, "a", "1"),
        put(2, 3, "b", "2"),
        put(2, 4, "c", "3"),
        put(2, 5, "retire:a", "9000"),
    ])
    .await
    .unwrap();
    (dir, sm)
}

#[tokio::test]
async fn a_cut_restores_to_the_same_machine_position_and_archive() {
    let (_src, sm) = source().await;
    let cut = sm.cut().await.unwrap();
    assert_eq!(cut.last_applied, lid(2, 5));
    assert_eq!(cut.archive.len(), 1, "the retired key is in the archive");
    let bytes = cut.to_bytes().unwrap();
    let decoded = Cut::from_bytes(&bytes).unwrap();
    assert_eq!(decoded.machine, cut.machine);
    assert_eq!(decoded.last_membership, cut.last_membership);

    let (dir, db) = fresh(DbOptions::default());
    let vote = Vote::new(2, 1);
    restore(&db, decoded, vote).await.unwrap();
    drop(db);

    let db = parley_storage::Db::open(dir.path(), DbOptions::default()).unwrap();
    let mut restored = Sm::open(db.clone()).await.unwrap();
    let (applied, stored_membership) = restored.applied_state().await.unwrap();
    assert_eq!(applied, Some(lid(2, 5)));
    assert_eq!(stored_membership, cut.last_membership);
    assert_eq!(restored.read(|m, _| m.clone()).data, cut.machine.data);
    assert_eq!(restored.archived("a").await.unwrap().as_deref(), Some("1"));
    // The snapshot a new member of the restored cluster receives carries the archive too.
    let current = restored.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.last_log_id, Some(lid(2, 5)));
    let sent = Cut::from_bytes(&current.snapshot.read_all().unwrap()).unwrap();
    assert_eq!(sent.archive, cut.archive);

    let mut log = Log::new(db);
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(lid(2, 5)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(lid(2, 5)));
    assert_eq!(
        state.last_log_id,
        Some(lid(2, 5)),
        "the next entry follows the cut"
    );

    // The restored store goes on: entries after the cut apply on top of it.
    restored
        .apply_entries(vec![put(3, 6, "d", "4")])
        .await
        .unwrap();
    assert_eq!(restored.read(|m, _| m.last_index), 6);
    let built = restored
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(built.meta.last_log_id, Some(lid(3, 6)));
}

#[tokio::test]
async fn a_database_holding_anything_is_not_restored_into() {
    let (_src, sm) = source().await;
    let cut = sm.cut().await.unwrap();

    // A log entry alone is enough to refuse.
    let (_dir, db) = fresh(DbOptions::default());
    let mut log = Log::new(db.clone());
    log.save_vote(&Vote::new(1, 1)).await.unwrap();
    let refused = restore(&db, cut.clone(), Vote::new(2, 1)).await;
    assert!(
        matches!(refused, Err(StoreError::NotEmpty { .. })),
        "{refused:?}"
    );

    // Restoring twice into one database: the second is refused and the first stays.
    let (_dir, db) = fresh(DbOptions::default());
    restore(&db, cut.clone(), Vote::new(2, 1)).await.unwrap();
    let refused = restore(&db, cut, Vote::new(2, 1)).await;
    assert!(
        matches!(refused, Err(StoreError::NotEmpty { .. })),
        "{refused:?}"
    );
    let restored = Sm::open(db).await.unwrap();
    assert_eq!(restored.read(|m, _| m.data.len()), 2);
}

#[tokio::test]
async fn what_is_not_a_whole_backup_is_refused() {
    // An empty store has nothing to cut.
    let (_dir, db) = fresh(DbOptions::default());
    let empty = Sm::open(db).await.unwrap();
    assert!(matches!(empty.cut().await, Err(StoreError::Empty { .. })));

    // A node's own persisted snapshot leaves its archive out: not a backup.
    let (_src, mut sm) = source().await;
    let own = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let refused = Cut::from_bytes(&own.snapshot.read_all().unwrap());
    assert!(
        matches!(&refused, Err(StoreError::Corrupt { what }) if what.contains("archive")),
        "{refused:?}"
    );

    // Bytes of a newer snapshot format name their format.
    let cut = sm.cut().await.unwrap();
    let bytes = cut.to_bytes().unwrap();
    let mut frames = FrameReader::new(&bytes[..]).unwrap();
    let mut state: serde_json::Value =
        serde_json::from_reader(frames.section_reader().unwrap()).unwrap();
    let mut archive = Vec::new();
    frames
        .section_reader()
        .unwrap()
        .read_to_end(&mut archive)
        .unwrap();
    frames.finish().unwrap();
    state["format"] = serde_json::json!(99);
    let mut out = FrameWriter::new(Vec::new()).unwrap();
    serde_json::to_writer(&mut out, &state).unwrap();
    out.start(Section::Archive).unwrap();
    out.write_all(&archive).unwrap();
    let (newer, _) = out.finish().unwrap();
    let refused = Cut::from_bytes(&newer);
    assert!(
        matches!(refused, Err(StoreError::Format { format: 99, .. })),
        "{refused:?}"
    );
    // So do those of a cut as JSON, as cuts were before snapshot files, which still decode.
    state["archive"] = serde_json::from_slice(&archive).unwrap();
    state["format"] = serde_json::json!(cut.format);
    let legacy = Cut::from_bytes(&serde_json::to_vec(&state).unwrap()).unwrap();
    assert_eq!(legacy.archive, cut.archive);
    assert_eq!(legacy.machine.data, cut.machine.data);
    state["format"] = serde_json::json!(99);
    let refused = Cut::from_bytes(&serde_json::to_vec(&state).unwrap());
    assert!(
        matches!(refused, Err(StoreError::Format { format: 99, .. })),
        "{refused:?}"
    );
    // A damaged cut is refused, never misread.
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 1;
    let refused = Cut::from_bytes(&damaged);
    assert!(
        matches!(&refused, Err(StoreError::SnapshotFile { source, .. }) if source.kind() == std::io::ErrorKind::InvalidData),
        "{refused:?}"
    );

    // A membership newer than the cut is refused at restore.
    let mut broken = cut;
    broken.last_membership = openraft::StoredMembership::new(
        Some(lid(2, 9)),
        broken.last_membership.membership().clone(),
    );
    let (_dir, db) = fresh(DbOptions::default());
    let refused = restore(&db, broken, Vote::new(2, 1)).await;
    assert!(
        matches!(refused, Err(StoreError::Corrupt { .. })),
        "{refused:?}"
    );
}

//! Persistence, boundary and corruption tests of the log store and the state-machine store.

mod common;

use std::collections::BTreeMap;

use common::{
    blank, fresh, lid, membership, put, snapshot_file, Entry, Log, Sm, SnapshotMeta,
    StoredMembership, Vote,
};
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{BasicNode, Membership, RaftSnapshotBuilder, StorageHelper};
use parley_storage::{AppliedState, Db, DbOptions, FsyncPolicy, IoMode, StoreError};

fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

fn voters(ids: &[u64]) -> Membership<u64, BasicNode> {
    Membership::new_with_defaults(vec![ids.iter().copied().collect()], [])
}

#[tokio::test]
async fn log_vote_and_committed_survive_reopen() {
    let (dir, db) = fresh(DbOptions::default());
    let entries = vec![
        blank(1, 1),
        membership(1, 2, &[1, 2, 3]),
        put(1, 3, "a", "1"),
        put(2, 4, "b", "2"),
        put(2, 5, "a", "3"),
    ];
    {
        let mut log = Log::new(db);
        log.blocking_append(entries.clone()).await.unwrap();
        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        log.save_committed(Some(lid(2, 4))).await.unwrap();
    }

    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let mut log = Log::new(db);
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(Vote::new_committed(2, 1))
    );
    assert_eq!(log.read_committed().await.unwrap(), Some(lid(2, 4)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, None);
    assert_eq!(state.last_log_id, Some(lid(2, 5)));
    assert_eq!(log.try_get_log_entries(..).await.unwrap(), entries);
    assert_eq!(log.try_get_log_entries(2..4).await.unwrap(), entries[1..3]);
    assert_eq!(log.try_get_log_entries(4..=9).await.unwrap(), entries[3..]);
}

#[tokio::test]
async fn empty_store_reads_nothing() {
    let (_dir, db) = fresh(DbOptions::default());
    let mut log = Log::new(db);
    assert_eq!(log.read_vote().await.unwrap(), None);
    assert_eq!(log.read_committed().await.unwrap(), None);
    let state = log.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (None, None));
    assert!(log.try_get_log_entries(..).await.unwrap().is_empty());
}

#[tokio::test]
async fn save_committed_none_reads_back_none() {
    let (_dir, db) = fresh(DbOptions::default());
    let mut log = Log::new(db);
    log.save_committed(Some(lid(1, 3))).await.unwrap();
    log.save_committed(None).await.unwrap();
    assert_eq!(log.read_committed().await.unwrap(), None);
}

#[tokio::test]
async fn purge_and_truncate_boundaries() {
    let (dir, db) = fresh(DbOptions::default());
    let mut log = Log::new(db);
    log.blocking_append((0..=10).map(|i| blank(1, i)))
        .await
        .unwrap();

    // Purge is inclusive: 0..=3 go, 4 stays.
    log.purge(lid(1, 3)).await.unwrap();
    assert_eq!(
        indexes(&log.try_get_log_entries(..).await.unwrap()),
        (4..=10).collect::<Vec<_>>()
    );
    assert!(log.try_get_log_entries(0..4).await.unwrap().is_empty());
    assert_eq!(indexes(&log.try_get_log_entries(3..5).await.unwrap()), [4]);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(lid(1, 3)));
    assert_eq!(state.last_log_id, Some(lid(1, 10)));

    // Truncation keeps the entry it is given: 8.. go, 7 stays.
    log.truncate_after(Some(lid(1, 7))).await.unwrap();
    assert_eq!(
        indexes(&log.try_get_log_entries(..).await.unwrap()),
        [4, 5, 6, 7]
    );
    assert_eq!(
        log.get_log_state().await.unwrap().last_log_id,
        Some(lid(1, 7))
    );

    // Truncating everything left falls back to the last purged id.
    log.truncate_after(Some(lid(1, 3))).await.unwrap();
    assert!(log.try_get_log_entries(..).await.unwrap().is_empty());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(lid(1, 3)));
    assert_eq!(state.last_log_id, Some(lid(1, 3)));

    // The log continues after a truncation with a new term.
    log.blocking_append([blank(2, 4), blank(2, 5)])
        .await
        .unwrap();
    assert_eq!(
        log.get_log_state().await.unwrap().last_log_id,
        Some(lid(2, 5))
    );

    // Purging past the end leaves no entries; the purged id becomes the last id.
    log.purge(lid(2, 20)).await.unwrap();
    assert!(log.try_get_log_entries(..).await.unwrap().is_empty());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(lid(2, 20)));
    assert_eq!(state.last_log_id, Some(lid(2, 20)));
    drop(log);

    // The purge pointer is durable.
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let mut log = Log::new(db);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(lid(2, 20)));
    assert_eq!(state.last_log_id, Some(lid(2, 20)));
}

#[tokio::test]
async fn extreme_indexes_are_handled() {
    let (_dir, db) = fresh(DbOptions::default());
    let mut log = Log::new(db);
    log.blocking_append([blank(1, u64::MAX - 1), blank(1, u64::MAX)])
        .await
        .unwrap();
    assert_eq!(
        indexes(&log.try_get_log_entries(u64::MAX - 1..).await.unwrap()),
        [u64::MAX - 1, u64::MAX]
    );
    assert_eq!(
        indexes(&log.try_get_log_entries(..=u64::MAX).await.unwrap()),
        [u64::MAX - 1, u64::MAX]
    );
    // Nothing follows the largest index.
    log.truncate_after(Some(lid(1, u64::MAX))).await.unwrap();
    assert_eq!(
        log.get_log_state().await.unwrap().last_log_id,
        Some(lid(1, u64::MAX))
    );
    log.truncate_after(Some(lid(1, u64::MAX - 1)))
        .await
        .unwrap();
    assert_eq!(
        log.get_log_state().await.unwrap().last_log_id,
        Some(lid(1, u64::MAX - 1))
    );
    log.purge(lid(1, u64::MAX)).await.unwrap();
    assert!(log.try_get_log_entries(..).await.unwrap().is_empty());
}

#[tokio::test]
async fn apply_updates_machine_membership_and_watch() {
    let (_dir, db) = fresh(DbOptions::default());
    let mut sm = Sm::open(db).await.unwrap();
    let mut rx = sm.subscribe();
    assert_eq!(*rx.borrow_and_update(), AppliedState::default());

    let responses = sm
        .apply_entries(vec![
            blank(1, 1),
            membership(1, 2, &[1, 2]),
            put(1, 3, "a", "1"),
            put(1, 4, "a", "2"),
        ])
        .await
        .unwrap();
    assert_eq!(responses, [None, None, None, Some("1".to_string())]);

    assert!(rx.has_changed().unwrap());
    assert_eq!(rx.borrow_and_update().last_applied, Some(lid(1, 4)));
    sm.read(|m, applied| {
        assert_eq!(m.data, kv(&[("a", "2")]));
        assert_eq!(m.last_index, 4);
        assert_eq!(applied, Some(&lid(1, 4)));
    });
    let (applied, mem) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(lid(1, 4)));
    assert_eq!(mem, StoredMembership::new(Some(lid(1, 2)), voters(&[1, 2])));
}

#[tokio::test]
async fn snapshot_survives_reopen() {
    let (dir, db) = fresh(DbOptions::default());
    let built = {
        let mut sm = Sm::open(db).await.unwrap();
        assert!(sm.get_current_snapshot().await.unwrap().is_none());
        sm.apply_entries(vec![
            membership(1, 1, &[1, 2, 3]),
            put(1, 2, "x", "1"),
            put(2, 3, "y", "2"),
        ])
        .await
        .unwrap();
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(lid(2, 3)));
        snap
    };

    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let mut sm = Sm::open(db).await.unwrap();
    sm.read(|m, applied| {
        assert_eq!(m.data, kv(&[("x", "1"), ("y", "2")]));
        assert_eq!(applied, Some(&lid(2, 3)));
    });
    assert_eq!(sm.subscribe().borrow().last_applied, Some(lid(2, 3)));
    let (applied, mem) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(lid(2, 3)));
    assert_eq!(
        mem,
        StoredMembership::new(Some(lid(1, 1)), voters(&[1, 2, 3]))
    );

    let current = sm.get_current_snapshot().await.unwrap().expect("snapshot");
    assert_eq!(current.meta, built.meta);
    // The snapshot sent carries the archive besides what was built; the machine is the same.
    let (_other_dir, other_db) = fresh(DbOptions::default());
    let mut other = Sm::open(other_db).await.unwrap();
    other
        .install_snapshot(&current.meta, current.snapshot)
        .await
        .unwrap();
    assert_eq!(
        other.read(|m, _| m.clone()),
        sm.read(|m, _| m.clone()),
        "the snapshot of {} bytes built",
        built.snapshot.len()
    );
    // Nothing but the persisted snapshot's file is left in the directory: what the
    // transfer wrote has no name.
    assert_eq!(
        std::fs::read_dir(sm.snapshot_dir().path()).unwrap().count(),
        1
    );
}

/// The full recovery path: snapshot + committed log entries after it are re-applied by openraft.
#[tokio::test]
async fn restart_recovers_snapshot_plus_committed_log() {
    let (dir, db) = fresh(DbOptions::default());
    let entries = vec![
        membership(1, 1, &[1]),
        put(1, 2, "a", "1"),
        put(1, 3, "b", "2"),
        put(1, 4, "a", "3"),
        put(1, 5, "c", "4"),
    ];
    {
        let mut log = Log::new(db.clone());
        let mut sm = Sm::open(db).await.unwrap();
        log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        log.blocking_append(entries.clone()).await.unwrap();
        sm.apply_entries(entries[..3].to_vec()).await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        log.purge(lid(1, 2)).await.unwrap();
        sm.apply_entries(entries[3..].to_vec()).await.unwrap();
        log.save_committed(Some(lid(1, 5))).await.unwrap();
    }

    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let mut log = Log::new(db.clone());
    let mut sm = Sm::open(db).await.unwrap();
    sm.read(|m, applied| {
        assert_eq!(
            m.data,
            kv(&[("a", "1"), ("b", "2")]),
            "restored from snapshot"
        );
        assert_eq!(applied, Some(&lid(1, 3)));
    });
    StorageHelper::new(&mut log, &mut sm)
        .get_initial_state()
        .await
        .unwrap();
    sm.read(|m, applied| {
        assert_eq!(m.data, kv(&[("a", "3"), ("b", "2"), ("c", "4")]));
        assert_eq!(applied, Some(&lid(1, 5)));
    });
}

#[tokio::test]
async fn install_snapshot_from_another_store() {
    let (_dir_l, db_l) = fresh(DbOptions::default());
    let (dir_f, db_f) = fresh(DbOptions::default());
    let mut leader = Sm::open(db_l).await.unwrap();
    let mut follower = Sm::open(db_f).await.unwrap();

    leader
        .apply_entries(vec![
            membership(1, 1, &[1, 2]),
            put(1, 2, "k1", "v1"),
            put(1, 3, "k2", "v2"),
        ])
        .await
        .unwrap();
    let snap = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    follower
        .apply_entries(vec![put(1, 1, "stale", "x")])
        .await
        .unwrap();
    let mut rx = follower.subscribe();
    rx.borrow_and_update();

    follower
        .install_snapshot(&snap.meta, snap.snapshot.clone())
        .await
        .unwrap();

    let leader_machine = leader.read(|m, _| m.clone());
    let follower_machine = follower.read(|m, _| m.clone());
    assert_eq!(follower_machine, leader_machine);
    assert_eq!(
        follower.applied_state().await.unwrap(),
        leader.applied_state().await.unwrap()
    );
    assert!(rx.has_changed().unwrap());
    assert_eq!(rx.borrow_and_update().last_applied, Some(lid(1, 3)));
    let current = follower
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("snapshot");
    assert_eq!(current.meta, snap.meta);
    drop(follower);

    // The installed snapshot is what a restart restores.
    let db_f = Db::open(dir_f.path(), DbOptions::default()).unwrap();
    let follower = Sm::open(db_f).await.unwrap();
    assert_eq!(follower.read(|m, _| m.clone()), leader_machine);
}

#[tokio::test]
async fn corrupt_snapshot_bytes_are_rejected() {
    let (_dir, db) = fresh(DbOptions::default());
    let mut sm = Sm::open(db).await.unwrap();
    sm.apply_entries(vec![put(1, 1, "keep", "me")])
        .await
        .unwrap();

    let meta = SnapshotMeta {
        last_log_id: Some(lid(1, 5)),
        last_membership: StoredMembership::default(),
    };
    let garbage = snapshot_file(&sm, b"{\"last_applied\": not json");
    assert!(sm.install_snapshot(&meta, garbage).await.is_err());

    // Well-formed bytes that disagree with the meta are rejected too.
    let (_dir2, other_db) = fresh(DbOptions::default());
    let mut other = Sm::open(other_db).await.unwrap();
    other
        .apply_entries(vec![put(1, 3, "x", "y")])
        .await
        .unwrap();
    let snap = other
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mismatched = snap.snapshot;
    assert!(sm.install_snapshot(&meta, mismatched).await.is_err());

    // Nothing changed and nothing was persisted.
    sm.read(|m, applied| {
        assert_eq!(m.data, kv(&[("keep", "me")]));
        assert_eq!(applied, Some(&lid(1, 1)));
    });
    assert!(sm.get_current_snapshot().await.unwrap().is_none());
}

/// The snapshot files in `dir`'s snapshot directory, by name.
fn snapshot_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Opens the store in `dir`, which must fail, and waits for the database to close.
async fn open_fails(dir: &std::path::Path) -> StoreError {
    let db = Db::open(dir, DbOptions::default()).unwrap();
    let closed = db.close_watch();
    let err = Sm::open(db).await.unwrap_err();
    assert!(
        closed.wait(std::time::Duration::from_secs(10)),
        "the database closes"
    );
    err
}

#[tokio::test]
async fn corrupt_persisted_snapshot_fails_open() {
    let (dir, db) = fresh(DbOptions::default());
    {
        let mut sm = Sm::open(db).await.unwrap();
        sm.apply_entries(vec![put(1, 1, "a", "b")]).await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
    }
    let files = snapshot_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let good = std::fs::read(&files[0]).unwrap();

    // A byte flipped behind the store's back, anywhere in the file.
    for at in [0, 13, good.len() / 2, good.len() - 1] {
        let mut damaged = good.clone();
        damaged[at] ^= 0x10;
        std::fs::write(&files[0], &damaged).unwrap();
        let err = open_fails(dir.path()).await;
        assert!(
            matches!(&err, StoreError::SnapshotFile { source, .. } if source.kind() == std::io::ErrorKind::InvalidData),
            "a flip at byte {at}: {err:?}"
        );
    }

    // Cut short: the length recorded says so before the frames do.
    std::fs::write(&files[0], &good[..good.len() - 1]).unwrap();
    let err = open_fails(dir.path()).await;
    assert!(matches!(err, StoreError::Corrupt { .. }), "got {err:?}");

    // Gone: the open fails rather than starting empty.
    std::fs::remove_file(&files[0]).unwrap();
    let err = open_fails(dir.path()).await;
    assert!(matches!(err, StoreError::Io { .. }), "got {err:?}");
    std::fs::write(&files[0], &good).unwrap();
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let closed = db.close_watch();
    let sm = Sm::open(db).await.unwrap();
    sm.read(|m, _| assert_eq!(m.data, kv(&[("a", "b")])));
    drop(sm);
    assert!(closed.wait(std::time::Duration::from_secs(10)));

    // A meta that names no file is corruption as well.
    {
        let raw = rocksdb::DB::open_cf(
            &rocksdb::Options::default(),
            dir.path(),
            ["meta", "logs", "snapshot", "archive", "island_journal"],
        )
        .unwrap();
        let cf = raw.cf_handle("snapshot").unwrap();
        raw.delete_cf(cf, b"file").unwrap();
    }
    let err = open_fails(dir.path()).await;
    assert!(matches!(err, StoreError::Corrupt { .. }), "got {err:?}");
}

#[tokio::test]
async fn a_snapshot_replaces_its_file_and_open_clears_what_a_crash_left() {
    let (dir, db) = fresh(DbOptions::default());
    {
        let mut sm = Sm::open(db).await.unwrap();
        sm.apply_entries(vec![put(1, 1, "a", "1")]).await.unwrap();
        let first = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let before = snapshot_files(dir.path());
        assert_eq!(before.len(), 1);
        sm.apply_entries(vec![put(1, 2, "b", "2")]).await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let after = snapshot_files(dir.path());
        assert_eq!(after.len(), 1, "the replaced file is removed: {after:?}");
        assert_ne!(after, before);
        // The first snapshot's handle still reads its file, removed or not.
        let (_other, other_db) = fresh(DbOptions::default());
        let mut other = Sm::open(other_db).await.unwrap();
        other
            .install_snapshot(&first.meta, first.snapshot)
            .await
            .unwrap();
        other.read(|m, _| assert_eq!(m.data, kv(&[("a", "1")])));
        assert_eq!(
            sm.snapshot_bytes(),
            std::fs::metadata(&after[0]).unwrap().len()
        );
    }
    // What a crash leaves: a file half-written and a whole one never recorded.
    let kept = snapshot_files(dir.path());
    let snapshots = dir.path().join("snapshots");
    std::fs::write(snapshots.join(".tmp-half"), b"PRLYSNAP").unwrap();
    std::fs::copy(
        &kept[0],
        snapshots.join("00000000000000000009-0000000000000001.snapshot"),
    )
    .unwrap();
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let sm = Sm::open(db).await.unwrap();
    assert_eq!(snapshot_files(dir.path()), kept);
    sm.read(|m, applied| {
        assert_eq!(m.data, kv(&[("a", "1"), ("b", "2")]));
        assert_eq!(applied, Some(&lid(1, 2)));
    });
}

#[tokio::test]
async fn older_snapshot_never_replaces_newer_one() {
    let (_dir_old, db_old) = fresh(DbOptions::default());
    let mut old = Sm::open(db_old).await.unwrap();
    old.apply_entries(vec![put(1, 1, "a", "old")])
        .await
        .unwrap();
    let old_snap = old
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    let (_dir, db) = fresh(DbOptions::default());
    let mut sm = Sm::open(db).await.unwrap();
    sm.apply_entries(vec![put(1, 1, "a", "old"), put(1, 2, "a", "new")])
        .await
        .unwrap();
    let new_snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    let buf = old_snap.snapshot;
    let err = sm.install_snapshot(&old_snap.meta, buf).await;
    assert!(err.is_err(), "installing an older snapshot must fail");
    sm.read(|m, applied| {
        assert_eq!(m.data, kv(&[("a", "new")]));
        assert_eq!(applied, Some(&lid(1, 2)));
    });
    let current = sm.get_current_snapshot().await.unwrap().expect("snapshot");
    assert_eq!(current.meta, new_snap.meta);
}

#[tokio::test]
async fn snapshots_at_one_position_are_identical() {
    let (_dir, db) = fresh(DbOptions::default());
    let mut sm = Sm::open(db).await.unwrap();
    sm.apply_entries(vec![blank(3, 7), put(3, 8, "k", "v")])
        .await
        .unwrap();
    let a = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let b = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(a.meta, b.meta);
    assert_eq!(a.meta.last_log_id, Some(lid(3, 8)));
    assert_eq!(
        a.snapshot.read_all().unwrap(),
        b.snapshot.read_all().unwrap(),
        "a snapshot is a function of the log position it covers"
    );
}

/// The simulator runs everything on one thread with `IoMode::Inline`.
#[tokio::test(flavor = "current_thread")]
async fn inline_io_on_current_thread_runtime() {
    let (_dir, db) = fresh(DbOptions {
        fsync: FsyncPolicy::Always,
        io_mode: IoMode::Inline,
    });
    assert_eq!(db.options().io_mode, IoMode::Inline);
    let mut log = Log::new(db.clone());
    let mut sm = Sm::open(db).await.unwrap();
    log.blocking_append([put(1, 1, "a", "1")]).await.unwrap();
    let entries = log.try_get_log_entries(1..2).await.unwrap();
    sm.apply_entries(entries).await.unwrap();
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(sm.read(|m, _| m.data.clone()), kv(&[("a", "1")]));
}

#[tokio::test]
async fn fsync_never_still_persists_across_clean_reopen() {
    let opts = DbOptions {
        fsync: FsyncPolicy::Never,
        io_mode: IoMode::Blocking,
    };
    let (dir, db) = fresh(opts);
    assert_eq!(db.options(), opts);
    Log::new(db)
        .blocking_append([blank(1, 1), blank(1, 2)])
        .await
        .unwrap();
    let db = Db::open(dir.path(), opts).unwrap();
    assert_eq!(
        Log::new(db).get_log_state().await.unwrap().last_log_id,
        Some(lid(1, 2))
    );
}

#[tokio::test]
async fn size_on_disk_grows_with_data() {
    let (_dir, db) = fresh(DbOptions::default());
    let before = db.size_on_disk_bytes().unwrap();
    assert!(
        before > 0,
        "a fresh rocksdb has a manifest and options files"
    );
    let mut log = Log::new(db.clone());
    let value = "v".repeat(4096);
    log.blocking_append((1..=64).map(|i| put(1, i, "k", &value)))
        .await
        .unwrap();
    assert!(db.size_on_disk_bytes().unwrap() > before + 64 * 4096 / 2);
}

#[test]
fn open_creates_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/c");
    let db = Db::open(&nested, DbOptions::default()).unwrap();
    assert_eq!(db.options(), DbOptions::default());
    assert!(nested.join("CURRENT").exists());
}

#[test]
fn fsync_policy_serde_names() {
    assert_eq!(
        serde_json::to_string(&FsyncPolicy::Always).unwrap(),
        "\"always\""
    );
    assert_eq!(
        serde_json::from_str::<FsyncPolicy>("\"never\"").unwrap(),
        FsyncPolicy::Never
    );
    assert_eq!(DbOptions::default().fsync, FsyncPolicy::Always);
    assert_eq!(DbOptions::default().io_mode, IoMode::Blocking);
}

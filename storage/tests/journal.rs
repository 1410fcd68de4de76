//! The island journal: entries survive a reopen in order, positions are never reused (not after
//! a truncation, not after a restart), truncation removes exactly a prefix, reads are bounded.

mod common;

use common::fresh;
use parley_storage::{Db, DbOptions, Journal, JournalBounds};

fn entries(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{prefix}{i}").into_bytes())
        .collect()
}

#[tokio::test]
async fn appended_entries_survive_a_reopen_in_order() {
    let (dir, db) = fresh(DbOptions::default());
    let journal = Journal::open(db.clone()).unwrap();
    assert_eq!(journal.bounds(), JournalBounds::default());
    assert_eq!(journal.append(entries("a", 3)).await.unwrap(), 0..3);
    assert_eq!(journal.append(entries("b", 2)).await.unwrap(), 3..5);
    drop(journal);
    drop(db);

    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let journal = Journal::open(db).unwrap();
    assert_eq!(journal.bounds(), JournalBounds { first: 0, next: 5 });
    let read = journal.read(0, 100, usize::MAX).await.unwrap();
    let got: Vec<(u64, String)> = read
        .into_iter()
        .map(|e| (e.position, String::from_utf8(e.bytes).unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, "a0".to_owned()),
            (1, "a1".to_owned()),
            (2, "a2".to_owned()),
            (3, "b0".to_owned()),
            (4, "b1".to_owned()),
        ]
    );
}

#[tokio::test]
async fn positions_are_never_reused_after_truncation_and_restart() {
    let (dir, db) = fresh(DbOptions::default());
    let journal = Journal::open(db.clone()).unwrap();
    journal.append(entries("x", 4)).await.unwrap();
    journal.truncate_before(4).await.unwrap();
    assert_eq!(journal.bounds(), JournalBounds { first: 4, next: 4 });
    assert!(journal.bounds().is_empty());
    drop(journal);
    drop(db);

    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let journal = Journal::open(db).unwrap();
    assert_eq!(
        journal.bounds(),
        JournalBounds { first: 4, next: 4 },
        "an emptied journal still knows where it was"
    );
    assert_eq!(journal.append(entries("y", 1)).await.unwrap(), 4..5);
    let read = journal.read(0, 10, usize::MAX).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].position, 4);
}

#[tokio::test]
async fn truncation_removes_exactly_the_prefix_and_never_past_the_end() {
    let (_dir, db) = fresh(DbOptions::default());
    let journal = Journal::open(db).unwrap();
    journal.append(entries("e", 6)).await.unwrap();
    journal.truncate_before(2).await.unwrap();
    let positions: Vec<u64> = journal
        .read(0, 10, usize::MAX)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(positions, vec![2, 3, 4, 5]);
    // Truncating backwards is a no-op; past the end stops at the end.
    journal.truncate_before(1).await.unwrap();
    assert_eq!(journal.bounds(), JournalBounds { first: 2, next: 6 });
    journal.truncate_before(100).await.unwrap();
    assert_eq!(journal.bounds(), JournalBounds { first: 6, next: 6 });
    assert_eq!(journal.append(entries("f", 1)).await.unwrap(), 6..7);
}

#[tokio::test]
async fn reads_are_bounded_by_count_and_bytes_but_always_make_progress() {
    let (_dir, db) = fresh(DbOptions::default());
    let journal = Journal::open(db).unwrap();
    journal
        .append(vec![
            vec![1; 100],
            vec![2; 100],
            vec![3; 100],
            vec![4; 5000],
        ])
        .await
        .unwrap();
    assert_eq!(journal.read(0, 2, usize::MAX).await.unwrap().len(), 2);
    assert_eq!(journal.read(0, 10, 250).await.unwrap().len(), 2);
    let big = journal.read(3, 10, 10).await.unwrap();
    assert_eq!(
        big.len(),
        1,
        "an entry larger than the byte bound still comes back"
    );
    assert_eq!(big[0].bytes.len(), 5000);
    assert!(journal.read(4, 10, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn clones_share_positions() {
    let (_dir, db) = fresh(DbOptions::default());
    let journal = Journal::open(db).unwrap();
    let other = journal.clone();
    let (a, b) = tokio::join!(
        journal.append(entries("a", 50)),
        other.append(entries("b", 50))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!((a.end - a.start) + (b.end - b.start), 100);
    assert!(
        a.end <= b.start || b.end <= a.start,
        "{a:?} and {b:?} overlap"
    );
    assert_eq!(journal.bounds().next, 100);
}

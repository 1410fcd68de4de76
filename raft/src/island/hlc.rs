//! The hybrid logical clock that names island writes (Kulkarni et al., 2014).
//!
//! A [`Stamp`] is a wall-clock reading in milliseconds and a logical counter. [`Hlc::now`]
//! returns a stamp greater than every stamp this node issued before, also across restarts and
//! when the operating system's clock steps back: the wall part never goes below the highest
//! wall time issued, and the logical part counts while the physical clock is behind it.
//!
//! # Across restarts
//!
//! Before a stamp with a wall part above the persisted **upper bound** is issued, a new bound
//! [`HLC_PERSIST_AHEAD_MS`] ahead of it is written (synced) through the [`UpperBound`] store. A
//! restarted clock starts at the persisted bound, so it is ahead of everything it issued before
//! the crash; one synced write covers [`HLC_PERSIST_AHEAD_MS`] of stamps.
//!
//! # Remote stamps
//!
//! [`Hlc::observe`] folds in a stamp from another node (so causally later writes sort later)
//! unless it is further ahead of this node's physical clock than the maximum offset: a node
//! whose clock runs far ahead must not drag every clock it talks to along with it
//! (CockroachDB's rule).

use std::fmt;

use serde::{Deserialize, Serialize};

use parley_storage::{Db, StoreError};

/// How far ahead of the highest issued wall time the persisted upper bound is set, in ms.
pub const HLC_PERSIST_AHEAD_MS: u64 = 2_000;
/// The node-local key of the persisted upper bound.
const UPPER_BOUND_KEY: &str = "hlc_upper_ms";

/// One reading of a hybrid logical clock. Ordered by wall time, then the logical counter.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Stamp {
    /// Wall-clock part, ms since the Unix epoch.
    pub wall_ms: u64,
    /// Logical part: counts stamps issued at the same wall time.
    pub logical: u32,
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.wall_ms, self.logical)
    }
}

/// Why the clock refused to issue or take a stamp.
#[derive(Debug, thiserror::Error)]
pub enum HlcError {
    /// The upper bound could not be persisted; no stamp was issued.
    #[error("persisting the clock's upper bound")]
    Persist(#[source] StoreError),
    /// A remote stamp is further ahead of this node's clock than the maximum offset.
    #[error("remote clock {remote} is {ahead_ms} ms ahead of this node's (at most {max_offset_ms} ms allowed)")]
    AheadOfClock {
        /// The remote stamp.
        remote: Stamp,
        /// How far ahead of this node's physical clock it is.
        ahead_ms: u64,
        /// The allowed offset.
        max_offset_ms: u64,
    },
    /// The logical counter is exhausted at this wall time (billions of stamps in one
    /// millisecond, or a clock held back that long); no stamp was issued.
    #[error("the clock's logical counter is exhausted at wall time {wall_ms}")]
    Exhausted {
        /// The wall time it is stuck at.
        wall_ms: u64,
    },
}

/// Where a clock keeps its upper bound.
pub trait UpperBound {
    /// The persisted bound, if any.
    fn load(&self) -> Result<Option<u64>, StoreError>;
    /// Persists `upper_ms`, synced, before returning.
    fn store(&self, upper_ms: u64) -> Result<(), StoreError>;
}

impl UpperBound for Db {
    fn load(&self) -> Result<Option<u64>, StoreError> {
        self.local_u64(UPPER_BOUND_KEY)
    }

    fn store(&self, upper_ms: u64) -> Result<(), StoreError> {
        self.put_local_u64(UPPER_BOUND_KEY, upper_ms)
    }
}

/// A hybrid logical clock with a persisted upper bound. Its calls may write to disk: call them
/// off the async workers.
#[derive(Debug)]
pub struct Hlc<B> {
    bound: B,
    /// The highest stamp issued or observed.
    last: Stamp,
    /// The persisted upper bound of wall times issued.
    upper_ms: u64,
    max_offset_ms: u64,
}

impl<B: UpperBound> Hlc<B> {
    /// A clock that continues above the upper bound `bound` holds (from 0 if none).
    pub fn open(bound: B, max_offset_ms: u64) -> Result<Self, HlcError> {
        let upper_ms = bound.load().map_err(HlcError::Persist)?.unwrap_or(0);
        Ok(Self {
            bound,
            last: Stamp {
                wall_ms: upper_ms,
                logical: 0,
            },
            upper_ms,
            max_offset_ms,
        })
    }

    /// The highest stamp issued or observed so far.
    pub fn last(&self) -> Stamp {
        self.last
    }

    /// A new stamp, greater than every stamp issued or observed before; `physical_ms` is the
    /// operating system's clock now.
    pub fn now(&mut self, physical_ms: u64) -> Result<Stamp, HlcError> {
        let next = if physical_ms > self.last.wall_ms {
            Stamp {
                wall_ms: physical_ms,
                logical: 0,
            }
        } else {
            self.bumped(self.last)?
        };
        self.advance(next)?;
        Ok(next)
    }

    /// Folds in `remote`, a stamp from another node, so the next stamp issued here is greater
    /// than it; refused if it is more than the maximum offset ahead of `physical_ms`.
    pub fn observe(&mut self, remote: Stamp, physical_ms: u64) -> Result<(), HlcError> {
        let ahead_ms = remote.wall_ms.saturating_sub(physical_ms);
        if ahead_ms > self.max_offset_ms {
            return Err(HlcError::AheadOfClock {
                remote,
                ahead_ms,
                max_offset_ms: self.max_offset_ms,
            });
        }
        if remote > self.last {
            self.advance(remote)?;
        }
        Ok(())
    }

    /// `stamp` with its logical part one higher.
    fn bumped(&self, stamp: Stamp) -> Result<Stamp, HlcError> {
        let logical = stamp.logical.checked_add(1).ok_or(HlcError::Exhausted {
            wall_ms: stamp.wall_ms,
        })?;
        Ok(Stamp {
            wall_ms: stamp.wall_ms,
            logical,
        })
    }

    /// Makes `next` the last stamp, persisting a new upper bound first when it passes the old.
    fn advance(&mut self, next: Stamp) -> Result<(), HlcError> {
        if next.wall_ms > self.upper_ms {
            let upper_ms = next.wall_ms.saturating_add(HLC_PERSIST_AHEAD_MS);
            self.bound.store(upper_ms).map_err(HlcError::Persist)?;
            self.upper_ms = upper_ms;
        }
        self.last = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    use super::*;

    /// An upper bound in memory that counts its writes and can be made to fail.
    #[derive(Clone, Default)]
    struct Memory {
        upper: Rc<Cell<Option<u64>>>,
        writes: Rc<Cell<u32>>,
        fail: Rc<RefCell<bool>>,
    }

    impl UpperBound for Memory {
        fn load(&self) -> Result<Option<u64>, StoreError> {
            Ok(self.upper.get())
        }

        fn store(&self, upper_ms: u64) -> Result<(), StoreError> {
            if *self.fail.borrow() {
                return Err(StoreError::Corrupt {
                    what: "disk full".to_owned(),
                });
            }
            self.upper.set(Some(upper_ms));
            self.writes.set(self.writes.get() + 1);
            Ok(())
        }
    }

    #[test]
    fn stamps_increase_while_the_physical_clock_stands_still_or_steps_back() {
        let mut hlc = Hlc::open(Memory::default(), 500).expect("opens");
        let a = hlc.now(10_000).expect("stamp");
        let b = hlc.now(10_000).expect("stamp");
        let c = hlc.now(9_000).expect("stamp after a step back");
        let d = hlc.now(10_001).expect("stamp");
        assert_eq!(
            a,
            Stamp {
                wall_ms: 10_000,
                logical: 0
            }
        );
        assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
        assert_eq!(c.wall_ms, 10_000, "the wall part never goes back");
        assert_eq!(
            d,
            Stamp {
                wall_ms: 10_001,
                logical: 0
            }
        );
    }

    #[test]
    fn a_restarted_clock_starts_above_everything_it_issued_before() {
        let bound = Memory::default();
        let mut before = Vec::new();
        {
            let mut hlc = Hlc::open(bound.clone(), 500).expect("opens");
            for ms in [50_000, 50_400, 51_900, 51_999] {
                before.push(hlc.now(ms).expect("stamp"));
            }
        }
        // Restarted with its clock 45 s behind.
        let mut hlc = Hlc::open(bound.clone(), 500).expect("reopens");
        let after = hlc.now(5_000).expect("stamp");
        assert!(before.iter().all(|s| *s < after), "{before:?} then {after}");
    }

    #[test]
    fn one_persisted_bound_covers_a_window_of_stamps() {
        let bound = Memory::default();
        let mut hlc = Hlc::open(bound.clone(), 500).expect("opens");
        for ms in 0..HLC_PERSIST_AHEAD_MS {
            hlc.now(100_000 + ms).expect("stamp");
        }
        assert_eq!(bound.writes.get(), 1, "one write for the whole window");
        hlc.now(100_000 + HLC_PERSIST_AHEAD_MS + 1).expect("stamp");
        assert_eq!(bound.writes.get(), 2);
    }

    #[test]
    fn no_stamp_is_issued_past_a_bound_that_could_not_be_persisted() {
        let bound = Memory::default();
        let mut hlc = Hlc::open(bound.clone(), 500).expect("opens");
        let issued = hlc.now(1_000).expect("stamp");
        *bound.fail.borrow_mut() = true;
        // Within the persisted window: no write needed, still issued.
        assert!(hlc.now(1_500).is_ok());
        let err = hlc.now(1_000 + HLC_PERSIST_AHEAD_MS + 10).unwrap_err();
        assert!(matches!(err, HlcError::Persist(_)), "{err}");
        assert!(hlc.last() > issued && hlc.last().wall_ms == 1_500);
    }

    #[test]
    fn remote_stamps_move_the_clock_forward_within_the_maximum_offset() {
        let mut hlc = Hlc::open(Memory::default(), 500).expect("opens");
        hlc.now(10_000).expect("stamp");
        let remote = Stamp {
            wall_ms: 10_400,
            logical: 7,
        };
        hlc.observe(remote, 10_000).expect("within the offset");
        let next = hlc.now(10_000).expect("stamp");
        assert!(next > remote, "{next} after {remote}");
        let far = Stamp {
            wall_ms: 20_000,
            logical: 0,
        };
        let err = hlc.observe(far, 10_000).unwrap_err();
        assert!(
            matches!(
                err,
                HlcError::AheadOfClock {
                    ahead_ms: 10_000,
                    ..
                }
            ),
            "{err}"
        );
        assert!(hlc.last() < far, "a refused stamp does not move the clock");
        // A stamp from the past changes nothing.
        let before = hlc.last();
        hlc.observe(
            Stamp {
                wall_ms: 1,
                logical: 0,
            },
            10_000,
        )
        .expect("old stamp");
        assert_eq!(hlc.last(), before);
    }

    #[test]
    fn an_exhausted_logical_counter_is_an_error_not_a_wrap() {
        let mut hlc = Hlc::open(Memory::default(), u64::MAX).expect("opens");
        hlc.observe(
            Stamp {
                wall_ms: 5_000,
                logical: u32::MAX,
            },
            5_000,
        )
        .expect("observed");
        let err = hlc.now(5_000).unwrap_err();
        assert!(
            matches!(err, HlcError::Exhausted { wall_ms: 5_000 }),
            "{err}"
        );
    }
}

//! Island mode: a node cut off from its cluster's quorum.
//!
//! - [`detect`]: whether this node is an island, and its island epoch ([`watch`]).
//! - [`hlc`]: the hybrid logical clock that names island writes, never going back across
//!   restarts.
//! - [`reach`]: the leader replicates which members it cannot reach, so their agents get no
//!   new work.
//! - [`serve`]: serving as an island (its view and journal) and merging once a leader is
//!   heard again.
//! - [`site`]: which island node keeps the island journal of a site cut off together (the
//!   rule); [`mirror`]: the others forward their writes to it and mirror its journal.

pub mod detect;
pub mod hlc;
pub mod mirror;
pub mod reach;
pub mod serve;
pub mod site;

pub use detect::{watch, Detector, IslandStatus, LeaderContact, Signals, ISLAND_CHECK_INTERVAL};
pub use hlc::{Hlc, HlcError, Stamp};
pub use serve::{merge_loop, IslandJournalStatus, IslandServer};

//! Chaos suites for Parley: turmoil simulations of whole clusters running the real replica
//! (RocksDB storage, openraft, the proposer, the gRPC network over simulated TCP) and the real
//! services actor, driven by simulated customers, under a seeded fault schedule, checked by an
//! oracle that recorded every acknowledged write.
//!
//! - [`live`]: the live fault runner against real `parley serve` processes.
//! - [`netns`]: a private network of namespaces for a live cluster, and partitions in it.
//! - [`net`]: tonic over turmoil's TCP.
//! - [`node`]: one simulated node and its test-only `SimNode` service.
//! - [`sim`]: a run: hosts, customers, faults, the final check.
//! - [`scenarios`]: one named scenario per row of the failure matrix.
//! - [`target`]: an existing cluster named in a file, and the commands that inject its faults.
//! - [`oracle`]: acknowledged writes and the checks of G1, G2, G3 (G6 and G7 come from each
//!   node's `validate` and digest).

pub mod live;
pub mod net;
pub mod netns;
pub mod node;
pub mod oracle;
pub mod scenarios;
pub mod sim;
pub mod target;

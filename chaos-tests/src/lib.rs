//! Chaos suites for Parley: turmoil simulations of whole clusters running the real replica
//! (RocksDB storage, openraft, the proposer, the gRPC network over simulated TCP) and the real
//! services actor, driven by simulated customers, under a seeded fault schedule, checked by an
//! oracle that recorded every acknowledged write.
//!
//! - [`lease`]: the mailbox fetcher's lease on every simulated node (the production keeper)
//!   and the fenced commands its holder proposes.
//! - [`membership`]: operators' membership changes in a simulation, retried until accepted.
//! - [`live`]: the live fault runner against real `parley serve` processes, each in a network
//!   namespace of its own when it may (`parley-netns`, the private network and its partitions).
//! - [`net`]: tonic over turmoil's TCP.
//! - [`node`]: one simulated node and its test-only `SimNode` service.
//! - [`sim`]: a run: hosts, customers, faults, the final check.
//! - [`scenarios`]: one named scenario per row of the failure matrix.
//! - [`target`]: an existing cluster named in a file, and the commands that inject its faults.
//! - [`oracle`]: what clients saw acknowledged (writes and agent actions), what each node
//!   holds, and the checks of one against the other (G1–G4, G6, G7).
//! - [`proto`]: the generated code of the test-only `SimNode` service (`proto/sim.proto`).

pub mod lease;
pub mod live;
pub mod membership;
pub mod net;
pub mod node;
pub mod oracle;

/// Generated code for package `parley.sim.v1`: the simulation's test-only service.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("parley.sim.v1");
}

pub mod scenarios;
pub mod sim;
pub mod target;

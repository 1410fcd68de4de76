//! Parley's gRPC contract: the generated tonic/prost code for `proto/parley.proto`.
//!
//! This crate holds no logic. `parley-raft` converts between these messages and its own types.

#![allow(clippy::all, missing_docs)]

/// Generated code for package `parley.v1`.
pub mod v1 {
    tonic::include_proto!("parley.v1");
}

/// Generated code for package `parley.sim.v1`: the chaos simulator's test-only service.
pub mod sim {
    tonic::include_proto!("parley.sim.v1");
}

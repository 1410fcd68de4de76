//! Parley's gRPC contract: the generated tonic/prost code for `proto/parley.proto`.
//!
//! This crate holds no logic. `parley-raft` converts between these messages and its own types.

#![allow(clippy::all, missing_docs)]

/// Generated code for package `parley.v1`.
pub mod v1 {
    tonic::include_proto!("parley.v1");
}

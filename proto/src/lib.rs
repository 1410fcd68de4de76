//! Parley's gRPC contract: the generated tonic/prost code for `proto/parley.proto`.
//!
//! This crate holds no logic. `parley-raft` converts between these messages and its own types.

#![allow(clippy::all, missing_docs)]

/// Generated code for package `parley.v1`.
pub mod v1 {
    tonic::include_proto!("parley.v1");
}

/// Generated client for etcd's `KV.Put` (package `etcdserverpb`), which the benchmark harness
/// uses to compare Parley with etcd.
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}

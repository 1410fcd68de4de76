//! The `parley` node: configuration, the HTTP edge, the app and messaging actors, and the
//! process that hosts them with the replicated core.
//!
//! # Layout
//! - [`config`]: TOML + environment → validated [`config::Config`].
//! - [`serve`]: the runtime, the actor system, start-up and shutdown order.
//! - [`web`]: HTTP routes and input validation; [`error`]: errors to HTTP answers.
//! - [`app`]: the app actor (writes through Raft, reads from applied state, cluster view).
//! - [`messaging`]: the messaging actor (wakes clients waiting for chat events).
//! - [`metrics`]: Prometheus metrics; [`token`]: chat tokens.
//! - [`bench`]: `parley bench`, a load generator that prints throughput and latency.

pub mod app;
pub mod bench;
pub mod config;
pub mod error;
pub mod messaging;
pub mod metrics;
pub mod serve;
pub mod token;
pub mod web;

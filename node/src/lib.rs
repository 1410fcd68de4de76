//! The `parley` node: configuration, the HTTP edge, the app and messaging actors, and the
//! process that hosts them with the replicated core.
//!
//! # Layout
//! - [`config`]: TOML + environment → validated [`config::Config`].
//! - [`serve`]: the runtime, the actor system, start-up and shutdown order.
//! - [`api`]: the HTTP API's wire types, converted from the replicated state's types.
//! - [`web`]: HTTP and WebSocket routes, input validation, credentials; [`error`]: errors to
//!   HTTP answers.
//! - [`app`]: the app actor (writes through Raft, reads from applied state, cluster view).
//! - [`messaging`]: the messaging actor (wakes streams and long polls, carries typing).
//! - [`services`]: the services actor (fires replicated timers, active-active).
//! - [`email`]: the email channel's services (IMAP fetcher, SMTP sender, each under a lease).
//! - [`metrics`]: Prometheus metrics; [`token`]: chat and agent tokens, password hashing.
//! - [`tls`]: the HTTPS certificate and the reload of every TLS file; [`certs`]: `parley
//!   certs`, a cluster CA and node certificates.
//! - [`ctl`]: `parley ctl`, the operator's client of a node's admin API (membership, upgrades,
//!   backups).
//! - [`snapshot`]: `parley snapshot`, backups offline (inspect a file, restore a new cluster).
//! - [`systemd`]: systemd's `Type=notify` protocol (ready, watchdog, stopping).

pub mod api;
pub mod app;
pub mod certs;
pub mod config;
pub mod ctl;
pub mod email;
pub mod error;
pub mod messaging;
pub mod metrics;
pub mod serve;
pub mod services;
pub mod snapshot;
pub mod systemd;
pub mod tls;
pub mod token;
pub mod web;

//! Bounds on every input. `apply` enforces them too, so a command that bypassed the HTTP edge
//! (a forwarded write from a faulty peer) still cannot break the state's invariants.

/// Longest chat message text, in bytes of UTF-8.
pub const MESSAGE_TEXT_BYTES_MAX: usize = 4096;
/// Longest customer or agent display name, in bytes.
pub const NAME_BYTES_MAX: usize = 200;
/// Longest email address, in bytes (RFC 5321 path limit).
pub const EMAIL_BYTES_MAX: usize = 254;
/// Longest pre-chat question, in bytes.
pub const QUESTION_BYTES_MAX: usize = 2000;
/// Longest client-generated id (message id, request id), in bytes.
pub const CLIENT_ID_BYTES_MAX: usize = 128;
/// Longest queue, agent or other directory id, in bytes.
pub const DIRECTORY_ID_BYTES_MAX: usize = 64;
/// Most events one read returns; clients page with `after`.
pub const EVENTS_PAGE_MAX: usize = 1000;
/// Most commands the proposer packs into one Raft entry.
pub const BATCH_COMMANDS_MAX: usize = 512;

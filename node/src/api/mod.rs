//! The HTTP API's wire types, kept apart from the replicated state's own types.
//!
//! The state's types (`parley_raft::state`, `parley_raft::command`) are also the log and
//! snapshot formats; these are what clients see. Each response type converts from the state
//! (`From<&state::X>`), each request type into a command value, so the log format, the snapshot
//! format and the HTTP API can each change without the others. utoipa (the OpenAPI document)
//! derives only here and in `web/`.
//!
//! # Layout
//! - [`directory`]: channels, departments, skills, queues and their business hours.
//! - [`chat`]: participants, chat events, surveys, the customer's pre-chat details, transfer
//!   targets.
//! - [`activity`]: activity status and transitions.
//! - [`agent`]: what an agent's feed records.
//! - [`cluster`]: a member of the cluster view, the members with their progress, and what
//!   each member's release supports.

pub mod activity;
pub mod agent;
pub mod chat;
pub mod cluster;
pub mod directory;

pub use activity::{ActivityStatus, Transition};
pub use agent::AgentEventBody;
pub use chat::{ChatEvent, ChatStatus, Customer, EventBody, Participant, Survey, TransferTarget};
pub use cluster::{
    Member, MemberProgress, MemberRole, MemberVersions, Members, Supported, Upgrade,
};
pub use directory::{BusinessHours, Channel, Department, OpenInterval, Queue, Skill, Weekday};

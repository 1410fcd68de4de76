//! The bounds a command's own fields must meet, whatever the state: lengths, characters,
//! ranges (`limits.rs`). One function, [`check_input`], run in two places: by the proposer
//! before a command is replicated (so an over-long message is refused before it costs a
//! majority's fsync) and by `apply` before anything else (so a command that bypassed the edge
//! still cannot break the state). Checks that need the state (does the queue exist, is this
//! the agent's session) stay in `apply`.

use crate::command::{DirectoryEntry, Op, Rejection};
use crate::limits;

use super::chat::check_email;
use super::directory::{check_agent_spec, check_name, check_queue_spec};
use super::routing::check_phone;
use super::{check_client_id, check_directory_id, check_reason, check_text};

/// Checks a directory entry on its own (references to other entries are checked by `apply`).
pub fn check_entry(entry: &DirectoryEntry) -> Result<(), Rejection> {
    match entry {
        DirectoryEntry::Department(spec) => {
            check_directory_id("id", &spec.id)?;
            check_name(&spec.name)
        }
        DirectoryEntry::Skill(spec) => {
            check_directory_id("id", &spec.id)?;
            check_name(&spec.name)
        }
        DirectoryEntry::Queue(spec) => check_queue_spec(spec),
        DirectoryEntry::Agent(spec) => check_agent_spec(spec),
    }
}

/// Checks every bound of `op` that does not depend on the state; the first broken one is the
/// answer, with the same rejection `apply` gives.
pub fn check_input(op: &Op) -> Result<(), Rejection> {
    match op {
        // Seeding skips invalid entries one by one (node config validation reports them).
        Op::SetRetention(retention) => super::retention::check_retention(retention),
        Op::SeedDirectory(_) | Op::Tick | Op::Remove(_) => Ok(()),
        Op::SetUnreachable { nodes } => {
            if nodes.len() > crate::limits::UNREACHABLE_NODES_MAX {
                return Err(Rejection::invalid(
                    "nodes",
                    format!("at most {} nodes", crate::limits::UNREACHABLE_NODES_MAX),
                ));
            }
            Ok(())
        }
        Op::SetClusterVersion { version } => {
            if *version < crate::version::CLUSTER_VERSION_INITIAL {
                return Err(Rejection::invalid("version", "must be at least 1"));
            }
            Ok(())
        }
        Op::Upsert(entry) => check_entry(entry),
        Op::MergeIsland(chunk) => {
            if chunk.writes.is_empty() || chunk.writes.len() > limits::ISLAND_CHUNK_WRITES_MAX {
                return Err(Rejection::invalid(
                    "writes",
                    format!("must hold 1 to {} writes", limits::ISLAND_CHUNK_WRITES_MAX),
                ));
            }
            if chunk
                .writes
                .windows(2)
                .any(|w| w[0].position >= w[1].position)
            {
                return Err(Rejection::invalid(
                    "writes",
                    "positions must ascend strictly",
                ));
            }
            for write in &chunk.writes {
                super::island::island_takes(&write.op)?;
                check_input(&write.op)?;
                if let Some(agent_id) = &write.agent {
                    check_directory_id("agent", agent_id)?;
                }
            }
            Ok(())
        }
        Op::StartChat(start) => {
            check_client_id("request_id", &start.request_id)?;
            check_text(
                "customer.name",
                &start.customer.name,
                1,
                limits::NAME_BYTES_MAX,
            )?;
            check_email(&start.customer.email)?;
            check_text("question", &start.question, 0, limits::QUESTION_BYTES_MAX)?;
            check_client_id("chat_id", &start.chat_id)
        }
        Op::PostMessage(post) => {
            check_client_id("client_msg_id", &post.client_msg_id)?;
            check_text("text", &post.text, 1, limits::MESSAGE_TEXT_BYTES_MAX)
        }
        Op::SubmitSurvey(survey) => {
            if !(1..=5).contains(&survey.rating) {
                return Err(Rejection::invalid("rating", "must be 1 to 5"));
            }
            check_text(
                "comment",
                &survey.comment,
                0,
                limits::SURVEY_COMMENT_BYTES_MAX,
            )
        }
        Op::RequestCallback(request) => {
            check_client_id("request_id", &request.request_id)?;
            check_client_id("activity_id", &request.activity_id)?;
            check_text("name", &request.name, 1, limits::NAME_BYTES_MAX)?;
            check_phone(&request.phone)
        }
        Op::Login(login) => check_client_id("session_id", &login.session_id),
        Op::SetAvailability(set) => match &set.reason {
            Some(reason) => check_reason("reason", reason),
            None => Ok(()),
        },
        // Which outcomes an activity takes depends on its channel (apply checks that); every
        // one is a reason word.
        Op::Complete(complete) => match &complete.outcome {
            Some(outcome) => check_reason("outcome", outcome),
            None => Ok(()),
        },
        Op::EndChat(_) | Op::Presence(_) | Op::Logout(_) | Op::Accept(_) | Op::Transfer(_) => {
            Ok(())
        }
        Op::Email(op) => super::email::check_email_input(op),
    }
}

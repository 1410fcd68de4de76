//! Retention: finished work leaves memory for the archive, and the archive is purged.
//!
//! When an activity is over (completed or abandoned; its chat, if any, has ended with it) a
//! [`Timer::Retire`] is armed `retention.hot_ms` later. When it fires, the activity, its chat
//! and its idempotency key leave the state, and the pair goes to the archive as one
//! [`Retired`] record that expires `retention.archive_ms` later (a case retired with its email
//! activity also leaves its Message-IDs and moves its attachments' expiry, see
//! [`super::email`]). A [`Timer::PurgeArchive`]
//! deletes expired records; it re-arms itself until everything archived has expired.
//!
//! All of it is driven by commands (`Tick` carries the time), so every replica retires and
//! purges the same things at the same log index.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Activity, Case, Chat, State, Timer};
use crate::command::{Outcome, Rejection, Retention};
use crate::limits;
use parley_storage::ArchiveOp;

/// An activity that left memory, with its chat: the archive's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    /// The activity as it was when it was retired.
    pub activity: Activity,
    /// Its chat, for a chat activity.
    pub chat: Option<Chat>,
    /// Its case, for the email activity a case was retired with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<Case>,
}

impl Retired {
    /// A state holding only this record, for reading it with the functions that read the
    /// live state.
    pub fn into_state(self) -> State {
        let mut state = State::default();
        if let Some(chat) = self.chat {
            state.chats.insert(chat.id.clone(), Arc::new(chat));
        }
        if let Some(case) = self.case {
            state.email.cases.insert(case.id.clone(), Arc::new(case));
        }
        state
            .activities
            .insert(self.activity.id.clone(), Arc::new(self.activity));
        state
    }
}

/// The archive key of an activity.
pub fn archive_key(activity_id: &str) -> String {
    format!("activity/{activity_id}")
}

/// Checks a retention against its bounds.
pub fn check_retention(retention: &Retention) -> Result<(), Rejection> {
    let within = |field: &str, value: u64, max: u64| {
        if (limits::RETENTION_MS_MIN..=max).contains(&value) {
            Ok(())
        } else {
            Err(Rejection::invalid(
                field,
                format!("must be {} to {max} ms", limits::RETENTION_MS_MIN),
            ))
        }
    };
    within(
        "retention.hot_ms",
        retention.hot_ms,
        limits::RETENTION_HOT_MS_MAX,
    )?;
    within(
        "retention.archive_ms",
        retention.archive_ms,
        limits::RETENTION_ARCHIVE_MS_MAX,
    )
}

/// Time between two purges of the archive for `retention`.
fn purge_interval_ms(retention: &Retention) -> u64 {
    (retention.archive_ms / 10).clamp(
        limits::RETENTION_MS_MIN,
        limits::ARCHIVE_PURGE_INTERVAL_MS_MAX,
    )
}

impl State {
    pub(super) fn set_retention(&mut self, retention: Retention) -> Outcome {
        // Retire timers already armed keep their time; new ones use the new retention.
        self.retention = retention;
        Outcome::Done
    }

    /// Arms the retirement of an activity that just ended.
    pub(super) fn schedule_retire(&mut self, at_ms: u64, activity_id: &str) {
        let due = at_ms.saturating_add(self.retention.hot_ms);
        self.timers
            .insert((due, Timer::Retire(activity_id.to_owned())));
    }

    /// Moves a finished activity and its chat out of memory into the archive.
    pub(super) fn retire(&mut self, at_ms: u64, activity_id: &str) {
        let finished = self
            .activities
            .get(activity_id)
            .is_some_and(|a| a.status.is_terminal());
        if !finished {
            return;
        }
        let case = match self.activities.get(activity_id).cloned() {
            Some(activity) => match self.retire_case(&activity) {
                Ok(case) => case,
                // A reply of its case is still in the outbox: the case stays, and so does
                // the activity, until it has left.
                Err(()) => {
                    self.defer_retire(at_ms, activity_id);
                    return;
                }
            },
            None => return,
        };
        let Some(activity) = self.activities.remove(activity_id) else {
            return;
        };
        let activity = Arc::unwrap_or_clone(activity);
        let chat = self.chats.remove(activity_id).map(Arc::unwrap_or_clone);
        if let Some(key) = &activity.request_key {
            if self.requests.get(key).map(String::as_str) == Some(activity_id) {
                self.requests.remove(key);
            }
        }
        let expires_at_ms = at_ms.saturating_add(self.retention.archive_ms);
        if let Some(case) = &case {
            self.archive_case(activity_id, case, expires_at_ms);
        }
        if expires_at_ms > self.archived_until_ms {
            self.archived_until_ms = expires_at_ms;
        }
        self.arm_purge(at_ms);
        let record = Retired {
            activity,
            chat,
            case,
        };
        let value = match serde_json::to_string(&record) {
            Ok(value) => value,
            // Encoding plain data cannot fail; if it ever did, the record is dropped from the
            // archive rather than kept in memory forever, the same way on every replica.
            Err(_) => return,
        };
        self.archive_outbox.push(ArchiveOp::Put {
            key: archive_key(activity_id),
            value,
            expires_at_ms,
        });
    }

    /// Arms the next purge unless one is armed.
    fn arm_purge(&mut self, at_ms: u64) {
        if self.archive_purge_due_ms.is_some() {
            return;
        }
        let due = at_ms.saturating_add(purge_interval_ms(&self.retention));
        self.timers.insert((due, Timer::PurgeArchive));
        self.archive_purge_due_ms = Some(due);
    }

    /// Deletes expired archive records, and re-arms while anything archived is unexpired.
    pub(super) fn purge_archive(&mut self, at_ms: u64) {
        self.archive_purge_due_ms = None;
        self.archive_outbox.push(ArchiveOp::PurgeBefore { at_ms });
        self.purge_attachments(at_ms);
        if self.archived_until_ms > at_ms {
            self.arm_purge(at_ms);
        }
    }
}

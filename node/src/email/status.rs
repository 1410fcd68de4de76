//! What this node's email services last saw go wrong with each mailbox, for the mailbox view
//! of the admin API. Node-local, not replicated: only the node holding a mailbox's lease talks
//! to its server, so the node to ask is the lease holder (`fetch_holder`, `send_holder`).
//!
//! A fetch failure is kept until a session opens again (logged in, folder selected) or this
//! node stops holding the fetch lease; a send failure until a reply is sent or this node stops
//! holding the send lease. Both go when the mailbox is removed or changed (its workers stop).
//! Errors carry no addresses (see [`super::without_addresses`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Which of a mailbox's jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    /// Taking mail in over IMAP.
    Fetch,
    /// Sending replies over SMTP.
    Send,
}

/// A failure as last seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// When, ms since the Unix epoch (this node's clock).
    pub at_ms: u64,
    /// What went wrong (without addresses).
    pub error: String,
}

#[derive(Clone, Debug, Default)]
struct Entry {
    fetch: Option<Problem>,
    send: Option<Problem>,
}

impl Entry {
    fn slot(&mut self, job: Job) -> &mut Option<Problem> {
        match job {
            Job::Fetch => &mut self.fetch,
            Job::Send => &mut self.send,
        }
    }
}

/// The last failures per mailbox; clones share it.
#[derive(Clone, Debug, Default)]
pub struct Status {
    inner: Arc<Mutex<BTreeMap<String, Entry>>>,
}

impl Status {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map half-written: every change is
        // one assignment. Keep using it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes that `job` of `mailbox` failed with `error`.
    pub fn failed(&self, mailbox: &str, job: Job, at_ms: u64, error: &str) {
        let error = super::without_addresses(error);
        *self.lock().entry(mailbox.to_owned()).or_default().slot(job) =
            Some(Problem { at_ms, error });
    }

    /// Forgets `job`'s failure of `mailbox` (it works again, or is no longer this node's).
    pub fn clear(&self, mailbox: &str, job: Job) {
        let mut map = self.lock();
        if let Some(entry) = map.get_mut(mailbox) {
            *entry.slot(job) = None;
            if entry.fetch.is_none() && entry.send.is_none() {
                map.remove(mailbox);
            }
        }
    }

    /// `job`'s last failure of `mailbox`, if any is kept.
    pub fn get(&self, mailbox: &str, job: Job) -> Option<Problem> {
        self.lock()
            .get_mut(mailbox)
            .and_then(|entry| entry.slot(job).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_kept_without_addresses_until_cleared() {
        let status = Status::default();
        let other = status.clone();
        status.failed("support", Job::Fetch, 5, "login refused for a@b.example");
        assert_eq!(
            other.get("support", Job::Fetch),
            Some(Problem {
                at_ms: 5,
                error: "login refused for <address>".to_owned()
            })
        );
        assert_eq!(other.get("support", Job::Send), None);
        status.clear("support", Job::Fetch);
        assert_eq!(other.get("support", Job::Fetch), None);
    }
}

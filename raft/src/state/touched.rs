//! Which chats and agent feeds the recent log entries touched, so whoever delivers events wakes
//! only the streams of those, not every stream on the node for every entry.
//!
//! The journal is a by-product of `apply`, kept beside the replicated state but not part of it:
//! it is never serialized, every journal compares equal (two replicas with the same state are
//! equal whatever they delivered), and a copy of the state starts with an empty journal that
//! knows it is incomplete. A reader that finds the journal incomplete for the span it asks about
//! (after a restart, a snapshot install, or when more than [`TOUCHES_RETAINED`] touches came
//! since it last looked) falls back to comparing every feed, which is always correct.

use std::collections::VecDeque;

use crate::command::{AgentId, ChatId};

/// Most touches kept; older ones are dropped and the journal says from where it is complete.
pub const TOUCHES_RETAINED: usize = 16_384;

/// One event appended to a feed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Touch {
    /// A chat got an event.
    Chat(ChatId),
    /// An agent's feed got an event.
    Agent(AgentId),
}

/// The touches of the most recent log entries, oldest first.
#[derive(Debug, Default)]
pub struct Touched {
    /// `(log index, touch)`, in apply order.
    touches: VecDeque<(u64, Touch)>,
    /// Every touch of every entry with an index above this is held; `None`: nothing is known
    /// to be complete yet (no entry applied since this journal started).
    complete_after: Option<u64>,
    /// Index of the entry being applied.
    applying: u64,
}

impl Touched {
    /// Starts recording the touches of the entry at `log_index`.
    pub fn begin(&mut self, log_index: u64) {
        if self.complete_after.is_none() {
            self.complete_after = Some(log_index.saturating_sub(1));
        }
        self.applying = log_index;
    }

    /// Records that the entry being applied appended to `touch`'s feed.
    pub fn record(&mut self, touch: Touch) {
        if self.complete_after.is_none() {
            // Applied outside a log entry (tests, tools): nothing to deliver from.
            return;
        }
        if self
            .touches
            .back()
            .is_some_and(|(index, last)| *index == self.applying && *last == touch)
        {
            return;
        }
        self.touches.push_back((self.applying, touch));
        while self.touches.len() > TOUCHES_RETAINED {
            if let Some((index, _)) = self.touches.pop_front() {
                // Some touch of `index` is gone: only entries after it are whole.
                self.complete_after = self.complete_after.max(Some(index));
            }
        }
    }

    /// The touches of the entries after `after`, if the journal holds all of them; `None` when
    /// the caller must compare every feed instead.
    pub fn after(&self, after: u64) -> Option<impl Iterator<Item = &Touch>> {
        let complete_after = self.complete_after?;
        if complete_after > after {
            return None;
        }
        let start = self.touches.partition_point(|(index, _)| *index <= after);
        Some(self.touches.range(start..).map(|(_, touch)| touch))
    }
}

/// A copy knows nothing of what was touched before it was made.
impl Clone for Touched {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// Not part of the replicated state: replicas are equal whatever their journals hold.
impl PartialEq for Touched {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(id: &str) -> Touch {
        Touch::Chat(id.to_owned())
    }

    fn collect(touched: &Touched, after: u64) -> Option<Vec<Touch>> {
        touched.after(after).map(|it| it.cloned().collect())
    }

    #[test]
    fn a_fresh_journal_is_incomplete_until_an_entry_is_applied() {
        let mut touched = Touched::default();
        touched.record(chat("a"));
        assert_eq!(collect(&touched, 0), None);
        touched.begin(7);
        touched.record(chat("a"));
        assert_eq!(collect(&touched, 5), None, "entries up to 6 were not seen");
        assert_eq!(collect(&touched, 6), Some(vec![chat("a")]));
        assert_eq!(collect(&touched, 7), Some(vec![]));
    }

    #[test]
    fn touches_after_an_index_are_returned_in_order_without_repeats_per_entry() {
        let mut touched = Touched::default();
        touched.begin(1);
        touched.record(chat("a"));
        touched.record(chat("a"));
        touched.record(Touch::Agent("ann".to_owned()));
        touched.begin(2);
        touched.record(chat("a"));
        touched.begin(4);
        touched.record(chat("b"));
        assert_eq!(
            collect(&touched, 0),
            Some(vec![
                chat("a"),
                Touch::Agent("ann".to_owned()),
                chat("a"),
                chat("b")
            ])
        );
        assert_eq!(collect(&touched, 2), Some(vec![chat("b")]));
        assert_eq!(collect(&touched, 3), Some(vec![chat("b")]));
    }

    #[test]
    fn dropping_old_touches_moves_the_complete_mark() {
        let mut touched = Touched::default();
        for index in 1..=(TOUCHES_RETAINED as u64 + 2) {
            touched.begin(index);
            touched.record(chat(&index.to_string()));
        }
        assert_eq!(touched.touches.len(), TOUCHES_RETAINED);
        assert_eq!(collect(&touched, 1), None, "the touch of entry 2 is gone");
        let after_two = collect(&touched, 2).map(|t| t.len());
        assert_eq!(after_two, Some(TOUCHES_RETAINED));
    }

    #[test]
    fn copies_start_incomplete_and_journals_compare_equal() {
        let mut touched = Touched::default();
        touched.begin(1);
        touched.record(chat("a"));
        let copy = touched.clone();
        assert_eq!(collect(&copy, 0), None);
        assert_eq!(copy, touched);
    }
}

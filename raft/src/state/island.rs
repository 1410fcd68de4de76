//! Island mode in the state: what an island takes while it is cut off, and the merge of those
//! writes into the replicated state once it is connected again.
//!
//! # The island's view
//!
//! An island serves from a copy of the state as it last applied it (the **fork**), with its own
//! writes applied on top by [`State::apply_island`]. The copy routes nothing
//! ([`State::routing_paused`]): work from before the split stays where it was, so it is never
//! routed by both sides, and a chat started on the island waits in its queue until the merge.
//! Every chat event an island write adds is marked ([`IslandMark`]) with the island (origin
//! node, island epoch), the island's hybrid logical clock and the sequence number the island's
//! clients saw it under.
//!
//! # The merge ([`Op::MergeIsland`](crate::command::Op))
//!
//! The island replays its journal in chunks; each write is merged once (per origin, journal
//! positions below [`State::islands_merged`] are skipped), in the island's order:
//! - **start chat**: the chat is created as the island created it (its first event keeps its
//!   mark) and enters its queue at the time the island took it; a request id the cluster has
//!   seen already keeps the cluster's chat. A chat whose queue is gone (or no longer takes
//!   chats) is created and ended at once, so nothing the customer wrote is lost.
//! - **message**: grow-only. A message whose sender and client message id the chat holds
//!   already is the same message and is skipped; any other is appended with its mark, also to a
//!   chat that ended meanwhile (the transcript keeps it; nobody is routed for it).
//! - **end**: the end wins: an open chat ends; an ended one stays as it is.
//! - **survey**: the first rating wins.
//! - **callback request**: deduplicated by request id, as always.
//!
//! A write the merged state cannot take (its chat was retired meanwhile, say) is listed in the
//! outcome with why, never dropped unseen. Sequence numbers are given at merge, after the
//! chat's last one: a number once answered never changes meaning, and a client holding an
//! island cursor resumes with exactly what it did not see ([`State::events_after_island`]).
//!
//! # Cursors ([`EventCursor`])
//!
//! On an island's view the events its writes added after the fork are numbered provisionally:
//! the merge numbers them again after the cluster's own events of the time. A client that read
//! such events holds an island cursor (the island, the fork, the last island event it saw)
//! instead of a sequence number; [`State::events_page`] answers every page with the cursor
//! after each event, so a client passes back what it was given and resumes on any node, before
//! or after the merge, with exactly the events it missed. An island cursor becomes a plain
//! sequence number again once no island event it covers lies ahead.

use serde::{Deserialize, Serialize};

use super::{ChatEvent, ChatStatus, EventBody, State};
use crate::command::{
    Command, EndChat, IslandChunk, IslandWrite, Op, Outcome, Participant, PostMessage,
    RefusedWrite, Rejection, StartChat, SubmitSurvey,
};
use crate::island::Stamp;
use crate::types::NodeId;

/// Where an event added by an island came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IslandMark {
    /// The island node that took the write.
    pub origin: NodeId,
    /// Its island epoch then.
    pub epoch: u64,
    /// The sequence number the island's clients saw the event under.
    pub seq: u64,
    /// The island's hybrid logical clock when it took the write.
    pub hlc: Stamp,
}

/// A cursor an island handed out: the client saw the chat up to island sequence number `seq`
/// of island (`origin`, `epoch`), which forked from the chat at sequence number `fork`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IslandCursor {
    /// The island node.
    pub origin: NodeId,
    /// Its island epoch.
    pub epoch: u64,
    /// The chat's last sequence number when the island forked (0 for a chat started there).
    pub fork: u64,
    /// The last island sequence number the client saw.
    pub seq: u64,
}

/// Where an island's view forked, per chat its writes touched (see the module docs).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ViewFork {
    /// The island node whose view this is.
    origin: NodeId,
    /// Per chat, its last sequence number when the view forked (0: started on the island).
    chats: std::collections::BTreeMap<crate::command::ChatId, u64>,
}

/// Where a client stands in a chat's events (the `after` of the events API and streams).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventCursor {
    /// Every event after this sequence number is new to the client.
    After(u64),
    /// The client read through an island.
    Island(IslandCursor),
}

impl Default for EventCursor {
    fn default() -> Self {
        EventCursor::After(0)
    }
}

impl std::fmt::Display for EventCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventCursor::After(seq) => write!(f, "{seq}"),
            EventCursor::Island(c) => {
                write!(f, "i.{}.{}.{}.{}", c.origin, c.epoch, c.fork, c.seq)
            }
        }
    }
}

impl std::str::FromStr for EventCursor {
    type Err = String;

    /// `<seq>` or `i.<origin>.<epoch>.<fork>.<seq>`, decimal numbers.
    fn from_str(text: &str) -> Result<Self, String> {
        let number = |part: &str| {
            if part.is_empty() || part.len() > 20 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "cursor {text:?} is neither a sequence number nor an island cursor \
                     (i.<node>.<epoch>.<fork>.<seq>)"
                ));
            }
            part.parse::<u64>()
                .map_err(|_| format!("cursor {text:?} holds a number out of range"))
        };
        match text.strip_prefix("i.") {
            None => number(text).map(EventCursor::After),
            Some(rest) => {
                let parts: Vec<&str> = rest.split('.').collect();
                let [origin, epoch, fork, seq] = parts.as_slice() else {
                    return Err(format!(
                        "island cursor {text:?} must be i.<node>.<epoch>.<fork>.<seq>"
                    ));
                };
                Ok(EventCursor::Island(IslandCursor {
                    origin: number(origin)?,
                    epoch: number(epoch)?,
                    fork: number(fork)?,
                    seq: number(seq)?,
                }))
            }
        }
    }
}

/// Whether `mark` is of island `origin` at or before (`epoch`, `seq`): island events of one
/// node are ordered by epoch, then by island sequence number.
fn covered(mark: &IslandMark, origin: NodeId, epoch: u64, seq: u64) -> bool {
    mark.origin == origin && (mark.epoch, mark.seq) <= (epoch, seq)
}

/// The mark the next chat event gets while an island write is applied.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Marking {
    pending: Option<IslandMark>,
    /// The sequence number the marked event got, once it was added.
    added: Option<u64>,
}

impl Marking {
    /// Whether an island write is being applied (on a view, or merged).
    pub(crate) fn active(&self) -> bool {
        self.pending.is_some() || self.added.is_some()
    }

    /// The mark for an event given sequence number `seq`, if a write is being marked and its
    /// event was not added yet. A mark whose island seq is unset (0) takes `seq`: on the
    /// island's own view the two are one.
    pub(crate) fn take_mark(&mut self, seq: u64) -> Option<IslandMark> {
        let mut mark = self.pending.take()?;
        if mark.seq == 0 {
            mark.seq = seq;
        }
        self.added = Some(seq);
        Some(mark)
    }

    fn start(&mut self, mark: IslandMark) {
        self.pending = Some(mark);
        self.added = None;
    }

    fn finish(&mut self) -> Option<u64> {
        self.pending = None;
        self.added.take()
    }
}

/// Whether an island takes `op`: the customer's side of chats and callbacks. Everything else
/// (agents' actions, directory and membership changes, timers) waits for the cluster.
pub fn island_takes(op: &Op) -> Result<(), Rejection> {
    let what = match op {
        Op::StartChat(_)
        | Op::PostMessage(_)
        | Op::EndChat(_)
        | Op::SubmitSurvey(_)
        | Op::RequestCallback(_) => return Ok(()),
        Op::SeedDirectory(_) | Op::Upsert(_) | Op::Remove(_) => "a directory change",
        Op::SetRetention(_) | Op::SetClusterVersion { .. } | Op::SetUnreachable { .. } => {
            "a cluster setting"
        }
        Op::Login(_) | Op::Presence(_) | Op::Logout(_) | Op::SetAvailability(_) => {
            "an agent's sign-in or availability"
        }
        Op::Accept(_) | Op::Transfer(_) | Op::Complete(_) => "an agent's action on work",
        Op::Tick => "a timer",
        Op::MergeIsland(_) => "a merge",
        // Leases and the mail cursor need the quorum: an island would fetch what the cluster
        // fetches too.
        Op::Email(_) => "email",
    };
    Err(Rejection::Island {
        what: what.to_owned(),
    })
}

impl State {
    /// Applies one island write to an island's view (see the module docs): refused unless an
    /// island takes it; the chat event it adds is marked with `origin`, `epoch` and the write's
    /// clock, and its sequence number is recorded in `write.seq`. A write that has a recorded
    /// sequence number already (a view rebuilt from the journal) keeps it: it is the number
    /// its client was answered with.
    pub fn apply_island(&mut self, origin: NodeId, epoch: u64, write: &mut IslandWrite) -> Outcome {
        if let Err(rejection) = island_takes(&write.op) {
            return Outcome::Rejected(rejection);
        }
        let chat_id = match &write.op {
            Op::StartChat(op) => Some(&op.chat_id),
            Op::PostMessage(op) => Some(&op.chat_id),
            Op::EndChat(op) => Some(&op.chat_id),
            Op::SubmitSurvey(op) => Some(&op.chat_id),
            _ => None,
        };
        let view = self.island_view.get_or_insert_with(|| ViewFork {
            origin,
            chats: std::collections::BTreeMap::new(),
        });
        if let Some(chat_id) = chat_id {
            if !view.chats.contains_key(chat_id) {
                let fork = self.chats.get(chat_id).map_or(0, |c| c.last_seq());
                view.chats.insert(chat_id.clone(), fork);
            }
        }
        self.island_write.start(IslandMark {
            origin,
            epoch,
            seq: write.seq.unwrap_or(0),
            hlc: write.hlc,
        });
        let outcome = self.apply(&Command {
            at_ms: write.at_ms,
            origin,
            op: write.op.clone(),
        });
        let added = self.island_write.finish();
        if write.seq.is_none() {
            write.seq = added;
        }
        outcome
    }

    /// Merges a chunk of an island's journal (see the module docs).
    pub(super) fn merge_island(&mut self, chunk: &IslandChunk) -> Outcome {
        let mut merged = 0u32;
        let mut skipped = 0u32;
        let mut refused = Vec::new();
        let next = self.islands_merged.get(&chunk.origin).copied().unwrap_or(0);
        let mut next_position = next;
        for write in &chunk.writes {
            if write.position < next_position {
                skipped += 1;
                continue;
            }
            self.island_write.start(IslandMark {
                origin: chunk.origin,
                epoch: chunk.epoch,
                seq: write.seq.unwrap_or(0),
                hlc: write.hlc,
            });
            let result = self.merge_write(write);
            self.island_write.finish();
            match result {
                Ok(()) => merged += 1,
                Err(rejection) => {
                    tracing::warn!(
                        origin = chunk.origin,
                        epoch = chunk.epoch,
                        position = write.position,
                        %rejection,
                        "an island write could not be merged"
                    );
                    refused.push(RefusedWrite {
                        position: write.position,
                        rejection,
                    });
                }
            }
            next_position = write.position + 1;
        }
        self.islands_merged.insert(chunk.origin, next_position);
        Outcome::IslandMerged {
            merged,
            skipped,
            refused,
            next_position,
        }
    }

    fn merge_write(&mut self, write: &IslandWrite) -> Result<(), Rejection> {
        let at = write.at_ms;
        match &write.op {
            Op::StartChat(start) => self.merge_start(at, start),
            Op::PostMessage(post) => self.merge_message(at, post),
            Op::EndChat(end) => self.merge_end(at, end),
            Op::SubmitSurvey(survey) => self.merge_survey(at, survey),
            Op::RequestCallback(request) => self.request_callback(at, request).map(|_| ()),
            // `check_input` refuses a chunk holding anything else.
            other => island_takes(other),
        }
    }

    fn merge_start(&mut self, at_ms: u64, start: &StartChat) -> Result<(), Rejection> {
        if self
            .requests
            .contains_key(&format!("chat:{}", start.request_id))
        {
            // Started on both sides (a retry that reached the cluster too): the cluster's chat
            // is the one the customer kept.
            return Ok(());
        }
        if self.activities.contains_key(&start.chat_id) {
            return Err(Rejection::invalid("chat_id", "already in use"));
        }
        let takes_chats = self
            .queues
            .get(&start.queue_id)
            .is_some_and(|q| q.spec.channel == crate::command::Channel::Chat);
        self.insert_chat(at_ms, start);
        if !takes_chats {
            self.finish_chat(
                at_ms,
                &start.chat_id,
                Participant::System,
                "queue_removed",
                "queue_removed",
            );
        }
        self.route(at_ms);
        Ok(())
    }

    fn merge_message(&mut self, at_ms: u64, post: &PostMessage) -> Result<(), Rejection> {
        let chat = self.known_chat(&post.chat_id)?;
        let key = format!("{}/{}", post.sender.key(), post.client_msg_id);
        if chat.client_msg_ids.contains_key(&key) {
            return Ok(());
        }
        if chat.status == ChatStatus::Open {
            if let Participant::Agent { agent_id } = &post.sender {
                if chat.agent_id.as_ref() != Some(agent_id) {
                    // The agent no longer works the chat: appended as after an end.
                    return self.append_late_message(at_ms, post, key);
                }
            }
            return self.post_message(at_ms, post).map(|_| ());
        }
        self.append_late_message(at_ms, post, key)
    }

    /// Appends a message to a chat that ended (or that its sender no longer works) meanwhile:
    /// kept in the transcript, routed to nobody, arming no timer.
    fn append_late_message(
        &mut self,
        at_ms: u64,
        post: &PostMessage,
        key: String,
    ) -> Result<(), Rejection> {
        let seq = self.push_chat_event(
            &post.chat_id,
            at_ms,
            EventBody::Message {
                from: post.sender.clone(),
                client_msg_id: post.client_msg_id.clone(),
                text: post.text.clone(),
            },
        );
        if let Some(chat) = self
            .chats
            .get_mut(&post.chat_id)
            .map(std::sync::Arc::make_mut)
        {
            chat.client_msg_ids.insert(key, seq);
        }
        Ok(())
    }

    fn merge_end(&mut self, at_ms: u64, end: &EndChat) -> Result<(), Rejection> {
        let chat = self.known_chat(&end.chat_id)?;
        if chat.status == ChatStatus::Ended {
            return Ok(());
        }
        let (reason, outcome) = match end.by {
            Participant::Customer => ("customer", "ended_by_customer"),
            _ => ("agent", "completed"),
        };
        self.finish_chat(at_ms, &end.chat_id, end.by.clone(), reason, outcome);
        self.route(at_ms);
        Ok(())
    }

    fn merge_survey(&mut self, at_ms: u64, survey: &SubmitSurvey) -> Result<(), Rejection> {
        match self.chats.get(&survey.chat_id) {
            Some(chat) if chat.survey.is_some() => Ok(()),
            _ => self.submit_survey(at_ms, survey).map(|_| ()),
        }
    }

    /// The events of `chat_id` a client holding `cursor` has not seen, oldest first, at most
    /// `limit`: every event after the island's fork except the island's own up to the cursor.
    /// `None` when the chat does not exist.
    pub fn events_after_island(
        &self,
        chat_id: &str,
        cursor: &IslandCursor,
        limit: usize,
    ) -> Option<Vec<&ChatEvent>> {
        let chat = self.chats.get(chat_id)?;
        let start = usize::try_from(cursor.fork)
            .unwrap_or(usize::MAX)
            .min(chat.events.len());
        let seen = |event: &ChatEvent| {
            event
                .island
                .is_some_and(|mark| covered(&mark, cursor.origin, cursor.epoch, cursor.seq))
        };
        Some(
            chat.events[start..]
                .iter()
                .filter(|event| !seen(event))
                .take(limit.min(crate::limits::EVENTS_PAGE_MAX))
                .collect(),
        )
    }

    /// A page of `chat_id`'s events for a client at `cursor`: at most `limit` events it has
    /// not seen, oldest first, each with the cursor that stands after it (see the module
    /// docs). `None` when the chat does not exist.
    pub fn events_page(
        &self,
        chat_id: &str,
        cursor: &EventCursor,
        limit: usize,
    ) -> Option<Vec<(&ChatEvent, EventCursor)>> {
        let chat = self.chats.get(chat_id)?;
        let events: Vec<&ChatEvent> = match cursor {
            EventCursor::After(after) => self.chat_events(chat_id, *after, limit)?.iter().collect(),
            EventCursor::Island(island) => self.events_after_island(chat_id, island, limit)?,
        };
        // On an island's own view: the island, and the last number of the chat that is
        // final (events after it are numbered provisionally).
        let own = self
            .island_view
            .as_ref()
            .and_then(|view| view.chats.get(chat_id).map(|fork| (view.origin, *fork)));
        let mut at = *cursor;
        let mut provisional = false;
        let mut page = Vec::with_capacity(events.len());
        for event in events {
            provisional = own.is_some_and(|(_, fork)| event.seq > fork);
            at = match (own, at) {
                (Some((origin, fork)), at) if provisional => {
                    // The client now holds this island's provisionally numbered events.
                    let (epoch, seq) = match (event.island, at) {
                        (Some(mark), _) => (mark.epoch, mark.seq),
                        (None, EventCursor::Island(c)) if c.origin == origin => (c.epoch, c.seq),
                        (None, _) => (0, 0),
                    };
                    EventCursor::Island(IslandCursor {
                        origin,
                        epoch,
                        fork,
                        seq,
                    })
                }
                (_, EventCursor::Island(c)) => EventCursor::Island(IslandCursor {
                    fork: event.seq,
                    ..c
                }),
                (_, EventCursor::After(_)) => EventCursor::After(event.seq),
            };
            page.push((event, at));
        }
        // The last cursor is plain again once no island event it covers lies ahead.
        if let (Some((_, last)), false) = (page.last_mut(), provisional) {
            if let EventCursor::Island(c) = *last {
                let start = usize::try_from(c.fork)
                    .unwrap_or(usize::MAX)
                    .min(chat.events.len());
                let ahead = chat.events[start..].iter().any(|event| {
                    event
                        .island
                        .is_some_and(|mark| covered(&mark, c.origin, c.epoch, c.seq))
                });
                if !ahead {
                    *last = EventCursor::After(c.fork);
                }
            }
        }
        Some(page)
    }
}

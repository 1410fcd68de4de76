//! The oracle: records every acknowledged write and checks, on every node after healing, that
//! each is present exactly once at the sequence number it was acknowledged with, in a gap-free
//! sequence (G1, G2, G3).

use std::collections::BTreeMap;

use parley_raft::state::{ChatEvent, EventBody};

/// A broken guarantee, described.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Every acknowledged write of a run.
#[derive(Debug, Default)]
pub struct Oracle {
    /// Chat id → client message id → acknowledged seq.
    acked: BTreeMap<String, BTreeMap<String, u64>>,
    /// Answers that should never happen.
    unexpected: Vec<String>,
}

impl Oracle {
    /// A chat's start was acknowledged.
    pub fn chat_started(&mut self, chat_id: &str) {
        self.acked.entry(chat_id.to_owned()).or_default();
    }

    /// A message was acknowledged with `seq`.
    pub fn acked(&mut self, chat_id: &str, client_msg_id: &str, seq: u64) {
        self.acked
            .entry(chat_id.to_owned())
            .or_default()
            .insert(client_msg_id.to_owned(), seq);
    }

    /// A write got an answer no client should see.
    pub fn unexpected(&mut self, chat_id: &str, what: &str) {
        self.unexpected.push(format!("chat {chat_id}: {what}"));
    }

    /// The chats to inspect.
    pub fn chat_ids(&self) -> Vec<String> {
        self.acked.keys().cloned().collect()
    }

    /// How many writes were acknowledged.
    pub fn acked_count(&self) -> usize {
        self.acked.values().map(|m| m.len() + 1).sum()
    }

    /// Answers clients got that no client should see (a refused retry, say).
    pub fn unexpected_answers(&self) -> Vec<Violation> {
        self.unexpected
            .iter()
            .map(|u| Violation(format!("unexpected answer: {u}")))
            .collect()
    }

    /// Checks one node's copy of the chats.
    pub fn verify(&self, node: u64, chats: &BTreeMap<String, Vec<ChatEvent>>) -> Vec<Violation> {
        let mut violations = Vec::new();
        for (chat_id, acked) in &self.acked {
            let Some(events) = chats.get(chat_id) else {
                violations.push(Violation(format!(
                    "G1: node {node} lost acknowledged chat {chat_id}"
                )));
                continue;
            };
            let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
            for (index, event) in events.iter().enumerate() {
                if event.seq != index as u64 + 1 {
                    violations.push(Violation(format!(
                        "G3: node {node} chat {chat_id}: event {index} has seq {}",
                        event.seq
                    )));
                }
                if let EventBody::Message { client_msg_id, .. } = &event.body {
                    if seen.insert(client_msg_id, event.seq).is_some() {
                        violations.push(Violation(format!(
                            "G2: node {node} chat {chat_id}: {client_msg_id} appears twice"
                        )));
                    }
                }
            }
            for (client_msg_id, seq) in acked {
                match seen.get(client_msg_id.as_str()) {
                    None => violations.push(Violation(format!(
                        "G1: node {node} chat {chat_id}: acknowledged {client_msg_id} is missing"
                    ))),
                    Some(found) if found != seq => violations.push(Violation(format!(
                        "G1: node {node} chat {chat_id}: {client_msg_id} acknowledged at {seq} \
                         but stored at {found}"
                    ))),
                    Some(_) => {}
                }
            }
        }
        violations
    }
}

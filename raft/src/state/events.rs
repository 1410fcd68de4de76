//! A chat's events and its client message ids, each held behind an `Arc`.
//!
//! The copy of the state a snapshot is built from shares every chat with the state (chats sit
//! in `Arc`s, copied on their first change). With the events held by value, the first post to
//! a chat after a snapshot copied all of the chat's events (up to
//! [`crate::limits::CHAT_EVENTS_MAX`], with their texts) on the write path. Here that copy
//! copies pointers: one per event and one per id, no text. (Persistent collections made the
//! copy cheaper still but cost about 9 KiB more per short chat: docs/BENCHMARKS.md.) They
//! serialize as the plain vector and the sorted map did, so snapshots, digests and the
//! fixtures of earlier formats do not change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ChatEvent;

/// A chat's events in order: `events[i].seq == i + 1`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChatEvents(Vec<std::sync::Arc<ChatEvent>>);

impl ChatEvents {
    /// How many events the chat has.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the chat has none (never, once started).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The event at `index` (seq `index + 1`).
    pub fn get(&self, index: usize) -> Option<&ChatEvent> {
        self.0.get(index).map(|e| &**e)
    }

    /// The first event (`Started`).
    pub fn first(&self) -> Option<&ChatEvent> {
        self.0.first().map(|e| &**e)
    }

    /// The latest event.
    pub fn last(&self) -> Option<&ChatEvent> {
        self.0.last().map(|e| &**e)
    }

    /// Every event, in order.
    pub fn iter(&self) -> impl Iterator<Item = &ChatEvent> + '_ {
        self.0.iter().map(|e| &**e)
    }

    /// The events at `start..end` (clamped to the events there are): a page read costs the
    /// page, not the events before it.
    pub fn range(&self, start: usize, end: usize) -> impl Iterator<Item = &ChatEvent> + '_ {
        let end = end.min(self.0.len());
        self.0[start.min(end)..end].iter().map(|e| &**e)
    }

    /// The events from `start` on.
    pub fn from(&self, start: usize) -> impl Iterator<Item = &ChatEvent> + '_ {
        self.range(start, usize::MAX)
    }

    /// Appends an event.
    pub fn push(&mut self, event: ChatEvent) {
        self.0.push(std::sync::Arc::new(event));
    }

    /// Removes the event at `index` (tests break a chat's invariants so).
    #[cfg(test)]
    pub(crate) fn remove(&mut self, index: usize) -> ChatEvent {
        (*self.0.remove(index)).clone()
    }
}

impl<'a> IntoIterator for &'a ChatEvents {
    type Item = &'a ChatEvent;
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, std::sync::Arc<ChatEvent>>,
        fn(&'a std::sync::Arc<ChatEvent>) -> &'a ChatEvent,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|e| &**e)
    }
}

impl std::ops::Index<usize> for ChatEvents {
    type Output = ChatEvent;

    fn index(&self, index: usize) -> &ChatEvent {
        &self.0[index]
    }
}

impl FromIterator<ChatEvent> for ChatEvents {
    fn from_iter<I: IntoIterator<Item = ChatEvent>>(events: I) -> Self {
        ChatEvents(events.into_iter().map(std::sync::Arc::new).collect())
    }
}

/// `sender key/client message id` to the seq it was given, so a retried post is not applied
/// twice. Hashed (every post looks its id up, and ids of one client often share a long
/// prefix, which a sorted map compares over and over) and serialized in key order, so a
/// snapshot and the digest do not depend on the hash.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ClientMsgIds(std::collections::HashMap<std::sync::Arc<str>, u64>);

impl ClientMsgIds {
    /// The seq given to `key`.
    pub fn get(&self, key: &str) -> Option<&u64> {
        self.0.get(key)
    }

    /// Whether `key` was given a seq.
    pub fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Records `key` as given `seq`.
    pub fn insert(&mut self, key: String, seq: u64) {
        self.0.insert(std::sync::Arc::from(key), seq);
    }

    /// How many ids are recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for ClientMsgIds {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let sorted: BTreeMap<&str, &u64> = self.0.iter().map(|(k, v)| (&**k, v)).collect();
        serializer.collect_map(sorted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::EventBody;

    fn event(seq: u64) -> ChatEvent {
        ChatEvent {
            seq,
            at_ms: seq * 10,
            body: EventBody::Message {
                from: crate::command::Participant::Customer,
                client_msg_id: format!("m{seq}"),
                text: format!("message {seq}"),
            },
            island: None,
        }
    }

    #[test]
    fn events_serialize_as_a_list_and_pages_read_their_range() {
        let events: ChatEvents = (1..=300).map(event).collect();
        let as_vec: Vec<ChatEvent> = (1..=300).map(event).collect();
        assert_eq!(
            serde_json::to_vec(&events).unwrap(),
            serde_json::to_vec(&as_vec).unwrap()
        );
        let back: ChatEvents =
            serde_json::from_slice(&serde_json::to_vec(&as_vec).unwrap()).unwrap();
        assert_eq!(back, events);
        let page: Vec<u64> = events.range(250, 260).map(|e| e.seq).collect();
        assert_eq!(page, (251..=260).collect::<Vec<_>>());
        assert_eq!(events.range(295, usize::MAX).count(), 5);
        assert_eq!(events.range(400, 500).count(), 0);
        assert_eq!(events.range(10, 5).count(), 0);
        assert_eq!(events.from(299).map(|e| e.seq).collect::<Vec<_>>(), [300]);
        assert_eq!(events.first().map(|e| e.seq), Some(1));
        assert_eq!(events.last().map(|e| e.seq), Some(300));
        assert_eq!(events[41].seq, 42);
    }

    #[test]
    fn a_copy_shares_until_changed_and_changes_stay_apart() {
        let mut events: ChatEvents = (1..=1000).map(event).collect();
        let copy = events.clone();
        events.push(event(1001));
        assert_eq!(copy.len(), 1000);
        assert_eq!(events.len(), 1001);
        assert_eq!(
            events.range(0, 1000).collect::<Vec<_>>(),
            copy.iter().collect::<Vec<_>>()
        );

        let mut ids = ClientMsgIds::default();
        for n in (0..100).rev() {
            ids.insert(format!("k{n:03}"), n);
        }
        let before = ids.clone();
        ids.insert("k999".to_owned(), 999);
        assert!(!before.contains_key("k999") && ids.contains_key("k999"));
        let json = serde_json::to_string(&before).unwrap();
        assert!(json.starts_with("{\"k000\":0,\"k001\":1,"), "{json}");
        let back: ClientMsgIds = serde_json::from_str(&json).unwrap();
        assert_eq!(back, before);
    }
}

//! How log entries become the bytes stored under their index, and back.
//!
//! The store is generic over openraft's type config and knows nothing of what an entry holds,
//! so the encoding is the type config's choice ([`EntryCodec`]): Parley's picks JSON or its
//! binary format entry by entry from the log format the entry was written in (the `raft`
//! crate's `codec`), and the store only keeps what it is given. [`json`] is the plain JSON
//! encoding, for type configs that need nothing else.

use openraft::RaftTypeConfig;

/// Why an entry could not be encoded or decoded, as the type config's codec reported it.
pub type EntryCodecError = Box<dyn std::error::Error + Send + Sync>;

/// The encoding of a type config's log entries in the store. Decoding must accept everything
/// an earlier release of the same type config encoded (a node restarts on its old log).
pub trait EntryCodec: RaftTypeConfig {
    /// The bytes stored for `entry`.
    fn encode_entry(entry: &Self::Entry) -> Result<Vec<u8>, EntryCodecError>;

    /// The entry `bytes` stand for. Never panics, whatever the bytes.
    fn decode_entry(bytes: &[u8]) -> Result<Self::Entry, EntryCodecError>;
}

/// Entries stored as JSON.
pub mod json {
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    use super::EntryCodecError;

    /// `entry` as JSON.
    pub fn encode<E: Serialize>(entry: &E) -> Result<Vec<u8>, EntryCodecError> {
        Ok(serde_json::to_vec(entry)?)
    }

    /// The entry whose JSON `bytes` are.
    pub fn decode<E: DeserializeOwned>(bytes: &[u8]) -> Result<E, EntryCodecError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

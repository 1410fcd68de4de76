//! Chat tokens: a keyed BLAKE3 hash of the chat id under a key derived from the cluster secret.
//!
//! A token is computed, not stored, so any node that shares the secret can check it, and it opens
//! exactly the chat it was made for.

/// Issues and checks chat tokens.
#[derive(Clone)]
pub struct ChatTokens {
    /// Derived from the cluster secret (see `Config::token_key`).
    key: [u8; 32],
}

impl ChatTokens {
    /// Tokens under `key`.
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, chat_id: &str) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(b"chat:");
        hasher.update(chat_id.as_bytes());
        hasher.finalize()
    }

    /// The token for `chat_id` (64 hex characters).
    pub fn issue(&self, chat_id: &str) -> String {
        self.mac(chat_id).to_hex().to_string()
    }

    /// Whether `token` opens `chat_id`. Compares in constant time.
    pub fn verify(&self, chat_id: &str, token: &str) -> bool {
        match blake3::Hash::from_hex(token) {
            Ok(given) => given == self.mac(chat_id),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_its_chat_only() {
        let tokens = ChatTokens::new([7; 32]);
        let token = tokens.issue("chat-a");
        assert!(tokens.verify("chat-a", &token));
        assert!(!tokens.verify("chat-b", &token));
        assert!(!tokens.verify("chat-a", "not-hex"));
        assert!(!tokens.verify("chat-a", ""));
        let other_cluster = ChatTokens::new([8; 32]);
        assert!(!other_cluster.verify("chat-a", &token));
    }
}

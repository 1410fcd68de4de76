//! Tokens: keyed BLAKE3 hashes under a key derived from the cluster secret.
//!
//! A token is computed, not stored, so any node that shares the secret can check it. A chat
//! token opens exactly the chat it was made for. An agent token names the agent and a login
//! session; it is valid on every node for as long as the replicated state says that session is
//! the agent's current one (logout or a newer login ends it everywhere at once).

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

/// Prefix of agent tokens, so they cannot be mistaken for chat tokens.
pub const AGENT_TOKEN_PREFIX: &str = "pa1.";

/// An agent token's claims, once its MAC is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentClaims {
    /// The agent.
    pub agent_id: String,
    /// The login session.
    pub session_id: String,
}

/// Issues and checks agent tokens: `pa1.<agent id>.<session id>.<mac>`.
#[derive(Clone)]
pub struct AgentTokens {
    key: [u8; 32],
}

impl AgentTokens {
    /// Tokens under `key` (derived from the cluster secret, distinct from the chat key).
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, agent_id: &str, session_id: &str) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(b"agent:");
        hasher.update(&(agent_id.len() as u64).to_le_bytes());
        hasher.update(agent_id.as_bytes());
        hasher.update(session_id.as_bytes());
        hasher.finalize()
    }

    /// The token for a session.
    pub fn issue(&self, agent_id: &str, session_id: &str) -> String {
        format!(
            "{AGENT_TOKEN_PREFIX}{agent_id}.{session_id}.{}",
            self.mac(agent_id, session_id).to_hex()
        )
    }

    /// The claims of `token` if its MAC is right. Compares in constant time.
    pub fn verify(&self, token: &str) -> Option<AgentClaims> {
        let rest = token.strip_prefix(AGENT_TOKEN_PREFIX)?;
        let mut parts = rest.rsplitn(3, '.');
        let mac = blake3::Hash::from_hex(parts.next()?).ok()?;
        let session_id = parts.next()?;
        let agent_id = parts.next()?;
        if agent_id.is_empty() || session_id.is_empty() {
            return None;
        }
        (mac == self.mac(agent_id, session_id)).then(|| AgentClaims {
            agent_id: agent_id.to_owned(),
            session_id: session_id.to_owned(),
        })
    }
}

/// Hashes a password for storage (argon2id, random salt, the crate's default cost).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::password_hash::PasswordHasher;
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes())?
        .to_string())
}

/// Whether `hash` is a well-formed PHC string.
pub fn is_password_hash(hash: &str) -> bool {
    argon2::password_hash::phc::PasswordHash::new(hash).is_ok()
}

/// A hash no password is known for, checked when a login names an unknown agent so that the
/// answer takes as long as for a known one (same algorithm and cost as [`hash_password`]).
pub fn unknown_agent_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        // A random password, forgotten at once; hashing cannot fail for a 32-byte input, and if
        // it did the fallback PHC string still fails every check.
        let password = uuid::Uuid::new_v4().simple().to_string();
        hash_password(&password)
            .unwrap_or_else(|_| "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aW52YWxpZA".to_owned())
    })
}

/// Whether `password` matches the PHC string `hash`. Costs tens of milliseconds by design: run
/// it off the async workers.
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_token_names_its_agent_and_session_only() {
        let tokens = AgentTokens::new([3; 32]);
        let token = tokens.issue("ali.ce", "s-1");
        assert_eq!(
            tokens.verify(&token),
            Some(AgentClaims {
                agent_id: "ali.ce".into(),
                session_id: "s-1".into()
            })
        );
        let forged = token.replace("ali.ce", "bob");
        assert_eq!(tokens.verify(&forged), None);
        assert_eq!(AgentTokens::new([4; 32]).verify(&token), None);
        assert_eq!(tokens.verify("pa1.x"), None);
        assert_eq!(tokens.verify(""), None);
        // A chat token is not an agent token.
        assert_eq!(tokens.verify(&ChatTokens::new([3; 32]).issue("c")), None);
    }

    #[test]
    fn passwords_verify_against_their_hash_only() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

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

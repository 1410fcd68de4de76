//! Tokens: keyed BLAKE3 MACs under the cluster's token keys.
//!
//! A token is computed, not stored, so any node that has the keys can check it. Every token
//! names the key that signed it: one key is active (signs new tokens), others listed are
//! verify-only, so a key is rotated without logging anyone out. A chat token opens exactly the
//! chat it was made for, until it expires. An agent token names the agent and a login session;
//! it is valid on every node for as long as the replicated state says that session is the
//! agent's current one (logout or a newer login ends it everywhere at once).

/// One signing key: its id (named in every token it signs) and the keys derived from its
/// secret for each kind of token.
#[derive(Clone)]
pub struct TokenKey {
    /// Named in tokens, so a node knows which key checks them.
    pub id: String,
    chat: [u8; 32],
    agent: [u8; 32],
}

impl TokenKey {
    /// The key `id` with the given secret (at least 32 bytes; config validation checks it).
    pub fn new(id: impl Into<String>, secret: &[u8]) -> Self {
        Self {
            id: id.into(),
            chat: blake3::derive_key("parley chat token key v1", secret),
            agent: blake3::derive_key("parley agent token key v1", secret),
        }
    }
}

/// Shows the key's id, never its secret.
impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The cluster's token keys: one active key signs new tokens; every key listed verifies. To
/// rotate, add a new key as active and keep the old one listed (verify-only) for as long as
/// tokens it signed should work; then remove it.
#[derive(Clone, Debug)]
pub struct TokenKeys {
    active: TokenKey,
    /// Every key by id, the active one included.
    all: std::collections::BTreeMap<String, TokenKey>,
}

impl TokenKeys {
    /// `active` signs; `verify_only` check tokens too. Ids are unique (config validation).
    pub fn new(active: TokenKey, verify_only: Vec<TokenKey>) -> Self {
        let mut all: std::collections::BTreeMap<String, TokenKey> = verify_only
            .into_iter()
            .map(|key| (key.id.clone(), key))
            .collect();
        all.insert(active.id.clone(), active.clone());
        Self { active, all }
    }

    fn get(&self, id: &str) -> Option<&TokenKey> {
        self.all.get(id)
    }
}

/// Prefix of chat tokens: `pc1.<key id>.<expiry, s since the Unix epoch>.<mac>`.
pub const CHAT_TOKEN_PREFIX: &str = "pc1.";

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Issues and checks chat tokens. A chat token opens one chat until it expires.
#[derive(Clone)]
pub struct ChatTokens {
    keys: TokenKeys,
    /// How long a token opens its chat.
    ttl: std::time::Duration,
}

impl ChatTokens {
    /// Tokens under `keys`, each valid for `ttl`.
    pub fn new(keys: TokenKeys, ttl: std::time::Duration) -> Self {
        Self { keys, ttl }
    }

    fn mac(key: &TokenKey, chat_id: &str, expires_s: u64) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&key.chat);
        hasher.update(b"chat:");
        hasher.update(&expires_s.to_le_bytes());
        hasher.update(chat_id.as_bytes());
        hasher.finalize()
    }

    /// A token for `chat_id`, signed by the active key, expiring `ttl` from now.
    pub fn issue(&self, chat_id: &str) -> String {
        self.issue_at(chat_id, now_s())
    }

    fn issue_at(&self, chat_id: &str, now_s: u64) -> String {
        let key = &self.keys.active;
        let expires_s = now_s.saturating_add(self.ttl.as_secs());
        format!(
            "{CHAT_TOKEN_PREFIX}{}.{expires_s}.{}",
            key.id,
            Self::mac(key, chat_id, expires_s).to_hex()
        )
    }

    /// Whether `token` opens `chat_id` now: a listed key signed it for this chat and it has
    /// not expired. Compares in constant time.
    pub fn verify(&self, chat_id: &str, token: &str) -> bool {
        self.verify_at(chat_id, token, now_s())
    }

    fn verify_at(&self, chat_id: &str, token: &str, now_s: u64) -> bool {
        let Some(rest) = token.strip_prefix(CHAT_TOKEN_PREFIX) else {
            return false;
        };
        let mut parts = rest.splitn(3, '.');
        let (Some(key_id), Some(expires), Some(mac)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let (Some(key), Ok(expires_s), Ok(mac)) = (
            self.keys.get(key_id),
            expires.parse::<u64>(),
            blake3::Hash::from_hex(mac),
        ) else {
            return false;
        };
        mac == Self::mac(key, chat_id, expires_s) && now_s <= expires_s
    }
}

/// Prefix of agent tokens, so they cannot be mistaken for chat tokens.
pub const AGENT_TOKEN_PREFIX: &str = "pa2.";

/// An agent token's claims, once its MAC is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentClaims {
    /// The agent.
    pub agent_id: String,
    /// The login session.
    pub session_id: String,
}

/// Issues and checks agent tokens: `pa2.<key id>.<agent id>.<session id>.<mac>`. A token
/// lasts as long as its session (logout or a newer login ends it everywhere) and its key.
#[derive(Clone)]
pub struct AgentTokens {
    keys: TokenKeys,
}

impl AgentTokens {
    /// Tokens under `keys`.
    pub fn new(keys: TokenKeys) -> Self {
        Self { keys }
    }

    fn mac(key: &TokenKey, agent_id: &str, session_id: &str) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&key.agent);
        hasher.update(b"agent:");
        hasher.update(&(agent_id.len() as u64).to_le_bytes());
        hasher.update(agent_id.as_bytes());
        hasher.update(session_id.as_bytes());
        hasher.finalize()
    }

    /// The token for a session, signed by the active key.
    pub fn issue(&self, agent_id: &str, session_id: &str) -> String {
        let key = &self.keys.active;
        format!(
            "{AGENT_TOKEN_PREFIX}{}.{agent_id}.{session_id}.{}",
            key.id,
            Self::mac(key, agent_id, session_id).to_hex()
        )
    }

    /// The claims of `token` if a listed key signed it. Compares in constant time.
    pub fn verify(&self, token: &str) -> Option<AgentClaims> {
        let rest = token.strip_prefix(AGENT_TOKEN_PREFIX)?;
        // Key ids hold no '.', session ids neither; agent ids may.
        let (key_id, rest) = rest.split_once('.')?;
        let key = self.keys.get(key_id)?;
        let mut parts = rest.rsplitn(3, '.');
        let mac = blake3::Hash::from_hex(parts.next()?).ok()?;
        let session_id = parts.next()?;
        let agent_id = parts.next()?;
        if agent_id.is_empty() || session_id.is_empty() {
            return None;
        }
        (mac == Self::mac(key, agent_id, session_id)).then(|| AgentClaims {
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

    fn keys(active: &str, verify_only: &[&str]) -> TokenKeys {
        TokenKeys::new(
            TokenKey::new(
                active,
                format!("secret of {active} padded to 32+ bytes").as_bytes(),
            ),
            verify_only
                .iter()
                .map(|id| {
                    TokenKey::new(
                        *id,
                        format!("secret of {id} padded to 32+ bytes").as_bytes(),
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn an_agent_token_names_its_agent_and_session_only() {
        let tokens = AgentTokens::new(keys("k1", &[]));
        let token = tokens.issue("ali.ce", "s-1");
        assert!(token.starts_with("pa2.k1."));
        assert_eq!(
            tokens.verify(&token),
            Some(AgentClaims {
                agent_id: "ali.ce".into(),
                session_id: "s-1".into()
            })
        );
        let forged = token.replace("ali.ce", "bob");
        assert_eq!(tokens.verify(&forged), None);
        // The same key id with another secret, or a key id swapped in, is refused.
        let other = TokenKeys::new(
            TokenKey::new("k1", b"another secret of 32 bytes or more"),
            vec![],
        );
        assert_eq!(AgentTokens::new(other).verify(&token), None);
        assert_eq!(tokens.verify(&token.replacen("k1", "k2", 1)), None);
        assert_eq!(tokens.verify("pa2.x"), None);
        assert_eq!(tokens.verify(""), None);
        // A chat token is not an agent token.
        let chat = ChatTokens::new(keys("k1", &[]), std::time::Duration::from_secs(60));
        assert_eq!(tokens.verify(&chat.issue("c")), None);
    }

    #[test]
    fn rotation_keeps_old_tokens_until_their_key_is_removed() {
        let ttl = std::time::Duration::from_secs(3600);
        let before = ChatTokens::new(keys("old", &[]), ttl);
        let chat = before.issue("c1");
        let agent = AgentTokens::new(keys("old", &[])).issue("alice", "s1");
        // "new" active, "old" verify-only: old tokens still work, new ones are signed by "new".
        let during = ChatTokens::new(keys("new", &["old"]), ttl);
        assert!(during.verify("c1", &chat));
        assert!(during.issue("c1").starts_with("pc1.new."));
        let agents = AgentTokens::new(keys("new", &["old"]));
        assert!(agents.verify(&agent).is_some());
        // "old" removed: its tokens stop working; the new ones keep working.
        let after = ChatTokens::new(keys("new", &[]), ttl);
        assert!(!after.verify("c1", &chat));
        assert!(after.verify("c1", &during.issue("c1")));
        assert!(AgentTokens::new(keys("new", &[])).verify(&agent).is_none());
    }

    #[test]
    fn a_chat_token_opens_its_chat_until_it_expires() {
        let tokens = ChatTokens::new(keys("k", &[]), std::time::Duration::from_secs(100));
        let token = tokens.issue_at("c1", 1_000);
        assert!(tokens.verify_at("c1", &token, 1_000));
        assert!(tokens.verify_at("c1", &token, 1_100));
        assert!(!tokens.verify_at("c1", &token, 1_101));
        assert!(!tokens.verify_at("c2", &token, 1_000));
        // A later expiry written into the token breaks its MAC.
        let extended = token.replace(".1100.", ".9999.");
        assert!(!tokens.verify_at("c1", &extended, 1_000));
        for garbage in ["", "pc1.", "pc1.k", "pc1.k.x.y", "0123abcd"] {
            assert!(!tokens.verify_at("c1", garbage, 1_000), "{garbage}");
        }
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
        let ttl = std::time::Duration::from_secs(60);
        let tokens = ChatTokens::new(keys("k", &[]), ttl);
        let token = tokens.issue("chat-a");
        assert!(tokens.verify("chat-a", &token));
        assert!(!tokens.verify("chat-b", &token));
        assert!(!tokens.verify("chat-a", "not-hex"));
        assert!(!tokens.verify("chat-a", ""));
        let other_secret = TokenKeys::new(
            TokenKey::new("k", b"another secret of 32 bytes or more"),
            vec![],
        );
        let other_cluster = ChatTokens::new(other_secret, ttl);
        assert!(!other_cluster.verify("chat-a", &token));
    }
}

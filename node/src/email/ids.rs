//! Our own Message-IDs and subject tags, which name a case and carry a MAC so they cannot be
//! forged: a mail that names a case this way threads to it; one whose MAC does not check out
//! is treated as naming nothing.
//!
//! - Message-ID: `parley.<case>.<reply>.<mac>@<domain>`, the MAC over the case id (16 hex).
//! - Subject tag: `[#<case>-<mac>]`, a shorter MAC over the case id (8 hex), kept by mail
//!   clients that rewrite every header but the subject.
//!
//! The key is derived from the cluster secret, so every node checks what any node made. The
//! check runs on the proposing node (the fetcher); `apply` holds no secret and trusts the case
//! the command names only if that case exists.

/// Case ids are this many lowercase hex digits (short enough for a subject).
pub const CASE_ID_HEX: usize = 12;
const MESSAGE_ID_MAC_HEX: usize = 16;
const TAG_MAC_HEX: usize = 8;
const PREFIX: &str = "parley.";

/// The MAC key.
#[derive(Clone)]
pub struct ThreadMac {
    key: [u8; 32],
}

impl std::fmt::Debug for ThreadMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ThreadMac(..)")
    }
}

impl ThreadMac {
    /// The key every node of the cluster derives from its secret.
    pub fn from_cluster_secret(secret: &str) -> Self {
        Self {
            key: blake3::derive_key("parley email thread mac v1", secret.as_bytes()),
        }
    }

    fn mac(&self, purpose: &str, case_id: &str, hex: usize) -> String {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(purpose.as_bytes());
        hasher.update(b"\0");
        hasher.update(case_id.as_bytes());
        let mut mac = hasher.finalize().to_hex().to_string();
        mac.truncate(hex);
        mac
    }

    /// A Message-ID (without angle brackets) for reply `reply_id` of `case_id`, at `domain`.
    pub fn message_id(&self, case_id: &str, reply_id: &str, domain: &str) -> String {
        let reply: String = reply_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(32)
            .collect();
        format!(
            "{PREFIX}{case_id}.{reply}.{}@{domain}",
            self.mac("message-id", case_id, MESSAGE_ID_MAC_HEX)
        )
    }

    /// The subject tag of `case_id`.
    pub fn subject_tag(&self, case_id: &str) -> String {
        format!("[#{case_id}-{}]", self.mac("tag", case_id, TAG_MAC_HEX))
    }

    /// The case a Message-ID of ours names, if its MAC checks out.
    pub fn case_of_message_id(&self, message_id: &str) -> Option<String> {
        let local = message_id.trim_matches(['<', '>']).split('@').next()?;
        let rest = local.strip_prefix(PREFIX)?;
        let mut parts = rest.split('.');
        let (case_id, _reply, mac) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !is_case_id(case_id) {
            return None;
        }
        let expected = self.mac("message-id", case_id, MESSAGE_ID_MAC_HEX);
        constant_time_eq(mac.as_bytes(), expected.as_bytes()).then(|| case_id.to_owned())
    }

    /// The case named by the last valid tag in `subject`.
    pub fn case_of_subject(&self, subject: &str) -> Option<String> {
        subject
            .match_indices("[#")
            .filter_map(|(at, _)| {
                let rest = &subject[at + 2..];
                let tag = &rest[..rest.find(']')?];
                let (case_id, mac) = tag.split_once('-')?;
                let expected = self.mac("tag", case_id, TAG_MAC_HEX);
                (is_case_id(case_id) && constant_time_eq(mac.as_bytes(), expected.as_bytes()))
                    .then(|| case_id.to_owned())
            })
            .last()
    }

    /// The case named by a valid Message-ID of ours anywhere in `raw` (a bounce or
    /// auto-reply quotes the mail it is about in its body or an attached part).
    pub fn case_in_raw(&self, raw: &[u8]) -> Option<String> {
        let prefix = PREFIX.as_bytes();
        let mut found = None;
        let mut from = 0;
        while let Some(at) = find(&raw[from..], prefix) {
            let start = from + at;
            let end = raw[start..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'@' | b'-')))
                .map_or(raw.len(), |n| start + n);
            if let Ok(candidate) = std::str::from_utf8(&raw[start..end]) {
                if let Some(case) = self.case_of_message_id(candidate) {
                    found = Some(case);
                }
            }
            from = start + prefix.len();
        }
        found
    }
}

/// A new case id.
pub fn new_case_id() -> String {
    let mut id = uuid::Uuid::new_v4().simple().to_string();
    id.truncate(CASE_ID_HEX);
    id
}

fn is_case_id(id: &str) -> bool {
    id.len() == CASE_ID_HEX && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_ids_and_tags_name_their_case_and_forgeries_name_nothing() {
        let mac = ThreadMac::from_cluster_secret("a cluster secret of at least 32 bytes!!");
        let case = new_case_id();
        let id = mac.message_id(&case, "5f1c-2a", "example.test");
        assert!(id.ends_with("@example.test"));
        assert_eq!(mac.case_of_message_id(&id), Some(case.clone()));
        assert_eq!(
            mac.case_of_message_id(&format!("<{id}>")),
            Some(case.clone())
        );
        let tag = mac.subject_tag(&case);
        assert_eq!(
            mac.case_of_subject(&format!("AW: Re: Your order {tag}")),
            Some(case.clone())
        );
        // Another case id with this MAC, or this case under another cluster's key.
        let other = "0123456789ab";
        assert_eq!(mac.case_of_message_id(&id.replace(&case, other)), None);
        assert_eq!(mac.case_of_subject(&tag.replace(&case, other)), None);
        let foreign = ThreadMac::from_cluster_secret("another cluster secret, 32 bytes long");
        assert_eq!(foreign.case_of_message_id(&id), None);
        assert_eq!(foreign.case_of_subject(&tag), None);
        assert_eq!(mac.case_of_subject("[#nothing] [#-] [#"), None);
        // Found in a bounce's quoted headers.
        let bounce = format!("Original-Recipient: x\r\nMessage-ID: <{id}>\r\n");
        assert_eq!(mac.case_in_raw(bounce.as_bytes()), Some(case));
        assert_eq!(mac.case_in_raw(b"parley. parley.x@y"), None);
    }
}

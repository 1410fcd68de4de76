//! A fetched mail's bytes into what the cluster keeps of it ([`InboundEmail`]) and the cases
//! it names by MAC ([`ThreadHints`]), with every field bounded (`parley_raft::limits`).
//!
//! - Message-ID: the mail's own, or, when it has none (or an unusable one), one made from a
//!   hash of the raw bytes, so fetching the same mail again deduplicates all the same.
//! - Bodies: the first text part; the first HTML part sanitized (ammonia: no scripts, styles,
//!   event handlers or remote-loading attributes) and, when there is no text part, turned into
//!   text.
//! - Attachments: each listed (name, type, size, BLAKE3); the bytes of those within
//!   `limits::MAIL_ATTACHMENT_STORED_BYTES_MAX` go along for storing, in the mail's order while
//!   they fit `limits::MAIL_ATTACHMENTS_STORED_BYTES_MAX` together, once per hash (`apply`
//!   says which were stored and why the others were not).
//! - Kind: a DSN (`multipart/report; report-type=delivery-status`, or from `MAILER-DAEMON`) is
//!   a bounce; `Auto-Submitted` other than `no`, `X-Autoreply`, `X-Autorespond`,
//!   `Precedence: bulk|junk|list|auto_reply`, or mail from one of our own mailboxes is an
//!   auto-reply. Neither ever opens a case.

use base64::Engine;
use mail_parser::{HeaderValue, Message, MessageParser, MimeHeaders};
use parley_raft::command::email::{
    AttachmentContent, AttachmentMeta, InboundEmail, MailKind, ThreadHints,
};
use parley_raft::limits;

use super::ids::ThreadMac;

/// A fetched mail as the cluster takes it in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// What is kept of it.
    pub email: InboundEmail,
    /// The cases it names by MAC.
    pub hints: ThreadHints,
    /// The bytes of its attachments to store.
    pub contents: Vec<AttachmentContent>,
}

/// Parses `raw`, a whole mail (or only its header when it was too large to take whole:
/// `truncated`).
pub fn parse(raw: &[u8], truncated: bool, mac: &ThreadMac, own_addresses: &[String]) -> Parsed {
    let size_bytes = raw.len() as u64;
    let Some(message) = MessageParser::new().parse(raw) else {
        let email = InboundEmail {
            message_id: hashed_message_id(raw),
            in_reply_to: Vec::new(),
            references: Vec::new(),
            from: String::new(),
            from_name: String::new(),
            subject: "(a mail that could not be read)".to_owned(),
            text: String::new(),
            html: String::new(),
            attachments: Vec::new(),
            kind: MailKind::Normal,
            size_bytes,
        };
        return Parsed {
            email,
            hints: ThreadHints::default(),
            contents: Vec::new(),
        };
    };
    let message_id = message
        .message_id()
        .map(|id| id.trim().to_owned())
        .filter(|id| usable_id(id))
        .unwrap_or_else(|| hashed_message_id(raw));
    let mut in_reply_to = ids(message.in_reply_to());
    let mut references = ids(message.references());
    // The newest ids matter for threading: keep the tail within the bound.
    in_reply_to.truncate(limits::MAIL_THREAD_IDS_MAX / 4);
    let room = limits::MAIL_THREAD_IDS_MAX - in_reply_to.len();
    if references.len() > room {
        references.drain(..references.len() - room);
    }
    let (from, from_name) = message
        .from()
        .and_then(|list| list.first())
        .map(|addr| {
            (
                addr.address().unwrap_or_default().trim().to_owned(),
                addr.name().unwrap_or_default().trim().to_owned(),
            )
        })
        .unwrap_or_default();
    let from = if from.len() <= limits::EMAIL_BYTES_MAX {
        from
    } else {
        String::new()
    };
    let subject = clean_line(message.subject().unwrap_or_default());
    let kind = kind(&message, &from, own_addresses);
    let html = message
        .html_part(0)
        .filter(|part| part.is_text_html())
        .and_then(|part| part.text_contents())
        .map(ammonia::clean)
        .filter(|html| html.len() <= limits::MAIL_HTML_BYTES_MAX)
        .unwrap_or_default();
    let text_part = message
        .text_part(0)
        .filter(|part| part.is_text() && !part.is_text_html())
        .and_then(|part| part.text_contents())
        .map(str::to_owned);
    let mut text = match text_part {
        Some(text) => text,
        None if !html.is_empty() => html_to_text(&html),
        None => String::new(),
    };
    if truncated {
        text = format!(
            "[This mail is larger than {} MiB: only its header was taken in.]",
            limits::MAIL_RAW_BYTES_MAX / (1024 * 1024)
        );
    }
    let mut attachments = Vec::new();
    let mut contents: Vec<AttachmentContent> = Vec::new();
    let mut budget = limits::MAIL_ATTACHMENTS_STORED_BYTES_MAX;
    for part in message.attachments().take(limits::MAIL_ATTACHMENTS_MAX) {
        let bytes = part.contents();
        let size_bytes = bytes.len() as u64;
        let blake3 = blake3::hash(bytes).to_hex().to_string();
        let content_type = part
            .content_type()
            .map(|ct| match ct.subtype() {
                Some(sub) => format!("{}/{sub}", ct.ctype()),
                None => ct.ctype().to_owned(),
            })
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        let fits = size_bytes <= limits::MAIL_ATTACHMENT_STORED_BYTES_MAX && size_bytes <= budget;
        if fits && !contents.iter().any(|c| c.blake3 == blake3) {
            budget -= size_bytes;
            contents.push(AttachmentContent {
                blake3: blake3.clone(),
                base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            });
        }
        attachments.push(AttachmentMeta {
            name: clip(
                &clean_line(part.attachment_name().unwrap_or_default()),
                limits::NAME_BYTES_MAX,
            ),
            content_type: clip(&content_type, limits::NAME_BYTES_MAX),
            size_bytes,
            blake3,
            stored: false,
            not_stored: None,
        });
    }
    let hints = ThreadHints {
        our_message_case: in_reply_to
            .iter()
            .chain(references.iter().rev())
            .find_map(|id| mac.case_of_message_id(id))
            .or_else(|| match kind {
                MailKind::Normal => None,
                MailKind::AutoReply | MailKind::Bounce => mac.case_in_raw(raw),
            }),
        subject_case: mac.case_of_subject(&subject),
    };
    let email = InboundEmail {
        message_id,
        in_reply_to,
        references,
        from,
        from_name: clip(&clean_line(&from_name), limits::NAME_BYTES_MAX),
        subject: clip(&subject, limits::MAIL_SUBJECT_BYTES_MAX),
        text: clip_text(&text, limits::MAIL_TEXT_BYTES_MAX),
        html,
        attachments,
        kind,
        size_bytes,
    };
    Parsed {
        email,
        hints,
        contents,
    }
}

fn kind(message: &Message<'_>, from: &str, own_addresses: &[String]) -> MailKind {
    let report = message.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
            && ct
                .attribute("report-type")
                .is_some_and(|t| t.eq_ignore_ascii_case("delivery-status"))
    });
    let daemon = from
        .split('@')
        .next()
        .is_some_and(|local| local.eq_ignore_ascii_case("mailer-daemon"));
    if report || daemon {
        return MailKind::Bounce;
    }
    let header = |name: &str| {
        message
            .header_raw(name)
            .map(|v| v.trim().to_ascii_lowercase())
    };
    let auto_submitted = header("Auto-Submitted").is_some_and(|v| v != "no");
    let precedence = header("Precedence")
        .is_some_and(|v| matches!(v.as_str(), "bulk" | "junk" | "list" | "auto_reply"));
    let flagged = header("X-Autoreply").is_some() || header("X-Autorespond").is_some();
    let ours = own_addresses.iter().any(|a| a.eq_ignore_ascii_case(from));
    if auto_submitted || precedence || flagged || ours {
        MailKind::AutoReply
    } else {
        MailKind::Normal
    }
}

/// The ids of an In-Reply-To or References header, usable ones only.
fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    let list: Vec<String> = match value {
        HeaderValue::Text(id) => vec![id.to_string()],
        HeaderValue::TextList(ids) => ids.iter().map(|id| id.to_string()).collect(),
        _ => Vec::new(),
    };
    list.into_iter()
        .map(|id| id.trim().trim_matches(['<', '>']).to_owned())
        .filter(|id| usable_id(id))
        .collect()
}

fn usable_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= limits::MESSAGE_ID_BYTES_MAX
        && id.bytes().all(|b| b.is_ascii_graphic())
}

/// A stable Message-ID for a mail that has none: the same bytes give the same id.
fn hashed_message_id(raw: &[u8]) -> String {
    let mut hash = blake3::hash(raw).to_hex().to_string();
    hash.truncate(32);
    format!("{hash}@no-message-id.parley.invalid")
}

/// One line of text: control characters out.
fn clean_line(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// At most `max` bytes, cut on a character boundary.
fn clip(value: &str, max: usize) -> String {
    if value.len() <= max {
        return value.to_owned();
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

/// Body text: control characters but newlines and tabs out, cut to `max` bytes with a note.
fn clip_text(value: &str, max: usize) -> String {
    let cleaned: String = value
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect();
    if cleaned.len() <= max {
        return cleaned;
    }
    const NOTE: &str = "\n[… cut: the mail is longer]";
    let mut text = clip(&cleaned, max - NOTE.len());
    text.push_str(NOTE);
    text
}

/// Sanitized HTML as plain text: tags out, block ends as newlines, entities decoded.
fn html_to_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut in_tag = false;
    let mut tag = String::new();
    for c in html.chars() {
        match (in_tag, c) {
            (false, '<') => {
                in_tag = true;
                tag.clear();
            }
            (true, '>') => {
                in_tag = false;
                let name = tag.trim_start_matches('/').to_ascii_lowercase();
                if ["br", "p", "div", "li", "tr", "h1", "h2", "h3"]
                    .iter()
                    .any(|b| name.starts_with(b))
                {
                    text.push('\n');
                }
            }
            (true, c) => tag.push(c),
            (false, c) => text.push(c),
        }
    }
    text.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac() -> ThreadMac {
        ThreadMac::from_cluster_secret("a cluster secret of at least 32 bytes!!")
    }

    #[test]
    fn a_plain_mail_keeps_its_ids_text_and_sender() {
        let raw = b"From: Carol <carol@example.com>\r\nTo: support@example.test\r\n\
            Subject: Where is my order?\r\nMessage-ID: <abc@example.com>\r\n\
            In-Reply-To: <prev@example.com>\r\nReferences: <a@x> <prev@example.com>\r\n\r\n\
            Hello, it has not arrived.\r\n";
        let Parsed { email, hints, .. } = parse(raw, false, &mac(), &[]);
        assert_eq!(email.message_id, "abc@example.com");
        assert_eq!(email.in_reply_to, vec!["prev@example.com"]);
        assert_eq!(email.references, vec!["a@x", "prev@example.com"]);
        assert_eq!(email.from, "carol@example.com");
        assert_eq!(email.from_name, "Carol");
        assert_eq!(email.subject, "Where is my order?");
        assert!(email.text.contains("not arrived"));
        assert_eq!(email.kind, MailKind::Normal);
        assert_eq!(hints, ThreadHints::default());
    }

    #[test]
    fn html_is_sanitized_and_a_mail_without_an_id_gets_a_stable_one() {
        let raw = b"From: a@example.com\r\nSubject: hi\r\nContent-Type: text/html\r\n\r\n\
            <p onclick=\"x()\">Hello <script>alert(1)</script><b>there</b></p>\r\n";
        let email = parse(raw, false, &mac(), &[]).email;
        assert!(!email.html.contains("script") && !email.html.contains("onclick"));
        assert!(email.html.contains("<b>there</b>"));
        assert!(email.text.contains("Hello") && email.text.contains("there"));
        let again = parse(raw, false, &mac(), &[]).email;
        assert_eq!(email.message_id, again.message_id);
        assert!(email.message_id.ends_with(".invalid"));
    }

    #[test]
    fn bounces_and_auto_replies_are_recognised_and_name_their_case() {
        let mac = mac();
        let ours = mac.message_id("0123456789ab", "r1", "example.test");
        let dsn = format!(
            "From: MAILER-DAEMON@example.test (Mail Delivery System)\r\n\
             Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <d@x>\r\n\
             Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nIt failed.\r\n\
             --b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{ours}>\r\n--b--\r\n"
        );
        let Parsed { email, hints, .. } = parse(dsn.as_bytes(), false, &mac, &[]);
        assert_eq!(email.kind, MailKind::Bounce);
        assert_eq!(hints.our_message_case.as_deref(), Some("0123456789ab"));
        let auto = b"From: carol@example.com\r\nAuto-Submitted: auto-replied\r\nSubject: Away\r\n\r\nAway.\r\n";
        assert_eq!(
            parse(auto, false, &mac, &[]).email.kind,
            MailKind::AutoReply
        );
        let own = b"From: support@example.test\r\nSubject: loop\r\n\r\nx\r\n";
        let own_addresses = vec!["Support@example.test".to_owned()];
        assert_eq!(
            parse(own, false, &mac, &own_addresses).email.kind,
            MailKind::AutoReply
        );
        // A normal mail quoting our id in its body does not thread by it.
        let quoted = format!("From: c@example.com\r\nSubject: x\r\n\r\n> {ours}\r\n");
        assert_eq!(
            parse(quoted.as_bytes(), false, &mac, &[])
                .hints
                .our_message_case,
            None
        );
    }

    #[test]
    fn long_bodies_are_cut_on_a_character_boundary() {
        let body = "é".repeat(limits::MAIL_TEXT_BYTES_MAX);
        let raw = format!(
            "From: c@example.com\r\nSubject: long\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
        );
        let email = parse(raw.as_bytes(), false, &mac(), &[]).email;
        assert!(email.text.len() <= limits::MAIL_TEXT_BYTES_MAX);
        assert!(email.text.ends_with("longer]"));
    }

    /// A mail with the given attachments (name, bytes), base64 parts.
    fn with_attachments(files: &[(&str, &[u8])]) -> String {
        let mut raw = String::from(
            "From: c@example.com\r\nSubject: files\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n",
        );
        for (name, bytes) in files {
            raw.push_str(&format!(
                "--b\r\nContent-Type: application/octet-stream\r\n\
                 Content-Disposition: attachment; filename=\"{name}\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ));
        }
        raw.push_str("--b--\r\n");
        raw
    }

    #[test]
    fn attachment_bytes_go_along_within_the_limits_once_per_hash() {
        let max = limits::MAIL_ATTACHMENT_STORED_BYTES_MAX as usize;
        let small = vec![1u8; 1000];
        let large = vec![2u8; max + 1];
        let half = vec![3u8; max];
        let other_half = vec![4u8; max];
        let overflow = vec![5u8; 10];
        let raw = with_attachments(&[
            ("small.bin", &small[..]),
            ("same.bin", &small[..]),
            ("large.bin", &large[..]),
            ("half.bin", &half[..]),
            ("other.bin", &other_half[..]),
            ("overflow.bin", &overflow[..]),
        ]);
        let parsed = parse(raw.as_bytes(), false, &mac(), &[]);
        let names: Vec<&str> = parsed
            .email
            .attachments
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "small.bin",
                "same.bin",
                "large.bin",
                "half.bin",
                "other.bin",
                "overflow.bin"
            ]
        );
        let hash = |bytes: &[u8]| blake3::hash(bytes).to_hex().to_string();
        assert_eq!(parsed.email.attachments[2].size_bytes, large.len() as u64);
        // Once per hash; the large one never; then in order while they fit the mail's total
        // (384 KiB): the second of the limit's size does not (1000 bytes are taken), the 10
        // bytes do.
        let sent: Vec<String> = parsed.contents.iter().map(|c| c.blake3.clone()).collect();
        assert_eq!(sent, [hash(&small), hash(&half), hash(&overflow)]);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&parsed.contents[0].base64)
            .unwrap();
        assert_eq!(decoded, small);
        assert!(parsed.email.attachments.iter().all(|a| !a.stored));
    }
}

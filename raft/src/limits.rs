//! Bounds on every input. `apply` enforces them too, so a command that bypassed the HTTP edge
//! (a forwarded write from a faulty peer) still cannot break the state's invariants.

/// Longest chat message text, in bytes of UTF-8.
pub const MESSAGE_TEXT_BYTES_MAX: usize = 4096;
/// Longest customer or agent display name, in bytes.
pub const NAME_BYTES_MAX: usize = 200;
/// Longest email address, in bytes (RFC 5321 path limit).
pub const EMAIL_BYTES_MAX: usize = 254;
/// Longest pre-chat question, in bytes.
pub const QUESTION_BYTES_MAX: usize = 2000;
/// Longest client-generated id (message id, request id), in bytes.
pub const CLIENT_ID_BYTES_MAX: usize = 128;
/// Longest queue, agent or other directory id, in bytes.
pub const DIRECTORY_ID_BYTES_MAX: usize = 64;
/// Most events one read returns; clients page with `after`.
pub const EVENTS_PAGE_MAX: usize = 1000;
/// Most island writes one merge command carries.
pub const ISLAND_CHUNK_WRITES_MAX: usize = 256;
/// Most bytes of journal entries one merge command carries (a write larger than this still
/// goes, alone).
pub const ISLAND_CHUNK_BYTES_MAX: usize = 256 * 1024;
/// Most writes an island journal holds unmerged; beyond it an island refuses writes (the
/// merge replays them all, so a bound keeps the heal bounded too).
pub const ISLAND_JOURNAL_ENTRIES_MAX: u64 = 1_000_000;
/// Island actions that lost at a merge kept per activity (the oldest go first).
pub const ISLAND_CONFLICTS_PER_ACTIVITY_MAX: usize = 16;
/// Most members one `SetUnreachable` may name.
pub const UNREACHABLE_NODES_MAX: usize = 1024;
/// Most commands the proposer packs into one Raft entry.
pub const BATCH_COMMANDS_MAX: usize = 512;
/// Most events one chat holds; a chat that reaches it takes no more messages.
pub const CHAT_EVENTS_MAX: usize = 10_000;
/// Most chats one customer (by email address) has open at once.
pub const OPEN_CHATS_PER_CUSTOMER_MAX: usize = 3;
/// How many of an agent's most recent feed events are kept for resuming a stream; a client
/// further behind reloads its work list instead.
pub const AGENT_FEED_RETAINED: usize = 2000;
/// How many recent handling times per queue feed the estimated wait time.
pub const HANDLE_TIMES_KEPT: usize = 20;
/// Largest per-channel activity limit of an agent.
pub const AGENT_CHANNEL_LIMIT_MAX: u32 = 50;
/// Longest survey comment, in bytes.
pub const SURVEY_COMMENT_BYTES_MAX: usize = 2000;
/// Longest not-ready reason or activity outcome, in bytes.
pub const REASON_BYTES_MAX: usize = 64;
/// Longest off-hours message, in bytes.
pub const OFF_HOURS_MESSAGE_BYTES_MAX: usize = 500;
/// Most skills one queue requires or one agent has.
pub const SKILLS_PER_ENTRY_MAX: usize = 32;
/// Most opening intervals in one queue's business hours.
pub const OPEN_INTERVALS_MAX: usize = 28;
/// Shortest offer timeout, in ms.
pub const OFFER_TIMEOUT_MS_MIN: u64 = 1_000;
/// Longest offer timeout, in ms.
pub const OFFER_TIMEOUT_MS_MAX: u64 = 3_600_000;
/// Longest customer inactivity timeout, in ms (0 disables it).
pub const INACTIVITY_TIMEOUT_MS_MAX: u64 = 86_400_000;
/// Furthest in the future a callback may be requested, in ms (30 days).
pub const CALLBACK_AHEAD_MS_MAX: u64 = 30 * 86_400_000;
/// Default time an activity that is over stays in memory, in ms (1 hour).
pub const RETENTION_HOT_MS_DEFAULT: u64 = 3_600_000;
/// Default time a retired activity stays in the archive, in ms (30 days).
pub const RETENTION_ARCHIVE_MS_DEFAULT: u64 = 30 * 86_400_000;
/// Shortest retention, in memory or in the archive, in ms.
pub const RETENTION_MS_MIN: u64 = 1_000;
/// Longest time in memory, in ms (30 days).
pub const RETENTION_HOT_MS_MAX: u64 = 30 * 86_400_000;
/// Longest time in the archive, in ms (10 years).
pub const RETENTION_ARCHIVE_MS_MAX: u64 = 3650 * 86_400_000;
/// Longest time between two purges of the archive, in ms (1 hour); shorter archive retentions
/// purge at a tenth of the retention.
pub const ARCHIVE_PURGE_INTERVAL_MS_MAX: u64 = 3_600_000;
/// Longest argon2 PHC string accepted as a password hash, in bytes.
pub const PASSWORD_HASH_BYTES_MAX: usize = 256;
/// Most log entries a learner may be behind the leader and still be promoted to voter, or a
/// voter and still count as healthy when a removal is checked.
pub const MEMBER_ENTRIES_BEHIND_MAX: u64 = 100;
/// Longest a member may have gone without acknowledging the leader and still count as healthy,
/// in ms.
pub const MEMBER_ACK_MS_MAX: u64 = 3_000;
/// Longest `host:port` address in a membership change, in bytes.
pub const ADDRESS_BYTES_MAX: usize = 255;
/// Most mailboxes in the directory.
pub const MAILBOXES_MAX: usize = 64;
/// Longest host name of a mail server, in bytes.
pub const MAIL_HOST_BYTES_MAX: usize = 253;
/// Longest IMAP folder name or login name, in bytes.
pub const MAIL_NAME_BYTES_MAX: usize = 255;
/// Longest secret reference (an environment variable's name or a file path), in bytes.
pub const SECRET_REF_BYTES_MAX: usize = 4096;
/// Longest lease name, in bytes.
pub const LEASE_NAME_BYTES_MAX: usize = 128;
/// Most leases the state holds.
pub const LEASES_MAX: usize = 2 * MAILBOXES_MAX + 16;
/// Shortest lease, in ms.
pub const LEASE_DURATION_MS_MIN: u64 = 1_000;
/// Longest lease, in ms.
pub const LEASE_DURATION_MS_MAX: u64 = 600_000;
/// Longest Message-ID, in bytes (a header line's length).
pub const MESSAGE_ID_BYTES_MAX: usize = 998;
/// Most In-Reply-To plus References ids kept from one mail (the newest).
pub const MAIL_THREAD_IDS_MAX: usize = 32;
/// Longest subject, in bytes.
pub const MAIL_SUBJECT_BYTES_MAX: usize = 998;
/// Longest plain-text body kept of a mail or reply, in bytes (longer ones are cut by the
/// fetching node, which says so in the text).
pub const MAIL_TEXT_BYTES_MAX: usize = 64 * 1024;
/// Longest sanitized HTML body kept of a mail, in bytes (longer ones are dropped; the text
/// stays).
pub const MAIL_HTML_BYTES_MAX: usize = 128 * 1024;
/// Most attachments listed per mail.
pub const MAIL_ATTACHMENTS_MAX: usize = 32;
/// Largest attachment whose bytes are stored, in bytes; a larger one is listed with
/// `stored: false`. Its bytes travel base64 in the Raft entry that takes its mail in, which
/// must replicate within one heartbeat (see docs/ARCHITECTURE.md, "The email channel").
pub const MAIL_ATTACHMENT_STORED_BYTES_MAX: u64 = 256 * 1024;
/// Most attachment bytes stored from one mail, in bytes (in the mail's order, each that still
/// fits; the rest are listed with `stored: false`): 512 KiB of base64, the size of the largest
/// AppendEntries piece (`network::APPEND_ENTRIES_BYTES_MAX`), so the mail's entry stays under
/// about 700 KiB with its text and HTML.
pub const MAIL_ATTACHMENTS_STORED_BYTES_MAX: u64 = 384 * 1024;
/// Most attachment bytes stored at once, cluster-wide, in bytes: the archive, attachments
/// included, travels in every snapshot sent to a node (at most `codec::SNAPSHOT_BYTES_MAX`,
/// built in memory), so beyond this an attachment is listed with `stored: false`.
pub const ATTACHMENT_STORE_BYTES_MAX: u64 = 512 * 1024 * 1024;
/// Most distinct attachments stored at once, cluster-wide (their index is in memory).
pub const ATTACHMENTS_STORED_MAX: usize = 100_000;
/// Largest mail the fetcher takes in whole, in bytes; a larger one is taken in with its
/// headers and a note instead of its body.
pub const MAIL_RAW_BYTES_MAX: u64 = 25 * 1024 * 1024;
/// Most messages one case holds; further mail to it opens a new case.
pub const CASE_MESSAGES_MAX: usize = 500;
/// Most replies waiting in the outbox (queued or retrying) at once, cluster-wide.
pub const OUTBOX_PENDING_MAX: usize = 10_000;
/// Longest delivery failure reason kept, in bytes.
pub const DELIVERY_REASON_BYTES_MAX: usize = 500;

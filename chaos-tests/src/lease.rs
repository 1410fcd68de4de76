//! The lease workload of a simulated node: the mailbox fetcher's lease, contended for by every
//! node, and its fenced commands.
//!
//! - The lease is kept by the production code, `parley_node::email::lease::keep` (take when
//!   free, renew every third of the duration with the token, treat it as lost once a renewal
//!   is refused or the expiry less a margin passed on this node's clock, release on stop),
//!   driving the node's real replica, with the node's own (possibly skewed) clock.
//! - While the node holds the lease, a fetcher proposes one fenced `Ingest` per mail, as
//!   `node/src/email/fetch.rs` does: the same checks before each proposal (the lease is held
//!   and usable on this node's clock, the UID is the one after the replicated cursor), the same
//!   command (the lease's fence), the same handling of the answer (`lease_lost` ends the
//!   session, any other refusal or error is a failed session retried after a pause doubling
//!   from 1 s to 30 s). What is not simulated is the IMAP server: the folder always has the
//!   next UID waiting, one new mail every [`Workload::mail_every`], each an auto-reply that
//!   matches no case (so `apply`, once the fence passed, only moves the cursor and the state
//!   stays small), and opening a session costs [`SESSION_OPEN`] (connect, log in, select).
//!
//! - A fault that cuts the holder off or pauses it asks it for a late write
//!   ([`request_late_write`]): a fenced command stamped then, inside its lease, that this node
//!   sends only once it applied its successor's take, as the request of a paused or cut-off
//!   holder would arrive. The fence must refuse it `lease_lost`.
//!
//! Every fenced command's answer is recorded ([`FencedAck`], true simulated time) for the
//! oracle, and what each node holds is published for the faults aimed at the holder.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use parley_node::email::lease::{self, Held};
use parley_raft::command::email::{
    fetch_lease, EmailOp, InboundEmail, IngestEmail, MailKind, MailboxSpec, ServerSpec,
    ThreadHints, TlsMode,
};
use parley_raft::command::{Channel, QueueSpec};
use parley_raft::proposer::Clock;
use parley_raft::{NodeId, Op, Outcome, Rejection, Replica};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::node::SimClock;
use crate::oracle::lease_acks::{FencedAck, FencedAnswer};

/// The simulated mailbox.
pub const MAILBOX: &str = "chaos-mail";
/// Its email queue.
pub const EMAIL_QUEUE: &str = "chaos-email";
/// The folder's UIDVALIDITY (it is never recreated).
const UID_VALIDITY: u32 = 7;
/// What opening an IMAP session costs the fetcher (connect, log in, select).
pub const SESSION_OPEN: Duration = Duration::from_millis(100);
/// Longest pause between two failed sessions, as the fetcher's.
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(30);
/// How often a node without the mailbox asks for it to be created.
const MAILBOX_RETRY: Duration = Duration::from_millis(500);
/// How long a late write waits for its node to apply a later take, and then for an answer,
/// each at most.
const LATE_WRITE_PATIENCE: Duration = Duration::from_secs(30);

/// The lease every node contends for: the simulated mailbox's fetch lease.
pub fn lease_name() -> String {
    fetch_lease(MAILBOX)
}

/// The lease workload of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// The lease's duration (`email.lease`).
    pub duration: Duration,
    /// How often a new mail arrives in the folder.
    pub mail_every: Duration,
}

/// What each node's keeper last published: the token it holds, if any (a crashed node's last
/// word stays).
pub type Holders = Rc<RefCell<BTreeMap<NodeId, Option<u64>>>>;

/// Every fenced command's answer, in the order answered.
pub type Acks = Rc<RefCell<Vec<FencedAck>>>;

/// What the nodes record for the run.
#[derive(Clone, Debug, Default)]
pub struct Records {
    /// What each node holds.
    pub holders: Holders,
    /// The fenced commands' answers.
    pub acks: Acks,
}

thread_local! {
    /// Set when the run stops the workload (before its final check): each node's keeper
    /// releases the lease and its fetcher stops. The simulation runs every host on one thread.
    static STOPPED: Cell<bool> = const { Cell::new(false) };
    /// The next fenced command's number, unique in a run.
    static NEXT: Cell<u64> = const { Cell::new(0) };
    /// Each running node's late-write trigger (see [`request_late_write`]).
    static LATE: RefCell<BTreeMap<NodeId, Rc<Notify>>> = const { RefCell::new(BTreeMap::new()) };
    /// The nodes asked for a late write that is not answered or given up yet.
    static LATE_PENDING: RefCell<BTreeSet<NodeId>> = const { RefCell::new(BTreeSet::new()) };
}

/// Readies the workload for a new run.
pub fn reset() {
    STOPPED.with(|stopped| stopped.set(false));
    NEXT.with(|next| next.set(0));
    LATE.with(|late| late.borrow_mut().clear());
    LATE_PENDING.with(|pending| pending.borrow_mut().clear());
}

/// Asks node `id` for a late write, as a fault cuts it off or pauses it while it holds the
/// lease: a fenced command stamped now, inside its lease (as the fetcher stamps), that the
/// node sends only once it has applied another take of the lease, the request of a paused
/// or cut-off holder arriving after its successor took over. The fence must refuse it
/// `lease_lost`, and the run counts it superseded. (The command the fetcher was proposing at
/// the fault shows the same only when its proposer's 5 s write timeout outlasts the fault and
/// the reconnection after it, by a second or less; this one does not depend on that.)
/// Nothing is sent if the node does not hold a usable lease then.
pub fn request_late_write(id: NodeId) {
    let Some(trigger) = LATE.with(|late| late.borrow().get(&id).cloned()) else {
        return;
    };
    LATE_PENDING.with(|pending| pending.borrow_mut().insert(id));
    trigger.notify_one();
}

/// Whether a late write asked for is still waiting or unanswered.
pub fn late_writes_pending() -> bool {
    LATE_PENDING.with(|pending| !pending.borrow().is_empty())
}

/// Node `id`'s late write, no longer pending once dropped (answered, given up, or its host
/// crashed).
struct LatePending(NodeId);

impl Drop for LatePending {
    fn drop(&mut self) {
        let _ = LATE_PENDING.try_with(|pending| pending.borrow_mut().remove(&self.0));
    }
}

/// Stops every node's workload: the keepers release the lease, the fetchers stop.
pub fn stop_all() {
    STOPPED.with(|stopped| stopped.set(true));
}

fn stopped() -> bool {
    STOPPED.with(Cell::get)
}

/// The email queue the mailbox feeds (the simulated agents take no email).
pub fn email_queue() -> QueueSpec {
    QueueSpec {
        id: EMAIL_QUEUE.to_owned(),
        name: "Chaos email".to_owned(),
        department: None,
        channel: Channel::Email,
        skills: Vec::new(),
        offer_timeout_ms: 5_000,
        not_ready_on_missed_offer: true,
        inactivity_timeout_ms: 0,
        business_hours: None,
        off_hours_message: parley_raft::command::default_off_hours_message(),
    }
}

/// The simulated mailbox.
pub fn mailbox() -> MailboxSpec {
    let server = |host: &str, port| ServerSpec {
        host: host.to_owned(),
        port,
        tls: TlsMode::Tls,
        username: "support".to_owned(),
        password: Some(parley_raft::command::email::SecretRef::Env(
            "CHAOS_MAIL_PASSWORD".to_owned(),
        )),
    };
    MailboxSpec {
        id: MAILBOX.to_owned(),
        address: "support@chaos.example".to_owned(),
        display_name: "Support".to_owned(),
        queue_id: EMAIL_QUEUE.to_owned(),
        imap: server("imap.chaos.example", 993),
        folder: "INBOX".to_owned(),
        smtp: server("smtp.chaos.example", 465),
    }
}

/// What a fetcher needs.
#[derive(Clone)]
struct Fetcher {
    id: NodeId,
    replica: Replica,
    clock: Arc<dyn Clock>,
    workload: Workload,
    acks: Acks,
}

/// Starts node `id`'s workload on its host: once the mailbox exists (this node asks for it
/// until it does, as an operator's config seeding would), the keeper and the fetcher.
pub fn start(
    id: NodeId,
    replica: Replica,
    clock: Arc<dyn Clock>,
    workload: Workload,
    records: Records,
) {
    records.holders.borrow_mut().insert(id, None);
    // A restarted node starts without a late write.
    let trigger = Rc::new(Notify::new());
    LATE.with(|late| late.borrow_mut().insert(id, trigger.clone()));
    LATE_PENDING.with(|pending| pending.borrow_mut().remove(&id));
    tokio::task::spawn_local(async move {
        loop {
            if stopped() {
                return;
            }
            let exists = replica.read(|state, _| state.email.mailboxes.contains_key(MAILBOX));
            if exists {
                break;
            }
            let upsert = Op::Email(EmailOp::UpsertMailbox(mailbox()));
            if let Err(error) = replica.propose(upsert).await {
                tracing::debug!(%error, "creating the mailbox; will retry");
            }
            tokio::time::sleep(MAILBOX_RETRY).await;
        }
        let stop = CancellationToken::new();
        let mut lease_rx = lease::keep(
            replica.clone(),
            clock.clone(),
            lease_name(),
            workload.duration,
            stop.clone(),
        );
        let mut published = lease_rx.clone();
        let holders = records.holders.clone();
        tokio::task::spawn_local(async move {
            loop {
                let token = published.borrow_and_update().as_ref().map(|h| h.token);
                holders.borrow_mut().insert(id, token);
                if published.changed().await.is_err() {
                    holders.borrow_mut().insert(id, None);
                    return;
                }
            }
        });
        let stopper = stop.clone();
        tokio::task::spawn_local(async move {
            while !stopped() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            stopper.cancel();
        });
        let fetcher = Fetcher {
            id,
            replica,
            clock,
            workload,
            acks: records.acks,
        };
        let late = fetcher.clone();
        let late_rx = lease_rx.clone();
        tokio::task::spawn_local(async move {
            loop {
                trigger.notified().await;
                let _pending = LatePending(late.id);
                if let Some(ack) = late_write(&late, &late_rx).await {
                    late.acks.borrow_mut().push(ack);
                }
            }
        });
        fetch(&fetcher, &mut lease_rx, &stop).await;
    });
}

/// The fetcher's outer loop (`fetch::run`): wait for the lease, run a session, pause after a
/// failed one.
async fn fetch(
    fetcher: &Fetcher,
    lease_rx: &mut watch::Receiver<Option<Held>>,
    stop: &CancellationToken,
) {
    let mut pause = Duration::from_secs(1);
    loop {
        while lease_rx.borrow().is_none() {
            tokio::select! {
                changed = lease_rx.changed() => if changed.is_err() { return },
                () = stop.cancelled() => return,
            }
        }
        match session(fetcher, lease_rx, stop).await {
            Ok(()) => pause = Duration::from_secs(1),
            Err(error) => {
                tracing::debug!(node = fetcher.id, %error, "fetching mail; will retry");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => return,
                }
                pause = (pause * 2).min(RETRY_PAUSE_MAX);
            }
        }
        if stop.is_cancelled() {
            return;
        }
    }
}

/// One session (`fetch::session`): take in what is new, wait for the next mail, again; ends
/// when the lease is lost or on stop (`Ok`), or on a failure (`Err`).
async fn session(
    fetcher: &Fetcher,
    lease_rx: &mut watch::Receiver<Option<Held>>,
    stop: &CancellationToken,
) -> Result<(), String> {
    tokio::time::sleep(SESSION_OPEN).await;
    loop {
        if !take_in_new(fetcher, lease_rx).await? {
            break;
        }
        if stop.is_cancelled() || lease_rx.borrow().is_none() {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(fetcher.workload.mail_every) => {}
            _ = lease_rx.changed() => {}
            () = stop.cancelled() => {}
        }
        if stop.is_cancelled() {
            break;
        }
    }
    Ok(())
}

/// Takes in the next mail (`fetch::take_in_new`, for a folder with one new mail); `false`
/// when the lease was lost.
async fn take_in_new(
    fetcher: &Fetcher,
    lease_rx: &watch::Receiver<Option<Held>>,
) -> Result<bool, String> {
    let Some(held) = lease_rx.borrow().clone() else {
        return Ok(false);
    };
    if !held.usable(fetcher.clock.now_ms()) {
        return Ok(false);
    }
    let (id, op) = ingest(fetcher, &held);
    let sent_ms = SimClock.now_ms();
    let answer = fetcher.replica.propose(op).await;
    let (result, answer) = match answer {
        Ok(Outcome::EmailIngested { .. }) => (Ok(true), FencedAnswer::Applied),
        Ok(Outcome::Rejected(Rejection::LeaseLost { .. })) => (Ok(false), FencedAnswer::LeaseLost),
        Ok(other) => {
            let why = format!("{other:?}");
            (Err(why.clone()), FencedAnswer::NotCommitted(why))
        }
        Err(error) => (
            Err(error.to_string()),
            FencedAnswer::NotCommitted(error.to_string()),
        ),
    };
    fetcher.acks.borrow_mut().push(FencedAck {
        id,
        node: fetcher.id,
        token: held.token,
        sent_ms,
        answered_ms: SimClock.now_ms(),
        answer,
    });
    result
}

/// One late write (see [`request_late_write`]): its answer, or `None` when the node held no
/// usable lease, or applied no later take in time.
async fn late_write(
    fetcher: &Fetcher,
    lease_rx: &watch::Receiver<Option<Held>>,
) -> Option<FencedAck> {
    let held = lease_rx.borrow().clone()?;
    if !held.usable(fetcher.clock.now_ms()) {
        return None;
    }
    let (id, op) = ingest(fetcher, &held);
    // Stamped now, with no await since the check, as `Replica::propose` stamps.
    let command = fetcher.replica.proposer().stamp(op);
    let sent_ms = SimClock.now_ms();
    // Held back until this node applied another take: the command then reaches the log after
    // it, whatever the network did meanwhile.
    let superseded = || {
        fetcher.replica.read_applied(|state, _| {
            state
                .lease(&held.name)
                .is_some_and(|lease| lease.token > held.token)
        })
    };
    let mut applied = fetcher.replica.subscribe_applied();
    let waited = tokio::time::timeout(LATE_WRITE_PATIENCE, async {
        while !superseded() {
            if applied.changed().await.is_err() {
                return false;
            }
        }
        true
    })
    .await;
    if !matches!(waited, Ok(true)) {
        tracing::warn!(
            node = fetcher.id,
            "late write: no later take applied here; given up"
        );
        return None;
    }
    let give_up = tokio::time::Instant::now() + LATE_WRITE_PATIENCE;
    let answer = loop {
        // The same stamped command every time, as the proposer retries it.
        match fetcher.replica.proposer().submit(command.clone()).await {
            Ok(Outcome::EmailIngested { .. }) => break FencedAnswer::Applied,
            Ok(Outcome::Rejected(Rejection::LeaseLost { .. })) => break FencedAnswer::LeaseLost,
            Ok(other) => break FencedAnswer::NotCommitted(format!("{other:?}")),
            Err(error) if tokio::time::Instant::now() < give_up => {
                tracing::debug!(node = fetcher.id, %error, "late write; will retry");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => break FencedAnswer::NotCommitted(error.to_string()),
        }
    };
    Some(FencedAck {
        id,
        node: fetcher.id,
        token: held.token,
        sent_ms,
        answered_ms: SimClock.now_ms(),
        answer,
    })
}

/// The fenced command taking in the folder's next mail under `held`, as the fetcher's, and
/// its id.
fn ingest(fetcher: &Fetcher, held: &Held) -> (String, Op) {
    let cursor = fetcher
        .replica
        .read(|state, _| state.email.mailboxes.get(MAILBOX).and_then(|m| m.cursor));
    let uid = match cursor {
        Some(cursor) if cursor.uid_validity == UID_VALIDITY => cursor.last_uid.saturating_add(1),
        _ => 1,
    };
    let n = NEXT.with(|next| {
        let n = next.get() + 1;
        next.set(n);
        n
    });
    let id = format!("lease-w{n}");
    let op = Op::Email(EmailOp::Ingest(Box::new(IngestEmail {
        fence: held.fence(),
        mailbox_id: MAILBOX.to_owned(),
        uid_validity: UID_VALIDITY,
        uid,
        email: auto_reply(n),
        hints: ThreadHints::default(),
        new_case_id: id.clone(),
        new_activity_id: format!("lease-a{n}"),
        known_case: None,
        contents: Vec::new(),
    })));
    (id, op)
}

/// Mail number `n`: an out-of-office answer that matches no case.
fn auto_reply(n: u64) -> InboundEmail {
    InboundEmail {
        message_id: format!("ooo-{n}@customer.chaos.example"),
        in_reply_to: Vec::new(),
        references: Vec::new(),
        from: "someone@customer.chaos.example".to_owned(),
        from_name: "Someone".to_owned(),
        subject: "Out of office".to_owned(),
        text: "I am away this week.".to_owned(),
        html: String::new(),
        attachments: Vec::new(),
        kind: MailKind::AutoReply,
        size_bytes: 512,
    }
}

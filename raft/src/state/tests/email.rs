//! The email channel in `apply`: leases and fencing, the cursor, exactly-once intake,
//! threading, the outbox and retention of cases.

use super::*;
use crate::command::email::{
    attachment_key, fetch_lease, message_id_key, send_lease, AcquireLease, AttachmentContent,
    AttachmentMeta, DeliveryResult, EmailOp, Fence, InboundEmail, IngestEmail, MailKind,
    MailboxSpec, QueueReply, RecordDelivery, SecretRef, ServerSpec, ThreadHints, TlsMode,
};
use crate::state::email::{ArchivedMessageId, AttachmentRecord, Delivery, Direction};
use base64::Engine;
use parley_storage::ArchiveOp;

const LEASE_MS: u64 = 10_000;

fn on(state: &mut State, at_ms: u64, origin: u64, op: EmailOp) -> Outcome {
    let outcome = state.apply(&Command {
        at_ms,
        origin,
        op: Op::Email(op),
    });
    if let Err(violation) = state.validate() {
        panic!("after an email op: {violation}");
    }
    outcome
}

fn server(port: u16) -> ServerSpec {
    ServerSpec {
        host: "127.0.0.1".into(),
        port,
        tls: TlsMode::Plain,
        username: "support@example.test".into(),
        password: Some(SecretRef::Env("MAIL_PASSWORD".into())),
    }
}

fn mailbox() -> MailboxSpec {
    MailboxSpec {
        id: "support".into(),
        address: "support@example.test".into(),
        display_name: "Support".into(),
        queue_id: "mail".into(),
        imap: server(143),
        folder: "INBOX".into(),
        smtp: server(587),
    }
}

/// A seeded state at cluster version 3 with an email queue, a mailbox, and alice ready for
/// email.
fn with_mailbox() -> State {
    let mut state = seeded();
    apply_ok(&mut state, 2, Op::SetClusterVersion { version: 3 });
    let mut mail = queue("mail", &[]);
    mail.channel = Channel::Email;
    apply_ok(&mut state, 2, Op::Upsert(DirectoryEntry::Queue(mail)));
    let mut alice = agent("alice", &[], 2);
    alice.limits.insert(Channel::Email, 2);
    apply_ok(&mut state, 2, Op::Upsert(DirectoryEntry::Agent(alice)));
    assert_eq!(
        on(&mut state, 3, 1, EmailOp::UpsertMailbox(mailbox())),
        Outcome::Done
    );
    state
}

fn ready_for_email(state: &mut State, at: u64) {
    apply_ok(
        state,
        at,
        Op::Login(Login {
            agent_id: "alice".into(),
            session_id: "s-alice".into(),
        }),
    );
    apply_ok(
        state,
        at,
        Op::SetAvailability(SetAvailability {
            session: session("alice"),
            channels: BTreeMap::from([(Channel::Email, true)]),
            reason: None,
        }),
    );
}

fn take_lease(state: &mut State, at: u64, origin: u64, name: &str) -> Outcome {
    on(
        state,
        at,
        origin,
        EmailOp::AcquireLease(AcquireLease {
            name: name.into(),
            duration_ms: LEASE_MS,
            renew: None,
        }),
    )
}

fn token(outcome: &Outcome) -> u64 {
    match outcome {
        Outcome::Lease {
            granted: true,
            token,
            ..
        } => *token,
        other => panic!("lease not granted: {other:?}"),
    }
}

fn mail(message_id: &str, subject: &str) -> InboundEmail {
    InboundEmail {
        message_id: message_id.into(),
        in_reply_to: Vec::new(),
        references: Vec::new(),
        from: "carol@example.com".into(),
        from_name: "Carol".into(),
        subject: subject.into(),
        text: "Where is my order?".into(),
        html: String::new(),
        attachments: Vec::new(),
        kind: MailKind::Normal,
        size_bytes: 100,
    }
}

fn ingest(token: u64, validity: u32, uid: u32, email: InboundEmail) -> EmailOp {
    EmailOp::Ingest(Box::new(IngestEmail {
        fence: Fence {
            name: fetch_lease("support"),
            token,
        },
        mailbox_id: "support".into(),
        uid_validity: validity,
        uid,
        email,
        hints: ThreadHints::default(),
        new_case_id: format!("case-{validity}-{uid}"),
        new_activity_id: format!("act-{validity}-{uid}"),
        known_case: None,
        contents: Vec::new(),
    }))
}

/// `op` (an ingest) changed by `change`.
fn with(op: EmailOp, change: impl FnOnce(&mut IngestEmail)) -> EmailOp {
    match op {
        EmailOp::Ingest(mut ingest) => {
            change(&mut ingest);
            EmailOp::Ingest(ingest)
        }
        other => other,
    }
}

fn ingested(outcome: &Outcome) -> (Option<String>, Option<String>, bool) {
    match outcome {
        Outcome::EmailIngested {
            case_id,
            activity_id,
            duplicate,
        } => (case_id.clone(), activity_id.clone(), *duplicate),
        other => panic!("not ingested: {other:?}"),
    }
}

#[test]
fn email_operations_wait_for_cluster_version_3() {
    let mut state = seeded();
    apply_ok(&mut state, 2, Op::SetClusterVersion { version: 2 });
    let outcome = state.apply(&command(
        3,
        Op::Email(EmailOp::AcquireLease(AcquireLease {
            name: "fetch:x".into(),
            duration_ms: LEASE_MS,
            renew: None,
        })),
    ));
    assert_eq!(
        outcome,
        Outcome::Rejected(Rejection::NotEnabled {
            needs: 3,
            cluster_version: 2
        })
    );
    assert!(state.email.is_empty());
}

#[test]
fn a_lease_is_held_by_one_node_renewed_by_it_and_taken_over_with_a_new_token_once_expired() {
    let mut state = with_mailbox();
    let name = fetch_lease("support");
    let first = token(&take_lease(&mut state, 100, 1, &name));
    assert_eq!(first, 1);
    // Another node is told who holds it.
    assert_eq!(
        take_lease(&mut state, 200, 2, &name),
        Outcome::Lease {
            granted: false,
            holder: 1,
            token: 1,
            expires_at_ms: 100 + LEASE_MS
        }
    );
    // The holder renews with its token: same token, later expiry.
    let renewed = on(
        &mut state,
        5_000,
        1,
        EmailOp::AcquireLease(AcquireLease {
            name: name.clone(),
            duration_ms: LEASE_MS,
            renew: Some(first),
        }),
    );
    assert_eq!(
        renewed,
        Outcome::Lease {
            granted: true,
            holder: 1,
            token: 1,
            expires_at_ms: 5_000 + LEASE_MS
        }
    );
    // Still held at the first expiry; taken over after the renewed one, under token 2.
    assert!(matches!(
        take_lease(&mut state, 100 + LEASE_MS, 2, &name),
        Outcome::Lease { granted: false, .. }
    ));
    let second = token(&take_lease(&mut state, 5_000 + LEASE_MS, 2, &name));
    assert_eq!(second, 2);
    // The old holder's renewal no longer counts.
    let late = on(
        &mut state,
        5_000 + LEASE_MS + 1,
        1,
        EmailOp::AcquireLease(AcquireLease {
            name,
            duration_ms: LEASE_MS,
            renew: Some(first),
        }),
    );
    assert!(matches!(
        late,
        Outcome::Lease {
            granted: false,
            holder: 2,
            ..
        }
    ));
}

#[test]
fn a_node_that_lost_its_lease_cannot_commit_as_the_holder() {
    let mut state = with_mailbox();
    let name = fetch_lease("support");
    let old = token(&take_lease(&mut state, 100, 1, &name));
    // Node 1 is cut off; its lease expires and node 2 takes it over.
    let new = token(&take_lease(&mut state, 100 + LEASE_MS, 2, &name));
    // Node 1's mail, stamped before its lease expired by its own clock, arrives late.
    let before = state.clone();
    let outcome = state.apply(&Command {
        at_ms: 150,
        origin: 1,
        op: Op::Email(ingest(old, 7, 1, mail("m1@example.com", "Order"))),
    });
    assert_eq!(
        outcome,
        Outcome::Rejected(Rejection::LeaseLost { name: name.clone() })
    );
    assert_eq!(state, before, "a refused command changes nothing");
    // Node 2 cannot use node 1's token either, nor node 1 node 2's.
    let stolen = state.apply(&Command {
        at_ms: 200 + LEASE_MS,
        origin: 1,
        op: Op::Email(ingest(new, 7, 1, mail("m1@example.com", "Order"))),
    });
    assert!(matches!(
        stolen,
        Outcome::Rejected(Rejection::LeaseLost { .. })
    ));
    // A lease past its expiry fences its own holder too, until renewed.
    let expired = state.apply(&Command {
        at_ms: 100 + 2 * LEASE_MS,
        origin: 2,
        op: Op::Email(ingest(new, 7, 1, mail("m1@example.com", "Order"))),
    });
    assert!(matches!(
        expired,
        Outcome::Rejected(Rejection::LeaseLost { .. })
    ));
    let (case, activity, duplicate) = ingested(&on(
        &mut state,
        200 + LEASE_MS,
        2,
        ingest(new, 7, 1, mail("m1@example.com", "Order")),
    ));
    assert!(case.is_some() && activity.is_some() && !duplicate);
}

#[test]
fn each_mail_is_taken_in_once_by_uid_and_by_message_id_across_a_uidvalidity_change() {
    let mut state = with_mailbox();
    let t = token(&take_lease(&mut state, 10, 1, &fetch_lease("support")));
    let (case1, activity1, dup) =
        ingested(&on(&mut state, 20, 1, ingest(t, 7, 1, mail("a@x", "A"))));
    assert!(!dup);
    let (case1, activity1) = (case1.unwrap(), activity1.unwrap());
    assert_eq!(status(&state, &activity1), ActivityStatus::Queued);
    // The same UID again (a fetcher that restarted before its cursor moved).
    let again = on(&mut state, 21, 1, ingest(t, 7, 1, mail("a@x", "A")));
    assert_eq!(ingested(&again), (None, None, true));
    // The same mail delivered twice: a new UID, the same Message-ID.
    let twice = on(&mut state, 22, 1, ingest(t, 7, 2, mail("a@x", "A")));
    assert_eq!(ingested(&twice), (Some(case1.clone()), None, true));
    let cursor = state.email.mailboxes["support"].cursor.unwrap();
    assert_eq!((cursor.uid_validity, cursor.last_uid), (7, 2));
    let (_, _, dup) = ingested(&on(&mut state, 23, 1, ingest(t, 7, 3, mail("b@x", "B"))));
    assert!(!dup);
    // The folder is recreated: new UIDVALIDITY, the same mails from UID 1 again.
    for (uid, id) in [(1, "a@x"), (2, "b@x")] {
        let (_, _, dup) = ingested(&on(&mut state, 30, 1, ingest(t, 9, uid, mail(id, "x"))));
        assert!(dup, "{id} taken in twice");
    }
    let (_, _, dup) = ingested(&on(&mut state, 31, 1, ingest(t, 9, 3, mail("c@x", "C"))));
    assert!(!dup);
    assert_eq!(state.email.cases.len(), 3);
    let email_activities = state
        .activities
        .values()
        .filter(|a| a.channel == Channel::Email)
        .count();
    assert_eq!(email_activities, 3);
    assert_eq!(state.email.cases[&case1].messages.len(), 1);
}

#[test]
fn replies_thread_by_our_message_id_then_references_then_the_subject_tag() {
    let mut state = with_mailbox();
    let t = token(&take_lease(&mut state, 10, 1, &fetch_lease("support")));
    let (case, _, _) = ingested(&on(
        &mut state,
        20,
        1,
        ingest(t, 1, 1, mail("first@x", "Order")),
    ));
    let case = case.unwrap();
    // By References (a client that keeps headers).
    let mut by_refs = mail("second@x", "Re: Order");
    by_refs.references = vec!["unknown@y".into(), "first@x".into()];
    let (joined, created, _) = ingested(&on(&mut state, 21, 1, ingest(t, 1, 2, by_refs)));
    assert_eq!(joined.as_deref(), Some(case.as_str()));
    assert_eq!(created, None, "mail to a live case adds to its activity");
    // By our own Message-ID, which the proposer found (MAC checked) in In-Reply-To.
    let mut op = ingest(t, 1, 3, mail("third@x", "anything"));
    if let EmailOp::Ingest(ingest) = &mut op {
        ingest.hints.our_message_case = Some(case.clone());
    }
    assert_eq!(
        ingested(&on(&mut state, 22, 1, op)).0.as_deref(),
        Some(case.as_str())
    );
    // A client that rewrote every header but kept the subject tag.
    let mut op = ingest(t, 1, 4, mail("fourth@x", "AW: Order [#tag]"));
    if let EmailOp::Ingest(ingest) = &mut op {
        ingest.hints.subject_case = Some(case.clone());
    }
    assert_eq!(
        ingested(&on(&mut state, 23, 1, op)).0.as_deref(),
        Some(case.as_str())
    );
    // A hint naming a case that does not exist threads nowhere: a new case.
    let mut op = ingest(t, 1, 5, mail("fifth@x", "New question"));
    if let EmailOp::Ingest(ingest) = &mut op {
        ingest.hints.subject_case = Some("forged".into());
    }
    let (other, _, _) = ingested(&on(&mut state, 24, 1, op));
    assert_ne!(other.as_deref(), Some(case.as_str()));
    assert_eq!(state.email.cases[&case].messages.len(), 4);
}

#[test]
fn bounces_and_auto_replies_attach_to_their_case_and_never_open_one() {
    let mut state = with_mailbox();
    let t = token(&take_lease(&mut state, 10, 1, &fetch_lease("support")));
    let (case, _, _) = ingested(&on(
        &mut state,
        20,
        1,
        ingest(t, 1, 1, mail("first@x", "Order")),
    ));
    let case = case.unwrap();
    let cases_before = state.email.cases.len();
    let activities_before = state.activities.len();
    let mut bounce = mail("dsn@mailer", "Undelivered Mail Returned to Sender");
    bounce.kind = MailKind::Bounce;
    let mut op = ingest(t, 1, 2, bounce.clone());
    if let EmailOp::Ingest(ingest) = &mut op {
        ingest.hints.our_message_case = Some(case.clone());
    }
    assert_eq!(
        ingested(&on(&mut state, 21, 1, op)),
        (Some(case.clone()), None, false)
    );
    // An auto-reply and a bounce about nothing we hold are dropped.
    let mut auto = mail("ooo@x", "Out of office");
    auto.kind = MailKind::AutoReply;
    assert_eq!(
        ingested(&on(&mut state, 22, 1, ingest(t, 1, 3, auto))),
        (None, None, false)
    );
    bounce.message_id = "dsn2@mailer".into();
    assert_eq!(
        ingested(&on(&mut state, 23, 1, ingest(t, 1, 4, bounce))),
        (None, None, false)
    );
    assert_eq!(state.email.cases.len(), cases_before);
    assert_eq!(state.activities.len(), activities_before);
    let kinds: Vec<MailKind> = state.email.cases[&case]
        .messages
        .iter()
        .map(|m| m.kind)
        .collect();
    assert_eq!(kinds, vec![MailKind::Normal, MailKind::Bounce]);
    assert_eq!(state.email.mailboxes["support"].cursor.unwrap().last_uid, 4);
}

fn reply(activity_id: &str, client_id: &str, text: &str) -> EmailOp {
    EmailOp::Reply(QueueReply {
        session: session("alice"),
        activity_id: activity_id.into(),
        client_id: client_id.into(),
        reply_id: format!("reply-{client_id}"),
        message_id: format!("parley.{client_id}@example.test"),
        subject_tag: "[#tag]".into(),
        text: text.into(),
    })
}

fn record(token: u64, reply_id: &str, result: DeliveryResult) -> EmailOp {
    EmailOp::RecordDelivery(RecordDelivery {
        fence: Fence {
            name: send_lease("support"),
            token,
        },
        reply_id: reply_id.into(),
        result,
    })
}

/// A case whose activity alice accepted: (case id, activity id).
fn assigned_case(state: &mut State) -> (String, String) {
    ready_for_email(state, 5);
    let t = token(&take_lease(state, 10, 1, &fetch_lease("support")));
    let (case, activity, _) =
        ingested(&on(state, 20, 1, ingest(t, 1, 1, mail("first@x", "Order"))));
    let activity = activity.unwrap();
    assert!(offered_to("alice")(&status(state, &activity)));
    apply_ok(state, 21, Op::Accept(action("alice", &activity)));
    (case.unwrap(), activity)
}

#[test]
fn a_reply_is_recorded_once_per_client_id_and_its_delivery_once() {
    let mut state = with_mailbox();
    let (case, activity) = assigned_case(&mut state);
    let queued = on(&mut state, 30, 1, reply(&activity, "c1", "It ships today."));
    assert_eq!(
        queued,
        Outcome::ReplyQueued {
            reply_id: "reply-c1".into(),
            replayed: false
        }
    );
    let after = state.clone();
    let again = on(&mut state, 31, 1, reply(&activity, "c1", "It ships today."));
    assert_eq!(
        again,
        Outcome::ReplyQueued {
            reply_id: "reply-c1".into(),
            replayed: true
        }
    );
    assert_eq!(state, after, "a retried reply adds nothing");
    let conflict = state.apply(&command(
        32,
        Op::Email(reply(&activity, "c1", "Other text")),
    ));
    assert!(matches!(
        conflict,
        Outcome::Rejected(Rejection::IdempotencyConflict { .. })
    ));
    let entry = &state.email.outbox["reply-c1"];
    assert_eq!(entry.to, "carol@example.com");
    assert_eq!(entry.subject, "Re: Order [#tag]");
    assert_eq!(entry.in_reply_to.as_deref(), Some("first@x"));
    // Only the send lease's holder records deliveries.
    let send = token(&take_lease(&mut state, 40, 2, &send_lease("support")));
    let wrong = state.apply(&Command {
        at_ms: 41,
        origin: 1,
        op: Op::Email(record(send, "reply-c1", DeliveryResult::Sent)),
    });
    assert!(matches!(
        wrong,
        Outcome::Rejected(Rejection::LeaseLost { .. })
    ));
    let retry = DeliveryResult::Retry {
        reason: "connection refused".into(),
        retry_at_ms: 60,
    };
    assert_eq!(
        on(&mut state, 42, 2, record(send, "reply-c1", retry)),
        Outcome::Done
    );
    assert!(matches!(
        state.email.outbox["reply-c1"].delivery,
        Delivery::Retrying { attempts: 1, .. }
    ));
    assert_eq!(
        on(
            &mut state,
            61,
            2,
            record(send, "reply-c1", DeliveryResult::Sent)
        ),
        Outcome::Done
    );
    assert!(state.email.outbox.is_empty());
    let message = state.email.cases[&case].messages.last().cloned().unwrap();
    assert_eq!(message.direction, Direction::Outbound);
    assert_eq!(message.delivery, Some(Delivery::Sent { at_ms: 61 }));
    // A second "sent" (a sender that died before its record was answered) changes nothing.
    let sent = state.clone();
    assert_eq!(
        on(
            &mut state,
            62,
            2,
            record(send, "reply-c1", DeliveryResult::Sent)
        ),
        Outcome::Done
    );
    assert_eq!(state, sent);
    // The agent's feed tells of the reply and its delivery.
    let updates = state.agents["alice"]
        .feed
        .iter()
        .filter(|e| matches!(e.body, AgentEventBody::CaseUpdated { .. }))
        .count();
    assert_eq!(updates, 3, "queued, retrying, sent");
}

#[test]
fn only_the_assigned_agent_replies() {
    let mut state = with_mailbox();
    let t = token(&take_lease(&mut state, 10, 1, &fetch_lease("support")));
    let (_, activity, _) = ingested(&on(
        &mut state,
        20,
        1,
        ingest(t, 1, 1, mail("first@x", "Order")),
    ));
    ready_for_email(&mut state, 21);
    let activity = activity.unwrap();
    // Offered, not yet accepted.
    let refused = state.apply(&command(22, Op::Email(reply(&activity, "c1", "hi"))));
    assert!(matches!(
        refused,
        Outcome::Rejected(Rejection::Conflict { .. })
    ));
    assert!(state.email.outbox.is_empty());
}

#[test]
fn a_customer_writing_after_completion_reopens_the_case_with_a_new_activity() {
    let mut state = with_mailbox();
    let (case, activity) = assigned_case(&mut state);
    apply_ok(
        &mut state,
        30,
        Op::Complete(Complete {
            action: action("alice", &activity),
            outcome: None,
        }),
    );
    let t = state.email.leases[&fetch_lease("support")].token;
    let mut again = mail("later@x", "Re: Order");
    again.in_reply_to = vec!["first@x".into()];
    let (joined, created, _) = ingested(&on(&mut state, 40, 1, ingest(t, 1, 2, again)));
    assert_eq!(joined, Some(case.clone()));
    let created = created.expect("a new activity");
    assert_ne!(created, activity);
    assert_eq!(state.email.cases[&case].activity_id, created);
    assert!(offered_to("alice")(&status(&state, &created)));
}

#[test]
fn a_case_leaves_memory_with_its_activity_but_not_before_its_replies_left_the_outbox() {
    let mut state = with_mailbox();
    apply_ok(
        &mut state,
        4,
        Op::SetRetention(Retention {
            hot_ms: 1_000,
            archive_ms: 600_000,
        }),
    );
    let (case, activity) = assigned_case(&mut state);
    on(&mut state, 30, 1, reply(&activity, "c1", "On its way."));
    apply_ok(
        &mut state,
        31,
        Op::Complete(Complete {
            action: action("alice", &activity),
            outcome: None,
        }),
    );
    // Due to retire, but its reply is still waiting: both stay.
    apply_ok(&mut state, 2_000, Op::Tick);
    assert!(state.activities.contains_key(&activity));
    assert!(state.email.cases.contains_key(&case));
    let send = token(&take_lease(&mut state, 2_100, 1, &send_lease("support")));
    on(
        &mut state,
        2_200,
        1,
        record(send, "reply-c1", DeliveryResult::Sent),
    );
    state.archive_outbox.clear();
    apply_ok(&mut state, 4_000, Op::Tick);
    assert!(!state.activities.contains_key(&activity));
    assert!(!state.email.cases.contains_key(&case));
    assert!(state.email.message_ids.is_empty());
    let archived = state
        .archive_outbox
        .iter()
        .find_map(|op| match op {
            parley_storage::ArchiveOp::Put { value, .. } => {
                serde_json::from_str::<Retired>(value).ok()
            }
            _ => None,
        })
        .expect("the activity was archived");
    let archived_case = archived.case.expect("with its case");
    assert_eq!(archived_case.messages.len(), 2);
}

#[test]
fn mailboxes_feed_email_queues_only_and_keep_their_queue() {
    let mut state = with_mailbox();
    let mut wrong = mailbox();
    wrong.id = "other".into();
    wrong.queue_id = "sales".into();
    let refused = state.apply(&command(5, Op::Email(EmailOp::UpsertMailbox(wrong))));
    assert!(matches!(
        refused,
        Outcome::Rejected(Rejection::Invalid { .. })
    ));
    let removed = state.apply(&command(5, Op::Remove(DirectoryKey::Queue("mail".into()))));
    assert!(matches!(
        removed,
        Outcome::Rejected(Rejection::Conflict { .. })
    ));
    let mut chat = queue("mail", &[]);
    chat.channel = Channel::Chat;
    let changed = state.apply(&command(5, Op::Upsert(DirectoryEntry::Queue(chat))));
    assert!(matches!(
        changed,
        Outcome::Rejected(Rejection::Conflict { .. })
    ));
    // A plain-text password to a remote server is refused.
    let mut remote = mailbox();
    remote.imap.host = "imap.example.com".into();
    assert!(crate::state::check_mailbox_spec(&remote).is_err());
    assert_eq!(
        on(
            &mut state,
            6,
            1,
            EmailOp::RemoveMailbox {
                mailbox_id: "support".into()
            }
        ),
        Outcome::Done
    );
    apply_ok(
        &mut state,
        7,
        Op::Remove(DirectoryKey::Queue("mail".into())),
    );
}

/// Completes `activity` (alice holds it) at `at`.
fn complete(state: &mut State, at: u64, activity: &str) {
    apply_ok(
        state,
        at,
        Op::Complete(Complete {
            action: action("alice", activity),
            outcome: None,
        }),
    );
}

#[test]
fn a_mail_of_a_retired_case_is_not_taken_in_again_while_the_archive_holds_its_message_id() {
    let mut state = with_mailbox();
    apply_ok(
        &mut state,
        4,
        Op::SetRetention(Retention {
            hot_ms: 1_000,
            archive_ms: 600_000,
        }),
    );
    let (case, activity) = assigned_case(&mut state);
    complete(&mut state, 30, &activity);
    state.archive_outbox.clear();
    apply_ok(&mut state, 2_000, Op::Tick);
    assert!(!state.email.cases.contains_key(&case), "retired");
    assert!(state.email.message_ids.is_empty());
    // Its Message-ID is archived to it, expiring with the activity's record.
    let expiry = 2_000 + 600_000;
    let put = state
        .archive_outbox
        .iter()
        .find_map(|op| match op {
            ArchiveOp::Put {
                key,
                value,
                expires_at_ms,
            } if *key == message_id_key("first@x") => Some((value.clone(), *expires_at_ms)),
            _ => None,
        })
        .expect("the Message-ID was archived");
    assert_eq!(put.1, expiry);
    assert_eq!(
        serde_json::from_str::<ArchivedMessageId>(&put.0).unwrap(),
        ArchivedMessageId {
            case_id: case.clone(),
            activity_id: activity.clone(),
        }
    );
    let activity_record = state.archive_outbox.iter().any(|op| {
        matches!(op, ArchiveOp::Put { key, expires_at_ms, .. }
            if *key == crate::state::archive_key(&activity) && *expires_at_ms == expiry)
    });
    assert!(activity_record);
    // The folder is recreated: the same mail under a new UIDVALIDITY, its case found in the
    // archive by the proposer. A duplicate of that case: the cursor moves, nothing opens.
    let t = token(&take_lease(&mut state, 20_000, 1, &fetch_lease("support")));
    let again = with(ingest(t, 2, 1, mail("first@x", "Order")), |i| {
        i.known_case = Some(case.clone());
    });
    assert_eq!(
        ingested(&on(&mut state, 20_001, 1, again)),
        (Some(case.clone()), None, true)
    );
    assert!(state.email.cases.is_empty());
    let cursor = state.email.mailboxes["support"].cursor.unwrap();
    assert_eq!((cursor.uid_validity, cursor.last_uid), (2, 1));
    assert_eq!(
        state
            .activities
            .values()
            .filter(|a| a.channel == Channel::Email)
            .count(),
        0
    );
    // A new mail answering the retired case opens a case of its own: only cases in memory
    // are threaded to (as before retention had them).
    let mut answer = mail("answer@x", "Re: Order");
    answer.in_reply_to = vec!["first@x".into()];
    let (opened, created, dup) = ingested(&on(&mut state, 20_002, 1, ingest(t, 2, 2, answer)));
    assert!(!dup);
    assert!(created.is_some());
    assert_ne!(opened, Some(case));
    assert_eq!(state.email.cases.len(), 1);
}

fn attachment(name: &str, bytes: &[u8]) -> (AttachmentMeta, AttachmentContent) {
    let hash = blake3::hash(bytes).to_hex().to_string();
    (
        AttachmentMeta {
            name: name.into(),
            content_type: "application/pdf".into(),
            size_bytes: bytes.len() as u64,
            blake3: hash.clone(),
            stored: false,
            not_stored: None,
        },
        AttachmentContent {
            blake3: hash,
            base64: base64::engine::general_purpose::STANDARD.encode(bytes),
        },
    )
}

fn puts_of(state: &State, key: &str) -> Vec<(String, u64)> {
    state
        .archive_outbox
        .iter()
        .filter_map(|op| match op {
            ArchiveOp::Put {
                key: k,
                value,
                expires_at_ms,
            } if k == key => Some((value.clone(), *expires_at_ms)),
            _ => None,
        })
        .collect()
}

fn expiries_of(state: &State, key: &str) -> Vec<u64> {
    state
        .archive_outbox
        .iter()
        .filter_map(|op| match op {
            ArchiveOp::Expire {
                key: k,
                expires_at_ms,
            } if k == key => Some(*expires_at_ms),
            _ => None,
        })
        .collect()
}

#[test]
fn attachment_bytes_are_checked_stored_once_by_hash_and_bounded() {
    let mut state = with_mailbox();
    apply_ok(
        &mut state,
        4,
        Op::SetRetention(Retention {
            hot_ms: 1_000,
            archive_ms: 600_000,
        }),
    );
    ready_for_email(&mut state, 5);
    let t = token(&take_lease(&mut state, 10, 1, &fetch_lease("support")));
    let invoice = vec![7u8; 1000];
    let (meta, content) = attachment("invoice.pdf", &invoice);
    let big = limits::MAIL_ATTACHMENT_STORED_BYTES_MAX + 1;
    let too_big = AttachmentMeta {
        name: "video.mp4".into(),
        content_type: "video/mp4".into(),
        size_bytes: big,
        blake3: "ab".repeat(32),
        stored: false,
        not_stored: None,
    };
    let mut first = mail("one@x", "Invoice");
    first.attachments = vec![meta.clone(), too_big];

    // Bytes that do not hash to what they claim are refused, and nothing moves.
    let (_, other) = attachment("invoice.pdf", b"something else");
    let forged = with(ingest(t, 1, 1, first.clone()), |i| {
        i.contents = vec![AttachmentContent {
            blake3: meta.blake3.clone(),
            base64: other.base64.clone(),
        }];
    });
    assert!(matches!(
        state.apply(&command(20, Op::Email(forged))),
        Outcome::Rejected(Rejection::Invalid { .. })
    ));
    let not_base64 = with(ingest(t, 1, 1, first.clone()), |i| {
        i.contents = vec![AttachmentContent {
            blake3: meta.blake3.clone(),
            base64: "not base64!".into(),
        }];
    });
    assert!(matches!(
        state.apply(&command(20, Op::Email(not_base64))),
        Outcome::Rejected(Rejection::Invalid { .. })
    ));
    assert!(state.email.mailboxes["support"].cursor.is_none());
    assert!(state.email.cases.is_empty() && state.archive_outbox.is_empty());

    // Stored: put once under its hash, kept while a message in memory lists it; the one over
    // the limit is listed, not stored, with why.
    let op = with(ingest(t, 1, 1, first), |i| {
        i.contents = vec![content.clone()]
    });
    let (case1, activity1, _) = ingested(&on(&mut state, 21, 1, op));
    let (case1, activity1) = (case1.unwrap(), activity1.unwrap());
    let key = attachment_key(&meta.blake3);
    let puts = puts_of(&state, &key);
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].1, u64::MAX);
    let record: AttachmentRecord = serde_json::from_str(&puts[0].0).unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(record.base64)
            .unwrap(),
        invoice
    );
    let listed = &state.email.cases[&case1].messages[0].attachments;
    assert!(listed[0].stored && listed[0].not_stored.is_none());
    assert!(!listed[1].stored);
    assert!(
        listed[1]
            .not_stored
            .as_deref()
            .is_some_and(|why| why.contains("larger than the 256 KiB")),
        "{listed:?}"
    );
    assert_eq!(state.email.attachment_bytes, 1000);

    // The same bytes in another mail: not put again, counted twice.
    state.archive_outbox.clear();
    let mut second = mail("two@x", "Same invoice");
    second.attachments = vec![meta.clone()];
    let op = with(ingest(t, 1, 2, second), |i| {
        i.contents = vec![content.clone()]
    });
    let (case2, activity2, _) = ingested(&on(&mut state, 22, 1, op));
    assert_ne!(case2.as_ref(), Some(&case1));
    assert!(puts_of(&state, &key).is_empty());
    assert_eq!(state.email.attachments[&meta.blake3].in_memory, 2);
    assert_eq!(state.email.attachment_bytes, 1000);

    // A mail whose attachments' bytes the proposer left out (over the mail's total): listed
    // with why, unless the same bytes are stored already.
    let (lone, _) = attachment("lone.pdf", &[1u8; 10]);
    let mut third = mail("three@x", "Two files");
    third.attachments = vec![lone, meta.clone()];
    let (case3, activity3, _) = ingested(&on(&mut state, 23, 1, ingest(t, 1, 3, third)));
    let listed = &state.email.cases[case3.as_ref().unwrap()].messages[0].attachments;
    assert!(!listed[0].stored);
    assert!(listed[0]
        .not_stored
        .as_deref()
        .is_some_and(|why| why.contains("together")));
    assert!(listed[1].stored, "the same bytes are stored");
    assert_eq!(state.email.attachments[&meta.blake3].in_memory, 3);

    // Over the mail's total: refused at the edge of apply.
    let (m1, c1) = attachment("a", &vec![1u8; 150_000]);
    let (m2, c2) = attachment("b", &vec![2u8; 150_000]);
    let (m3, c3) = attachment("c", &vec![3u8; 150_000]);
    let mut heavy = mail("heavy@x", "Heavy");
    heavy.attachments = vec![m1, m2, m3];
    let op = with(ingest(t, 1, 4, heavy), |i| i.contents = vec![c1, c2, c3]);
    let refused = state.apply(&command(24, Op::Email(op.clone())));
    assert!(
        matches!(&refused, Outcome::Rejected(Rejection::Invalid { field, .. }) if field == "contents"),
        "{refused:?}"
    );
    assert_eq!(
        check_input(&Op::Email(op)),
        Err(match refused {
            Outcome::Rejected(r) => r,
            _ => unreachable!(),
        })
    );

    // Retired one by one: the record stays "until moved" until the last message listing it
    // retires, then expires with the latest case's archive record.
    let activities = [activity1, activity2.unwrap(), activity3.unwrap()];
    for activity in &activities {
        apply_ok(&mut state, 30, Op::Accept(action("alice", activity)));
        complete(&mut state, 31, activity);
    }
    state.archive_outbox.clear();
    apply_ok(&mut state, 1_500, Op::Tick);
    assert!(state.email.cases.is_empty());
    assert_eq!(expiries_of(&state, &key), vec![1_500 + 600_000]);
    assert_eq!(state.email.attachments[&meta.blake3].in_memory, 0);
    // Taken in again by a new mail before it expired: kept again "until moved".
    state.archive_outbox.clear();
    let t = token(&take_lease(&mut state, 20_000, 1, &fetch_lease("support")));
    let mut fourth = mail("four@x", "Again");
    fourth.attachments = vec![meta.clone()];
    let op = with(ingest(t, 1, 5, fourth), |i| {
        i.contents = vec![content.clone()]
    });
    let (_, activity4, _) = ingested(&on(&mut state, 20_001, 1, op));
    assert!(puts_of(&state, &key).is_empty(), "not put again");
    assert_eq!(expiries_of(&state, &key), vec![u64::MAX]);
    // Retired later: expires with the later case.
    let activity4 = activity4.unwrap();
    apply_ok(&mut state, 20_002, Op::Accept(action("alice", &activity4)));
    complete(&mut state, 20_003, &activity4);
    state.archive_outbox.clear();
    apply_ok(&mut state, 22_000, Op::Tick);
    assert_eq!(expiries_of(&state, &key), vec![22_000 + 600_000]);
    // The purge at its expiry forgets it.
    for at in (30_000..=720_000).step_by(30_000) {
        apply_ok(&mut state, at, Op::Tick);
    }
    assert!(state.email.attachments.is_empty());
    assert_eq!(state.email.attachment_bytes, 0);
    assert!(state.validate().is_ok());
}

#[test]
fn a_full_attachment_store_lists_new_attachments_as_not_stored() {
    let mut state = with_mailbox();
    let t = token(&take_lease(&mut state, 10, 1, &fetch_lease("support")));
    // As if the store were nearly full (the index would say so).
    state.email.attachment_bytes = limits::ATTACHMENT_STORE_BYTES_MAX - 10;
    let (meta, content) = attachment("a.pdf", &[9u8; 100]);
    let mut email = mail("full@x", "Full");
    email.attachments = vec![meta];
    let op = with(ingest(t, 1, 1, email), |i| i.contents = vec![content]);
    let outcome = state.apply(&command(20, Op::Email(op)));
    let (case, _, _) = ingested(&outcome);
    let listed = &state.email.cases[&case.unwrap()].messages[0].attachments;
    assert!(!listed[0].stored);
    assert!(listed[0]
        .not_stored
        .as_deref()
        .is_some_and(|why| why.contains("full")));
    assert!(state.archive_outbox.is_empty(), "nothing put");
}

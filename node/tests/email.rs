//! The email channel against real mail servers: Debian's Dovecot (IMAP) and Postfix (SMTP,
//! delivering into Dovecot over LMTP, so bounces are real DSNs), started by
//! `node/tests/mail/servers.sh` (`./dev.sh test` does it and exports `MAIL_TEST_*`).
//!
//! Without those servers the tests fail under CI (`CI` set) and are skipped, saying so,
//! elsewhere. Each test uses its own mailbox user (`box1`..`box11`), so they run in parallel.
//!
//! The servers also speak TLS with a certificate from a private test CA (`MAIL_TEST_CA`):
//! STARTTLS on the IMAP and SMTP ports, implicit TLS on the IMAPS and SMTPS ones. The TLS
//! tests give the nodes that CA as `email.ca_file`, or not, to see the connection refused.

mod support;

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::{json, Value};
use support::{Agent, Cluster, ADMIN_TOKEN};
use tokio::net::{TcpListener, TcpStream};

/// Where the test mail servers are.
#[derive(Clone, Debug)]
struct Mail {
    imap_port: u16,
    imaps_port: u16,
    smtp_port: u16,
    smtps_port: u16,
    /// The test CA's certificate (PEM) the servers' certificate chains to.
    ca: String,
    domain: String,
    password: String,
}

/// The test mail servers, or `None` (after saying why) when they are not running and this is
/// not CI.
fn mail() -> Option<Mail> {
    let var = |name: &str| std::env::var(name).ok();
    let found = (|| {
        Some(Mail {
            imap_port: var("MAIL_TEST_IMAP_PORT")?.parse().ok()?,
            imaps_port: var("MAIL_TEST_IMAPS_PORT")?.parse().ok()?,
            smtp_port: var("MAIL_TEST_SMTP_PORT")?.parse().ok()?,
            smtps_port: var("MAIL_TEST_SMTPS_PORT")?.parse().ok()?,
            ca: var("MAIL_TEST_CA")?,
            domain: var("MAIL_TEST_DOMAIN")?,
            password: var("MAIL_TEST_PASSWORD")?,
        })
    })();
    if found.is_none() {
        let why = "the test mail servers are not running: MAIL_TEST_* is not set. Run \
                   `./dev.sh test`, or `node/tests/mail/servers.sh start DIR` and source DIR/env";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
    }
    found
}

type Imap = async_imap::Session<TcpStream>;

async fn imap(mail: &Mail, user: &str) -> Imap {
    let stream = TcpStream::connect(("127.0.0.1", mail.imap_port))
        .await
        .expect("connecting to the test IMAP server");
    let mut client = async_imap::Client::new(stream);
    client.read_response().await.expect("greeting");
    client
        .login(format!("{user}@{}", mail.domain), &mail.password)
        .await
        .map_err(|(e, _)| e)
        .expect("imap login")
}

/// A mail as a customer's client writes it.
fn raw_mail(
    from: &str,
    to: &str,
    subject: &str,
    message_id: &str,
    extra: &str,
    body: &str,
) -> String {
    format!(
        "From: Carol <{from}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n\
         Date: Sun, 6 Dec 2026 12:00:00 +0000\r\n{extra}Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
}

async fn append(session: &mut Imap, folder: &str, flags: Option<&str>, raw: &str) {
    session
        .append(folder, flags, None, raw.as_bytes())
        .await
        .expect("imap append");
}

/// Sends `raw` through the test Postfix from `from` to `to`.
async fn smtp_send(mail: &Mail, from: &str, to: &str, raw: &str) {
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(mail.smtp_port)
        .timeout(Some(Duration::from_secs(10)))
        .build();
    let envelope = lettre::address::Envelope::new(
        Some(from.parse().expect("from")),
        vec![to.parse().expect("to")],
    )
    .expect("envelope");
    transport
        .send_raw(&envelope, raw.as_bytes())
        .await
        .expect("smtp send");
}

/// The raw mails of `user`'s INBOX.
async fn inbox(mail: &Mail, user: &str) -> Vec<String> {
    let mut session = imap(mail, user).await;
    session.select("INBOX").await.expect("select");
    let fetches: Vec<_> = session
        .uid_fetch("1:*", "(UID BODY.PEEK[])")
        .await
        .expect("fetch")
        .try_collect()
        .await
        .unwrap_or_default();
    let mails = fetches
        .iter()
        .filter_map(|f| f.body().map(|b| String::from_utf8_lossy(b).into_owned()))
        .collect();
    let _ = session.logout().await;
    mails
}

/// How the nodes reach the test mail servers.
struct Servers {
    imap_port: u16,
    /// `tls`, `starttls` or `plain`.
    imap_tls: &'static str,
    smtp_port: u16,
    smtp_tls: &'static str,
    /// `email.ca_file` of every node.
    ca_file: Option<String>,
    /// More config sections for every node (after `[email]`).
    extra: &'static str,
}

/// A cluster of three with an email queue, agent alice able to take email, and mailbox `id`
/// on `user`'s account reading `folder`, IMAP in plaintext, SMTP through `smtp_port`.
async fn cluster_with_mailbox(
    mail: &Mail,
    user: &str,
    folder: &str,
    smtp_port: u16,
    poll: &str,
) -> Cluster {
    let servers = Servers {
        imap_port: mail.imap_port,
        imap_tls: "plain",
        smtp_port,
        smtp_tls: "plain",
        ca_file: None,
        extra: "",
    };
    cluster_with_servers(mail, user, folder, &servers, poll).await
}

/// [`cluster_with_mailbox`] reaching the servers as `servers` says.
async fn cluster_with_servers(
    mail: &Mail,
    user: &str,
    folder: &str,
    servers: &Servers,
    poll: &str,
) -> Cluster {
    let mut extra = format!(
        "\n[email]\nlease = \"3s\"\npoll_interval = \"{poll}\"\nio_timeout = \"5s\"\n\
         retry_backoff_max = \"1s\"\n"
    );
    if let Some(ca_file) = &servers.ca_file {
        extra.push_str(&format!("ca_file = {}\n", json!(ca_file)));
    }
    extra.push_str(servers.extra);
    let cluster = Cluster::start_ready(3, &extra, Duration::from_secs(30)).await;
    // The email channel needs cluster version 3, which a new cluster reaches on its own.
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster
        .cluster_view(1)
        .await
        .and_then(|v| v["cluster_version"].as_u64())
        < Some(3)
    {
        assert!(
            Instant::now() < deadline,
            "the cluster never reached version 3"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let admin = |method, path: &str, body: Value| {
        let path = path.to_owned();
        let cluster = &cluster;
        async move {
            let (status, answer) = cluster
                .api(1, method, &path, Some(ADMIN_TOKEN), Some(body))
                .await;
            assert!(status.is_success(), "{path}: {status} {answer}");
            answer
        }
    };
    admin(
        reqwest::Method::PUT,
        "/api/v1/admin/queues/mail",
        json!({"name": "Mail", "channel": "email", "offer_timeout_ms": 60000}),
    )
    .await;
    admin(
        reqwest::Method::PUT,
        "/api/v1/admin/agents/alice",
        json!({"name": "Alice", "skills": ["sales"], "limits": {"chat": 2, "email": 5}}),
    )
    .await;
    let server = |port: u16, tls: &str| {
        json!({"host": "127.0.0.1", "port": port, "tls": tls,
               "username": format!("{user}@{}", mail.domain),
               "password_env": "MAIL_TEST_PASSWORD"})
    };
    let mut smtp = server(servers.smtp_port, servers.smtp_tls);
    // Postfix takes submissions from loopback without a login.
    smtp["username"] = json!("");
    smtp.as_object_mut().map(|o| o.remove("password_env"));
    admin(
        reqwest::Method::PUT,
        &format!("/api/v1/admin/mailboxes/{user}"),
        json!({"address": format!("{user}@{}", mail.domain), "display_name": "Support",
               "queue": "mail", "folder": folder,
               "imap": server(servers.imap_port, servers.imap_tls), "smtp": smtp}),
    )
    .await;
    cluster
}

async fn mailbox_view(cluster: &Cluster, via: u64, id: &str) -> Value {
    let (status, list) = cluster
        .api(
            via,
            reqwest::Method::GET,
            "/api/v1/admin/mailboxes",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert!(status.is_success(), "{status} {list}");
    list.as_array()
        .and_then(|l| l.iter().find(|m| m["id"] == id).cloned())
        .unwrap_or(Value::Null)
}

/// Waits (within `within`) until the mailbox view on `via` satisfies `want`.
async fn mailbox_until(
    cluster: &Cluster,
    via: u64,
    id: &str,
    within: Duration,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let view = mailbox_view(cluster, via, id).await;
        if want(&view) {
            return view;
        }
        if Instant::now() > deadline {
            cluster.dump_logs();
            panic!("mailbox {id} never got there: {view}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ready_for_email(cluster: &Cluster, via: u64) -> Agent {
    let agent = cluster.login_ready(via, "alice").await;
    let (status, body) = cluster
        .api(
            via,
            reqwest::Method::PUT,
            "/api/v1/agents/me/availability",
            Some(&agent.token),
            Some(json!({"channels": {"email": true}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    agent
}

/// The email activities alice holds, once there are `count`.
async fn email_work(cluster: &Cluster, agent: &Agent, count: usize) -> Vec<Value> {
    let (_, view) = cluster
        .api_until(
            1,
            reqwest::Method::GET,
            "/api/v1/agents/me/activities",
            Some(&agent.token),
            |_, v| {
                v["activities"]
                    .as_array()
                    .is_some_and(|a| a.iter().filter(|a| a["channel"] == "email").count() >= count)
            },
        )
        .await;
    view["activities"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|a| a["channel"] == "email")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

async fn case(cluster: &Cluster, agent: &Agent, activity: &str) -> Value {
    let (status, case) = cluster
        .api(
            1,
            reqwest::Method::GET,
            &format!("/api/v1/emails/{activity}"),
            Some(&agent.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{case}");
    case
}

async fn case_until(
    cluster: &Cluster,
    agent: &Agent,
    activity: &str,
    within: Duration,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let view = case(cluster, agent, activity).await;
        if want(&view) {
            return view;
        }
        if Instant::now() > deadline {
            cluster.dump_logs();
            panic!("case of {activity} never got there: {view}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn header<'a>(raw: &'a str, name: &str) -> Option<&'a str> {
    raw.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// IDLE push, mail read in another client first, the same Message-ID twice, a reply sent once
/// and threaded, a customer answer whose client rewrote every header but the subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_is_taken_in_once_and_a_reply_threads_both_ways() {
    let Some(mail) = mail() else { return };
    let user = "box1";
    let customer = format!("customer@{}", mail.domain);
    let address = format!("{user}@{}", mail.domain);
    // A long poll interval: mail arriving within seconds proves IDLE.
    let cluster = cluster_with_mailbox(&mail, user, "INBOX", mail.smtp_port, "60s").await;
    let agent = ready_for_email(&cluster, 1).await;
    mailbox_until(&cluster, 1, user, Duration::from_secs(20), |m| {
        !m["fetch_holder"].is_null()
    })
    .await;
    // Give the fetcher a moment to enter IDLE, then deliver.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first_id = format!("first.{}@example.com", uuid::Uuid::new_v4());
    let first = raw_mail(
        &customer,
        &address,
        "Where is my order?",
        &first_id,
        "",
        "It has not arrived.",
    );
    let mut session = imap(&mail, user).await;
    let pushed = Instant::now();
    // Read in another client first: delivered with \Seen already set.
    append(&mut session, "INBOX", Some("(\\Seen)"), &first).await;
    let work = email_work(&cluster, &agent, 1).await;
    assert!(
        pushed.elapsed() < Duration::from_secs(10),
        "mail took {:?}: IDLE did not push it",
        pushed.elapsed()
    );
    let activity = work[0]["id"].as_str().expect("activity id").to_owned();
    let (status, body) = cluster
        .act(1, &agent.token, &activity, "accept", None)
        .await;
    assert_eq!(status, 200, "{body}");
    // The same mail again (same Message-ID, new UID): nothing new.
    append(&mut session, "INBOX", None, &first).await;
    mailbox_until(&cluster, 1, user, Duration::from_secs(20), |m| {
        m["last_uid"] == 2
    })
    .await;
    let view = case(&cluster, &agent, &activity).await;
    assert_eq!(view["messages"].as_array().map(Vec::len), Some(1), "{view}");
    assert_eq!(mailbox_view(&cluster, 1, user).await["cases"], 1);
    // The other client still sees its flags untouched (BODY.PEEK): the second copy unseen.
    session.select("INBOX").await.expect("select");
    let unseen = session.uid_search("UNSEEN").await.expect("search");
    assert_eq!(unseen.len(), 1, "fetching must not set \\Seen");

    // Reply, twice with the same client id: recorded once, sent once.
    let reply = json!({"client_id": "reply-1", "text": "It ships today."});
    let path = format!("/api/v1/emails/{activity}/reply");
    let (status, first_answer) = cluster
        .api(
            1,
            reqwest::Method::POST,
            &path,
            Some(&agent.token),
            Some(reply.clone()),
        )
        .await;
    assert_eq!(status, 201, "{first_answer}");
    let (status, again) = cluster
        .api(
            2,
            reqwest::Method::POST,
            &path,
            Some(&agent.token),
            Some(reply),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["reply_id"], first_answer["reply_id"]);
    case_until(&cluster, &agent, &activity, Duration::from_secs(20), |c| {
        c["messages"][1]["delivery"] == "sent"
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let sent = loop {
        let mails = inbox(&mail, "customer").await;
        let ours: Vec<String> = mails
            .into_iter()
            .filter(|m| m.contains("It ships today."))
            .collect();
        if !ours.is_empty() || Instant::now() > deadline {
            break ours;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(sent.len(), 1, "the reply arrives exactly once");
    let sent = &sent[0];
    assert_eq!(
        header(sent, "In-Reply-To"),
        Some(format!("<{first_id}>").as_str())
    );
    let subject = header(sent, "Subject").expect("subject").to_owned();
    assert!(
        subject.contains("[#"),
        "the subject carries the case tag: {subject}"
    );

    // The customer answers from a client that rewrote every header but the subject.
    let answer_id = format!("answer.{}@example.com", uuid::Uuid::new_v4());
    let answer = raw_mail(
        &customer,
        &address,
        &format!("AW: {subject}"),
        &answer_id,
        "",
        "Thanks!",
    );
    smtp_send(&mail, &customer, &address, &answer).await;
    let view = case_until(&cluster, &agent, &activity, Duration::from_secs(30), |c| {
        c["messages"].as_array().is_some_and(|m| m.len() == 3)
    })
    .await;
    assert_eq!(view["messages"][2]["message_id"], answer_id);
    assert_eq!(
        mailbox_view(&cluster, 1, user).await["cases"],
        1,
        "no second case"
    );
    let _ = session.logout().await;
}

/// A reply to an address that does not exist bounces; the DSN attaches to its case and opens
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_attaches_to_its_case() {
    let Some(mail) = mail() else { return };
    let user = "box2";
    let address = format!("{user}@{}", mail.domain);
    let cluster = cluster_with_mailbox(&mail, user, "INBOX", mail.smtp_port, "2s").await;
    let agent = ready_for_email(&cluster, 1).await;
    let mut session = imap(&mail, user).await;
    let nobody = format!("nobody@{}", mail.domain);
    let id = format!("q.{}@example.com", uuid::Uuid::new_v4());
    append(
        &mut session,
        "INBOX",
        None,
        &raw_mail(&nobody, &address, "Question", &id, "", "Hi"),
    )
    .await;
    let work = email_work(&cluster, &agent, 1).await;
    let activity = work[0]["id"].as_str().expect("id").to_owned();
    cluster
        .act(1, &agent.token, &activity, "accept", None)
        .await;
    let (status, body) = cluster
        .api(
            1,
            reqwest::Method::POST,
            &format!("/api/v1/emails/{activity}/reply"),
            Some(&agent.token),
            Some(json!({"client_id": "r", "text": "Answer"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let view = case_until(&cluster, &agent, &activity, Duration::from_secs(40), |c| {
        c["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["kind"] == "bounce"))
    })
    .await;
    let kinds: Vec<&str> = view["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["kind"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(kinds, vec!["normal", "normal", "bounce"], "{view}");
    assert_eq!(
        mailbox_view(&cluster, 1, user).await["cases"],
        1,
        "a bounce opens no case"
    );
    assert_eq!(email_work(&cluster, &agent, 1).await.len(), 1);
}

/// The folder is recreated (a new UIDVALIDITY) and holds the same mails again: each is still
/// taken in once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_folder_is_rescanned_without_duplicates() {
    let Some(mail) = mail() else { return };
    let user = "box3";
    let address = format!("{user}@{}", mail.domain);
    let folder = "Support";
    let mut session = imap(&mail, user).await;
    let _ = session.create(folder).await;
    let mails: Vec<String> = (0..3)
        .map(|i| {
            let id = format!("m{i}.{}@example.com", uuid::Uuid::new_v4());
            raw_mail(
                "carol@example.com",
                &address,
                &format!("Mail {i}"),
                &id,
                "",
                "x",
            )
        })
        .collect();
    for raw in &mails[..2] {
        append(&mut session, folder, None, raw).await;
    }
    let cluster = cluster_with_mailbox(&mail, user, folder, mail.smtp_port, "1s").await;
    let before = mailbox_until(&cluster, 1, user, Duration::from_secs(30), |m| {
        m["cases"] == 2
    })
    .await;
    session.delete(folder).await.expect("delete folder");
    session.create(folder).await.expect("create folder");
    for raw in &mails {
        append(&mut session, folder, None, raw).await;
    }
    // The recreated folder's own numbering, as the server gives it: a new UIDVALIDITY, and
    // UIDs that usually start again at 1 but may go on from the old folder's (Dovecot, when
    // the folder is recreated while a session still has it selected).
    let recreated = session
        .select(folder)
        .await
        .expect("select the recreated folder");
    let (validity, last) = (
        recreated.uid_validity.expect("UIDVALIDITY"),
        recreated.uid_next.expect("UIDNEXT").saturating_sub(1),
    );
    assert_ne!(Some(u64::from(validity)), before["uid_validity"].as_u64());
    let after = mailbox_until(&cluster, 2, user, Duration::from_secs(30), |m| {
        m["uid_validity"] == u64::from(validity) && m["last_uid"] == u64::from(last)
    })
    .await;
    // Each of the three mails once: the two taken in before by their Message-IDs.
    assert_eq!(after["cases"], 3, "{after}");
    let _ = session.logout().await;
}

/// The node fetching a mailbox is killed (kill -9) while mail is being taken in; another node
/// takes the lease over and every mail is taken in exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fetching_node_dies_mid_batch_and_every_mail_is_taken_in_once() {
    let Some(mail) = mail() else { return };
    let user = "box4";
    let address = format!("{user}@{}", mail.domain);
    const MAILS: u64 = 60;
    let mut session = imap(&mail, user).await;
    for i in 0..MAILS {
        let id = format!("bulk{i}.{}@example.com", uuid::Uuid::new_v4());
        let raw = raw_mail(
            "carol@example.com",
            &address,
            &format!("Bulk {i}"),
            &id,
            "",
            "x",
        );
        append(&mut session, "INBOX", None, &raw).await;
    }
    let mut cluster = cluster_with_mailbox(&mail, user, "INBOX", mail.smtp_port, "1s").await;
    // Kill the holder as soon as it has taken some in.
    let view = mailbox_until(&cluster, 1, user, Duration::from_secs(30), |m| {
        m["last_uid"].as_u64().is_some_and(|u| u >= 1)
    })
    .await;
    let holder = view["fetch_holder"]["node"].as_u64().expect("a holder");
    cluster.kill9(holder);
    let at_kill = view["last_uid"].as_u64().unwrap_or(0);
    eprintln!("killed node {holder} after {at_kill} of {MAILS} mails");
    let via = if holder == 1 { 2 } else { 1 };
    let done = mailbox_until(&cluster, via, user, Duration::from_secs(60), |m| {
        m["last_uid"] == MAILS && m["fetch_holder"]["node"].as_u64() != Some(holder)
    })
    .await;
    assert_eq!(done["cases"], MAILS, "every mail exactly once: {done}");
    let (status, body) = cluster
        .api(
            via,
            reqwest::Method::GET,
            "/api/v1/admin/validate",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert!(status.is_success(), "{body}");
    let _ = session.logout().await;
}

/// A TCP relay to the SMTP server that can be taken down (connections refused) and up again,
/// so one test's SMTP outage does not touch the others.
struct Relay {
    port: u16,
    target: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    async fn new(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut relay = Relay {
            port,
            target,
            task: None,
        };
        relay.task = Some(Self::serve(listener, target));
        relay
    }

    fn serve(listener: TcpListener, target: u16) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        })
    }

    fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    async fn up(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("rebinding the relay");
        self.task = Some(Self::serve(listener, self.target));
    }
}

/// SMTP is down when the agent replies, then up: the reply is retried, sent exactly once and
/// recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_while_smtp_is_down_is_sent_once_it_is_up() {
    let Some(mail) = mail() else { return };
    let user = "box5";
    let address = format!("{user}@{}", mail.domain);
    let mut relay = Relay::new(mail.smtp_port).await;
    let cluster = cluster_with_mailbox(&mail, user, "INBOX", relay.port, "2s").await;
    let agent = ready_for_email(&cluster, 1).await;
    let mut session = imap(&mail, user).await;
    let customer = format!("customer@{}", mail.domain);
    let id = format!("down.{}@example.com", uuid::Uuid::new_v4());
    append(
        &mut session,
        "INBOX",
        None,
        &raw_mail(&customer, &address, "SMTP test", &id, "", "x"),
    )
    .await;
    let work = email_work(&cluster, &agent, 1).await;
    let activity = work[0]["id"].as_str().expect("id").to_owned();
    cluster
        .act(1, &agent.token, &activity, "accept", None)
        .await;
    relay.down();
    let text = format!("Sent once {}", uuid::Uuid::new_v4());
    let (status, body) = cluster
        .api(
            1,
            reqwest::Method::POST,
            &format!("/api/v1/emails/{activity}/reply"),
            Some(&agent.token),
            Some(json!({"client_id": "down-1", "text": text})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let retrying = case_until(&cluster, &agent, &activity, Duration::from_secs(20), |c| {
        c["messages"][1]["delivery"] == "retrying"
    })
    .await;
    assert!(retrying["messages"][1]["delivery_reason"].is_string());
    relay.up().await;
    case_until(&cluster, &agent, &activity, Duration::from_secs(30), |c| {
        c["messages"][1]["delivery"] == "sent"
    })
    .await;
    // Any duplicate would have arrived by now too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let copies = inbox(&mail, "customer")
        .await
        .into_iter()
        .filter(|m| m.contains(&text))
        .count();
    assert_eq!(copies, 1, "sent exactly once");
    let _ = session.logout().await;
}

/// Deletes every mail of `user`'s INBOX (a test run again against the same servers starts
/// from an empty folder; UIDs go on from where they were).
async fn empty_inbox(mail: &Mail, user: &str) {
    let mut session = imap(mail, user).await;
    let folder = session.select("INBOX").await.expect("select");
    if folder.exists > 0 {
        let _: Vec<_> = session
            .store("1:*", "+FLAGS.SILENT (\\Deleted)")
            .await
            .expect("store")
            .try_collect()
            .await
            .expect("store");
        let _: Vec<_> = session
            .expunge()
            .await
            .expect("expunge")
            .try_collect()
            .await
            .expect("expunge");
    }
    let _ = session.logout().await;
}

/// A customer mail arrives in `user`'s mailbox (through Postfix when `through_smtp`, else
/// appended over IMAP), is taken in as one case, and the agent's reply reaches the customer's
/// real mailbox once.
async fn one_mail_in_and_a_reply_out(
    cluster: &Cluster,
    mail: &Mail,
    user: &str,
    through_smtp: bool,
) {
    let address = format!("{user}@{}", mail.domain);
    let customer = format!("customer@{}", mail.domain);
    let agent = ready_for_email(cluster, 1).await;
    let id = format!("tls.{}@example.com", uuid::Uuid::new_v4());
    let raw = raw_mail(&customer, &address, "Over TLS", &id, "", "Is this private?");
    if through_smtp {
        smtp_send(mail, &customer, &address, &raw).await;
    } else {
        let mut session = imap(mail, user).await;
        append(&mut session, "INBOX", None, &raw).await;
        let _ = session.logout().await;
    }
    let work = email_work(cluster, &agent, 1).await;
    let activity = work[0]["id"].as_str().expect("activity id").to_owned();
    let (status, body) = cluster
        .act(1, &agent.token, &activity, "accept", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let text = format!("Yes, over TLS {}", uuid::Uuid::new_v4());
    let (status, body) = cluster
        .api(
            1,
            reqwest::Method::POST,
            &format!("/api/v1/emails/{activity}/reply"),
            Some(&agent.token),
            Some(json!({"client_id": "tls-1", "text": text})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    case_until(cluster, &agent, &activity, Duration::from_secs(30), |c| {
        c["messages"][1]["delivery"] == "sent"
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let copies = loop {
        let copies = inbox(mail, "customer")
            .await
            .into_iter()
            .filter(|m| m.contains(&text))
            .count();
        if copies > 0 || Instant::now() > deadline {
            break copies;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(copies, 1, "the reply arrives exactly once");
    let view = mailbox_view(cluster, 1, user).await;
    assert!(view["last_uid"].is_u64(), "{view}");
    assert_eq!(view["cases"], 1, "one case: {view}");
    assert_eq!(email_work(cluster, &agent, 1).await.len(), 1);
    let holder = view["fetch_holder"]["node"]
        .as_u64()
        .expect("a fetch holder");
    let on_holder = mailbox_view(cluster, holder, user).await;
    assert!(on_holder["fetch_error"].is_null(), "{on_holder}");
}

/// IMAP with STARTTLS and SMTP with STARTTLS to servers whose certificate comes from a private
/// CA, trusted through `email.ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_to_servers_of_a_private_ca_trusted_through_ca_file() {
    let Some(mail) = mail() else { return };
    let user = "box6";
    empty_inbox(&mail, user).await;
    let servers = Servers {
        imap_port: mail.imap_port,
        imap_tls: "starttls",
        smtp_port: mail.smtp_port,
        smtp_tls: "starttls",
        ca_file: Some(mail.ca.clone()),
        extra: "",
    };
    let cluster = cluster_with_servers(&mail, user, "INBOX", &servers, "2s").await;
    let view = mailbox_view(&cluster, 1, user).await;
    assert_eq!(view["imap"]["tls"], "starttls", "{view}");
    assert_eq!(view["imap"]["port"], mail.imap_port);
    one_mail_in_and_a_reply_out(&cluster, &mail, user, true).await;
}

/// IMAP and SMTP with TLS from the first byte (IMAPS, SMTPS), the private CA trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_to_servers_of_a_private_ca_trusted_through_ca_file() {
    let Some(mail) = mail() else { return };
    let user = "box7";
    empty_inbox(&mail, user).await;
    let servers = Servers {
        imap_port: mail.imaps_port,
        imap_tls: "tls",
        smtp_port: mail.smtps_port,
        smtp_tls: "tls",
        ca_file: Some(mail.ca.clone()),
        extra: "",
    };
    let cluster = cluster_with_servers(&mail, user, "INBOX", &servers, "2s").await;
    one_mail_in_and_a_reply_out(&cluster, &mail, user, false).await;
}

/// Without `email.ca_file` the private CA's certificate is not trusted: the TLS connection is
/// refused, the fetch lease holder's mailbox view says so, and nothing is taken in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ca_file_an_untrusted_certificate_is_refused_and_reported() {
    let Some(mail) = mail() else { return };
    let user = "box8";
    let address = format!("{user}@{}", mail.domain);
    empty_inbox(&mail, user).await;
    let mut session = imap(&mail, user).await;
    let id = format!("untrusted.{}@example.com", uuid::Uuid::new_v4());
    append(
        &mut session,
        "INBOX",
        None,
        &raw_mail("carol@example.com", &address, "Hello", &id, "", "x"),
    )
    .await;
    let _ = session.logout().await;
    let servers = Servers {
        imap_port: mail.imap_port,
        imap_tls: "starttls",
        smtp_port: mail.smtp_port,
        smtp_tls: "starttls",
        ca_file: None,
        extra: "",
    };
    let cluster = cluster_with_servers(&mail, user, "INBOX", &servers, "2s").await;
    let mut since_ms = 0;
    // STARTTLS first, then TLS from the first byte (IMAPS): the mailbox changed through the API.
    for (imap_port, imap_tls) in [(mail.imap_port, "starttls"), (mail.imaps_port, "tls")] {
        if imap_tls == "tls" {
            let (status, body) = cluster
                .api(
                    1,
                    reqwest::Method::PUT,
                    &format!("/api/v1/admin/mailboxes/{user}"),
                    Some(ADMIN_TOKEN),
                    Some(json!({"address": address, "queue": "mail",
                        "imap": {"host": "127.0.0.1", "port": imap_port, "tls": imap_tls,
                                 "username": address, "password_env": "MAIL_TEST_PASSWORD"},
                        "smtp": {"host": "127.0.0.1", "port": mail.smtp_port,
                                 "tls": "starttls"}})),
                )
                .await;
            assert!(status.is_success(), "{status} {body}");
        }
        // The view of the node whose fetcher failed (the lease holder; it may move when the
        // mailbox changes or under load).
        let failed = node_reporting(&cluster, user, Duration::from_secs(30), |m| {
            m["imap"]["tls"] == imap_tls
                && m["fetch_error"]["at_ms"]
                    .as_u64()
                    .is_some_and(|at| at > since_ms)
        })
        .await;
        assert!(failed["fetch_error"]["node"].is_u64(), "{failed}");
        let error = failed["fetch_error"]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("imap tls") && error.contains("certificate"),
            "{imap_tls}: {failed}"
        );
        assert!(failed["last_uid"].is_null(), "{imap_tls}: {failed}");
        assert_eq!(failed["cases"], 0, "{imap_tls}: {failed}");
        since_ms = failed["fetch_error"]["at_ms"].as_u64().unwrap_or(0);
    }
    // Further tries (the pause doubles from 1 s) take nothing in either.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let view = mailbox_view(&cluster, 1, user).await;
    assert!(view["last_uid"].is_null(), "{view}");
    assert_eq!(view["cases"], 0, "{view}");
}

/// The mailbox view of the first node of three whose view satisfies `want`, within `within`.
async fn node_reporting(
    cluster: &Cluster,
    id: &str,
    within: Duration,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let mut views = Vec::new();
        for via in 1..=3 {
            let view = mailbox_view(cluster, via, id).await;
            if want(&view) {
                return view;
            }
            views.push(view);
        }
        if Instant::now() > deadline {
            cluster.dump_logs();
            panic!("no node's view of mailbox {id} got there: {views:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A private CA of its own (not the one that signed the test servers' certificate): its
/// certificate's path in `dir`.
fn another_ca(dir: &std::path::Path) -> String {
    parley_node::certs::issue(&parley_node::certs::CertsRequest::new(dir, [1]))
        .expect("another CA");
    dir.join("ca.pem").display().to_string()
}

/// The reply of `view` whose text is `text`.
fn reply_in<'a>(view: &'a Value, text: &str) -> &'a Value {
    view["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["text"] == text))
        .unwrap_or(&Value::Null)
}

/// The SMTP server's certificate is not signed by a CA the mailbox trusts (the nodes trust the
/// public roots and another private CA, `email.ca_file`), over STARTTLS then over SMTPS: the
/// reply is never sent, not in plaintext either (the submission port would take it), its
/// delivery stays `retrying` with a reason naming the certificate, the send holder's mailbox
/// view says so, and the customer receives nothing. IMAP over STARTTLS to the same server is
/// refused the same way and takes nothing in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_is_never_sent_to_an_smtp_server_whose_certificate_is_not_trusted() {
    let Some(mail) = mail() else { return };
    let user = "box9";
    let address = format!("{user}@{}", mail.domain);
    let customer = format!("customer@{}", mail.domain);
    empty_inbox(&mail, user).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let servers = Servers {
        imap_port: mail.imap_port,
        imap_tls: "plain",
        smtp_port: mail.smtp_port,
        smtp_tls: "starttls",
        ca_file: Some(another_ca(dir.path())),
        extra: "",
    };
    let cluster = cluster_with_servers(&mail, user, "INBOX", &servers, "1s").await;
    let agent = ready_for_email(&cluster, 1).await;
    let id = format!("untrusted-smtp.{}@example.com", uuid::Uuid::new_v4());
    let raw = raw_mail(&customer, &address, "Certificates", &id, "", "Hello?");
    let mut session = imap(&mail, user).await;
    append(&mut session, "INBOX", None, &raw).await;
    let work = email_work(&cluster, &agent, 1).await;
    let activity = work[0]["id"].as_str().expect("activity id").to_owned();
    let (status, body) = cluster
        .act(1, &agent.token, &activity, "accept", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let smtp = |port: u16, tls: &str| json!({"host": "127.0.0.1", "port": port, "tls": tls});
    let imap_plain = json!({"host": "127.0.0.1", "port": mail.imap_port, "tls": "plain",
        "username": address, "password_env": "MAIL_TEST_PASSWORD"});
    let mut texts = Vec::new();
    let mut since_ms = 0;
    for (port, tls) in [(mail.smtp_port, "starttls"), (mail.smtps_port, "tls")] {
        if tls == "tls" {
            let (status, body) = cluster
                .api(
                    1,
                    reqwest::Method::PUT,
                    &format!("/api/v1/admin/mailboxes/{user}"),
                    Some(ADMIN_TOKEN),
                    Some(
                        json!({"address": address, "queue": "mail", "imap": imap_plain,
                        "smtp": smtp(port, tls)}),
                    ),
                )
                .await;
            assert!(status.is_success(), "{status} {body}");
        }
        let text = format!("Over {tls} {}", uuid::Uuid::new_v4());
        let (status, body) = cluster
            .api(
                1,
                reqwest::Method::POST,
                &format!("/api/v1/emails/{activity}/reply"),
                Some(&agent.token),
                Some(json!({"client_id": format!("cert-{tls}"), "text": text})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        // Tried and refused at least twice, each time for the certificate.
        let view = case_until(&cluster, &agent, &activity, Duration::from_secs(30), |c| {
            let reply = reply_in(c, &text);
            reply["delivery"] == "retrying"
                && reply["delivery_attempts"].as_u64().is_some_and(|n| n >= 2)
        })
        .await;
        let reason = reply_in(&view, &text)["delivery_reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        eprintln!("smtp {tls}: delivery reason: {reason}");
        assert!(reason.contains("certificate"), "{tls}: {reason}");
        let failed = node_reporting(&cluster, user, Duration::from_secs(30), |m| {
            m["smtp"]["tls"] == tls
                && m["send_error"]["at_ms"]
                    .as_u64()
                    .is_some_and(|at| at > since_ms)
        })
        .await;
        let error = failed["send_error"]["error"].as_str().unwrap_or_default();
        assert!(error.contains("certificate"), "{tls}: {failed}");
        since_ms = failed["send_error"]["at_ms"].as_u64().unwrap_or(0);
        texts.push(text);
    }
    // Never sent, never marked sent: a fallback to plaintext would have delivered by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let view = case(&cluster, &agent, &activity).await;
    for text in &texts {
        assert_eq!(reply_in(&view, text)["delivery"], "retrying", "{view}");
    }
    let received = inbox(&mail, "customer")
        .await
        .into_iter()
        .filter(|m| texts.iter().any(|t| m.contains(t.as_str())))
        .count();
    assert_eq!(received, 0, "a reply went out despite the certificate");
    assert_eq!(mailbox_view(&cluster, 1, user).await["outbox"], 2);

    // IMAP over STARTTLS to the same server, trusting the other CA only: refused, nothing
    // more taken in.
    let before = mailbox_view(&cluster, 1, user).await;
    let (status, body) = cluster
        .api(
            1,
            reqwest::Method::PUT,
            &format!("/api/v1/admin/mailboxes/{user}"),
            Some(ADMIN_TOKEN),
            Some(json!({"address": address, "queue": "mail",
                "imap": {"host": "127.0.0.1", "port": mail.imap_port, "tls": "starttls",
                         "username": address, "password_env": "MAIL_TEST_PASSWORD"},
                "smtp": smtp(mail.smtps_port, "tls")})),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    // Once the fetcher of the changed mailbox failed (the plaintext one has stopped), a new
    // mail arrives.
    let failed = node_reporting(&cluster, user, Duration::from_secs(30), |m| {
        m["imap"]["tls"] == "starttls" && m["fetch_error"]["error"].is_string()
    })
    .await;
    let error = failed["fetch_error"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("imap tls") && error.contains("certificate"),
        "{failed}"
    );
    let second = format!("untrusted-imap.{}@example.com", uuid::Uuid::new_v4());
    append(
        &mut session,
        "INBOX",
        None,
        &raw_mail(&customer, &address, "Again", &second, "", "x"),
    )
    .await;
    // Further sessions (the pause doubles from 1 s) fail the same way.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = mailbox_view(&cluster, 1, user).await;
    assert_eq!(after["last_uid"], before["last_uid"], "{after}");
    assert_eq!(after["cases"], 1, "{after}");
    let _ = session.logout().await;
}

/// A case retires to the archive (a short retention); the folder is then recreated (a new
/// UIDVALIDITY) holding the same mail and a new one: the same mail is recognised by its
/// Message-ID in the archive and opens nothing, the new one opens a case. A supervisor reads
/// the retired case from the archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_case_s_mail_is_not_taken_in_again_from_a_recreated_folder() {
    let Some(mail) = mail() else { return };
    let user = "box10";
    let address = format!("{user}@{}", mail.domain);
    let folder = "Retired";
    let mut session = imap(&mail, user).await;
    let _ = session.delete(folder).await;
    session.create(folder).await.expect("create folder");
    let old_id = format!("old.{}@example.com", uuid::Uuid::new_v4());
    let old = raw_mail(
        &format!("carol@{}", mail.domain),
        &address,
        "Old",
        &old_id,
        "",
        "x",
    );
    append(&mut session, folder, None, &old).await;
    let servers = Servers {
        imap_port: mail.imap_port,
        imap_tls: "plain",
        smtp_port: mail.smtp_port,
        smtp_tls: "plain",
        ca_file: None,
        extra: "[retention]\nhot = \"1s\"\narchive = \"1h\"\n",
    };
    let cluster = cluster_with_servers(&mail, user, folder, &servers, "1s").await;
    let agent = ready_for_email(&cluster, 1).await;
    let work = email_work(&cluster, &agent, 1).await;
    let activity = work[0]["id"].as_str().expect("activity id").to_owned();
    for action in ["accept", "complete"] {
        let (status, body) = cluster.act(1, &agent.token, &activity, action, None).await;
        assert_eq!(status, 200, "{action}: {body}");
    }
    let before = mailbox_until(&cluster, 1, user, Duration::from_secs(30), |m| {
        m["cases"] == 0 && m["last_uid"] == 1
    })
    .await;
    // Retired: out of memory, read by a supervisor from the archive.
    let (status, retired) = cluster
        .api(
            2,
            reqwest::Method::GET,
            &format!("/api/v1/emails/{activity}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{retired}");
    assert_eq!(retired["messages"][0]["message_id"], old_id);

    session.delete(folder).await.expect("delete folder");
    session.create(folder).await.expect("create folder");
    append(&mut session, folder, None, &old).await;
    let new_id = format!("new.{}@example.com", uuid::Uuid::new_v4());
    let new = raw_mail(
        &format!("carol@{}", mail.domain),
        &address,
        "New",
        &new_id,
        "",
        "y",
    );
    append(&mut session, folder, None, &new).await;
    let after = mailbox_until(&cluster, 1, user, Duration::from_secs(30), |m| {
        m["uid_validity"] != before["uid_validity"] && m["last_uid"] == 2
    })
    .await;
    assert_eq!(after["cases"], 1, "only the new mail opens a case: {after}");
    let work = email_work(&cluster, &agent, 1).await;
    assert_eq!(work.len(), 1, "{work:?}");
    let current = work[0]["id"].as_str().expect("activity id");
    assert_ne!(current, activity);
    let view = case(&cluster, &agent, current).await;
    assert_eq!(view["messages"][0]["message_id"], new_id, "{view}");
    let _ = session.logout().await;
}

/// A mail with a file of `(name, content type, bytes)` per part, base64.
fn mail_with_files(
    from: &str,
    to: &str,
    message_id: &str,
    files: &[(&str, &str, &[u8])],
) -> String {
    use base64::Engine;
    let mut raw = format!(
        "From: Carol <{from}>\r\nTo: {to}\r\nSubject: Files\r\nMessage-ID: <{message_id}>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"part\"\r\n\r\n\
         --part\r\nContent-Type: text/plain\r\n\r\nThe files.\r\n"
    );
    for (name, content_type, bytes) in files {
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        let lines: Vec<&str> = encoded
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        raw.push_str(&format!(
            "--part\r\nContent-Type: {content_type}\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            lines.join("\r\n")
        ));
    }
    raw.push_str("--part--\r\n");
    raw
}

/// `GET` of `path` on node `via` with `token`: status, headers, bytes.
async fn download(
    cluster: &Cluster,
    via: u64,
    path: &str,
    token: Option<&str>,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = reqwest::Client::new().get(cluster.url(via, path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request sent");
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = response
        .bytes()
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    (status, headers, bytes)
}

/// Attachments taken in through IMAP are stored by content hash and downloaded through the
/// API from every node, byte for byte, as downloads (an HTML one as an opaque type); one over
/// the size limit is listed with `stored: false` and why. Once the case is retired, a
/// supervisor still downloads them from the archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_are_stored_by_hash_and_downloaded_from_every_node() {
    let Some(mail) = mail() else { return };
    let user = "box11";
    let address = format!("{user}@{}", mail.domain);
    empty_inbox(&mail, user).await;
    let servers = Servers {
        imap_port: mail.imap_port,
        imap_tls: "plain",
        smtp_port: mail.smtp_port,
        smtp_tls: "plain",
        ca_file: None,
        extra: "[retention]\nhot = \"1s\"\narchive = \"1h\"\n",
    };
    let cluster = cluster_with_servers(&mail, user, "INBOX", &servers, "1s").await;
    let agent = ready_for_email(&cluster, 1).await;
    // Just under the limit of 256 KiB a stored attachment may be, and just over it.
    let limit = 256 * 1024;
    let invoice: Vec<u8> = (0..limit - 1).map(|i| (i * 7 % 251) as u8).collect();
    let page = b"<html><script>alert(1)</script></html>".to_vec();
    let video: Vec<u8> = (0..limit + 1).map(|i| (i % 13) as u8).collect();
    let id = format!("files.{}@example.com", uuid::Uuid::new_v4());
    let raw = mail_with_files(
        &format!("carol@{}", mail.domain),
        &address,
        &id,
        &[
            ("invoice.pdf", "application/pdf", &invoice[..]),
            ("../\\\"page\\\".html", "text/html", &page[..]),
            ("video.mp4", "video/mp4", &video[..]),
        ],
    );
    let mut session = imap(&mail, user).await;
    let appended = Instant::now();
    append(&mut session, "INBOX", None, &raw).await;
    let work = email_work(&cluster, &agent, 1).await;
    eprintln!(
        "a mail of {} bytes with {} bytes of attachments to store: an agent saw it {:?} after it \
         was appended",
        raw.len(),
        invoice.len() + page.len(),
        appended.elapsed()
    );
    let activity = work[0]["id"].as_str().expect("activity id").to_owned();
    let view = case(&cluster, &agent, &activity).await;
    let listed = view["messages"][0]["attachments"].clone();
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{view}");
    assert_eq!(listed[0]["stored"], true, "{listed}");
    assert_eq!(listed[1]["stored"], true, "{listed}");
    assert_eq!(listed[2]["stored"], false, "{listed}");
    assert_eq!(listed[2]["size_bytes"], video.len());
    assert!(
        listed[2]["not_stored"]
            .as_str()
            .is_some_and(|why| why.contains("larger than")),
        "{listed}"
    );
    let path = |hash: &Value| {
        format!(
            "/api/v1/emails/{activity}/attachments/{}",
            hash.as_str().unwrap_or_default()
        )
    };
    let invoice_path = path(&listed[0]["blake3"]);
    assert_eq!(
        listed[0]["blake3"],
        blake3::hash(&invoice).to_hex().to_string()
    );
    // Every node has the bytes in its own archive.
    for via in 1..=3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (status, headers, bytes) = loop {
            let answer = download(&cluster, via, &invoice_path, Some(&agent.token)).await;
            if answer.0 == 200 || Instant::now() > deadline {
                break answer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            status,
            200,
            "node {via}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(
            bytes == invoice,
            "node {via}: other bytes ({} of them)",
            bytes.len()
        );
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(header("content-type"), "application/pdf");
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert!(
            header("content-disposition").starts_with("attachment; filename=\"invoice.pdf\""),
            "{headers:?}"
        );
    }
    // HTML is never served as HTML, under a cleaned name.
    let (status, headers, bytes) =
        download(&cluster, 1, &path(&listed[1]["blake3"]), Some(&agent.token)).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, page);
    assert_eq!(headers["content-type"], "application/octet-stream");
    let disposition = headers["content-disposition"].to_str().unwrap_or_default();
    assert!(
        disposition.starts_with("attachment; filename=\"page.html\""),
        "{disposition}"
    );
    // Not stored, unknown, malformed, without a credential.
    let (status, _, body) =
        download(&cluster, 1, &path(&listed[2]["blake3"]), Some(&agent.token)).await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("attachment_not_stored"));
    let (status, _, body) = download(
        &cluster,
        1,
        &path(&json!("0".repeat(64))),
        Some(&agent.token),
    )
    .await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("unknown_attachment"));
    let (status, _, _) = download(&cluster, 1, &path(&json!("xyz")), Some(&agent.token)).await;
    assert_eq!(status, 400);
    let (status, _, _) = download(&cluster, 1, &invoice_path, None).await;
    assert_eq!(status, 401);

    // Retired with its case: the agent holds it no more; a supervisor downloads it from the
    // archive.
    for action in ["accept", "complete"] {
        let (status, body) = cluster.act(1, &agent.token, &activity, action, None).await;
        assert_eq!(status, 200, "{action}: {body}");
    }
    mailbox_until(&cluster, 1, user, Duration::from_secs(30), |m| {
        m["cases"] == 0
    })
    .await;
    let (status, _, _) = download(&cluster, 1, &invoice_path, Some(&agent.token)).await;
    assert_eq!(status, 404);
    for via in 1..=3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (status, _, bytes) = loop {
            let answer = download(&cluster, via, &invoice_path, Some(ADMIN_TOKEN)).await;
            if answer.0 == 200 || Instant::now() > deadline {
                break answer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            status,
            200,
            "node {via}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(bytes == invoice, "node {via}");
    }
    let _ = session.logout().await;
}

use super::*;

const GOOD: &str = r#"
node_id = 2
site = "east"
data_dir = "/tmp/parley-test"
http_listen = "127.0.0.1:8002"
grpc_listen = "127.0.0.1:9002"
cluster_secret = "0123456789abcdef0123456789abcdef"

[raft]
heartbeat = "50ms"
election_timeout_min = "200ms"
election_timeout_max = "400ms"

[tls]
insecure = true

[[peers]]
id = 1
site = "east"
grpc = "127.0.0.1:9001"
http = "127.0.0.1:8001"

[[peers]]
id = 2
site = "east"
grpc = "127.0.0.1:9002"
http = "127.0.0.1:8002"

[[skills]]
id = "sales"
name = "Sales"

[[queues]]
id = "sales"
name = "Sales"
skills = ["sales"]

[[agents]]
id = "alice"
name = "Alice"
skills = ["sales"]
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$DXzqStHXjsKuhqRi33GQxQ$gkwELxz4WEdMkRIezV428sJvA4ZIF/X/dt4D3RfoIJg"
"#;

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$DXzqStHXjsKuhqRi33GQxQ$gkwELxz4WEdMkRIezV428sJvA4ZIF/X/dt4D3RfoIJg";

/// Loads `text` through [`Config::load`] with exactly the environment variables `env`, inside a
/// figment jail (a private directory and environment, restored afterwards).
// figment's `Jail` closure returns figment's own (large) error type.
#[allow(clippy::result_large_err)]
fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut result = None;
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("node.toml", text)?;
        for (key, value) in env {
            jail.set_env(key, value);
        }
        result = Some(Config::load(Path::new("node.toml")));
        Ok(())
    });
    result.expect("the jail ran the closure")
}

fn problem(text: &str) -> String {
    match load(text, &[]) {
        Ok(_) => panic!("config was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_good_config_validates() {
    let config = load(GOOD, &[]).unwrap();
    assert_eq!(config.node_id, 2);
    assert_eq!(config.members.len(), 2);
    assert_eq!(config.members[&1].grpc_addr, "127.0.0.1:9001");
    assert_eq!(config.raft.heartbeat, Duration::from_millis(50));
    assert_eq!(config.timeouts.write, Duration::from_secs(5), "default");
    assert_eq!(config.fsync, FsyncPolicy::Always, "default");
    assert_eq!(config.directory.queues[0].id, "sales");
    assert_eq!(
        config.directory.agents[0].limits[&Channel::Chat],
        3,
        "default"
    );
    assert_eq!(
        config.directory.queues[0].offer_timeout_ms, 30_000,
        "default"
    );
    assert!(
        config.admin_token_hash.is_none(),
        "admin API off by default"
    );
}

#[test]
fn fsync_policy_is_spelled_in_lowercase() {
    let config = load(&GOOD.replace("[raft]", "fsync = \"never\"\n[raft]"), &[]).unwrap();
    assert_eq!(config.fsync, FsyncPolicy::Never);
    let message = problem(&GOOD.replace("[raft]", "fsync = \"sometimes\"\n[raft]"));
    assert!(
        message.contains("fsync") || message.contains("sometimes"),
        "{message}"
    );
}

#[test]
fn environment_overrides_the_file() {
    let config = load(
        GOOD,
        &[
            ("PARLEY_NODE_ID", "1"),
            ("PARLEY_SITE", "east"),
            ("PARLEY_RAFT__HEARTBEAT", "20ms"),
        ],
    )
    .unwrap();
    assert_eq!(config.node_id, 1);
    assert_eq!(config.raft.heartbeat, Duration::from_millis(20));
}

#[test]
fn environment_values_are_parsed_by_type() {
    let config = load(
        GOOD,
        &[
            ("PARLEY_TIMEOUTS__WRITE", "7s"),
            ("PARLEY_DATA_DIR", "/var/lib/parley"),
        ],
    )
    .unwrap();
    assert_eq!(config.timeouts.write, Duration::from_secs(7));
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/parley"));
    // A stray PARLEY_* variable is an unknown field, not silently ignored.
    let error = load(GOOD, &[("PARLEY_NO_SUCH_FIELD", "1")]).unwrap_err();
    assert!(error.to_string().contains("no_such_field"), "{error}");
}

#[test]
fn bad_values_get_clear_errors() {
    let cases: Vec<(String, &str)> = vec![
        (GOOD.replace("node_id = 2", "node_id = 0"), "node_id"),
        (
            GOOD.replace("node_id = 2", "node_id = 7"),
            "must include this node",
        ),
        (GOOD.replace("node_id = 2", "node_id = -1"), "node_id"),
        (
            GOOD.replace("\"127.0.0.1:8002\"\ngrpc", "\"localhost\"\ngrpc"),
            "http_listen",
        ),
        (
            GOOD.replace("0123456789abcdef0123456789abcdef", "short"),
            "cluster_secret",
        ),
        (
            GOOD.replace("heartbeat = \"50ms\"", "heartbeat = \"fast\""),
            "heartbeat",
        ),
        (
            GOOD.replace("heartbeat = \"50ms\"", "heartbeat = \"150ms\""),
            "twice raft.heartbeat",
        ),
        (
            GOOD.replace(
                "election_timeout_max = \"400ms\"",
                "election_timeout_max = \"100ms\"",
            ),
            "election_timeout_max",
        ),
        (
            GOOD.replace(
                "election_timeout_max = \"400ms\"",
                "election_timeout_max = \"400ms\"\nsnapshot_every_log_bytes = 1000",
            ),
            "raft.snapshot_every_log_bytes",
        ),
        (
            GOOD.replace("site = \"east\"\ndata_dir", "site = \"west\"\ndata_dir"),
            "site",
        ),
        (
            GOOD.replace("grpc = \"127.0.0.1:9001\"", "grpc = \"127.0.0.1\""),
            "peers[0].grpc",
        ),
        (
            GOOD.replace("grpc = \"127.0.0.1:9001\"", "grpc = \"127.0.0.1:9002\""),
            "used twice",
        ),
        (GOOD.replace("id = 1\n", "id = 2\n"), "listed twice"),
        (
            GOOD.replace("[[queues]]\nid = \"sales\"", "[[queues]]\nid = \"sa les\""),
            "queues[0].id",
        ),
        (format!("{GOOD}\nunknown_field = 1\n"), "unknown_field"),
        (GOOD.replace("[raft]", "[raft]\nelection = 1"), "election"),
        (
            GOOD.replace("[raft]", "[raft]\nforward_inflight_max = 0"),
            "raft.forward_inflight_max",
        ),
        (
            format!("{GOOD}\n[[agents]]\nid = \"alice\"\nname = \"A\"\npassword_hash = \"{HASH}\"\n"),
            "listed twice",
        ),
        (
            format!("{GOOD}\n[[agents]]\nid = \"bob\"\nname = \"B\"\nlimits = {{ chat = 99 }}\npassword_hash = \"{HASH}\"\n"),
            "limit 99",
        ),
        (
            format!("{GOOD}\n[[agents]]\nid = \"bob\"\nname = \"B\"\npassword_hash = \"hunter2\"\n"),
            "password_hash",
        ),
        (
            format!("{GOOD}\n[[agents]]\nid = \"bob\"\nname = \"B\"\nskills = [\"french\"]\npassword_hash = \"{HASH}\"\n"),
            "french is not listed in [[skills]]",
        ),
        (
            format!("{GOOD}\n[[queues]]\nid = \"late\"\nname = \"Late\"\nbusiness_hours = {{ time_zone = \"Mars/Base\", intervals = [] }}\n"),
            "time_zone",
        ),
        (
            format!("{GOOD}\n[[queues]]\nid = \"slow\"\nname = \"Slow\"\noffer_timeout = \"2h\"\n"),
            "offer_timeout_ms",
        ),
        (
            GOOD.replace("[raft]", "admin_token = \"short\"\n[raft]"),
            "admin_token",
        ),
        (
            GOOD.replace("[raft]", "[timeouts]\nwrite = \"1ms\"\n[raft]"),
            "timeouts.write",
        ),
        ("this is not toml".to_owned(), "expected"),
    ];
    for (text, expected) in cases {
        let message = problem(&text);
        assert!(
            message.contains(expected),
            "expected {expected:?} in {message:?}"
        );
    }
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let error = Config::load(Path::new("/nonexistent/parley.toml")).unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/parley.toml"),
        "{error}"
    );
}

#[test]
fn rate_limits_have_defaults_and_are_validated() {
    let config = load(GOOD, &[]).expect("good config");
    assert_eq!(config.rate_limits.logins_per_agent_per_minute.get(), 10);
    assert_eq!(
        config.rate_limits.chat_starts_per_address_per_minute.get(),
        60
    );
    let with = |table: &str| format!("{GOOD}\n[rate_limits]\n{table}\n");
    let set = load(&with("chat_starts_per_address_per_minute = 5"), &[]).expect("valid");
    assert_eq!(set.rate_limits.chat_starts_per_address_per_minute.get(), 5);
    for (table, field) in [
        (
            "logins_per_agent_per_minute = 0",
            "rate_limits.logins_per_agent_per_minute",
        ),
        (
            "logins_per_address_per_minute = 1000001",
            "rate_limits.logins_per_address_per_minute",
        ),
        (
            "password_checks_in_flight_max = 0",
            "rate_limits.password_checks_in_flight_max",
        ),
        ("logins_per_minute = 5", "logins_per_minute"),
    ] {
        let message = problem(&with(table));
        assert!(message.contains(field), "{table}: {message}");
    }
}

#[test]
fn token_keys_need_one_active_key_and_long_secrets() {
    let key = |id: &str, active: bool| {
        format!(
            "\n[[token_keys]]\nid = \"{id}\"\nsecret = \"0123456789abcdef0123456789abcdef\"\nactive = {active}\n"
        )
    };
    assert!(load(
        &format!("{GOOD}{}{}", key("new", true), key("old", false)),
        &[]
    )
    .is_ok());
    let cases = [
        (format!("{GOOD}{}{}", key("a", false), key("b", false)), "exactly one key must be active"),
        (format!("{GOOD}{}{}", key("a", true), key("b", true)), "exactly one key must be active"),
        (format!("{GOOD}{}{}", key("a", true), key("a", false)), "listed twice"),
        (format!("{GOOD}{}", key("Bad.Id", true)), "token_keys[0].id"),
        (
            format!("{GOOD}\n[[token_keys]]\nid = \"k\"\nsecret = \"short\"\nactive = true\n"),
            "token_keys[0].secret",
        ),
        (
            format!("{GOOD}\n[[token_keys]]\nid = \"k\"\nsecret_file = \"/nonexistent/parley-key\"\nactive = true\n"),
            "token_keys[0].secret_file",
        ),
        (format!("chat_token_ttl = \"1s\"\n{GOOD}"), "invalid chat_token_ttl: must be"),
    ];
    for (text, expected) in cases {
        let message = problem(&text);
        assert!(message.contains(expected), "{expected}: {message}");
    }
}

/// [`GOOD`] with its `[tls]` section replaced by `tls`.
fn with_tls(tls: &str) -> String {
    GOOD.replace("[tls]\ninsecure = true\n", tls)
}

/// Loads `text` in a jail where `parley certs` made certificates for nodes 1 and 2 in
/// `certs/`.
#[allow(clippy::result_large_err)]
fn load_with_certs(text: &str) -> Result<Config, ConfigError> {
    let mut result = None;
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        crate::certs::issue(&crate::certs::CertsRequest::new("certs", [1, 2]))
            .map_err(|e| e.to_string())?;
        jail.create_file("node.toml", text)?;
        result = Some(Config::load(Path::new("node.toml")));
        Ok(())
    });
    result.expect("the jail ran the closure")
}

const MUTUAL_TLS: &str = "[tls]\nca_file = \"certs/ca.pem\"\ncert_file = \"certs/node-2.pem\"\n\
                          key_file = \"certs/node-2.key\"\n";

#[test]
fn peers_need_tls_files_or_an_explicit_insecure() {
    let problem = problem(&with_tls(""));
    assert!(
        problem.contains("invalid tls") && problem.contains("parley certs"),
        "{problem}"
    );
    let config = load(GOOD, &[]).unwrap();
    assert!(config.tls.insecure());
}

#[test]
fn mutual_tls_files_are_checked_when_the_config_is() {
    let config = load_with_certs(&with_tls(MUTUAL_TLS)).unwrap();
    assert!(matches!(config.tls.peers, PeerTransport::MutualTls(_)));
    assert_eq!(
        config.tls.reload_interval,
        Duration::from_secs(10),
        "default"
    );

    // Node 1's certificate does not make node 2.
    let wrong = MUTUAL_TLS.replace("node-2", "node-1");
    let problem = load_with_certs(&with_tls(&wrong)).unwrap_err().to_string();
    assert!(problem.contains("node-2.parley"), "{problem}");

    let missing = MUTUAL_TLS.replace("certs/ca.pem", "certs/nowhere.pem");
    let problem = load_with_certs(&with_tls(&missing))
        .unwrap_err()
        .to_string();
    assert!(problem.contains("nowhere.pem"), "{problem}");

    let both = format!("{MUTUAL_TLS}insecure = true\n");
    let problem = load_with_certs(&with_tls(&both)).unwrap_err().to_string();
    assert!(problem.contains("tls.insecure"), "{problem}");

    let fast = format!("{MUTUAL_TLS}reload_interval = \"10ms\"\n");
    let problem = load_with_certs(&with_tls(&fast)).unwrap_err().to_string();
    assert!(problem.contains("tls.reload_interval"), "{problem}");
}

#[test]
fn https_files_must_hold_a_matching_certificate_and_key() {
    let good = format!(
        "{MUTUAL_TLS}\n[http_tls]\ncert_file = \"certs/node-2.pem\"\nkey_file = \"certs/node-2.key\"\n"
    );
    let config = load_with_certs(&with_tls(&good)).unwrap();
    assert!(config.tls.http.is_some());
    // The HTTPS certificate with another node's key (the `[tls]` files stay right).
    let mismatched = format!(
        "{MUTUAL_TLS}\n[http_tls]\ncert_file = \"certs/node-2.pem\"\nkey_file = \"certs/node-1.key\"\n"
    );
    let problem = load_with_certs(&with_tls(&mismatched))
        .unwrap_err()
        .to_string();
    assert!(
        problem.contains("invalid http_tls") && problem.contains("does not match"),
        "{problem}"
    );
}

#[test]
fn the_cluster_id_is_configured_or_derived_from_the_secret() {
    let derived = load(GOOD, &[]).unwrap().cluster_id;
    assert!(
        derived.starts_with("c-") && derived.len() == 18,
        "{derived}"
    );
    assert_eq!(
        load(GOOD, &[]).unwrap().cluster_id,
        derived,
        "deterministic"
    );
    let other_secret = GOOD.replace(
        "0123456789abcdef0123456789abcdef",
        "fedcba9876543210fedcba9876543210",
    );
    assert_ne!(load(&other_secret, &[]).unwrap().cluster_id, derived);
    let named = GOOD.replace(
        "cluster_secret =",
        "cluster_id = \"prod-eu\"\ncluster_secret =",
    );
    assert_eq!(load(&named, &[]).unwrap().cluster_id, "prod-eu");
    let bad = GOOD.replace(
        "cluster_secret =",
        "cluster_id = \"no spaces\"\ncluster_secret =",
    );
    assert!(problem(&bad).contains("invalid cluster_id"));
}

#[test]
fn island_after_outlasts_an_election_and_has_a_default() {
    assert_eq!(
        load(GOOD, &[]).unwrap().island_after,
        Duration::from_secs(10)
    );
    let set = GOOD.replace(
        "cluster_secret =",
        "island_after = \"30s\"\ncluster_secret =",
    );
    assert_eq!(
        load(&set, &[]).unwrap().island_after,
        Duration::from_secs(30)
    );
    // Shorter than two elections: a leader change alone would make islands.
    let short = GOOD.replace(
        "cluster_secret =",
        "island_after = \"500ms\"\ncluster_secret =",
    );
    let why = problem(&short);
    assert!(
        why.contains("island_after") && why.contains("election_timeout_max"),
        "{why}"
    );
    let long = GOOD.replace(
        "cluster_secret =",
        "island_after = \"2h\"\ncluster_secret =",
    );
    assert!(problem(&long).contains("island_after"));
    let env = load(GOOD, &[("PARLEY_ISLAND_AFTER", "20s")]).unwrap();
    assert_eq!(env.island_after, Duration::from_secs(20));
}

#[test]
fn the_node_id_can_come_from_a_statefulset_pod_name() {
    let without_id = GOOD.replace("node_id = 2\n", "");
    // parley-1 is the StatefulSet's second pod: node 2.
    let config = load(&without_id, &[("PARLEY_NODE_ID_FROM_NAME", "parley-1")]).unwrap();
    assert_eq!(config.node_id, 2);
    assert_eq!(node_id_from_name("parley-0").unwrap(), 1);
    assert_eq!(node_id_from_name("my-parley-eu-41").unwrap(), 42);
    for name in [
        "parley",
        "parley-",
        "-3",
        "parley-x1",
        "parley-+1",
        "parley-1.5",
        "parley-18446744073709551615",
        "parley-99999999999999999999",
    ] {
        let error = node_id_from_name(name).unwrap_err().to_string();
        assert!(error.contains("node_id_from_name"), "{name}: {error}");
    }
    let too_long = format!("{}-1", "p".repeat(NODE_NAME_BYTES_MAX));
    assert!(node_id_from_name(&too_long).is_err());
    // The name must point at a listed peer, as node_id must.
    let message = load(&without_id, &[("PARLEY_NODE_ID_FROM_NAME", "parley-6")])
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("must include this node (node_id 7)"),
        "{message}"
    );
    // Exactly one of the two.
    let message = load(GOOD, &[("PARLEY_NODE_ID_FROM_NAME", "parley-1")])
        .unwrap_err()
        .to_string();
    assert!(message.contains("not both"), "{message}");
    let message = problem(&without_id);
    assert!(
        message.contains("invalid node_id: is required"),
        "{message}"
    );
}

/// Loads `text` in a jail that also holds the files `files` (name, contents).
#[allow(clippy::result_large_err)]
fn load_with_files(text: &str, files: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut result = None;
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("node.toml", text)?;
        for (name, contents) in files {
            jail.create_file(name, contents)?;
        }
        result = Some(Config::load(Path::new("node.toml")));
        Ok(())
    });
    result.expect("the jail ran the closure")
}

#[test]
fn secrets_can_be_read_from_files() {
    let secret = "0123456789abcdef0123456789abcdef";
    let token = "an-admin-token-of-at-least-32-bytes!";
    let text = GOOD.replace(
        &format!("cluster_secret = \"{secret}\"\n"),
        "cluster_secret_file = \"cluster-secret\"\nadmin_token_file = \"admin-token\"\n",
    );
    let from_files = load_with_files(
        &text,
        &[
            ("cluster-secret", &format!("{secret}\n")),
            ("admin-token", &format!("{token}\n")),
        ],
    )
    .unwrap();
    // The same keys and credential as when they are written inline (trailing newline dropped).
    let inline = load(
        &GOOD.replace("[raft]", &format!("admin_token = \"{token}\"\n[raft]")),
        &[],
    )
    .unwrap();
    assert_eq!(from_files.cluster_id, inline.cluster_id);
    assert_eq!(from_files.admin_token_hash, inline.admin_token_hash);
    assert_eq!(
        from_files.admin_token_hash,
        Some(blake3::hash(token.as_bytes()))
    );

    let cases = [
        // A file that is not there names the field and the path.
        (text.clone(), vec![], "cluster_secret_file: cluster-secret"),
        // Both ways at once.
        (
            text.replace(
                "cluster_secret_file",
                &format!("cluster_secret = \"{secret}\"\ncluster_secret_file"),
            ),
            vec![("cluster-secret", secret), ("admin-token", token)],
            "give either cluster_secret or cluster_secret_file",
        ),
        (
            text.replace(
                "admin_token_file",
                &format!("admin_token = \"{token}\"\nadmin_token_file"),
            ),
            vec![("cluster-secret", secret), ("admin-token", token)],
            "give either admin_token or admin_token_file",
        ),
        // Neither.
        (
            text.replace("cluster_secret_file = \"cluster-secret\"\n", ""),
            vec![("admin-token", token)],
            "invalid cluster_secret: is required",
        ),
        // A short secret in a file is as short as one inline.
        (
            text.clone(),
            vec![("cluster-secret", "short\n"), ("admin-token", token)],
            "invalid cluster_secret: must be at least 32 bytes",
        ),
        (
            text.clone(),
            vec![("cluster-secret", secret), ("admin-token", "short\n")],
            "invalid admin_token: must be at least 32 bytes",
        ),
    ];
    for (text, files, expected) in cases {
        let message = load_with_files(&text, &files).unwrap_err().to_string();
        assert!(message.contains(expected), "{expected}: {message}");
    }
}

/// [`GOOD`] with an `[email]` section trusting `ca_file`.
fn with_email_ca(ca_file: &str) -> String {
    format!("{GOOD}\n[email]\nca_file = \"{ca_file}\"\n")
}

#[test]
fn the_email_ca_file_is_read_and_must_hold_a_certificate() {
    let config = load_with_certs(&with_email_ca("certs/ca.pem")).unwrap();
    assert_eq!(config.email.extra_roots.len(), 1);
    assert!(
        load(GOOD, &[]).unwrap().email.extra_roots.is_empty(),
        "none by default"
    );

    let problem = load_with_certs(&with_email_ca("certs/nowhere.pem"))
        .unwrap_err()
        .to_string();
    assert!(
        problem.contains("invalid email.ca_file") && problem.contains("nowhere.pem"),
        "{problem}"
    );

    // A key file holds no certificate.
    let problem = load_with_certs(&with_email_ca("certs/node-2.key"))
        .unwrap_err()
        .to_string();
    assert!(
        problem.contains("invalid email.ca_file") && problem.contains("no PEM certificate"),
        "{problem}"
    );
}

#[test]
fn imap_takes_starttls_on_port_143() {
    let text = format!(
        "{GOOD}
[[queues]]
id = \"mail\"
name = \"Mail\"
channel = \"email\"

[[mailboxes]]
id = \"support\"
address = \"support@example.com\"
queue = \"mail\"
[mailboxes.imap]
host = \"imap.example.com\"
tls = \"starttls\"
username = \"support@example.com\"
password_env = \"SUPPORT_IMAP_PASSWORD\"
[mailboxes.smtp]
host = \"smtp.example.com\"
tls = \"tls\"
"
    );
    let config = load(&text, &[]).unwrap();
    let mailbox = &config.email.mailboxes[0];
    assert_eq!(
        mailbox.imap.tls,
        parley_raft::command::email::TlsMode::Starttls
    );
    assert_eq!(mailbox.imap.port, 143);
    assert_eq!(mailbox.smtp.port, 465);
}

//! Node configuration: a TOML file, overridden by `PARLEY_*` environment variables, parsed into
//! [`RawConfig`] and then validated into [`Config`].
//!
//! Environment overrides use `__` for nesting: `PARLEY_NODE_ID=2`,
//! `PARLEY_RAFT__HEARTBEAT=50ms`, `PARLEY_DATA_DIR=/var/lib/parley`. Durations are written with
//! units (`150ms`, `2s`, `1m`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use parley_raft::command::{
    default_off_hours_message, AgentSpec, BusinessHours, Channel, DepartmentSpec, Directory,
    QueueSpec, Retention, SkillSpec,
};
use parley_raft::limits;
use parley_raft::state::{check_agent_spec, check_directory_id, check_queue_spec};
use parley_raft::{NodeId, NodeInfo};
use parley_raft::{Rejection, ReplicaOptions};
use parley_storage::FsyncPolicy;
use serde::{Deserialize, Serialize};

use crate::token::{TokenKey, TokenKeys};

pub mod email;
pub mod tls;
pub mod web;

pub use tls::{PeerTransport, RawHttpTls, RawTls, TlsConfig};

/// Prefix of environment variables that override the file.
pub const ENV_PREFIX: &str = "PARLEY_";

/// Shortest accepted cluster secret, in bytes.
pub const CLUSTER_SECRET_BYTES_MIN: usize = 32;

/// The configuration as written, before validation. Every field documents its unit and default.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// This node's id: a positive integer, unique in the cluster, never reused. Required,
    /// unless `node_id_from_name` gives it.
    #[serde(default)]
    pub node_id: Option<u64>,
    /// A name ending in `-<ordinal>`, such as a StatefulSet pod's (`parley-0`): the node id is
    /// the ordinal plus one (`parley-0` is node 1). Kubernetes sets it from the pod's name
    /// (`PARLEY_NODE_ID_FROM_NAME`, downward API). Give either this or `node_id`.
    #[serde(default)]
    pub node_id_from_name: Option<String>,
    /// The site (data center) this node runs in. Required.
    pub site: String,
    /// Directory of this node's RocksDB store. Required.
    pub data_dir: PathBuf,
    /// HTTP listen address, `ip:port`. Required.
    pub http_listen: String,
    /// gRPC listen address for peers, `ip:port`. Required.
    pub grpc_listen: String,
    /// Secret shared by every node of the cluster, at least 32 bytes; chat tokens are derived from
    /// it, so a token made by one node is valid on all. Required, or `cluster_secret_file`.
    #[serde(default)]
    pub cluster_secret: Option<String>,
    /// A file holding `cluster_secret` (trailing newline ignored), e.g. a systemd credential
    /// or a mounted Kubernetes Secret, so the config need not hold it. Give one of the two.
    #[serde(default)]
    pub cluster_secret_file: Option<PathBuf>,
    /// The cluster's id, carried by every node-to-node call; a node refuses calls for another
    /// cluster. 1 to 64 letters, digits, `-`, `_`, `.`. Default: derived from
    /// `cluster_secret`.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// Mutual TLS between nodes: `ca_file`, `cert_file` and `key_file`, or `insecure = true`.
    /// Required.
    #[serde(default)]
    pub tls: RawTls,
    /// TLS on the HTTP listener. Default: plain HTTP.
    #[serde(default)]
    pub http_tls: Option<RawHttpTls>,
    /// `always` (default): every log append is fsynced before it counts. `never`: for throwaway
    /// test clusters only; a power loss can lose acknowledged writes.
    #[serde(default = "default_fsync")]
    pub fsync: FsyncPolicy,
    /// Raft timing and snapshots.
    #[serde(default)]
    pub raft: RawRaft,
    /// Network and request timeouts.
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// Abuse limits at the HTTP edge.
    #[serde(default)]
    pub rate_limits: RawRateLimits,
    /// The pages and the other sites allowed to embed the customer widget.
    #[serde(default)]
    pub web: web::RawWeb,
    /// Token signing keys: exactly one `active` (signs new tokens), the others verify only, so
    /// a key can be rotated without logging anyone out. Absent: one key derived from
    /// `cluster_secret`, id `cluster`.
    #[serde(default)]
    pub token_keys: Vec<RawTokenKey>,
    /// How long a chat token opens its chat (1 minute to 365 days). Default: as long as the
    /// chat is kept, `retention.hot` plus `retention.archive`, at most 365 days.
    #[serde(default, with = "humantime_serde")]
    pub chat_token_ttl: Option<Duration>,
    /// How long this node goes without hearing from a leader (or, leading, from a quorum)
    /// before it is an island: at least twice `raft.election_timeout_max` (an election alone
    /// must not make an island) and at most 1 hour. Default `10s`.
    #[serde(default = "island_after_default", with = "humantime_serde")]
    pub island_after: Duration,
    /// How long finished work is kept in memory, then in the archive.
    #[serde(default)]
    pub retention: RawRetention,
    /// `new` (default): this node forms a new cluster with `peers` the first time it starts.
    /// `existing`: it joins a running cluster and never forms one of its own; it waits until a
    /// member adds it (`parley ctl member add`), and `peers` may be left out.
    #[serde(default)]
    pub cluster_state: ClusterState,
    /// The members a new cluster is formed with, this node included. Once the cluster is
    /// formed the replicated membership is the truth and this list is not read again. Required
    /// with `cluster_state = "new"`.
    #[serde(default)]
    pub peers: Vec<RawPeer>,
    /// Bearer credential for the admin and supervisor API, at least 32 bytes. Absent: those
    /// endpoints answer 403.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// A file holding `admin_token` (trailing newline ignored), e.g. a systemd credential or a
    /// mounted Kubernetes Secret. At most one of the two.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// How this node runs the email services (leases, polling, timeouts).
    #[serde(default)]
    pub email: email::RawEmail,
    /// Mailboxes seeded into the replicated directory the first time they are seen (once the
    /// cluster runs version 3).
    #[serde(default)]
    pub mailboxes: Vec<email::RawMailbox>,
    /// Departments seeded into the replicated state the first time they are seen.
    #[serde(default)]
    pub departments: Vec<RawDepartment>,
    /// Skills seeded into the replicated state the first time they are seen.
    #[serde(default)]
    pub skills: Vec<RawSkill>,
    /// Queues seeded into the replicated state the first time they are seen.
    #[serde(default)]
    pub queues: Vec<RawQueue>,
    /// Agents seeded into the replicated state the first time they are seen.
    #[serde(default)]
    pub agents: Vec<RawAgent>,
}

/// Whether a node forms a new cluster or joins a running one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    /// Form a new cluster with `peers` on first start.
    #[default]
    New,
    /// Join a running cluster: wait to be added, never form one.
    Existing,
}

fn default_fsync() -> FsyncPolicy {
    FsyncPolicy::Always
}

/// Raft settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRaft {
    /// Leader heartbeat interval. Default `100ms`.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Lower bound of the randomized election timeout; must exceed `heartbeat`. Default `300ms`.
    #[serde(with = "humantime_serde")]
    pub election_timeout_min: Duration,
    /// Upper bound of the randomized election timeout. Default `400ms`.
    #[serde(with = "humantime_serde")]
    pub election_timeout_max: Duration,
    /// Build a snapshot after this many log entries. Default 10000.
    pub snapshot_every_entries: u64,
    /// Also build a snapshot once this many bytes of log entries were appended since the last
    /// one. Default 67108864 (64 MiB).
    pub snapshot_every_log_bytes: u64,
    /// Largest snapshot chunk per RPC, in bytes. Default 1048576.
    pub snapshot_chunk_bytes: u64,
    /// Log entries kept after a snapshot, so a briefly lagging follower catches up by log rather
    /// than by snapshot. Default 1000.
    pub log_entries_kept_after_snapshot: u64,
    /// Most Raft entries in flight at once from this leader. Default 2.
    pub inflight_batches_max: usize,
    /// Most forward RPCs (each a batch of the writes waiting on this follower) in flight to the
    /// leader at once. Default 4.
    pub forward_inflight_max: usize,
}

impl Default for RawRaft {
    /// The replica's own defaults ([`ReplicaOptions::new`]), so the two never disagree.
    fn default() -> Self {
        let replica = ReplicaOptions::new(0, BTreeMap::new(), PathBuf::new());
        Self {
            heartbeat: Duration::from_millis(replica.heartbeat_ms),
            election_timeout_min: Duration::from_millis(replica.election_timeout_min_ms),
            election_timeout_max: Duration::from_millis(replica.election_timeout_max_ms),
            snapshot_every_entries: replica.snapshot_every_entries,
            snapshot_every_log_bytes: replica.snapshot_every_log_bytes,
            snapshot_chunk_bytes: replica.snapshot_chunk_bytes,
            log_entries_kept_after_snapshot: replica.log_entries_kept_after_snapshot,
            inflight_batches_max: replica.proposer.inflight_batches_max,
            forward_inflight_max: replica.proposer.forward_inflight_max,
        }
    }
}

/// Timeouts.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTimeouts {
    /// Longest a client write waits for its commit, leader changes included. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub write: Duration,
    /// Longest wait for a TCP connection to a peer. Default `500ms`.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// HTTP/2 keepalive ping interval between peers. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// A peer that leaves a keepalive unanswered this long is disconnected. Default `2s`.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Longest a client may long-poll for events. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub long_poll_max: Duration,
    /// On SIGTERM, how long in-flight requests get to finish. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// On SIGTERM, how long the node goes on serving while `/readyz` answers 503, so load
    /// balancers take it out of rotation before it closes anything. Default `2s` (0s–10m).
    #[serde(with = "humantime_serde")]
    pub drain_wait: Duration,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        Self {
            write: Duration::from_secs(5),
            connect: Duration::from_millis(500),
            keepalive_interval: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(2),
            long_poll_max: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            drain_wait: Duration::from_secs(2),
        }
    }
}

/// Abuse limits at the HTTP edge (`web/rate_limits.rs`). Per-address limits count the TCP
/// peer's address: behind a load balancer, size them for everyone it forwards.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRateLimits {
    /// Login attempts one client address may make per minute (in bursts of as many). Default
    /// 60.
    pub logins_per_address_per_minute: u32,
    /// Login attempts for one agent id per minute, from anywhere. Default 10.
    pub logins_per_agent_per_minute: u32,
    /// Chats one client address may start per minute. Default 60.
    pub chat_starts_per_address_per_minute: u32,
    /// Password checks (argon2, tens of ms of CPU each) running at once on this node; more
    /// wait up to 2 s, then get 503. Default 2.
    pub password_checks_in_flight_max: usize,
}

impl Default for RawRateLimits {
    fn default() -> Self {
        Self {
            logins_per_address_per_minute: 60,
            logins_per_agent_per_minute: 10,
            chat_starts_per_address_per_minute: 60,
            password_checks_in_flight_max: 2,
        }
    }
}

/// How long finished work is kept (see `parley_raft::command::Retention`). Proposed to the
/// cluster at start when it differs from the replicated one, so every node should carry the
/// same values.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    /// Time an activity that is over (and its chat) stays in memory: it can still be rated,
    /// its retried start or message is still recognised. Default `1h` (1 second to 30 days).
    #[serde(with = "humantime_serde")]
    pub hot: Duration,
    /// Time it then stays in the archive on disk, transcript and history readable. Default
    /// `30d` (1 second to 3650 days).
    #[serde(with = "humantime_serde")]
    pub archive: Duration,
}

impl Default for RawRetention {
    fn default() -> Self {
        let defaults = Retention::default();
        RawRetention {
            hot: Duration::from_millis(defaults.hot_ms),
            archive: Duration::from_millis(defaults.archive_ms),
        }
    }
}

impl RawRetention {
    fn validate(&self) -> Result<Retention, ConfigError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let retention = Retention {
            hot_ms: ms(self.hot),
            archive_ms: ms(self.archive),
        };
        parley_raft::state::check_retention(&retention).map_err(|rejection| {
            let field = match &rejection {
                Rejection::Invalid { field, .. } if field.ends_with("archive_ms") => {
                    "retention.archive"
                }
                _ => "retention.hot",
            };
            invalid(
                field,
                "must be between 1 second and 30 days (hot), 3650 days (archive)",
            )
        })?;
        Ok(retention)
    }
}

/// One token signing key.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenKey {
    /// Named in every token the key signs: 1 to 16 lowercase letters, digits, `-`, `_`.
    pub id: String,
    /// The secret, at least 32 bytes; or give `secret_file` instead.
    #[serde(default)]
    pub secret: Option<String>,
    /// A file holding the secret (trailing newline ignored), so the config need not hold it.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Whether this key signs new tokens; exactly one key is active. Default false.
    #[serde(default)]
    pub active: bool,
}

/// Most token keys listed at once.
pub const TOKEN_KEYS_MAX: usize = 8;

impl RawConfig {
    /// The token keys: the listed ones, or one derived from the cluster secret.
    fn token_keys(&self, cluster_secret: &str) -> Result<TokenKeys, ConfigError> {
        if self.token_keys.is_empty() {
            return Ok(TokenKeys::new(
                TokenKey::new("cluster", cluster_secret.as_bytes()),
                Vec::new(),
            ));
        }
        if self.token_keys.len() > TOKEN_KEYS_MAX {
            return Err(invalid(
                "token_keys",
                format!("at most {TOKEN_KEYS_MAX} keys"),
            ));
        }
        let mut ids = BTreeSet::new();
        let mut active = Vec::new();
        let mut verify_only = Vec::new();
        for (i, raw) in self.token_keys.iter().enumerate() {
            let field = |name: &str| format!("token_keys[{i}].{name}");
            let id_ok = (1..=16).contains(&raw.id.len())
                && raw.id.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_')
                });
            if !id_ok {
                return Err(invalid(
                    field("id"),
                    "must be 1 to 16 lowercase letters, digits, '-' or '_'",
                ));
            }
            if !ids.insert(raw.id.as_str()) {
                return Err(invalid(field("id"), format!("{} is listed twice", raw.id)));
            }
            let secret = match (&raw.secret, &raw.secret_file) {
                (Some(secret), None) => secret.clone(),
                (None, Some(path)) => read_secret_file(&field("secret_file"), path)?,
                _ => {
                    return Err(invalid(
                        field("secret"),
                        "give exactly one of secret and secret_file",
                    ))
                }
            };
            if secret.len() < CLUSTER_SECRET_BYTES_MIN {
                return Err(invalid(
                    field("secret"),
                    format!("must be at least {CLUSTER_SECRET_BYTES_MIN} bytes"),
                ));
            }
            let key = TokenKey::new(raw.id.clone(), secret.as_bytes());
            if raw.active {
                active.push(key);
            } else {
                verify_only.push(key);
            }
        }
        let mut active = active.into_iter();
        match (active.next(), active.next()) {
            (Some(key), None) => Ok(TokenKeys::new(key, verify_only)),
            _ => Err(invalid("token_keys", "exactly one key must be active")),
        }
    }
}

/// Largest per-minute rate limit accepted.
pub const RATE_PER_MINUTE_MAX: u32 = 1_000_000;
/// Most password checks in flight accepted.
pub const PASSWORD_CHECKS_IN_FLIGHT_MAX: usize = 64;

/// Validated abuse limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitsConfig {
    /// See [`RawRateLimits::logins_per_address_per_minute`].
    pub logins_per_address_per_minute: std::num::NonZeroU32,
    /// See [`RawRateLimits::logins_per_agent_per_minute`].
    pub logins_per_agent_per_minute: std::num::NonZeroU32,
    /// See [`RawRateLimits::chat_starts_per_address_per_minute`].
    pub chat_starts_per_address_per_minute: std::num::NonZeroU32,
    /// See [`RawRateLimits::password_checks_in_flight_max`].
    pub password_checks_in_flight_max: usize,
}

impl RawRateLimits {
    fn validate(&self) -> Result<RateLimitsConfig, ConfigError> {
        let rate = |field: &str, value: u32| {
            std::num::NonZeroU32::new(value)
                .filter(|v| v.get() <= RATE_PER_MINUTE_MAX)
                .ok_or_else(|| {
                    invalid(
                        format!("rate_limits.{field}"),
                        format!("must be between 1 and {RATE_PER_MINUTE_MAX}"),
                    )
                })
        };
        if !(1..=PASSWORD_CHECKS_IN_FLIGHT_MAX).contains(&self.password_checks_in_flight_max) {
            return Err(invalid(
                "rate_limits.password_checks_in_flight_max",
                format!("must be between 1 and {PASSWORD_CHECKS_IN_FLIGHT_MAX}"),
            ));
        }
        Ok(RateLimitsConfig {
            logins_per_address_per_minute: rate(
                "logins_per_address_per_minute",
                self.logins_per_address_per_minute,
            )?,
            logins_per_agent_per_minute: rate(
                "logins_per_agent_per_minute",
                self.logins_per_agent_per_minute,
            )?,
            chat_starts_per_address_per_minute: rate(
                "chat_starts_per_address_per_minute",
                self.chat_starts_per_address_per_minute,
            )?,
            password_checks_in_flight_max: self.password_checks_in_flight_max,
        })
    }
}

/// A cluster member.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeer {
    /// The member's node id.
    pub id: u64,
    /// Its site.
    pub site: String,
    /// Its gRPC address, `host:port`, as reachable from the other members.
    pub grpc: String,
    /// Its HTTP address, `host:port`, as reachable by clients.
    pub http: String,
}

/// A department to seed.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDepartment {
    /// Stable id (letters, digits, `-`, `_`, `.`; at most 64 bytes).
    pub id: String,
    /// Display name.
    pub name: String,
}

/// A skill to seed.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSkill {
    /// Stable id, named by queues and agents.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// A queue to seed.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    /// Stable id (letters, digits, `-`, `_`, `.`; at most 64 bytes).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Department id. Default none.
    #[serde(default)]
    pub department: Option<String>,
    /// `chat` (default) or `callback`.
    #[serde(default = "default_channel")]
    pub channel: Channel,
    /// Skills an agent needs for this queue (ids from `[[skills]]`). Default none.
    #[serde(default)]
    pub skills: Vec<String>,
    /// How long an agent has to accept an offer. Default `30s`.
    #[serde(default = "default_offer_timeout", with = "humantime_serde")]
    pub offer_timeout: Duration,
    /// Whether an agent who misses an offer is made not ready. Default true.
    #[serde(default = "default_true")]
    pub not_ready_on_missed_offer: bool,
    /// An assigned chat whose customer stays silent this long ends; `0s` disables. Default
    /// `10m`.
    #[serde(default = "default_inactivity_timeout", with = "humantime_serde")]
    pub inactivity_timeout: Duration,
    /// Opening hours; absent means always open.
    #[serde(default)]
    pub business_hours: Option<BusinessHours>,
    /// What customers are told outside business hours.
    #[serde(default = "default_off_hours_message")]
    pub off_hours_message: String,
}

fn default_channel() -> Channel {
    Channel::Chat
}
fn default_offer_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_inactivity_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_true() -> bool {
    true
}

/// An agent to seed.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    /// Stable id, used to log in.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Skills (ids from `[[skills]]`). Default none.
    #[serde(default)]
    pub skills: Vec<String>,
    /// Most activities at once per channel, e.g. `{ chat = 3, callback = 1 }`. Default
    /// `{ chat = 3 }`.
    #[serde(default = "default_limits")]
    pub limits: BTreeMap<Channel, u32>,
    /// argon2 PHC string of the agent's password (`parley hash-password` makes one). Required.
    pub password_hash: String,
}

fn default_limits() -> BTreeMap<Channel, u32> {
    BTreeMap::from([(Channel::Chat, 3)])
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The cluster's id.
    pub cluster_id: String,
    /// This node's id.
    pub node_id: NodeId,
    /// This node's site.
    pub site: String,
    /// RocksDB directory.
    pub data_dir: PathBuf,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// Token signing keys (one active, the others verify-only).
    pub token_keys: TokenKeys,
    /// How long a chat token opens its chat.
    pub chat_token_ttl: Duration,
    /// How long without a leader before this node is an island.
    pub island_after: Duration,
    /// See [`RawRetention`].
    pub retention: Retention,
    /// Durability policy.
    pub fsync: FsyncPolicy,
    /// Raft settings (validated).
    pub raft: RawRaft,
    /// Timeouts (validated).
    pub timeouts: RawTimeouts,
    /// Abuse limits (validated).
    pub rate_limits: RateLimitsConfig,
    /// The pages and allowed origins (validated).
    pub web: web::WebConfig,
    /// Whether this node forms a new cluster or joins a running one.
    pub cluster_state: ClusterState,
    /// The members a new cluster is formed with, by id (possibly empty with
    /// [`ClusterState::Existing`]).
    pub members: BTreeMap<NodeId, NodeInfo>,
    /// What to seed.
    pub directory: Directory,
    /// The email services' settings and the mailboxes to seed.
    pub email: email::EmailConfig,
    /// Hash of the admin credential, if one is configured.
    pub admin_token_hash: Option<blake3::Hash>,
    /// TLS between nodes and on the HTTP listener.
    pub tls: TlsConfig,
}

/// A configuration problem, naming the field and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a field has the wrong type.
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    /// A field has a value that is not allowed.
    #[error("invalid {field}: {problem}")]
    Invalid {
        /// Dotted path of the field.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

impl Config {
    /// Loads `path` with environment overrides and validates it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, Env::prefixed(ENV_PREFIX).split("__"))
    }

    /// Loads `path` with the given environment provider (tests pass their own).
    pub fn load_with_env(path: &Path, env: Env) -> Result<Self, ConfigError> {
        if !path.is_file() {
            return Err(invalid(
                "--config",
                format!("{} is not a readable file", path.display()),
            ));
        }
        let raw: RawConfig = Figment::new()
            .merge(Toml::file(path))
            .merge(env)
            .extract()
            .map_err(Box::new)?;
        raw.validate()
    }
}

impl RawConfig {
    /// Checks every field and builds the [`Config`].
    pub fn validate(self) -> Result<Config, ConfigError> {
        let node_id = self.node_id()?;
        check_name("site", &self.site)?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        let http_listen = parse_socket("http_listen", &self.http_listen)?;
        let grpc_listen = parse_socket("grpc_listen", &self.grpc_listen)?;
        if http_listen == grpc_listen {
            return Err(invalid("grpc_listen", "must differ from http_listen"));
        }
        let cluster_secret = secret_or_file(
            "cluster_secret",
            self.cluster_secret.as_deref(),
            self.cluster_secret_file.as_deref(),
        )?
        .ok_or_else(|| invalid("cluster_secret", "is required (or cluster_secret_file)"))?;
        if cluster_secret.len() < CLUSTER_SECRET_BYTES_MIN {
            return Err(invalid(
                "cluster_secret",
                format!("must be at least {CLUSTER_SECRET_BYTES_MIN} bytes"),
            ));
        }
        let token_keys = self.token_keys(&cluster_secret)?;
        let retention = self.retention.validate()?;
        let chat_token_ttl = self.chat_token_ttl.unwrap_or_else(|| {
            (self.retention.hot.saturating_add(self.retention.archive))
                .clamp(Duration::from_secs(60), Duration::from_secs(365 * 86_400))
        });
        if !(Duration::from_secs(60)..=Duration::from_secs(365 * 86_400)).contains(&chat_token_ttl)
        {
            return Err(invalid(
                "chat_token_ttl",
                "must be between 1 minute and 365 days",
            ));
        }

        let raft = &self.raft;
        check_range_ms("raft.heartbeat", raft.heartbeat, 10, 10_000)?;
        check_range_ms(
            "raft.election_timeout_min",
            raft.election_timeout_min,
            20,
            60_000,
        )?;
        check_range_ms(
            "raft.election_timeout_max",
            raft.election_timeout_max,
            20,
            60_000,
        )?;
        if raft.election_timeout_min <= raft.heartbeat * 2 {
            return Err(invalid(
                "raft.election_timeout_min",
                format!(
                    "({}) must be more than twice raft.heartbeat ({})",
                    humantime::format_duration(raft.election_timeout_min),
                    humantime::format_duration(raft.heartbeat)
                ),
            ));
        }
        if raft.election_timeout_max <= raft.election_timeout_min {
            return Err(invalid(
                "raft.election_timeout_max",
                "must be greater than raft.election_timeout_min",
            ));
        }
        if self.island_after < raft.election_timeout_max * 2
            || self.island_after > Duration::from_secs(3600)
        {
            return Err(invalid(
                "island_after",
                format!(
                    "({}) must be at least twice raft.election_timeout_max ({}) and at most 1h",
                    humantime::format_duration(self.island_after),
                    humantime::format_duration(raft.election_timeout_max)
                ),
            ));
        }
        if raft.snapshot_every_entries == 0 {
            return Err(invalid("raft.snapshot_every_entries", "must be positive"));
        }
        if !(1024 * 1024..=16 * 1024 * 1024 * 1024).contains(&raft.snapshot_every_log_bytes) {
            return Err(invalid(
                "raft.snapshot_every_log_bytes",
                "must be between 1048576 (1 MiB) and 17179869184 (16 GiB)",
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&raft.snapshot_chunk_bytes) {
            return Err(invalid(
                "raft.snapshot_chunk_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if !(1..=64).contains(&raft.inflight_batches_max) {
            return Err(invalid(
                "raft.inflight_batches_max",
                "must be between 1 and 64",
            ));
        }
        if !(1..=64).contains(&raft.forward_inflight_max) {
            return Err(invalid(
                "raft.forward_inflight_max",
                "must be between 1 and 64",
            ));
        }

        let t = &self.timeouts;
        check_range_ms("timeouts.write", t.write, 100, 600_000)?;
        check_range_ms("timeouts.connect", t.connect, 10, 60_000)?;
        check_range_ms(
            "timeouts.keepalive_interval",
            t.keepalive_interval,
            100,
            600_000,
        )?;
        check_range_ms(
            "timeouts.keepalive_timeout",
            t.keepalive_timeout,
            100,
            600_000,
        )?;
        check_range_ms("timeouts.long_poll_max", t.long_poll_max, 0, 600_000)?;
        check_range_ms("timeouts.shutdown_grace", t.shutdown_grace, 0, 600_000)?;
        check_range_ms("timeouts.drain_wait", t.drain_wait, 0, 600_000)?;

        if self.peers.is_empty() && self.cluster_state == ClusterState::New {
            return Err(invalid(
                "peers",
                "must list every member of the new cluster, this node included (or set \
                 cluster_state = \"existing\" to join a running cluster)",
            ));
        }
        let mut members = BTreeMap::new();
        let mut addresses = BTreeSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            let field = format!("peers[{i}]");
            if peer.id == 0 {
                return Err(invalid(format!("{field}.id"), "must be a positive integer"));
            }
            check_name(&format!("{field}.site"), &peer.site)?;
            check_host_port(&format!("{field}.grpc"), &peer.grpc)?;
            check_host_port(&format!("{field}.http"), &peer.http)?;
            for addr in [&peer.grpc, &peer.http] {
                if !addresses.insert(addr.clone()) {
                    return Err(invalid(
                        field.clone(),
                        format!("address {addr} is used twice"),
                    ));
                }
            }
            let info = NodeInfo {
                site: peer.site.clone(),
                grpc_addr: peer.grpc.clone(),
                http_addr: peer.http.clone(),
            };
            if members.insert(peer.id, info).is_some() {
                return Err(invalid(
                    format!("{field}.id"),
                    format!("{} is listed twice", peer.id),
                ));
            }
        }
        match members.get(&node_id) {
            None if self.cluster_state == ClusterState::Existing => {}
            None => {
                return Err(invalid(
                    "peers",
                    format!("must include this node (node_id {node_id})"),
                ))
            }
            Some(me) if me.site != self.site => {
                return Err(invalid(
                    "site",
                    format!("is {} but peers lists this node in {}", self.site, me.site),
                ))
            }
            Some(_) => {}
        }

        let admin_token = secret_or_file(
            "admin_token",
            self.admin_token.as_deref(),
            self.admin_token_file.as_deref(),
        )?;
        let admin_token_hash = match &admin_token {
            Some(token) if token.len() < CLUSTER_SECRET_BYTES_MIN => {
                return Err(invalid(
                    "admin_token",
                    format!("must be at least {CLUSTER_SECRET_BYTES_MIN} bytes"),
                ))
            }
            Some(token) => Some(blake3::hash(token.as_bytes())),
            None => None,
        };
        let directory = self.directory()?;
        let email = self.email.validate(&self.mailboxes, &cluster_secret)?;
        let rate_limits = self.rate_limits.validate()?;
        let web = self.web.validate()?;
        let cluster_id = tls::cluster_id(self.cluster_id.as_deref(), &cluster_secret)?;
        let tls = tls::validate(node_id, &self.tls, self.http_tls.as_ref())?;
        Ok(Config {
            cluster_id,
            tls,
            node_id,
            site: self.site,
            data_dir: self.data_dir,
            http_listen,
            grpc_listen,
            token_keys,
            chat_token_ttl,
            island_after: self.island_after,
            retention,
            fsync: self.fsync,
            raft: self.raft,
            timeouts: self.timeouts,
            rate_limits,
            web,
            cluster_state: self.cluster_state,
            members,
            directory,
            email,
            admin_token_hash,
        })
    }

    /// This node's id: `node_id`, or the ordinal of `node_id_from_name` plus one.
    fn node_id(&self) -> Result<NodeId, ConfigError> {
        match (self.node_id, &self.node_id_from_name) {
            (Some(0), None) => Err(invalid("node_id", "must be a positive integer")),
            (Some(id), None) => Ok(id),
            (None, Some(name)) => node_id_from_name(name),
            (Some(_), Some(_)) => Err(invalid(
                "node_id",
                "give either node_id or node_id_from_name, not both",
            )),
            (None, None) => Err(invalid(
                "node_id",
                "is required (or node_id_from_name, e.g. a StatefulSet pod's name)",
            )),
        }
    }

    /// The departments, skills, queues and agents to seed, checked as `apply` would check
    /// them, so a bad entry is reported here instead of being skipped.
    fn directory(&self) -> Result<Directory, ConfigError> {
        // `apply`'s own checks, reported with the config path of the field they name.
        let rejected = |prefix: String| {
            move |e: Rejection| match e {
                Rejection::Invalid { field, problem } => {
                    invalid(format!("{prefix}.{field}"), problem)
                }
                other => invalid(prefix, other.to_string()),
            }
        };
        let mut ids = BTreeSet::new();
        let mut unique = |kind: &str, field: &str, id: &str| {
            if ids.insert(format!("{kind}:{id}")) {
                Ok(())
            } else {
                Err(invalid(
                    format!("{field}.id"),
                    format!("{id} is listed twice"),
                ))
            }
        };
        let mut departments = Vec::new();
        for (i, department) in self.departments.iter().enumerate() {
            let field = format!("departments[{i}]");
            check_directory_id("id", &department.id).map_err(rejected(field.clone()))?;
            check_name(&format!("{field}.name"), &department.name)?;
            unique("department", &field, &department.id)?;
            departments.push(DepartmentSpec {
                id: department.id.clone(),
                name: department.name.clone(),
            });
        }
        let mut skills = Vec::new();
        for (i, skill) in self.skills.iter().enumerate() {
            let field = format!("skills[{i}]");
            check_directory_id("id", &skill.id).map_err(rejected(field.clone()))?;
            check_name(&format!("{field}.name"), &skill.name)?;
            unique("skill", &field, &skill.id)?;
            skills.push(SkillSpec {
                id: skill.id.clone(),
                name: skill.name.clone(),
            });
        }
        let known_skill = |field: &str, list: &[String]| {
            for skill in list {
                if !skills.iter().any(|s| s.id == *skill) {
                    return Err(invalid(
                        format!("{field}.skills"),
                        format!("{skill} is not listed in [[skills]]"),
                    ));
                }
            }
            Ok(())
        };
        let mut queues = Vec::new();
        for (i, queue) in self.queues.iter().enumerate() {
            let field = format!("queues[{i}]");
            let spec = QueueSpec {
                id: queue.id.clone(),
                name: queue.name.clone(),
                department: queue.department.clone(),
                channel: queue.channel,
                skills: queue.skills.clone(),
                offer_timeout_ms: duration_ms(queue.offer_timeout),
                not_ready_on_missed_offer: queue.not_ready_on_missed_offer,
                inactivity_timeout_ms: duration_ms(queue.inactivity_timeout),
                business_hours: queue.business_hours.clone(),
                off_hours_message: queue.off_hours_message.clone(),
            };
            check_queue_spec(&spec).map_err(rejected(field.clone()))?;
            unique("queue", &field, &queue.id)?;
            known_skill(&field, &queue.skills)?;
            if let Some(department) = &queue.department {
                if !departments.iter().any(|d| d.id == *department) {
                    return Err(invalid(
                        format!("{field}.department"),
                        format!("{department} is not listed in [[departments]]"),
                    ));
                }
            }
            queues.push(spec);
        }
        let mut agents = Vec::new();
        for (i, agent) in self.agents.iter().enumerate() {
            let field = format!("agents[{i}]");
            let spec = AgentSpec {
                id: agent.id.clone(),
                name: agent.name.clone(),
                skills: agent.skills.clone(),
                limits: agent.limits.clone(),
                password_hash: agent.password_hash.clone(),
            };
            check_agent_spec(&spec).map_err(rejected(field.clone()))?;
            if !crate::token::is_password_hash(&agent.password_hash) {
                return Err(invalid(
                    format!("{field}.password_hash"),
                    "is not a valid argon2 PHC string; make one with `parley hash-password`",
                ));
            }
            unique("agent", &field, &agent.id)?;
            known_skill(&field, &agent.skills)?;
            agents.push(spec);
        }
        Ok(Directory {
            departments,
            skills,
            queues,
            agents,
        })
    }
}

/// Longest name `node_id_from_name` accepts (a Kubernetes pod name is at most 253 bytes).
pub const NODE_NAME_BYTES_MAX: usize = 253;

/// The node id a name such as `parley-2` stands for: its ordinal plus one.
pub fn node_id_from_name(name: &str) -> Result<NodeId, ConfigError> {
    let field = "node_id_from_name";
    if name.len() > NODE_NAME_BYTES_MAX {
        return Err(invalid(
            field,
            format!("longer than {NODE_NAME_BYTES_MAX} bytes"),
        ));
    }
    let ordinal = match name.rsplit_once('-') {
        Some((prefix, digits))
            if !prefix.is_empty()
                && !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            digits.parse::<u64>().ok()
        }
        _ => None,
    };
    ordinal
        .and_then(|ordinal| ordinal.checked_add(1))
        .ok_or_else(|| {
            invalid(
                field,
                format!("{name:?} does not end in -<ordinal> (a StatefulSet pod name: parley-0)"),
            )
        })
}

/// A secret given inline or as a file (exactly one, or neither: `None`).
fn secret_or_file(
    field: &str,
    inline: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<String>, ConfigError> {
    match (inline, file) {
        (None, None) => Ok(None),
        (Some(secret), None) => Ok(Some(secret.to_owned())),
        (None, Some(path)) => read_secret_file(&format!("{field}_file"), path).map(Some),
        (Some(_), Some(_)) => Err(invalid(
            field,
            format!("give either {field} or {field}_file, not both"),
        )),
    }
}

/// A secret file's text, without its trailing newline.
fn read_secret_file(field: &str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map(|text| text.trim_end_matches(['\r', '\n']).to_owned())
        .map_err(|e| invalid(field, format!("{}: {e}", path.display())))
}

fn duration_ms(value: Duration) -> u64 {
    u64::try_from(value.as_millis()).unwrap_or(u64::MAX)
}

fn check_name(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > limits::NAME_BYTES_MAX {
        return Err(invalid(
            field,
            format!("longer than {} bytes", limits::NAME_BYTES_MAX),
        ));
    }
    Ok(())
}

fn parse_socket(field: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| invalid(field, format!("{value:?} is not an ip:port address")))
}

fn check_host_port(field: &str, value: &str) -> Result<(), ConfigError> {
    match parley_raft::membership::rules::address_problem(value) {
        None => Ok(()),
        Some(problem) => Err(invalid(field, format!("{value:?} {problem}"))),
    }
}

fn check_range_ms(
    field: &str,
    value: Duration,
    min_ms: u64,
    max_ms: u64,
) -> Result<(), ConfigError> {
    let ms = value.as_millis();
    if ms < u128::from(min_ms) || ms > u128::from(max_ms) {
        return Err(invalid(
            field,
            format!(
                "{} is outside {}..={}",
                humantime::format_duration(value),
                humantime::format_duration(Duration::from_millis(min_ms)),
                humantime::format_duration(Duration::from_millis(max_ms))
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

/// The default of `island_after`.
fn island_after_default() -> Duration {
    Duration::from_secs(10)
}

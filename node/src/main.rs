//! The `parley` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use parley_node::{config::Config, serve};

mod probe;

/// With the `mimalloc` feature the binary allocates through mimalloc instead of the system
/// allocator (docs/BENCHMARKS.md, "Allocator").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Parley: a highly available contact-center engine.
#[derive(Parser)]
#[command(name = "parley", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Serve {
        /// The node's TOML config; `PARLEY_*` environment variables override it.
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config file (with environment overrides) and print what it describes.
    CheckConfig {
        /// The TOML config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Hash a password (read from stdin, one line) for an agent's `password_hash` in config.
    HashPassword,
    /// Operate a running cluster through any node's admin API.
    Ctl(parley_node::ctl::CtlArgs),
    /// Health check: ask this node's own `/readyz` (or `/livez`); exit 0 if it answers 200.
    Probe(probe::ProbeArgs),
    /// Backups offline: inspect a backup file, restore one into a fresh data directory.
    #[command(subcommand)]
    Snapshot(parley_node::snapshot::SnapshotCommand),
    /// Make a cluster CA (unless DIR has one) and certificates for mutual TLS between nodes.
    Certs {
        /// Directory to write `ca.pem`, `ca.key`, `node-<id>.pem` and `node-<id>.key` to.
        #[arg(long)]
        dir: PathBuf,
        /// Node ids to make certificates for, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<u64>,
        /// Extra names (DNS names or IP addresses) for every node certificate, e.g. for the
        /// HTTPS listener; comma-separated.
        #[arg(long = "name", value_delimiter = ',')]
        names: Vec<String>,
        /// Validity of the node certificates, in days.
        #[arg(long, default_value_t = parley_node::certs::NODE_DAYS_DEFAULT)]
        days: u32,
        /// Validity of a new CA, in days.
        #[arg(long, default_value_t = parley_node::certs::CA_DAYS_DEFAULT)]
        ca_days: u32,
        /// Replace node certificates that exist.
        #[arg(long)]
        force: bool,
    },
}

fn certs(request: &parley_node::certs::CertsRequest) -> anyhow::Result<()> {
    let written = parley_node::certs::issue(request)?;
    if written.new_ca {
        println!("created a new cluster CA in {}", request.dir.display());
    } else {
        println!("signed with the CA in {}", request.dir.display());
    }
    for file in &written.files {
        println!("wrote {}", file.display());
    }
    Ok(())
}

fn hash_password() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.len() < 8 {
        anyhow::bail!("a password needs at least 8 bytes");
    }
    let hash = parley_node::token::hash_password(password)
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
    println!("{hash}");
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,openraft=warn,h2=warn,tower=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve { .. });
    let result = match cli.command {
        Command::Serve { config } => Config::load(&config)
            .map_err(anyhow::Error::from)
            .and_then(serve::run),
        Command::CheckConfig { config } => Config::load(&config)
            .map(|c| {
                let joining = match c.cluster_state {
                    parley_node::config::ClusterState::New => {
                        format!("forms a new cluster of {} members", c.members.len())
                    }
                    parley_node::config::ClusterState::Existing => {
                        "joins a running cluster".to_owned()
                    }
                };
                println!(
                    "ok: node {} of cluster {} at site {}, {joining}, {} queues, {} agents, \
                     data in {}",
                    c.node_id,
                    c.cluster_id,
                    c.site,
                    c.directory.queues.len(),
                    c.directory.agents.len(),
                    c.data_dir.display()
                );
                if c.tls.insecure() {
                    println!(
                        "WARNING: tls.insecure = true: traffic between nodes is plaintext and \
                         unauthenticated"
                    );
                } else {
                    println!("peers: mutual TLS");
                }
                if c.tls.http.is_some() {
                    println!("http: TLS");
                }
            })
            .map_err(anyhow::Error::from),
        Command::HashPassword => hash_password(),
        Command::Ctl(args) => parley_node::ctl::run(args).map_err(anyhow::Error::from),
        Command::Probe(args) => probe::run(&args).map_err(anyhow::Error::from),
        Command::Snapshot(command) => {
            parley_node::snapshot::run(&command).map_err(anyhow::Error::from)
        }
        Command::Certs {
            dir,
            nodes,
            names,
            days,
            ca_days,
            force,
        } => certs(&parley_node::certs::CertsRequest {
            dir,
            nodes,
            extra_names: names,
            node_days: days,
            ca_days,
            force,
        }),
    };
    let code = match result {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("parley: {error:#}");
            1
        }
    };
    if serving {
        leave(code);
    }
    ExitCode::from(code)
}

/// Ends a node's process with `code` without running C++ static destructors.
///
/// `serve` returns only once the database has closed and the threads that used it were
/// joined, but threads this crate does not own (HTTP workers, runtime threads) may have touched
/// RocksDB, and RocksDB tears its thread-local data down, at each thread's exit, under locks
/// that are C++ statics. A normal exit destroys those statics while such a thread may still be
/// ending, and the process aborts (`pthread lock: Invalid argument`) after a clean stop. Nothing
/// is left to write by then: every acknowledged write was synced, and the database is closed.
fn leave(code: u8) -> ! {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` ends the process at once; it touches no memory of this program, and
    // skipping destructors is its purpose.
    unsafe { libc::_exit(i32::from(code)) }
}

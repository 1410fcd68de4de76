//! The `parley` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use parley_node::{config::Config, serve};

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
    let result = match cli.command {
        Command::Serve { config } => Config::load(&config)
            .map_err(anyhow::Error::from)
            .and_then(serve::run),
        Command::CheckConfig { config } => Config::load(&config)
            .map(|c| {
                println!(
                    "ok: node {} at site {}, {} members, {} queues, {} agents, data in {}",
                    c.node_id,
                    c.site,
                    c.members.len(),
                    c.directory.queues.len(),
                    c.directory.agents.len(),
                    c.data_dir.display()
                );
            })
            .map_err(anyhow::Error::from),
        Command::HashPassword => hash_password(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("parley: {error:#}");
            ExitCode::FAILURE
        }
    }
}

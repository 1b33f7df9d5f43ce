//! `baton-agent`: the service on each Edge and management host that carries out allow-listed
//! actions for the bot over HTTPS with mutual TLS, each key at most once.
//!
//! Layout: `config` (the TOML file), `server` (TLS, HTTP, idempotency), `journal` (the durable
//! key record), `invoke` (what each executor starts, with the fixed PowerShell scripts of
//! `scripts/`), `process` (running it with a deadline), `outcome` (turning its output into a
//! verified answer), `windows` (Job Objects); `main.rs` is the `baton-agent` program.
//!
//! This crate is what runs on an Edge host, so it links only that: the runbook model, rustls,
//! hyper, tokio and SQLite. The bot's DNS updater, probes and dispatcher, the PKI generator and
//! the Lync simulator live in other crates that it does not depend on.

pub mod config;
mod invoke;
mod journal;
mod outcome;
mod process;
mod server;
#[cfg(windows)]
pub mod windows;

pub use config::{AgentConfig, ConfigError, ExecutorConfig, LyncModule, TlsSettings};
pub use journal::INTERRUPTED;
pub use server::{Agent, AgentError, Peer};

use std::future::Future;

/// The name of the file in the state folder where a running agent writes the address it
/// listens on (useful with port 0).
pub const ADDRESS_FILE: &str = "address";

/// Builds the agent, binds the configured address, writes the bound address to
/// `<state_dir>/address`, and serves until `shutdown` completes.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let listen = config.listen;
    let state_dir = config.state_dir.clone();
    let agent = Agent::new(config)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| AgentError::Bind {
            address: listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| AgentError::Bind {
        address: listen,
        source,
    })?;
    let file = state_dir.join(ADDRESS_FILE);
    std::fs::write(&file, bound.to_string()).map_err(|source| AgentError::StateDir { path: file, source })?;
    agent.serve(listener, shutdown).await;
    Ok(())
}

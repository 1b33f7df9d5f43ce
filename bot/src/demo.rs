//! `baton demo`: the whole flow on embedded defaults, with no server. The Contoso example
//! inventory, a store in a temporary folder (or `--store`), the simulated executor, and the
//! console as the incident room.

use crate::adapters::console::{ConsoleAdapter, Turns};
use crate::config::Config;
use crate::config::secret::SecretEnv;
use crate::daemon::{Daemon, Lifetime};
use crate::engine::EngineConfig;
use crate::store::{SqliteStore, Store};
use anyhow::Context;
use baton_actions::simulated::{FailureRule, SimulatedExecutor};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The example inventory, built into the binary so the demo runs from any folder.
pub const EXAMPLE: &str = include_str!("../../examples/contoso.toml");

#[derive(Debug, Default)]
pub struct DemoOptions {
    pub config: Option<PathBuf>,
    pub store: Option<PathBuf>,
    /// Every simulated action takes this long (overrides `[simulation]`).
    pub delay: Option<Duration>,
    pub fail: Vec<FailureRule>,
    /// Crash drill: abort the process right after this action executes.
    pub crash_after: Option<FailureRule>,
}

pub async fn run(opts: DemoOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (config, origin) = match &opts.config {
        Some(path) => (Config::load(path)?, path.display().to_string()),
        None => {
            let var = |name: &str| std::env::var(name).ok();
            let env = SecretEnv { var: &var, base: PathBuf::from(".") };
            (Config::parse(EXAMPLE, "examples/contoso.toml (built in)", &env)?, "examples/contoso.toml (built in)".to_string())
        }
    };
    let _temp;
    let store_path = match &opts.store {
        Some(p) => p.clone(),
        None => {
            let dir = tempfile::Builder::new().prefix("baton-demo-").tempdir().context("creating a temporary folder for the store")?;
            let path = dir.path().join("baton.sqlite");
            _temp = dir;
            path
        }
    };
    let record = store_path.with_file_name("simulation.sqlite");
    let mut sim = config.simulation.clone();
    if let Some(d) = opts.delay {
        sim.default_delay = d;
        sim.delays.clear();
    }
    sim.failures.extend(opts.fail.iter().cloned());
    sim.crash_after = opts.crash_after.clone();
    let executor = SimulatedExecutor::open(&record, sim)?;
    let store = SqliteStore::open(&store_path)?;
    let engine_cfg = EngineConfig::from_config(&config, store.store_id());
    let room = config.chat.console.as_ref().map_or("incident".to_string(), |c| c.room.clone());
    let turns = Arc::new(Turns::default());
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let console = ConsoleAdapter::new(
        &room,
        Box::new(tokio::io::BufReader::new(tokio::io::stdin())),
        Box::new(std::io::stdout()),
        !interactive,
        turns.clone(),
    );
    eprintln!(
        "Baton demo: config {origin}; store {}; simulated executor (record {}).\n\
         Type chat lines as `name> text`, e.g. `alice> {p}failover xmpp EdgePool2 DC1 lost power`.\n\
         People: alice, bob, carol (edge-admins), mallory (no rights). `{p}help` lists commands; Ctrl-D ends.",
        store_path.display(),
        record.display(),
        p = config.bot.command_prefix
    );
    let daemon = Daemon::new(engine_cfg, Box::new(store) as Box<dyn Store>, Arc::new(executor), vec![Arc::new(console)], Some(turns), Lifetime::UntilIdle)?;
    daemon.run(shutdown).await
}

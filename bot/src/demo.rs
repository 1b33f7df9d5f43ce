//! `baton demo`: the whole flow on embedded defaults, with no server to install. The Contoso
//! example inventory, a store in a temporary folder (or `--store`), the console as the incident
//! room, and a local fleet of real agent processes over mutual TLS (certificates made on the
//! spot, the Lync simulator behind them). The bot's own actions (DNS, probes, verify) are
//! simulated: the example's addresses are documentation ranges. `--simulate` keeps everything
//! in-process instead.

use crate::adapters::console::{ConsoleAdapter, ConsoleSettings};
use crate::config::Config;
use crate::config::secret::SecretEnv;
use crate::daemon::{Daemon, Lifetime};
use crate::engine::EngineConfig;
use crate::fleet::LocalFleet;
use crate::store::{SqliteStore, Store};
use anyhow::Context;
use baton_actions::Executor;
use baton_actions::dispatcher::Dispatcher;
use baton_actions::router::Router;
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
    /// Keep every action in-process (no agent processes).
    pub simulate: bool,
}

/// Whether the plan sends this rule's action to an agent (the simulator behind it fails it)
/// rather than to the bot's own simulated actions.
fn on_an_agent(rule: &FailureRule, inventory: &baton_actions::Inventory) -> bool {
    match rule.action.as_str() {
        "services.stop" | "services.start" | "route.set" | "health" => true,
        "dns.set_a" | "dns.ensure_srv" => matches!(inventory.dns, baton_actions::DnsProvider::Agent { .. }),
        _ => false,
    }
}

pub async fn run(opts: DemoOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (config, origin) = match &opts.config {
        Some(path) => (Config::load(path)?, path.display().to_string()),
        None => {
            let var = |name: &str| std::env::var(name).ok();
            let env = SecretEnv {
                var: &var,
                base: PathBuf::from("."),
            };
            (
                Config::parse(EXAMPLE, "examples/contoso.toml (built in)", &env)?,
                "examples/contoso.toml (built in)".to_string(),
            )
        }
    };
    let _temp;
    let store_path = match &opts.store {
        Some(p) => p.clone(),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("baton-demo-")
                .tempdir()
                .context("creating a temporary folder for the store")?;
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
    sim.crash_after = opts.crash_after.clone();
    let store = SqliteStore::open(&store_path)?;
    let engine_cfg = EngineConfig::from_config(&config, store.store_id());
    let mut fleet = None;
    let executor: Arc<dyn Executor> = if opts.simulate {
        sim.failures.extend(opts.fail.iter().cloned());
        Arc::new(SimulatedExecutor::open(&record, sim)?)
    } else {
        if opts.fail.iter().any(|r| r.action == "health") {
            anyhow::bail!("--fail health needs --simulate: with agent processes, health is the agent's own answer");
        }
        let (agent_rules, bot_rules): (Vec<FailureRule>, Vec<FailureRule>) = opts
            .fail
            .iter()
            .cloned()
            .partition(|r| on_an_agent(r, &config.inventory));
        let delay = sim.delays.get("services.stop").copied().unwrap_or(sim.default_delay);
        let holder = config.route.initial.as_ref().map(|p| p.as_str().to_string());
        let dir = store_path.with_file_name("fleet");
        let inventory = config.inventory.clone();
        let local = tokio::task::spawn_blocking(move || {
            LocalFleet::start(&dir, &inventory, holder.as_deref(), delay, &agent_rules)
        })
        .await
        .context("starting the demo's agents")??;
        let d = Arc::new(Dispatcher::new(local.dispatcher_config()).context("preparing the dispatcher")?);
        fleet = Some(local);
        sim.failures.extend(bot_rules);
        let bot: Arc<dyn Executor> = Arc::new(SimulatedExecutor::open(&record, sim)?);
        Arc::new(Router::new(d, bot))
    };
    let room = config
        .chat
        .get::<ConsoleSettings>()
        .map_or("incident".to_string(), |c| c.room.clone());
    let interactive = std::io::stdin().is_terminal();
    let console = ConsoleAdapter::new(
        &room,
        Box::new(tokio::io::BufReader::new(tokio::io::stdin())),
        Box::new(std::io::stdout()),
        !interactive,
    );
    let how = if fleet.is_some() {
        format!(
            "agents on 127.0.0.1 over mutual TLS for {}, the bot's DNS and probe actions simulated",
            hosts_of(&config)
        )
    } else {
        "every action simulated in-process".to_string()
    };
    eprintln!(
        "Baton demo: config {origin}; store {}; {how}.\n\
         Type chat lines as `name> text`, e.g. `alice> {p}failover xmpp EdgePool2 DC1 lost power`.\n\
         People: alice, bob, carol (edge-admins), mallory (no rights). `{p}help` lists commands; Ctrl-D ends.",
        store_path.display(),
        p = config.bot.command_prefix
    );
    let daemon = Daemon::new(
        engine_cfg,
        Box::new(store) as Box<dyn Store>,
        executor,
        vec![Arc::new(console)],
        Lifetime::UntilIdle,
    )?
    .with_simulated_status();
    let result = daemon.run(shutdown).await;
    drop(fleet);
    result
}

fn hosts_of(config: &Config) -> String {
    let names: Vec<&str> = config.inventory.agent_hosts().iter().map(|h| h.short()).collect();
    names.join(", ")
}

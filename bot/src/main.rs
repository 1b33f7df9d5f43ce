//! The `baton` command line: `demo`, `run`, `check-config`, `audit`.

use anyhow::Context;
use baton::config::Config;
use baton::daemon::{Daemon, Lifetime};
use baton::demo::{self, DemoOptions};
use baton::engine::EngineConfig;
use baton::store::{SqliteStore, Store};
use baton_actions::simulated::FailureRule;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

/// Baton: fails XMPP federation over to another Lync/Skype for Business Edge pool, from chat,
/// with a second person's approval.
#[derive(Parser)]
#[command(name = "baton", version, about, long_about = None)]
struct Cli {
    /// Log level (error, warn, info, debug); RUST_LOG overrides it.
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum PkiCmd {
    /// Make a CA, the bot's client certificate and one server certificate per agent host.
    Init {
        /// The folder to write (refused if it already holds a CA).
        #[arg(long)]
        out: PathBuf,
        /// An agent host's FQDN, as in the inventory; repeat for each host.
        #[arg(long = "agent", required = true)]
        agents: Vec<String>,
        /// Also name localhost and 127.0.0.1 in the agents' certificates (tests, demos).
        #[arg(long)]
        loopback: bool,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the whole flow on the built-in example, with a simulated executor and the console as
    /// the chat room (no server needed). Reads `name> text` lines on stdin.
    Demo {
        /// Use this configuration instead of the built-in examples/contoso.toml.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Keep the store here (default: a temporary folder, removed at exit).
        #[arg(long)]
        store: Option<PathBuf>,
        /// How long every simulated action takes, e.g. 2s or 300ms.
        #[arg(long, value_parser = humantime::parse_duration)]
        delay: Option<std::time::Duration>,
        /// Make actions fail: ACTION[@HOST][:TIMES], e.g. services.start@edge2b:1.
        #[arg(long)]
        fail: Vec<FailureRule>,
        /// Crash drill: abort the process right after ACTION[@HOST] executes, before its outcome
        /// is journaled; the next start must not execute it again (with --simulate).
        #[arg(long, hide = true)]
        crash_after: Option<FailureRule>,
        /// Carry out every action in-process instead of through local agent processes.
        #[arg(long)]
        simulate: bool,
    },
    /// Certificates for small sites, demos and tests.
    Pki {
        #[command(subcommand)]
        command: PkiCmd,
    },
    /// Internal: run an agent in this process (the demo's local agents).
    #[command(hide = true)]
    AgentProcess {
        #[arg(long)]
        config: PathBuf,
    },
    /// Internal: the Lync simulator behind the demo's agents.
    #[command(hide = true)]
    LyncSim(baton_actions::lync_sim::LyncSimArgs),
    /// Run Baton as configured (the chat adapters and executor of the file).
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file; every error is listed with its key and line.
    CheckConfig { file: PathBuf },
    /// Print a run's journal as JSON and verify the journal's hash chain (exit 2 if broken).
    Audit {
        /// The run number, or `all`.
        run: String,
        /// The store file.
        #[arg(long, conflicts_with = "config")]
        store: Option<PathBuf>,
        /// Take the store from this configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn init_logs(level: Option<&str>, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.unwrap_or(default)));
    let filter = secret_safe(filter);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Caps the XMPP libraries' own logging at `info`, whatever `RUST_LOG` or `--log` asks for:
/// at `trace` tokio-xmpp logs every byte of the stream, SASL included (PLAIN carries the
/// password in base64, SCRAM the proof). A directive for a target replaces any earlier one for
/// the same target, and these name every target down to the one that writes the stanzas, so no
/// broader or equal directive can lift the cap.
fn secret_safe(filter: tracing_subscriber::EnvFilter) -> tracing_subscriber::EnvFilter {
    const CAPPED: [&str; 9] = [
        "tokio_xmpp=info",
        "tokio_xmpp::xmlstream=info",
        "tokio_xmpp::xmlstream::capture=off",
        "tokio_xmpp::stanzastream=info",
        "tokio_xmpp::client=info",
        "xmpp_parsers=info",
        "xso=info",
        "rxml=info",
        "sasl=info",
    ];
    CAPPED.iter().fold(filter, |f, d| {
        f.add_directive(d.parse().expect("the capped directives are valid filter syntax"))
    })
}

fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("interrupted; stopping (actions in flight resume at the next start)");
            t.cancel();
        }
    });
    token
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Demo {
            config,
            store,
            delay,
            fail,
            crash_after,
            simulate,
        } => {
            init_logs(cli.log.as_deref(), "warn");
            demo::run(
                DemoOptions {
                    config,
                    store,
                    delay,
                    fail,
                    crash_after,
                    simulate,
                },
                shutdown_on_signals(),
            )
            .await
            .map(|()| ExitCode::SUCCESS)
        }
        Cmd::Pki {
            command: PkiCmd::Init { out, agents, loopback },
        } => pki_init(&out, &agents, loopback).map(|()| ExitCode::SUCCESS),
        Cmd::AgentProcess { config } => {
            init_logs(cli.log.as_deref(), "info");
            agent_process(&config).await.map(|()| ExitCode::SUCCESS)
        }
        Cmd::LyncSim(args) => match baton_actions::lync_sim::run(args) {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                eprintln!("{e:#}");
                Ok(ExitCode::FAILURE)
            }
        },
        Cmd::Run { config } => {
            init_logs(cli.log.as_deref(), "info");
            run(config).await.map(|()| ExitCode::SUCCESS)
        }
        Cmd::CheckConfig { file } => Ok(check_config(&file)),
        Cmd::Audit { run, store, config } => {
            init_logs(cli.log.as_deref(), "warn");
            audit(&run, store, config)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("baton: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(c) => {
            println!(
                "{}: ok ({} pools, {} people, route held by {})",
                file.display(),
                c.inventory.pools.len(),
                c.directory.people().count(),
                c.route
                    .initial
                    .as_ref()
                    .map_or("(unknown)".to_string(), |p| p.to_string())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn pki_init(out: &std::path::Path, agents: &[String], loopback: bool) -> anyhow::Result<()> {
    let hosts = agents
        .iter()
        .map(|a| baton_actions::Fqdn::parse(a))
        .collect::<Result<Vec<_>, _>>()?;
    let files = baton_actions::pki::init(
        out,
        &hosts,
        &baton_actions::pki::PkiOptions {
            loopback,
            bot_name: None,
        },
    )?;
    println!(
        "CA     {} (its key {} signs new certificates: keep it offline)",
        files.ca_cert.display(),
        files.ca_key.display()
    );
    println!("bot    {} {}", files.bot_cert.display(), files.bot_key.display());
    for (host, f) in &files.agents {
        println!("{host} {} {}", f.cert.display(), f.key.display());
    }
    println!(
        "\nFor the bot's configuration:\n[agents]\nca = {:?}\ncert = {:?}\nkey = {:?}",
        files.ca_cert.display().to_string(),
        files.bot_cert.display().to_string(),
        files.bot_key.display().to_string()
    );
    Ok(())
}

async fn agent_process(config: &std::path::Path) -> anyhow::Result<()> {
    let config =
        baton_actions::agent::AgentConfig::load(config).with_context(|| format!("loading {}", config.display()))?;
    let stop = async {
        #[cfg(unix)]
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    };
    baton_actions::agent::run(config, stop)
        .await
        .context("running the agent")
}

async fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    let store = SqliteStore::open(&config.bot.store)?;
    let record = config.bot.store.with_file_name("simulation.sqlite");
    let parts = baton::assemble::executors(&config, &record).await?;
    let engine_cfg = EngineConfig::from_config(&config, store.store_id());
    let adapters = config
        .chat
        .platforms
        .iter()
        .map(|p| p.build_beside(&config.bot.store))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if adapters.is_empty() {
        anyhow::bail!(
            "{}: no chat platform is enabled; enable one of the [chat.*] sections",
            path.display()
        );
    }
    tracing::info!(config = %path.display(), store = %config.bot.store.display(), "baton starting");
    let mut daemon = Daemon::new(engine_cfg, Box::new(store), parts.executor, adapters, Lifetime::Forever)
        .with_context(|| format!("starting with {}", path.display()))?
        .with_mirror_give_up(config.bot.mirror_give_up)
        .with_reloads(reload_on_sighup(path));
    if let Some(look) = baton::assemble::status_look(&config, parts.dispatcher).await {
        daemon = daemon.with_status(look);
    }
    daemon.run(shutdown_on_signals()).await
}

/// SIGHUP reloads the configuration: a valid file replaces the policy, people and inventory
/// (pending plans are resolved again, and approvals lapse if a plan changed); an invalid one is
/// logged with all its errors and ignored.
fn reload_on_sighup(path: PathBuf) -> tokio::sync::mpsc::Receiver<baton::engine::Input> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; configuration reloads need a restart");
            return;
        };
        while hup.recv().await.is_some() {
            match Config::load(&path) {
                Ok(c) => {
                    let input = baton::engine::Input::Reload(Box::new(baton::engine::Reload {
                        policy: c.policy,
                        directory: c.directory,
                        inventory: c.inventory,
                    }));
                    if tx.send(input).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(errors = %e, "reload refused: the configuration has errors; keeping the running one")
                }
            }
        }
    });
    #[cfg(not(unix))]
    drop(tx);
    rx
}

fn audit(run: &str, store: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let path = match (store, config) {
        (Some(s), _) => s,
        (None, Some(c)) => Config::load(&c)?.bot.store,
        (None, None) => anyhow::bail!("name the store: --store FILE or --config FILE"),
    };
    if !path.exists() {
        anyhow::bail!("no store at {}", path.display());
    }
    let run = match run {
        "all" => None,
        n => Some(baton::run::RunId(
            n.trim_start_matches('#')
                .parse()
                .with_context(|| format!("'{n}' is not a run number (or `all`)"))?,
        )),
    };
    let mut store = SqliteStore::open(&path)?;
    let events = store.journal(run)?;
    if run.is_some() && events.is_empty() {
        anyhow::bail!(
            "the store {} has no run {}",
            path.display(),
            run.map(|r| r.to_string()).unwrap_or_default()
        );
    }
    let chain = store.verify_chain()?;
    let doc = serde_json::json!({
        "store": path.display().to_string(),
        "run": run.map(|r| r.0),
        "chain": { "intact": chain.intact(), "rows": chain.rows, "problems": chain.problems },
        "events": events,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).expect("the audit document is plain JSON")
    );
    if chain.intact() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "baton: the journal's hash chain is broken: {}",
            chain.problems.join("; ")
        );
        Ok(ExitCode::from(2))
    }
}

//! The `baton` command line: `demo`, `run`, `check-config`, `audit`, `healthcheck`, `store migrate`.

use anyhow::Context;
use baton::config::{Config, LogFormat, LogSettings};
use baton::daemon::{Daemon, Lifetime};
use baton::demo::{self, DemoOptions};
use baton::engine::EngineConfig;
use baton::store::{PgSettings, PostgresStore, SqliteStore, Store, leader};
use baton_actions::simulated::FailureRule;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// Baton: fails XMPP federation over to another Lync/Skype for Business Edge pool, from chat,
/// with a second person's approval.
#[derive(Parser)]
#[command(name = "baton", version = baton::VERSION, about, long_about = None)]
struct Cli {
    /// Log filter (error, warn, info, debug, or `info,baton=debug`); overrides `[log] filter`,
    /// and RUST_LOG overrides both.
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
enum StoreCmd {
    /// Copy a SQLite store's journal (hash chain verified on both sides), undelivered outbox
    /// and cards into an empty PostgreSQL store. Stop every Baton on either store first.
    Migrate {
        /// The SQLite store to copy.
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL store: `postgres://user@host:port/db` (no password in the URL).
        #[arg(long, conflicts_with = "config")]
        to: Option<String>,
        /// The environment variable holding the target's password (with --to).
        #[arg(long, requires = "to")]
        password_env: Option<String>,
        /// Take the target (and its password) from this configuration's [store] section.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Adopt the journal as it stands, after checking it with `baton audit`: seal a journal
    /// written before keyed chains (its rows stay verified unkeyed), give undelivered messages
    /// without a MAC one, and write the checkpoint at the journal's last row (when the
    /// checkpoint was moved or lost). Refused when the rows do not verify, or while a Baton
    /// uses the store.
    Seal {
        /// The SQLite store (its key and checkpoint beside it).
        #[arg(long, conflicts_with = "config")]
        store: Option<PathBuf>,
        /// The store, its key and its checkpoint as this configuration names them.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// The store: copy a SQLite journal to PostgreSQL.
    Store {
        #[command(subcommand)]
        command: StoreCmd,
    },
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
    LyncSim(baton_lync_sim::LyncSimArgs),
    /// Run Baton as configured (the chat adapters and executor of the file).
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file; every error is listed with its key and line.
    CheckConfig { file: PathBuf },
    /// Ask a running Baton whether it is alive (the container's HEALTHCHECK; no shell needed):
    /// GETs /healthz and exits 0 on 200, else 1 with the reason.
    Healthcheck {
        /// The URL to ask, e.g. http://127.0.0.1:9464/readyz.
        #[arg(long, conflicts_with = "config")]
        url: Option<String>,
        /// Ask /healthz on this configuration's `[server] listen` (default: 127.0.0.1:9464).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// How long to wait for the answer.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
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

/// Logs to stderr: RUST_LOG, else `--log`, else `[log] filter`, else `default`; text or JSON
/// lines per `[log] format`.
fn init_logs(level: Option<&str>, settings: &LogSettings, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(level.or(settings.filter.as_deref()).unwrap_or(default))
    });
    let filter = secret_safe(filter);
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match settings.format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
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

/// The stop requests of `baton run`: the first SIGTERM (what `docker stop` and systemd send) or
/// Ctrl-C cancels the first token (stop taking commands, drain for a bounded time); a second
/// one cancels the second (stop at once; the journal keeps what was not finished).
fn shutdown_on_signals() -> (CancellationToken, CancellationToken) {
    let (first, second) = (CancellationToken::new(), CancellationToken::new());
    let (f, s) = (first.clone(), second.clone());
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        for n in 0.. {
            #[cfg(unix)]
            let got = match term.as_mut() {
                Some(t) => tokio::select! {
                    r = tokio::signal::ctrl_c() => r.is_ok(),
                    r = t.recv() => r.is_some(),
                },
                None => tokio::signal::ctrl_c().await.is_ok(),
            };
            #[cfg(not(unix))]
            let got = tokio::signal::ctrl_c().await.is_ok();
            if !got {
                return;
            }
            if n == 0 {
                tracing::info!("stop requested; draining (a second stop request ends at once)");
                f.cancel();
            } else {
                s.cancel();
                return;
            }
        }
    });
    (first, second)
}

/// Worker threads of the async runtime. Baton's work is waiting (chat, agents, the journal on a
/// thread of its own); two workers keep one answer from waiting behind another's CPU work, and
/// more would only add stacks and allocator arenas on a larger host. `TOKIO_WORKER_THREADS`
/// overrides it.
const WORKERS: usize = 2;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Tokio reads TOKIO_WORKER_THREADS itself when no count is set here.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(WORKERS.min(cores));
    }
    match builder.enable_all().build() {
        Ok(runtime) => runtime.block_on(cli_main()),
        Err(e) => {
            eprintln!("baton: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// glibc's allocator gives threads arenas of their own as they contend (up to eight per core),
/// and memory freed in one arena is not reused by another: one arena for the whole process keeps
/// the peak lower (each thread still allocates lock-free from its own cache). Must run before any
/// thread starts. An operator's `MALLOC_ARENA_MAX` wins; musl's allocator has no arenas.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes the allocator's settings; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

async fn cli_main() -> ExitCode {
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
            init_logs(cli.log.as_deref(), &LogSettings::default(), "warn");
            demo::run(
                DemoOptions {
                    config,
                    store,
                    delay,
                    fail,
                    crash_after,
                    simulate,
                },
                shutdown_on_signals().0,
            )
            .await
            .map(|()| ExitCode::SUCCESS)
        }
        Cmd::Pki {
            command: PkiCmd::Init { out, agents, loopback },
        } => pki_init(&out, &agents, loopback).map(|()| ExitCode::SUCCESS),
        Cmd::AgentProcess { config } => {
            init_logs(cli.log.as_deref(), &LogSettings::default(), "info");
            agent_process(&config).await.map(|()| ExitCode::SUCCESS)
        }
        Cmd::LyncSim(args) => match baton_lync_sim::run(args) {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                eprintln!("{e:#}");
                Ok(ExitCode::FAILURE)
            }
        },
        Cmd::Run { config: path } => match Config::load(&path) {
            Ok(config) => {
                init_logs(cli.log.as_deref(), &config.log, "info");
                if let Err(e) = run(path, config).await {
                    eprintln!("baton: {e:#}");
                    std::process::exit(1);
                }
                // Everything is journaled and the store's thread has ended; a read of the
                // console's stdin may still block a runtime thread, so leave without waiting
                // for it.
                std::process::exit(0);
            }
            Err(e) => Err(e.into()),
        },
        Cmd::CheckConfig { file } => Ok(check_config(&file)),
        Cmd::Healthcheck { url, config, timeout } => Ok(healthcheck(url, config, timeout).await),
        Cmd::Store {
            command:
                StoreCmd::Migrate {
                    from,
                    to,
                    password_env,
                    config,
                },
        } => {
            init_logs(cli.log.as_deref(), &LogSettings::default(), "warn");
            store_migrate(&from, to, password_env, config).await
        }
        Cmd::Store {
            command: StoreCmd::Seal { store, config },
        } => {
            init_logs(cli.log.as_deref(), &LogSettings::default(), "warn");
            tokio::task::spawn_blocking(move || store_seal(store, config))
                .await
                .unwrap_or_else(|e| Err(anyhow::anyhow!("the seal panicked: {e}")))
        }
        Cmd::Audit { run, store, config } => {
            init_logs(cli.log.as_deref(), &LogSettings::default(), "warn");
            // PostgreSQL's blocking client runs its own runtime: off the async threads.
            tokio::task::spawn_blocking(move || audit(&run, store, config))
                .await
                .unwrap_or_else(|e| Err(anyhow::anyhow!("the audit panicked: {e}")))
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
            if let Some(pg) = &c.postgres {
                println!(
                    "  store: {} as replica {} (lease {}, {})",
                    pg.target(),
                    pg.replica,
                    humantime::format_duration(pg.lease),
                    if pg.ca.is_some() {
                        "TLS with the configured CA"
                    } else {
                        "plain text"
                    }
                );
            }
            for note in c.chat.platforms.iter().filter_map(|p| p.note()) {
                println!("  note: {note}");
            }
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
    let files = baton_pki::init(
        out,
        &hosts,
        &baton_pki::PkiOptions {
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
    let config = baton_agent::AgentConfig::load(config).with_context(|| format!("loading {}", config.display()))?;
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
    baton_agent::run(config, stop).await.context("running the agent")
}

async fn healthcheck(url: Option<String>, config: Option<PathBuf>, timeout: std::time::Duration) -> ExitCode {
    use baton::server::CheckUrl;
    let default = || CheckUrl::for_listener(([127, 0, 0, 1], baton::config::DEFAULT_PORT).into(), "/healthz");
    let target = match (url, config) {
        (Some(u), _) => CheckUrl::parse(&u),
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|text| baton::server::listen_of(&text).map_err(|e| format!("{}: {e}", path.display())))
            .map(|listen| listen.map_or_else(default, |l| CheckUrl::for_listener(l, "/healthz"))),
        (None, None) => Ok(default()),
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            eprintln!("baton healthcheck: {e}");
            return ExitCode::FAILURE;
        }
    };
    match baton::server::check(&target, timeout).await {
        Ok(body) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("baton healthcheck: {target}: {why}");
            ExitCode::FAILURE
        }
    }
}

/// The operations listener's state for the process's life: a replica keeps it across its
/// terms as leader, and each term's watchers update it.
struct OpsState {
    metrics: Arc<baton::metrics::Metrics>,
    readiness: Arc<baton::readiness::Readiness>,
    every: std::time::Duration,
}

/// What the watchers of one term look at: each chat platform's link and rooms, the platforms
/// without a connection, and the agents' dispatcher.
type Links = Vec<(
    baton_policies::Platform,
    tokio::sync::watch::Receiver<baton::chat::Link>,
    std::collections::BTreeSet<String>,
)>;

/// Binds and serves `/healthz`, `/readyz` and `/metrics` until `stop` when `[server]` is
/// configured.
async fn open_ops(config: &Config, stop: &CancellationToken) -> anyhow::Result<Option<OpsState>> {
    let Some(server) = &config.server else {
        return Ok(None);
    };
    let metrics = Arc::new(baton::metrics::Metrics::new());
    let readiness = Arc::new(baton::readiness::Readiness::default());
    let listener = tokio::net::TcpListener::bind(server.listen)
        .await
        .with_context(|| format!("cannot listen on {} ([server] listen)", server.listen))?;
    tracing::info!(listen = %server.listen, "serving /healthz, /readyz and /metrics");
    let ops = baton::server::Ops {
        metrics: metrics.clone(),
        readiness: readiness.clone(),
    };
    tokio::spawn(baton::server::serve(listener, ops, stop.clone()));
    Ok(Some(OpsState {
        metrics,
        readiness,
        every: server.check_interval,
    }))
}

/// Starts one term's watchers (until `term`): chat links, agents, and, for a SQLite store, the
/// store's file and outbox.
fn watch_ops(
    config: &Config,
    ops: &OpsState,
    links: Links,
    consoles: Vec<baton_policies::Platform>,
    dispatcher: Option<Arc<baton_actions::dispatcher::Dispatcher>>,
    term: &CancellationToken,
) {
    use baton::watch;
    let (metrics, readiness, every) = (&ops.metrics, &ops.readiness, ops.every);
    let mut platforms = Vec::new();
    for p in consoles {
        // A platform without a connection (the console) is ready as soon as it exists.
        platforms.push(p);
        readiness.set(&watch::chat_condition(p), Ok(()));
        metrics.set_chat_connected(p, true);
    }
    for (p, link, rooms) in links {
        platforms.push(p);
        readiness.expect(&watch::chat_condition(p), "not connected yet");
        tokio::spawn(watch::chat(
            p,
            link,
            rooms,
            metrics.clone(),
            readiness.clone(),
            term.clone(),
        ));
    }
    if config.postgres.is_none() {
        readiness.expect(watch::STORE, "not checked yet");
        tokio::spawn(watch::store(
            config.bot.store.clone(),
            platforms,
            every,
            metrics.clone(),
            readiness.clone(),
            term.clone(),
        ));
    }
    if let Some(d) = dispatcher {
        let hosts: Vec<baton_actions::Fqdn> = config.inventory.agent_hosts().into_iter().cloned().collect();
        for h in &hosts {
            readiness.expect(&watch::agent_condition(h), "not checked yet");
        }
        tokio::spawn(watch::agents(
            d,
            hosts,
            every,
            metrics.clone(),
            readiness.clone(),
            term.clone(),
        ));
    }
}

/// The links and the connection-less platforms of `adapters`, for [`watch_ops`].
fn links_of(adapters: &[Arc<dyn baton::chat::ChatAdapter>]) -> (Links, Vec<baton_policies::Platform>) {
    let links = adapters
        .iter()
        .filter_map(|a| {
            a.link()
                .map(|l| (a.platform(), l, a.rooms().into_iter().map(|r| r.id).collect()))
        })
        .collect();
    let consoles = adapters
        .iter()
        .filter(|a| a.link().is_none())
        .map(|a| a.platform())
        .collect();
    (links, consoles)
}

/// A replica's role as a readiness condition: not ready while it stands by or has lost the
/// database (a standby answers `/healthz` but not `/readyz`, so a load balancer sends Teams'
/// calls to the leader). Leading is made ready by the term itself, once it has restored the
/// journal and declared its own conditions ([`lead_once`]), never here: a late wake-up of this
/// task then cannot undo it.
fn watch_role(mut role: tokio::sync::watch::Receiver<leader::Role>, ops: &OpsState, stop: CancellationToken) {
    let readiness = ops.readiness.clone();
    readiness.expect(REPLICA, "not connected to the store yet");
    tokio::spawn(async move {
        loop {
            let state = match &*role.borrow_and_update() {
                leader::Role::Leader { .. } => None,
                leader::Role::Standby { leader } => Some(format!(
                    "standby: {} leads",
                    leader.as_deref().unwrap_or("another replica")
                )),
                leader::Role::Disconnected => Some("not connected to the store".to_string()),
            };
            if let Some(why) = state {
                readiness.set(REPLICA, Err(why));
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = role.changed() => if changed.is_err() { return },
            }
        }
    });
}

/// The readiness condition of a replica's role.
const REPLICA: &str = "replica";

async fn run(path: PathBuf, config: Config) -> anyhow::Result<()> {
    let (shutdown, hard_stop) = shutdown_on_signals();
    if let Some(pg) = config.postgres.clone() {
        return run_replica(path, config, pg).await;
    }
    let chain = config.bot.chain(false, true)?;
    tracing::info!(key = chain.key_id(), checkpoint = ?chain.checkpoint_path(), "the journal's chain");
    if config.bot.chain_key.is_none() {
        tracing::warn!(
            "the journal's key is kept beside the store: anyone who can read that folder can forge journal rows; set [bot] chain_key to a file elsewhere (see the README's security section)"
        );
    }
    let store = SqliteStore::open_with(&config.bot.store, chain)?;
    let record = config.bot.store.with_file_name("simulation.sqlite");
    let parts = baton::assemble::executors(&config, &record).await?;
    let engine_cfg = EngineConfig::from_config(&config, store.store_id());
    let mut adapters = Vec::new();
    for p in &config.chat.platforms {
        // Beside the store: the little state an adapter keeps across restarts.
        adapters.extend(p.build_beside(&config.bot.store)?);
    }
    if adapters.is_empty() {
        let notes: Vec<String> = config.chat.platforms.iter().filter_map(|p| p.note()).collect();
        anyhow::bail!(
            "{}: no chat platform is enabled for `baton run`; enable one of the [chat.*] sections{}",
            path.display(),
            notes.iter().map(|n| format!("\n  {n}")).collect::<String>()
        );
    }
    tracing::info!(config = %path.display(), store = %config.bot.store.display(), version = baton::VERSION, "baton starting");
    let ops = open_ops(&config, &shutdown).await?;
    if let Some(o) = &ops {
        let (links, consoles) = links_of(&adapters);
        watch_ops(&config, o, links, consoles, parts.dispatcher.clone(), &shutdown);
    }
    let metrics = ops.map(|o| o.metrics);
    let mut daemon = Daemon::new(engine_cfg, Box::new(store), parts.executor, adapters, Lifetime::Forever)
        .with_context(|| format!("starting with {}", path.display()))?
        .with_mirror_give_up(config.bot.mirror_give_up)
        .with_reloads(reload_on_sighup(path))
        .with_drain(baton::daemon::DRAIN, hard_stop);
    if let Some(m) = metrics {
        daemon = daemon.with_metrics(m);
    }
    if let Some(look) = baton::assemble::status_look(&config, parts.dispatcher).await {
        daemon = daemon.with_status(look);
    }
    daemon.run(shutdown).await
}

/// One replica on a PostgreSQL store: stands by until it leads, then runs the daemon on the
/// journal as the previous leader left it (resuming its step in flight with the same keys),
/// and goes back to standing by when it loses the lease or the database.
async fn run_replica(path: PathBuf, config: Config, pg: PgSettings) -> anyhow::Result<()> {
    // A replica stops at once on SIGTERM: the other replica takes over from the journal.
    let (shutdown, _) = shutdown_on_signals();
    let (mut leadership, elector) = leader::spawn(pg.clone()).context("starting the leader election")?;
    // One listener for the process's life: a standby answers /healthz, and /readyz says why it
    // is not ready (it does not lead).
    let ops = open_ops(&config, &shutdown).await?;
    if let Some(o) = &ops {
        watch_role(leadership.subscribe(), o, shutdown.clone());
    }
    let result = replica_terms(&path, config, &pg, &mut leadership, &shutdown, ops.as_ref()).await;
    tokio::task::spawn_blocking(move || elector.stop()).await.ok();
    result
}

async fn replica_terms(
    path: &std::path::Path,
    mut config: Config,
    pg: &PgSettings,
    leadership: &mut leader::Leadership,
    shutdown: &CancellationToken,
    ops: Option<&OpsState>,
) -> anyhow::Result<()> {
    let mut last_epoch = 0;
    loop {
        tracing::info!(replica = %pg.replica, store = %pg.target(), "standby: waiting to lead");
        let epoch = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            e = leadership.leading(last_epoch) => match e {
                Some(e) => e,
                None => anyhow::bail!("the leader election stopped"),
            },
        };
        last_epoch = epoch;
        let started = std::time::Instant::now();
        // The latest file: an operator may have changed it while this replica stood by.
        if let Ok(c) = Config::load(path) {
            config = c;
        }
        let term = shutdown.child_token();
        let watch = {
            let (mut l, term) = (leadership.clone(), term.clone());
            tokio::spawn(async move {
                l.lost().await;
                term.cancel();
            })
        };
        let result = lead_once(path, &config, pg, leadership, (epoch, started), term, ops).await;
        watch.abort();
        if shutdown.is_cancelled() {
            return result;
        }
        match result {
            Ok(()) => tracing::warn!(replica = %pg.replica, epoch, "no longer leading; standing by"),
            Err(e) => {
                tracing::error!(replica = %pg.replica, epoch, error = %format!("{e:#}"), "stopped acting; resigning and standing by");
                leadership.resign(epoch);
            }
        }
    }
}

async fn lead_once(
    path: &std::path::Path,
    config: &Config,
    pg: &PgSettings,
    leadership: &leader::Leadership,
    (epoch, started): (i64, std::time::Instant),
    term: CancellationToken,
    ops: Option<&OpsState>,
) -> anyhow::Result<()> {
    let (settings, session) = (pg.clone(), leadership.session().to_string());
    let chain = config.bot.chain(true, false)?;
    let store = tokio::task::spawn_blocking(move || -> anyhow::Result<PostgresStore> {
        let mut store = PostgresStore::open(&settings, &session, chain)?;
        store.fence(epoch)?;
        Ok(store)
    })
    .await
    .context("opening the store")??;
    let record = config.bot.store.with_file_name("simulation.sqlite");
    let parts = baton::assemble::executors(config, &record).await?;
    let engine_cfg = EngineConfig::from_config(config, store.store_id());
    let mut adapters = Vec::new();
    for p in &config.chat.platforms {
        adapters.extend(p.build_beside(&config.bot.store)?);
    }
    anyhow::ensure!(
        !adapters.is_empty(),
        "{}: no chat platform is enabled for `baton run`",
        path.display()
    );
    if let Some(o) = ops {
        o.readiness.set(REPLICA, Err(format!("taking over (epoch {epoch})")));
        let (links, consoles) = links_of(&adapters);
        watch_ops(config, o, links, consoles, parts.dispatcher.clone(), &term);
    }
    let executor = parts.executor;
    let mut daemon = tokio::task::spawn_blocking(move || {
        Daemon::new(engine_cfg, Box::new(store), executor, adapters, Lifetime::Forever)
    })
    .await
    .context("restoring the engine")?
    .with_context(|| format!("starting with {}", path.display()))?;
    let gate = leadership.clone();
    daemon = daemon
        .with_acting(std::sync::Arc::new(move || gate.acting()))
        .with_takeover_notice(pg.replica.clone())
        .with_mirror_give_up(config.bot.mirror_give_up);
    if let Some(o) = ops {
        daemon = daemon.with_metrics(o.metrics.clone());
        o.readiness.set(REPLICA, Ok(()));
    }
    if let Some(look) = baton::assemble::status_look(config, parts.dispatcher).await {
        daemon = daemon.with_status(look);
    }
    tracing::info!(replica = %pg.replica, epoch, restored_ms = started.elapsed().as_millis() as u64,
        runs = daemon.engine().runs().count(), "took over: acting on the journal");
    daemon.run(term).await
}

/// `baton store migrate`: takes the leader's lock (refused while a replica leads), bumps the
/// epoch, copies, and releases.
async fn store_migrate(
    from: &std::path::Path,
    to: Option<String>,
    password_env: Option<String>,
    config: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    // The target verifies the source's rows, so it takes the source's key: the configuration's,
    // or the one beside the source.
    let key = match &config {
        Some(c) => Config::load(c)?.bot.chain_key,
        None => None,
    };
    let key = match key {
        Some(k) => k,
        None => baton::store::ChainKey::load(&baton::store::chain::beside(from, ".key"))?,
    };
    let settings = match (to, config) {
        (Some(url), None) => {
            PgSettings::check_url(&url).map_err(|why| anyhow::anyhow!("--to {why}"))?;
            let password = match password_env {
                Some(name) => Some(secrecy::SecretString::from(
                    std::env::var(&name).with_context(|| format!("environment variable {name} is not set"))?,
                )),
                None => None,
            };
            PgSettings {
                url,
                password,
                replica: "migrate".into(),
                lease: PgSettings::DEFAULT_LEASE,
                connect_timeout: std::time::Duration::from_secs(5),
                // TLS to the target: name it in a configuration's [store] (--config).
                ca: None,
            }
        }
        (None, Some(c)) => Config::load(&c)?
            .postgres
            .with_context(|| format!("{} has no [store] section naming a PostgreSQL store", c.display()))?,
        _ => anyhow::bail!("name the target: --to postgres://… or --config FILE"),
    };
    if !from.exists() {
        anyhow::bail!("no store at {}", from.display());
    }
    let from = from.to_path_buf();
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<baton::store::ChainReport> {
        let source_chain =
            baton::store::Chain::new(key.clone(), Some(baton::store::chain::beside(&from, ".head")), true);
        let mut source = SqliteStore::open_with(&from, source_chain)?;
        let mut target = PostgresStore::open(&settings, "baton migrate", baton::store::Chain::new(key, None, false))?;
        let epoch = baton::store::postgres::take_over_for_maintenance(&mut target)?;
        let result = baton::store::postgres::copy_store(&mut source, &mut target);
        baton::store::postgres::release_maintenance(&mut target, epoch);
        result
    })
    .await
    .context("the migration's thread")??;
    println!(
        "copied {} journal rows; the hash chain verifies on both sides",
        report.rows
    );
    Ok(ExitCode::SUCCESS)
}

/// `baton store seal`: adopts the journal as it stands (see [`StoreCmd::Seal`]).
fn store_seal(store: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (shown, adopted) = match (store, config) {
        (Some(s), _) => {
            anyhow::ensure!(s.exists(), "no store at {}", s.display());
            let key = baton::store::ChainKey::load(&baton::store::chain::beside(&s, ".key"))?;
            let chain = baton::store::Chain::new(key, Some(baton::store::chain::beside(&s, ".head")), true);
            (s.display().to_string(), SqliteStore::open_with(&s, chain)?.adopt()?)
        }
        (None, Some(c)) => {
            let config = Config::load(&c)?;
            match &config.postgres {
                Some(pg) => {
                    let mut store = PostgresStore::open(pg, "baton store seal", config.bot.chain(true, false)?)?;
                    let epoch = baton::store::postgres::take_over_for_maintenance(&mut store)?;
                    let adopted = store.adopt();
                    baton::store::postgres::release_maintenance(&mut store, epoch);
                    (pg.target(), adopted?)
                }
                None => {
                    let s = &config.bot.store;
                    anyhow::ensure!(s.exists(), "no store at {}", s.display());
                    let chain = config.bot.chain(false, false)?;
                    (s.display().to_string(), SqliteStore::open_with(s, chain)?.adopt()?)
                }
            }
        }
        (None, None) => anyhow::bail!("name the store: --store FILE or --config FILE"),
    };
    if adopted.legacy_rows > 0 {
        println!(
            "{shown}: sealed {} rows written before keyed chains (they stay verified unkeyed)",
            adopted.legacy_rows
        );
    }
    if adopted.messages > 0 {
        println!(
            "{shown}: {} undelivered message(s) without a MAC adopted; they will be posted",
            adopted.messages
        );
    }
    println!(
        "{shown}: the checkpoint now vouches for the journal up to row {}",
        adopted.head_seq
    );
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP reloads the configuration: a valid file replaces the policy, people and inventory
/// (pending plans are resolved again, and approvals lapse if a plan changed); an invalid one is
/// logged with all its errors and ignored.
fn reload_on_sighup(path: PathBuf) -> tokio::sync::mpsc::Receiver<baton::daemon::Reconfig> {
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
                    let record = c.bot.store.with_file_name("simulation.sqlite");
                    let (executor, status) = match baton::assemble::executors(&c, &record).await {
                        Ok(parts) => {
                            let status = baton::assemble::status_look(&c, parts.dispatcher).await;
                            (Some(parts.executor), status)
                        }
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "reload refused: the new configuration's executor cannot be built; keeping the running one");
                            continue;
                        }
                    };
                    let input = baton::engine::Input::Reload(Box::new(baton::engine::Reload {
                        policy: c.policy,
                        directory: c.directory,
                        inventory: c.inventory,
                    }));
                    let reload = baton::daemon::Reconfig {
                        input,
                        executor,
                        status,
                    };
                    if tx.send(reload).await.is_err() {
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
    let run = match run {
        "all" => None,
        n => Some(baton::run::RunId(
            n.trim_start_matches('#')
                .parse()
                .with_context(|| format!("'{n}' is not a run number (or `all`)"))?,
        )),
    };
    let (shown, mut store): (String, Box<dyn Store>) = match (store, config) {
        (Some(s), _) => {
            if !s.exists() {
                anyhow::bail!("no store at {}", s.display());
            }
            (s.display().to_string(), Box::new(SqliteStore::open_read_only(&s)?))
        }
        (None, Some(c)) => {
            let config = Config::load(&c)?;
            let shared = config.postgres.is_some();
            let chain = config.bot.chain(shared, false)?;
            match config.postgres {
                // Reads only: the session has no epoch, so the database refuses any write.
                Some(pg) => (pg.target(), Box::new(PostgresStore::open(&pg, "baton audit", chain)?)),
                None => {
                    let s = config.bot.store;
                    if !s.exists() {
                        anyhow::bail!("no store at {}", s.display());
                    }
                    (
                        s.display().to_string(),
                        Box::new(SqliteStore::open_read_only_with(&s, chain)?),
                    )
                }
            }
        }
        (None, None) => anyhow::bail!("name the store: --store FILE or --config FILE"),
    };
    let path = shown;
    let events = store.journal(run)?;
    if run.is_some() && events.is_empty() {
        anyhow::bail!(
            "the store {} has no run {}",
            path,
            run.map(|r| r.to_string()).unwrap_or_default()
        );
    }
    let chain = store.verify_chain()?;
    let forged: Vec<serde_json::Value> = store
        .forged()?
        .iter()
        .map(|q| serde_json::json!({ "id": q.id, "room": q.row.room.to_string(), "run": q.row.run.map(|r| r.0) }))
        .collect();
    let doc = serde_json::json!({
        "store": path,
        "run": run.map(|r| r.0),
        "chain": {
            "intact": chain.intact(),
            "rows": chain.rows,
            "problems": chain.problems,
            "notes": chain.notes,
            "key": chain.key_id,
            "legacy_rows": chain.legacy_rows,
            "head": { "seq": chain.head_seq, "mac": chain.head },
            "checkpoint_seq": chain.checkpoint_seq,
        },
        "forged_messages": forged,
        "events": events,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).expect("the audit document is plain JSON")
    );
    let mut intact = true;
    if !chain.intact() {
        eprintln!("baton: the journal does not verify: {}", chain.problems.join("; "));
        intact = false;
    }
    if !forged.is_empty() {
        eprintln!(
            "baton: {} undelivered message(s) in the store were not written by Baton (their MAC does not verify); Baton will not post them",
            forged.len()
        );
        intact = false;
    }
    Ok(if intact { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

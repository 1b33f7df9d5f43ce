//! Baton with its real Teams adapter, in this process, against the Teams stand-in: the
//! configuration is the example's with Teams enabled and pointed at the stand-in (read through
//! `[chat.teams]` like any file), the store is SQLite on disk, and the actions are simulated
//! (the full stack with agents and BIND is `stack.rs`). For the adapter's tests and benchmarks.

use crate::stack::TeamsChat as StackTeams;
use crate::teams::{Channel, Fault, TeamsConfig as StandInConfig, TeamsStandIn, TeamsUser, Times};
use anyhow::{Context, Result};
use baton::adapters::teams::{TeamsAdapter, TeamsConfig};
use baton::chat::ChatAdapter;
use baton::config::Config;
use baton::config::secret::SecretEnv;
use baton::daemon::{Daemon, Lifetime};
use baton::engine::EngineConfig;
use baton::store::{SqliteStore, Store};
use baton_actions::simulated::{FailureRule, SimulatedExecutor, SimulationConfig};
use secrecy::ExposeSecret;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The people of the example, each with a Teams account of the stand-in: alice, bob and
/// carol are edge-admins, mallory has no rights.
pub const PEOPLE: [&str; 4] = ["alice", "bob", "carol", "mallory"];

/// How the bot is started.
pub struct BotOptions {
    /// How long each simulated action takes.
    pub delay: Duration,
    /// Simulated failures (`ACTION[@HOST][:TIMES]`).
    pub failures: Vec<String>,
    /// Also mirror runs into a second channel of the stand-in.
    pub mirror: bool,
    /// Changes to the adapter's settings after they were read from the file.
    pub tweak: fn(&mut TeamsConfig),
    /// The lifetime of the access tokens the stand-in issues.
    pub token_lifetime: Duration,
    /// The stand-in's identity provider (OpenID metadata, JWKS) answers 503 from the start,
    /// until the test clears its faults.
    pub keys_down_at_start: bool,
}

impl Default for BotOptions {
    fn default() -> BotOptions {
        BotOptions {
            delay: Duration::from_millis(50),
            failures: Vec::new(),
            mirror: false,
            tweak: |_| {},
            token_lifetime: StandInConfig::default().token_lifetime,
            keys_down_at_start: false,
        }
    }
}

/// The example configuration with the stand-in's people and Teams pointed at the stand-in.
pub fn config_text(teams: &TeamsStandIn, store: &std::path::Path, mirror: Option<&Channel>, listen: &str) -> String {
    let base = baton::demo::EXAMPLE;
    let mut people = String::new();
    for name in PEOPLE {
        let id = TeamsUser::new(name)
            .baton_identity()
            .expect("stand-in users have an object id");
        people.push_str(&format!(
            "[people.{name}]\nidentities = [\"{id}\", \"console:{name}\"]\n\n"
        ));
    }
    let start = base.find("[people.alice]").expect("the example has people");
    let end = base.find("[groups]").expect("the example has groups");
    let chat = base.find("[chat.console]").expect("the example has a console section");
    let after_chat = base
        .find("# ---------------------------------------------------------------------------------------------\n# The simulated executor")
        .expect("the example's simulation section follows its chat sections");
    let mirrors = mirror.map(|c| format!("\"{}\"", c.channel_id)).unwrap_or_default();
    let teams_section = format!(
        "[chat.teams]\nenabled = true\napp_id = \"{app}\"\napp_secret = {{ env = \"STANDIN_TEAMS_SECRET\" }}\n\
         tenant_id = \"{tenant}\"\nlisten = \"{listen}\"\nchannels = [\"{channel}\"]\nmirror_channels = [{mirrors}]\n\
         service_url = \"{service}\"\nopenid_metadata_url = \"{openid}\"\ntoken_url = \"{token}\"\n\
         service_url_allowlist = [\"{service}\"]\n\n",
        app = teams.app_id(),
        tenant = teams.tenant_id(),
        channel = teams.channel().channel_id,
        service = teams.service_url(),
        openid = teams.openid_metadata_url(),
        token = teams.token_url(),
    );
    let text = format!(
        "{}{people}{}{teams_section}{}",
        &base[..start],
        &base[end..chat],
        &base[after_chat..]
    );
    text.replace(
        "store = \"baton.sqlite\"",
        &format!("store = {:?}", store.display().to_string()),
    )
}

/// A free loopback port for an endpoint (bound, read, released).
pub fn free_port() -> Result<std::net::SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// Teams for the full stack (`Stack` with `StackOptions::teams`): the `[chat.teams]` section
/// pointing at `teams`, its endpoint on `listen`, commands read in the stand-in's default
/// channel and `more` channels, runs mirrored into `mirror`, and the people's Teams identities.
pub fn stack_teams(
    teams: &TeamsStandIn,
    listen: std::net::SocketAddr,
    more: &[Channel],
    mirror: Option<&Channel>,
) -> StackTeams {
    let mirrors = mirror.map(|c| format!("\"{}\"", c.channel_id)).unwrap_or_default();
    let channels: Vec<String> = std::iter::once(teams.channel())
        .chain(more.iter().cloned())
        .map(|c| format!("\"{}\"", c.channel_id))
        .collect();
    let section = format!(
        "[chat.teams]\nenabled = true\napp_id = \"{app}\"\napp_secret = {{ file = \"teams.secret\" }}\n\
         tenant_id = \"{tenant}\"\nlisten = \"{listen}\"\nchannels = [{channels}]\nmirror_channels = [{mirrors}]\n\
         service_url = \"{service}\"\nopenid_metadata_url = \"{openid}\"\ntoken_url = \"{token}\"\n\
         service_url_allowlist = [\"{service}\"]\n",
        app = teams.app_id(),
        tenant = teams.tenant_id(),
        channels = channels.join(", "),
        service = teams.service_url(),
        openid = teams.openid_metadata_url(),
        token = teams.token_url(),
    );
    StackTeams {
        section,
        secret: teams.app_secret().expose_secret().to_string(),
        identities: PEOPLE
            .iter()
            .map(|p| {
                let id = TeamsUser::new(p)
                    .baton_identity()
                    .expect("stand-in users have an object id");
                (p.to_string(), id)
            })
            .collect(),
    }
}

/// Waits (bounded) until the endpoint at `endpoint` answers a signed activity: `baton run` has
/// started its adapter. Sends `!help` from `who` (answered in the channel).
pub async fn wait_for_endpoint(teams: &TeamsStandIn, endpoint: &str, who: &TeamsUser, timeout: Duration) -> Result<()> {
    let until = tokio::time::Instant::now() + timeout;
    loop {
        let activity = teams.message(who, "!help").build();
        match teams.send(endpoint, &activity).await {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) => anyhow::bail!("the endpoint answered {}: {}", r.status, r.text),
            Err(e) if tokio::time::Instant::now() >= until => {
                return Err(e.context(format!("the endpoint did not answer within {timeout:?}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Baton running in this process with the Teams adapter, against a stand-in.
pub struct TeamsBot {
    pub teams: TeamsStandIn,
    /// `http://127.0.0.1:<port>/api/messages`.
    pub endpoint: String,
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    /// The channel runs are mirrored into, when asked for.
    pub mirror: Option<Channel>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TeamsBot {
    /// Starts a stand-in and Baton against it.
    pub async fn start(options: BotOptions) -> Result<TeamsBot> {
        let teams = TeamsStandIn::start(StandInConfig {
            token_lifetime: options.token_lifetime,
            ..StandInConfig::default()
        })
        .await?;
        if options.keys_down_at_start {
            teams.identity().inject(Fault::Unavailable, Times::UntilCleared);
        }
        let dir = tempfile::Builder::new().prefix("baton-teams-").tempdir()?;
        let store = dir.path().join("baton.sqlite");
        let mirror = options.mirror.then(|| teams.add_channel("Contoso Ops", "Audit"));
        let text = config_text(&teams, &store, mirror.as_ref(), "127.0.0.1:0");
        std::fs::write(dir.path().join("baton.toml"), &text)?;
        let secret = teams.app_secret().expose_secret().to_string();
        let lookup = move |name: &str| (name == "STANDIN_TEAMS_SECRET").then(|| secret.clone());
        let env = SecretEnv {
            var: &lookup,
            base: dir.path().to_path_buf(),
        };
        let config = Config::parse(&text, "baton.toml", &env).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut settings = config
            .chat
            .get::<TeamsConfig>()
            .context("Teams is enabled in the configuration")?
            .clone();
        (options.tweak)(&mut settings);
        let adapter = Arc::new(TeamsAdapter::new(settings)?);
        let endpoint = adapter.endpoint();
        let sqlite = SqliteStore::open(&store)?;
        let mut engine = EngineConfig::from_config(&config, sqlite.store_id());
        if let Some(m) = &mirror {
            engine.mirror_rooms = vec![baton::chat::RoomRef::new(
                baton_policies::Platform::Teams,
                m.channel_id.clone(),
            )];
        }
        let failures = options
            .failures
            .iter()
            .map(|f| f.parse::<FailureRule>().map_err(|e| anyhow::anyhow!("{f}: {e}")))
            .collect::<Result<Vec<_>>>()?;
        let sim = SimulationConfig {
            default_delay: options.delay,
            failures,
            ..Default::default()
        };
        let executor = Arc::new(SimulatedExecutor::open(&dir.path().join("sim.sqlite"), sim)?);
        let adapters: Vec<Arc<dyn ChatAdapter>> = vec![adapter];
        let daemon = Daemon::new(engine, Box::new(sqlite), executor, adapters, Lifetime::Forever)?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(daemon.run(shutdown.clone()));
        Ok(TeamsBot {
            teams,
            endpoint,
            dir,
            store,
            mirror,
            shutdown,
            task: Some(task),
        })
    }

    /// The stand-in user of one of [`PEOPLE`] (or anyone else).
    pub fn user(name: &str) -> TeamsUser {
        TeamsUser::new(name)
    }

    /// The kinds of the journal's events, in order (read beside the running bot).
    pub fn journal(&self) -> Result<Vec<String>> {
        self.column("SELECT kind FROM events ORDER BY seq")
    }

    /// The message ids recorded as handled.
    pub fn handled(&self) -> Result<Vec<String>> {
        self.column("SELECT message_id FROM handled ORDER BY rowid")
    }

    fn column(&self, sql: &str) -> Result<Vec<String>> {
        let conn = rusqlite::Connection::open_with_flags(&self.store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Stops the daemon and waits for it.
    pub async fn stop(mut self) -> Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.context("the daemon's task")??;
        }
        Ok(())
    }
}

impl Drop for TeamsBot {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

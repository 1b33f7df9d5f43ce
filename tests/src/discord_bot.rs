//! Baton's daemon in this process with its Discord adapter pointed at a Discord stand-in, the
//! way production talks to Discord: HTTPS with serenity's ratelimiter on, `discord.com`
//! resolved to the stand-in and only its CA trusted (`[chat.discord.stand_in]`), the JSON
//! gateway with resume. Behind it the simulated executor and a SQLite store on disk. Tests act
//! as people through the stand-in and read what Baton did from the stand-in's record and the
//! store.
//!
//! People (Discord user ids of [`StandInConfig::example`] plus mallory): alice (1), bob (2) and
//! carol (3) are edge-admins, mallory (5) has no rights, otherbot (4) is another bot. Channels:
//! `#incidents` (200) reads commands, `#audit` (202) mirrors every run, `#random` (201) is not
//! Baton's, 300 is alice's DM with the bot.

use crate::discord::{ChannelKind, ChannelSpec, DiscordStandIn, StandInConfig, State, StoredMessage, UserSpec};
use anyhow::Context;
use baton::adapters::discord::{DiscordAdapter, DiscordConfig};
use baton::chat::{ChatAdapter, Link};
use baton::config::Config;
use baton::config::secret::SecretEnv;
use baton::daemon::{Daemon, Lifetime, Reconfig};
use baton::engine::{EngineConfig, Input, Reload};
use baton::store::{SqliteStore, Store};
use baton_actions::simulated::{SimulatedExecutor, SimulationConfig};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The bot token the stand-in accepts; tests check it never shows anywhere else.
pub const TOKEN: &str = "MTk4NjIyNDgzNDcxOTI1MjQ4.GxYzAb.stand-in-token-never-logged";
pub const GUILD: u64 = 100;
pub const INCIDENTS: u64 = 200;
pub const RANDOM: u64 = 201;
pub const AUDIT: u64 = 202;
pub const ALICE_DM: u64 = 300;
pub const ALICE: u64 = 1;
pub const BOB: u64 = 2;
pub const CAROL: u64 = 3;
pub const OTHERBOT: u64 = 4;
pub const MALLORY: u64 = 5;
/// The bot's own user id in the stand-in.
pub const BATON: u64 = 900;

/// The longest any single wait may take.
pub const WAIT: Duration = Duration::from_secs(30);

const EXAMPLE: &str = include_str!("../../examples/contoso.toml");

/// The stand-in's world: the example guild, plus mallory and the `#audit` channel.
pub fn stand_in_config() -> StandInConfig {
    let mut c = StandInConfig::example(TOKEN);
    c.users.push(UserSpec::person(MALLORY, "mallory"));
    c.channels.push(ChannelSpec {
        id: AUDIT,
        name: "audit".to_string(),
        kind: ChannelKind::Text,
    });
    c
}

/// The people of `examples/contoso.toml` with the stand-in's Discord ids (and their XMPP and
/// console identities), written into any configuration text that has the example's people.
pub fn with_discord_people(text: &str) -> String {
    let mut text = text.to_string();
    for (name, id) in [("alice", ALICE), ("bob", BOB), ("carol", CAROL), ("mallory", MALLORY)] {
        let marker = format!("\"console:{name}\"]");
        text = text.replace(&marker, &format!("\"console:{name}\", \"discord:{id}\"]"));
    }
    // The example's own Discord ids for alice and bob would name the same people twice.
    text.replace(", \"discord:80351110224678912\"", "")
        .replace(", \"discord:80351110224678913\"", "")
}

/// `[chat.discord]` for a stand-in whose CA is in `ca_file`; the token is read from
/// `discord.token` next to the configuration.
pub fn section(discord: &DiscordStandIn, ca_file: &Path, mirrors: bool) -> String {
    let mirrors = if mirrors {
        format!("[\"{AUDIT}\"]")
    } else {
        "[]".to_string()
    };
    format!(
        "[chat.discord]\nenabled = true\ntoken = {{ file = \"discord.token\" }}\nguilds = [\"{GUILD}\"]\n\
         channels = [\"{INCIDENTS}\"]\nmirror_channels = {mirrors}\nedit_interval = \"200ms\"\n\
         reconnect_initial = \"100ms\"\nreconnect_max = \"1s\"\n\
         stand_in = {{ address = \"{}\", ca_file = {:?} }}\n",
        discord.https_addr(),
        ca_file.display().to_string()
    )
}

/// What a test starts Baton with.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long each simulated action takes.
    pub delay: Duration,
    /// Requests expire after this (the example: 15 min).
    pub expiry: Option<Duration>,
    /// How long a click waits for the decision before it is deferred.
    pub answer_within: Option<Duration>,
    /// Whether `#audit` mirrors runs.
    pub mirrors: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            delay: Duration::from_millis(100),
            expiry: None,
            answer_within: None,
            mirrors: true,
        }
    }
}

/// Baton running against a stand-in.
pub struct DiscordBaton {
    pub discord: DiscordStandIn,
    pub dir: tempfile::TempDir,
    text: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    reloads: mpsc::Sender<Reconfig>,
    pub link: watch::Receiver<Link>,
    /// The adapter the daemon uses (tests may deliver through it directly).
    pub adapter: Arc<DiscordAdapter>,
}

/// Writes the example's configuration for a stand-in into `dir` as `baton.toml` (with the
/// token and CA files it names) and returns its text: Discord is the only chat, the executor
/// is simulated, the store is `baton.sqlite` there.
pub fn write_config(discord: &DiscordStandIn, dir: &Path, mirrors: bool) -> anyhow::Result<String> {
    let ca_file = dir.join("discord-ca.pem");
    std::fs::write(&ca_file, discord.ca_pem())?;
    std::fs::write(dir.join("discord.token"), TOKEN)?;
    // The example's Discord section gives way to one for the stand-in.
    let text =
        with_discord_people(EXAMPLE).replace("[chat.console]\nenabled = true", "[chat.console]\nenabled = false");
    let text = drop_table(&text, "[chat.discord]") + "\n" + &section(discord, &ca_file, mirrors);
    std::fs::write(dir.join("baton.toml"), &text)?;
    Ok(text)
}

fn parse(text: &str, dir: &Path) -> anyhow::Result<Config> {
    let var = |_: &str| None;
    let env = SecretEnv {
        var: &var,
        base: dir.to_path_buf(),
    };
    Config::parse(text, "discord-test.toml", &env).map_err(|e| anyhow::anyhow!("{e}"))
}

impl DiscordBaton {
    /// Starts a stand-in and Baton on it, and waits until Baton's gateway session is ready.
    pub async fn start(options: Options) -> anyhow::Result<DiscordBaton> {
        let discord = DiscordStandIn::start(stand_in_config()).await?;
        let dir = tempfile::Builder::new().prefix("baton-discord-").tempdir()?;
        let text = write_config(&discord, dir.path(), options.mirrors)?;
        let config = parse(&text, dir.path())?;
        let mut dc = config
            .chat
            .get::<DiscordConfig>()
            .cloned()
            .context("the Discord section is enabled")?;
        if let Some(d) = options.answer_within {
            dc.answer_within = d;
        }
        let adapter = Arc::new(DiscordAdapter::new(dc)?);
        let link = adapter.status();
        let store = SqliteStore::open_with(&config.bot.store, config.bot.chain(false, true)?)?;
        let mut cfg = EngineConfig::from_config(&config, store.store_id());
        if let Some(e) = options.expiry {
            cfg.policy.expiry = e;
        }
        let sim = SimulationConfig {
            default_delay: options.delay,
            ..Default::default()
        };
        let executor = Arc::new(SimulatedExecutor::open(&dir.path().join("sim.sqlite"), sim)?);
        let (reloads, rx) = mpsc::channel(4);
        let adapters: Vec<Arc<dyn ChatAdapter>> = vec![adapter.clone()];
        let daemon = Daemon::new(cfg, Box::new(store), executor, adapters, Lifetime::Forever)?.with_reloads(rx);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(daemon.run(shutdown.clone()));
        adapter.wait_until_ready(WAIT).await?;
        discord.wait_ready(WAIT).await?;
        Ok(DiscordBaton {
            discord,
            dir,
            text,
            shutdown,
            task,
            reloads,
            link,
            adapter,
        })
    }

    /// Reloads the configuration with `edit` applied to its text (as SIGHUP does).
    pub async fn reload(&self, edit: impl FnOnce(&str) -> String) -> anyhow::Result<()> {
        let c = parse(&edit(&self.text), self.dir.path())?;
        let reload = Reload {
            policy: c.policy,
            directory: c.directory,
            inventory: c.inventory,
        };
        self.reloads
            .send(Reconfig {
                input: Input::Reload(Box::new(reload)),
                executor: None,
                status: None,
            })
            .await
            .map_err(|_| anyhow::anyhow!("the daemon stopped"))
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.context("the daemon's task")?
    }

    /// The kinds of the journal's events, in order.
    pub fn journal_kinds(&self) -> Vec<String> {
        self.texts("SELECT kind FROM events ORDER BY seq")
    }

    /// Message ids the store recorded as handled.
    pub fn handled(&self) -> Vec<String> {
        self.texts("SELECT message_id FROM handled ORDER BY rowid")
    }

    fn texts(&self, sql: &str) -> Vec<String> {
        let conn = rusqlite::Connection::open_with_flags(
            self.dir.path().join("baton.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("the store opens read-only");
        conn.busy_timeout(Duration::from_secs(5)).expect("sets a timeout");
        let mut stmt = conn.prepare(sql).expect("prepares");
        stmt.query_map([], |r| r.get::<_, String>(0))
            .expect("reads")
            .collect::<Result<_, _>>()
            .expect("reads")
    }
}

/// The text without the table that starts at the line `header` (up to the next table).
fn drop_table(text: &str, header: &str) -> String {
    let mut out = Vec::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.trim() == header {
            skipping = true;
            continue;
        }
        if skipping && line.starts_with('[') {
            skipping = false;
        }
        if !skipping {
            out.push(line);
        }
    }
    out.join("\n")
}

// ----- reading what Baton posted ----------------------------------------------------------

/// Messages the bot posted in `channel` (not ephemeral ones), oldest first.
pub fn bot_messages(s: &State, channel: u64) -> Vec<StoredMessage> {
    s.messages()
        .filter(|m| m.channel_id == channel && m.author_id() == BATON && m.ephemeral_for.is_none() && !m.deleted)
        .cloned()
        .collect()
}

/// The run card of `run` in `channel`: the bot's message whose embed title starts `#<run> `.
pub fn card(s: &State, channel: u64, run: u64) -> Option<StoredMessage> {
    bot_messages(s, channel)
        .into_iter()
        .find(|m| embed_title(&m.json).is_some_and(|t| t.starts_with(&format!("#{run} "))))
}

/// The title of a message's first embed.
pub fn embed_title(message: &Value) -> Option<&str> {
    message["embeds"].get(0)?.get("title")?.as_str()
}

/// The contents of the bot's plain lines (messages without a card) in `channel`.
pub fn lines(s: &State, channel: u64) -> Vec<String> {
    bot_messages(s, channel)
        .iter()
        .filter(|m| m.json["embeds"].as_array().is_none_or(Vec::is_empty))
        .map(|m| m.content().to_string())
        .collect()
}

/// What only `user` was shown (ephemeral answers), oldest first.
pub fn ephemeral_for(s: &State, user: u64) -> Vec<String> {
    s.messages()
        .filter(|m| m.ephemeral_for == Some(user))
        .map(|m| m.content().to_string())
        .collect()
}

/// The steps' field names of a card version (`✅ 1. precheck`, …).
pub fn step_fields(message: &Value) -> Vec<String> {
    message["embeds"][0]["fields"]
        .as_array()
        .map(|fields| {
            fields
                .iter()
                .filter_map(|f| f["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

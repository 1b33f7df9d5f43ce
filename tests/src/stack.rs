//! The whole of Baton on loopback, for end-to-end tests: real BIND9 holding `contoso.test`,
//! real Prosody (the incident rooms, and the federation endpoint that `verify` probes), real
//! `baton-agent` processes for edge1a, edge1b, edge2a, edge2b and mgmt1 with the Lync simulator,
//! and `baton run` with a configuration generated to point at all of them.
//!
//! EdgePool1's external address is 127.0.0.2 and EdgePool2's is 127.0.0.1; Prosody's s2s port
//! listens on both, so federation "works" on whichever pool DNS points to. The route starts on
//! EdgePool1 (A record 127.0.0.2, the SRV record in place).

use crate::agents::{AgentSpec, Fleet, sim_state};
use crate::baton::Baton;
use crate::bind::Bind;
use crate::prosody::{INCIDENT_ROOM, Prosody, ProsodyOptions, SEMI_ANONYMOUS_ROOM, test_pki};
use crate::proxy::Proxy;
use anyhow::{Context, Result};
use baton_actions::Fqdn;
use secrecy::ExposeSecret;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The agent hosts of the stack's inventory.
pub const HOSTS: [&str; 5] = [
    "edge1a.contoso.test",
    "edge1b.contoso.test",
    "edge2a.contoso.test",
    "edge2b.contoso.test",
    "mgmt1.contoso.test",
];
pub const MANAGEMENT: &str = "mgmt1.contoso.test";
/// EdgePool1's and EdgePool2's external addresses.
pub const POOL1_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
pub const POOL2_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// EdgePool2's servers for these options.
fn pool2_servers(options: &StackOptions) -> Vec<String> {
    if options.pool2_servers == 0 {
        vec!["edge2a.contoso.test".to_string(), "edge2b.contoso.test".to_string()]
    } else {
        (1..=options.pool2_servers)
            .map(|i| format!("edge2-{i:03}.contoso.test"))
            .collect()
    }
}

/// The agent hosts for these options, EdgePool1's first and the management host last.
fn hosts(options: &StackOptions) -> Vec<String> {
    let mut all = vec!["edge1a.contoso.test".to_string(), "edge1b.contoso.test".to_string()];
    all.extend(pool2_servers(options));
    all.push(MANAGEMENT.to_string());
    all
}

/// What the stack starts with.
#[derive(Clone, Debug, Default)]
pub struct StackOptions {
    /// Chat through Prosody's rooms (`[chat.xmpp]`); otherwise the console (stdin of `baton run`).
    pub xmpp_chat: bool,
    /// Extra simulator arguments for every agent (e.g. `--delay-ms 500`).
    pub sim_args: Vec<String>,
    /// Extra TOML appended to Baton's configuration (e.g. a `[policy]` tweak is not possible
    /// this way; this is for new sections).
    pub extra_config: String,
    /// Extra lines for the `[bot]` section (e.g. `mirror_give_up = "3s"`).
    pub bot_config: String,
    /// Extra lines for the `[chat.xmpp]` section (e.g. `mirror_rooms = [...]`).
    pub xmpp_config: String,
    /// Baton reaches Prosody's client port through a [`Proxy`] the test controls.
    pub xmpp_via_proxy: bool,
    /// Prosody offers only SASL PLAIN.
    pub sasl_plain_only: bool,
    /// Baton's reconnect backoff (`reconnect_initial`, `reconnect_max`); `None`: 200ms and 2s.
    pub xmpp_reconnect: Option<(String, String)>,
    /// Chat in Teams channels too (the stand-in's `[chat.teams]`, see `teams_bot::stack_teams`).
    pub teams: Option<TeamsChat>,
    /// The servers of EdgePool2 when more than its usual two (`edge2-001.contoso.test`, …), for
    /// the fan-out benchmark; 0 keeps edge2a and edge2b.
    pub pool2_servers: usize,
}

// ----- Teams ---------------------------------------------------------------------------------

/// Teams in the stack: the `[chat.teams]` section (its secret in the file `teams.secret` of the
/// stack's folder) and each person's Teams identity.
#[derive(Clone, Debug, Default)]
pub struct TeamsChat {
    /// The section, with `app_secret = { file = "teams.secret" }`.
    pub section: String,
    pub secret: String,
    /// `(person, "teams:<aadObjectId>")`.
    pub identities: Vec<(String, String)>,
}

impl Stack {
    /// The people's Teams identities, as extra entries of their `identities` lists.
    fn teams_identities(&self, person: &str) -> String {
        let Some(t) = &self.options.teams else {
            return String::new();
        };
        t.identities
            .iter()
            .filter(|(p, _)| p == person)
            .map(|(_, id)| format!(", \"{id}\""))
            .collect()
    }

    /// Writes the Teams secret; the section for the configuration (empty without Teams).
    fn teams_config(&self) -> Result<String> {
        let Some(t) = &self.options.teams else {
            return Ok(String::new());
        };
        std::fs::write(self.dir.path().join("teams.secret"), &t.secret)?;
        Ok(t.section.clone())
    }
}

// ---------------------------------------------------------------------------------------------

/// Every part, running.
pub struct Stack {
    pub bind: Bind,
    pub prosody: Prosody,
    pub fleet: Fleet,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub store: PathBuf,
    pub options: StackOptions,
    /// The CA of Prosody's certificate: the s2s probes complete STARTTLS against it.
    pub federation_ca: PathBuf,
    /// Discord beside the other chat, once [`Stack::with_discord`] added it.
    pub discord: Option<DiscordChat>,
    /// Between Baton and Prosody's client port, when the options ask for it.
    pub proxy: Option<Proxy>,
}

impl Stack {
    pub fn start(options: StackOptions) -> Result<Stack> {
        let dir = tempfile::Builder::new().prefix("baton-stack-").tempdir()?;
        let tls = test_pki(dir.path(), "federation")?;
        let prosody = Prosody::start_with(ProsodyOptions {
            s2s_extra_interfaces: vec![POOL1_ADDRESS],
            tls: Some(tls.tls_files()),
            sasl_plain_only: options.sasl_plain_only,
            ..ProsodyOptions::default()
        })
        .context("starting Prosody")?;
        let proxy = if options.xmpp_via_proxy {
            Some(Proxy::start(prosody.c2s_addr()).context("starting the proxy")?)
        } else {
            None
        };
        let port = prosody.s2s_addr().port();
        let bind = Bind::start(&format!(
            "xmpp 300 IN A {POOL1_ADDRESS}\n_xmpp-server._tcp 300 IN SRV 10 10 {port} xmpp.contoso.test.\n"
        ))
        .context("starting BIND")?;
        let specs = hosts(&options)
            .iter()
            .map(|h| {
                let mut spec = AgentSpec::new(h);
                spec.sim_args = options.sim_args.clone();
                if h == MANAGEMENT {
                    spec.sim_state = Some(sim_state(&[
                        ("Site1", Some("EdgeServer:edgepool1.contoso.test")),
                        ("Site2", None),
                    ]));
                }
                spec
            })
            .collect();
        let fleet = Fleet::start_all(specs).context("starting the agents")?;
        let config = dir.path().join("baton.toml");
        let store = dir.path().join("baton.sqlite");
        let stack = Stack {
            bind,
            prosody,
            fleet,
            dir,
            config,
            store,
            options,
            federation_ca: tls.ca,
            discord: None,
            proxy,
        };
        stack.write_config()?;
        Ok(stack)
    }

    /// Writes Baton's configuration for this stack (again, e.g. after an agent moved port).
    pub fn write_config(&self) -> Result<()> {
        let dir = self.dir.path();
        std::fs::write(dir.join("tsig.secret"), self.bind.secret())?;
        // The journal's key, as an operator keeps it: a file the configuration names.
        baton::store::ChainKey::load_or_create(&dir.join("chain.key"))?;
        std::fs::write(
            dir.join("xmpp.password"),
            self.prosody.password("baton")?.expose_secret(),
        )?;
        let mut addresses = String::new();
        for h in self.hosts() {
            let host = Fqdn::parse(&h)?;
            addresses.push_str(&format!("\"{h}\" = \"{}\"\n", self.fleet.address(&host)?));
        }
        let pki = &self.fleet.pki;
        let teams = self.teams_config()?;
        let chat = if self.options.xmpp_chat {
            format!(
                "[chat.console]\nenabled = false\n\n[chat.xmpp]\nenabled = true\njid = \"baton@contoso.test\"\n\
                 password = {{ file = \"xmpp.password\" }}\nserver = \"{}\"\ntls = \"plain\"\n\
                 rooms = [\"{INCIDENT_ROOM}\", \"{SEMI_ANONYMOUS_ROOM}\"]\nnickname = \"baton\"\n\
                 reconnect_initial = \"{}\"\nreconnect_max = \"{}\"\n{}\n",
                self.xmpp_addr(),
                self.options.xmpp_reconnect.as_ref().map_or("200ms", |r| r.0.as_str()),
                self.options.xmpp_reconnect.as_ref().map_or("2s", |r| r.1.as_str()),
                self.options.xmpp_config,
            )
        } else if self.options.teams.is_some() {
            "[chat.console]\nenabled = false\n".to_string()
        } else {
            "[chat.console]\nenabled = true\ntrusted = true\nroom = \"incident\"\n".to_string()
        };
        let text = format!(
            r#"# Generated by baton-e2e's stack harness.
[bot]
store = {store:?}
chain_key = {{ file = "chain.key" }}
executor = "agents"
{bot_extra}

[people.alice]
identities = ["xmpp:alice@contoso.test", "console:alice"{alice_teams}]
[people.bob]
identities = ["xmpp:bob@contoso.test", "console:bob"{bob_teams}]
[people.carol]
identities = ["xmpp:carol@contoso.test", "console:carol"{carol_teams}]
[people.mallory]
identities = ["xmpp:mallory@contoso.test", "console:mallory"{mallory_teams}]

[groups]
edge-admins = ["alice", "bob", "carol"]

[policy]
approvals_required = 1
expiry = "15m"

[inventory]
sites = ["Site1", "Site2"]
management_host = "{MANAGEMENT}"

[inventory.pools.EdgePool1]
site = "Site1"
fqdn = "edgepool1.contoso.test"
external_address = "{POOL1_ADDRESS}"
servers = ["edge1a.contoso.test", "edge1b.contoso.test"]

[inventory.pools.EdgePool2]
site = "Site2"
fqdn = "edgepool2.contoso.test"
external_address = "{POOL2_ADDRESS}"
servers = [{pool2}]

[inventory.federation]
domain = "contoso.test"
host = "xmpp.contoso.test"
srv = "_xmpp-server._tcp.contoso.test"
port = {s2s}
ttl = 300

[inventory.route]
initial = "EdgePool1"

[dns]
provider = "rfc2136"
server = "{bind}"
zone = "contoso.test"
tsig_key_name = "baton"
tsig_secret = {{ file = "tsig.secret" }}
timeout = "3s"

[probes]
timeout = "2s"
ca_file = {federation_ca:?}

[agents]
ca = {ca:?}
cert = {cert:?}
key = {key:?}
connect_timeout = "1s"
request_timeout = "10s"
attempts = 3

[agents.addresses]
{addresses}
{chat}
{teams}
{extra}
"#,
            store = self.store.display().to_string(),
            s2s = self.prosody.s2s_addr().port(),
            bind = self.bind.addr(),
            ca = pki.ca_cert.display().to_string(),
            cert = pki.bot_cert.display().to_string(),
            key = pki.bot_key.display().to_string(),
            extra = self.options.extra_config,
            bot_extra = self.options.bot_config,
            federation_ca = self.federation_ca.display().to_string(),
            alice_teams = self.teams_identities("alice"),
            bob_teams = self.teams_identities("bob"),
            carol_teams = self.teams_identities("carol"),
            mallory_teams = self.teams_identities("mallory"),
            pool2 = pool2_servers(&self.options)
                .iter()
                .map(|h| format!("\"{h}\""))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let text = self.discord_section(text)?;
        std::fs::write(&self.config, text).with_context(|| format!("writing {}", self.config.display()))
    }

    /// Starts `baton run` on this stack's configuration.
    pub fn start_bot(&self) -> Result<Baton> {
        let config = self.config.to_str().context("the config path is UTF-8")?;
        Baton::start(&["run", "--config", config])
    }

    /// Starts `baton run` with this log filter (`RUST_LOG`), whatever `BATON_TEST_LOG` says.
    pub fn start_bot_logging(&self, filter: &str) -> Result<Baton> {
        let config = self.config.to_str().context("the config path is UTF-8")?;
        Baton::start_logging(&["run", "--config", config], filter)
    }

    /// Where Baton connects for XMPP: the proxy when there is one, else Prosody itself.
    pub fn xmpp_addr(&self) -> std::net::SocketAddr {
        self.proxy.as_ref().map_or_else(|| self.prosody.c2s_addr(), Proxy::addr)
    }

    /// The proxy between Baton and Prosody (the options must have asked for it).
    pub fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().expect("the stack was started with xmpp_via_proxy")
    }

    /// The journal's rows of one kind, as (time, event) in order.
    pub fn journal_times(&self, kind: &str) -> Result<Vec<(chrono::DateTime<chrono::Utc>, serde_json::Value)>> {
        self.journal()?
            .into_iter()
            .filter(|e| e["kind"] == kind)
            .map(|e| {
                let at = e["at"].as_str().context("every row has a time")?;
                let at = chrono::DateTime::parse_from_rfc3339(at)
                    .with_context(|| format!("the row's time {at} is RFC 3339"))?
                    .with_timezone(&chrono::Utc);
                Ok((at, e["event"].clone()))
            })
            .collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every agent host of this stack: [`HOSTS`], or with a larger EdgePool2 its servers in
    /// place of edge2a and edge2b.
    pub fn hosts(&self) -> Vec<String> {
        hosts(&self.options)
    }

    /// EdgePool2's servers, in the order of the inventory.
    pub fn pool2_hosts(&self) -> Vec<String> {
        pool2_servers(&self.options)
    }

    /// The A records of the federation host, as BIND answers them now.
    pub fn a_records(&self) -> Result<Vec<String>> {
        self.bind.records("xmpp.contoso.test", "A")
    }

    /// The SRV records of the federation name.
    pub fn srv_records(&self) -> Result<Vec<String>> {
        self.bind.records("_xmpp-server._tcp.contoso.test", "SRV")
    }

    /// The journal's rows in order, as `baton audit all` prints them (`seq`, `kind`, `event`,
    /// ...); the audit also checks the hash chain, and a broken chain is an error here.
    pub fn journal(&self) -> Result<Vec<serde_json::Value>> {
        // Through the configuration: it names the journal's key.
        let config = self.config.to_str().context("the configuration path is UTF-8")?;
        let (status, stdout, stderr) =
            crate::baton::run(&["audit", "all", "--config", config], Duration::from_secs(30))?;
        anyhow::ensure!(status.success(), "baton audit failed ({status}): {stderr}");
        let doc: serde_json::Value = serde_json::from_str(&stdout).context("baton audit prints JSON")?;
        doc["events"]
            .as_array()
            .cloned()
            .context("the audit has an events list")
    }

    /// The kinds of the journal's rows, in order.
    pub fn journal_kinds(&self) -> Result<Vec<String>> {
        Ok(self
            .journal()?
            .iter()
            .map(|e| e["kind"].as_str().unwrap_or("?").to_string())
            .collect())
    }

    /// The chat message ids the store recorded as handled (commands only), read while
    /// `baton run` works on the store.
    pub fn handled_ids(&self) -> Result<Vec<String>> {
        self.read_texts("SELECT message_id FROM handled ORDER BY rowid")
    }

    /// The texts waiting in the outbox (journaled, not yet confirmed by the chat), oldest first,
    /// read from the store while `baton run` works on it.
    pub fn undelivered(&self) -> Result<Vec<String>> {
        self.read_texts("SELECT text FROM outbox WHERE delivered_at IS NULL ORDER BY id")
    }

    /// One text column of a query on the store, opened read-only beside the running bot.
    fn read_texts(&self, sql: &str) -> Result<Vec<String>> {
        let conn = rusqlite::Connection::open_with_flags(&self.store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

// ----- Discord: the stack's chat can include a Discord stand-in --------------------------------

/// Discord in the stack: a stand-in on this machine (see `discord_bot` for its people and
/// channels), Baton reaching it over HTTPS with its CA.
#[derive(Clone, Debug)]
pub struct DiscordChat {
    /// The stand-in's HTTPS address (`discord.com` resolves to it).
    pub address: std::net::SocketAddr,
    pub ca_pem: String,
    /// Channels whose messages Baton reads, and mirror channels.
    pub channels: Vec<u64>,
    pub mirror_channels: Vec<u64>,
}

impl DiscordChat {
    /// Baton in `#incidents` of the stand-in's guild.
    pub fn for_stand_in(discord: &crate::discord::DiscordStandIn) -> DiscordChat {
        DiscordChat {
            address: discord.https_addr(),
            ca_pem: discord.ca_pem().to_string(),
            channels: vec![crate::discord_bot::INCIDENTS],
            mirror_channels: Vec::new(),
        }
    }
}

impl Stack {
    /// Adds Discord to Baton's chat and rewrites the configuration (start the bot afterwards):
    /// the people get their Discord ids, and `[chat.discord]` points at the stand-in.
    pub fn with_discord(&mut self, chat: DiscordChat) -> Result<()> {
        self.discord = Some(chat);
        self.write_config()
    }

    fn discord_section(&self, text: String) -> Result<String> {
        let Some(chat) = &self.discord else {
            return Ok(text);
        };
        use crate::discord_bot::{GUILD, TOKEN, with_discord_people};
        let dir = self.dir.path();
        std::fs::write(dir.join("discord.token"), TOKEN)?;
        std::fs::write(dir.join("discord-ca.pem"), &chat.ca_pem)?;
        let ids = |list: &[u64]| list.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
        let with_people = with_discord_people(&text);
        anyhow::ensure!(
            with_people != text,
            "the stack's people have no console identities to extend"
        );
        Ok(format!(
            "{with_people}\n[chat.discord]\nenabled = true\ntoken = {{ file = \"discord.token\" }}\n\
             guilds = [\"{GUILD}\"]\nchannels = [{}]\nmirror_channels = [{}]\nedit_interval = \"200ms\"\n\
             reconnect_initial = \"100ms\"\nreconnect_max = \"1s\"\n\
             stand_in = {{ address = \"{}\", ca_file = \"discord-ca.pem\" }}\n",
            ids(&chat.channels),
            ids(&chat.mirror_channels),
            chat.address
        ))
    }
}

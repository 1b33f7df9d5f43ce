//! Configuration: one TOML file, validated in one pass that reports every error with its key
//! path and line (`baton check-config`). Secrets are named, never written, in the file.

mod agents;
mod chat;
mod dns;
mod ops;
mod probes;
pub mod redact;
pub mod secret;
mod store;
pub mod walk;

pub use crate::adapters::console::ConsoleSettings;
pub use agents::AgentsSettings;
pub use chat::ChatSettings;
pub use dns::DnsSettings;
pub use ops::{DEFAULT_PORT, LogFormat, LogSettings, ServerSettings};
pub use probes::ProbeSettings;
pub use walk::ConfigError;

use baton_actions::simulated::{FailureRule, SimulationConfig};
use baton_actions::{Federation, Fqdn, Inventory, Pool, PoolName, SiteName};
use baton_policies::{Directory, GroupName, Identity, PersonId, Policy};
use secret::SecretEnv;
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use walk::{Errors, Table, join};

/// Which executor carries out the plan's actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorKind {
    /// In-process simulation (drills, engine tests).
    Simulated,
    /// The real thing: `baton-agent` on each host over mutual TLS (`[agents]`), DNS updates
    /// signed with TSIG and probes from the bot (`[dns]`, `[probes]`).
    Agents,
}

/// `[bot]`.
#[derive(Clone, Debug)]
pub struct BotSettings {
    pub command_prefix: String,
    /// The SQLite store; relative paths are resolved against the configuration file's folder.
    pub store: PathBuf,
    pub executor: ExecutorKind,
    /// How long a mirror room may refuse messages before Baton records them undeliverable there
    /// and says so once in the run's room (`mirror_give_up`, default 60s).
    pub mirror_give_up: Duration,
    /// `chain_key`: the key of the journal's chain (a secret); `None` keeps it in a file beside
    /// a SQLite store, made on first start.
    pub chain_key: Option<crate::store::ChainKey>,
    /// `checkpoint`: the file that records the journal's last row outside the store (default:
    /// beside the store, `<store>.head`).
    pub checkpoint: Option<PathBuf>,
}

impl BotSettings {
    /// The chain the store is opened with. For a SQLite store a missing checkpoint is a
    /// problem; a replica of a PostgreSQL store keeps its own, which may lag the other's.
    /// `make_key`: make the default key file when there is none (`baton run`, not `baton audit`).
    pub fn chain(&self, shared: bool, make_key: bool) -> Result<crate::store::Chain, crate::store::StoreError> {
        use crate::store::chain::beside;
        let checkpoint = self.checkpoint.clone().unwrap_or_else(|| beside(&self.store, ".head"));
        let key = match &self.chain_key {
            Some(k) => k.clone(),
            None if shared => {
                return Err(crate::store::StoreError::Key {
                    path: "bot.chain_key".into(),
                    why: "is required with a PostgreSQL store".into(),
                });
            }
            None if make_key => crate::store::ChainKey::load_or_create(&beside(&self.store, ".key"))?,
            None => crate::store::ChainKey::load(&beside(&self.store, ".key"))?,
        };
        Ok(crate::store::Chain::new(key, Some(checkpoint), !shared))
    }
}

/// How Baton knows which pool holds the route now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSettings {
    /// The pool holding the route before Baton's first successful run; after that, the journal's
    /// last successful run says.
    pub initial: Option<PoolName>,
}

/// A validated configuration.
#[derive(Clone)]
pub struct Config {
    pub bot: BotSettings,
    pub directory: Directory,
    pub policy: Policy,
    pub inventory: Inventory,
    pub route: RouteSettings,
    pub dns: DnsSettings,
    pub agents: Option<AgentsSettings>,
    pub chat: ChatSettings,
    pub probes: ProbeSettings,
    pub simulation: SimulationConfig,
    /// `[server]`: the health and metrics listener, when configured.
    pub server: Option<ServerSettings>,
    pub log: LogSettings,
    /// `[store]`: a PostgreSQL store shared by replicas, instead of `bot.store`'s SQLite file.
    pub postgres: Option<crate::store::postgres::PgSettings>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets inside are `secrecy` types and print as redacted; the rest is summarised.
        f.debug_struct("Config")
            .field("bot", &self.bot)
            .field("pools", &self.inventory.pool_names())
            .field("dns", &self.dns)
            .field("chat", &self.chat)
            .field("server", &self.server)
            .field("log", &self.log)
            .field("postgres", &self.postgres)
            .finish_non_exhaustive()
    }
}

/// Every problem found in a configuration file.
#[derive(Debug)]
pub struct ConfigErrors {
    pub origin: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        writeln!(f, "{}: {n} error{}", self.origin, if n == 1 { "" } else { "s" })?;
        for e in &self.errors {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads and validates the file at `path`, resolving secrets from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigErrors {
            origin: path.display().to_string(),
            errors: vec![ConfigError {
                path: String::new(),
                line: None,
                message: format!("cannot read the file: {err}"),
            }],
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let var = |name: &str| std::env::var(name).ok();
        Config::parse(&text, &path.display().to_string(), &SecretEnv { var: &var, base })
    }

    /// Validates configuration text. `origin` names it in errors.
    pub fn parse(text: &str, origin: &str, env: &SecretEnv<'_>) -> Result<Config, ConfigErrors> {
        let mut e = Errors::new(text);
        let (doc, syntax) = toml::de::DeTable::parse_recoverable(text);
        for err in syntax {
            e.at("", err.span(), format!("TOML syntax: {}", err.message().trim()));
        }
        let root = Table::root(&doc);
        let bot = bot_section(&mut e, &root, env);
        let directory = people_and_groups(&mut e, &root);
        let policy = policy_section(&mut e, &root, directory.as_ref());
        let real = bot.as_ref().is_some_and(|b| b.executor == ExecutorKind::Agents);
        let dns = dns::read(&mut e, &root, env, real);
        let inventory = inventory_section(&mut e, &root, dns.as_ref());
        let agents = agents::read(&mut e, &root, &env.base);
        if real && agents.is_none() && !root.has("agents") {
            e.at(
                "bot.executor",
                root_span(&root, "bot.executor"),
                "\"agents\" needs an [agents] section (ca, cert, key, port)",
            );
        }
        let chat = chat::read(&mut e, &root, env);
        let probes = probes::read(&mut e, &root, &env.base);
        let simulation = simulation_section(&mut e, &root);
        let server = ops::read_server(&mut e, &root);
        let log = ops::read_log(&mut e, &root);
        let postgres = store::read(&mut e, &root, env);
        if postgres.as_ref().is_some_and(Option::is_some) && bot.as_ref().is_some_and(|b| b.chain_key.is_none()) {
            e.at(
                "bot.chain_key",
                None,
                "is required with a PostgreSQL store (both replicas sign the journal with it): name a file ({ file = \"PATH\" }) or an environment variable ({ env = \"NAME\" }) holding at least 32 characters, e.g. from `openssl rand -hex 32`",
            );
        }
        root.finish(&mut e);
        match (
            e.is_empty(),
            bot,
            directory,
            policy,
            inventory,
            dns,
            chat,
            simulation,
            postgres,
        ) {
            (
                true,
                Some(bot),
                Some(directory),
                Some(policy),
                Some((inventory, route)),
                Some(dns),
                Some(chat),
                Some(simulation),
                Some(postgres),
            ) => Ok(Config {
                bot,
                directory,
                policy,
                inventory,
                route,
                dns,
                agents,
                chat,
                probes,
                simulation,
                server,
                log,
                postgres,
            }),
            _ => {
                let mut errors = e.list;
                if errors.is_empty() {
                    errors.push(ConfigError {
                        path: String::new(),
                        line: None,
                        message: "invalid configuration".into(),
                    });
                }
                errors.sort_by_key(|x| x.line.unwrap_or(usize::MAX));
                // Whatever a check quoted, a value under a key named like a secret is not shown.
                redact::scrub(&mut errors, &redact::secret_values(doc.get_ref(), text));
                Err(ConfigErrors {
                    origin: origin.to_string(),
                    errors,
                })
            }
        }
    }
}

pub(crate) fn duration(e: &mut Errors<'_>, t: &Table<'_, '_>, key: &str) -> Option<Duration> {
    let text: String = t.opt(e, key)?;
    match humantime::parse_duration(&text) {
        Ok(d) => Some(d),
        Err(err) => {
            e.at(
                &t.key_path(key),
                t.span_of(key),
                format!(
                    "'{}' is not a duration like 15m or 2s: {err}",
                    baton_actions::names::shown(&text)
                ),
            );
            None
        }
    }
}

fn bot_section(e: &mut Errors<'_>, root: &Table<'_, '_>, env: &secret::SecretEnv<'_>) -> Option<BotSettings> {
    let Some(t) = root.sub(e, "bot") else {
        if !root.has("bot") {
            e.at("bot", None, "is missing");
        }
        return None;
    };
    let prefix: String = t.opt(e, "command_prefix").unwrap_or_else(|| "!".to_string());
    let prefix_ok = !prefix.is_empty()
        && prefix.chars().count() <= 3
        && !prefix.chars().any(|c| c.is_whitespace() || c.is_control());
    if !prefix_ok {
        e.at(
            &t.key_path("command_prefix"),
            t.span_of("command_prefix"),
            "must be 1 to 3 visible characters, e.g. \"!\"",
        );
    }
    let store: PathBuf = t
        .opt::<String>(e, "store")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("baton.sqlite"));
    let base = &env.base;
    let store = if store.is_absolute() { store } else { base.join(store) };
    let mut key_ok = true;
    let chain_key = t
        .has("chain_key")
        .then(|| secret::read(e, &t, "chain_key", env, true))
        .flatten();
    let chain_key = chain_key.and_then(|k| match crate::store::ChainKey::new(k) {
        Ok(k) => Some(k),
        Err(why) => {
            e.at(&t.key_path("chain_key"), t.span_of("chain_key"), why);
            key_ok = false;
            None
        }
    });
    key_ok &= !t.has("chain_key") || chain_key.is_some();
    let checkpoint = t.opt::<String>(e, "checkpoint").map(|c| {
        let c = PathBuf::from(c);
        if c.is_absolute() { c } else { base.join(c) }
    });
    let executor = match t.opt::<String>(e, "executor").as_deref() {
        None | Some("simulated") => Some(ExecutorKind::Simulated),
        Some("agents") => Some(ExecutorKind::Agents),
        Some(other) => {
            e.at(
                &t.key_path("executor"),
                t.span_of("executor"),
                format!(
                    "unknown executor '{}' (executors: simulated, agents)",
                    baton_actions::names::shown(other)
                ),
            );
            None
        }
    };
    let mut give_up_ok = true;
    let mirror_give_up = match duration(e, &t, "mirror_give_up") {
        Some(d) if d < Duration::from_secs(1) || d > Duration::from_secs(24 * 3600) => {
            e.at(
                &t.key_path("mirror_give_up"),
                t.span_of("mirror_give_up"),
                "must be between 1s and 24h",
            );
            give_up_ok = false;
            d
        }
        Some(d) => d,
        None => {
            give_up_ok = !t.has("mirror_give_up");
            crate::daemon::MIRROR_GIVE_UP
        }
    };
    t.finish(e);
    Some(BotSettings {
        command_prefix: prefix,
        store,
        executor: executor?,
        mirror_give_up,
        chain_key,
        checkpoint,
    })
    .filter(|_| prefix_ok && give_up_ok && key_ok)
}

fn people_and_groups(e: &mut Errors<'_>, root: &Table<'_, '_>) -> Option<Directory> {
    let mut people = Vec::new();
    let mut ok = true;
    match root.sub(e, "people") {
        Some(t) => {
            for (name, v) in t.entries() {
                let path = join("people", &name);
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    e.at(&path, Some(v.span()), "person names use letters, digits, '-' and '_'");
                    ok = false;
                    continue;
                }
                let Some(pt) = Table::of(e, path.clone(), v) else {
                    ok = false;
                    continue;
                };
                let raw: Vec<String> = pt.req(e, "identities").unwrap_or_default();
                let mut identities = Vec::new();
                for (i, s) in raw.iter().enumerate() {
                    match Identity::parse(s) {
                        Ok(id) => identities.push(id),
                        Err(err) => {
                            e.at(
                                &format!("{}[{i}]", pt.key_path("identities")),
                                pt.span_of("identities"),
                                err.to_string(),
                            );
                            ok = false;
                        }
                    }
                }
                pt.finish(e);
                people.push((PersonId::new(&name), identities));
            }
            t.finish(e);
        }
        None => {
            if !root.has("people") {
                e.at(
                    "people",
                    None,
                    "is missing: name at least the people who may request and approve",
                );
            }
            ok = false;
        }
    }
    let mut groups = Vec::new();
    if let Some(t) = root.sub(e, "groups") {
        for (name, v) in t.entries() {
            let path = join("groups", &name);
            if let Some(members) = walk::value::<Vec<String>>(e, &path, v) {
                groups.push((
                    GroupName::new(&name),
                    members.iter().map(|m| PersonId::new(m)).collect(),
                ));
            } else {
                ok = false;
            }
        }
        t.finish(e);
    }
    match Directory::new(people, groups) {
        Ok(dir) if ok => Some(dir),
        Ok(_) => None,
        Err(errors) => {
            for err in errors {
                let path = match &err {
                    baton_policies::DirectoryError::UnknownMember { group, .. } => join("groups", group.as_str()),
                    baton_policies::DirectoryError::SharedIdentity { second, .. } => join("people", second.as_str()),
                    baton_policies::DirectoryError::DuplicatePerson(p) => join("people", p.as_str()),
                };
                let span = root_span(root, &path);
                e.at(&path, span, err.to_string());
            }
            None
        }
    }
}

/// The span of a dotted path's value in the document, for errors found after reading it.
fn root_span(root: &Table<'_, '_>, path: &str) -> Option<std::ops::Range<usize>> {
    let mut parts = path.split('.');
    let first = parts.next()?;
    let mut v = root.get(first)?;
    for p in parts {
        let p = p.trim_matches('"');
        match v.get_ref() {
            toml::de::DeValue::Table(t) => v = t.get(p)?,
            _ => return Some(v.span()),
        }
    }
    Some(v.span())
}

fn groups_exist(e: &mut Errors<'_>, t: &Table<'_, '_>, key: &str, list: &[GroupName], dir: Option<&Directory>) {
    let Some(dir) = dir else { return };
    for g in list {
        if !dir.has_group(g) {
            e.at(
                &t.key_path(key),
                t.span_of(key),
                format!("group '{g}' is not defined in [groups]"),
            );
        }
    }
}

fn policy_section(e: &mut Errors<'_>, root: &Table<'_, '_>, dir: Option<&Directory>) -> Option<Policy> {
    let mut p = Policy::default();
    let Some(t) = root.sub(e, "policy") else {
        if let Some(dir) = dir
            && !dir.has_group(&GroupName::new("edge-admins"))
        {
            e.at(
                "policy",
                None,
                "is missing, and the default policy needs a group named edge-admins in [groups]",
            );
        }
        return dir.map(|_| p);
    };
    let before = e.list.len();
    let groups = |e: &mut Errors<'_>, key: &str, into: &mut Vec<GroupName>| {
        if let Some(list) = t.opt::<Vec<String>>(e, key) {
            *into = list.iter().map(|g| GroupName::new(g)).collect();
            groups_exist(e, &t, key, into, dir);
        }
    };
    groups(e, "request", &mut p.request);
    groups(e, "approve", &mut p.approve);
    groups(e, "deny", &mut p.deny);
    groups(e, "abort", &mut p.abort);
    groups(e, "retry", &mut p.retry);
    if t.has("view") {
        let mut view = Vec::new();
        groups(e, "view", &mut view);
        p.view = Some(view);
    }
    if let Some(n) = t.opt::<i64>(e, "approvals_required") {
        match u32::try_from(n) {
            Ok(n) if (1..=10).contains(&n) => p.approvals_required = n,
            _ => e.at(
                &t.key_path("approvals_required"),
                t.span_of("approvals_required"),
                "must be between 1 and 10 (the two-person rule needs at least 1)",
            ),
        }
    }
    if let Some(b) = t.opt(e, "requester_may_approve") {
        p.requester_may_approve = b;
    }
    if let Some(b) = t.opt(e, "retry_needs_approval") {
        p.retry_needs_approval = b;
    }
    if let Some(d) = duration(e, &t, "expiry") {
        if d < Duration::from_secs(30) || d > Duration::from_secs(24 * 3600) {
            e.at(
                &t.key_path("expiry"),
                t.span_of("expiry"),
                "must be between 30s and 24h",
            );
        } else {
            p.expiry = d;
        }
    }
    // Rights left at their default name the default group, which must exist too.
    let defaults = [
        ("request", &p.request),
        ("approve", &p.approve),
        ("deny", &p.deny),
        ("abort", &p.abort),
        ("retry", &p.retry),
    ];
    for (key, list) in defaults {
        if !t.has(key) {
            groups_exist(e, &t, key, list, dir);
        }
    }
    t.finish(e);
    (e.list.len() == before && dir.is_some()).then_some(p)
}

fn inventory_section(
    e: &mut Errors<'_>,
    root: &Table<'_, '_>,
    dns: Option<&DnsSettings>,
) -> Option<(Inventory, RouteSettings)> {
    let Some(t) = root.sub(e, "inventory") else {
        if !root.has("inventory") {
            e.at(
                "inventory",
                None,
                "is missing: sites, pools, management_host and federation",
            );
        }
        return None;
    };
    let before = e.list.len();
    let sites: Vec<SiteName> = t.req(e, "sites").unwrap_or_default();
    let management_host: Option<Fqdn> = t.req(e, "management_host");
    let mut pools = Vec::new();
    let mut pool_entries = 0;
    if let Some(pt) = t.sub(e, "pools") {
        let entries = pt.entries();
        pool_entries = entries.len();
        for (name, v) in entries {
            let path = join("inventory.pools", &name);
            let pool_name = match PoolName::parse(&name) {
                Ok(n) => Some(n),
                Err(err) => {
                    e.at(&path, Some(v.span()), err.to_string());
                    None
                }
            };
            let Some(p) = Table::of(e, path, v) else { continue };
            let site: Option<SiteName> = p.req(e, "site");
            if let Some(site) = &site
                && !sites.contains(site)
            {
                e.at(
                    &p.key_path("site"),
                    p.span_of("site"),
                    format!("site '{site}' is not listed in inventory.sites"),
                );
            }
            let fqdn: Option<Fqdn> = p.req(e, "fqdn");
            let external_address: Option<String> = p.req(e, "external_address");
            let external_address = external_address.and_then(|a| match a.parse::<Ipv4Addr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    e.at(
                        &p.key_path("external_address"),
                        p.span_of("external_address"),
                        format!(
                            "'{}' is not an IPv4 address (the runbook moves an A record to it)",
                            baton_actions::names::shown(&a)
                        ),
                    );
                    None
                }
            });
            let servers: Option<Vec<Fqdn>> = p.req(e, "servers");
            if servers.as_ref().is_some_and(Vec::is_empty) {
                e.at(
                    &p.key_path("servers"),
                    p.span_of("servers"),
                    "lists no servers: every Edge server of the pool runs an agent",
                );
            }
            p.finish(e);
            if let (Some(name), Some(site), Some(fqdn), Some(external_address), Some(servers)) =
                (pool_name, site, fqdn, external_address, servers)
            {
                pools.push(Pool {
                    name,
                    site,
                    fqdn,
                    external_address,
                    servers,
                });
            }
        }
        pt.finish(e);
    } else if !t.has("pools") {
        e.at(
            "inventory.pools",
            Some(t.span.clone()),
            "is missing: at least two Edge pools",
        );
    }
    if pool_entries == 1 {
        e.at(
            "inventory.pools",
            t.span_of("pools"),
            "names one pool: a failover needs at least two",
        );
    }
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for pool in &pools {
        for s in &pool.servers {
            if let Some(other) = seen.insert(s.as_str(), pool.name.as_str()) {
                e.at(
                    &join(&join("inventory.pools", pool.name.as_str()), "servers"),
                    root_span(root, &format!("inventory.pools.{}.servers", pool.name)),
                    format!("{s} is also a server of {other}"),
                );
            }
        }
    }
    let federation = t.sub(e, "federation").and_then(|f| {
        let domain: Option<Fqdn> = f.req(e, "domain");
        let host: Option<Fqdn> = f.req(e, "host");
        let srv: Option<Fqdn> = f.opt(e, "srv").or_else(|| {
            domain
                .as_ref()
                .and_then(|d| Fqdn::parse(&format!("_xmpp-server._tcp.{d}")).ok())
        });
        let port: u16 = f.opt(e, "port").unwrap_or(5269);
        let srv_priority: u16 = f.opt(e, "srv_priority").unwrap_or(10);
        let srv_weight: u16 = f.opt(e, "srv_weight").unwrap_or(10);
        let ttl: u32 = f.opt(e, "ttl").unwrap_or(300);
        if let (Some(d), Some(s)) = (&domain, &srv)
            && !s.as_str().ends_with(&format!(".{d}"))
        {
            e.at(
                &f.key_path("srv"),
                f.span_of("srv"),
                format!("{s} is not inside the domain {d}"),
            );
        }
        f.finish(e);
        Some(Federation {
            domain: domain?,
            host: host?,
            srv: srv?,
            port,
            srv_priority,
            srv_weight,
            ttl,
        })
    });
    if !t.has("federation") {
        e.at(
            "inventory.federation",
            Some(t.span.clone()),
            "is missing: domain, host (and srv, port)",
        );
    }
    let route = t.sub(e, "route").map(|r| {
        let source: Option<String> = r.opt(e, "source");
        if let Some(s) = source.as_deref()
            && s != "journal"
        {
            e.at(
                &r.key_path("source"),
                r.span_of("source"),
                format!(
                    "unknown route source '{}' (sources: journal)",
                    baton_actions::names::shown(s)
                ),
            );
        }
        let initial: Option<String> = r.opt(e, "initial");
        let initial =
            initial.and_then(
                |name| match pools.iter().find(|p| p.name.as_str().eq_ignore_ascii_case(&name)) {
                    Some(p) => Some(p.name.clone()),
                    None => {
                        e.at(
                            &r.key_path("initial"),
                            r.span_of("initial"),
                            format!(
                                "'{}' is not a pool in inventory.pools",
                                baton_actions::names::shown(&name)
                            ),
                        );
                        None
                    }
                },
            );
        r.finish(e);
        RouteSettings { initial }
    });
    t.finish(e);
    if e.list.len() != before {
        return None;
    }
    let inventory = Inventory {
        sites,
        pools,
        management_host: management_host?,
        federation: federation?,
        dns: dns?.provider.clone(),
    };
    Some((inventory, route.unwrap_or(RouteSettings { initial: None })))
}

fn simulation_section(e: &mut Errors<'_>, root: &Table<'_, '_>) -> Option<SimulationConfig> {
    let mut sim = SimulationConfig {
        default_delay: Duration::from_millis(300),
        ..Default::default()
    };
    let Some(t) = root.sub(e, "simulation") else {
        return Some(sim);
    };
    let before = e.list.len();
    if let Some(d) = duration(e, &t, "default_delay") {
        sim.default_delay = d;
    }
    if let Some(dt) = t.sub(e, "delays") {
        for (action, v) in dt.entries() {
            let path = join(&dt.path, &action);
            if !baton_actions::ACTION_IDS.contains(&action.as_str()) {
                e.at(
                    &path,
                    Some(v.span()),
                    format!("unknown action (actions: {})", baton_actions::ACTION_IDS.join(", ")),
                );
                continue;
            }
            if let Some(text) = walk::value::<String>(e, &path, v) {
                match humantime::parse_duration(&text) {
                    Ok(d) => {
                        sim.delays.insert(action, d);
                    }
                    Err(err) => e.at(&path, Some(v.span()), format!("not a duration: {err}")),
                }
            }
        }
        dt.finish(e);
    }
    for (i, rule) in t
        .opt::<Vec<String>>(e, "failures")
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        match rule.parse::<FailureRule>() {
            Ok(r) => sim.failures.push(r),
            Err(err) => e.at(&format!("simulation.failures[{i}]"), t.span_of("failures"), err),
        }
    }
    t.finish(e);
    (e.list.len() == before).then_some(sim)
}

#[cfg(test)]
mod tests;

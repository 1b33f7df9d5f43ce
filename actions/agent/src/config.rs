//! The agent's configuration file (TOML): who it is, where it listens, its TLS material and
//! client pins, the enabled actions with their timeouts, and the executor. Loaded in one pass
//! that reports every error with its key.
//!
//! ```toml
//! host = "edge2a.contoso.com"          # the host this agent serves; other hosts are refused
//! listen = "0.0.0.0:4443"
//! state_dir = "C:\\ProgramData\\Baton"  # the idempotency journal lives here
//! actions = ["services.stop", "services.start", "services.status"]
//!
//! [tls]
//! cert = "edge2a.contoso.com.crt"      # paths are relative to this file
//! key = "edge2a.contoso.com.key"
//! client_ca = "ca.crt"                 # clients must chain to it
//! client_sha256 = []                   # optional pins: any match admits the client
//! client_subjects = ["CN=baton-bot"]
//!
//! [timeouts]                           # optional, per action (humantime)
//! "services.stop" = "5m"
//!
//! [executor]
//! kind = "powershell"                  # or "command"
//! module = "Lync"                      # or "SkypeForBusiness"
//!
//! # kind = "command": one argv per enabled action, run without a shell
//! # [executor.commands]
//! # "services.stop" = ["/usr/local/bin/baton-lync-sim", "--state", "/var/lib/sim/edge2a.json"]
//! ```

use baton_runbook::names::Fqdn;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The actions an agent can carry out (derived from the catalog); `health` is answered by the
/// agent itself.
pub use baton_runbook::catalog::AGENT_ACTIONS;

/// Where Windows keeps Windows PowerShell 5.1; used unless the configuration names another.
pub const DEFAULT_POWERSHELL: &str = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid agent configuration {}:\n  - {}", path.display(), errors.join("\n  - "))]
    Invalid { path: PathBuf, errors: Vec<String> },
}

/// The Lync Server 2013 or Skype for Business Server management module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum LyncModule {
    Lync,
    SkypeForBusiness,
}

impl LyncModule {
    pub fn name(self) -> &'static str {
        match self {
            LyncModule::Lync => "Lync",
            LyncModule::SkypeForBusiness => "SkypeForBusiness",
        }
    }
}

/// How actions are carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecutorConfig {
    /// One argv per action, started without a shell (Linux hosts, tests).
    Command { commands: BTreeMap<String, Vec<String>> },
    /// Fixed scripts embedded in the agent, run by Windows PowerShell.
    PowerShell { program: PathBuf, module: LyncModule },
}

impl ExecutorConfig {
    /// `command`, or `powershell (Lync)`.
    pub fn describe(&self) -> String {
        match self {
            ExecutorConfig::Command { .. } => "command".to_string(),
            ExecutorConfig::PowerShell { module, .. } => format!("powershell ({})", module.name()),
        }
    }
}

/// The TLS files and the optional client pins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    /// Normalised SHA-256 fingerprints (64 lower-case hex digits).
    pub client_sha256: Vec<String>,
    /// Subjects as `CN=baton-bot, O=Contoso`.
    pub client_subjects: Vec<String>,
}

impl TlsSettings {
    /// True when a client must also match a pin.
    pub fn pinned(&self) -> bool {
        !self.client_sha256.is_empty() || !self.client_subjects.is_empty()
    }
}

/// A validated agent configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    pub host: Fqdn,
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub tls: TlsSettings,
    /// The enabled action ids.
    pub actions: BTreeSet<String>,
    /// Per-action upper bounds; actions not listed use the catalog's default timeout.
    pub timeouts: BTreeMap<String, Duration>,
    pub executor: ExecutorConfig,
    /// How long a stopping agent waits for running actions before it exits.
    pub shutdown_grace: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    host: String,
    listen: String,
    state_dir: PathBuf,
    actions: Vec<String>,
    tls: RawTls,
    #[serde(default)]
    timeouts: BTreeMap<String, String>,
    executor: RawExecutor,
    shutdown_grace: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
    #[serde(default)]
    client_sha256: Vec<String>,
    #[serde(default)]
    client_subjects: Vec<String>,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum RawExecutor {
    Command {
        commands: BTreeMap<String, Vec<String>>,
    },
    Powershell {
        module: LyncModule,
        program: Option<PathBuf>,
    },
}

impl AgentConfig {
    /// Reads and validates the file at `path`; relative paths in it are taken from its folder.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        AgentConfig::parse(&text, base).map_err(|errors| ConfigError::Invalid {
            path: path.to_path_buf(),
            errors,
        })
    }

    /// Validates a configuration text; relative paths are joined to `base`. Returns every error.
    pub fn parse(text: &str, base: &Path) -> Result<AgentConfig, Vec<String>> {
        let raw: Raw = toml::from_str(text).map_err(|e| vec![toml_error(text, &e)])?;
        let mut errors = Vec::new();
        let host = Fqdn::parse(&raw.host)
            .map_err(|e| errors.push(format!("host: {e}")))
            .ok();
        let listen = raw
            .listen
            .parse::<SocketAddr>()
            .map_err(|_| errors.push(format!("listen: '{}' is not an address like 0.0.0.0:4443", raw.listen)))
            .ok();
        let mut actions = BTreeSet::new();
        for (i, a) in raw.actions.iter().enumerate() {
            if AGENT_ACTIONS.contains(&a.as_str()) {
                actions.insert(a.clone());
            } else {
                errors.push(format!(
                    "actions[{i}]: '{a}' is not an agent action (agent actions: {})",
                    AGENT_ACTIONS.join(", ")
                ));
            }
        }
        let mut timeouts = BTreeMap::new();
        for (action, text) in &raw.timeouts {
            if !AGENT_ACTIONS.contains(&action.as_str()) {
                errors.push(format!("timeouts.\"{action}\": not an agent action"));
                continue;
            }
            match humantime::parse_duration(text) {
                Ok(d) if !d.is_zero() && d <= baton_runbook::protocol::MAX_TIMEOUT => {
                    timeouts.insert(action.clone(), d);
                }
                _ => errors.push(format!(
                    "timeouts.\"{action}\": '{text}' is not a duration between 1ms and 1h (e.g. \"90s\")"
                )),
            }
        }
        let shutdown_grace = match raw.shutdown_grace.as_deref().map(humantime::parse_duration) {
            None => Duration::from_secs(10),
            Some(Ok(d)) => d,
            Some(Err(_)) => {
                errors.push("shutdown_grace: not a duration (e.g. \"10s\")".to_string());
                Duration::ZERO
            }
        };
        let mut client_sha256 = Vec::new();
        for (i, f) in raw.tls.client_sha256.iter().enumerate() {
            match baton_tls::normalize_fingerprint(f) {
                Some(n) => client_sha256.push(n),
                None => errors.push(format!(
                    "tls.client_sha256[{i}]: not a SHA-256 fingerprint (64 hex digits, ':' allowed)"
                )),
            }
        }
        let executor = match raw.executor {
            RawExecutor::Command { commands } => {
                for (action, argv) in &commands {
                    if !AGENT_ACTIONS.contains(&action.as_str()) {
                        errors.push(format!("executor.commands.\"{action}\": not an agent action"));
                    } else if argv.is_empty() || argv[0].is_empty() {
                        errors.push(format!(
                            "executor.commands.\"{action}\": needs a program and its arguments"
                        ));
                    }
                }
                for action in &actions {
                    if !commands.contains_key(action) {
                        errors.push(format!(
                            "executor.commands: the enabled action '{action}' has no command"
                        ));
                    }
                }
                ExecutorConfig::Command { commands }
            }
            RawExecutor::Powershell { module, program } => ExecutorConfig::PowerShell {
                program: program.unwrap_or_else(|| PathBuf::from(DEFAULT_POWERSHELL)),
                module,
            },
        };
        let (Some(host), Some(listen), true) = (host, listen, errors.is_empty()) else {
            return Err(errors);
        };
        Ok(AgentConfig {
            host,
            listen,
            state_dir: base.join(raw.state_dir),
            tls: TlsSettings {
                cert: base.join(raw.tls.cert),
                key: base.join(raw.tls.key),
                client_ca: base.join(raw.tls.client_ca),
                client_sha256,
                client_subjects: raw.tls.client_subjects,
            },
            actions,
            timeouts,
            executor,
            shutdown_grace,
        })
    }

    /// The timeout an action gets: what the caller asked, at most the configured bound.
    pub fn timeout_for(&self, action: &baton_runbook::Action, asked: Duration) -> Duration {
        let bound = self
            .timeouts
            .get(action.id())
            .copied()
            .unwrap_or_else(|| action.default_timeout());
        asked.min(bound)
    }
}

/// A TOML error with its line number.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", e.message())
        }
        None => e.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
host = "Edge2A.contoso.com"
listen = "127.0.0.1:4443"
state_dir = "state"
actions = ["services.stop", "services.start"]
shutdown_grace = "3s"
[tls]
cert = "edge.crt"
key = "edge.key"
client_ca = "ca.crt"
client_sha256 = ["AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB"]
[timeouts]
"services.stop" = "90s"
[executor]
kind = "command"
[executor.commands]
"services.stop" = ["/bin/sim", "stop"]
"services.start" = ["/bin/sim", "start"]
"#;

    fn errors(text: &str) -> Vec<String> {
        AgentConfig::parse(text, Path::new("/etc/baton")).expect_err("invalid")
    }

    #[test]
    fn a_good_file() {
        let c = AgentConfig::parse(GOOD, Path::new("/etc/baton")).expect("valid");
        assert_eq!(c.host.as_str(), "edge2a.contoso.com");
        assert_eq!(c.tls.client_ca, Path::new("/etc/baton/ca.crt"));
        assert_eq!(c.state_dir, Path::new("/etc/baton/state"));
        assert_eq!(c.tls.client_sha256, vec!["ab".repeat(32)]);
        assert!(c.tls.pinned());
        assert_eq!(c.shutdown_grace, Duration::from_secs(3));
        let stop = baton_runbook::Action::ServicesStop { host: c.host.clone() };
        assert_eq!(c.timeout_for(&stop, Duration::from_secs(300)), Duration::from_secs(90));
        assert_eq!(c.timeout_for(&stop, Duration::from_secs(5)), Duration::from_secs(5));
        let start = baton_runbook::Action::ServicesStart { host: c.host.clone() };
        assert_eq!(
            c.timeout_for(&start, Duration::from_secs(3600)),
            Duration::from_secs(300),
            "catalog default"
        );
        assert_eq!(c.executor.describe(), "command");
    }

    #[test]
    fn every_error_is_reported_with_its_key() {
        let bad = GOOD
            .replace("Edge2A.contoso.com", "edge2a")
            .replace("127.0.0.1:4443", "localhost")
            .replace(
                r#""services.start"]"#,
                r#""services.start", "rm", "port.check", "route.get"]"#,
            )
            .replace(r#""90s""#, r#""soon""#)
            .replace("AB:AB:AB:AB:", "");
        expect_test::expect![[r#"
            [
                "host: 'edge2a' is not a valid host name: it needs a domain (e.g. edge2a.contoso.com)",
                "listen: 'localhost' is not an address like 0.0.0.0:4443",
                "actions[2]: 'rm' is not an agent action (agent actions: services.stop, services.start, services.status, route.get, route.set, dns.set_a, dns.ensure_srv)",
                "actions[3]: 'port.check' is not an agent action (agent actions: services.stop, services.start, services.status, route.get, route.set, dns.set_a, dns.ensure_srv)",
                "timeouts.\"services.stop\": 'soon' is not a duration between 1ms and 1h (e.g. \"90s\")",
                "tls.client_sha256[0]: not a SHA-256 fingerprint (64 hex digits, ':' allowed)",
                "executor.commands: the enabled action 'route.get' has no command",
            ]
        "#]]
        .assert_debug_eq(&errors(&bad));
        let unknown = errors(&GOOD.replace("shutdown_grace", "shutdown_grase"));
        assert_eq!(unknown.len(), 1);
        assert!(
            unknown[0].starts_with("line 6: unknown field `shutdown_grase`"),
            "{unknown:?}"
        );
    }

    #[test]
    fn the_example_file_is_valid() {
        let c = AgentConfig::parse(
            include_str!("../../../examples/agent.toml"),
            Path::new(r"C:\ProgramData\Baton"),
        )
        .expect("examples/agent.toml is valid");
        assert_eq!(
            c.executor,
            ExecutorConfig::PowerShell {
                program: PathBuf::from(DEFAULT_POWERSHELL),
                module: LyncModule::Lync
            }
        );
        assert_eq!(c.tls.client_subjects, ["CN=baton-bot"]);
    }

    #[test]
    fn powershell_defaults_to_the_system_program() {
        let text = GOOD.replace(
            "kind = \"command\"\n[executor.commands]\n\"services.stop\" = [\"/bin/sim\", \"stop\"]\n\"services.start\" = [\"/bin/sim\", \"start\"]\n",
            "kind = \"powershell\"\nmodule = \"SkypeForBusiness\"\n",
        );
        let c = AgentConfig::parse(&text, Path::new("/etc/baton")).expect("valid");
        assert_eq!(
            c.executor,
            ExecutorConfig::PowerShell {
                program: PathBuf::from(DEFAULT_POWERSHELL),
                module: LyncModule::SkypeForBusiness
            }
        );
        assert_eq!(c.executor.describe(), "powershell (SkypeForBusiness)");
        assert!(errors(&text.replace("SkypeForBusiness", "Exchange"))[0].contains("unknown variant `Exchange`"));
    }
}

/// The files and settings of an agent that runs its actions with the `command` executor, as
/// written for local fleets (the demo, tests): one argv for every enabled action.
#[derive(Clone, Debug)]
pub struct CommandAgentFiles<'a> {
    pub host: &'a str,
    pub listen: &'a str,
    pub state_dir: &'a Path,
    pub actions: &'a [String],
    pub cert: &'a Path,
    pub key: &'a Path,
    pub client_ca: &'a Path,
    pub pin_sha256: &'a [String],
    pub pin_subjects: &'a [String],
    pub timeouts: &'a [(String, String)],
    pub argv: &'a [String],
}

impl CommandAgentFiles<'_> {
    /// The configuration file's text (TOML, every string quoted as TOML requires).
    pub fn to_toml(&self) -> String {
        fn q(s: &str) -> String {
            toml::Value::String(s.to_string()).to_string()
        }
        fn list(items: &[String]) -> String {
            let quoted: Vec<String> = items.iter().map(|s| q(s)).collect();
            format!("[{}]", quoted.join(", "))
        }
        let path = |p: &Path| q(&p.display().to_string());
        let mut text = format!(
            "host = {}\nlisten = {}\nstate_dir = {}\nactions = {}\nshutdown_grace = \"1s\"\n\
             [tls]\ncert = {}\nkey = {}\nclient_ca = {}\nclient_sha256 = {}\nclient_subjects = {}\n[timeouts]\n",
            q(self.host),
            q(self.listen),
            path(self.state_dir),
            list(self.actions),
            path(self.cert),
            path(self.key),
            path(self.client_ca),
            list(self.pin_sha256),
            list(self.pin_subjects),
        );
        for (action, t) in self.timeouts {
            text.push_str(&format!("{} = {}\n", q(action), q(t)));
        }
        text.push_str("[executor]\nkind = \"command\"\n[executor.commands]\n");
        for action in self.actions {
            text.push_str(&format!("{} = {}\n", q(action), list(self.argv)));
        }
        text
    }
}

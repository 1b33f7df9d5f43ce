//! The Lync simulator (`baton-lync-sim`, and `baton lync-sim` inside the demo), dev tooling: a
//! stand-in for the Lync cmdlets on Linux, run by `baton-agent`'s `command` executor. One action
//! per invocation; the host's state (services, sites' XMPP federation routes, DNS records) lives
//! in a JSON file, so tests can check the effect of every step and count executions per key.
//!
//! Input: `BATON_ACTION`, `BATON_KEY` and the parameters as JSON on stdin (as the agent passes
//! them). Output: one line of JSON on stdout, shaped like the PowerShell scripts' results.
//! Injected behaviour, for tests: `--delay-ms`, `--fail`, `--spawn-child`, the variables
//! `BATON_SIM_DELAY_MS` / `BATON_SIM_FAIL`, or an `inject` entry in the state file per action
//! (`{"delay_ms": 3000, "fail": "why", "times": 1, "spawn_child": true}`).

use anyhow::{Context, Result, anyhow, bail};
use baton_runbook::protocol::{
    DnsAReport, DnsSrvReport, RouteChangeReport, RouteReport, ServiceState, ServicesReport, SrvRecord,
};
use baton_runbook::{Fqdn, SiteName};
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The simulator's command line.
#[derive(Parser, Debug)]
#[command(about = "Simulates the Lync cmdlets of one host for baton-agent's command executor")]
pub struct LyncSimArgs {
    /// The host's state file (created with every service running if missing).
    #[arg(long)]
    state: PathBuf,
    /// Sleep this long before acting.
    #[arg(long)]
    delay_ms: Option<u64>,
    /// Fail with this message instead of acting.
    #[arg(long)]
    fail: Option<String>,
    /// Start a child process (`sleep 300`) first, to show that timeouts kill children too.
    #[arg(long)]
    spawn_child: bool,
}

/// Behaviour injected for one action through the state file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Inject {
    #[serde(default)]
    delay_ms: u64,
    fail: Option<String>,
    /// Applies to this many executions, then is removed; forever when absent.
    times: Option<u32>,
    #[serde(default)]
    spawn_child: bool,
}

/// One invocation, as recorded.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Execution {
    key: String,
    action: String,
    pid: u32,
    child_pid: Option<u32>,
    /// `started`, then `ok` or `failed` (an invocation killed at its timeout stays `started`).
    status: String,
    params: Value,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DnsName {
    #[serde(default)]
    a: Vec<Ipv4Addr>,
    #[serde(default)]
    srv: Vec<SrvRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    /// Service name -> `Running` / `Stopped`.
    services: BTreeMap<String, String>,
    /// Site name -> its XMPP federation route (`null`: none).
    #[serde(default)]
    sites: BTreeMap<String, Option<String>>,
    /// Which `Set-CsSite` parameter the simulated module offers.
    #[serde(default = "documented_parameter")]
    parameter: String,
    /// DNS names (FQDN) -> records, for hosts that stand in for Windows DNS.
    #[serde(default)]
    dns: BTreeMap<String, DnsName>,
    #[serde(default)]
    inject: BTreeMap<String, Inject>,
    #[serde(default)]
    executions: Vec<Execution>,
}

fn documented_parameter() -> String {
    "XmppFederationRoute".to_string()
}

impl Default for State {
    fn default() -> State {
        let services = ["REPLICA", "RTCDATAPROXY", "RTCMEDIARELAY", "RTCMRAUTH", "RTCSRV"]
            .into_iter()
            .map(|s| (s.to_string(), "Running".to_string()))
            .collect();
        State {
            services,
            sites: BTreeMap::new(),
            parameter: documented_parameter(),
            dns: BTreeMap::new(),
            inject: BTreeMap::new(),
            executions: Vec::new(),
        }
    }
}

/// Reads, changes and writes the state under an exclusive lock (atomic replace).
fn with_state<T>(path: &Path, change: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
    let lock_path = path.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    let mut state = match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let out = change(&mut state)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&state)?).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(out)
}

fn param<T: serde::de::DeserializeOwned>(params: &Map<String, Value>, name: &str) -> Result<T> {
    let v = params.get(name).ok_or_else(|| anyhow!("missing parameter {name}"))?;
    serde_json::from_value(v.clone()).map_err(|e| anyhow!("parameter {name} is invalid ({e}): {v}"))
}

fn services(state: &State) -> ServicesReport {
    ServicesReport {
        services: state
            .services
            .iter()
            .map(|(name, status)| ServiceState {
                name: name.clone(),
                status: status.clone(),
            })
            .collect(),
    }
}

/// Carries out the action on the state, like the cmdlets would, and returns the result line.
fn act(state: &mut State, action: &str, p: &Map<String, Value>) -> Result<String> {
    match action {
        "services.stop" | "services.start" => {
            let to = if action == "services.stop" {
                "Stopped"
            } else {
                "Running"
            };
            state.services.values_mut().for_each(|s| *s = to.to_string());
            Ok(json(&services(state)))
        }
        "services.status" => Ok(json(&services(state))),
        "route.get" => {
            let site: SiteName = param(p, "site")?;
            let route = state
                .sites
                .get(site.as_str())
                .ok_or_else(|| anyhow!("Get-CsSite: no site {site}"))?
                .clone();
            Ok(json(&RouteReport { site, route }))
        }
        "route.set" => {
            let site: SiteName = param(p, "site")?;
            let value: String = if state.parameter == "XmppFederationRoute" {
                param(p, "route")?
            } else {
                param(p, "edge_pool")?
            };
            let slot = state
                .sites
                .get_mut(site.as_str())
                .ok_or_else(|| anyhow!("Set-CsSite: no site {site}"))?;
            let before = slot.replace(value.clone());
            let after = slot.clone();
            Ok(json(&RouteChangeReport {
                site,
                parameter: state.parameter.clone(),
                value,
                before,
                after,
            }))
        }
        "dns.set_a" => {
            let name: Fqdn = param(p, "name")?;
            let address: Ipv4Addr = param(p, "address")?;
            let entry = state.dns.entry(name.to_string()).or_default();
            entry.a = vec![address];
            Ok(json(&DnsAReport {
                name,
                addresses: entry.a.clone(),
            }))
        }
        "dns.ensure_srv" => {
            let name: Fqdn = param(p, "name")?;
            let wanted = SrvRecord {
                target: param(p, "target")?,
                port: param(p, "port")?,
                priority: param(p, "priority")?,
                weight: param(p, "weight")?,
            };
            let entry = state.dns.entry(name.to_string()).or_default();
            let created = !entry.srv.contains(&wanted);
            if created {
                entry.srv.push(wanted);
            }
            Ok(json(&DnsSrvReport {
                name,
                records: entry.srv.clone(),
                created,
            }))
        }
        other => bail!("the simulator does not know the action {other}"),
    }
}

/// One result as one line of JSON.
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("results are plain data and always serialize")
}

/// Performs one action as the agent's `command` executor asks (parameters on stdin, the action
/// in `BATON_ACTION`) and prints its JSON result.
pub fn run(args: LyncSimArgs) -> Result<()> {
    let action = std::env::var("BATON_ACTION").context("BATON_ACTION is not set")?;
    let key = std::env::var("BATON_KEY").context("BATON_KEY is not set")?;
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the parameters on stdin")?;
    let params: Map<String, Value> =
        serde_json::from_str(&input).context("the parameters on stdin are not a JSON object")?;
    let pid = std::process::id();

    let inject = with_state(&args.state, |state| {
        let inject = state.inject.get(&action).cloned().unwrap_or_default();
        if let Some(entry) = state.inject.get_mut(&action) {
            match entry.times {
                Some(n) if n <= 1 => {
                    state.inject.remove(&action);
                }
                Some(n) => entry.times = Some(n - 1),
                None => {}
            }
        }
        state.executions.push(Execution {
            key: key.clone(),
            action: action.clone(),
            pid,
            child_pid: None,
            status: "started".to_string(),
            params: Value::Object(params.clone()),
        });
        Ok(inject)
    })?;
    let env_delay = std::env::var("BATON_SIM_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let delay = args.delay_ms.or(env_delay).unwrap_or(0).max(inject.delay_ms);
    let fail = args
        .fail
        .or_else(|| std::env::var("BATON_SIM_FAIL").ok())
        .or(inject.fail);
    let mark = |status: &str, child: Option<u32>| {
        with_state(&args.state, |state| {
            if let Some(e) = state.executions.iter_mut().rev().find(|e| e.pid == pid && e.key == key) {
                e.status = status.to_string();
                e.child_pid = e.child_pid.or(child);
            }
            Ok(())
        })
    };
    // Kept alive until the end: a killed simulator leaves it to the agent's tree kill.
    let _child = if args.spawn_child || inject.spawn_child {
        let child = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .context("starting the child process")?;
        mark("started", Some(child.id()))?;
        Some(child)
    } else {
        None
    };
    std::thread::sleep(Duration::from_millis(delay));
    if let Some(why) = fail {
        mark("failed", None)?;
        bail!("{why}");
    }
    let line = with_state(&args.state, |state| {
        let line = act(state, &action, &params)?;
        if let Some(e) = state.executions.iter_mut().rev().find(|e| e.pid == pid && e.key == key) {
            e.status = "ok".to_string();
        }
        Ok(line)
    });
    match line {
        Ok(line) => {
            println!("{line}");
            Ok(())
        }
        Err(e) => {
            mark("failed", None)?;
            Err(e)
        }
    }
}

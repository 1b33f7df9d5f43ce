//! The demo's local fleet: one agent process per inventory host on 127.0.0.1, with certificates
//! from `pki::init`, the `command` executor and the Lync simulator. Both the agent and the
//! simulator run as hidden subcommands of this very binary (`baton agent-process`,
//! `baton lync-sim`), so the demo goes over real mutual TLS with nothing else installed.
//!
//! The agents die with the demo (Linux: the parent-death signal); their journals and the
//! simulators' host state stay in the fleet's folder, next to the store.

use anyhow::{Context, bail};
use baton_actions::dispatcher::{AgentAddress, DispatcherConfig};
use baton_actions::simulated::FailureRule;
use baton_actions::{Fqdn, Inventory};
use baton_agent::ADDRESS_FILE;
use baton_agent::config::CommandAgentFiles;
use baton_pki::{self as pki, PkiFiles, PkiOptions};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Agent actions by host role.
const EDGE_ACTIONS: &[&str] = &["services.stop", "services.start", "services.status"];
const MANAGEMENT_ACTIONS: &[&str] = &["route.get", "route.set", "dns.set_a", "dns.ensure_srv"];

pub struct LocalFleet {
    pki: PkiFiles,
    addresses: BTreeMap<Fqdn, SocketAddr>,
    children: Vec<(Fqdn, Child)>,
    dir: PathBuf,
}

fn initial_state(inventory: &Inventory, host: &Fqdn, holder: Option<&str>, failures: &[FailureRule]) -> Value {
    let mut sites = serde_json::Map::new();
    if *host == inventory.management_host {
        for site in &inventory.sites {
            let route = inventory
                .pools
                .iter()
                .find(|p| p.site == *site && holder.is_some_and(|h| h.eq_ignore_ascii_case(p.name.as_str())))
                .map(|p| Value::String(format!("EdgeServer:{}", p.fqdn)))
                .unwrap_or(Value::Null);
            sites.insert(site.to_string(), route);
        }
    }
    let mut inject = serde_json::Map::new();
    for rule in failures {
        let here = rule
            .host
            .as_deref()
            .is_none_or(|h| h == host.as_str() || h == host.short());
        if here {
            let mut entry = json!({ "fail": format!("simulated failure of {} on {}", rule.action, host.short()) });
            if let Some(n) = rule.times {
                entry["times"] = json!(n);
            }
            inject.insert(rule.action.clone(), entry);
        }
    }
    json!({
        "services": {"REPLICA": "Running", "RTCDATAPROXY": "Running", "RTCMEDIARELAY": "Running", "RTCMRAUTH": "Running", "RTCSRV": "Running"},
        "sites": sites,
        "inject": inject,
    })
}

impl LocalFleet {
    /// Starts an agent for every host of the inventory, each action taking `delay`, and waits
    /// until each one listens. Host state survives in `dir` across demo restarts.
    pub fn start(
        dir: &Path,
        inventory: &Inventory,
        holder: Option<&str>,
        delay: Duration,
        failures: &[FailureRule],
    ) -> anyhow::Result<LocalFleet> {
        let exe = std::env::current_exe().context("finding the baton executable to run the agents")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let hosts: Vec<Fqdn> = inventory.agent_hosts().into_iter().cloned().collect();
        let pki_dir = dir.join("pki");
        let pki = if pki_dir.join("ca.crt").exists() {
            pki::PkiFiles::in_dir(&pki_dir, &hosts)
        } else {
            pki::init(
                &pki_dir,
                &hosts,
                &PkiOptions {
                    loopback: true,
                    bot_name: None,
                },
            )?
        };
        let mut fleet = LocalFleet {
            pki,
            addresses: BTreeMap::new(),
            children: Vec::new(),
            dir: dir.to_path_buf(),
        };
        for host in &hosts {
            fleet.spawn(&exe, inventory, host, holder, delay, failures)?;
        }
        let started = Instant::now();
        for host in &hosts {
            let file = dir.join(host.as_str()).join("state").join(ADDRESS_FILE);
            let address = loop {
                if let Some(a) = std::fs::read_to_string(&file)
                    .ok()
                    .and_then(|t| t.trim().parse::<SocketAddr>().ok())
                {
                    break a;
                }
                if let Some((_, child)) = fleet.children.iter_mut().find(|(h, _)| h == host)
                    && let Ok(Some(status)) = child.try_wait()
                {
                    bail!(
                        "the demo agent for {host} exited at start ({status}); see {}",
                        fleet.log(host).display()
                    );
                }
                if started.elapsed() > Duration::from_secs(20) {
                    bail!(
                        "the demo agent for {host} did not start within 20 s; see {}",
                        fleet.log(host).display()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            fleet.addresses.insert(host.clone(), address);
        }
        Ok(fleet)
    }

    fn log(&self, host: &Fqdn) -> PathBuf {
        self.dir.join(host.as_str()).join("agent.log")
    }

    fn spawn(
        &mut self,
        exe: &Path,
        inventory: &Inventory,
        host: &Fqdn,
        holder: Option<&str>,
        delay: Duration,
        failures: &[FailureRule],
    ) -> anyhow::Result<()> {
        let base = self.dir.join(host.as_str());
        let state_dir = base.join("state");
        std::fs::create_dir_all(&state_dir)?;
        let _ = std::fs::remove_file(state_dir.join(ADDRESS_FILE));
        let sim_state = base.join("host.json");
        // The host's state survives demo restarts; the failures to rehearse are this start's.
        let fresh = initial_state(inventory, host, holder, failures);
        let state = match std::fs::read(&sim_state) {
            Ok(bytes) => {
                let mut kept: Value =
                    serde_json::from_slice(&bytes).with_context(|| format!("reading {}", sim_state.display()))?;
                kept["inject"] = fresh["inject"].clone();
                kept
            }
            Err(_) => fresh,
        };
        std::fs::write(&sim_state, serde_json::to_vec_pretty(&state)?)?;
        let is_edge = inventory.pools.iter().any(|p| p.servers.contains(host));
        let mut actions: Vec<String> = Vec::new();
        if is_edge {
            actions.extend(EDGE_ACTIONS.iter().map(|s| s.to_string()));
        }
        if *host == inventory.management_host
            || matches!(&inventory.dns, baton_actions::DnsProvider::Agent { host: h, .. } if h == host)
        {
            actions.extend(MANAGEMENT_ACTIONS.iter().map(|s| s.to_string()));
        }
        let files = self
            .pki
            .agents
            .get(host)
            .with_context(|| format!("no certificate for {host}"))?;
        let argv = vec![
            exe.display().to_string(),
            "lync-sim".to_string(),
            "--state".to_string(),
            sim_state.display().to_string(),
            "--delay-ms".to_string(),
            delay.as_millis().to_string(),
        ];
        let text = CommandAgentFiles {
            host: host.as_str(),
            listen: "127.0.0.1:0",
            state_dir: &state_dir,
            actions: &actions,
            cert: &files.cert,
            key: &files.key,
            client_ca: &self.pki.ca_cert,
            pin_sha256: &[],
            pin_subjects: &[],
            timeouts: &[],
            argv: &argv,
        }
        .to_toml();
        let config = base.join("agent.toml");
        std::fs::write(&config, text)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(base.join("agent.log"))?;
        let mut cmd = Command::new(exe);
        cmd.args(["agent-process", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting the demo agent for {host}"))?;
        self.children.push((host.clone(), child));
        Ok(())
    }

    /// How the bot reaches this fleet.
    pub fn dispatcher_config(&self) -> DispatcherConfig {
        let agents = self
            .addresses
            .iter()
            .map(|(h, a)| (h.clone(), AgentAddress::Socket(*a)))
            .collect();
        DispatcherConfig::new(
            self.pki.ca_cert.clone(),
            self.pki.bot_cert.clone(),
            self.pki.bot_key.clone(),
            agents,
        )
    }
}

#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and only changes this child's own death signal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_: &mut Command) {}

impl Drop for LocalFleet {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

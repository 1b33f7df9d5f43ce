//! Harness for real `baton-agent` processes on 127.0.0.1: certificates made per fleet with
//! `baton_pki`, one agent per host with the `command` executor running `baton-lync-sim` on a
//! state file per host, readiness by health check, kill on drop.
//!
//! The binaries are taken from the folder of the test executable's profile
//! (`target/<profile>/`); build them with the tests:
//! `cargo test -p baton-agent -p baton-lync-sim -p baton-e2e` (or
//! `cargo build -p baton-agent -p baton-lync-sim --bins` first).

use anyhow::{Context, Result, anyhow, bail};
use baton_actions::Fqdn;
use baton_actions::dispatcher::{Dispatcher, DispatcherConfig};
use baton_pki::{self as pki, PkiFiles, PkiOptions};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `baton-agent` and `baton-lync-sim` executables of the current profile.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub agent: PathBuf,
    pub sim: PathBuf,
}

/// Finds the binaries next to the test executable: `target/<profile>/deps/<test>` ->
/// `target/<profile>/`.
pub fn binaries() -> Result<Binaries> {
    let exe = std::env::current_exe().context("finding the test executable")?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| anyhow!("the test executable has no folder"))?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let suffix = std::env::consts::EXE_SUFFIX;
    let bins = Binaries {
        agent: dir.join(format!("baton-agent{suffix}")),
        sim: dir.join(format!("baton-lync-sim{suffix}")),
    };
    for b in [&bins.agent, &bins.sim] {
        if !b.exists() {
            bail!(
                "{} is missing: build it with `cargo build -p baton-agent -p baton-lync-sim --bins` (or run `cargo test -p baton-agent -p baton-lync-sim -p baton-e2e`)",
                b.display()
            );
        }
    }
    Ok(bins)
}

/// How one agent is set up.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    pub host: Fqdn,
    pub actions: Vec<String>,
    /// Extra arguments for the simulator, for every action (e.g. `--delay-ms 1000`).
    pub sim_args: Vec<String>,
    /// `[timeouts]` entries of the agent's configuration.
    pub timeouts: Vec<(String, String)>,
    /// `tls.client_sha256` and `tls.client_subjects`.
    pub pin_sha256: Vec<String>,
    pub pin_subjects: Vec<String>,
    /// `tls.client_ca_dedicated`: true by default, the fleet's CA being made for it alone.
    pub ca_dedicated: bool,
    /// `tls.client_crls`.
    pub crls: Vec<PathBuf>,
    /// `[limits]`: `request_timeout` (humantime) and `max_connections`.
    pub request_timeout: Option<String>,
    pub max_connections: Option<usize>,
    /// The simulator's initial state (`None`: every service running, no sites; see [`sim_state`]).
    pub sim_state: Option<Value>,
}

impl AgentSpec {
    pub fn new(host: &str) -> AgentSpec {
        AgentSpec {
            host: Fqdn::parse(host).expect("harness hosts are valid FQDNs"),
            actions: baton_runbook::AGENT_ACTIONS.iter().map(|s| s.to_string()).collect(),
            sim_args: Vec::new(),
            timeouts: Vec::new(),
            pin_sha256: Vec::new(),
            pin_subjects: Vec::new(),
            ca_dedicated: true,
            crls: Vec::new(),
            request_timeout: None,
            max_connections: None,
            sim_state: None,
        }
    }
}

struct Running {
    child: Child,
    address: SocketAddr,
}

struct Agent {
    spec: AgentSpec,
    config: PathBuf,
    state_dir: PathBuf,
    sim_state: PathBuf,
    log: PathBuf,
    /// The port of the first start, reused on restarts so the address map stays valid.
    address: Option<SocketAddr>,
    running: Option<Running>,
}

/// A set of agents with their certificates, all in one temporary folder.
pub struct Fleet {
    dir: tempfile::TempDir,
    pub pki: PkiFiles,
    bins: Binaries,
    agents: BTreeMap<Fqdn, Agent>,
}

impl Fleet {
    /// Makes the certificates and the files of every agent; starts none.
    pub fn new(specs: Vec<AgentSpec>) -> Result<Fleet> {
        let bins = binaries()?;
        let dir = tempfile::tempdir().context("making the fleet folder")?;
        let hosts: Vec<Fqdn> = specs.iter().map(|s| s.host.clone()).collect();
        let pki = pki::init(
            &dir.path().join("pki"),
            &hosts,
            &PkiOptions {
                loopback: true,
                bot_name: None,
            },
        )?;
        let mut agents = BTreeMap::new();
        for spec in specs {
            let base = dir.path().join(spec.host.as_str());
            std::fs::create_dir_all(&base)?;
            let sim_state = base.join("sim.json");
            let initial = spec.sim_state.clone().unwrap_or_else(|| self::sim_state(&[]));
            std::fs::write(&sim_state, serde_json::to_vec_pretty(&initial)?)?;
            let agent = Agent {
                config: base.join("agent.toml"),
                state_dir: base.join("state"),
                log: base.join("agent.log"),
                sim_state,
                address: None,
                running: None,
                spec,
            };
            agents.insert(agent.spec.host.clone(), agent);
        }
        Ok(Fleet { dir, pki, bins, agents })
    }

    /// Makes a fleet of agents with every action enabled and starts them all.
    pub fn start_all(specs: Vec<AgentSpec>) -> Result<Fleet> {
        let mut fleet = Fleet::new(specs)?;
        let hosts: Vec<Fqdn> = fleet.agents.keys().cloned().collect();
        for host in &hosts {
            fleet.spawn(host)?;
        }
        for host in &hosts {
            fleet.wait_ready(host)?;
        }
        Ok(fleet)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The set-up of `host`, to change before its next start (pins need the fleet's certificates).
    pub fn spec_mut(&mut self, host: &Fqdn) -> Result<&mut AgentSpec> {
        Ok(&mut self.agent_mut(host)?.spec)
    }

    fn agent(&self, host: &Fqdn) -> Result<&Agent> {
        self.agents
            .get(host)
            .ok_or_else(|| anyhow!("no agent {host} in this fleet"))
    }

    fn agent_mut(&mut self, host: &Fqdn) -> Result<&mut Agent> {
        self.agents
            .get_mut(host)
            .ok_or_else(|| anyhow!("no agent {host} in this fleet"))
    }

    fn write_config(&self, a: &Agent) -> Result<()> {
        let files = self
            .pki
            .agents
            .get(&a.spec.host)
            .ok_or_else(|| anyhow!("no certificate for {}", a.spec.host))?;
        let listen = a
            .address
            .map(|s| s.to_string())
            .unwrap_or_else(|| "127.0.0.1:0".to_string());
        let mut argv = vec![
            self.bins.sim.display().to_string(),
            "--state".to_string(),
            a.sim_state.display().to_string(),
        ];
        argv.extend(a.spec.sim_args.iter().cloned());
        let text = baton_agent::config::CommandAgentFiles {
            host: a.spec.host.as_str(),
            listen: &listen,
            state_dir: &a.state_dir,
            actions: &a.spec.actions,
            cert: &files.cert,
            key: &files.key,
            client_ca: &self.pki.ca_cert,
            pin_sha256: &a.spec.pin_sha256,
            pin_subjects: &a.spec.pin_subjects,
            ca_dedicated: a.spec.ca_dedicated,
            crls: &a.spec.crls,
            timeouts: &a.spec.timeouts,
            request_timeout: a.spec.request_timeout.as_deref(),
            max_connections: a.spec.max_connections,
            argv: &argv,
        }
        .to_toml();
        std::fs::write(&a.config, text).with_context(|| format!("writing {}", a.config.display()))
    }

    /// Starts the agent process of `host` (it must not be running).
    pub fn spawn(&mut self, host: &Fqdn) -> Result<()> {
        let a = self.agent(host)?;
        if a.running.is_some() {
            bail!("{host} is already running");
        }
        self.write_config(a)?;
        let address_file = a.state_dir.join(baton_agent::ADDRESS_FILE);
        let _ = std::fs::remove_file(&address_file);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&a.log)?;
        let child = Command::new(&self.bins.agent)
            .args(["run", "--config"])
            .arg(&a.config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bins.agent.display()))?;
        let started = Instant::now();
        let mut child = child;
        let address = loop {
            if let Some(address) = std::fs::read_to_string(&address_file)
                .ok()
                .and_then(|t| t.trim().parse::<SocketAddr>().ok())
            {
                break address;
            }
            if let Some(status) = child.try_wait()? {
                bail!("agent {host} exited at start ({status}):\n{}", self.log(host));
            }
            if started.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                bail!("agent {host} did not start listening within 15 s:\n{}", self.log(host));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let a = self.agent_mut(host)?;
        a.address = Some(address);
        a.running = Some(Running { child, address });
        Ok(())
    }

    /// Waits until `host`'s agent answers its health check over mutual TLS.
    pub fn wait_ready(&self, host: &Fqdn) -> Result<()> {
        let dispatcher = Dispatcher::new(self.dispatcher_config())?;
        // A thread of its own, so that callers inside an async runtime can use this too.
        let health = std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<()> {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                    let started = Instant::now();
                    loop {
                        match runtime.block_on(dispatcher.health(host)) {
                            Ok(_) => return Ok(()),
                            Err(e) if started.elapsed() > Duration::from_secs(15) => {
                                bail!("agent {host} is not healthy after 15 s: {e}")
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(50)),
                        }
                    }
                })
                .join()
                .map_err(|_| anyhow!("the health check thread panicked"))?
        });
        health.map_err(|e| anyhow!("{e}\n{}", self.log(host)))
    }

    /// Starts `host` again on the same port and waits until it is healthy.
    pub fn restart(&mut self, host: &Fqdn) -> Result<()> {
        self.spawn(host)?;
        self.wait_ready(host)
    }

    /// Kills `host`'s agent at once (SIGKILL), as a crash would.
    pub fn kill(&mut self, host: &Fqdn) -> Result<()> {
        let a = self.agent_mut(host)?;
        if let Some(mut r) = a.running.take() {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
        Ok(())
    }

    /// Asks `host`'s agent to stop (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self, host: &Fqdn) -> Result<()> {
        let a = self.agent_mut(host)?;
        if let Some(mut r) = a.running.take() {
            let pid = i32::try_from(r.child.id()).context("a pid fits in an i32")?;
            // SAFETY: kill(2) on our own child's pid; it touches no memory.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while r.child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = r.child.kill();
                    let _ = r.child.wait();
                    bail!("agent {host} did not stop within 10 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// The address `host`'s agent listens (or last listened) on.
    pub fn address(&self, host: &Fqdn) -> Result<SocketAddr> {
        let a = self.agent(host)?;
        a.running
            .as_ref()
            .map(|r| r.address)
            .or(a.address)
            .ok_or_else(|| anyhow!("{host} was never started"))
    }

    /// The process id of `host`'s running agent.
    pub fn pid(&self, host: &Fqdn) -> Option<u32> {
        self.agents
            .get(host)
            .and_then(|a| a.running.as_ref())
            .map(|r| r.child.id())
    }

    /// A dispatcher configuration for every agent of the fleet, with short test times.
    pub fn dispatcher_config(&self) -> DispatcherConfig {
        let agents = self
            .agents
            .iter()
            .filter_map(|(h, a)| a.address.map(|s| (h.clone(), s.into())))
            .collect();
        let mut c = DispatcherConfig::new(
            self.pki.ca_cert.clone(),
            self.pki.bot_cert.clone(),
            self.pki.bot_key.clone(),
            agents,
        );
        c.connect_timeout = Duration::from_secs(2);
        c.request_timeout = Duration::from_secs(5);
        c.poll_wait = Duration::from_secs(2);
        c.attempts = 3;
        c.backoff = Duration::from_millis(100);
        c.max_backoff = Duration::from_millis(400);
        c
    }

    pub fn dispatcher(&self) -> Result<Dispatcher> {
        Ok(Dispatcher::new(self.dispatcher_config())?)
    }

    /// The simulator's state file of `host`.
    pub fn sim_path(&self, host: &Fqdn) -> Result<PathBuf> {
        Ok(self.agent(host)?.sim_state.clone())
    }

    /// The simulator's state of `host` (`null` before its first action).
    pub fn sim(&self, host: &Fqdn) -> Result<Value> {
        let path = self.sim_path(host)?;
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(serde_json::from_str(&text)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Null),
            Err(e) => Err(e.into()),
        }
    }

    /// Changes the simulator's state of `host` under the simulator's own lock (e.g. to inject a
    /// delay or a failure for the next executions).
    pub fn edit_sim(&self, host: &Fqdn, change: impl FnOnce(&mut Value)) -> Result<()> {
        let path = self.sim_path(host)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.with_extension("lock"))?;
        lock.lock()?;
        let mut state = self.sim(host)?;
        if state.is_null() {
            state = sim_state(&[]);
        }
        change(&mut state);
        std::fs::write(&path, serde_json::to_vec_pretty(&state)?)?;
        Ok(())
    }

    /// Every recorded simulator execution of `host`: (key, action, status).
    pub fn executions(&self, host: &Fqdn) -> Result<Vec<(String, String, String)>> {
        let state = self.sim(host)?;
        let list = state
            .get("executions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(list
            .iter()
            .map(|e| {
                let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                (s("key"), s("action"), s("status"))
            })
            .collect())
    }

    /// How many times the simulator of `host` was started for `key`.
    pub fn executions_of(&self, host: &Fqdn, key: &str) -> Result<usize> {
        Ok(self.executions(host)?.iter().filter(|(k, _, _)| k == key).count())
    }

    /// What `host`'s agent journal records for `key`: its state (`running` or `done`) and the
    /// process group of its executor, once started. Read straight from the SQLite file, as an
    /// operator would, while the agent runs.
    pub fn journal_row(&self, host: &Fqdn, key: &str) -> Result<Option<(String, Option<i64>)>> {
        let path = self.agent(host)?.state_dir.join("journal.sqlite");
        if !path.exists() {
            return Ok(None);
        }
        let conn = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let row = conn.query_row("SELECT state, process FROM calls WHERE key = ?1", [key], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
        });
        match row {
            Ok(r) => Ok(Some(r)),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until `host`'s journal records `key` as `running` with its executor's process
    /// group: the moment to kill something mid-action. Returns the process group.
    pub fn wait_running(&self, host: &Fqdn, key: &str, limit: Duration) -> Result<i64> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((state, Some(group))) = self.journal_row(host, key)?
                && state == "running"
            {
                return Ok(group);
            }
            if Instant::now() > deadline {
                bail!(
                    "{host}'s journal does not show {key} running within {limit:?}: {:?}",
                    self.journal_row(host, key)?
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `host`'s journal shows a key of `action` (an action id) running with its
    /// executor started, and returns that key: the moment to kill something mid-step when the
    /// key is the bot's to choose.
    pub fn wait_action_running(&self, host: &Fqdn, action: &str, limit: Duration) -> Result<String> {
        let path = self.agent(host)?.state_dir.join("journal.sqlite");
        let deadline = Instant::now() + limit;
        loop {
            if path.exists() {
                let conn = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                conn.busy_timeout(Duration::from_secs(5))?;
                let key = conn.query_row(
                    "SELECT key FROM calls WHERE state = 'running' AND kind = ?1 AND process IS NOT NULL",
                    [action],
                    |r| r.get::<_, String>(0),
                );
                match key {
                    Ok(key) => return Ok(key),
                    Err(rusqlite::Error::QueryReturnedNoRows) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if Instant::now() > deadline {
                bail!("{host}'s journal shows no {action} running within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every recorded simulator execution of `host` with its process ids.
    pub fn execution_pids(&self, host: &Fqdn) -> Result<Vec<SimExecution>> {
        let state = self.sim(host)?;
        let list = state
            .get("executions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let pid = |v: &Value| v.as_u64().and_then(|p| u32::try_from(p).ok());
        Ok(list
            .iter()
            .map(|e| SimExecution {
                key: e["key"].as_str().unwrap_or_default().to_string(),
                status: e["status"].as_str().unwrap_or_default().to_string(),
                pid: pid(&e["pid"]),
                child_pid: pid(&e["child_pid"]),
            })
            .collect())
    }

    /// Every call `host`'s agent journal records, with its times: for benchmarks that split
    /// where a step's time goes. Read straight from the SQLite file while the agent runs.
    pub fn call_times(&self, host: &Fqdn) -> Result<Vec<CallTimes>> {
        let path = self.agent(host)?.state_dir.join("journal.sqlite");
        let conn = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mut stmt = conn.prepare("SELECT key, started_ms, finished_ms, answer FROM calls")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (key, started_ms, finished_ms, answer) = row?;
            let process_ms = answer
                .and_then(|a| serde_json::from_str::<Value>(&a).ok())
                .and_then(|a| a["elapsed_ms"].as_u64());
            out.push(CallTimes {
                key,
                started_ms,
                finished_ms,
                process_ms,
            });
        }
        Ok(out)
    }

    /// The agent's log, for failure messages.
    pub fn log(&self, host: &Fqdn) -> String {
        self.agents
            .get(host)
            .and_then(|a| std::fs::read_to_string(&a.log).ok())
            .unwrap_or_default()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for a in self.agents.values_mut() {
            if let Some(mut r) = a.running.take() {
                let _ = r.child.kill();
                let _ = r.child.wait();
            }
        }
    }
}

/// One call as an agent's journal records it: when the agent recorded it as running and when
/// it recorded the answer (wall-clock milliseconds since the epoch), and the executor's time
/// from its start to its exit as the answer gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallTimes {
    pub key: String,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub process_ms: Option<u64>,
}

/// One start of the simulator as it recorded it: the key, `started` / `ok` / `failed`, its
/// process id and that of the child it started, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimExecution {
    pub key: String,
    pub status: String,
    pub pid: Option<u32>,
    pub child_pid: Option<u32>,
}

/// A simulator state with every service running and the given sites' routes.
pub fn sim_state(sites: &[(&str, Option<&str>)]) -> Value {
    let sites: serde_json::Map<String, Value> = sites
        .iter()
        .map(|(s, r)| {
            (
                s.to_string(),
                r.map(|r| Value::String(r.to_string())).unwrap_or(Value::Null),
            )
        })
        .collect();
    json!({
        "services": {"REPLICA": "Running", "RTCDATAPROXY": "Running", "RTCMEDIARELAY": "Running", "RTCMRAUTH": "Running", "RTCSRV": "Running"},
        "sites": sites,
    })
}

/// True while `pid` is a live process (a zombie counts as dead).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Waits up to `limit` for `pid` to be gone.
pub fn gone_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A raw HTTPS exchange, for tests that must send what the dispatcher never would: any client
/// certificate (or none) and any body. Returns the status and body, or the TLS/IO error.
pub async fn raw_request(
    address: SocketAddr,
    host: &Fqdn,
    ca: &Path,
    client: Option<(&Path, &Path)>,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::result::Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let roots = baton_tls::load_roots(ca).map_err(|e| e.to_string())?;
    let builder = rustls::ClientConfig::builder_with_provider(baton_tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let certs = baton_tls::load_certs(cert).map_err(|e| e.to_string())?;
            let key = baton_tls::load_key(key).map_err(|e| e.to_string())?;
            builder.with_client_auth_cert(certs, key).map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(host.as_str().to_string()).map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    // The server may answer (403, a TLS alert) and close before it reads everything: keep the
    // answer, or the read error that carries the alert, rather than the broken pipe.
    let exchange = async {
        let written = async {
            tls.write_all(&request).await?;
            tls.flush().await
        }
        .await;
        let mut out = Vec::new();
        let read = tls.read_to_end(&mut out).await;
        match (written, read) {
            (_, Err(e)) => Err(e),
            (Err(e), Ok(_)) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    };
    let out = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
        .map_err(|e| format!("exchange: {e}"))?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP answer: {}", text.chars().take(200).collect::<String>()))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

//! A real Prosody XMPP server for tests: Debian's `prosody` started on free loopback ports with a
//! generated configuration in a temporary directory, test users registered with `prosodyctl`, a
//! MUC component with a non-anonymous incident room, a semi-anonymous room and a members-only
//! room nobody may join, optionally SASL PLAIN only, and stop/start of the same instance (same
//! ports, same data) for outage tests. Killed on drop.
//!
//! The server counts as ready only when it answers a real XMPP stream on its client port and the
//! rooms exist (a small Prosody module written next to the config creates them at start and logs
//! a marker line): a listening port alone is not a ready server.

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The virtual host the test users live on.
pub const DOMAIN: &str = "contoso.test";
/// The MUC component.
pub const MUC_DOMAIN: &str = "conference.contoso.test";
/// A non-anonymous room: every occupant sees every occupant's real JID.
pub const INCIDENT_ROOM: &str = "incident@conference.contoso.test";
/// A semi-anonymous room: only moderators see real JIDs, and nobody is a moderator there unless
/// a test makes them one.
pub const SEMI_ANONYMOUS_ROOM: &str = "lobby@conference.contoso.test";
/// A members-only room nobody is a member of: it refuses every join (`registration-required`),
/// Baton's included. A mirror room that refuses the bot.
pub const MEMBERS_ONLY_ROOM: &str = "audit@conference.contoso.test";
/// The users registered on every instance.
pub const USERS: [&str; 5] = ["baton", "alice", "bob", "carol", "mallory"];

/// The marker the room module logs once the rooms exist.
const ROOMS_READY: &str = "baton-test-rooms ready";
/// How long a start may take before the harness gives up and shows the log.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a graceful stop may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `prosodyctl` call may take.
const PROSODYCTL_TIMEOUT: Duration = Duration::from_secs(20);

/// Options for [`Prosody::start_with`].
#[derive(Clone, Debug)]
pub struct ProsodyOptions {
    /// Stream management (XEP-0198): `Some(t)` loads `mod_smacks` with `t` as the hibernation
    /// time (kept short so killed clients do not linger as ghost occupants); `None` leaves it out.
    pub smacks_hibernation: Option<Duration>,
    /// Prosody's log level in the log file (`debug` shows every stanza).
    pub log_level: &'static str,
    /// A certificate and key (PEM files) for STARTTLS on the client port; `None`: plain TCP only.
    pub tls: Option<TlsFiles>,
    /// Messages the MUC rooms keep as history for new joiners.
    pub room_history: u32,
    /// Further loopback addresses the s2s port listens on (e.g. `127.0.0.2`, a second Edge
    /// pool's external address in full-stack tests).
    pub s2s_extra_interfaces: Vec<std::net::Ipv4Addr>,
    /// Offer only SASL PLAIN (the SCRAM mechanisms disabled): the password itself crosses the
    /// stream, base64-encoded, as with servers that check passwords against LDAP.
    pub sasl_plain_only: bool,
}

impl Default for ProsodyOptions {
    fn default() -> ProsodyOptions {
        ProsodyOptions {
            smacks_hibernation: Some(Duration::from_secs(3)),
            log_level: "info",
            tls: None,
            room_history: 20,
            s2s_extra_interfaces: Vec::new(),
            sasl_plain_only: false,
        }
    }
}

/// PEM files Prosody uses for STARTTLS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// A running (or stopped, restartable) Prosody instance.
pub struct Prosody {
    dir: tempfile::TempDir,
    config: PathBuf,
    c2s_port: u16,
    s2s_port: u16,
    child: Option<Child>,
    passwords: BTreeMap<String, SecretString>,
}

impl fmt::Debug for Prosody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prosody")
            .field("dir", &self.dir.path())
            .field("c2s_port", &self.c2s_port)
            .field("s2s_port", &self.s2s_port)
            .field("running", &self.child.is_some())
            .field("users", &self.passwords.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Prosody {
    /// Starts an instance with the default options and the users in [`USERS`].
    pub fn start() -> anyhow::Result<Prosody> {
        Prosody::start_with(ProsodyOptions::default())
    }

    /// Writes the configuration, registers the users, starts the server and waits until it
    /// answers a stream and its rooms exist.
    pub fn start_with(options: ProsodyOptions) -> anyhow::Result<Prosody> {
        let dir = tempfile::Builder::new()
            .prefix("baton-prosody-")
            .tempdir()
            .context("creating prosody tempdir")?;
        for sub in ["data", "plugins", "certs"] {
            std::fs::create_dir_all(dir.path().join(sub)).with_context(|| format!("creating {sub} dir"))?;
        }
        let c2s_port = free_port()?;
        let mut s2s_port = free_port()?;
        while s2s_port == c2s_port {
            s2s_port = free_port()?;
        }
        let config = dir.path().join("prosody.cfg.lua");
        std::fs::write(&config, config_text(dir.path(), c2s_port, s2s_port, &options))
            .context("writing prosody config")?;
        std::fs::write(
            dir.path().join("plugins").join("mod_baton_test_rooms.lua"),
            ROOMS_MODULE,
        )
        .context("writing room module")?;
        let mut prosody = Prosody {
            dir,
            config,
            c2s_port,
            s2s_port,
            child: None,
            passwords: BTreeMap::new(),
        };
        for user in USERS {
            let password = SecretString::from(format!("{user}-{}", unique_suffix()));
            prosody.register(user, password)?;
        }
        prosody.start_again()?;
        Ok(prosody)
    }

    /// Registers (or re-registers) a user with `prosodyctl`; works whether the server runs or not.
    pub fn register(&mut self, user: &str, password: SecretString) -> anyhow::Result<()> {
        if user.is_empty()
            || !user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bail!("test user names are letters, digits, - and _ (got {user:?})");
        }
        let mut child = Command::new("prosodyctl")
            .arg("--config")
            .arg(&self.config)
            .args(["register", user, DOMAIN, password.expose_secret()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running prosodyctl (is Debian's prosody installed?)")?;
        let status = wait_bounded(&mut child, PROSODYCTL_TIMEOUT)?;
        if !status.success() {
            let mut out = String::new();
            if let Some(mut s) = child.stdout.take() {
                let _ = s.read_to_string(&mut out);
            }
            if let Some(mut s) = child.stderr.take() {
                let _ = s.read_to_string(&mut out);
            }
            bail!("prosodyctl register {user} failed ({status}): {}", out.trim());
        }
        self.passwords.insert(user.to_string(), password);
        Ok(())
    }

    /// Starts the server (again) on the same ports with the same data, and waits until ready.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("prosody is already running");
        }
        let marker_count = count_marker(&self.log_path());
        let stdout = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("console.log"))
            .context("opening console log")?;
        let stderr = stdout.try_clone().context("cloning console log handle")?;
        let child = Command::new("prosody")
            .arg("--config")
            .arg(&self.config)
            .arg("-F")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .context("starting prosody (is Debian's prosody installed?)")?;
        self.child = Some(child);
        if let Err(e) = self.wait_ready(marker_count) {
            self.kill();
            return Err(e.context(format!(
                "prosody did not become ready; log tail:\n{}",
                self.log_tail(40)
            )));
        }
        Ok(())
    }

    fn wait_ready(&mut self, marker_count_before: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_error = String::from("not tried yet");
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("polling prosody")?
            {
                bail!("prosody exited during start ({status})");
            }
            if count_marker(&self.log_path()) > marker_count_before {
                match probe_stream(self.c2s_addr(), DOMAIN, "jabber:client", Duration::from_secs(2)) {
                    Ok(()) => return Ok(()),
                    Err(e) => last_error = format!("{e:#}"),
                }
            } else {
                last_error = "rooms not created yet".to_string();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("not ready after {START_TIMEOUT:?}: {last_error}")
    }

    /// Stops the server gracefully (SIGTERM, then SIGKILL after a bounded wait). Clients see
    /// their streams closed. The data stays; [`Prosody::start_again`] brings it back.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = libc::pid_t::try_from(child.id()).context("prosody pid out of range")?;
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped) has no memory
        // effects; at worst it fails with ESRCH.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        match wait_bounded(&mut child, STOP_TIMEOUT) {
            Ok(_) => Ok(()),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e.context("prosody ignored SIGTERM and was killed"))
            }
        }
    }

    /// Kills the server at once (SIGKILL): the kernel closes its sockets without XMPP goodbyes.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// The client-to-server address (plain TCP; STARTTLS when started with [`TlsFiles`]).
    pub fn c2s_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.c2s_port))
    }

    /// The server-to-server address, a real XMPP federation endpoint for probes.
    pub fn s2s_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.s2s_port))
    }

    pub fn domain(&self) -> &'static str {
        DOMAIN
    }

    /// `alice` -> `alice@contoso.test`.
    pub fn jid(&self, user: &str) -> String {
        format!("{user}@{DOMAIN}")
    }

    /// The password of a registered user.
    pub fn password(&self, user: &str) -> anyhow::Result<SecretString> {
        self.passwords
            .get(user)
            .cloned()
            .with_context(|| format!("no registered test user {user:?}"))
    }

    /// The directory holding the config, data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("prosody.log")
    }

    /// The last `lines` lines of Prosody's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Opens a stream to `addr` for `domain` and waits for the server's stream features: the proof
/// that an XMPP server (not just a socket) is there. `ns` is `jabber:client` or `jabber:server`.
pub fn probe_stream(addr: SocketAddr, domain: &str, ns: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut tcp = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connecting to {addr}"))?;
    tcp.set_write_timeout(Some(timeout)).context("setting write timeout")?;
    let header = format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' xmlns='{ns}' \
         xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    );
    tcp.write_all(header.as_bytes()).context("sending stream header")?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "no stream features within {timeout:?}; got {:?}",
                String::from_utf8_lossy(&seen)
            );
        }
        tcp.set_read_timeout(Some(left)).context("setting read timeout")?;
        let n = tcp.read(&mut buf).context("reading stream reply")?;
        if n == 0 {
            bail!("server closed the stream; got {:?}", String::from_utf8_lossy(&seen));
        }
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if text.contains("<stream:error") {
            bail!("stream error: {text}");
        }
        if text.contains("</stream:features>") || text.contains("<stream:features/>") {
            let _ = tcp.write_all(b"</stream:stream>");
            return Ok(());
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a free port")?;
    Ok(listener.local_addr().context("reading bound port")?.port())
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:x}", std::process::id())
}

fn count_marker(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|t| t.matches(ROOMS_READY).count())
        .unwrap_or(0)
}

fn wait_bounded(child: &mut Child, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("waiting for child")? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            bail!("still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lua string literal for a path (Prosody's config is Lua).
fn lua_str(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

fn config_text(dir: &Path, c2s: u16, s2s: u16, options: &ProsodyOptions) -> String {
    let mut modules = vec!["roster", "saslauth", "disco", "ping", "posix", "limits", "dialback"];
    let mut extra = String::new();
    if let Some(t) = options.smacks_hibernation {
        modules.push("smacks");
        extra.push_str(&format!("smacks_hibernation_time = {}\n", t.as_secs().max(1)));
    }
    if let Some(files) = &options.tls {
        modules.push("tls");
        extra.push_str(&format!(
            "ssl = {{ certificate = {}; key = {}; }}\n",
            lua_str(&files.certificate),
            lua_str(&files.key)
        ));
    }
    if options.sasl_plain_only {
        extra.push_str(
            "disable_sasl_mechanisms = { \"SCRAM-SHA-1\", \"SCRAM-SHA-1-PLUS\", \"SCRAM-SHA-256\", \"DIGEST-MD5\" }\n",
        );
    }
    let modules: String = modules.iter().map(|m| format!("\"{m}\"; ")).collect();
    format!(
        r#"-- Generated by baton-e2e for one test run.
run_as_root = true
daemonize = false
pidfile = {pidfile}
data_path = {data}
plugin_paths = {{ {plugins} }}
certificates = {certs}
log = {{ {{ levels = {{ min = "{level}" }}, to = "file", filename = {log} }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
c2s_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{ {s2s} }}
s2s_interfaces = {{ "127.0.0.1"{s2s_extra} }}
c2s_direct_tls_ports = {{ }}
s2s_direct_tls_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
network_settings = {{ nagle = false }}
c2s_require_encryption = false
s2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
storage = "internal"
limits = {{ c2s = {{ rate = "100mb/s" }} }}
modules_enabled = {{ {modules}}}
{extra}
VirtualHost "{domain}"

Component "{muc}" "muc"
    modules_enabled = {{ "baton_test_rooms" }}
    muc_room_locking = false
    muc_tombstones = false
    restrict_room_creation = false
    baton_test_rooms = {{
        {{ jid = "{incident}"; whois = "anyone"; history = {history} }};
        {{ jid = "{semi}"; whois = "moderators"; history = {history} }};
        {{ jid = "{members_only}"; whois = "anyone"; history = {history}; members_only = true }};
    }}
"#,
        pidfile = lua_str(&dir.join("prosody.pid")),
        data = lua_str(&dir.join("data")),
        plugins = lua_str(&dir.join("plugins")),
        certs = lua_str(&dir.join("certs")),
        log = lua_str(&dir.join("prosody.log")),
        level = options.log_level,
        modules = modules,
        extra = extra,
        domain = DOMAIN,
        muc = MUC_DOMAIN,
        incident = INCIDENT_ROOM,
        semi = SEMI_ANONYMOUS_ROOM,
        members_only = MEMBERS_ONLY_ROOM,
        history = options.room_history,
        s2s_extra = options
            .s2s_extra_interfaces
            .iter()
            .map(|a| format!(", \"{a}\""))
            .collect::<String>(),
    )
}

/// A Prosody module for the MUC component: creates the configured rooms (persistent, with the
/// configured `whois`), re-applies the settings after a restart, and logs [`ROOMS_READY`].
const ROOMS_MODULE: &str = r#"-- mod_baton_test_rooms: the test rooms, created at start.
local mod_muc = module:depends("muc");
local rooms = module:get_option("baton_test_rooms", {});

local function ensure_rooms()
    for _, spec in ipairs(rooms) do
        local room = mod_muc.get_room_from_jid(spec.jid);
        if not room then
            room = mod_muc.create_room(spec.jid);
        end
        room:set_persistent(true);
        room:set_whois(spec.whois);
        room:set_historylength(spec.history);
        room:set_members_only(spec.members_only and true or false);
        room:save(true);
    end
    module:log("info", "baton-test-rooms ready");
end

if prosody.start_time then
    ensure_rooms();
else
    module:hook_global("server-started", ensure_rooms);
end
"#;

/// A test CA and a certificate for `contoso.test` signed by it, as PEM files: Prosody's STARTTLS
/// material, and the CA that probes and clients trust.
pub struct TestPki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    /// The certificate and key as Prosody takes them.
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            certificate: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// Makes a test CA `name` and a certificate for [`DOMAIN`] in `dir`.
pub fn test_pki(dir: &Path, name: &str) -> anyhow::Result<TestPki> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("Baton test CA {name}"));
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec![DOMAIN.to_string()])?.signed_by(&key, &issuer)?;
    let pki = TestPki {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&pki.ca, ca_cert.pem())?;
    std::fs::write(&pki.cert, cert.pem())?;
    std::fs::write(&pki.key, key.serialize_pem())?;
    Ok(pki)
}

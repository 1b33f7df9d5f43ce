//! A real BIND9 for tests: Debian's `named` in the foreground on a free 127.0.0.1 port, serving
//! the zone `contoso.test` with a fresh TSIG key whose update policy lets it change only the two
//! federation records, plus a `dig` helper to read the zone the way an operator would.
//!
//! Everything (configuration, zone file, journal, pid and session files, named's log) lives in a
//! temporary directory. `named` runs as the current user (no `-u`): as root it simply keeps root,
//! which the tests need no less than any other user, and the directory is writable either way.
//! The process is killed when the [`Bind`] is dropped.

use anyhow::{Context, Result, bail};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The zone every test server serves.
pub const ZONE: &str = "contoso.test";
/// The name of the TSIG key allowed to update the federation records.
pub const KEY_NAME: &str = "baton";
/// The federation host whose A record the runbook moves.
pub const FEDERATION_HOST: &str = "xmpp.contoso.test";
/// The SRV owner name the runbook ensures.
pub const SRV_NAME: &str = "_xmpp-server._tcp.contoso.test";

const NAMED: &str = "/usr/sbin/named";
const START_LIMIT: Duration = Duration::from_secs(15);

/// A running `named`. Dropping it kills the process and removes its directory.
pub struct Bind {
    child: Child,
    port: u16,
    secret: String,
    dir: tempfile::TempDir,
}

impl Bind {
    /// Starts `named` with the zone's base records (SOA, NS, `ns1`) and `extra`, zone-file lines
    /// relative to `contoso.test.` (e.g. `xmpp 300 IN A 127.0.0.10`).
    pub fn start(extra: &str) -> Result<Bind> {
        let secret = generate_secret()?;
        let mut last_error = None;
        // A free port can be taken by someone else between the probe and named's bind; try again.
        for _ in 0..3 {
            let port = free_port()?;
            let dir = tempfile::Builder::new()
                .prefix("baton-bind-")
                .tempdir()
                .context("creating named's directory")?;
            write_config(dir.path(), port, &secret, extra)?;
            match launch(dir, port, &secret) {
                Ok(bind) => return Ok(bind),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("named did not start")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The base64 secret of the key `baton`, as `tsig-keygen` printed it.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Runs `dig @127.0.0.1 -p PORT ARGS…` with short time limits and returns its output.
    pub fn dig(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("dig")
            .arg("@127.0.0.1")
            .args(["-p", &self.port.to_string(), "+time=2", "+tries=1"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running dig (Debian package bind9-dnsutils)")?;
        if !out.status.success() {
            bail!("dig {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The records of `name` and `rtype` in dig's `+short` form, sorted.
    pub fn records(&self, name: &str, rtype: &str) -> Result<Vec<String>> {
        let out = self.dig(&["+short", name, rtype])?;
        let mut lines: Vec<String> = out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        lines.sort();
        Ok(lines)
    }

    /// The zone's SOA serial: it moves whenever an update changes the zone.
    pub fn serial(&self) -> Result<u32> {
        let soa = self.records(ZONE, "SOA")?;
        let line = soa.first().context("the zone has no SOA")?;
        let serial = line.split_whitespace().nth(2).context("the SOA answer has no serial")?;
        serial
            .parse()
            .with_context(|| format!("the SOA serial '{serial}' is not a number"))
    }

    /// What `named` has logged so far (for diagnostics in failing tests).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh HMAC-SHA256 secret from BIND's own `tsig-keygen`.
fn generate_secret() -> Result<String> {
    let out = Command::new("tsig-keygen")
        .args(["-a", "hmac-sha256", KEY_NAME])
        .stdin(Stdio::null())
        .output()
        .context("running tsig-keygen (Debian package bind9)")?;
    if !out.status.success() {
        bail!("tsig-keygen failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let secret = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("secret \"")
                .and_then(|rest| rest.strip_suffix("\";"))
        })
        .context("tsig-keygen printed no secret line")?;
    Ok(secret.to_string())
}

/// A port free for both TCP and UDP on 127.0.0.1 right now.
fn free_port() -> Result<u16> {
    for _ in 0..20 {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a probe socket")?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("found no port free for both TCP and UDP on 127.0.0.1")
}

fn write_config(dir: &Path, port: u16, secret: &str, extra: &str) -> Result<()> {
    let d = dir.display();
    let conf = format!(
        r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
controls {{ }};
key "{KEY_NAME}" {{
    algorithm hmac-sha256;
    secret "{secret}";
}};
zone "{ZONE}" {{
    type primary;
    file "{d}/{ZONE}.db";
    update-policy {{
        grant {KEY_NAME} name {FEDERATION_HOST}. A;
        grant {KEY_NAME} name {SRV_NAME}. SRV;
    }};
}};
"#
    );
    let zone = format!(
        "$ORIGIN {ZONE}.\n$TTL 300\n\
         @ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 300\n\
         @ IN NS ns1.{ZONE}.\n\
         ns1 IN A 127.0.0.1\n\
         {extra}\n"
    );
    fs::write(dir.join("named.conf"), conf).context("writing named.conf")?;
    fs::write(dir.join(format!("{ZONE}.db")), zone).context("writing the zone file")?;
    Ok(())
}

/// Starts `named -g` and waits until it answers the zone's SOA, or gives up with its log.
fn launch(dir: tempfile::TempDir, port: u16, secret: &str) -> Result<Bind> {
    let log = fs::File::create(dir.path().join("named.log")).context("creating named.log")?;
    let child = Command::new(NAMED)
        .args(["-g", "-n", "1", "-c"])
        .arg(dir.path().join("named.conf"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("sharing named.log")?)
        .stderr(log)
        .spawn()
        .context("starting /usr/sbin/named (Debian package bind9)")?;
    let mut bind = Bind {
        child,
        port,
        secret: secret.to_string(),
        dir,
    };
    let started = Instant::now();
    while started.elapsed() < START_LIMIT {
        if let Some(status) = bind.child.try_wait().context("checking on named")? {
            bail!("named exited ({status}) before answering:\n{}", bind.log());
        }
        if bind.records(ZONE, "SOA").is_ok_and(|soa| !soa.is_empty()) {
            return Ok(bind);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "named did not answer within {}s:\n{}",
        START_LIMIT.as_secs(),
        bind.log()
    )
}

//! A throwaway PostgreSQL cluster for a test: Debian's `postgresql` binaries
//! (`/usr/lib/postgresql/<version>/bin`), `initdb` into a temporary folder and `postgres`
//! listening on 127.0.0.1 and a free port only, with a password (SCRAM) for TCP clients. As root
//! (CI) the server runs as the `postgres` system user, since PostgreSQL refuses to run as root.
//! Stopped (fast shutdown) and removed when dropped; every wait is bounded.

use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The password of the cluster's superuser `postgres` (a test value, never a real secret).
pub const PASSWORD: &str = "baton-test-pw-7f3c";

/// A running cluster.
pub struct Postgres {
    child: Option<Child>,
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    owner: Option<(u32, u32)>,
    /// The CA of the server's certificate, when it speaks TLS.
    ca: Option<PathBuf>,
}

/// The newest installed server's `bin` folder.
fn server_bin() -> Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (Debian: apt-get install postgresql)")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, b)| b)
        .context("no /usr/lib/postgresql/<version>/bin/postgres")
}

/// The `postgres` system user's ids, when this process runs as root.
fn owner() -> Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres").expect("a fixed name without NUL");
    // SAFETY: getpwnam reads a static record; the fields are copied out at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!("running as root and there is no `postgres` user to run PostgreSQL as (install the postgresql package)");
    }
    // SAFETY: pw is non-null and points to the record getpwnam returned.
    let ids = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some(ids))
}

fn chown(path: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Postgres {
    /// Initialises and starts a cluster; returns once it accepts connections.
    pub fn start() -> Result<Postgres> {
        Postgres::start_with(false)
    }

    /// A cluster that also speaks TLS, with a certificate for 127.0.0.1 from a test CA
    /// ([`Postgres::ca`]).
    pub fn start_tls() -> Result<Postgres> {
        Postgres::start_with(true)
    }

    fn start_with(tls: bool) -> Result<Postgres> {
        let bin = server_bin()?;
        let owner = owner()?;
        let dir = tempfile::Builder::new().prefix("baton-pg-").tempdir()?;
        chown(dir.path(), owner)?;
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, PASSWORD)?;
        chown(&pwfile, owner)?;
        let data = dir.path().join("data");
        let out = Self::command(&bin.join("initdb"), owner, dir.path())
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let ca = if tls {
            Some(Self::certificates(dir.path(), owner)?)
        } else {
            None
        };
        let mut pg = Postgres {
            child: None,
            bin,
            dir,
            port: free_port()?,
            owner,
            ca,
        };
        pg.start_server()?;
        Ok(pg)
    }

    /// A test CA and the server's certificate for 127.0.0.1 and localhost; the key readable
    /// by the server's user only, as PostgreSQL demands.
    fn certificates(dir: &Path, owner: Option<(u32, u32)>) -> Result<PathBuf> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        use std::os::unix::fs::PermissionsExt;
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Baton test CA postgres");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate()?;
        let cert =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?.signed_by(&key, &issuer)?;
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, ca_cert.pem())?;
        std::fs::write(dir.join("server.crt"), cert.pem())?;
        std::fs::write(dir.join("server.key"), key.serialize_pem())?;
        std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600))?;
        chown(&dir.join("server.crt"), owner)?;
        chown(&dir.join("server.key"), owner)?;
        Ok(ca)
    }

    /// The CA of the server's certificate (clusters started with [`Postgres::start_tls`]).
    pub fn ca(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    fn command(program: &Path, owner: Option<(u32, u32)>, cwd: &Path) -> Command {
        let mut c = Command::new(program);
        c.current_dir(cwd).env_remove("PGPASSWORD");
        if let Some((uid, gid)) = owner {
            c.uid(uid).gid(gid);
        }
        c
    }

    fn start_server(&mut self) -> Result<()> {
        let log = std::fs::File::create(self.dir.path().join("server.log"))?;
        chown(&self.dir.path().join("server.log"), self.owner)?;
        let mut command = Self::command(&self.bin.join("postgres"), self.owner, self.dir.path());
        if self.ca.is_some() {
            let d = self.dir.path();
            command
                .args(["-c", "ssl=on"])
                .args(["-c", &format!("ssl_cert_file={}", d.join("server.crt").display())])
                .args(["-c", &format!("ssl_key_file={}", d.join("server.key").display())]);
        }
        let child = command
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-c", "listen_addresses=127.0.0.1", "-p", &self.port.to_string()])
            .args(["-c", &format!("unix_socket_directories={}", self.dir.path().display())])
            .args(["-c", "max_connections=50", "-c", "shared_buffers=16MB"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting postgres")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!("postgres exited ({status}): {}", self.log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() && self.client("postgres").is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("postgres did not accept connections within 30 s: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A file holding [`PASSWORD`] (for `password = { file = … }`).
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("pwfile")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` for user `postgres`, without the password (Baton's `[store]`
    /// form); the password is [`PASSWORD`].
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}?connect_timeout=5", self.port)
    }

    /// A client of database `db` (blocking; call it from a plain thread, not inside a tokio
    /// runtime).
    pub fn client(&self, db: &str) -> Result<postgres::Client> {
        let mut c: postgres::Config = self.url(db).parse()?;
        c.password(PASSWORD);
        Ok(c.connect(postgres::NoTls)?)
    }

    /// Creates database `name` (a fresh store for one test).
    pub fn create_db(&self, name: &str) -> Result<()> {
        anyhow::ensure!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "database names in tests are [a-z0-9_]"
        );
        self.client("postgres")?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .with_context(|| format!("creating database {name}"))
    }

    /// Stops the server (fast shutdown: sessions are ended), waiting at most 30 s.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: kill with a pid we own and a valid signal.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("postgres did not stop within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts the server again on the same data and port.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start_server()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.stop().is_err()
            && let Some(mut c) = self.child.take()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The journal's chain for stores the tests open directly: a fixed key (a test fixture, not a
/// secret) and no checkpoint file.
pub fn chain() -> baton::store::Chain {
    let key = baton::store::ChainKey::new(secrecy::SecretString::from(
        "baton-e2e fixture key for PostgreSQL tests",
    ))
    .expect("the fixture key is long enough");
    baton::store::Chain::new(key, None, false)
}

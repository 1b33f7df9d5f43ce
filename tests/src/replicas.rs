//! Two `baton run` replicas of one configuration on one PostgreSQL store, for the
//! high-availability tests and the takeover benchmark: a configuration per replica (the same
//! file with its own `replica` name), and readings of the shared store (who leads, at which
//! epoch, the journal's kinds) taken with a plain client beside the replicas. Every wait is
//! bounded.

use crate::baton::Baton;
use crate::postgres::Postgres;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The `[store]` section for database `db` of `pg`, its password read from the cluster's
/// password file.
pub fn store_section(pg: &Postgres, db: &str, lease: &str) -> String {
    format!(
        "[store]\npostgres = \"{}\"\npassword = {{ file = {:?} }}\nlease = \"{lease}\"\n",
        pg.url(db),
        pg.password_file().display().to_string()
    )
}

/// Writes `<config stem>-<replica>.toml` beside `config`: the same file, naming the replica.
pub fn replica_config(config: &Path, replica: &str) -> Result<PathBuf> {
    let text = std::fs::read_to_string(config)?;
    anyhow::ensure!(text.contains("[store]\n"), "the configuration has no [store] section");
    let text = text.replacen("[store]\n", &format!("[store]\nreplica = \"{replica}\"\n"), 1);
    let stem = config.file_stem().and_then(|s| s.to_str()).unwrap_or("baton");
    let path = config.with_file_name(format!("{stem}-{replica}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Starts a replica that also serves `/healthz`, `/readyz` and `/metrics` on `listen`.
pub fn start_replica_listening(config: &Path, replica: &str, listen: std::net::SocketAddr) -> Result<Baton> {
    let path = replica_config(config, replica)?;
    let mut text = std::fs::read_to_string(&path)?;
    anyhow::ensure!(
        !text.contains("[server]"),
        "the configuration has a [server] section already"
    );
    text.push_str(&format!(
        "\n[server]\nlisten = \"{listen}\"\ncheck_interval = \"500ms\"\n"
    ));
    std::fs::write(&path, text)?;
    Baton::start(&["run", "--config", path.to_str().context("UTF-8 path")?])
}

/// Starts `baton run --config <replica's file>`.
pub fn start_replica(config: &Path, replica: &str) -> Result<Baton> {
    let path = replica_config(config, replica)?;
    Baton::start(&["run", "--config", path.to_str().context("UTF-8 path")?])
}

/// A reader of the shared store (blocking client; call from the test's thread).
pub struct Shared {
    client: postgres::Client,
}

impl Shared {
    pub fn connect(pg: &Postgres, db: &str) -> Result<Shared> {
        Ok(Shared { client: pg.client(db)? })
    }

    /// The leader row: (epoch, holder).
    pub fn leader(&mut self) -> Result<(i64, Option<String>)> {
        let row = self.client.query_one(
            "SELECT l.epoch, s.holder FROM baton_leader l, baton_lease s WHERE l.id = 1 AND s.id = 1",
            &[],
        )?;
        Ok((row.get(0), row.get(1)))
    }

    /// Whether the replica has a session on the database (it stands by or leads).
    pub fn connected(&mut self, replica: &str) -> Result<bool> {
        let n: i64 = self
            .client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1",
                &[&format!("baton {replica} %")],
            )?
            .get(0);
        Ok(n > 0)
    }

    /// The journal's kinds in order.
    pub fn kinds(&mut self) -> Result<Vec<String>> {
        Ok(self
            .client
            .query("SELECT kind FROM events ORDER BY seq", &[])?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// How many events of `kind` the journal holds.
    pub fn count(&mut self, kind: &str) -> Result<usize> {
        let n: i64 = self
            .client
            .query_one("SELECT count(*) FROM events WHERE kind = $1", &[&kind])?
            .get(0);
        Ok(n as usize)
    }

    /// Outbox rows not yet recorded delivered.
    pub fn undelivered(&mut self) -> Result<usize> {
        let n: i64 = self
            .client
            .query_one("SELECT count(*) FROM outbox WHERE delivered_at IS NULL", &[])?
            .get(0);
        Ok(n as usize)
    }

    /// Waits until `f` holds on the store, polling every 10 ms.
    pub fn wait(
        &mut self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut(&mut Shared) -> Result<bool>,
    ) -> Result<Duration> {
        let started = Instant::now();
        loop {
            // A reading that fails (the database restarting) counts as "not yet".
            if f(self).unwrap_or(false) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                bail!("{what}: not within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `replica` leads (the leader row names it).
    pub fn wait_leader(&mut self, replica: &str, limit: Duration) -> Result<Duration> {
        self.wait(&format!("{replica} leads"), limit, |s| {
            Ok(s.leader()?.1.as_deref() == Some(replica))
        })
    }
}

/// Whether process `pid` has an established TCP connection to `port` on loopback (IPv4): a
/// standby has none to the chat server, the active replica has one.
pub fn connected_to(pid: u32, port: u16) -> Result<bool> {
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let remote_port = u16::from_str_radix(f.get(2)?.rsplit(':').next()?, 16).ok()?;
            // State 01 is ESTABLISHED.
            (remote_port == port && *f.get(3)? == "01").then(|| f.get(9).map(|s| s.to_string()))?
        })
        .collect();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = std::fs::read_link(fd?.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']'))
            && inodes.iter().any(|i| i == inode)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

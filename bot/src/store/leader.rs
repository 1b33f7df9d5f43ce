//! Which replica acts: leadership over a PostgreSQL store, on a thread and a session of its own.
//!
//! The active replica holds a session-level advisory lock ([`LEADER_LOCK`]) and a lease (the
//! `baton_lease` row's `expires_at`, renewed every third of the lease). Taking over bumps the
//! epoch in `baton_leader`; the store's writes are fenced by that epoch in the database
//! (see `postgres.rs`). The lock frees when the leader's session ends (process killed,
//! connection cut: keepalives and the TCP user timeout bound that to about a lease); a frozen
//! leader keeps its session, so the standby also watches the lease, and when it has lapsed ends
//! the holder's sessions (`pg_terminate_backend`, found by their application name) and takes the
//! lock. A leader that cannot renew within its lease stops acting by its own clock as well,
//! before the standby may take over.
//!
//! The role is published on a `watch` channel ([`Leadership`]): the daemon runs only while
//! leading, and readiness can report standby or leader from the same channel.

use super::StoreError;
use super::postgres::{LEADER_LOCK, PgSettings, migrate};
use postgres::Client;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// This replica's part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not connected to the database yet, or lost it.
    Disconnected,
    /// Connected, another replica (named when known) leads.
    Standby { leader: Option<String> },
    /// This replica acts for `epoch` until `until` (its own monotonic clock), unless renewed.
    Leader { epoch: i64, until: Instant },
}

impl Role {
    /// `leader`, `standby` or `disconnected`, for logs, metrics and readiness.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Disconnected => "disconnected",
            Role::Standby { .. } => "standby",
            Role::Leader { .. } => "leader",
        }
    }

    /// Whether this replica may act now: it leads and its lease has not run out by its clock.
    pub fn acting(&self, now: Instant) -> bool {
        matches!(self, Role::Leader { until, .. } if now < *until)
    }
}

/// The handle on the elector: the role as it changes, and the means to resign or stop.
#[derive(Clone)]
pub struct Leadership {
    rx: watch::Receiver<Role>,
    control: Arc<Control>,
    session: String,
}

struct Control {
    stop: AtomicBool,
    /// The epoch to give up (0: none); a resignation of an earlier term is ignored.
    resign: AtomicI64,
}

/// The elector's thread; stopping it releases the lock so the other replica takes over at once.
pub struct Elector {
    thread: Option<JoinHandle<()>>,
    control: Arc<Control>,
}

impl Elector {
    /// Releases leadership (if held) and waits for the thread.
    pub fn stop(mut self) {
        self.control.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Leadership {
    /// The role now.
    pub fn role(&self) -> Role {
        self.rx.borrow().clone()
    }

    /// A receiver of the role, for readiness and metrics.
    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.rx.clone()
    }

    /// The application name of this replica's sessions (the store's session uses it too, so a
    /// successor can end them all).
    pub fn session(&self) -> &str {
        &self.session
    }

    /// Whether this replica may act now.
    pub fn acting(&self) -> bool {
        self.rx.borrow().acting(Instant::now())
    }

    /// Waits until this replica leads with an epoch newer than `after`; returns the epoch.
    /// `None` when the elector has stopped.
    pub async fn leading(&mut self, after: i64) -> Option<i64> {
        loop {
            if let Role::Leader { epoch, .. } = *self.rx.borrow_and_update()
                && epoch > after
            {
                return Some(epoch);
            }
            self.rx.changed().await.ok()?;
        }
    }

    /// Waits until this replica may no longer act: it was told it lost, or its lease ran out by
    /// its own clock (it was frozen, or the database did not answer the renewals).
    pub async fn lost(&mut self) {
        loop {
            let until = match *self.rx.borrow_and_update() {
                Role::Leader { until, .. } => until,
                _ => return,
            };
            tokio::select! {
                changed = self.rx.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(until)) => {
                    if !self.acting() {
                        return;
                    }
                }
            }
        }
    }

    /// Gives up the term of `epoch` (the daemon failed while leading): the elector releases
    /// the lock and stays standby for one lease, so the other replica can take over. Nothing
    /// happens if that term has already ended.
    pub fn resign(&self, epoch: i64) {
        self.control.resign.store(epoch, Ordering::SeqCst);
    }
}

/// Starts the elector for this replica.
pub fn spawn(settings: PgSettings) -> std::io::Result<(Leadership, Elector)> {
    let nonce = format!("{:08x}", rand_u32());
    let session = format!("baton {} {nonce}", settings.replica);
    let (tx, rx) = watch::channel(Role::Disconnected);
    let control = Arc::new(Control {
        stop: AtomicBool::new(false),
        resign: AtomicI64::new(0),
    });
    let elector = Campaign {
        settings,
        session: session.clone(),
        tx,
        control: control.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("baton-leader".into())
        .spawn(move || elector.run())?;
    Ok((
        Leadership {
            rx,
            control: control.clone(),
            session,
        },
        Elector {
            thread: Some(thread),
            control,
        },
    ))
}

/// A number different in each process (the time and the process id, hashed).
fn rand_u32() -> u32 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(std::process::id().to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(now.as_nanos().to_le_bytes());
    let d = h.finalize();
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

struct Campaign {
    settings: PgSettings,
    session: String,
    tx: watch::Sender<Role>,
    control: Arc<Control>,
}

/// How a leadership term ended.
enum Ended {
    Stopped,
    Lost(String),
}

impl Campaign {
    fn stopping(&self) -> bool {
        self.control.stop.load(Ordering::SeqCst)
    }

    /// How often the standby tries the lock and reads the lease.
    fn poll(&self) -> Duration {
        (self.settings.lease / 6).clamp(Duration::from_millis(100), Duration::from_millis(500))
    }

    fn set(&self, role: Role) {
        self.tx.send_if_modified(|r| {
            let changed = *r != role;
            *r = role;
            changed
        });
    }

    fn run(self) {
        let target = self.settings.target();
        let replica = self.settings.replica.clone();
        let mut warned = false;
        while !self.stopping() {
            let mut client = match self.settings.connect(&self.session) {
                Ok(c) => c,
                Err(e) => {
                    if !warned {
                        tracing::warn!(store = %target, error = %e, "cannot reach the store; standing by until it answers");
                        warned = true;
                    }
                    self.set(Role::Disconnected);
                    std::thread::sleep(self.poll());
                    continue;
                }
            };
            warned = false;
            if let Err(e) = prepare(&mut client, &target) {
                tracing::warn!(store = %target, error = %e, "cannot prepare the store's session");
                self.set(Role::Disconnected);
                std::thread::sleep(self.poll());
                continue;
            }
            let epoch = match self.stand_by(&mut client) {
                Ok(Some(epoch)) => epoch,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(store = %target, error = %e, "lost the store while standing by");
                    self.set(Role::Disconnected);
                    continue;
                }
            };
            tracing::info!(replica = %replica, epoch, "leading: this replica is the active one");
            match self.lead(&mut client, epoch) {
                Ended::Stopped => {
                    let _ = client.execute(
                        "UPDATE baton_lease SET expires_at = now(), holder = NULL, session = NULL WHERE id = 1 AND session = $1",
                        &[&self.session],
                    );
                    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&LEADER_LOCK]);
                    tracing::info!(replica = %replica, epoch, "stopped leading (shutdown); the lease is released");
                    self.set(Role::Disconnected);
                    break;
                }
                Ended::Lost(why) => {
                    tracing::warn!(replica = %replica, epoch, why = %why, "stepped down: this replica no longer acts");
                    self.set(Role::Disconnected);
                    // Ending the session frees the lock, if the server still counts it held.
                    drop(client);
                    if self.control.resign.load(Ordering::SeqCst) == epoch {
                        std::thread::sleep(self.settings.lease);
                    }
                }
            }
        }
        self.set(Role::Disconnected);
    }

    /// Waits for the lock; ends a lapsed leader's sessions. Returns the new epoch, or `None`
    /// when stopped.
    fn stand_by(&self, client: &mut Client) -> Result<Option<i64>, postgres::Error> {
        let mut last_holder: Option<String> = None;
        loop {
            if self.stopping() {
                return Ok(None);
            }
            let got: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])?
                .get(0);
            if got {
                let sent = Instant::now();
                let row = take_epoch(client, &self.settings, &self.session);
                match row {
                    Ok(row) => {
                        let epoch: i64 = row.get(0);
                        self.set(Role::Leader {
                            epoch,
                            until: sent + self.settings.lease,
                        });
                        return Ok(Some(epoch));
                    }
                    Err(e) => {
                        // Blocked by a write of the old leader (lock_timeout): let go, retry.
                        let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&LEADER_LOCK]);
                        tracing::info!(error = %e, "could not take the epoch yet; retrying");
                        std::thread::sleep(self.poll());
                        continue;
                    }
                }
            }
            let lease = client.query_one(
                "SELECT holder, session, coalesce(expires_at < now(), true) FROM baton_lease WHERE id = 1",
                &[],
            )?;
            let (holder, session, lapsed): (Option<String>, Option<String>, bool) =
                (lease.get(0), lease.get(1), lease.get(2));
            if holder != last_holder {
                tracing::info!(
                    leader = holder.as_deref().unwrap_or("(none)"),
                    "standby: another replica leads"
                );
                last_holder = holder.clone();
            }
            self.set(Role::Standby { leader: holder.clone() });
            if lapsed && let Some(session) = session.filter(|s| *s != self.session) {
                let ended: i64 = client
                    .query_one(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                        &[&session],
                    )?
                    .get(0);
                if ended > 0 {
                    tracing::warn!(
                        leader = holder.as_deref().unwrap_or("?"),
                        sessions = ended,
                        "the leader's lease lapsed while it held the lock (frozen?): its sessions were ended"
                    );
                }
            }
            std::thread::sleep(self.poll());
        }
    }

    /// Renews the lease every third of it until stopped or lost.
    fn lead(&self, client: &mut Client, epoch: i64) -> Ended {
        let lease = self.settings.lease;
        let mut until = Instant::now() + lease;
        loop {
            let next = Instant::now() + lease / 3;
            while Instant::now() < next {
                if self.stopping() {
                    return Ended::Stopped;
                }
                if self.control.resign.load(Ordering::SeqCst) == epoch {
                    return Ended::Lost("resigned: the daemon could not act".into());
                }
                std::thread::sleep(Duration::from_millis(50).min(lease / 3));
            }
            let sent = Instant::now();
            if sent >= until {
                return Ended::Lost("the lease ran out before it could be renewed (paused?)".into());
            }
            let renewed = client.execute(
                "UPDATE baton_lease SET expires_at = now() + make_interval(secs => $3::FLOAT8)
                 WHERE id = 1 AND session = $2 AND (SELECT epoch FROM baton_leader WHERE id = 1) = $1",
                &[&epoch, &self.session, &lease.as_secs_f64()],
            );
            match renewed {
                Ok(1) => {
                    until = sent + lease;
                    self.set(Role::Leader { epoch, until });
                }
                Ok(_) => return Ended::Lost("another replica took over (the epoch moved on)".into()),
                Err(e) => return Ended::Lost(format!("the store did not answer the renewal: {e}")),
            }
        }
    }
}

/// Bumps the epoch (waiting, at most the session's lock timeout, for a write that holds the
/// old one) and writes this replica's lease, in one transaction.
fn take_epoch(client: &mut Client, settings: &PgSettings, session: &str) -> Result<postgres::Row, postgres::Error> {
    let mut tx = client.transaction()?;
    let row = tx.query_one(
        "UPDATE baton_leader SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch",
        &[],
    )?;
    tx.execute(
        "UPDATE baton_lease SET holder = $1, session = $2, since = now(),
             expires_at = now() + make_interval(secs => $3::FLOAT8) WHERE id = 1",
        &[&settings.replica, &session, &settings.lease.as_secs_f64()],
    )?;
    tx.commit()?;
    Ok(row)
}

/// Applies the schema and bounds how long the elector waits on a row lock (a write of a
/// leader being deposed).
fn prepare(client: &mut Client, target: &str) -> Result<(), StoreError> {
    migrate(client, target)?;
    client
        .batch_execute("SET lock_timeout = '1s'; SET statement_timeout = '5s'")
        .map_err(|source| StoreError::Postgres {
            target: target.to_string(),
            source,
        })
}

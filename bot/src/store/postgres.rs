//! The PostgreSQL store, for replicas in two sites sharing one database: the same journal (append
//! only, enforced by triggers; chained under the journal's key exactly as in SQLite, so a journal
//! copies across and verifies the same; both replicas hold the key), `runs` projection, outbox, cards and handled ids, one transaction per
//! batch, schema migrations versioned and applied at start.
//!
//! Fencing lives in the database: every write statement on the store's tables runs a trigger
//! that compares the session's `baton.epoch` with the epoch in `baton_leader` (under a share lock
//! on that row) and refuses the write when they differ. A replica that was deposed while paused
//! or cut off therefore commits nothing, whatever it believes about itself.

use super::chain::{Chain, ChainRow, FORGED, GENESIS, refuse_forged};
use super::sqlite::{millis, new_store_id, platform_of};
use super::{Adopted, Batch, ChainReport, Handled, JournalRow, RawEvent, Store, StoreError};
use crate::chat::{MessageRef, RoomRef};
use crate::event::{Event, Recorded};
use crate::outbox::Queued;
use crate::run::RunId;
use chrono::{DateTime, Utc};
use postgres::error::SqlState;
use postgres::{Client, NoTls};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// The advisory lock that makes one replica the active one (`pg_try_advisory_lock`).
pub const LEADER_LOCK: i64 = 0x6261_746f_6e01;
/// The advisory lock that serialises schema migrations between replicas starting together.
const MIGRATION_LOCK: i64 = 0x6261_746f_6e02;
/// The SQLSTATE the fencing trigger raises.
const FENCED: &str = "BF001";

/// `[store]` with `postgres = "…"`: how to reach the database and this replica's name.
#[derive(Clone)]
pub struct PgSettings {
    /// `postgres://user@host:port/db?…`, without a password (checked by [`PgSettings::check_url`]).
    pub url: String,
    pub password: Option<SecretString>,
    /// This replica's name, shown to the other replica and in the rooms.
    pub replica: String,
    /// How long the active replica's lease lasts without renewal (renewed every third of it).
    pub lease: Duration,
    pub connect_timeout: Duration,
    /// TLS to the server, verified with this CA (PEM), host name included; `None` connects in
    /// plain text.
    pub ca: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("replica", &self.replica)
            .field("lease", &self.lease)
            .field("ca", &self.ca)
            .finish()
    }
}

impl PgSettings {
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(3);

    /// Refuses what is not a `postgres://` URL, or one that carries a password (it belongs in
    /// `password = { env | file }`). The message never repeats the URL.
    pub fn check_url(url: &str) -> Result<(), String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("must be a URL like postgres://baton@db1.contoso.com:5432/baton".into());
        }
        let config: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| format!("is not a PostgreSQL URL: {e}"))?;
        if config.get_password().is_some() {
            return Err(
                "holds a password: take it out of the URL and name it in store.password = { env = \"NAME\" } or { file = \"PATH\" }"
                    .into(),
            );
        }
        if config.get_hosts().is_empty() {
            return Err("names no host".into());
        }
        Ok(())
    }

    /// The client's configuration for a session named `application_name` (the other replica
    /// ends a lapsed leader's sessions by that name). Keepalives and the TCP user timeout are
    /// short so that a cut connection fails within about a lease instead of the kernel's
    /// default two hours.
    pub fn client_config(&self, application_name: &str) -> Result<postgres::Config, StoreError> {
        let mut config: postgres::Config = self.url.parse().map_err(|source| StoreError::Postgres {
            target: self.target(),
            source,
        })?;
        if let Some(pw) = &self.password {
            config.password(pw.expose_secret().as_bytes());
        }
        // The kernel counts keepalive times in whole seconds (0 is refused).
        let probe = Duration::from_secs((self.lease.as_secs() / 3).max(1));
        config
            .application_name(application_name)
            .connect_timeout(self.connect_timeout)
            .keepalives(true)
            .keepalives_idle(probe)
            .keepalives_interval(probe)
            .keepalives_retries(2)
            .tcp_user_timeout(self.lease);
        Ok(config)
    }

    /// The database as errors and logs name it: hosts, ports and database, never the password.
    pub fn target(&self) -> String {
        match self.url.parse::<postgres::Config>() {
            Ok(c) => {
                let hosts: Vec<String> = c
                    .get_hosts()
                    .iter()
                    .map(|h| match h {
                        postgres::config::Host::Tcp(name) => name.clone(),
                        #[cfg(unix)]
                        postgres::config::Host::Unix(path) => path.display().to_string(),
                    })
                    .collect();
                let ports: Vec<String> = c.get_ports().iter().map(u16::to_string).collect();
                format!(
                    "postgres {}:{}/{}",
                    hosts.join(","),
                    if ports.is_empty() {
                        "5432".into()
                    } else {
                        ports.join(",")
                    },
                    c.get_dbname().unwrap_or("")
                )
            }
            Err(_) => "postgres (unparsable URL)".into(),
        }
    }

    /// Connects a session named `application_name` (over TLS when a CA is configured).
    pub fn connect(&self, application_name: &str) -> Result<Client, StoreError> {
        let mut config = self.client_config(application_name)?;
        let err = |source| StoreError::Postgres {
            target: self.target(),
            source,
        };
        match &self.ca {
            None => config.connect(NoTls).map_err(err),
            Some(ca) => {
                config.ssl_mode(postgres::config::SslMode::Require);
                config.connect(self.tls(ca)?).map_err(err)
            }
        }
    }

    /// A TLS connector that trusts only the certificates of `ca` (PEM).
    fn tls(&self, ca: &std::path::Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let bad = |why: String| StoreError::Tls {
            target: self.target(),
            why,
        };
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(|e| bad(format!("cannot read the CA file {}: {e}", ca.display())))?;
        for cert in certs {
            let cert = cert.map_err(|e| bad(format!("the CA file {} is not PEM: {e}", ca.display())))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("a certificate in {} is not usable: {e}", ca.display())))?;
        }
        if roots.is_empty() {
            return Err(bad(format!("the CA file {} holds no certificate", ca.display())));
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }
}

/// The schema, one entry per version; applied in order at start, each in its transaction.
const MIGRATIONS: &[&str] = &[
    // 1: the journal, the projection, the outbox, cards, handled ids, the leader row and fencing.
    r#"
    CREATE TABLE baton_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE baton_leader (
        id INT PRIMARY KEY CHECK (id = 1),
        epoch BIGINT NOT NULL
    );
    INSERT INTO baton_leader (id, epoch) VALUES (1, 0);
    -- The lease lives in a row of its own: renewing it never waits for a write holding the
    -- epoch's share lock, while bumping the epoch does.
    CREATE TABLE baton_lease (
        id INT PRIMARY KEY CHECK (id = 1),
        holder TEXT,
        session TEXT,
        since TIMESTAMPTZ,
        expires_at TIMESTAMPTZ
    );
    INSERT INTO baton_lease (id) VALUES (1);
    CREATE TABLE events (
        seq BIGINT PRIMARY KEY,
        at TEXT NOT NULL,
        run BIGINT,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX events_run ON events (run);
    CREATE TABLE runs (
        id BIGINT PRIMARY KEY,
        phase TEXT NOT NULL,
        requester TEXT NOT NULL,
        from_pool TEXT,
        to_pool TEXT NOT NULL,
        requested_at TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE TABLE outbox (
        id BIGSERIAL PRIMARY KEY,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        platform TEXT NOT NULL,
        room TEXT NOT NULL,
        run BIGINT,
        text TEXT NOT NULL,
        card TEXT,
        lane TEXT NOT NULL DEFAULT 'line',
        body TEXT,
        delivered_at TIMESTAMPTZ,
        dropped TEXT
    );
    CREATE INDEX outbox_pending ON outbox (id) WHERE delivered_at IS NULL;
    CREATE TABLE cards (
        platform TEXT NOT NULL,
        room TEXT NOT NULL,
        run BIGINT NOT NULL,
        reference TEXT NOT NULL,
        PRIMARY KEY (platform, room, run)
    );
    CREATE TABLE handled (
        platform TEXT NOT NULL,
        room TEXT NOT NULL,
        sender TEXT NOT NULL,
        message_id TEXT NOT NULL,
        at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (platform, room, sender, message_id)
    );
    CREATE INDEX handled_at ON handled (at);

    CREATE FUNCTION baton_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the journal is append-only';
    END $$;
    CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
        FOR EACH ROW EXECUTE FUNCTION baton_append_only();
    CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
        FOR EACH STATEMENT EXECUTE FUNCTION baton_append_only();

    CREATE FUNCTION baton_fence() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        mine TEXT := nullif(current_setting('baton.epoch', true), '');
        current BIGINT;
    BEGIN
        SELECT epoch INTO current FROM baton_leader WHERE id = 1 FOR SHARE;
        IF mine IS NULL OR mine::BIGINT <> current THEN
            RAISE EXCEPTION USING ERRCODE = 'BF001',
                MESSAGE = format('fenced: this session writes for epoch %s, the store is at epoch %s',
                                 coalesce(mine, 'none'), current);
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER events_fence BEFORE INSERT OR UPDATE OR DELETE ON events
        FOR EACH STATEMENT EXECUTE FUNCTION baton_fence();
    CREATE TRIGGER runs_fence BEFORE INSERT OR UPDATE OR DELETE ON runs
        FOR EACH STATEMENT EXECUTE FUNCTION baton_fence();
    CREATE TRIGGER outbox_fence BEFORE INSERT OR UPDATE OR DELETE ON outbox
        FOR EACH STATEMENT EXECUTE FUNCTION baton_fence();
    CREATE TRIGGER cards_fence BEFORE INSERT OR UPDATE OR DELETE ON cards
        FOR EACH STATEMENT EXECUTE FUNCTION baton_fence();
    CREATE TRIGGER handled_fence BEFORE INSERT OR UPDATE OR DELETE ON handled
        FOR EACH STATEMENT EXECUTE FUNCTION baton_fence();
    "#,
    // 2: outbox rows carry a MAC under the journal's key (rows from before have none and are
    // not posted until `baton store seal` adopts them).
    "ALTER TABLE outbox ADD COLUMN mac TEXT;",
];

/// Brings the schema up to date (under an advisory lock, so two replicas starting together
/// migrate once) and returns the store's id.
pub fn migrate(client: &mut Client, target: &str) -> Result<String, StoreError> {
    let err = |source| StoreError::Postgres {
        target: target.to_string(),
        source,
    };
    let mut tx = client.transaction().map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(err)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS baton_schema (version INT NOT NULL)")
        .map_err(err)?;
    let found: i64 = tx
        .query_one("SELECT coalesce(max(version), 0)::BIGINT FROM baton_schema", &[])
        .map_err(err)?
        .get(0);
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(StoreError::Schema {
            path: target.to_string(),
            found,
            known,
        });
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql).map_err(err)?;
        tx.execute("INSERT INTO baton_schema (version) VALUES ($1)", &[&(n as i32 + 1)])
            .map_err(err)?;
        tracing::info!(store = %target, version = n + 1, "store schema migrated");
    }
    let candidate = new_store_id(std::path::Path::new(target));
    tx.execute(
        "INSERT INTO baton_meta (key, value) VALUES ('store_id', $1) ON CONFLICT (key) DO NOTHING",
        &[&candidate],
    )
    .map_err(err)?;
    let id: String = tx
        .query_one("SELECT value FROM baton_meta WHERE key = 'store_id'", &[])
        .map_err(err)?
        .get(0);
    tx.commit().map_err(err)?;
    Ok(id)
}

/// The store on PostgreSQL. Writes succeed only while the session's epoch is the store's.
pub struct PostgresStore {
    client: Client,
    target: String,
    store_id: String,
    epoch: Option<i64>,
    chain: Chain,
}

impl PostgresStore {
    /// Connects a session named `application_name`, migrates the schema and reads the store id.
    /// The session writes nothing until [`PostgresStore::fence`] gives it an epoch.
    pub fn open(settings: &PgSettings, application_name: &str, chain: Chain) -> Result<PostgresStore, StoreError> {
        let target = settings.target();
        let mut client = settings.connect(application_name)?;
        let store_id = migrate(&mut client, &target)?;
        Ok(PostgresStore {
            client,
            target,
            store_id,
            epoch: None,
            chain,
        })
    }

    /// Writes from now on for `epoch` (the leader's, from [`super::leader`]). The database
    /// refuses every write once the store's epoch has moved on.
    pub fn fence(&mut self, epoch: i64) -> Result<(), StoreError> {
        let epoch_text = epoch.to_string();
        self.client
            .execute("SELECT set_config('baton.epoch', $1, false)", &[&epoch_text])
            .map_err(self.err())?;
        self.epoch = Some(epoch);
        // A new store is sealed by the first replica that leads it.
        if self.is_empty()? && self.chain_seal()?.is_none() {
            let seal = self.chain.seal(&self.store_id, 0, GENESIS);
            self.client
                .execute(
                    "INSERT INTO baton_meta (key, value) VALUES ('chain_seal', $1) ON CONFLICT (key) DO NOTHING",
                    &[&seal],
                )
                .map_err(self.err())?;
        }
        Ok(())
    }

    pub fn epoch(&self) -> Option<i64> {
        self.epoch
    }

    /// The database as logs name it.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs raw SQL on the store's session (tests prove what the database refuses).
    #[doc(hidden)]
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Whether the journal holds no event (a migration's target must be empty).
    pub fn is_empty(&mut self) -> Result<bool, StoreError> {
        let n: i64 = self
            .client
            .query_one("SELECT count(*) FROM events", &[])
            .map_err(self.err())?
            .get(0);
        Ok(n == 0)
    }

    fn err(&self) -> impl Fn(postgres::Error) -> StoreError + '_ {
        move |source| classify(&self.target, source)
    }

    /// Every undelivered outbox row with its MAC as stored, oldest first.
    fn outbox_rows(&mut self) -> Result<Vec<(Queued, Option<String>)>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT id, platform, room, run, text, card, lane, body, mac FROM outbox WHERE delivered_at IS NULL ORDER BY id",
                &[],
            )
            .map_err(self.err())?;
        Ok(rows
            .iter()
            .map(|r| {
                let row = super::stored_row(r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7));
                let q = Queued { id: r.get(0), row };
                (q, r.get::<_, Option<String>>(8))
            })
            .collect())
    }

    /// The seal and the rows, read in one snapshot.
    fn seal_and_rows(&mut self) -> Result<(Option<String>, Vec<ChainRow>), StoreError> {
        let target = self.target.clone();
        let err = |source| classify(&target, source);
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(err)?;
        let seal: Option<String> = tx
            .query_opt("SELECT value FROM baton_meta WHERE key = 'chain_seal'", &[])
            .map_err(err)?
            .map(|r| r.get(0));
        let rows = tx
            .query(
                "SELECT seq, at, kind, body, prev_hash, hash FROM events ORDER BY seq",
                &[],
            )
            .map_err(err)?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
            .collect();
        tx.commit().map_err(err)?;
        Ok((seal, rows))
    }
}

/// A refusal by the fencing trigger becomes [`StoreError::Fenced`].
fn classify(target: &str, source: postgres::Error) -> StoreError {
    if source.code() == Some(&SqlState::from_code(FENCED)) {
        let why = source
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| "fenced".into());
        return StoreError::Fenced { why };
    }
    StoreError::Postgres {
        target: target.to_string(),
        source,
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("store rows are plain data and always serialize")
}

impl Store for PostgresStore {
    fn settle(&mut self) {
        self.chain.settle();
    }

    fn store_id(&self) -> &str {
        &self.store_id
    }

    fn load(&mut self) -> Result<Vec<Recorded>, StoreError> {
        let rows = self
            .client
            .query("SELECT seq, at, body FROM events ORDER BY seq", &[])
            .map_err(self.err())?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (seq, at, body): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
            let at = DateTime::parse_from_rfc3339(&at)
                .map_err(|e| StoreError::Corrupt {
                    seq,
                    why: format!("bad time: {e}"),
                })?
                .with_timezone(&Utc);
            let event: Event = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                seq,
                why: e.to_string(),
            })?;
            out.push(Recorded { at, event });
        }
        Ok(out)
    }

    fn commit(&mut self, batch: &Batch) -> Result<Vec<Queued>, StoreError> {
        let target = self.target.clone();
        let err = |source| classify(&target, source);
        let mut tx = self.client.transaction().map_err(err)?;
        let mut queued = Vec::with_capacity(batch.rows.len());
        let mut head = None;
        if !batch.events.is_empty() {
            // The row lock on the last event keeps two writers from forking the chain (only
            // one can hold the epoch, but the lock costs nothing and states the rule).
            let last = tx
                .query_opt("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1 FOR UPDATE", &[])
                .map_err(err)?;
            let (mut seq, mut prev): (i64, String) =
                last.map(|r| (r.get(0), r.get(1))).unwrap_or((0, GENESIS.to_string()));
            let insert = tx
                .prepare(
                    "INSERT INTO events (seq, at, run, kind, body, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .map_err(err)?;
            for r in &batch.events {
                seq += 1;
                let at = millis(r.at);
                let body = json(&r.event);
                let kind = r.event.kind();
                let hash = self.chain.link(&prev, seq, &at, kind, &body);
                let run = r.event.run().map(|id| id.0 as i64);
                tx.execute(&insert, &[&seq, &at, &run, &kind, &body, &prev, &hash])
                    .map_err(err)?;
                prev = hash;
            }
            head = Some((seq, prev));
        }
        if !batch.rows.is_empty() {
            let insert = tx
                .prepare(
                    "INSERT INTO outbox (platform, room, run, text, card, lane, body) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                )
                .map_err(err)?;
            for row in &batch.rows {
                let card = row.card.as_ref().map(json);
                let body = json(&row.body);
                let run = row.run.map(|id| id.0 as i64);
                let id: i64 = tx
                    .query_one(
                        &insert,
                        &[
                            &row.room.platform.as_str(),
                            &row.room.id,
                            &run,
                            &row.body.plain(),
                            &card,
                            &row.lane.as_str(),
                            &body,
                        ],
                    )
                    .map_err(err)?
                    .get(0);
                let mac = self.chain.outbox_mac(&self.store_id, id, row);
                tx.execute("UPDATE outbox SET mac = $2 WHERE id = $1", &[&id, &mac])
                    .map_err(err)?;
                queued.push(Queued { id, row: row.clone() });
            }
        }
        for r in &batch.runs {
            tx.execute(
                "INSERT INTO runs (id, phase, requester, from_pool, to_pool, requested_at, finished_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (id) DO UPDATE SET phase = excluded.phase, finished_at = excluded.finished_at,
                     from_pool = excluded.from_pool, to_pool = excluded.to_pool",
                &[
                    &(r.id.0 as i64),
                    &r.phase,
                    &r.requester,
                    &r.from_pool,
                    &r.to_pool,
                    &r.requested_at,
                    &r.finished_at,
                ],
            )
            .map_err(err)?;
        }
        if let Some(h) = &batch.handled {
            tx.execute(
                "INSERT INTO handled (platform, room, sender, message_id) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&h.room.platform.as_str(), &h.room.id, &h.sender, &h.message_id],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        if let Some((seq, hash)) = head {
            self.chain.anchor_later(&self.store_id, seq, &hash, batch.ends_a_run());
        }
        Ok(queued)
    }

    fn handled_since(&mut self, since: DateTime<Utc>) -> Result<Vec<Handled>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT platform, room, sender, message_id FROM handled WHERE at >= $1 ORDER BY at",
                &[&since],
            )
            .map_err(self.err())?;
        Ok(rows
            .iter()
            .map(|r| Handled {
                room: RoomRef::new(platform_of(r.get(0)), r.get::<_, String>(1)),
                sender: r.get(2),
                message_id: r.get(3),
            })
            .collect())
    }

    fn outbox(&mut self) -> Result<Vec<Queued>, StoreError> {
        let (genuine, forged): (Vec<_>, Vec<_>) = self
            .outbox_rows()?
            .into_iter()
            .partition(|(q, mac)| self.chain.outbox_genuine(&self.store_id, q.id, &q.row, mac.as_deref()));
        for (q, _) in forged {
            refuse_forged(&q);
            self.delivered(q.id, Some(FORGED))?;
        }
        Ok(genuine.into_iter().map(|(q, _)| q).collect())
    }

    fn forged(&mut self) -> Result<Vec<Queued>, StoreError> {
        Ok(self
            .outbox_rows()?
            .into_iter()
            .filter(|(q, mac)| !self.chain.outbox_genuine(&self.store_id, q.id, &q.row, mac.as_deref()))
            .map(|(q, _)| q)
            .collect())
    }

    fn outbox_len(&mut self) -> Result<usize, StoreError> {
        let n: i64 = self
            .client
            .query_one("SELECT count(*) FROM outbox WHERE delivered_at IS NULL", &[])
            .map_err(self.err())?
            .get(0);
        Ok(n as usize)
    }

    fn delivered(&mut self, id: i64, dropped: Option<&str>) -> Result<(), StoreError> {
        self.client
            .execute(
                "UPDATE outbox SET delivered_at = now(), dropped = $2 WHERE id = $1",
                &[&id, &dropped],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn cards(&mut self) -> Result<Vec<(RoomRef, RunId, MessageRef)>, StoreError> {
        let rows = self
            .client
            .query("SELECT platform, room, run, reference FROM cards ORDER BY run", &[])
            .map_err(self.err())?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    RoomRef::new(platform_of(r.get(0)), r.get::<_, String>(1)),
                    RunId(r.get::<_, i64>(2) as u64),
                    MessageRef(r.get(3)),
                )
            })
            .collect())
    }

    fn set_card(&mut self, room: &RoomRef, run: RunId, reference: Option<&MessageRef>) -> Result<(), StoreError> {
        let (platform, id, run) = (room.platform.as_str(), room.id.as_str(), run.0 as i64);
        let result = match reference {
            Some(r) => self.client.execute(
                "INSERT INTO cards (platform, room, run, reference) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (platform, room, run) DO UPDATE SET reference = excluded.reference",
                &[&platform, &id, &run, &r.0],
            ),
            None => self.client.execute(
                "DELETE FROM cards WHERE platform = $1 AND room = $2 AND run = $3",
                &[&platform, &id, &run],
            ),
        };
        result.map(|_| ()).map_err(self.err())
    }

    fn journal(&mut self, run: Option<RunId>) -> Result<Vec<JournalRow>, StoreError> {
        let run = run.map(|r| r.0 as i64);
        let rows = self
            .client
            .query(
                "SELECT seq, at, run, kind, body, prev_hash, hash FROM events
                 WHERE $1::BIGINT IS NULL OR run = $1 ORDER BY seq",
                &[&run],
            )
            .map_err(self.err())?;
        Ok(rows
            .iter()
            .map(|r| {
                let body: String = r.get(4);
                JournalRow {
                    seq: r.get(0),
                    at: r.get(1),
                    run: r.get::<_, Option<i64>>(2).map(|x| x as u64),
                    kind: r.get(3),
                    event: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
                    prev_hash: r.get(5),
                    hash: r.get(6),
                }
            })
            .collect())
    }

    fn export(&mut self) -> Result<Vec<RawEvent>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT seq, at, run, kind, body, prev_hash, hash FROM events ORDER BY seq",
                &[],
            )
            .map_err(self.err())?;
        Ok(rows
            .iter()
            .map(|r| RawEvent {
                seq: r.get(0),
                at: r.get(1),
                run: r.get(2),
                kind: r.get(3),
                body: r.get(4),
                prev_hash: r.get(5),
                hash: r.get(6),
            })
            .collect())
    }

    fn verify_chain(&mut self) -> Result<ChainReport, StoreError> {
        // The checkpoint first: rows only grow (see the SQLite store).
        let checkpoint = self.chain.read_checkpoint();
        let (seal, rows) = self.seal_and_rows()?;
        Ok(self.chain.report(&self.store_id, seal.as_deref(), checkpoint, rows))
    }

    fn chain_seal(&mut self) -> Result<Option<String>, StoreError> {
        Ok(self
            .client
            .query_opt("SELECT value FROM baton_meta WHERE key = 'chain_seal'", &[])
            .map_err(self.err())?
            .map(|r| r.get(0)))
    }

    fn adopt(&mut self) -> Result<Adopted, StoreError> {
        let (seal, rows) = self.seal_and_rows()?;
        let a = self
            .chain
            .adoption(&self.store_id, seal.as_deref(), rows)
            .map_err(|why| StoreError::Adopt { why })?;
        let unmarked: Vec<Queued> = self
            .outbox_rows()?
            .into_iter()
            .filter(|(_, mac)| mac.is_none())
            .map(|(q, _)| q)
            .collect();
        let target = self.target.clone();
        let err = |source| classify(&target, source);
        let mut tx = self.client.transaction().map_err(err)?;
        tx.execute(
            "INSERT INTO baton_meta (key, value) VALUES ('chain_seal', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&a.seal],
        )
        .map_err(err)?;
        for q in &unmarked {
            let mac = self.chain.outbox_mac(&self.store_id, q.id, &q.row);
            tx.execute("UPDATE outbox SET mac = $2 WHERE id = $1", &[&q.id, &mac])
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        self.chain.anchor(&self.store_id, a.head_seq, &a.head, false);
        Ok(Adopted {
            legacy_rows: if seal.is_some() { 0 } else { a.legacy_rows },
            messages: unmarked.len(),
            head_seq: a.head_seq,
        })
    }
}

/// Copies a journal (events with their hashes, verbatim), the outbox not yet delivered, the
/// cards and the runs projection into an empty PostgreSQL store, in one transaction; the chain is
/// verified on both sides. `to` must be fenced (hold the leader's epoch).
pub fn copy_store(from: &mut dyn Store, to: &mut PostgresStore) -> Result<ChainReport, anyhow::Error> {
    use anyhow::Context;
    let before = from.verify_chain().context("verifying the source's chain")?;
    anyhow::ensure!(
        before.intact(),
        "the source's journal does not verify ({}); nothing copied",
        before.problems.join("; ")
    );
    anyhow::ensure!(
        to.is_empty().context("reading the target")?,
        "the target {} already holds a journal; a migration only fills an empty store",
        to.target()
    );
    let rows = from.export().context("reading the source's journal")?;
    let pending = from.outbox().context("reading the source's outbox")?;
    let cards = from.cards().context("reading the source's cards")?;
    let target = to.target.clone();
    let err = |e| classify(&target, e);
    let mut tx = to.client.transaction().map_err(err)?;
    for r in &rows {
        tx.execute(
            "INSERT INTO events (seq, at, run, kind, body, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&r.seq, &r.at, &r.run, &r.kind, &r.body, &r.prev_hash, &r.hash],
        )
        .map_err(err)?;
    }
    let seal = from.chain_seal().context("reading the source's seal")?;
    for q in &pending {
        let card = q.row.card.as_ref().map(json);
        let run = q.row.run.map(|id| id.0 as i64);
        // The row gets a new id here, so a new MAC (under the same key, for the source's id).
        let id: i64 = tx.query_one(
            "INSERT INTO outbox (platform, room, run, text, card, lane, body) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            &[
                &q.row.room.platform.as_str(),
                &q.row.room.id,
                &run,
                &q.row.body.plain(),
                &card,
                &q.row.lane.as_str(),
                &json(&q.row.body),
            ],
        )
        .map_err(err)?
        .get(0);
        let mac = to.chain.outbox_mac(from.store_id(), id, &q.row);
        tx.execute("UPDATE outbox SET mac = $2 WHERE id = $1", &[&id, &mac])
            .map_err(err)?;
    }
    for (room, run, reference) in &cards {
        tx.execute(
            "INSERT INTO cards (platform, room, run, reference) VALUES ($1, $2, $3, $4)",
            &[&room.platform.as_str(), &room.id, &(run.0 as i64), &reference.0],
        )
        .map_err(err)?;
    }
    tx.execute(
        "UPDATE baton_meta SET value = $1 WHERE key = 'store_id'",
        &[&from.store_id()],
    )
    .map_err(err)?;
    if let Some(seal) = &seal {
        tx.execute(
            "INSERT INTO baton_meta (key, value) VALUES ('chain_seal', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[seal],
        )
        .map_err(err)?;
    }
    tx.commit().map_err(err)?;
    to.store_id = from.store_id().to_string();
    let after = to.verify_chain().context("verifying the target's chain")?;
    anyhow::ensure!(
        after.intact() && after.rows == before.rows,
        "the copy does not verify ({} of {} rows; {})",
        after.rows,
        before.rows,
        after.problems.join("; ")
    );
    Ok(after)
}

/// Takes the leader's lock and a new epoch for maintenance (a migration), refused while a
/// replica leads. Returns the epoch; the store is fenced with it.
pub fn take_over_for_maintenance(store: &mut PostgresStore) -> Result<i64, anyhow::Error> {
    let got: bool = store
        .client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])?
        .get(0);
    if !got {
        let holder: Option<String> = store
            .client
            .query_one("SELECT holder FROM baton_lease WHERE id = 1", &[])?
            .get(0);
        anyhow::bail!(
            "a Baton replica ({}) leads on {}: stop the replicas first",
            holder.as_deref().unwrap_or("unnamed"),
            store.target
        );
    }
    let epoch: i64 = store
        .client
        .query_one(
            "UPDATE baton_leader SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch",
            &[],
        )?
        .get(0);
    store.client.execute(
        "UPDATE baton_lease SET holder = 'maintenance', session = NULL, since = now(), expires_at = NULL WHERE id = 1",
        &[],
    )?;
    store.fence(epoch)?;
    Ok(epoch)
}

/// Lets go of what [`take_over_for_maintenance`] took.
pub fn release_maintenance(store: &mut PostgresStore, epoch: i64) {
    let _ = store.client.execute(
        "UPDATE baton_lease SET holder = NULL WHERE id = 1 AND holder = 'maintenance'
             AND (SELECT epoch FROM baton_leader WHERE id = 1) = $1",
        &[&epoch],
    );
    let _ = store.client.execute("SELECT pg_advisory_unlock($1)", &[&LEADER_LOCK]);
}

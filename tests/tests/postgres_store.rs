//! The PostgreSQL store against a real PostgreSQL: the same conformance check as SQLite, the
//! journal append-only in the database, a deposed writer's commit refused by the database
//! (fencing), leader election between two electors (one leads; the other takes over when the
//! first stops; the database going away makes the leader step down), and `baton store migrate`
//! of a SQLite journal with the chain verified on both sides.

use baton::chat::RoomRef;
use baton::event::{Event, Recorded};
use baton::run::RunId;
use baton::store::leader::{self, Role};
use baton::store::postgres::{self as pgstore, PgSettings};
use baton::store::{Batch, PostgresStore, SqliteStore, Store, StoreError};
use baton_e2e::postgres::{PASSWORD, Postgres};
use secrecy::SecretString;
use std::time::{Duration, Instant};

fn settings(pg: &Postgres, db: &str, replica: &str) -> PgSettings {
    PgSettings {
        url: pg.url(db),
        password: Some(SecretString::from(PASSWORD)),
        replica: replica.into(),
        lease: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(3),
        ca: None,
    }
}

fn event(run: u64) -> Recorded {
    Recorded {
        at: chrono::Utc::now(),
        event: Event::Expired { run: RunId(run) },
    }
}

/// A store with the leader's lock and a fresh epoch, as `baton store migrate` takes them.
fn fenced(s: &PgSettings) -> (PostgresStore, i64) {
    let mut store = PostgresStore::open(s, "test", baton_e2e::postgres::chain()).expect("opens");
    let epoch = pgstore::take_over_for_maintenance(&mut store).expect("takes the epoch");
    (store, epoch)
}

/// Waits (bounded) until `f` holds.
fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_postgres_store_passes_the_store_conformance_check() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    pg.create_db("conformance")?;
    let s = settings(&pg, "conformance", "a");
    let mut epoch = 0;
    baton::store::conformance::check(|| {
        let (mut store, e) = fenced(&s);
        assert!(e > epoch, "each takeover gets a newer epoch");
        epoch = e;
        pgstore::release_maintenance(&mut store, e);
        Box::new(store)
    });
    Ok(())
}

#[test]
fn the_journal_is_append_only_in_the_database() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    pg.create_db("appendonly")?;
    let s = settings(&pg, "appendonly", "a");
    let (mut store, _) = fenced(&s);
    store.commit(&Batch {
        events: vec![event(1), event(2)],
        ..Default::default()
    })?;
    for sql in [
        "UPDATE events SET body = '{}' WHERE seq = 2",
        "DELETE FROM events WHERE seq = 2",
        "TRUNCATE events",
    ] {
        let err = store.client().batch_execute(sql).expect_err(sql);
        assert!(
            err.to_string().contains("append-only") || format!("{err:?}").contains("append-only"),
            "{sql}: {err:?}"
        );
    }
    assert!(store.verify_chain()?.intact());
    assert_eq!(store.load()?.len(), 2);
    Ok(())
}

#[test]
fn a_deposed_writer_commits_nothing_the_database_refuses_it() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    pg.create_db("fencing")?;
    let s = settings(&pg, "fencing", "a");
    let (mut old, epoch) = fenced(&s);
    pgstore::release_maintenance(&mut old, epoch);
    old.commit(&Batch {
        events: vec![event(1)],
        ..Default::default()
    })?;
    // Another replica takes over (it bumps the epoch) while `old` still has its session.
    let (mut new, newer) = fenced(&s);
    assert_eq!(newer, epoch + 1);
    let room = RoomRef::new(baton_policies::Platform::Console, "incident");
    let refused = old
        .commit(&Batch {
            events: vec![event(2)],
            ..Default::default()
        })
        .expect_err("the old epoch's commit is refused");
    assert!(matches!(refused, StoreError::Fenced { .. }), "{refused:?}");
    assert!(refused.to_string().contains("no longer leads"), "{refused}");
    assert!(matches!(
        old.set_card(&room, RunId(1), Some(&baton::chat::MessageRef("m".into()))),
        Err(StoreError::Fenced { .. })
    ));
    assert!(matches!(old.delivered(1, None), Err(StoreError::Fenced { .. })));
    // A session that never took an epoch (an audit) cannot write either.
    let mut reader = PostgresStore::open(&s, "reader", baton_e2e::postgres::chain())?;
    assert!(matches!(
        reader.commit(&Batch {
            events: vec![event(3)],
            ..Default::default()
        }),
        Err(StoreError::Fenced { .. })
    ));
    // The new leader writes; the journal holds its event and not the refused ones.
    new.commit(&Batch {
        events: vec![event(4)],
        ..Default::default()
    })?;
    let runs: Vec<Option<RunId>> = new.load()?.iter().map(|r| r.event.run()).collect();
    assert_eq!(runs, [Some(RunId(1)), Some(RunId(4))]);
    assert!(new.verify_chain()?.intact());
    Ok(())
}

fn role_of(l: &leader::Leadership) -> &'static str {
    l.role().name()
}

#[test]
fn two_electors_one_leads_and_the_other_takes_over_when_it_stops() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    pg.create_db("election")?;
    let (a, a_elector) = leader::spawn(settings(&pg, "election", "site1"))?;
    let (b, b_elector) = leader::spawn(settings(&pg, "election", "site2"))?;
    wait_until(
        "one replica leads and the other stands by",
        Duration::from_secs(20),
        || {
            let mut roles = [role_of(&a), role_of(&b)];
            roles.sort();
            roles == ["leader", "standby"]
        },
    );
    let (first, first_elector, second, second_elector) = if a.acting() {
        (a, a_elector, b, b_elector)
    } else {
        (b, b_elector, a, a_elector)
    };
    let first_epoch = match first.role() {
        Role::Leader { epoch, .. } => epoch,
        other => panic!("{other:?}"),
    };
    // The standby learns the leader's name at its next look at the lease (bounded wait).
    wait_until("the standby names the leader", Duration::from_secs(20), || {
        matches!(second.role(), Role::Standby { leader: Some(_) })
    });
    // Both stay as they are for a few renewals.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(first.acting() && !second.acting(), "exactly one acts");
        std::thread::sleep(Duration::from_millis(100));
    }
    first_elector.stop();
    assert!(!first.acting());
    wait_until("the standby takes over", Duration::from_secs(10), || second.acting());
    match second.role() {
        Role::Leader { epoch, .. } => assert!(epoch > first_epoch, "a takeover bumps the epoch"),
        other => panic!("{other:?}"),
    }
    second_elector.stop();
    Ok(())
}

#[test]
fn the_leader_steps_down_when_the_database_goes_away() -> anyhow::Result<()> {
    let mut pg = Postgres::start()?;
    pg.create_db("dbgone")?;
    let (a, a_elector) = leader::spawn(settings(&pg, "dbgone", "site1"))?;
    wait_until("the only replica leads", Duration::from_secs(20), || a.acting());
    let Role::Leader { until, .. } = a.role() else {
        panic!("leads")
    };
    pg.stop()?;
    // Whatever its thread is doing, it may not act past the lease it last renewed: a standby
    // may take over after that.
    let renewed_before_stop = until;
    wait_until("the leader steps down", Duration::from_secs(10), || !a.acting());
    std::thread::sleep(renewed_before_stop.saturating_duration_since(Instant::now()));
    assert!(!a.acting(), "not acting once its last lease has run out");
    wait_until("it says it lost the store", Duration::from_secs(10), || {
        role_of(&a) == "disconnected"
    });
    pg.restart()?;
    wait_until(
        "it leads again once the database is back",
        Duration::from_secs(20),
        || a.acting(),
    );
    a_elector.stop();
    Ok(())
}

#[test]
fn baton_store_migrate_copies_a_sqlite_journal_and_refuses_a_non_empty_target() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    pg.create_db("migrated")?;
    let dir = tempfile::tempdir()?;
    let sqlite = dir.path().join("baton.sqlite");
    let store_id = {
        let mut s = SqliteStore::open(&sqlite)?;
        s.commit(&Batch {
            events: vec![event(1), event(2), event(3)],
            ..Default::default()
        })?;
        s.store_id().to_string()
    };
    let url = pg.url("migrated");
    let from = sqlite.to_str().expect("UTF-8 path");
    let migrate = |envs: &[(&str, &str)]| -> anyhow::Result<(bool, String, String)> {
        let out = std::process::Command::new(baton_e2e::baton::bin("baton"))
            .args([
                "store",
                "migrate",
                "--from",
                from,
                "--to",
                &url,
                "--password-env",
                "TEST_PG_PW",
            ])
            .envs(envs.iter().copied())
            .output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        ))
    };
    let (ok, stdout, stderr) = migrate(&[("TEST_PG_PW", PASSWORD)])?;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("copied 3 journal rows"), "{stdout}");
    let s = settings(&pg, "migrated", "a");
    // The copy verifies under the key the SQLite store was written with (beside it).
    let key = baton::store::ChainKey::load(&baton::store::chain::beside(&sqlite, ".key"))?;
    let mut target = PostgresStore::open(&s, "check", baton::store::Chain::new(key, None, false))?;
    assert_eq!(
        target.store_id(),
        store_id,
        "the store id (in every idempotency key) moves along"
    );
    assert_eq!(
        target.export()?,
        SqliteStore::open(&sqlite)?.export()?,
        "rows copied verbatim"
    );
    assert!(target.verify_chain()?.intact());
    let (ok, _, stderr) = migrate(&[("TEST_PG_PW", PASSWORD)])?;
    assert!(!ok && stderr.contains("already holds a journal"), "{stderr}");
    let (ok, _, stderr) = migrate(&[("TEST_PG_PW", "wrong-password")])?;
    assert!(!ok, "a wrong password fails");
    assert!(
        !stderr.contains("wrong-password") && !stderr.contains(PASSWORD),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn a_message_inserted_in_the_shared_outbox_is_never_handed_out() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    pg.create_db("forged")?;
    let s = settings(&pg, "forged", "a");
    let (mut store, _) = fenced(&s);
    let room = RoomRef::new(baton_policies::Platform::Console, "incident");
    let genuine = store.commit(&Batch {
        events: vec![event(1)],
        rows: vec![baton::outbox::Row {
            room: room.clone(),
            run: Some(RunId(1)),
            lane: baton::outbox::Lane::Line,
            body: baton::chat::Rich::from("#1 approved by bob"),
            card: None,
        }],
        ..Default::default()
    })?;
    // Someone with a database login adds a line, with and without a MAC copied from a real one.
    store.client().batch_execute(
        "INSERT INTO outbox (platform, room, run, text, lane, body)
             VALUES ('console', 'incident', 1, 'forged', 'line', '[{\"t\":\"text\",\"v\":\"forged\"}]');
         INSERT INTO outbox (platform, room, run, text, lane, body, mac)
             SELECT platform, room, run, 'forged', lane, '[{\"t\":\"text\",\"v\":\"forged\"}]', mac FROM outbox WHERE mac IS NOT NULL;",
    )?;
    assert_eq!(store.forged()?.len(), 2);
    assert_eq!(store.outbox()?, genuine, "only Baton's own line is handed out");
    assert!(store.forged()?.is_empty(), "the forged lines are marked dropped");
    let dropped: i64 = store
        .client()
        .query_one("SELECT count(*) FROM outbox WHERE dropped LIKE 'forged:%'", &[])?
        .get(0);
    assert_eq!(dropped, 2);
    // A different key does not verify the journal.
    let other = baton::store::Chain::new(
        baton::store::ChainKey::new(SecretString::from("another key, thirty-two characters long"))
            .map_err(anyhow::Error::msg)?,
        None,
        false,
    );
    let mut reader = PostgresStore::open(&s, "reader", other)?;
    let report = reader.verify_chain()?;
    assert!(report.problems[0].contains("seal does not verify"), "{report:?}");
    Ok(())
}

#[test]
fn tls_to_the_server_is_verified_with_the_configured_ca() -> anyhow::Result<()> {
    let pg = Postgres::start_tls()?;
    pg.create_db("tls")?;
    let mut s = settings(&pg, "tls", "a");
    s.ca = Some(pg.ca().expect("a TLS cluster has a CA").to_path_buf());
    let mut store = PostgresStore::open(&s, "tls", baton_e2e::postgres::chain())?;
    let ssl: bool = store
        .client()
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])?
        .get(0);
    assert!(ssl, "the session runs over TLS");
    assert!(store.verify_chain()?.intact());
    // Another CA's certificate is not trusted: no connection, and the error says why.
    let other = tempfile::tempdir()?;
    let foreign = baton_e2e::prosody::test_pki(other.path(), "foreign")?;
    s.ca = Some(foreign.ca.clone());
    let err = PostgresStore::open(&s, "tls", baton_e2e::postgres::chain())
        .err()
        .expect("an unknown issuer is refused");
    let text = format!("{err:#} {:?}", std::error::Error::source(&err));
    assert!(
        text.to_lowercase().contains("certificate") || text.contains("UnknownIssuer"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
    // A file that is no CA is a clear error.
    std::fs::write(other.path().join("empty.pem"), "")?;
    s.ca = Some(other.path().join("empty.pem"));
    let err = PostgresStore::open(&s, "tls", baton_e2e::postgres::chain())
        .err()
        .expect("no CA");
    assert!(err.to_string().contains("holds no certificate"), "{err}");
    Ok(())
}

#[test]
fn a_resigning_leader_lets_go_and_an_old_resignation_changes_nothing() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    pg.create_db("resign")?;
    let (a, a_elector) = leader::spawn(settings(&pg, "resign", "site1"))?;
    wait_until("the only replica leads", Duration::from_secs(20), || a.acting());
    let Role::Leader { epoch, .. } = a.role() else {
        panic!("leads")
    };
    a.resign(epoch);
    wait_until("it lets go", Duration::from_secs(10), || !a.acting());
    wait_until(
        "it leads again, in a new term",
        Duration::from_secs(20),
        || matches!(a.role(), Role::Leader { epoch: e, .. } if e > epoch),
    );
    let Role::Leader { epoch: second, .. } = a.role() else {
        panic!("leads")
    };
    // Resigning the finished term again does not end the new one.
    a.resign(epoch);
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(
            matches!(a.role(), Role::Leader { epoch: e, .. } if e == second),
            "{:?}",
            a.role()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    a_elector.stop();
    Ok(())
}

#[test]
fn lease_renewals_do_not_wait_for_a_write_in_progress() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    pg.create_db("renewals")?;
    let s = settings(&pg, "renewals", "site1");
    let (a, a_elector) = leader::spawn(s.clone())?;
    wait_until("the only replica leads", Duration::from_secs(20), || a.acting());
    let Role::Leader { epoch, .. } = a.role() else {
        panic!("leads")
    };
    let mut store = PostgresStore::open(&s, a.session(), baton_e2e::postgres::chain())?;
    store.fence(epoch)?;
    let mut tx = store.client().transaction()?;
    // The fencing trigger holds the epoch row's share lock until this transaction ends.
    tx.execute(
        "INSERT INTO handled (platform, room, sender, message_id) VALUES ('console', 'incident', 'console:alice', 'm1')",
        &[],
    )?;
    let until = Instant::now() + s.lease * 2;
    while Instant::now() < until {
        assert!(a.acting(), "the lease is renewed meanwhile: {:?}", a.role());
        std::thread::sleep(Duration::from_millis(50));
    }
    tx.commit()?;
    assert!(
        matches!(a.role(), Role::Leader { epoch: e, .. } if e == epoch),
        "the same term"
    );
    a_elector.stop();
    Ok(())
}

//! High-availability figures (a benchmark, not a test; prints figures), on a throwaway real
//! PostgreSQL: the store's share of one command on PostgreSQL beside SQLite (the commit of an
//! event, a reply and a handled id, then the delivery record: the `store_cycle` calls), and
//! the takeover time of two `baton run` replicas (console chat, simulated executor, 2 s lease)
//! when the leader is SIGKILLed mid-step and when it is SIGSTOPped: from the signal to the
//! standby holding the lead, to it acting (engine restored from the journal, rooms joined) and
//! to it resuming the step in flight.
//!
//! Run: `cargo build -p baton --bins && cargo run -p baton-e2e --example takeover [-- RUNS]`
//! (default 5 runs of each kind).

use baton::chat::{Rich, RoomRef};
use baton::event::{Event, Recorded};
use baton::outbox::{Lane, Row};
use baton::store::postgres::{self as pgstore, PgSettings};
use baton::store::{Batch, Handled, PostgresStore, SqliteStore, Store};
use baton_e2e::baton::Baton;
use baton_e2e::postgres::{PASSWORD, Postgres};
use baton_e2e::replicas::{Shared, start_replica, store_section};
use baton_policies::Platform;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()
        .map_err(|_| anyhow::anyhow!("RUNS must be a number"))?
        .unwrap_or(5);
    // SAFETY: set before any thread starts; the replicas log at info so their takeover shows.
    unsafe { std::env::set_var("BATON_TEST_LOG", "info") };
    let pg = Postgres::start()?;
    store_cycle(&pg, 500)?;
    println!("\ntakeover, 2 s lease, {runs} runs each (ms from the signal)");
    println!("{:<34} {:>8} {:>8} {:>8}", "", "min", "median", "max");
    for mode in [Mode::Kill, Mode::Stop] {
        let mut t: [Vec<Duration>; 3] = Default::default();
        for i in 0..runs {
            let [lead, act, resume] = takeover(&pg, mode, i)?;
            t[0].push(lead);
            t[1].push(act);
            t[2].push(resume);
        }
        let names = ["leading", "acting (journal restored)", "step in flight resumed"];
        for (name, times) in names.iter().zip(t.iter_mut()) {
            row(&format!("{} {name}", mode.name()), times);
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Mode {
    Kill,
    Stop,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Kill => "SIGKILL:",
            Mode::Stop => "SIGSTOP:",
        }
    }
}

fn row(name: &str, t: &mut [Duration]) {
    t.sort();
    let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1e3);
    println!(
        "{name:<34} {:>8} {:>8} {:>8}",
        ms(t[0]),
        ms(t[t.len() / 2]),
        ms(t[t.len() - 1])
    );
}

/// One takeover; returns the times from the signal to leading, acting and resuming.
fn takeover(pg: &Postgres, mode: Mode, i: usize) -> anyhow::Result<[Duration; 3]> {
    let db = format!("takeover_{}_{i}", mode.name().trim_end_matches(':').to_lowercase());
    pg.create_db(&db)?;
    let dir = tempfile::Builder::new().prefix("baton-takeover-").tempdir()?;
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/contoso.toml"))?;
    let config = dir.path().join("baton.toml");
    baton::store::ChainKey::load_or_create(&dir.path().join("chain.key"))?;
    let text = example.replace("trusted = false", "trusted = true").replacen(
        "[bot]\n",
        "[bot]\nchain_key = { file = \"chain.key\" }\n",
        1,
    ) + "\n"
        + &store_section(pg, &db, "2s");
    std::fs::write(&config, text)?;
    let mut shared = Shared::connect(pg, &db)?;
    let mut a = start_replica(&config, "site1")?;
    shared.wait_leader("site1", T)?;
    let b = start_replica(&config, "site2")?;
    shared.wait("site2 stands by", T, |s| s.connected("site2"))?;
    a.send("alice> !failover xmpp EdgePool2 bench")?;
    a.wait_for("Expires at", T)?;
    a.send("bob> !approve 1")?;
    // Step 2 (services.stop, 1 s simulated) is in flight.
    shared.wait("step 2 started", T, |s| Ok(s.count("step_started")? >= 2))?;
    std::thread::sleep(Duration::from_millis(200));
    let signal = match mode {
        Mode::Kill => libc::SIGKILL,
        Mode::Stop => libc::SIGSTOP,
    };
    // SAFETY: kill with our own child's pid and a valid signal.
    unsafe { libc::kill(a.pid() as i32, signal) };
    let sent = Instant::now();
    let lead = shared.wait_leader("site2", T)?;
    let act = wait_stderr(&b, "took over", sent)?;
    let resume = wait_stderr(&b, "resuming an action", sent)?;
    b.wait_for("succeeded in", T)?;
    a.kill9();
    Ok([lead, act, resume])
}

fn wait_stderr(b: &Baton, needle: &str, since: Instant) -> anyhow::Result<Duration> {
    loop {
        if b.stderr().contains(needle) {
            return Ok(since.elapsed());
        }
        anyhow::ensure!(since.elapsed() < T, "no {needle:?} from the standby:\n{}", b.stderr());
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The store's calls for one state-changing command, on PostgreSQL and on SQLite.
fn store_cycle(pg: &Postgres, rounds: usize) -> anyhow::Result<()> {
    pg.create_db("cycle")?;
    let settings = PgSettings {
        url: pg.url("cycle"),
        password: Some(PASSWORD.into()),
        replica: "bench".into(),
        lease: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(3),
        ca: None,
    };
    let mut postgres = PostgresStore::open(&settings, "bench", baton_e2e::postgres::chain())?;
    pgstore::take_over_for_maintenance(&mut postgres)?;
    let dir = tempfile::tempdir()?;
    let mut sqlite = SqliteStore::open(&dir.path().join("baton.sqlite"))?;
    println!("store calls per command, {rounds} commands (us)");
    println!("{:<34} {:>8} {:>8} {:>8}", "", "p50", "p90", "p99");
    for (name, store) in [
        ("PostgreSQL (loopback, fsync on)", &mut postgres as &mut dyn Store),
        ("SQLite (WAL, synchronous=FULL)", &mut sqlite as &mut dyn Store),
    ] {
        let mut t = Vec::with_capacity(rounds);
        for n in 0..rounds {
            t.push(one_command(store, n)?);
        }
        t.sort();
        let at = |p: usize| t[(t.len() * p).div_ceil(100).saturating_sub(1).min(t.len() - 1)];
        let us = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1e6);
        println!("{name:<34} {:>8} {:>8} {:>8}", us(at(50)), us(at(90)), us(at(99)));
    }
    Ok(())
}

fn one_command(store: &mut dyn Store, n: usize) -> anyhow::Result<Duration> {
    let room = RoomRef::new(Platform::Xmpp, "incident@conference.contoso.test");
    let started = Instant::now();
    let queued = store.commit(&Batch {
        events: vec![Recorded {
            at: chrono::Utc::now(),
            event: Event::Refused {
                run: None,
                who: "xmpp:alice@contoso.test".into(),
                command: "approve 1".into(),
                why: "you requested this".into(),
            },
        }],
        rows: vec![Row {
            room: room.clone(),
            run: None,
            lane: Lane::Line,
            body: Rich::from(format!("Refused (!approve 1): you requested this ({n})")),
            card: None,
        }],
        runs: vec![],
        handled: Some(Handled {
            room,
            sender: "xmpp:alice@contoso.test".into(),
            message_id: format!("alice-{n}"),
        }),
    })?;
    for q in &queued {
        store.delivered(q.id, None)?;
    }
    Ok(started.elapsed())
}

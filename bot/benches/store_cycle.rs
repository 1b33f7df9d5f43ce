//! The store's share of one chat command that changes state (a benchmark, not a test; prints
//! figures), on a real SQLite file in the configured durability (WAL, `synchronous = FULL`): the
//! commit of its event, reply and handled id, then marking the reply delivered — the calls the
//! store's thread makes for a refused `!approve`. (A read-only command such as `!status` costs
//! the store nothing: its answer goes out without the journal, and handled ids are checked in
//! memory.) Also the raw cost of one fsync of a file in the same folder, the floor under every
//! commit.
//!
//! Run: `cargo bench -p baton --bench store_cycle [-- ROUNDS] [--dir DIR]` (the store is made in a
//! temporary folder under DIR, default the system's temporary folder).

use baton::chat::{Rich, RoomRef};
use baton::event::{Event, Recorded};
use baton::outbox::{Lane, Row};
use baton::store::{Batch, Handled, SqliteStore, Store};
use baton_policies::Platform;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let mut rounds = 2000usize;
    let mut base: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => base = args.next().map(PathBuf::from),
            "--bench" => {}
            n => {
                rounds = n
                    .parse()
                    .map_err(|_| anyhow::anyhow!("rounds must be a number, got {n:?}"))?
            }
        }
    }
    let dir = match &base {
        Some(b) => tempfile::Builder::new().prefix("baton-store-bench-").tempdir_in(b)?,
        None => tempfile::Builder::new().prefix("baton-store-bench-").tempdir()?,
    };
    let mut store = SqliteStore::open(&dir.path().join("baton.sqlite"))?;
    let room = RoomRef::new(Platform::Xmpp, "incident@conference.contoso.test");
    let mut times: [Vec<Duration>; 3] = Default::default();
    for n in 0..rounds {
        let started = Instant::now();
        let refused = Recorded {
            at: chrono::Utc::now(),
            event: Event::Refused {
                run: None,
                who: "xmpp:alice@contoso.test".into(),
                command: "approve 1".into(),
                why: "you requested this".into(),
            },
        };
        let reply = Row {
            room: room.clone(),
            run: None,
            lane: Lane::Line,
            body: Rich::from(format!("Refused (!approve 1): you requested this ({n})")),
            card: None,
        };
        let queued = store.commit(&Batch {
            events: vec![refused],
            rows: vec![reply],
            runs: vec![],
            handled: Some(Handled {
                room: room.clone(),
                sender: "xmpp:alice@contoso.test".into(),
                message_id: format!("alice-{n}"),
            }),
        })?;
        let committed = Instant::now();
        for q in &queued {
            store.delivered(q.id, None)?;
        }
        let marked = Instant::now();
        times[0].push(committed - started);
        times[1].push(marked - committed);
        times[2].push(marked - started);
    }
    let fsyncs = raw_fsync(&dir.path().join("fsync.probe"), rounds)?;
    println!(
        "store calls per command, {rounds} commands, store in {}",
        dir.path().display()
    );
    println!("{:<40} {:>10} {:>10} {:>10}", "", "p50", "p90", "p99");
    let names = [
        "commit (event + reply + handled id, fsync)",
        "delivered (mark, fsync)",
        "both",
    ];
    for (name, t) in names.iter().zip(times.iter_mut()) {
        row(name, t);
    }
    let mut f = fsyncs;
    row("raw fsync of a 4 KiB append", &mut f);
    Ok(())
}

fn raw_fsync(path: &std::path::Path, rounds: usize) -> anyhow::Result<Vec<Duration>> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let page = [0u8; 4096];
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        file.write_all(&page)?;
        let started = Instant::now();
        file.sync_all()?;
        out.push(started.elapsed());
    }
    Ok(out)
}

fn row(name: &str, t: &mut [Duration]) {
    t.sort();
    let at = |p: usize| t[(t.len() * p).div_ceil(100).saturating_sub(1).min(t.len() - 1)];
    let us = |d: Duration| format!("{:.0} us", d.as_secs_f64() * 1e6);
    println!("{name:<40} {:>10} {:>10} {:>10}", us(at(50)), us(at(90)), us(at(99)));
}

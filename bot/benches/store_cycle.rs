//! The store's share of one chat command (a benchmark, not a test; prints figures): the calls the
//! daemon and the outbox pump make for a read-only command such as `!status`, on a real SQLite
//! file in the configured durability (WAL, `synchronous = FULL`): the already-handled check,
//! the commit of the handled id with the reply, reading the outbox, marking the reply delivered.
//! Also the raw cost of one fsync of a file in the same folder, the floor under every commit.
//!
//! Run: `cargo bench -p baton --bench store_cycle [-- ROUNDS] [--dir DIR]` (the store is made in a
//! temporary folder under DIR, default the system's temporary folder).

use baton::chat::RoomRef;
use baton::engine::Message;
use baton::store::{Batch, SqliteStore, Store};
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
    let mut times: [Vec<Duration>; 5] = Default::default();
    for n in 0..rounds {
        let id = format!("alice-{n}");
        let started = Instant::now();
        let seen = store.handled(&room, &id)?;
        let checked = Instant::now();
        assert!(!seen, "fresh ids only");
        let reply = Message {
            room: room.clone(),
            run: None,
            text: format!("XMPP federation route: EdgePool1. No active run. ({n})"),
            card: None,
        };
        store.commit(&Batch {
            messages: std::slice::from_ref(&reply),
            handled: Some((&room, &id)),
            ..Default::default()
        })?;
        let committed = Instant::now();
        let pending = store.outbox(Platform::Xmpp, 50)?;
        let read = Instant::now();
        for m in &pending {
            store.delivered(m.id, None)?;
        }
        let marked = Instant::now();
        times[0].push(checked - started);
        times[1].push(committed - checked);
        times[2].push(read - committed);
        times[3].push(marked - read);
        times[4].push(marked - started);
    }
    let fsyncs = raw_fsync(&dir.path().join("fsync.probe"), rounds)?;
    println!(
        "store calls per command, {rounds} commands, store in {}",
        dir.path().display()
    );
    println!("{:<40} {:>10} {:>10} {:>10}", "", "p50", "p90", "p99");
    let names = [
        "handled? (the duplicate check)",
        "commit (handled id + reply, fsync)",
        "outbox (read the reply)",
        "delivered (mark, fsync)",
        "all four",
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

//! What every [`Store`] must do, as one check that any store's tests call: SQLite's unit tests
//! and the PostgreSQL tests in `tests/` run the same function, so the two cannot drift.

use super::{Batch, Handled, Store};
use crate::chat::{MessageRef, Rich, RoomRef};
use crate::event::{Event, Recorded};
use crate::outbox::{Lane, Row};
use crate::run::RunId;
use baton_policies::Platform;

fn recorded(run: u64) -> Recorded {
    Recorded {
        at: chrono::DateTime::parse_from_rfc3339("2026-11-26T14:00:00.123Z")
            .expect("a fixed valid time")
            .with_timezone(&chrono::Utc),
        event: Event::Expired { run: RunId(run) },
    }
}

fn row(room: &RoomRef, lane: Lane, text: &str) -> Row {
    Row {
        room: room.clone(),
        run: Some(RunId(1)),
        lane,
        body: Rich::from("Reason: ").quoted(text),
        card: None,
    }
}

/// Commits, reopens (through `reopen`, which must give the same store again) and reads back
/// everything a store keeps: events in order with a stable store id, handled ids by time, the
/// outbox with bodies and lanes, delivery records, the chain, one run's journal, and cards.
/// Panics, naming what differs, when the store misbehaves.
pub fn check(mut reopen: impl FnMut() -> Box<dyn Store>) {
    let mut store = reopen();
    let id = store.store_id().to_string();
    assert!(store.load().expect("loads").is_empty(), "a new store is empty");
    let room = RoomRef::new(Platform::Console, "incident");
    let handled = Handled {
        room: room.clone(),
        sender: "console:alice".into(),
        message_id: "m1".into(),
    };
    let queued = store
        .commit(&Batch {
            events: vec![recorded(1), recorded(2)],
            rows: vec![row(&room, Lane::Line, "hello"), row(&room, Lane::Card, "card")],
            runs: vec![],
            handled: Some(handled.clone()),
        })
        .expect("commits");
    assert_eq!(queued.len(), 2);
    assert!(queued[0].id < queued[1].id, "ids follow the rows' order");
    store
        .commit(&Batch {
            events: vec![recorded(3)],
            handled: Some(handled.clone()),
            ..Default::default()
        })
        .expect("a handled id recorded twice is not an error");
    drop(store);
    let mut store = reopen();
    assert_eq!(store.store_id(), id, "the store id is stable");
    assert_eq!(
        store.load().expect("loads"),
        vec![recorded(1), recorded(2), recorded(3)]
    );
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    assert_eq!(store.handled_since(since).expect("reads"), vec![handled]);
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    assert!(store.handled_since(later).expect("reads").is_empty());
    let pending = store.outbox().expect("reads");
    assert_eq!(pending, queued, "rows come back as committed, body and lane included");
    assert_eq!(pending[0].row.body.plain(), "Reason: hello");
    assert_eq!(store.outbox_len().expect("counts"), 2);
    store.delivered(pending[0].id, None).expect("marks");
    assert_eq!(store.outbox().expect("reads"), pending[1..].to_vec());
    store.delivered(pending[1].id, Some("superseded")).expect("marks");
    assert_eq!(store.outbox_len().expect("counts"), 0);
    let chain = store.verify_chain().expect("verifies");
    assert!(chain.intact() && chain.rows == 3, "{chain:?}");
    assert_eq!((chain.head_seq, chain.legacy_rows), (3, 0), "{chain:?}");
    assert_eq!(raw_head(&mut *store), chain.head, "the report names the last row's MAC");
    assert!(
        store.chain_seal().expect("reads").is_some(),
        "sealed before its first row"
    );
    assert!(
        store.forged().expect("reads").is_empty(),
        "every row Baton wrote has a good MAC"
    );
    let journal = store.journal(Some(RunId(2))).expect("reads");
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].kind, "expired");
    assert_eq!(journal[0].at, "2026-11-26T14:00:00.123Z");
    let raw = store.export().expect("exports");
    assert_eq!(raw.len(), 3);
    assert_eq!(
        raw[1].prev_hash, raw[0].hash,
        "the chain links each row to the one before"
    );
    let card = MessageRef("m-42".into());
    store.set_card(&room, RunId(1), Some(&card)).expect("records");
    store
        .set_card(&room, RunId(1), Some(&MessageRef("m-43".into())))
        .expect("replaces");
    assert_eq!(
        store.cards().expect("reads"),
        vec![(room.clone(), RunId(1), MessageRef("m-43".into()))]
    );
    store.set_card(&room, RunId(1), None).expect("forgets");
    assert!(store.cards().expect("reads").is_empty());
}

fn raw_head(store: &mut dyn Store) -> String {
    store
        .export()
        .expect("exports")
        .last()
        .map(|r| r.hash.clone())
        .unwrap_or_default()
}

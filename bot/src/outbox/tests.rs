//! The outbox's rules, one case at a time: rows per platform, lines in order, card updates
//! coalesced and spaced, cards opened once and re-posted when deleted, mirror rooms that give up.

use super::*;
use crate::chat::{ButtonIntent, Mark};
use baton_policies::Platform;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn room(id: &str) -> RoomRef {
    RoomRef::new(Platform::Discord, id)
}

fn card(run: u64, state: &str) -> RunCard {
    RunCard {
        run: RunId(run),
        title: format!("#{run}"),
        mark: Mark::Running,
        state: state.into(),
        reason: None,
        steps: vec![],
        footer: String::new(),
        plan: "d974d3765c60".into(),
        buttons: vec![ButtonIntent::Approve {
            run: RunId(run),
            plan: "d974d3765c60".into(),
        }],
        warnings: vec![],
    }
}

fn message(run: Option<u64>, text: &str, kind: MessageKind) -> Message {
    Message {
        room: room("ops"),
        run: run.map(RunId),
        body: Rich::from(text),
        card: run.map(|r| card(r, text)),
        kind,
    }
}

const CARDS: Capabilities = Capabilities {
    cards: true,
    edit_interval: Duration::from_secs(1),
};

fn lanes(rows: &[Row]) -> Vec<(Lane, String, bool)> {
    rows.iter()
        .map(|r| (r.lane, r.body.plain(), r.card.is_some()))
        .collect()
}

#[test]
fn rows_per_platform() {
    let batch = [
        message(Some(1), "plan", MessageKind::Notice),
        message(Some(1), "step 1", MessageKind::Progress),
        message(None, "status", MessageKind::Reply),
    ];
    let plain = rows(&batch, |_| Capabilities::default());
    assert_eq!(
        lanes(&plain),
        [
            (Lane::Line, "plan".into(), false),
            (Lane::Line, "step 1".into(), false),
            (Lane::Line, "status".into(), false),
        ],
        "a platform without cards gets every message as a line"
    );
    let cards = rows(&batch, |_| CARDS);
    assert_eq!(
        lanes(&cards),
        [
            (Lane::Line, "plan".into(), true),
            (Lane::Card, "plan".into(), true),
            (Lane::Card, "step 1".into(), true),
            (Lane::Line, "status".into(), false),
        ],
        "step progress is a card update alone; notices are lines too"
    );
}

/// Commits rows as the store would (ids from 1).
fn queue_rows(q: &mut RoomQueue, rows: Vec<Row>, next: &mut i64) {
    for row in rows {
        *next += 1;
        q.push(Queued { id: *next, row });
    }
}

fn ok(reference: &str) -> Result<Delivered, DeliveryError> {
    Ok(Delivered {
        reference: Some(MessageRef(reference.into())),
    })
}

/// Takes the next delivery, expecting one.
fn next_delivery(q: &mut RoomQueue, now: Instant) -> (Outbound, Attempt) {
    match q.next(now) {
        Next::Deliver(o, a) => (o, a),
        Next::Idle => panic!("idle, expected a delivery"),
        Next::WaitUntil(_) => panic!("waiting, expected a delivery"),
        Next::Run(_) => panic!("a callback, expected a delivery"),
    }
}

#[test]
fn a_card_is_opened_once_then_edited_with_the_latest_update() {
    let t0 = Instant::now();
    let mut q = RoomQueue::new(room("ops"), CARDS, None);
    let mut id = 0;
    queue_rows(
        &mut q,
        rows(&[message(Some(1), "plan", MessageKind::Notice)], |_| CARDS),
        &mut id,
    );
    let (out, attempt) = next_delivery(&mut q, t0);
    assert!(out.card.is_some() && out.edit.is_none(), "the plan line opens the card");
    q.done(attempt, &out, ok("m1"), t0);
    assert!(
        q.take_records()
            .contains(&Record::CardRef(RunId(1), MessageRef("m1".into())))
    );
    // The card update of the same message shows nothing new: recorded, not sent.
    assert!(matches!(q.next(t0), Next::Idle));
    assert_eq!(q.take_records(), [Record::Delivered(2)]);
    // A burst of three step updates within the edit interval becomes one edit, the latest.
    for step in ["step 1", "step 2", "step 3"] {
        queue_rows(
            &mut q,
            rows(&[message(Some(1), step, MessageKind::Progress)], |_| CARDS),
            &mut id,
        );
    }
    assert_eq!(
        q.take_records(),
        [
            Record::Dropped(3, "superseded by a later update".into()),
            Record::Dropped(4, "superseded by a later update".into())
        ]
    );
    let Next::WaitUntil(at) = q.next(t0) else {
        panic!("the edit waits for the interval")
    };
    assert_eq!(at, t0 + Duration::from_secs(1));
    let t1 = t0 + Duration::from_secs(1);
    let (out, attempt) = next_delivery(&mut q, t1);
    assert_eq!(
        out.edit,
        Some(MessageRef("m1".into())),
        "an edit of the card posted before"
    );
    assert_eq!(out.card.as_ref().map(|c| c.state.as_str()), Some("step 3"));
    q.done(attempt, &out, ok("m1"), t1);
    assert_eq!(q.take_records(), [Record::Delivered(5)]);
    assert!(q.is_empty());
}

#[test]
fn a_card_known_from_the_store_is_edited_not_posted_again() {
    let t0 = Instant::now();
    let mut q = RoomQueue::new(room("ops"), CARDS, None);
    q.know_card(RunId(4), MessageRef("m9".into()));
    let mut id = 0;
    let mut m = message(Some(4), "step 5", MessageKind::Progress);
    m.card = Some(card(4, "step 5"));
    queue_rows(&mut q, rows(&[m], |_| CARDS), &mut id);
    let (out, _) = next_delivery(&mut q, t0);
    assert_eq!(out.edit, Some(MessageRef("m9".into())));
    // A notice of the same run after a restart: a line without the card, and an edit.
    let mut q = RoomQueue::new(room("ops"), CARDS, None);
    q.know_card(RunId(4), MessageRef("m9".into()));
    queue_rows(
        &mut q,
        rows(&[message(Some(4), "succeeded", MessageKind::Notice)], |_| CARDS),
        &mut id,
    );
    let (out, _) = next_delivery(&mut q, t0);
    assert!(out.card.is_none() && out.edit.is_none(), "the notice is a plain line");
}

#[test]
fn a_deleted_card_is_posted_again() {
    let t0 = Instant::now();
    let mut q = RoomQueue::new(room("ops"), CARDS, None);
    q.know_card(RunId(2), MessageRef("m3".into()));
    let mut id = 0;
    queue_rows(
        &mut q,
        rows(&[message(Some(2), "step 2", MessageKind::Progress)], |_| CARDS),
        &mut id,
    );
    let (out, attempt) = next_delivery(&mut q, t0);
    let gone = Err(DeliveryError::Permanent {
        reason: "unknown message".into(),
    });
    assert_eq!(q.done(attempt, &out, gone, t0), None);
    assert_eq!(q.take_records(), [Record::CardGone(RunId(2))]);
    let (out, attempt) = next_delivery(&mut q, t0);
    assert!(out.edit.is_none() && out.card.is_some(), "posted as a new card");
    q.done(attempt, &out, ok("m7"), t0);
    assert_eq!(
        q.take_records(),
        [Record::Delivered(1), Record::CardRef(RunId(2), MessageRef("m7".into()))]
    );
}

#[test]
fn lines_keep_their_order_and_callbacks_run_in_turn() {
    let t0 = Instant::now();
    let mut q = RoomQueue::new(room("ops"), Capabilities::default(), None);
    let mut id = 0;
    let batch: Vec<Message> = (1..=3)
        .map(|n| message(None, &format!("line {n}"), MessageKind::Reply))
        .collect();
    queue_rows(&mut q, rows(&batch, |_| Capabilities::default()), &mut id);
    let fired = Arc::new(AtomicUsize::new(0));
    let f = fired.clone();
    q.push_then(Box::new(move || {
        f.fetch_add(1, Ordering::SeqCst);
    }));
    let mut seen = Vec::new();
    loop {
        match q.next(t0) {
            Next::Deliver(out, attempt) => {
                assert_eq!(
                    fired.load(Ordering::SeqCst),
                    0,
                    "the callback waits for the lines before it"
                );
                seen.push(out.text());
                if out.text() == "line 2" && seen.len() == 2 {
                    // The room refuses once: the same line comes again, not the next one.
                    q.done(attempt, &out, Err(DeliveryError::transient("not joined")), t0);
                    assert!(q.failing());
                    continue;
                }
                q.done(attempt, &out, ok("x"), t0);
            }
            Next::Run(f) => f(),
            Next::Idle => break,
            Next::WaitUntil(_) => panic!("nothing waits here"),
        }
    }
    assert_eq!(seen, ["line 1", "line 2", "line 2", "line 3"]);
    assert_eq!(fired.load(Ordering::SeqCst), 1);
    assert!(!q.failing());
}

#[test]
fn a_mirror_room_gives_up_after_the_bound_and_says_so_once() {
    let t0 = Instant::now();
    let give_up = Duration::from_secs(60);
    let mut q = RoomQueue::new(room("mirror"), Capabilities::default(), Some(give_up));
    let mut id = 0;
    let batch: Vec<Message> = (1..=3)
        .map(|n| message(Some(1), &format!("#1 [{n}/8]"), MessageKind::Progress))
        .collect();
    queue_rows(&mut q, rows(&batch, |_| Capabilities::default()), &mut id);
    let refused = || Err(DeliveryError::transient("members only"));
    let (out, attempt) = next_delivery(&mut q, t0);
    assert_eq!(q.done(attempt, &out, refused(), t0), None, "within the bound it waits");
    let (out, attempt) = next_delivery(&mut q, t0 + Duration::from_secs(30));
    assert_eq!(q.done(attempt, &out, refused(), t0 + Duration::from_secs(30)), None);
    assert_eq!(out.id, 1, "still the first line");
    let late = t0 + give_up;
    let (out, attempt) = next_delivery(&mut q, late);
    assert_eq!(
        q.done(attempt, &out, refused(), late),
        Some(Report::MirrorGaveUp {
            run: Some(RunId(1)),
            reason: "members only".into()
        })
    );
    // Given up: every further line gets one attempt, and no second report.
    let (out, attempt) = next_delivery(&mut q, late);
    assert_eq!(out.id, 2);
    assert_eq!(q.done(attempt, &out, refused(), late), None);
    assert_eq!(
        q.take_records(),
        [
            Record::Dropped(1, "undeliverable: members only".into()),
            Record::Dropped(2, "undeliverable: members only".into())
        ]
    );
    // The room takes messages again.
    let (out, attempt) = next_delivery(&mut q, late);
    assert_eq!(q.done(attempt, &out, ok("m1"), late), Some(Report::MirrorBack));
    assert!(q.is_empty());
}

#[test]
fn the_runs_own_room_never_drops_a_message() {
    let t0 = Instant::now();
    let mut q = RoomQueue::new(room("ops"), Capabilities::default(), None);
    let mut id = 0;
    queue_rows(
        &mut q,
        rows(&[message(Some(1), "#1 succeeded", MessageKind::Notice)], |_| {
            Capabilities::default()
        }),
        &mut id,
    );
    for hours in [0u64, 1, 24, 240] {
        let now = t0 + Duration::from_secs(hours * 3600);
        let (out, attempt) = next_delivery(&mut q, now);
        assert_eq!(q.done(attempt, &out, Err(DeliveryError::transient("down")), now), None);
    }
    assert_eq!(q.len(), 1);
    assert!(q.take_records().is_empty());
}

fn answer(id: i64, text: &str) -> Outbound {
    Outbound {
        id,
        room: room("ops"),
        run: None,
        body: Rich::from(text),
        card: None,
        edit: None,
    }
}

#[test]
fn answers_in_a_row_are_taken_together_and_failed_ones_go_back_in_order() {
    let now = Instant::now();
    let mut q = RoomQueue::new(room("ops"), Capabilities::default(), None);
    q.push_answer(answer(-1, "one"));
    assert!(q.take_answers().is_empty(), "a single answer goes the usual way");
    q.push_answer(answer(-2, "two"));
    q.push_answer(answer(-3, "three"));
    q.push(Queued {
        id: 7,
        row: rows(&[message(None, "a line", MessageKind::Reply)], |_| {
            Capabilities::default()
        })
        .pop()
        .expect("one row"),
    });
    q.push_answer(answer(-4, "after the line"));
    let taken: Vec<i64> = q.take_answers().iter().map(|a| a.id).collect();
    assert_eq!(
        taken,
        vec![-1, -2, -3],
        "the answers before the journaled line, not after it"
    );
    assert_eq!(q.len(), 2);
    // Two of them could not be delivered: they go back in front of the line, in their order,
    // and while the room is failing answers go one at a time.
    q.put_back(vec![answer(-2, "two"), answer(-3, "three")], now);
    assert!(q.failing());
    assert!(q.take_answers().is_empty());
    let Next::Deliver(first, attempt) = q.next(now) else {
        panic!("a delivery is next")
    };
    assert_eq!(first.id, -2);
    assert!(q.done(attempt, &first, Ok(Delivered::default()), now).is_none());
    assert!(!q.failing(), "a delivery ends the failing");
    let Next::Deliver(second, _) = q.next(now) else {
        panic!("a delivery is next")
    };
    assert_eq!(second.id, -3);
    // A mirror room never takes answers together.
    let mut mirror = RoomQueue::new(room("mirror"), Capabilities::default(), Some(Duration::from_secs(60)));
    mirror.push_answer(answer(-5, "a"));
    mirror.push_answer(answer(-6, "b"));
    assert!(mirror.take_answers().is_empty());
}

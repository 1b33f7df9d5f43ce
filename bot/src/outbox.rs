//! The outbox: what a batch's messages become in each room (lines, and card updates where the
//! platform edits cards), and the queue of one room — lines in order, one pending card update
//! per run with the latest winning, edits spaced by the platform's interval, a mirror room that
//! gives up after a bounded time without holding anyone else. Pure: the daemon's room tasks
//! drive it with the time and the adapter's answers.

use crate::chat::{Capabilities, Delivered, DeliveryError, MessageRef, Outbound, Rich, RoomRef, RunCard};
use crate::engine::{Message, MessageKind};
use crate::run::RunId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The two lanes of a room's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    /// A message of its own, delivered in order.
    Line,
    /// The run's card as it should look now: only the latest one matters.
    Card,
}

impl Lane {
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Line => "line",
            Lane::Card => "card",
        }
    }

    pub fn parse(s: &str) -> Option<Lane> {
        match s {
            "line" => Some(Lane::Line),
            "card" => Some(Lane::Card),
            _ => None,
        }
    }
}

/// One row to commit to the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub room: RoomRef,
    pub run: Option<RunId>,
    pub lane: Lane,
    pub body: Rich,
    pub card: Option<RunCard>,
}

/// A committed row, with the id the store gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    pub id: i64,
    pub row: Row,
}

/// The rows a batch's messages become, given what each room's platform can do. A platform
/// without cards gets every message as a line (as the console and XMPP always did); one with
/// cards gets a card update for every message about a run, and a line only for notices and
/// replies (step progress shows on the card alone).
pub fn rows(messages: &[Message], caps: impl Fn(&RoomRef) -> Capabilities) -> Vec<Row> {
    let mut out = Vec::new();
    for m in messages {
        let cards = caps(&m.room).cards;
        match (&m.card, m.run) {
            (Some(card), Some(run)) if cards => {
                if m.kind != MessageKind::Progress {
                    out.push(Row {
                        room: m.room.clone(),
                        run: Some(run),
                        lane: Lane::Line,
                        body: m.body.clone(),
                        card: Some(card.clone()),
                    });
                }
                out.push(Row {
                    room: m.room.clone(),
                    run: Some(run),
                    lane: Lane::Card,
                    body: m.body.clone(),
                    card: Some(card.clone()),
                });
            }
            _ => out.push(Row {
                room: m.room.clone(),
                run: m.run,
                lane: Lane::Line,
                body: m.body.clone(),
                card: None,
            }),
        }
    }
    out
}

/// What the store should record after a delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Delivered(i64),
    /// Recorded as not delivered, with the reason (kept for the audit).
    Dropped(i64, String),
    /// The reference of a run's card in this room.
    CardRef(RunId, MessageRef),
    /// The card of a run in this room is gone (deleted): a new one will be posted.
    CardGone(RunId),
}

/// Something the room reports to the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// A mirror room could not take messages for the give-up time: they are recorded as
    /// undeliverable there. Said once per outage of the room.
    MirrorGaveUp { run: Option<RunId>, reason: String },
    /// A mirror room that had given up takes messages again.
    MirrorBack,
}

/// An item of the line lane.
pub enum Item {
    Row(Queued),
    /// An answer that changed no state, delivered without the outbox.
    Answer(Outbound),
    /// Something to do once everything before it was delivered (or dropped).
    Then(Box<dyn FnOnce() + Send>),
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Row(q) => write!(f, "Row({})", q.id),
            Item::Answer(o) => write!(f, "Answer({})", o.id),
            Item::Then(_) => f.write_str("Then"),
        }
    }
}

/// Which item an attempt was for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    Line,
    Card(RunId),
}

/// What to do next.
#[allow(clippy::large_enum_variant)] // returned once per delivery and taken apart at once
pub enum Next {
    /// Deliver this, then call [`RoomQueue::done`].
    Deliver(Outbound, Attempt),
    /// Run this (an [`Item::Then`] reached), then ask again.
    Run(Box<dyn FnOnce() + Send>),
    /// Nothing is due before this instant (a card edit waiting for the platform's interval).
    WaitUntil(Instant),
    /// Nothing to do.
    Idle,
}

/// The queue of one room.
pub struct RoomQueue {
    pub room: RoomRef,
    caps: Capabilities,
    /// For a mirror room: how long it may fail before its messages are recorded undeliverable.
    give_up: Option<Duration>,
    lines: VecDeque<Item>,
    /// The latest card update per run, not yet shown.
    cards: BTreeMap<RunId, Queued>,
    refs: HashMap<RunId, MessageRef>,
    /// The card last shown per run (an identical update is not sent again).
    shown: HashMap<RunId, RunCard>,
    last_edit: HashMap<RunId, Instant>,
    failing_since: Option<Instant>,
    gave_up: bool,
    records: Vec<Record>,
}

impl RoomQueue {
    /// `give_up` is set for mirror rooms only: the run's own room never drops a message.
    pub fn new(room: RoomRef, caps: Capabilities, give_up: Option<Duration>) -> RoomQueue {
        RoomQueue {
            room,
            caps,
            give_up,
            lines: VecDeque::new(),
            cards: BTreeMap::new(),
            refs: HashMap::new(),
            shown: HashMap::new(),
            last_edit: HashMap::new(),
            failing_since: None,
            gave_up: false,
            records: Vec::new(),
        }
    }

    /// A card posted before (from the store, at start).
    pub fn know_card(&mut self, run: RunId, reference: MessageRef) {
        self.refs.insert(run, reference);
    }

    /// Undelivered items: rows, answers and pending card updates.
    pub fn len(&self) -> usize {
        self.lines.iter().filter(|i| !matches!(i, Item::Then(_))).count() + self.cards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes what the store should record now.
    pub fn take_records(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.records)
    }

    pub fn push(&mut self, q: Queued) {
        match q.row.lane {
            Lane::Line => self.lines.push_back(Item::Row(q)),
            Lane::Card => {
                let Some(run) = q.row.run else {
                    self.records
                        .push(Record::Dropped(q.id, "a card update without a run".into()));
                    return;
                };
                if let Some(old) = self.cards.insert(run, q) {
                    self.records
                        .push(Record::Dropped(old.id, "superseded by a later update".into()));
                }
            }
        }
    }

    pub fn push_answer(&mut self, answer: Outbound) {
        self.lines.push_back(Item::Answer(answer));
    }

    /// The read-only answers at the front of the queue when there are several in a row, taken
    /// out together to be sent as one run; none in a mirror room or while the room is failing
    /// (those go one at a time). [`RoomQueue::put_back`] returns the ones to try again.
    pub fn take_answers(&mut self) -> Vec<Outbound> {
        let in_a_row = self.lines.iter().take_while(|i| matches!(i, Item::Answer(_))).count();
        if in_a_row < 2 || self.give_up.is_some() || self.failing_since.is_some() {
            return Vec::new();
        }
        self.lines
            .drain(..in_a_row)
            .filter_map(|i| match i {
                Item::Answer(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    /// Puts answers taken by [`RoomQueue::take_answers`] back at the front, in their order, and
    /// notes the room as failing since `now` (they could not be delivered).
    pub fn put_back(&mut self, answers: Vec<Outbound>, now: Instant) {
        if answers.is_empty() {
            return;
        }
        self.failing_since.get_or_insert(now);
        for a in answers.into_iter().rev() {
            self.lines.push_front(Item::Answer(a));
        }
    }

    pub fn push_then(&mut self, f: Box<dyn FnOnce() + Send>) {
        self.lines.push_back(Item::Then(f));
    }

    /// Whether a line still waiting will post run `run`'s card.
    fn line_opens_card(&self, run: RunId) -> bool {
        self.lines
            .iter()
            .any(|i| matches!(i, Item::Row(q) if q.row.run == Some(run) && q.row.card.is_some()))
    }

    /// The next thing to do at `now`.
    pub fn next(&mut self, now: Instant) -> Next {
        match self.lines.front() {
            Some(Item::Then(_)) => {
                let Some(Item::Then(f)) = self.lines.pop_front() else {
                    unreachable!("the front was just seen to be a Then")
                };
                return Next::Run(f);
            }
            Some(Item::Answer(a)) => return Next::Deliver(a.clone(), Attempt::Line),
            Some(Item::Row(q)) => {
                let row = &q.row;
                // A line carrying its run's card opens the card where there is none yet.
                let opens = self.caps.cards && row.run.is_some_and(|r| !self.refs.contains_key(&r));
                let card = if opens { row.card.clone() } else { None };
                let out = Outbound {
                    id: q.id,
                    room: row.room.clone(),
                    run: row.run,
                    body: row.body.clone(),
                    card,
                    edit: None,
                };
                return Next::Deliver(out, Attempt::Line);
            }
            None => {}
        }
        let mut earliest: Option<Instant> = None;
        let runs: Vec<RunId> = self.cards.keys().copied().collect();
        for run in runs {
            if self.line_opens_card(run) {
                continue;
            }
            let q = &self.cards[&run];
            if self.shown.get(&run) == q.row.card.as_ref() {
                let q = self.cards.remove(&run).expect("the run's card update was just read");
                self.records.push(Record::Delivered(q.id));
                continue;
            }
            if let (Some(last), Some(_)) = (self.last_edit.get(&run), self.refs.get(&run)) {
                let due = *last + self.caps.edit_interval;
                if due > now {
                    earliest = Some(earliest.map_or(due, |e| e.min(due)));
                    continue;
                }
            }
            let out = Outbound {
                id: q.id,
                room: q.row.room.clone(),
                run: Some(run),
                body: q.row.body.clone(),
                card: q.row.card.clone(),
                edit: self.refs.get(&run).cloned(),
            };
            return Next::Deliver(out, Attempt::Card(run));
        }
        match earliest {
            Some(at) => Next::WaitUntil(at),
            None => Next::Idle,
        }
    }

    /// Takes the outcome of delivering what [`RoomQueue::next`] gave. Returns a report for the
    /// daemon when the room's state changed (a mirror room gave up or came back).
    pub fn done(
        &mut self,
        attempt: Attempt,
        delivered: &Outbound,
        result: Result<Delivered, DeliveryError>,
        now: Instant,
    ) -> Option<Report> {
        match result {
            Ok(d) => {
                let back = std::mem::take(&mut self.gave_up);
                self.failing_since = None;
                self.finish(&attempt, delivered, None);
                if let (Some(run), Some(card)) = (delivered.run, &delivered.card) {
                    if delivered.edit.is_none()
                        && let Some(reference) = d.reference
                    {
                        self.refs.insert(run, reference.clone());
                        self.records.push(Record::CardRef(run, reference));
                    }
                    self.shown.insert(run, card.clone());
                    self.last_edit.insert(run, now);
                }
                back.then_some(Report::MirrorBack)
            }
            Err(DeliveryError::Permanent { reason }) => {
                if let (Attempt::Card(run), Some(_)) = (&attempt, &delivered.edit) {
                    // The card message is gone: post a new one at the next turn.
                    self.refs.remove(run);
                    self.shown.remove(run);
                    self.records.push(Record::CardGone(*run));
                    return None;
                }
                self.finish(&attempt, delivered, Some(reason));
                None
            }
            Err(DeliveryError::Transient { reason, .. }) => {
                let since = *self.failing_since.get_or_insert(now);
                let give_up = self.give_up?;
                if !self.gave_up && now.duration_since(since) < give_up {
                    return None;
                }
                // A mirror room that cannot take messages: record this one as undeliverable
                // (and, once given up, every further one that fails at its first attempt).
                self.finish(&attempt, delivered, Some(format!("undeliverable: {reason}")));
                if self.gave_up {
                    return None;
                }
                self.gave_up = true;
                Some(Report::MirrorGaveUp {
                    run: delivered.run,
                    reason,
                })
            }
        }
    }

    /// Removes the attempted item and records its fate.
    fn finish(&mut self, attempt: &Attempt, delivered: &Outbound, dropped: Option<String>) {
        match attempt {
            Attempt::Line => {
                self.lines.pop_front();
            }
            Attempt::Card(run) => {
                // Only the attempted update: a newer one may have replaced it meanwhile.
                if self.cards.get(run).is_some_and(|q| q.id == delivered.id) {
                    self.cards.remove(run);
                }
            }
        }
        if delivered.id > 0 {
            self.records.push(match dropped {
                None => Record::Delivered(delivered.id),
                Some(why) => Record::Dropped(delivered.id, why),
            });
        }
    }

    /// Whether the last attempts failed (the task backs off).
    pub fn failing(&self) -> bool {
        self.failing_since.is_some()
    }

    /// Whether this mirror room has given up (each message then gets one attempt).
    pub fn gave_up(&self) -> bool {
        self.gave_up
    }
}

#[cfg(test)]
mod tests;

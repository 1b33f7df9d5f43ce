//! One task per room: delivers the room's queue ([`RoomQueue`]) through its platform's adapter,
//! records each fate in the store (without waiting for it), backs off while the platform
//! refuses, and wakes the moment the adapter reports the room joined again. A slow or dead room
//! holds only itself: every other room has its own task.

use crate::chat::{ChatAdapter, Link, Outbound, RoomRef};
use crate::outbox::{Next, Queued, Record, Report, RoomQueue};
use crate::store::StoreActor;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Work for a room's task.
#[allow(clippy::large_enum_variant)] // one per message, moved once; boxing buys nothing here
pub enum RoomCmd {
    Rows(Vec<Queued>),
    Answer(Outbound),
    Then(Box<dyn FnOnce() + Send>),
}

/// The daemon's side of a room's task.
pub struct RoomHandle {
    tx: mpsc::UnboundedSender<RoomCmd>,
    /// Items sent to the task and not yet taken into its queue, plus the queue's own length.
    backlog: Arc<AtomicUsize>,
}

impl RoomHandle {
    /// Hands work to the room's task (never waits).
    pub fn send(&self, cmd: RoomCmd) {
        let n = match &cmd {
            RoomCmd::Rows(rows) => rows.len(),
            RoomCmd::Answer(_) => 1,
            RoomCmd::Then(_) => 0,
        };
        self.backlog.fetch_add(n, Ordering::AcqRel);
        if self.tx.send(cmd).is_err() {
            self.backlog.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Items not yet delivered (or dropped) in this room.
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Acquire)
    }
}

/// A report from a room's task to the daemon.
pub struct RoomReport {
    pub room: RoomRef,
    pub report: Report,
}

/// Backoff while a room refuses: from `FIRST`, doubling, at most `MAX`; reset by a delivery or
/// by the adapter reporting the room joined.
const FIRST: Duration = Duration::from_millis(250);
const MAX: Duration = Duration::from_secs(30);

/// Whether the adapter says the room can take messages now (true when it does not say).
fn ready(link: &Option<watch::Receiver<Link>>, room: &RoomRef) -> bool {
    link.as_ref()
        .is_none_or(|l| l.borrow().online && l.borrow().joined.contains(&room.id))
}

/// Starts the task of `queue.room`.
pub fn spawn(
    mut queue: RoomQueue,
    adapter: Arc<dyn ChatAdapter>,
    store: StoreActor,
    reports: mpsc::UnboundedSender<RoomReport>,
    stop: CancellationToken,
    acting: super::Acting,
) -> RoomHandle {
    let (tx, mut rx) = mpsc::unbounded_channel::<RoomCmd>();
    let backlog = Arc::new(AtomicUsize::new(0));
    let counted = backlog.clone();
    tokio::spawn(async move {
        let room = queue.room.clone();
        let mut link = adapter.link();
        let mut backoff = FIRST;
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            // Take everything waiting first: a burst of card updates becomes one edit.
            loop {
                match rx.try_recv() {
                    Ok(cmd) => take(&mut queue, cmd, &counted),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            let mut wait: Option<tokio::time::Instant> = None;
            if retry_at.is_none_or(|at| at <= tokio::time::Instant::now()) {
                retry_at = None;
                // Read-only answers in a row (a burst of commands) go out together where the
                // platform keeps the order of what is sent; each still waits for its own
                // confirmation, but not for the one before it.
                let before = queue.len();
                let answers = if adapter.ordered_sends() {
                    queue.take_answers()
                } else {
                    Vec::new()
                };
                if !answers.is_empty() {
                    // join_all polls them in order, so each is handed to the adapter in order.
                    let results = tokio::select! {
                        r = futures::future::join_all(answers.iter().map(|a| adapter.deliver(a))) => r,
                        _ = stop.cancelled() => return,
                    };
                    let mut again = Vec::new();
                    let mut pause = None;
                    for (a, result) in answers.into_iter().zip(results) {
                        match result {
                            Ok(_) => {}
                            Err(crate::chat::DeliveryError::Transient { reason, retry_after }) => {
                                tracing::info!(room = %room, id = a.id, reason = %reason, "room not reachable; its messages wait");
                                pause = Some(retry_after);
                                again.push(a);
                            }
                            Err(crate::chat::DeliveryError::Permanent { reason }) => {
                                tracing::warn!(room = %room, id = a.id, reason = %reason, "the platform refuses this message for good");
                            }
                        }
                    }
                    queue.put_back(again, Instant::now());
                    settle(&counted, before, queue.len());
                    match pause {
                        Some(after) => {
                            let pause = after.unwrap_or(backoff);
                            backoff = (backoff * 2).min(MAX);
                            retry_at = Some(tokio::time::Instant::now() + pause);
                        }
                        None => backoff = FIRST,
                    }
                    continue;
                }
                match queue.next(Instant::now()) {
                    Next::Run(f) => {
                        f();
                        continue;
                    }
                    Next::Deliver(out, attempt) => {
                        if !acting() {
                            // A replica that lost its lease posts nothing more; the one that
                            // leads now delivers the outbox.
                            tracing::warn!(room = %room, id = out.id, "not delivered: this replica no longer leads");
                            stop.cancelled().await;
                            return;
                        }
                        let before = queue.len();
                        let result = tokio::select! {
                            r = adapter.deliver(&out) => r,
                            _ = stop.cancelled() => return,
                        };
                        let failed = match &result {
                            Err(crate::chat::DeliveryError::Transient { reason, retry_after }) => {
                                tracing::info!(room = %room, id = out.id, reason = %reason, "room not reachable; its messages wait");
                                Some(*retry_after)
                            }
                            Err(crate::chat::DeliveryError::Permanent { reason }) => {
                                tracing::warn!(room = %room, id = out.id, reason = %reason, "the platform refuses this message for good");
                                None
                            }
                            Ok(_) => None,
                        };
                        if let Some(report) = queue.done(attempt, &out, result, Instant::now()) {
                            let _ = reports.send(RoomReport {
                                room: room.clone(),
                                report,
                            });
                        }
                        // The record is durable before the next message goes out, so a crash
                        // repeats at most the message in hand (delivery is at least once).
                        tokio::select! {
                            _ = record(&store, &room, queue.take_records()) => {}
                            _ = stop.cancelled() => return,
                        }
                        settle(&counted, before, queue.len());
                        match failed {
                            // A mirror room that gave up has recorded this message undeliverable:
                            // the next one gets its single attempt at once, not after a pause.
                            Some(_) if queue.gave_up() => backoff = FIRST,
                            Some(after) => {
                                let pause = after.unwrap_or(backoff);
                                backoff = (backoff * 2).min(MAX);
                                retry_at = Some(tokio::time::Instant::now() + pause);
                            }
                            None => backoff = FIRST,
                        }
                        continue;
                    }
                    Next::WaitUntil(at) => wait = Some(tokio::time::Instant::from_std(at)),
                    Next::Idle => {}
                }
                record(&store, &room, queue.take_records()).await;
            } else if let Some(at) = retry_at {
                wait = Some(at);
            }
            let linked = link.is_some();
            tokio::select! {
                _ = stop.cancelled() => return,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => take(&mut queue, cmd, &counted),
                    None => return,
                },
                changed = async { link.as_mut().expect("only polled when linked").changed().await }, if linked => {
                    if changed.is_err() {
                        link = None;
                    } else if ready(&link, &room) {
                        // Back in the room: try at once.
                        backoff = FIRST;
                        retry_at = None;
                    }
                }
                _ = sleep_until(wait), if wait.is_some() => {}
            }
        }
    });
    RoomHandle { tx, backlog }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

fn take(queue: &mut RoomQueue, cmd: RoomCmd, counted: &AtomicUsize) {
    let before = queue.len();
    let sent = match cmd {
        RoomCmd::Rows(rows) => {
            let n = rows.len();
            for q in rows {
                queue.push(q);
            }
            n
        }
        RoomCmd::Answer(a) => {
            queue.push_answer(a);
            1
        }
        RoomCmd::Then(f) => {
            queue.push_then(f);
            0
        }
    };
    // The items moved from the channel into the queue (superseded card updates left it).
    counted.fetch_add(queue.len(), Ordering::AcqRel);
    counted.fetch_sub(sent + before, Ordering::AcqRel);
}

fn settle(counted: &AtomicUsize, before: usize, after: usize) {
    counted.fetch_add(after, Ordering::AcqRel);
    counted.fetch_sub(before, Ordering::AcqRel);
}

/// Hands the queue's records to the store's thread and waits until they are written (the
/// daemon's loop never waits for this; only this room's next delivery does).
async fn record(store: &StoreActor, room: &RoomRef, records: Vec<Record>) {
    if records.is_empty() {
        return;
    }
    let room = room.clone();
    let written = store
        .call(move |s| {
            for r in records {
                let result = match &r {
                    Record::Delivered(id) => s.delivered(*id, None),
                    Record::Dropped(id, why) => s.delivered(*id, Some(why)),
                    Record::CardRef(run, reference) => s.set_card(&room, *run, Some(reference)),
                    Record::CardGone(run) => s.set_card(&room, *run, None),
                };
                if let Err(e) = result {
                    tracing::error!(room = %room, error = %e, "cannot record a delivery; it may be posted again after a restart");
                }
            }
            Ok(())
        })
        .await;
    if let Err(e) = written {
        tracing::error!(error = %e, "the store did not take a delivery record");
    }
}

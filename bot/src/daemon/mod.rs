//! The shell around the engine: one loop over chat messages, action reports, store
//! confirmations, room reports, deadlines and shutdown. The loop never waits on a peer or the
//! disk: it hands each batch to the store's thread and acts on it (dispatches actions, hands
//! rows to the rooms' tasks, answers clickers) when the store confirms it is durable; every room
//! delivers its own queue in its own task.
//!
//! Files: `room.rs` (a room's delivery task), `seen.rs` (handled message ids), `supervise.rs`
//! (adapters started again after a failure), `backlog.rs` (each platform's inbound messages,
//! bounded by bytes), `look.rs` (`!status xmpp` looks shared between askers).

pub mod backlog;
pub mod look;
pub mod room;
pub mod seen;
pub mod supervise;

use crate::chat::{
    Ack, ButtonIntent, Capabilities, ChatAdapter, Inbound, InteractionReply, Outbound, ReplyHandle, Rich, RoomRef,
};
use crate::command::{self, Command};
use crate::engine::{Dispatch, Engine, Input, Message, MessageKind, Output, Query};
use crate::event::LiveRoute;
use crate::outbox::{self, Queued, Report, RoomQueue};
use crate::render;
use crate::run::RunId;
use crate::store::actor::StoreThread;
use crate::store::{Batch, Handled, RunRow, Store, StoreActor, StoreError};
use anyhow::Context;
use baton_actions::status::{RouteReader, StatusSettings, gather_xmpp_status};
use baton_actions::{ActionReport, Executor};
use baton_policies::{Platform, Sender};
use chrono::Utc;
use room::{RoomCmd, RoomHandle, RoomReport};
use seen::Seen;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// An action's report, on its way back to the loop.
struct Finished {
    dispatch: Dispatch,
    report: ActionReport,
}

/// A command held until the live route was read (a plan is made from both).
struct Deferred {
    live: LiveRoute,
    input: Input,
    origin: Origin,
}

/// The end of a `!status xmpp` look: its text, for every asker.
struct Reply {
    text: String,
}

/// The adapters' messages on their way to the loop: each platform's backlog (bounded by bytes),
/// a wake-up for the loop, and how many platforms still deliver.
struct Incoming {
    backlog: std::sync::Mutex<backlog::Backlog>,
    wake: tokio::sync::Notify,
    open: std::sync::atomic::AtomicUsize,
}

impl Incoming {
    fn lock(&self) -> std::sync::MutexGuard<'_, backlog::Backlog> {
        // The backlog is a queue of messages; after a panic elsewhere it is still consistent.
        self.backlog.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Moves one platform's messages into its backlog as they come (never waiting: a full backlog
/// drops chatter first, then the new message), counting and logging what is dropped.
async fn forward(
    platform: Platform,
    mut rx: mpsc::Receiver<Inbound>,
    incoming: Arc<Incoming>,
    prefix: String,
    metrics: Option<Arc<crate::metrics::Metrics>>,
) {
    let mut dropped = (0u64, 0u64);
    let mut last_log: Option<Instant> = None;
    while let Some(m) = rx.recv().await {
        let command = m.button.is_some() || command::parse(&prefix, &m.text).is_some();
        let pushed = incoming.lock().push(m, command);
        incoming.wake.notify_one();
        if pushed.chatter_dropped == 0 && !pushed.command_dropped {
            continue;
        }
        dropped.0 += pushed.chatter_dropped as u64;
        dropped.1 += u64::from(pushed.command_dropped);
        if let Some(m) = &metrics {
            m.inbound_dropped(
                platform,
                pushed.chatter_dropped as u64,
                u64::from(pushed.command_dropped),
            );
        }
        // Once when it starts, then at most every 10 s while it goes on.
        if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!(
                platform = %platform,
                chatter_dropped = dropped.0,
                commands_dropped = dropped.1,
                limit_bytes = incoming.lock().limit(),
                "inbound backlog full: messages not yet handled are dropped, chatter first"
            );
            last_log = Some(Instant::now());
            dropped = (0, 0);
        }
    }
    incoming.open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    incoming.wake.notify_one();
}

/// What to do once a batch is durable (or, for answers that wait behind an earlier batch to
/// the same room, once that one is).
#[derive(Default)]
struct After {
    dispatches: Vec<Dispatch>,
    reply: Option<(ReplyHandle, InteractionReply)>,
    answers: Vec<Outbound>,
    ack: Option<(RoomRef, Ack)>,
}

/// The store's confirmation of a batch.
struct Committed {
    result: Result<Vec<Queued>, StoreError>,
    after: After,
    /// Rooms this batch (or these answers) had messages for.
    rooms: BTreeSet<RoomRef>,
    /// The last batch of its group: the store is free for the next group.
    last: bool,
}

/// A batch waiting for the store, with what to do once it is durable.
struct Waiting {
    batch: Batch,
    after: After,
    rooms: BTreeSet<RoomRef>,
}

/// How the loop ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Until shutdown (a server).
    Forever,
    /// Until every input has ended, no action is in flight and every room's queue is empty
    /// (the demo with piped input).
    UntilIdle,
}

/// What `!status xmpp` needs besides the engine: where to look, and who reads the route a site
/// reports (the management agent), when there is one.
#[derive(Clone)]
pub struct StatusLook {
    pub settings: StatusSettings,
    pub routes: Option<Arc<dyn RouteReader>>,
}

/// Where an input came from, and what to do besides journaling it.
#[derive(Default)]
struct Origin {
    handled: Option<Handled>,
    reply: Option<ReplyHandle>,
    ack: Option<(RoomRef, Ack)>,
}

/// How long a mirror room may refuse messages before they are recorded undeliverable there.
/// A configuration read again: the engine's part, and the parts built from the new file. `None`
/// keeps the current one (the file could not give a new one).
pub struct Reconfig {
    pub input: Input,
    pub executor: Option<Arc<dyn Executor>>,
    pub status: Option<StatusLook>,
}

/// How long `baton run` drains on SIGTERM: within `docker stop`'s 10 s and systemd's
/// `TimeoutStopSec=30s`.
pub const DRAIN: Duration = Duration::from_secs(8);

pub const MIRROR_GIVE_UP: Duration = Duration::from_secs(60);

/// Whether this replica may act now (dispatch an action, post a message). A single Baton
/// always may; a replica of a shared store only while it leads (`store::leader`).
pub type Acting = Arc<dyn Fn() -> bool + Send + Sync>;

pub struct Daemon {
    engine: Engine,
    store: StoreActor,
    store_thread: Option<StoreThread>,
    executor: Arc<dyn Executor>,
    adapters: HashMap<Platform, Arc<dyn ChatAdapter>>,
    rooms: HashMap<RoomRef, RoomHandle>,
    /// Messages and card references loaded at start, handed to each room's task when it starts.
    backlog: BTreeMap<RoomRef, Vec<Queued>>,
    cards: BTreeMap<RoomRef, Vec<(RunId, crate::chat::MessageRef)>>,
    seen: Seen,
    lifetime: Lifetime,
    /// Actions and queries under way.
    in_flight: usize,
    /// Batches handed to the store and not yet confirmed, in all and per room.
    commits: usize,
    pending: HashMap<RoomRef, usize>,
    /// Group commit: while one group of batches is being written, the batches decided meanwhile
    /// wait here, and go to the store together (one transaction, one flush) when it is done.
    waiting: Vec<Waiting>,
    writing: bool,
    reloads: Option<mpsc::Receiver<Reconfig>>,
    status: Option<StatusLook>,
    /// `!status xmpp` is simulated from the journal (the demo: nothing leaves this machine).
    simulated_status: bool,
    /// Counts what each committed batch says (`/metrics`).
    metrics: Option<Arc<crate::metrics::Metrics>>,
    mirror_give_up: Duration,
    /// Ids of answers delivered without the outbox: negative, so they never meet an outbox id,
    /// and starting from the clock so that two runs of the bot do not reuse them.
    direct_ids: i64,
    missing_platforms: BTreeSet<Platform>,
    clock: Clock,
    /// How long a stop (SIGTERM) waits for actions in flight to report and rooms to drain.
    drain: Duration,
    /// A second stop request: ends at once (the journal keeps what was not finished).
    hard_stop: CancellationToken,
    /// Set once a stop was asked: until when the daemon drains.
    draining: Option<Instant>,
    acting: Acting,
    /// The replica's name, when it has just taken over from another: said once in the room of
    /// each open run.
    takeover: Option<String>,
    /// `!status xmpp` looks in flight and the last one's result.
    looks: look::Looks,
    /// Each platform's inbound backlog bound, in bytes.
    inbound_limit: usize,
    /// Who is in the rooms, per platform that reports it: read when a command comes in, so the
    /// engine calls the approvers present at that moment.
    presence: Vec<(Platform, tokio::sync::watch::Receiver<crate::chat::Presence>)>,
}

/// The engine's time: the wall clock read once at start, advanced by the monotonic clock. A
/// step of the system clock while Baton runs (NTP, an operator) neither stretches nor cuts an
/// approval window; journaled times stay readable as wall-clock times.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall: chrono::DateTime<Utc>,
    mono: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            wall: Utc::now(),
            mono: Instant::now(),
        }
    }

    pub fn now(&self) -> chrono::DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.mono.elapsed()).unwrap_or(chrono::Duration::MAX);
        self.wall.checked_add_signed(elapsed).unwrap_or(self.wall)
    }
}

impl Daemon {
    /// Restores the engine from the store's journal, then moves the store onto its thread.
    pub fn new(
        cfg: crate::engine::EngineConfig,
        mut store: Box<dyn Store>,
        executor: Arc<dyn Executor>,
        adapters: Vec<Arc<dyn ChatAdapter>>,
        lifetime: Lifetime,
    ) -> anyhow::Result<Daemon> {
        let report = store.verify_chain().context("checking the journal")?;
        if !report.intact() {
            anyhow::bail!(
                "the journal does not verify ({}); `baton audit` shows it. Baton will not act on a journal it cannot trust",
                report.problems.join("; ")
            );
        }
        let journal = store.load().context("loading the journal")?;
        let events = journal.len();
        let engine = Engine::restore(cfg, journal);
        let mut seen = Seen::default();
        let since = Utc::now() - chrono::Duration::from_std(seen::MAX_AGE).expect("a week fits a chrono duration");
        let now = Instant::now();
        for h in store.handled_since(since).context("loading handled message ids")? {
            seen.insert(h, now);
        }
        let mut backlog: BTreeMap<RoomRef, Vec<Queued>> = BTreeMap::new();
        for q in store.outbox().context("loading the outbox")? {
            backlog.entry(q.row.room.clone()).or_default().push(q);
        }
        let mut cards: BTreeMap<RoomRef, Vec<_>> = BTreeMap::new();
        for (room, run, reference) in store.cards().context("loading the runs' cards")? {
            cards.entry(room).or_default().push((run, reference));
        }
        tracing::info!(
            events,
            runs = engine.runs().count(),
            undelivered = backlog.values().map(Vec::len).sum::<usize>(),
            "journal loaded"
        );
        let (store, thread) = StoreActor::spawn(store).context("starting the store's thread")?;
        let presence = adapters
            .iter()
            .filter_map(|a| {
                a.presence().map(|mut rx| {
                    // The engine hears the first snapshot too (nobody present yet): a platform
                    // that reports presence never counts as one that cannot.
                    rx.mark_changed();
                    (a.platform(), rx)
                })
            })
            .collect();
        let adapters = adapters.into_iter().map(|a| (a.platform(), a)).collect();
        Ok(Daemon {
            engine,
            store,
            store_thread: Some(thread),
            executor,
            adapters,
            rooms: HashMap::new(),
            backlog,
            cards,
            seen,
            lifetime,
            in_flight: 0,
            commits: 0,
            pending: HashMap::new(),
            waiting: Vec::new(),
            writing: false,
            reloads: None,
            status: None,
            simulated_status: false,
            metrics: None,
            mirror_give_up: MIRROR_GIVE_UP,
            direct_ids: -Utc::now().timestamp_millis(),
            missing_platforms: BTreeSet::new(),
            clock: Clock::start(),
            drain: Duration::ZERO,
            hard_stop: CancellationToken::new(),
            draining: None,
            acting: Arc::new(|| true),
            takeover: None,
            looks: look::Looks::new(look::STATUS_CACHE),
            inbound_limit: backlog::INBOUND_BACKLOG_BYTES,
            presence,
        })
    }

    /// Answers `!status xmpp` from the journal, saying it is simulated (the demo).
    pub fn with_simulated_status(mut self) -> Daemon {
        self.simulated_status = true;
        self
    }

    /// Bounds each platform's inbound backlog to `bytes` (default
    /// [`backlog::INBOUND_BACKLOG_BYTES`]).
    pub fn with_inbound_backlog(mut self, bytes: usize) -> Daemon {
        self.inbound_limit = bytes;
        self
    }

    /// Shares a `!status xmpp` look's result with askers for `cache` after it ended (default
    /// [`look::STATUS_CACHE`]).
    pub fn with_status_cache(mut self, cache: Duration) -> Daemon {
        self.looks = look::Looks::new(cache);
        self
    }

    /// Answers `!status xmpp` by looking from here.
    pub fn with_status(mut self, look: StatusLook) -> Daemon {
        self.status = Some(look);
        self
    }

    /// Counts every committed batch's events in `metrics`; the runs restored from the journal
    /// are learned first, so that their later events are labelled too.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Daemon {
        metrics.learn(self.engine.runs());
        self.metrics = Some(metrics);
        self
    }

    /// Acts (dispatches, posts) only while `acting` says so: a replica that lost its lease
    /// stops at once, even before its loop has noticed.
    pub fn with_acting(mut self, acting: Acting) -> Daemon {
        self.acting = acting;
        self
    }

    /// Says in the room of each open run, once, that this replica (named) took over.
    pub fn with_takeover_notice(mut self, replica: String) -> Daemon {
        self.takeover = Some(replica);
        self
    }

    /// Accepts reloads from a configuration watcher (SIGHUP in `baton run`).
    pub fn with_reloads(mut self, reloads: mpsc::Receiver<Reconfig>) -> Daemon {
        self.reloads = Some(reloads);
        self
    }

    /// On `shutdown`, stop taking commands and wait at most `drain` for the actions in flight
    /// to report and the rooms' queues to empty; `hard_stop` ends the wait at once. Steps that
    /// were due to start are journaled and start at the next start. Without this, `shutdown`
    /// stops at once.
    pub fn with_drain(mut self, drain: Duration, hard_stop: CancellationToken) -> Daemon {
        self.drain = drain;
        self.hard_stop = hard_stop;
        self
    }

    /// How long a mirror room may refuse messages before they are recorded undeliverable there.
    pub fn with_mirror_give_up(mut self, after: Duration) -> Daemon {
        self.mirror_give_up = after;
        self
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs until `shutdown` (or until idle, per the lifetime). The loop runs as a task on the
    /// runtime's worker threads, not in the caller's `block_on`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tokio::spawn(self.serve(shutdown))
            .await
            .context("the daemon's loop panicked")?
    }

    async fn serve(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let incoming = Arc::new(Incoming {
            backlog: std::sync::Mutex::new(backlog::Backlog::new(self.inbound_limit)),
            wake: tokio::sync::Notify::new(),
            open: std::sync::atomic::AtomicUsize::new(self.adapters.len()),
        });
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Finished>();
        let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<Reply>();
        let (commit_tx, mut commit_rx) = mpsc::unbounded_channel::<Committed>();
        let (report_tx, mut report_rx) = mpsc::unbounded_channel::<RoomReport>();
        let (deferred_tx, mut deferred_rx) = mpsc::unbounded_channel::<Deferred>();
        let rooms_stop = CancellationToken::new();
        // The adapters outlive a stop request: a draining daemon still delivers.
        let adapters_stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        let prefix = self.engine.config().prefix.clone();
        for adapter in self.adapters.values() {
            let adapter = adapter.clone();
            // A short channel: the forwarder empties it at once into the platform's backlog.
            let (tx, rx) = mpsc::channel::<Inbound>(64);
            let stop = adapters_stop.child_token();
            tokio::spawn(forward(
                adapter.platform(),
                rx,
                incoming.clone(),
                prefix.clone(),
                self.metrics.clone(),
            ));
            tasks.spawn(supervise::supervise(adapter, tx, stop, supervise::RESTARTS));
        }
        let waiting: Vec<RoomRef> = self.backlog.keys().cloned().collect();
        for room in waiting {
            self.room(&room, &report_tx, &rooms_stop);
        }
        for d in self.engine.resume() {
            tracing::info!(run = %d.run, step = d.step + 1, host = %d.request.action.where_short(), key = %d.request.key,
                "resuming an action that was in flight");
            self.dispatch(d, &done_tx);
        }
        let mut ctx = Ctx {
            done: done_tx,
            replies: reply_tx,
            commits: commit_tx,
            reports: report_tx,
            deferred: deferred_tx,
            rooms_stop: rooms_stop.clone(),
        };
        if let Some(replica) = self.takeover.take() {
            self.say_takeover(&replica, &mut ctx);
        }
        let mut inputs_open = true;
        let (_keep, mut reloads) = match self.reloads.take() {
            Some(rx) => (None, rx),
            None => {
                let (tx, rx) = mpsc::channel(1);
                (Some(tx), rx)
            }
        };
        let result = loop {
            let has_input = inputs_open && !incoming.lock().is_empty();
            if inputs_open && !has_input && incoming.open.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                inputs_open = false;
            }
            if self.lifetime == Lifetime::UntilIdle && !inputs_open && self.idle() {
                break Ok(());
            }
            if let Some(until) = self.draining {
                if self.drained() {
                    tracing::info!("stopped cleanly: no action in flight, every room's queue delivered");
                    break Ok(());
                }
                if Instant::now() >= until {
                    tracing::warn!(
                        in_flight = self.in_flight,
                        "stopping at the drain deadline; what was not finished resumes at the next start"
                    );
                    break Ok(());
                }
            }
            let drain_until = self.draining.unwrap_or_else(Instant::now);
            let deadline = self
                .engine
                .next_deadline()
                .map(|d| (d - self.clock.now()).to_std().unwrap_or(Duration::ZERO));
            let step = tokio::select! {
                biased;
                _ = self.hard_stop.cancelled() => {
                    tracing::warn!("stopping at once (second stop request); what was not finished resumes at the next start");
                    break Ok(());
                }
                _ = shutdown.cancelled(), if self.draining.is_none() => {
                    if self.drain.is_zero() {
                        break Ok(());
                    }
                    tracing::info!(in_flight = self.in_flight, drain_s = self.drain.as_secs_f64(),
                        "stopping: no new commands; waiting for actions in flight to report and the rooms' queues to empty");
                    self.draining = Some(Instant::now() + self.drain);
                    Ok(())
                }
                // Rooms drain on their own tasks: look again shortly, and at the deadline.
                _ = tokio::time::sleep_until(drain_until.min(Instant::now() + Duration::from_millis(50)).into()),
                    if self.draining.is_some() => Ok(()),
                Some(c) = commit_rx.recv() => self.committed(c, &mut ctx),
                Some(done) = done_rx.recv() => {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    let d = done.dispatch;
                    tracing::info!(run = %d.run, step = d.step + 1, action = d.request.action.id(), host = %d.request.action.where_short(),
                        key = %d.request.key, ok = done.report.outcome.is_ok(),
                        replayed = done.report.replayed, elapsed_ms = done.report.elapsed_ms, "action finished");
                    let input = Input::ActionFinished { run: d.run, step: d.step, attempt: d.attempt, action: d.action, report: done.report };
                    self.step(input, Origin::default(), &mut ctx);
                    Ok(())
                }
                Some(r) = report_rx.recv() => {
                    self.room_report(r, &mut ctx);
                    Ok(())
                }
                Some(d) = deferred_rx.recv() => {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    self.step(Input::Observed(d.live), Origin::default(), &mut ctx);
                    self.step(d.input, d.origin, &mut ctx);
                    Ok(())
                }
                Some(reload) = reloads.recv() => {
                    self.reload(reload, &mut ctx);
                    Ok(())
                }
                Some(reply) = reply_rx.recv() => {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    let askers = self.looks.done(reply.text.clone(), Instant::now());
                    let messages = askers.into_iter().map(|room| Message::reply(room, reply.text.as_str())).collect();
                    self.answer(messages, None, None, &mut ctx);
                    Ok(())
                }
                // One message per turn, so that commits, reports and deadlines are not held
                // behind a long backlog.
                _ = std::future::ready(()), if has_input => {
                    let next = incoming.lock().pop();
                    if let Some(m) = next {
                        self.inbound(m, &mut ctx);
                    }
                    Ok(())
                }
                _ = incoming.wake.notified(), if inputs_open && !has_input => Ok(()),
                _ = tokio::time::sleep(deadline.unwrap_or(Duration::from_secs(3600))), if deadline.is_some() => {
                    self.step(Input::Tick, Origin::default(), &mut ctx);
                    Ok(())
                }
                _ = tokio::time::sleep(Duration::from_millis(50)), if !inputs_open => Ok(()),
            };
            if let Err(e) = step {
                break Err(e);
            }
        };
        if let Err(e) = &result {
            self.say_stopped(e).await;
        }
        shutdown.cancel();
        adapters_stop.cancel();
        rooms_stop.cancel();
        tasks.shutdown().await;
        drop(ctx);
        self.rooms.clear();
        // Batches decided while the last group was being written are journaled before the
        // store stops, as they would have been one by one (nothing acts on them any more).
        let left: Vec<Batch> = std::mem::take(&mut self.waiting).into_iter().map(|w| w.batch).collect();
        if !left.is_empty() {
            self.store.send(move |s| {
                for r in s.commit_all(&left) {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "a batch decided before the stop could not be journaled");
                    }
                }
            });
        }
        let Daemon {
            store, store_thread, ..
        } = self;
        drop(store);
        if let Some(thread) = store_thread {
            // The store's last jobs (delivery records) finish before the process ends.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        result
    }

    /// One line in the room of each open run: which replica acts now. Journaled in the outbox
    /// like any message, after what the previous leader left undelivered.
    fn say_takeover(&mut self, replica: &str, ctx: &mut Ctx) {
        let rooms: BTreeSet<RoomRef> = self
            .engine
            .runs()
            .filter(|r| r.phase.is_active())
            .map(|r| r.room.clone())
            .collect();
        if rooms.is_empty() {
            return;
        }
        let messages: Vec<Message> = rooms
            .into_iter()
            .map(|room| Message::reply(room, render::took_over(replica)))
            .collect();
        let rows = outbox::rows(&messages, |room| self.capabilities(room));
        let rooms = rows.iter().map(|r| r.room.clone()).collect();
        let batch = Batch {
            rows,
            ..Default::default()
        };
        self.commit(batch, After::default(), rooms, ctx);
    }

    /// Whether nothing is left to do: no input being handled, no action or query under way,
    /// nothing waiting for the store or for a room.
    fn idle(&self) -> bool {
        self.in_flight == 0
            && self.commits == 0
            && !self.engine.is_executing()
            && self.rooms.values().all(|r| r.backlog() == 0)
    }

    /// Baton stops because it could not journal: says so, best effort and briefly, in every room
    /// it has spoken in and in the room of every run not yet ended, so that nobody waits for a
    /// step that will not come. Straight to the platforms: the outbox is what failed.
    async fn say_stopped(&mut self, error: &anyhow::Error) {
        let mut rooms: BTreeSet<RoomRef> = self.rooms.keys().cloned().collect();
        rooms.extend(
            self.engine
                .runs()
                .filter(|r| r.phase.is_active())
                .map(|r| r.room.clone()),
        );
        let text = format!(
            "Baton has stopped: it could not write its journal ({error:#}). It does not act on what it cannot record; nothing more happens until it is restarted with a writable store, and runs in progress resume from the journal then."
        );
        tracing::error!(
            rooms = rooms.len(),
            "the journal cannot be written; telling the rooms before stopping"
        );
        let mut sends = Vec::new();
        for room in rooms {
            let Some(adapter) = self.adapters.get(&room.platform).cloned() else {
                continue;
            };
            self.direct_ids -= 1;
            let message = Outbound {
                id: self.direct_ids,
                room,
                run: None,
                body: Rich::from(text.as_str()),
                card: None,
                edit: None,
            };
            sends.push(async move {
                let _ = tokio::time::timeout(Duration::from_secs(3), adapter.deliver(&message)).await;
            });
        }
        futures::future::join_all(sends).await;
    }

    /// Whether a stopping daemon is done: nothing in flight, nothing waiting for the store or
    /// for a room that can take it.
    fn drained(&self) -> bool {
        self.in_flight == 0 && self.commits == 0 && self.rooms.values().all(|r| r.backlog() == 0)
    }

    fn inbound(&mut self, m: Inbound, ctx: &mut Ctx) {
        let prefix = self.engine.config().prefix.clone();
        let parsed = match &m.button {
            Some(b) => Some(Ok(command_of(b))),
            None => command::parse(&prefix, &m.text),
        };
        let ack = m.ack.clone().map(|a| (m.room.clone(), a));
        // Ordinary conversation is neither acted on nor recorded.
        let Some(command) = parsed else {
            self.answer(Vec::new(), None, ack, ctx);
            return;
        };
        if self.draining.is_some() {
            // Not taken and not recorded: the sender can send it again once Baton is back.
            let text = "Baton is stopping (a restart or shutdown was asked): this command was not taken; send it again once Baton is back.";
            tracing::info!(room = %m.room, id = %m.message_id, "command refused while stopping");
            let reply = m
                .reply
                .clone()
                .map(|h| (h, InteractionReply::Refused(Rich::from(text))));
            self.answer(vec![Message::reply(m.room.clone(), text)], reply, ack, ctx);
            return;
        }
        let handled = (!m.message_id.is_empty()).then(|| Handled {
            room: m.room.clone(),
            sender: sender_key(&m.sender),
            message_id: m.message_id.clone(),
        });
        if let Some(key) = &handled
            && !self.seen.insert(key.clone(), Instant::now())
        {
            tracing::warn!(room = %m.room, sender = %key.sender, id = %m.message_id, "a message with this id was handled already; ignored");
            self.answer(Vec::new(), None, ack, ctx);
            return;
        }
        tracing::info!(room = %m.room, id = %m.message_id, "command received");
        self.sync_presence();
        let plans = matches!(command, Ok(Command::Failover { .. } | Command::Plan { .. }));
        let input = Input::Chat {
            room: m.room.clone(),
            sender: m.sender,
            command,
        };
        let origin = Origin {
            handled,
            reply: m.reply,
            ack,
        };
        match self
            .status
            .as_ref()
            .and_then(|s| s.routes.clone().map(|r| (r, s.settings.timeout)))
        {
            // A plan is made from the journal and from the route Lync reports now: read it
            // first, in a task; the command is handled when the answer (or the time limit) is in.
            Some((routes, timeout)) if plans => {
                self.in_flight += 1;
                let inventory = self.engine.config().inventory.clone();
                let deferred = ctx.deferred.clone();
                tokio::spawn(async move {
                    let live = observe_route(&inventory, routes.as_ref(), timeout).await;
                    let _ = deferred.send(Deferred { live, input, origin });
                });
            }
            _ => self.step(input, origin, ctx),
        }
    }

    /// Hands the engine who is in the rooms now, for the platforms whose presence changed since
    /// it last heard (it only records it: nothing to journal or say).
    fn sync_presence(&mut self) {
        for (platform, rx) in &mut self.presence {
            if rx.has_changed().unwrap_or(false) {
                let presence = rx.borrow_and_update().clone();
                let out = self.engine.handle(
                    Input::Presence {
                        platform: *platform,
                        presence,
                    },
                    self.clock.now(),
                );
                debug_assert!(out.events.is_empty() && out.messages.is_empty());
            }
        }
    }

    /// A new configuration: the engine takes it or refuses it (a run is under way); only when it
    /// takes it do the executor and the `!status xmpp` look change with it, so a run never sees
    /// its inventory and its executor disagree.
    fn reload(&mut self, reload: Reconfig, ctx: &mut Ctx) {
        let Reconfig {
            input,
            executor,
            status,
        } = reload;
        let out = self.engine.handle(input, self.clock.now());
        if out.reloaded == Some(true) {
            tracing::info!("configuration reloaded; pending plans are resolved again");
            if let Some(executor) = executor {
                self.executor = executor;
            }
            if status.is_some() {
                self.status = status;
            }
        } else {
            tracing::warn!("configuration reload refused while a run is under way; the running configuration stays");
        }
        self.act(out, Origin::default(), ctx);
    }

    /// Feeds the engine, then journals and performs what it decided.
    fn step(&mut self, input: Input, origin: Origin, ctx: &mut Ctx) {
        let out = self.engine.handle(input, self.clock.now());
        self.act(out, origin, ctx);
    }

    /// Hands a batch to the store; what it decided happens when the store confirms it.
    fn act(&mut self, out: Output, origin: Origin, ctx: &mut Ctx) {
        let Output {
            events,
            mut messages,
            dispatches,
            queries,
            reloaded: _,
            silenced,
        } = out;
        if silenced > 0
            && let Some(m) = &self.metrics
        {
            m.refusals_silenced(silenced as u64);
        }
        for q in queries {
            self.query(q, ctx);
        }
        let mut reply = None;
        if let Some(handle) = origin.reply {
            // A button press: answers meant for the asker go to the clicker alone.
            let (asker, room): (Vec<Message>, Vec<Message>) =
                messages.into_iter().partition(|m| m.kind == MessageKind::Reply);
            messages = room;
            // Taken when the press changed the run (journaled, and not as a refusal); then what
            // was meant for the asker (e.g. the approval said in a mirror room) is the card.
            let taken = !events.is_empty()
                && !events
                    .iter()
                    .any(|e| matches!(e.event, crate::event::Event::Refused { .. }));
            let answer = if asker.is_empty() && silenced > 0 {
                // A click must be answered; only the clicker sees it, so the room hears nothing.
                InteractionReply::Refused(Rich::from(render::refusals_silenced()))
            } else if asker.is_empty() || taken {
                InteractionReply::Accepted(messages.iter().find_map(|m| m.card.clone()))
            } else {
                let mut body = Rich::new();
                for (i, m) in asker.into_iter().enumerate() {
                    if i > 0 {
                        body = body.text("\n");
                    }
                    body = body.append(m.body);
                }
                InteractionReply::Refused(body)
            };
            reply = Some((handle, answer));
        }
        if events.is_empty() && dispatches.is_empty() {
            // Nothing changed: answer without the journal (and its disk flush).
            self.answer(messages, reply, origin.ack, ctx);
            return;
        }
        let rows = outbox::rows(&messages, |room| self.capabilities(room));
        let rooms: BTreeSet<RoomRef> = rows.iter().map(|r| r.room.clone()).collect();
        let runs = self.run_rows(&events);
        let batch = Batch {
            events,
            rows,
            runs,
            handled: origin.handled,
        };
        let after = After {
            dispatches,
            reply,
            answers: Vec::new(),
            ack: origin.ack,
        };
        self.commit(batch, after, rooms, ctx);
    }

    fn commit(&mut self, batch: Batch, after: After, rooms: BTreeSet<RoomRef>, ctx: &mut Ctx) {
        self.commits += 1;
        for r in &rooms {
            *self.pending.entry(r.clone()).or_default() += 1;
        }
        self.waiting.push(Waiting { batch, after, rooms });
        if !self.writing {
            self.write(ctx);
        }
    }

    /// Hands the waiting batches to the store as one group; each is confirmed in order.
    fn write(&mut self, ctx: &mut Ctx) {
        if self.waiting.is_empty() {
            return;
        }
        let group = std::mem::take(&mut self.waiting);
        self.writing = true;
        let tx = ctx.commits.clone();
        let metrics = self.metrics.clone();
        let (batches, rest): (Vec<Batch>, Vec<(After, BTreeSet<RoomRef>)>) =
            group.into_iter().map(|w| (w.batch, (w.after, w.rooms))).unzip();
        let sent = self.store.send(move |s| {
            // One result per batch; a store that gave fewer fails the rest rather than leave the
            // loop waiting for the group's end.
            let results = s.commit_all(&batches).into_iter().chain(std::iter::repeat_with(|| {
                Err(StoreError::GroupFailed {
                    why: "the store returned no result for this batch".to_string(),
                })
            }));
            let n = rest.len();
            for (i, ((result, batch), (after, rooms))) in results.zip(&batches).zip(rest).enumerate() {
                // Counted once on the disk, as the journal says it happened.
                if let (Ok(_), Some(m)) = (&result, &metrics) {
                    m.observe(&batch.events);
                }
                let _ = tx.send(Committed {
                    result,
                    after,
                    rooms,
                    last: i + 1 == n,
                });
            }
        });
        if !sent {
            let _ = ctx.commits.send(Committed {
                result: Err(StoreError::Stopped),
                after: After::default(),
                rooms: BTreeSet::new(),
                last: true,
            });
        }
    }

    /// Posts answers that changed no state. They go straight to their rooms, unless a batch
    /// for one of those rooms is still on its way to the disk: then they follow it, in order.
    fn answer(
        &mut self,
        messages: Vec<Message>,
        reply: Option<(ReplyHandle, InteractionReply)>,
        ack: Option<(RoomRef, Ack)>,
        ctx: &mut Ctx,
    ) {
        let answers: Vec<Outbound> = messages
            .into_iter()
            .map(|m| {
                self.direct_ids -= 1;
                Outbound {
                    id: self.direct_ids,
                    room: m.room,
                    run: m.run,
                    body: m.body,
                    card: None,
                    edit: None,
                }
            })
            .collect();
        let rooms: BTreeSet<RoomRef> = answers
            .iter()
            .map(|a| a.room.clone())
            .chain(ack.iter().map(|(r, _)| r.clone()))
            .collect();
        let after = After {
            dispatches: Vec::new(),
            reply,
            answers,
            ack,
        };
        if rooms.iter().any(|r| self.pending.get(r).is_some_and(|n| *n > 0)) {
            self.commit(Batch::default(), after, rooms, ctx);
        } else {
            self.perform(after, ctx);
        }
    }

    /// The store confirmed a batch: now act on it.
    fn committed(&mut self, c: Committed, ctx: &mut Ctx) -> anyhow::Result<()> {
        self.commits = self.commits.saturating_sub(1);
        if c.last {
            self.writing = false;
        }
        for r in &c.rooms {
            if let Some(n) = self.pending.get_mut(r) {
                *n = n.saturating_sub(1);
            }
        }
        let queued = c
            .result
            .context("journaling (Baton stops rather than act on what it could not record)")?;
        let mut by_room: BTreeMap<RoomRef, Vec<Queued>> = BTreeMap::new();
        for q in queued {
            by_room.entry(q.row.room.clone()).or_default().push(q);
        }
        for (room, rows) in by_room {
            if let Some(handle) = self.room(&room, &ctx.reports, &ctx.rooms_stop) {
                handle.send(RoomCmd::Rows(rows));
            }
        }
        self.perform(c.after, ctx);
        if !self.writing {
            self.write(ctx);
        }
        Ok(())
    }

    fn perform(&mut self, after: After, ctx: &mut Ctx) {
        for d in after.dispatches {
            if self.draining.is_some() {
                // Journaled as started: the next start dispatches it under the same key.
                tracing::info!(run = %d.run, step = d.step + 1, host = %d.request.action.where_short(), key = %d.request.key,
                    "stopping: this action starts at the next start");
                continue;
            }
            self.dispatch(d, &ctx.done);
        }
        if let Some((handle, reply)) = after.reply
            && !handle.answer(reply)
        {
            tracing::info!("the clicker's answer came too late for the platform; the room shows the outcome");
        }
        for a in after.answers {
            let room = a.room.clone();
            if let Some(handle) = self.room(&room, &ctx.reports, &ctx.rooms_stop) {
                handle.send(RoomCmd::Answer(a));
            }
        }
        if let Some((room, ack)) = after.ack {
            match self.room(&room, &ctx.reports, &ctx.rooms_stop) {
                Some(handle) => handle.send(RoomCmd::Then(Box::new(move || ack.fire()))),
                None => ack.fire(),
            }
        }
    }

    fn room_report(&mut self, r: RoomReport, ctx: &mut Ctx) {
        match r.report {
            Report::MirrorGaveUp { run, reason } => {
                tracing::warn!(room = %r.room, reason = %reason, "mirror room unreachable; its messages are recorded as undeliverable");
                let Some(home) = run.and_then(|id| self.engine.run(id)).map(|run| run.room.clone()) else {
                    return;
                };
                let msg = Message::reply(home, render::mirror_unreachable(&r.room, &reason));
                let rows = outbox::rows(std::slice::from_ref(&msg), |room| self.capabilities(room));
                let rooms = rows.iter().map(|r| r.room.clone()).collect();
                let batch = Batch {
                    rows,
                    ..Default::default()
                };
                self.commit(batch, After::default(), rooms, ctx);
            }
            Report::MirrorBack => tracing::info!(room = %r.room, "mirror room takes messages again"),
        }
    }

    fn query(&mut self, q: Query, ctx: &mut Ctx) {
        match q {
            Query::StatusXmpp { room } if self.simulated_status => {
                let text = render::status_xmpp_simulated(&self.engine.config().inventory, self.engine.world());
                self.answer(vec![Message::reply(room, text)], None, None, ctx);
            }
            Query::StatusXmpp { room } => match self.looks.ask(room.clone(), Instant::now()) {
                look::Ask::Cached { text, age } => {
                    tracing::info!(room = %room, age_ms = age.as_millis() as u64, "!status xmpp answered from the last look");
                    let text = render::status_xmpp_cached(&text, age, self.looks.cache());
                    self.answer(vec![Message::reply(room, text)], None, None, ctx);
                }
                look::Ask::Joined => {
                    tracing::info!(room = %room, "!status xmpp joins the look in flight");
                }
                look::Ask::Start => {
                    tracing::info!(room = %room, "!status xmpp: looking");
                    self.in_flight += 1;
                    let replies = ctx.replies.clone();
                    let look = self.status.clone();
                    let inventory = self.engine.config().inventory.clone();
                    let holder = self.engine.route_holder().cloned();
                    tokio::spawn(async move {
                        let text = match look {
                            Some(look) => {
                                let status =
                                    gather_xmpp_status(&inventory, &look.settings, look.routes.as_deref()).await;
                                render::status_xmpp(&status, holder.as_ref())
                            }
                            None => render::status_xmpp_unavailable(),
                        };
                        let _ = replies.send(Reply { text });
                    });
                }
            },
        }
    }

    fn capabilities(&self, room: &RoomRef) -> Capabilities {
        self.adapters
            .get(&room.platform)
            .map(|a| a.capabilities())
            .unwrap_or_default()
    }

    /// The room's task, started on first use.
    fn room(
        &mut self,
        room: &RoomRef,
        reports: &mpsc::UnboundedSender<RoomReport>,
        stop: &CancellationToken,
    ) -> Option<&RoomHandle> {
        if !self.rooms.contains_key(room) {
            let Some(adapter) = self.adapters.get(&room.platform).cloned() else {
                if self.missing_platforms.insert(room.platform) {
                    tracing::warn!(room = %room, "messages wait for a platform that is not enabled");
                }
                return None;
            };
            let mirror = self.engine.config().mirror_rooms.contains(room);
            let mut queue = RoomQueue::new(
                room.clone(),
                adapter.capabilities(),
                mirror.then_some(self.mirror_give_up),
            );
            for (run, reference) in self.cards.remove(room).unwrap_or_default() {
                queue.know_card(run, reference);
            }
            let handle = room::spawn(
                queue,
                adapter,
                self.store.clone(),
                reports.clone(),
                stop.child_token(),
                self.acting.clone(),
            );
            if let Some(rows) = self.backlog.remove(room) {
                handle.send(RoomCmd::Rows(rows));
            }
            self.rooms.insert(room.clone(), handle);
        }
        self.rooms.get(room)
    }

    fn run_rows(&self, events: &[crate::event::Recorded]) -> Vec<RunRow> {
        let touched: BTreeSet<RunId> = events.iter().filter_map(|r| r.event.run()).collect();
        touched
            .into_iter()
            .filter_map(|id| self.engine.run(id))
            .map(|r| RunRow {
                id: r.id,
                phase: r.phase.name().to_string(),
                requester: r.requester.to_string(),
                from_pool: r.plan.from_pool.as_ref().map(|p| p.to_string()),
                to_pool: r.plan.to_pool.to_string(),
                requested_at: r.requested_at.to_rfc3339(),
                finished_at: r.finished_at.map(|t| t.to_rfc3339()),
            })
            .collect()
    }

    fn dispatch(&mut self, d: Dispatch, done: &mpsc::UnboundedSender<Finished>) {
        if !(self.acting)() {
            // The journal holds the step as started: the replica that leads now resumes it
            // with the same key.
            tracing::warn!(run = %d.run, step = d.step + 1, key = %d.request.key, "not dispatched: this replica no longer leads");
            return;
        }
        tracing::info!(run = %d.run, step = d.step + 1, action = d.request.action.id(), host = %d.request.action.where_short(),
            key = %d.request.key, "action dispatched");
        self.in_flight += 1;
        let (executor, done) = (self.executor.clone(), done.clone());
        tokio::spawn(async move {
            let report = executor.execute(d.request.clone()).await;
            let _ = done.send(Finished { dispatch: d, report });
        });
    }
}

/// The loop's channels, handed to what it starts.
struct Ctx {
    done: mpsc::UnboundedSender<Finished>,
    replies: mpsc::UnboundedSender<Reply>,
    commits: mpsc::UnboundedSender<Committed>,
    reports: mpsc::UnboundedSender<RoomReport>,
    deferred: mpsc::UnboundedSender<Deferred>,
    rooms_stop: CancellationToken,
}

/// The command a button stands for: the plan it was shown with travels along.
fn command_of(b: &ButtonIntent) -> Command {
    match b {
        ButtonIntent::Approve { run, plan } => Command::Approve {
            run: *run,
            plan: Some(plan.clone()),
        },
        ButtonIntent::Deny { run, .. } => Command::Deny {
            run: *run,
            reason: None,
        },
    }
}

/// The route each site reports now, read in parallel within `timeout`, and the pool it names.
async fn observe_route(inventory: &baton_actions::Inventory, routes: &dyn RouteReader, timeout: Duration) -> LiveRoute {
    let reads = inventory.sites.iter().map(|site| async move {
        let read = tokio::time::timeout(timeout, routes.route(site))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}", humantime::format_duration(timeout))));
        (site, read)
    });
    let read = futures::future::join_all(reads).await;
    let mut pool = None;
    let mut seen = Vec::new();
    for (site, route) in read {
        match route {
            Ok(text) => {
                let fqdn = text
                    .strip_prefix("EdgeServer:")
                    .or_else(|| text.strip_prefix("edgeserver:"))
                    .unwrap_or(&text);
                if let Some(p) = inventory
                    .pools
                    .iter()
                    .find(|p| p.fqdn.as_str().eq_ignore_ascii_case(fqdn))
                {
                    pool.get_or_insert_with(|| p.name.clone());
                }
                seen.push(format!("{text} ({site})"));
            }
            Err(why) => seen.push(format!("unknown at {site}: {why}")),
        }
    }
    LiveRoute {
        pool,
        seen: seen.join(", "),
    }
}

/// The sender as recorded with a handled message id.
fn sender_key(sender: &Sender) -> String {
    match sender {
        Sender::Verified(id) => id.to_string(),
        Sender::Unverified { display, .. } => format!("unverified:{display}"),
    }
}

#[cfg(test)]
mod tests;

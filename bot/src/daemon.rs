//! The shell around the engine: one loop over chat messages, action reports, deadlines and
//! shutdown. It journals every batch before acting on it, dispatches actions to the executor,
//! and delivers the outbox to the chat adapters in order.

use crate::adapters::console::Turns;
use crate::chat::{ButtonIntent, ChatAdapter, DeliveryError, Inbound, RoomRef};
use crate::command::{self, Command};
use crate::engine::{Dispatch, Engine, Input, Message, Output, Query};
use crate::render;
use crate::run::RunId;
use crate::store::{Batch, RunRow, Store};
use anyhow::Context;
use baton_actions::status::{RouteReader, StatusSettings, gather_xmpp_status};
use baton_actions::{ActionReport, Executor};
use baton_policies::Platform;
use chrono::Utc;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

type SharedStore = Arc<Mutex<Box<dyn Store>>>;

/// An action's report, on its way back to the loop.
struct Finished {
    dispatch: Dispatch,
    report: ActionReport,
}

/// Something the shell itself says (answers to queries that needed the network).
struct Reply {
    room: RoomRef,
    text: String,
}

/// How the loop ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Until shutdown (a server).
    Forever,
    /// Until every input has ended, no action is in flight and the outbox is empty (the demo
    /// with piped input).
    UntilIdle,
}

/// One chat platform: its adapter and the lock that keeps its outbox delivered in order.
struct Room {
    adapter: Arc<dyn ChatAdapter>,
    flushing: Arc<tokio::sync::Mutex<()>>,
    wake: Arc<Notify>,
}

pub struct Daemon {
    engine: Engine,
    store: SharedStore,
    executor: Arc<dyn Executor>,
    rooms: HashMap<Platform, Room>,
    turns: Option<Arc<Turns>>,
    lifetime: Lifetime,
    in_flight: usize,
    reloads: Option<mpsc::Receiver<Input>>,
    status: Option<StatusLook>,
    /// Counts what each committed batch says (`/metrics`).
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Ids of answers delivered without the outbox: negative, so they never meet an outbox id,
    /// and starting from the clock so that two runs of the bot do not reuse them.
    direct_ids: i64,
}

/// An output that only answers: no event to journal, nothing to dispatch or look up.
fn answer_only(out: &Output) -> bool {
    out.events.is_empty() && out.dispatches.is_empty() && out.queries.is_empty()
}

/// What `!status xmpp` needs besides the engine: where to look, and who reads the route a site
/// reports (the management agent), when there is one.
#[derive(Clone)]
pub struct StatusLook {
    pub settings: StatusSettings,
    pub routes: Option<Arc<dyn RouteReader>>,
}

fn lock(store: &SharedStore) -> std::sync::MutexGuard<'_, Box<dyn Store>> {
    // A panic while holding the lock would already have ended the process's usefulness; the
    // store itself is transactional, so the data behind a poisoned lock is consistent.
    store.lock().unwrap_or_else(|p| p.into_inner())
}

impl Daemon {
    /// Restores the engine from the store's journal.
    pub fn new(
        cfg: crate::engine::EngineConfig,
        mut store: Box<dyn Store>,
        executor: Arc<dyn Executor>,
        adapters: Vec<Arc<dyn ChatAdapter>>,
        turns: Option<Arc<Turns>>,
        lifetime: Lifetime,
    ) -> anyhow::Result<Daemon> {
        let report = store.verify_chain().context("checking the journal")?;
        if !report.intact() {
            anyhow::bail!(
                "the journal's hash chain is broken ({}); `baton audit` shows it. Baton will not act on a journal it cannot trust",
                report.problems.join("; ")
            );
        }
        let journal = store.load().context("loading the journal")?;
        let events = journal.len();
        let engine = Engine::restore(cfg, journal);
        tracing::info!(events, runs = engine.runs().count(), "journal loaded");
        let rooms = adapters
            .into_iter()
            .map(|a| {
                (
                    a.platform(),
                    Room {
                        adapter: a,
                        flushing: Arc::default(),
                        wake: Arc::new(Notify::new()),
                    },
                )
            })
            .collect();
        Ok(Daemon {
            engine,
            store: Arc::new(Mutex::new(store)),
            executor,
            rooms,
            turns,
            lifetime,
            in_flight: 0,
            reloads: None,
            status: None,
            metrics: None,
            direct_ids: -Utc::now().timestamp_millis(),
        })
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

    /// Accepts `Input::Reload` from a configuration watcher (SIGHUP in `baton run`).
    pub fn with_reloads(mut self, reloads: mpsc::Receiver<Input>) -> Daemon {
        self.reloads = Some(reloads);
        self
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs until `shutdown` (or until idle, per the lifetime). The loop runs as a task on the
    /// runtime's worker threads, not in the caller's `block_on`: hand-offs between the adapters,
    /// the loop and the outbox pumps then stay within the pool instead of waking another thread.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tokio::spawn(self.serve(shutdown))
            .await
            .context("the daemon's loop panicked")?
    }

    async fn serve(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(256);
        let (done_tx, mut done_rx) = mpsc::channel::<Finished>(1024);
        let (reply_tx, mut reply_rx) = mpsc::channel::<Reply>(64);
        let mut tasks = tokio::task::JoinSet::new();
        for room in self.rooms.values() {
            let adapter = room.adapter.clone();
            let (tx, stop) = (in_tx.clone(), shutdown.child_token());
            tasks.spawn(async move {
                if let Err(e) = adapter.run(tx, stop).await {
                    tracing::error!(platform = %adapter.platform(), error = %format!("{e:#}"), "chat adapter stopped");
                }
            });
            tasks.spawn(pump(
                room.adapter.clone(),
                self.store.clone(),
                room.flushing.clone(),
                room.wake.clone(),
                shutdown.child_token(),
            ));
        }
        drop(in_tx);
        for d in self.engine.resume() {
            tracing::info!(run = %d.run, step = d.step + 1, host = %d.request.action.where_short(), key = %d.request.key,
                "resuming an action that was in flight");
            self.dispatch(d, &done_tx);
        }
        self.wake_all();
        let mut inputs_open = true;
        let (_keep, mut reloads) = match self.reloads.take() {
            Some(rx) => (None, rx),
            None => {
                let (tx, rx) = mpsc::channel(1);
                (Some(tx), rx)
            }
        };
        loop {
            if self.lifetime == Lifetime::UntilIdle
                && !inputs_open
                && self.in_flight == 0
                && !self.engine.is_executing()
            {
                let backlog = lock(&self.store).outbox_len()?;
                if backlog == 0 {
                    break;
                }
                self.wake_all();
            }
            let deadline = self
                .engine
                .next_deadline()
                .map(|d| (d - Utc::now()).to_std().unwrap_or(Duration::ZERO));
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(done) = done_rx.recv() => {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    let d = done.dispatch;
                    tracing::info!(run = %d.run, step = d.step + 1, action = d.request.action.id(), host = %d.request.action.where_short(),
                        key = %d.request.key, ok = done.report.outcome.is_ok(),
                        replayed = done.report.replayed, elapsed_ms = done.report.elapsed_ms, "action finished");
                    let input = Input::ActionFinished { run: d.run, step: d.step, attempt: d.attempt, action: d.action, report: done.report };
                    self.step(input, None, &done_tx, &reply_tx)?;
                }
                Some(reload) = reloads.recv() => {
                    tracing::info!("configuration reloaded; pending plans are resolved again");
                    self.step(reload, None, &done_tx, &reply_tx)?;
                }
                Some(reply) = reply_rx.recv() => {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    let msg = Message { room: reply.room, run: None, text: reply.text, card: None };
                    lock(&self.store).commit(&Batch { messages: std::slice::from_ref(&msg), ..Default::default() })?;
                    self.wake(msg.room.platform);
                }
                message = in_rx.recv(), if inputs_open => match message {
                    Some(m) => self.inbound(m, &done_tx, &reply_tx).await?,
                    None => inputs_open = false,
                },
                _ = tokio::time::sleep(deadline.unwrap_or(Duration::from_secs(3600))), if deadline.is_some() => {
                    self.step(Input::Tick, None, &done_tx, &reply_tx)?;
                }
                _ = tokio::time::sleep(Duration::from_millis(100)), if !inputs_open => {}
            }
        }
        shutdown.cancel();
        tasks.shutdown().await;
        Ok(())
    }

    async fn inbound(
        &mut self,
        m: Inbound,
        done: &mpsc::Sender<Finished>,
        replies: &mpsc::Sender<Reply>,
    ) -> anyhow::Result<()> {
        let console = m.room.platform == Platform::Console;
        let prefix = self.engine.config().prefix.clone();
        let parsed = match m.button {
            Some(ButtonIntent::Approve(run)) => Some(Ok(Command::Approve { run })),
            Some(ButtonIntent::Deny(run)) => Some(Ok(Command::Deny { run, reason: None })),
            None => command::parse(&prefix, &m.text),
        };
        // Ordinary conversation is neither acted on nor recorded: a line of chat costs no
        // journal write (no fsync), and seeing it again changes nothing.
        if let Some(command) = parsed {
            if lock(&self.store).handled(&m.room, &m.message_id)? {
                tracing::info!(room = %m.room, id = %m.message_id, "message already handled; ignored");
            } else {
                tracing::info!(room = %m.room, id = %m.message_id, "command received");
                let input = Input::Chat {
                    room: m.room.clone(),
                    sender: m.sender,
                    command,
                };
                let mut out = self.engine.handle(input, Utc::now());
                let pure = answer_only(&out);
                let answered = if pure { self.answer_now(&out.messages).await } else { 0 };
                if !(pure && answered == out.messages.len()) {
                    out.messages.drain(..answered);
                    self.act(out, Some((&m.room, &m.message_id)), done, replies)?;
                }
            }
        }
        if console {
            // Answer the console in turn: deliver its outbox before it reads the next line.
            if let Some(room) = self.rooms.get(&Platform::Console) {
                let _ = flush(&room.adapter, &self.store, &room.flushing).await;
            }
            if let Some(turns) = &self.turns {
                turns.handled.fetch_add(1, Ordering::AcqRel);
            }
        }
        Ok(())
    }

    /// Feeds the engine, journals the batch, then acts on it.
    fn step(
        &mut self,
        input: Input,
        handled: Option<(&RoomRef, &str)>,
        done: &mpsc::Sender<Finished>,
        replies: &mpsc::Sender<Reply>,
    ) -> anyhow::Result<()> {
        let out = self.engine.handle(input, Utc::now());
        self.act(out, handled, done, replies)
    }

    /// Journals a batch, then performs it.
    fn act(
        &mut self,
        out: Output,
        handled: Option<(&RoomRef, &str)>,
        done: &mpsc::Sender<Finished>,
        replies: &mpsc::Sender<Reply>,
    ) -> anyhow::Result<()> {
        self.journal(&out, handled)?;
        for d in out.dispatches {
            self.dispatch(d, done);
        }
        for q in out.queries {
            match q {
                Query::StatusXmpp { room } => {
                    self.in_flight += 1;
                    let replies = replies.clone();
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
                        let _ = replies.send(Reply { room, text }).await;
                    });
                }
            }
        }
        let platforms: BTreeSet<Platform> = out.messages.iter().map(|m| m.room.platform).collect();
        for p in platforms {
            self.wake(p);
        }
        Ok(())
    }

    /// Posts a pure answer (it changed no state) straight to the platform, skipping the journal
    /// and its disk flush, when nothing older waits in that platform's outbox (so order holds).
    /// Returns how many of `messages` it delivered; the caller journals the rest and the
    /// outbox delivers them as usual. A crash before delivery loses only the answer to a
    /// question, which can be asked again.
    async fn answer_now(&mut self, messages: &[Message]) -> usize {
        let Some(first) = messages.first() else { return 0 };
        let platform = first.room.platform;
        if platform == Platform::Console || messages.iter().any(|m| m.room.platform != platform) {
            return 0;
        }
        let Some(room) = self.rooms.get(&platform) else {
            return 0;
        };
        let _in_order = room.flushing.lock().await;
        if !lock(&self.store).outbox(platform, 1).is_ok_and(|o| o.is_empty()) {
            return 0;
        }
        for (delivered, m) in messages.iter().enumerate() {
            self.direct_ids -= 1;
            let outbound = crate::chat::Outbound {
                id: self.direct_ids,
                room: m.room.clone(),
                run: m.run,
                text: m.text.clone(),
                card: m.card.clone(),
            };
            if let Err(e) = room.adapter.deliver(&outbound).await {
                tracing::info!(platform = %platform, reason = %e, "direct answer not delivered; it goes through the outbox");
                return delivered;
            }
        }
        messages.len()
    }

    fn journal(&mut self, out: &Output, handled: Option<(&RoomRef, &str)>) -> anyhow::Result<()> {
        let touched: BTreeSet<RunId> = out.events.iter().filter_map(|r| r.event.run()).collect();
        let runs = touched
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
            .collect();
        lock(&self.store)
            .commit(&Batch {
                events: &out.events,
                messages: &out.messages,
                runs,
                handled,
            })
            .context("journaling (Baton stops rather than act on what it could not record)")?;
        if let Some(m) = &self.metrics {
            m.observe(&out.events);
        }
        Ok(())
    }

    fn dispatch(&mut self, d: Dispatch, done: &mpsc::Sender<Finished>) {
        tracing::info!(run = %d.run, step = d.step + 1, action = d.request.action.id(), host = %d.request.action.where_short(),
            key = %d.request.key, "action dispatched");
        self.in_flight += 1;
        let (executor, done) = (self.executor.clone(), done.clone());
        tokio::spawn(async move {
            let report = executor.execute(d.request.clone()).await;
            let _ = done.send(Finished { dispatch: d, report }).await;
        });
    }

    fn wake(&self, platform: Platform) {
        match self.rooms.get(&platform) {
            Some(room) => room.wake.notify_one(),
            None => tracing::warn!(platform = %platform, "a message waits for a platform that is not enabled"),
        }
    }

    fn wake_all(&self) {
        for room in self.rooms.values() {
            room.wake.notify_one();
        }
    }
}

/// Delivers one platform's outbox in order. Returns the wait before trying again when the
/// platform is not reachable.
async fn flush(
    adapter: &Arc<dyn ChatAdapter>,
    store: &SharedStore,
    flushing: &tokio::sync::Mutex<()>,
) -> Result<(), Option<Duration>> {
    let _one_at_a_time = flushing.lock().await;
    let platform = adapter.platform();
    loop {
        let batch = match lock(store).outbox(platform, 50) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(platform = %platform, error = %e, "cannot read the outbox");
                return Err(None);
            }
        };
        if batch.is_empty() {
            return Ok(());
        }
        for m in batch {
            match adapter.deliver(&m).await {
                Ok(()) => {
                    if let Err(e) = lock(store).delivered(m.id, None) {
                        tracing::error!(platform = %platform, id = m.id, error = %e, "delivered but not recorded");
                        return Err(None);
                    }
                }
                Err(DeliveryError::Transient { reason, retry_after }) => {
                    tracing::info!(platform = %platform, id = m.id, reason = %reason, "outbox waits for the platform");
                    return Err(retry_after);
                }
                Err(DeliveryError::Permanent { reason }) => {
                    tracing::warn!(platform = %platform, id = m.id, room = %m.room, reason = %reason, "message dropped: the platform refuses it");
                    if lock(store).delivered(m.id, Some(&reason)).is_err() {
                        return Err(None);
                    }
                }
            }
        }
    }
}

/// Keeps one platform's outbox flowing: on every wake-up, and every few seconds, with capped
/// backoff while the platform is unreachable.
async fn pump(
    adapter: Arc<dyn ChatAdapter>,
    store: SharedStore,
    flushing: Arc<tokio::sync::Mutex<()>>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let wait = match flush(&adapter, &store, &flushing).await {
            Ok(()) => {
                backoff = Duration::from_millis(500);
                Duration::from_secs(5)
            }
            Err(retry_after) => {
                let wait = retry_after.unwrap_or(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
                wait
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

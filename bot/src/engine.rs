//! The run engine: a pure state machine over every run of one store.
//!
//! Inputs go in through [`Engine::handle`] with the current time; out come the events to
//! journal, the messages to post and the actions to dispatch ([`Output`]). The shell journals the
//! events (and the messages, in the outbox) in one transaction *before* it performs anything.
//! [`Engine::restore`] folds a journal back into the same state after a crash, and
//! [`Engine::resume`] names the actions that were in flight, with their original idempotency
//! keys, so nothing runs twice.

use crate::chat::{RoomRef, RunCard};
use crate::command::{Command, CommandError, help_text};
use crate::event::{Event, Recorded};
use crate::render;
use crate::run::{Phase, Run, RunId, StepState, StepStatus};
use baton_actions::{ActionReport, ActionRequest, IdempotencyKey, Inventory, PoolName, plan};
use baton_policies::{Actor, Directory, Policy, Review, Right, Sender, Tally};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// What the engine decides with.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The store's random id: part of every idempotency key.
    pub store_id: String,
    pub prefix: String,
    pub policy: Policy,
    pub directory: Directory,
    pub inventory: Inventory,
    /// The pool holding the route before the journal says otherwise.
    pub initial_route: Option<PoolName>,
    /// Rooms that receive a copy of every run message (commands are not read there).
    pub mirror_rooms: Vec<RoomRef>,
}

impl EngineConfig {
    /// The engine's part of a validated configuration.
    pub fn from_config(config: &crate::config::Config, store_id: &str) -> EngineConfig {
        EngineConfig {
            store_id: store_id.to_string(),
            prefix: config.bot.command_prefix.clone(),
            policy: config.policy.clone(),
            directory: config.directory.clone(),
            inventory: config.inventory.clone(),
            initial_route: config.route.initial.clone(),
            mirror_rooms: config
                .chat
                .xmpp
                .iter()
                .flat_map(|x| x.mirror_rooms.iter())
                .map(|r| RoomRef::new(baton_policies::Platform::Xmpp, r.jid.to_lowercase()))
                .collect(),
        }
    }
}

/// Something that happened.
#[derive(Clone, Debug)]
pub enum Input {
    /// A message addressed to the bot, parsed at the edge.
    Chat {
        room: RoomRef,
        sender: Sender,
        command: Result<Command, CommandError>,
    },
    /// An action dispatched earlier ended.
    ActionFinished {
        run: RunId,
        step: usize,
        attempt: u32,
        action: usize,
        report: ActionReport,
    },
    /// Time passed (requests may expire).
    Tick,
    /// The configuration was reloaded: pending plans are resolved again.
    Reload(Box<Reload>),
}

/// A reloaded configuration's parts that the engine decides with.
#[derive(Clone, Debug)]
pub struct Reload {
    pub policy: Policy,
    pub directory: Directory,
    pub inventory: Inventory,
}

/// A message for the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub room: RoomRef,
    pub run: Option<RunId>,
    pub text: String,
    pub card: Option<RunCard>,
}

/// An action to carry out once the batch is journaled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatch {
    pub run: RunId,
    pub step: usize,
    pub attempt: u32,
    pub action: usize,
    pub request: ActionRequest,
}

/// A request for a live outside-in look, answered by the shell (it needs the network).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    StatusXmpp { room: RoomRef },
}

/// What one input produced, in order.
#[derive(Clone, Debug, Default)]
pub struct Output {
    pub events: Vec<Recorded>,
    pub messages: Vec<Message>,
    pub dispatches: Vec<Dispatch>,
    pub queries: Vec<Query>,
}

/// Every run of one store, and the route they moved.
pub struct Engine {
    cfg: EngineConfig,
    runs: BTreeMap<RunId, Run>,
    next_run: u64,
    route_holder: Option<PoolName>,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        let route_holder = cfg.initial_route.clone();
        Engine {
            cfg,
            runs: BTreeMap::new(),
            next_run: 1,
            route_holder,
        }
    }

    /// Rebuilds the state from a journal.
    pub fn restore(cfg: EngineConfig, journal: impl IntoIterator<Item = Recorded>) -> Engine {
        let mut engine = Engine::new(cfg);
        for r in journal {
            engine.apply(&r);
        }
        engine
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn run(&self, id: RunId) -> Option<&Run> {
        self.runs.get(&id)
    }

    pub fn runs(&self) -> impl DoubleEndedIterator<Item = &Run> {
        self.runs.values()
    }

    /// The pool holding the XMPP federation route, as far as Baton knows.
    pub fn route_holder(&self) -> Option<&PoolName> {
        self.route_holder.as_ref()
    }

    pub fn active_run(&self) -> Option<&Run> {
        self.runs.values().find(|r| r.phase.is_active())
    }

    /// Whether some run is executing a step (the demo waits for these before it exits).
    pub fn is_executing(&self) -> bool {
        self.runs.values().any(|r| matches!(r.phase, Phase::Running { .. }))
    }

    /// When the engine next needs a [`Input::Tick`].
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.runs
            .values()
            .filter(|r| matches!(r.phase, Phase::PendingApproval | Phase::RetryPending { .. }))
            .map(|r| r.review.expires_at())
            .min()
    }

    /// The actions in flight (dispatched, not finished) with their original keys: after a
    /// restart the shell dispatches them again, and executors return recorded outcomes for keys
    /// they already executed.
    pub fn resume(&self) -> Vec<Dispatch> {
        let mut out = Vec::new();
        for run in self.runs.values() {
            if let Some(step) = run.running_step() {
                self.dispatch_pending(run, step, &mut out);
            }
        }
        out
    }

    /// Handles one input at `now`.
    pub fn handle(&mut self, input: Input, now: DateTime<Utc>) -> Output {
        let mut out = Output::default();
        match input {
            Input::Chat { room, sender, command } => self.chat(room, sender, command, now, &mut out),
            Input::ActionFinished {
                run,
                step,
                attempt,
                action,
                report,
            } => self.action_finished(&mut out, now, run, step, attempt, action, report),
            Input::Tick => self.tick(now, &mut out),
            Input::Reload(r) => {
                let Reload {
                    policy,
                    directory,
                    inventory,
                } = *r;
                self.reload(policy, directory, inventory, now, &mut out)
            }
        }
        out
    }

    // ----- the fold ------------------------------------------------------------------------

    /// Applies one journaled event. Used live (right after deciding) and on restore.
    fn apply(&mut self, r: &Recorded) {
        let at = r.at;
        match &r.event {
            Event::Requested {
                run,
                requester,
                room,
                reason,
                plan,
                plan_hash,
                ..
            } => {
                let steps = fresh_steps(plan);
                let review = Review::open(&self.cfg.policy, requester, plan_hash, at);
                self.runs.insert(
                    *run,
                    Run {
                        id: *run,
                        requester: requester.clone(),
                        room: room.clone(),
                        reason: reason.clone(),
                        requested_at: at,
                        plan: plan.clone(),
                        plan_hash: plan.hash(),
                        review,
                        approvers: Vec::new(),
                        phase: Phase::PendingApproval,
                        steps,
                        abort_requested: None,
                        started_at: None,
                        finished_at: None,
                    },
                );
                self.next_run = self.next_run.max(run.0 + 1);
            }
            Event::Approved {
                run, person, plan_hash, ..
            } => {
                let (policy, dir) = (&self.cfg.policy, &self.cfg.directory);
                let Some(r) = self.runs.get_mut(run) else { return };
                // Only the policy check builds a VerifiedApproval, on replay too: an approval
                // the current policy no longer accepts does not count for a pending run.
                let checked = policy
                    .authorize_person(dir, person, Right::Approve)
                    .and_then(|actor| r.review.check_approval(policy, &actor, plan_hash, at));
                match checked {
                    Ok(v) => {
                        r.review.record(policy, v);
                        if !r.approvers.contains(person) {
                            r.approvers.push(person.clone());
                        }
                    }
                    Err(why) => {
                        tracing::warn!(run = %run, person = %person, why = %why, "journaled approval no longer passes the policy; not counted")
                    }
                }
            }
            Event::Refused { .. } => {}
            Event::Denied { run, person, reason } => {
                if let Some(r) = self.runs.get_mut(run) {
                    match r.phase {
                        // Denying a retry leaves the run failed, to be aborted or retried.
                        Phase::RetryPending { step } => r.phase = Phase::Failed { step },
                        _ => {
                            r.phase = Phase::Denied {
                                by: person.clone(),
                                reason: reason.clone(),
                            };
                            r.finished_at = Some(at);
                        }
                    }
                }
            }
            Event::Expired { run } => {
                if let Some(r) = self.runs.get_mut(run) {
                    r.phase = Phase::Expired;
                    r.finished_at = Some(at);
                }
            }
            Event::PlanChanged {
                run, plan, plan_hash, ..
            } => {
                if let Some(r) = self.runs.get_mut(run) {
                    r.review.rebind(plan_hash);
                    r.steps = fresh_steps(plan);
                    r.plan = plan.clone();
                    r.plan_hash = plan.hash();
                    r.approvers.clear();
                }
            }
            Event::Started { run, .. } => {
                if let Some(r) = self.runs.get_mut(run) {
                    r.started_at = Some(at);
                    r.phase = Phase::Running { step: 0 };
                }
            }
            Event::StepStarted { run, step, attempt } => {
                if let Some(r) = self.runs.get_mut(run)
                    && let Some(s) = r.steps.get_mut(*step)
                {
                    s.status = StepStatus::Running;
                    s.attempt = *attempt;
                    s.started_at = Some(at);
                    s.finished_at = None;
                    // A retry runs again only what did not succeed.
                    for result in &mut s.results {
                        if !result.as_ref().is_some_and(|x| x.outcome.is_ok()) {
                            *result = None;
                        }
                    }
                    r.phase = Phase::Running { step: *step };
                }
            }
            Event::ActionFinished {
                run,
                step,
                attempt,
                action,
                report,
            } => {
                if let Some(r) = self.runs.get_mut(run)
                    && let Some(s) = r.steps.get_mut(*step)
                    && s.attempt == *attempt
                    && let Some(slot) = s.results.get_mut(*action)
                {
                    *slot = Some(report.clone());
                }
            }
            Event::StepFinished { run, step, ok, .. } => {
                if let Some(r) = self.runs.get_mut(run)
                    && let Some(s) = r.steps.get_mut(*step)
                {
                    s.status = if *ok { StepStatus::Succeeded } else { StepStatus::Failed };
                    s.finished_at = Some(at);
                }
            }
            Event::AbortRequested { run, person } => {
                if let Some(r) = self.runs.get_mut(run) {
                    r.abort_requested = Some(person.clone());
                }
            }
            Event::Aborted { run, person, reason } => {
                if let Some(r) = self.runs.get_mut(run) {
                    r.phase = Phase::Aborted {
                        by: person.clone(),
                        reason: reason.clone(),
                    };
                    r.finished_at = Some(at);
                }
            }
            Event::RetryRequested { run, person, step } => {
                let policy = &self.cfg.policy;
                if let Some(r) = self.runs.get_mut(run) {
                    r.review = Review::open(policy, person, r.plan_hash.as_str(), at);
                    r.phase = Phase::RetryPending { step: *step };
                }
            }
            Event::RetryExpired { run } => {
                if let Some(r) = self.runs.get_mut(run)
                    && let Phase::RetryPending { step } = r.phase
                {
                    r.phase = Phase::Failed { step };
                }
            }
            Event::Succeeded { run } => {
                if let Some(r) = self.runs.get_mut(run) {
                    r.phase = Phase::Succeeded;
                    r.finished_at = Some(at);
                    self.route_holder = Some(r.plan.to_pool.clone());
                }
            }
            Event::Failed { run, step } => {
                if let Some(r) = self.runs.get_mut(run) {
                    r.phase = Phase::Failed { step: *step };
                }
            }
        }
    }
}

fn fresh_steps(plan: &baton_actions::Plan) -> Vec<StepState> {
    plan.steps
        .iter()
        .map(|s| StepState {
            status: StepStatus::NotStarted,
            attempt: 0,
            results: vec![None; s.actions.len()],
            started_at: None,
            finished_at: None,
        })
        .collect()
}

fn sender_name(sender: &Sender) -> String {
    match sender {
        Sender::Verified(id) => id.to_string(),
        Sender::Unverified { display, .. } => format!("unverified '{display}'"),
    }
}

impl Engine {
    // ----- deciding --------------------------------------------------------------------------

    fn emit(&mut self, out: &mut Output, at: DateTime<Utc>, event: Event) {
        let r = Recorded { at, event };
        self.apply(&r);
        out.events.push(r);
    }

    fn say(&self, out: &mut Output, room: &RoomRef, text: String) {
        out.messages.push(Message {
            room: room.clone(),
            run: None,
            text,
            card: None,
        });
    }

    /// A message about a run, in the run's room (and every mirror room), carrying its card.
    fn say_run(&self, out: &mut Output, id: RunId, text: String) {
        let Some(run) = self.runs.get(&id) else { return };
        let card = render::card(run);
        let rooms = std::iter::once(&run.room).chain(self.cfg.mirror_rooms.iter().filter(|m| **m != run.room));
        for room in rooms {
            out.messages.push(Message {
                room: room.clone(),
                run: Some(id),
                text: text.clone(),
                card: Some(card.clone()),
            });
        }
    }

    fn chat(
        &mut self,
        room: RoomRef,
        sender: Sender,
        command: Result<Command, CommandError>,
        now: DateTime<Utc>,
        out: &mut Output,
    ) {
        let cmd = match command {
            Ok(cmd) => cmd,
            Err(e) => return self.say(out, &room, render::sentence(&e.to_string())),
        };
        let right = cmd.right();
        let actor = match self.cfg.policy.authorize(&self.cfg.directory, &sender, right) {
            Ok(actor) => actor,
            Err(why) => {
                return self.refuse(
                    out,
                    now,
                    &room,
                    cmd.run(),
                    &sender_name(&sender),
                    &cmd,
                    &why.to_string(),
                );
            }
        };
        let via = match &sender {
            Sender::Verified(id) => id.to_string(),
            Sender::Unverified { display, .. } => display.clone(),
        };
        let prefix = self.cfg.prefix.clone();
        match cmd {
            Command::Help => self.say(out, &room, help_text(&prefix)),
            Command::StatusXmpp => out.queries.push(Query::StatusXmpp { room }),
            Command::Status => {
                let active: Vec<&Run> = self.runs.values().filter(|r| r.phase.is_active()).collect();
                let text = render::active(&active, self.route_holder.as_ref());
                self.say(out, &room, text);
            }
            Command::StatusRun { run } => {
                let text = match self.runs.get(&run) {
                    Some(r) => render::status_table(r, now),
                    None => render::no_such_run(run, &prefix),
                };
                self.say(out, &room, text);
            }
            Command::Runs => {
                let recent: Vec<&Run> = self.runs.values().rev().take(10).collect();
                self.say(out, &room, render::recent(&recent));
            }
            Command::Plan { pool } => {
                let text = match plan::resolve(&self.cfg.inventory, &pool, self.route_holder.as_ref()) {
                    Ok(p) => render::plan_preview(&p, &p.hash(), &prefix),
                    Err(e) => render::sentence(&e.to_string()),
                };
                self.say(out, &room, text);
            }
            Command::Failover { pool, reason } => self.failover(out, now, room, &actor, via, pool, reason),
            Command::Approve { run } => self.approve(out, now, &room, &actor, via, run),
            Command::Deny { run, reason } => self.deny(out, now, &room, &actor, run, reason),
            Command::Abort { run } => self.abort(out, now, &room, &actor, run),
            Command::Retry { run } => self.retry(out, now, &room, &actor, run),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &mut self,
        out: &mut Output,
        now: DateTime<Utc>,
        room: &RoomRef,
        run: Option<RunId>,
        who: &str,
        cmd: &Command,
        why: &str,
    ) {
        let command = cmd.describe();
        // Read-only commands refused are not worth an audit record; anything else is.
        if cmd.right() != Right::View {
            self.emit(
                out,
                now,
                Event::Refused {
                    run,
                    who: who.to_string(),
                    command: command.clone(),
                    why: why.to_string(),
                },
            );
        }
        self.say(
            out,
            room,
            render::refused(&format!("{}{command}", self.cfg.prefix), why),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn failover(
        &mut self,
        out: &mut Output,
        now: DateTime<Utc>,
        room: RoomRef,
        actor: &Actor,
        via: String,
        pool: String,
        reason: Option<String>,
    ) {
        let cmd = Command::Failover {
            pool: pool.clone(),
            reason: reason.clone(),
        };
        if let Some(active) = self.active_run() {
            let text = render::already_active(active, &self.cfg.prefix);
            let id = active.id;
            self.emit(
                out,
                now,
                Event::Refused {
                    run: Some(id),
                    who: actor.person().to_string(),
                    command: cmd.describe(),
                    why: format!("run {id} is active"),
                },
            );
            return self.say(out, &room, text);
        }
        let plan = match plan::resolve(&self.cfg.inventory, &pool, self.route_holder.as_ref()) {
            Ok(p) => p,
            Err(e) => return self.say(out, &room, render::sentence(&e.to_string())),
        };
        let id = RunId(self.next_run);
        let plan_hash = plan.hash().as_str().to_string();
        self.emit(
            out,
            now,
            Event::Requested {
                run: id,
                requester: actor.person().clone(),
                via,
                room,
                reason,
                plan,
                plan_hash,
            },
        );
        let run = &self.runs[&id];
        let text = render::plan_posted(run, &self.cfg.policy, &self.cfg.prefix);
        self.say_run(out, id, text);
    }

    fn approve(&mut self, out: &mut Output, now: DateTime<Utc>, room: &RoomRef, actor: &Actor, via: String, id: RunId) {
        let cmd = Command::Approve { run: id };
        let Some(run) = self.runs.get(&id) else {
            return self.say(out, room, render::no_such_run(id, &self.cfg.prefix));
        };
        let retry_step = match run.phase {
            Phase::PendingApproval => None,
            Phase::RetryPending { step } => Some(step),
            _ => return self.say(out, room, render::not_waiting(run)),
        };
        let checked = run
            .review
            .check_approval(&self.cfg.policy, actor, run.plan_hash.as_str(), now);
        let hash = run.plan_hash.as_str().to_string();
        if let Err(why) = checked {
            return self.refuse(
                out,
                now,
                room,
                Some(id),
                actor.person().as_str(),
                &cmd,
                &why.to_string(),
            );
        }
        self.emit(
            out,
            now,
            Event::Approved {
                run: id,
                person: actor.person().clone(),
                via,
                plan_hash: hash,
            },
        );
        let run = &self.runs[&id];
        match (run.review.tally(&self.cfg.policy), retry_step) {
            (Tally::Pending { have, need }, _) => {
                let text = render::approval_recorded(run, actor.person(), have, need);
                self.say_run(out, id, text);
            }
            (Tally::Approved { approvers }, None) => {
                self.emit(out, now, Event::Started { run: id, approvers });
                let text = render::started(&self.runs[&id]);
                self.say_run(out, id, text);
                self.start_step(out, now, id, 0);
            }
            (Tally::Approved { .. }, Some(step)) => {
                self.start_step(out, now, id, step);
                let text = render::retrying(&self.runs[&id], step, &format!("approved by {}", actor.person()));
                self.say_run(out, id, text);
            }
        }
    }

    fn deny(
        &mut self,
        out: &mut Output,
        now: DateTime<Utc>,
        room: &RoomRef,
        actor: &Actor,
        id: RunId,
        reason: Option<String>,
    ) {
        let cmd = Command::Deny {
            run: id,
            reason: reason.clone(),
        };
        let Some(run) = self.runs.get(&id) else {
            return self.say(out, room, render::no_such_run(id, &self.cfg.prefix));
        };
        let retry = match run.phase {
            Phase::PendingApproval => false,
            Phase::RetryPending { .. } => true,
            _ => return self.say(out, room, render::not_waiting(run)),
        };
        if let Err(why) = run.review.check_deny(&self.cfg.policy, actor, now) {
            return self.refuse(
                out,
                now,
                room,
                Some(id),
                actor.person().as_str(),
                &cmd,
                &why.to_string(),
            );
        }
        self.emit(
            out,
            now,
            Event::Denied {
                run: id,
                person: actor.person().clone(),
                reason: reason.clone(),
            },
        );
        let run = &self.runs[&id];
        let text = if retry {
            render::retry_denied(run, actor.person(), reason.as_deref(), &self.cfg.prefix)
        } else {
            render::denied(run, actor.person(), reason.as_deref())
        };
        self.say_run(out, id, text);
    }

    fn abort(&mut self, out: &mut Output, now: DateTime<Utc>, room: &RoomRef, actor: &Actor, id: RunId) {
        let Some(run) = self.runs.get(&id) else {
            return self.say(out, room, render::no_such_run(id, &self.cfg.prefix));
        };
        match run.phase {
            Phase::Running { .. } => {
                if run.abort_requested.is_some() {
                    let text = format!("{id} is already stopping after its current step.");
                    return self.say(out, room, text);
                }
                self.emit(
                    out,
                    now,
                    Event::AbortRequested {
                        run: id,
                        person: actor.person().clone(),
                    },
                );
                let text = render::abort_requested(&self.runs[&id], actor.person());
                self.say_run(out, id, text);
            }
            Phase::PendingApproval | Phase::Failed { .. } | Phase::RetryPending { .. } => {
                self.emit(
                    out,
                    now,
                    Event::Aborted {
                        run: id,
                        person: Some(actor.person().clone()),
                        reason: None,
                    },
                );
                let text = render::finished(&self.runs[&id], now);
                self.say_run(out, id, text);
            }
            _ => {
                let text = format!("{id} already ended ({}); there is nothing to abort.", run.phase.name());
                self.say(out, room, text);
            }
        }
    }

    fn retry(&mut self, out: &mut Output, now: DateTime<Utc>, room: &RoomRef, actor: &Actor, id: RunId) {
        let Some(run) = self.runs.get(&id) else {
            return self.say(out, room, render::no_such_run(id, &self.cfg.prefix));
        };
        let Phase::Failed { step } = run.phase else {
            let text = format!("Only a failed run can be retried; {id} is {}.", run.phase.name());
            return self.say(out, room, text);
        };
        if self.cfg.policy.retry_needs_approval {
            self.emit(
                out,
                now,
                Event::RetryRequested {
                    run: id,
                    person: actor.person().clone(),
                    step,
                },
            );
            let text = render::retry_needs_approval(&self.runs[&id], step, &self.cfg.policy, &self.cfg.prefix);
            return self.say_run(out, id, text);
        }
        self.start_step(out, now, id, step);
        let text = render::retrying(&self.runs[&id], step, &format!("for {}", actor.person()));
        self.say_run(out, id, text);
    }

    /// Starts `step` (a new attempt) and dispatches its unfinished actions.
    fn start_step(&mut self, out: &mut Output, now: DateTime<Utc>, id: RunId, step: usize) {
        let attempt = self.runs[&id].steps[step].attempt + 1;
        self.emit(out, now, Event::StepStarted { run: id, step, attempt });
        let run = &self.runs[&id];
        self.dispatch_pending(run, step, &mut out.dispatches);
        if self.runs[&id].step_complete(step) {
            self.finish_step(out, now, id, step);
        }
    }

    fn dispatch_pending(&self, run: &Run, step: usize, into: &mut Vec<Dispatch>) {
        let state = &run.steps[step];
        for (i, (action, result)) in run.plan.steps[step].actions.iter().zip(&state.results).enumerate() {
            if result.is_some() {
                continue;
            }
            let key = IdempotencyKey::new(
                &self.cfg.store_id,
                run.id.0,
                step,
                i,
                &action.where_short(),
                state.attempt,
            );
            into.push(Dispatch {
                run: run.id,
                step,
                attempt: state.attempt,
                action: i,
                request: ActionRequest {
                    key,
                    action: action.clone(),
                    timeout: action.default_timeout(),
                },
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn action_finished(
        &mut self,
        out: &mut Output,
        now: DateTime<Utc>,
        id: RunId,
        step: usize,
        attempt: u32,
        action: usize,
        report: ActionReport,
    ) {
        let Some(run) = self.runs.get(&id) else { return };
        let current = run.running_step() == Some(step)
            && run.steps[step].attempt == attempt
            && run.steps[step].results.get(action).is_some_and(Option::is_none);
        if !current {
            // A late or repeated report (e.g. after a resume): already recorded, nothing to do.
            return;
        }
        self.emit(
            out,
            now,
            Event::ActionFinished {
                run: id,
                step,
                attempt,
                action,
                report,
            },
        );
        if self.runs[&id].step_complete(step) {
            self.finish_step(out, now, id, step);
        }
    }

    fn finish_step(&mut self, out: &mut Output, now: DateTime<Utc>, id: RunId, step: usize) {
        let run = &self.runs[&id];
        let ok = run.step_ok(step);
        let attempt = run.steps[step].attempt;
        self.emit(
            out,
            now,
            Event::StepFinished {
                run: id,
                step,
                attempt,
                ok,
            },
        );
        let text = render::step_finished(&self.runs[&id], step);
        self.say_run(out, id, text);
        let run = &self.runs[&id];
        if let Some(by) = run.abort_requested.clone() {
            self.emit(
                out,
                now,
                Event::Aborted {
                    run: id,
                    person: Some(by),
                    reason: None,
                },
            );
            let text = render::finished(&self.runs[&id], now);
            self.say_run(out, id, text);
        } else if !ok {
            self.emit(out, now, Event::Failed { run: id, step });
            let text = render::step_failed_help(&self.runs[&id], step, &self.cfg.prefix);
            self.say_run(out, id, text);
        } else if step + 1 < run.step_count() {
            self.start_step(out, now, id, step + 1);
        } else {
            self.emit(out, now, Event::Succeeded { run: id });
            let text = render::finished(&self.runs[&id], now);
            self.say_run(out, id, text);
        }
    }

    fn tick(&mut self, now: DateTime<Utc>, out: &mut Output) {
        let due: Vec<(RunId, bool)> = self
            .runs
            .values()
            .filter(|r| r.review.is_expired(now))
            .filter_map(|r| match r.phase {
                Phase::PendingApproval => Some((r.id, false)),
                Phase::RetryPending { .. } => Some((r.id, true)),
                _ => None,
            })
            .collect();
        for (id, retry) in due {
            if retry {
                self.emit(out, now, Event::RetryExpired { run: id });
                let text = render::retry_expired(&self.runs[&id], &self.cfg.prefix);
                self.say_run(out, id, text);
            } else {
                self.emit(out, now, Event::Expired { run: id });
                let text = render::expired(&self.runs[&id], &self.cfg.policy);
                self.say_run(out, id, text);
            }
        }
    }

    fn reload(
        &mut self,
        policy: Policy,
        directory: Directory,
        inventory: Inventory,
        now: DateTime<Utc>,
        out: &mut Output,
    ) {
        self.cfg.policy = policy;
        self.cfg.directory = directory;
        self.cfg.inventory = inventory;
        let pending: Vec<RunId> = self
            .runs
            .values()
            .filter(|r| r.phase == Phase::PendingApproval)
            .map(|r| r.id)
            .collect();
        for id in pending {
            let run = &self.runs[&id];
            match plan::resolve(
                &self.cfg.inventory,
                run.plan.to_pool.as_str(),
                self.route_holder.as_ref(),
            ) {
                Ok(plan) if plan.hash() == run.plan_hash => {}
                Ok(plan) => {
                    let lapsed = run
                        .review
                        .approvals()
                        .iter()
                        .map(|a| a.person().clone())
                        .collect::<Vec<_>>();
                    let plan_hash = plan.hash().as_str().to_string();
                    self.emit(
                        out,
                        now,
                        Event::PlanChanged {
                            run: id,
                            plan,
                            plan_hash,
                            lapsed: lapsed.clone(),
                        },
                    );
                    let text = render::plan_changed(&self.runs[&id], &lapsed, &self.cfg.policy, &self.cfg.prefix);
                    self.say_run(out, id, text);
                }
                Err(e) => {
                    let reason = format!("the plan can no longer be resolved: {e}");
                    self.emit(
                        out,
                        now,
                        Event::Aborted {
                            run: id,
                            person: None,
                            reason: Some(reason),
                        },
                    );
                    let text = render::finished(&self.runs[&id], now);
                    self.say_run(out, id, text);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! The run engine: a pure state machine over every run of one store.
//!
//! Inputs go in through [`Engine::handle`] with the current time; out come the events to
//! journal, the messages to post and the actions to dispatch ([`Output`]). The shell journals the
//! events (and the messages, in the outbox) in one transaction *before* it performs anything.
//! [`Engine::restore`] folds a journal back into the same state after a crash, and
//! [`Engine::resume`] names the actions that were in flight, with their original idempotency
//! keys, so nothing runs twice.
//!
//! This file holds the engine's types and [`Engine::handle`]; the work is split by concern:
//! `fold` applies journaled events, `commands` answers chat commands, `steps` carries a run's
//! steps out (dispatches, results, deadlines) and `reload` takes a new configuration.

pub mod call;
mod commands;
mod fold;
pub mod limit;
mod reload;
mod steps;
pub mod world;

use crate::chat::{Presence, Rich, RoomRef, RunCard};
use crate::command::{Command, CommandError};
use crate::event::{Event, LiveRoute, Recorded};
use crate::render;
use crate::run::{Phase, Run, RunId};
use baton_actions::{ActionReport, ActionRequest, Inventory, PoolName};
use baton_policies::{Directory, Platform, Policy, Sender};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use world::World;

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
            mirror_rooms: config.chat.platforms.iter().flat_map(|p| p.mirror_rooms()).collect(),
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
    /// The route as Lync reports it now, read by the shell just before a `!failover` or
    /// `!plan` that follows: the next plan shows it beside the journal's view.
    Observed(LiveRoute),
    /// Who is in a platform's rooms now (platforms that report presence): approval requests
    /// call the approvers present. Not journaled: the request records whom it called.
    Presence { platform: Platform, presence: Presence },
}

/// A reloaded configuration's parts that the engine decides with.
#[derive(Clone, Debug)]
pub struct Reload {
    pub policy: Policy,
    pub directory: Directory,
    pub inventory: Inventory,
}

/// What a message is for: the shell routes it by this (an answer to a button press goes to the
/// clicker alone; step progress becomes a card edit where the platform edits cards).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// An answer to the person who typed the command, in the room they typed it in.
    Reply,
    /// News of a run, in its room and every mirror room: a message of its own everywhere.
    Notice,
    /// A step ended: a line where cards cannot be edited, the card alone where they can.
    Progress,
}

/// A message for the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub room: RoomRef,
    pub run: Option<RunId>,
    pub body: Rich,
    /// The run's card after this message, for messages about a run.
    pub card: Option<RunCard>,
    pub kind: MessageKind,
}

impl Message {
    /// An answer in `room`, about no run.
    pub fn reply(room: RoomRef, body: impl Into<Rich>) -> Message {
        Message {
            room,
            run: None,
            body: body.into(),
            card: None,
            kind: MessageKind::Reply,
        }
    }

    /// The message's plain text.
    pub fn text(&self) -> String {
        self.body.plain()
    }
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
    /// For a reload: whether it was taken (the shell then swaps its executors) or refused.
    pub reloaded: Option<bool>,
    /// Refusals left unsaid (the sender had their share of refusals in this window).
    pub silenced: usize,
}

/// Every run of one store, and what their actions changed.
pub struct Engine {
    cfg: EngineConfig,
    runs: BTreeMap<RunId, Run>,
    next_run: u64,
    world: World,
    /// The route as last observed, for the next plan.
    observed: Option<LiveRoute>,
    /// Who is in the rooms of the platforms that report presence.
    presence: BTreeMap<Platform, Presence>,
    /// Refusals answered per sender (not journaled: a restart starts afresh).
    refusals: limit::Refusals,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        let world = World::new(cfg.initial_route.clone());
        Engine {
            cfg,
            runs: BTreeMap::new(),
            next_run: 1,
            world,
            observed: None,
            presence: BTreeMap::new(),
            refusals: limit::Refusals::default(),
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

    /// The pool holding the XMPP federation route, as far as Baton's journal knows (the last
    /// route it set, even in a run that did not finish).
    pub fn route_holder(&self) -> Option<&PoolName> {
        self.world.route.as_ref()
    }

    /// What Baton's actions changed, as far as its journal knows.
    pub fn world(&self) -> &World {
        &self.world
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
            Input::Observed(live) => self.observed = Some(live),
            Input::Presence { platform, presence } => {
                self.presence.insert(platform, presence);
            }
        }
        out
    }
}

impl Engine {
    // ----- deciding --------------------------------------------------------------------------

    fn emit(&mut self, out: &mut Output, at: DateTime<Utc>, event: Event) {
        let r = Recorded { at, event };
        self.apply(&r);
        out.events.push(r);
    }

    /// Whom a new approval request by `requester` in `room` calls (see [`call::to_call`]).
    fn to_call(&self, requester: &baton_policies::PersonId, room: &RoomRef) -> Vec<baton_policies::PersonId> {
        call::to_call(
            &self.cfg.policy,
            &self.cfg.directory,
            requester,
            &[],
            room,
            self.presence.get(&room.platform),
        )
    }

    fn say(&self, out: &mut Output, room: &RoomRef, text: impl Into<Rich>) {
        out.messages.push(Message::reply(room.clone(), text));
    }

    /// News of a run, in the run's room (and every mirror room), carrying its card.
    fn say_run(&self, out: &mut Output, id: RunId, text: impl Into<Rich>) {
        self.post_run(out, id, text.into(), MessageKind::Notice);
    }

    /// A step's line: on platforms that edit cards, the card shows it instead.
    fn progress(&self, out: &mut Output, id: RunId, text: impl Into<Rich>) {
        self.post_run(out, id, text.into(), MessageKind::Progress);
    }

    fn post_run(&self, out: &mut Output, id: RunId, body: Rich, kind: MessageKind) {
        let Some(run) = self.runs.get(&id) else { return };
        let card = render::card(run);
        let rooms = std::iter::once(&run.room).chain(self.cfg.mirror_rooms.iter().filter(|m| **m != run.room));
        for room in rooms {
            out.messages.push(Message {
                room: room.clone(),
                run: Some(id),
                body: body.clone(),
                card: Some(card.clone()),
                kind,
            });
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod invariant;

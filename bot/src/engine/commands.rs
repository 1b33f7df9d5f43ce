//! Chat commands: the sender is authorized for the command's right, then failover, approve,
//! deny, abort, retry and the read-only looks (help, plan, status, runs) are decided.

use super::limit::Verdict;
use super::{Engine, MessageKind, Output, Query};
use crate::chat::RoomRef;
use crate::command::{Command, CommandError, help_text};
use crate::event::{Event, LiveRoute};
use crate::render;
use crate::run::{Phase, Run, RunId};
use baton_actions::plan;
use baton_policies::{Actor, Right, Sender, Tally};
use chrono::{DateTime, Utc};

fn sender_name(sender: &Sender) -> String {
    match sender {
        Sender::Verified(id) => id.to_string(),
        Sender::Unverified { display, .. } => format!("unverified '{display}'"),
    }
}

impl Engine {
    pub(super) fn chat(
        &mut self,
        room: RoomRef,
        sender: Sender,
        command: Result<Command, CommandError>,
        now: DateTime<Utc>,
        out: &mut Output,
    ) {
        // An observation of the live route is for the command right after it, and only that.
        let live = self.observed.take();
        let cmd = match command {
            Ok(cmd) => cmd,
            Err(e) => {
                // Usage errors of people Baton knows are always answered; of anyone else, as
                // many as their share of refusals.
                let known = matches!(&sender, Sender::Verified(id) if self.cfg.directory.person_of(id).is_some());
                if !known && !self.answer_refusal(out, now, &sender_name(&sender), "a command that does not parse") {
                    return;
                }
                return self.say(out, &room, render::sentence(&e.to_string()));
            }
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
        let first = out.messages.len();
        self.command(out, now, &room, &actor, via, cmd, &prefix, live);
        // A command about a run typed in another room is answered there too: the run's news
        // goes to the run's rooms, and the person who typed it sees what it did.
        let news: Vec<_> = out.messages[first..]
            .iter()
            .filter(|m| m.run.is_some() && m.kind == MessageKind::Notice)
            .map(|m| m.body.clone())
            .collect();
        if !news.is_empty() && !out.messages[first..].iter().any(|m| m.room == room) {
            let mut seen = Vec::new();
            for body in news {
                if !seen.contains(&body) {
                    self.say(out, &room, body.clone());
                    seen.push(body);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn command(
        &mut self,
        out: &mut Output,
        now: DateTime<Utc>,
        room: &RoomRef,
        actor: &Actor,
        via: String,
        cmd: Command,
        prefix: &str,
        live: Option<LiveRoute>,
    ) {
        let room = room.clone();
        let (actor, prefix) = (actor, prefix.to_string());
        match cmd {
            Command::Help => self.say(out, &room, help_text(&prefix)),
            Command::StatusXmpp => out.queries.push(Query::StatusXmpp { room }),
            Command::Status => {
                let active: Vec<&Run> = self.runs.values().filter(|r| r.phase.is_active()).collect();
                let text = render::active(&active, self.world.route.as_ref());
                self.say(out, &room, text);
            }
            Command::StatusRun { run } => {
                let text = match self.runs.get(&run) {
                    Some(r) => render::status_table(r, &self.world, now, &prefix),
                    None => render::no_such_run(run, &prefix),
                };
                self.say(out, &room, text);
            }
            Command::Runs => {
                let recent: Vec<&Run> = self.runs.values().rev().take(10).collect();
                self.say(out, &room, render::recent(&recent));
            }
            Command::Plan { pool } => {
                let text = match plan::resolve(&self.cfg.inventory, &pool, self.world.route.as_ref()) {
                    Ok(p) => render::plan_preview(&p, &p.hash(), live.as_ref(), &self.world, &prefix),
                    Err(e) => render::sentence(&e.to_string()),
                };
                self.say(out, &room, text);
            }
            Command::Failover { pool, reason } => self.failover(out, now, room, actor, via, pool, reason, live),
            Command::Approve { run, plan } => self.approve(out, now, &room, actor, via, run, plan),
            Command::Deny { run, reason } => self.deny(out, now, &room, actor, run, reason),
            Command::Abort { run, reason } => self.abort(out, now, &room, actor, run, reason),
            Command::Retry { run } => self.retry(out, now, &room, actor, run),
        }
    }

    /// Whether a refusal for `who` is answered (and journaled), or left unsaid because they had
    /// their share in this window (see [`super::limit`]); the first unsaid one is logged.
    fn answer_refusal(&mut self, out: &mut Output, now: DateTime<Utc>, who: &str, command: &str) -> bool {
        match self.refusals.note(who, now) {
            Verdict::Answer => true,
            Verdict::Silent { first } => {
                if first {
                    tracing::warn!(
                        sender = %who,
                        command = %command,
                        limit = super::limit::REFUSALS_PER_WINDOW,
                        window_s = super::limit::REFUSAL_WINDOW.num_seconds(),
                        "too many refused commands from this sender; further refusals in this window are neither answered nor journaled"
                    );
                }
                out.silenced += 1;
                false
            }
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
        if !self.answer_refusal(out, now, who, &command) {
            return;
        }
        // Read-only commands refused are not worth an audit record; anything else is (as
        // many as the sender's share of answered refusals: a spammer's flood costs no flushes).
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
        live_route: Option<LiveRoute>,
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
        let plan = match plan::resolve(&self.cfg.inventory, &pool, self.world.route.as_ref()) {
            Ok(p) => p,
            Err(e) => return self.say(out, &room, render::sentence(&e.to_string())),
        };
        let id = RunId(self.next_run);
        let plan_hash = plan.hash().as_str().to_string();
        let asked = self.to_call(actor.person(), &room);
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
                live_route,
                asked,
            },
        );
        let run = &self.runs[&id];
        let text = render::plan_posted(
            run,
            &self.world,
            &self.cfg.policy,
            &self.cfg.directory,
            &self.cfg.prefix,
        );
        self.say_run(out, id, text);
    }

    /// An approval; `plan`, when given, must start the run's current plan hash.
    #[allow(clippy::too_many_arguments)]
    fn approve(
        &mut self,
        out: &mut Output,
        now: DateTime<Utc>,
        room: &RoomRef,
        actor: &Actor,
        via: String,
        id: RunId,
        plan: Option<String>,
    ) {
        let cmd = Command::Approve {
            run: id,
            plan: plan.clone(),
        };
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
        // An approver who names the plan they read approves that plan only.
        // Once the plan changed, an approval must name the plan it is for.
        let why = match (checked, plan) {
            (Err(why), _) => Some(why.to_string()),
            (Ok(_), Some(seen)) if !hash.starts_with(&seen) => {
                Some(render::plan_not_current(run, &seen, &self.cfg.prefix))
            }
            (Ok(_), None) if run.plan_changed => Some(render::name_the_plan(run, &self.cfg.prefix)),
            (Ok(_), _) => None,
        };
        if let Some(why) = why {
            return self.refuse(out, now, room, Some(id), actor.person().as_str(), &cmd, &why);
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

    fn abort(
        &mut self,
        out: &mut Output,
        now: DateTime<Utc>,
        room: &RoomRef,
        actor: &Actor,
        id: RunId,
        reason: Option<String>,
    ) {
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
                        reason: reason.clone(),
                    },
                );
                let text = render::abort_requested(&self.runs[&id], actor.person(), reason.as_deref());
                self.say_run(out, id, text);
            }
            Phase::PendingApproval | Phase::Failed { .. } | Phase::RetryPending { .. } => {
                self.emit(
                    out,
                    now,
                    Event::Aborted {
                        run: id,
                        person: Some(actor.person().clone()),
                        reason,
                    },
                );
                let text = render::finished(&self.runs[&id], &self.world, now, &self.cfg.prefix);
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
            let asked = self.to_call(actor.person(), &run.room);
            self.emit(
                out,
                now,
                Event::RetryRequested {
                    run: id,
                    person: actor.person().clone(),
                    step,
                    asked,
                },
            );
            let text = render::retry_needs_approval(
                &self.runs[&id],
                step,
                &self.cfg.policy,
                &self.cfg.directory,
                &self.cfg.prefix,
            );
            return self.say_run(out, id, text);
        }
        self.start_step(out, now, id, step);
        let text = render::retrying(&self.runs[&id], step, &format!("for {}", actor.person()));
        self.say_run(out, id, text);
    }
}

//! Reloading the configuration (SIGHUP), journaled either way. While a run is in progress
//! (running, failed and waiting for `!retry`, or a retry waiting for approval) the reload is
//! refused: that run depends on the running configuration (its agents, DNS server and plan).
//! Otherwise everything is taken: pending plans are resolved again (a changed plan voids its
//! approvals and is posted again, a plan that no longer resolves ends its request), and an
//! approval by someone the new policy no longer lets approve lapses. The shell swaps its
//! executors only for an accepted reload (`Output::reloaded`).

use super::{Engine, Output};
use crate::event::Event;
use crate::render;
use crate::run::{Phase, RunId};
use baton_actions::{Inventory, plan};
use baton_policies::{Directory, Policy, Right};
use chrono::{DateTime, Utc};

impl Engine {
    pub(super) fn reload(
        &mut self,
        policy: Policy,
        directory: Directory,
        inventory: Inventory,
        now: DateTime<Utc>,
        out: &mut Output,
    ) {
        let busy = self.runs.values().find(|r| {
            matches!(
                r.phase,
                Phase::Running { .. } | Phase::Failed { .. } | Phase::RetryPending { .. }
            )
        });
        if let Some(run) = busy {
            let (id, room) = (run.id, run.room.clone());
            let why = format!(
                "run {id} is {} and depends on the running configuration (its agents, DNS server and plan); send SIGHUP again once it has ended",
                run.phase.name()
            );
            tracing::warn!(run = %id, "configuration reload refused: {why}");
            self.emit(out, now, Event::ReloadRefused { why: why.clone() });
            self.say(out, &room, render::reload_refused(&why));
            out.reloaded = Some(false);
            return;
        }
        let mut changed = Vec::new();
        if self.cfg.policy != policy {
            changed.push("policy".to_string());
        }
        if self.cfg.directory != directory {
            changed.push("people and groups".to_string());
        }
        if self.cfg.inventory != inventory {
            changed.push("inventory".to_string());
        }
        self.emit(out, now, Event::Reloaded { changed });
        out.reloaded = Some(true);
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
                self.world.route.as_ref(),
            ) {
                Ok(plan) if plan.hash() == run.plan_hash => self.recheck_approvals(id, now, out),
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
                    let text = render::finished(&self.runs[&id], &self.world, now, &self.cfg.prefix);
                    self.say_run(out, id, text);
                }
            }
        }
    }

    /// Withdraws the approvals of a pending run that the new policy no longer allows.
    fn recheck_approvals(&mut self, id: RunId, now: DateTime<Utc>, out: &mut Output) {
        let approvers: Vec<_> = self.runs[&id]
            .review
            .approvals()
            .iter()
            .map(|a| a.person().clone())
            .collect();
        for person in approvers {
            let Err(why) = self
                .cfg
                .policy
                .authorize_person(&self.cfg.directory, &person, Right::Approve)
            else {
                continue;
            };
            let why = why.to_string();
            self.emit(
                out,
                now,
                Event::ApprovalWithdrawn {
                    run: id,
                    person: person.clone(),
                    why: why.clone(),
                },
            );
            let text = render::approval_withdrawn(&self.runs[&id], &person, &why);
            self.say_run(out, id, text);
        }
    }
}

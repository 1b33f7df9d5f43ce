//! Reloading the configuration: pending plans are resolved again; a changed plan voids its
//! approvals and is posted again, and a plan that no longer resolves ends its request.

use super::{Engine, Output};
use crate::event::Event;
use crate::render;
use crate::run::{Phase, RunId};
use baton_actions::{Inventory, plan};
use baton_policies::{Directory, Policy};
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
                    let text = render::finished(&self.runs[&id], &self.world, now, &self.cfg.prefix);
                    self.say_run(out, id, text);
                }
            }
        }
    }
}

//! The fold: applying a journaled event to the engine's state, live right after deciding and
//! again on restore, so a replayed journal rebuilds the same runs.

use super::Engine;
use crate::event::{Event, Recorded};
use crate::run::{AbortRequest, Phase, Run, StepState, StepStatus};
use baton_policies::{Review, Right};

impl Engine {
    /// Applies one journaled event. Used live (right after deciding) and on restore.
    pub(super) fn apply(&mut self, r: &Recorded) {
        let at = r.at;
        match &r.event {
            Event::Requested {
                run,
                requester,
                room,
                reason,
                plan,
                plan_hash,
                live_route,
                asked,
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
                        plan_changed: false,
                        live_route: live_route.clone(),
                        phase: Phase::PendingApproval,
                        steps,
                        abort_requested: None,
                        started_at: None,
                        finished_at: None,
                        asked: asked.clone(),
                        asked_at: at,
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
            Event::Refused { .. } | Event::Reloaded { .. } | Event::ReloadRefused { .. } => {}
            Event::ApprovalWithdrawn { run, person, .. } => {
                if let Some(r) = self.runs.get_mut(run) {
                    r.review.withdraw(person);
                    r.approvers.retain(|p| p != person);
                }
            }
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
                    r.plan_changed = true;
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
                    if report.outcome.is_ok()
                        && let Some(done) = r.plan.steps.get(*step).and_then(|s| s.actions.get(*action))
                    {
                        self.world.apply(&self.cfg.inventory, *run, done);
                    }
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
            Event::AbortRequested { run, person, reason } => {
                if let Some(r) = self.runs.get_mut(run) {
                    r.abort_requested = Some(AbortRequest {
                        by: person.clone(),
                        reason: reason.clone(),
                    });
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
            Event::RetryRequested {
                run,
                person,
                step,
                asked,
            } => {
                let policy = &self.cfg.policy;
                if let Some(r) = self.runs.get_mut(run) {
                    r.review = Review::open(policy, person, r.plan_hash.as_str(), at);
                    r.phase = Phase::RetryPending { step: *step };
                    r.asked = asked.clone();
                    r.asked_at = at;
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
                    self.world.route = Some(r.plan.to_pool.clone());
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

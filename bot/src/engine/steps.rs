//! Carrying a run out: starting steps, dispatching their actions, taking the actions' results,
//! finishing steps, and the deadlines of pending reviews (`tick`).

use super::{Dispatch, Engine, Output};
use crate::event::Event;
use crate::render;
use crate::run::{AbortRequest, Phase, Run, RunId};
use baton_actions::{ActionReport, ActionRequest, IdempotencyKey};
use chrono::{DateTime, Utc};

impl Engine {
    /// Starts `step` (a new attempt) and dispatches its unfinished actions.
    pub(super) fn start_step(&mut self, out: &mut Output, now: DateTime<Utc>, id: RunId, step: usize) {
        let attempt = self.runs[&id].steps[step].attempt + 1;
        self.emit(out, now, Event::StepStarted { run: id, step, attempt });
        let run = &self.runs[&id];
        self.dispatch_pending(run, step, &mut out.dispatches);
        if self.runs[&id].step_complete(step) {
            self.finish_step(out, now, id, step);
        }
    }

    pub(super) fn dispatch_pending(&self, run: &Run, step: usize, into: &mut Vec<Dispatch>) {
        let state = &run.steps[step];
        for (i, (action, result)) in run.plan.steps[step].actions.iter().zip(&state.results).enumerate() {
            if result.is_some() {
                continue;
            }
            let key = IdempotencyKey::for_request(
                &self.cfg.store_id,
                run.id.0,
                run.requested_at.timestamp_millis(),
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
    pub(super) fn action_finished(
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
        self.progress(out, id, text);
        let run = &self.runs[&id];
        if let Some(AbortRequest { by, reason }) = run.abort_requested.clone() {
            self.emit(
                out,
                now,
                Event::Aborted {
                    run: id,
                    person: Some(by),
                    reason,
                },
            );
            let text = render::finished(&self.runs[&id], &self.world, now, &self.cfg.prefix);
            self.say_run(out, id, text);
        } else if !ok {
            self.emit(out, now, Event::Failed { run: id, step });
            let text = render::step_failed_help(&self.runs[&id], &self.world, step, &self.cfg.prefix);
            self.say_run(out, id, text);
        } else if step + 1 < run.step_count() {
            self.start_step(out, now, id, step + 1);
        } else {
            self.emit(out, now, Event::Succeeded { run: id });
            let text = render::finished(&self.runs[&id], &self.world, now, &self.cfg.prefix);
            self.say_run(out, id, text);
        }
    }

    pub(super) fn tick(&mut self, now: DateTime<Utc>, out: &mut Output) {
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
}

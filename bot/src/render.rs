//! Every sentence Baton says in chat, in one place: plans, step lines, summaries, status tables,
//! run cards. Pure functions of the run state.

use crate::chat::{ButtonIntent, CardAction, CardStep, Mark, Rich, RunCard};
use crate::engine::world::World;
use crate::event::LiveRoute;
use crate::run::{Phase, Run, RunId, StepStatus};
use baton_actions::{ActionReport, Plan, PlanHash, PoolName};
use baton_policies::{Directory, GroupName, PersonId, Policy};
use chrono::{DateTime, Utc};
use std::fmt::Write;

/// An error from a library (lower-case, no full stop) as a chat sentence.
pub fn sentence(text: &str) -> String {
    let mut chars = text.trim().chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => return String::new(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// `14:02:11`, in UTC.
pub fn clock(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S").to_string()
}

/// `0.3s`, `2.4s`, `41s`, `3m12s`.
pub fn elapsed_ms(ms: u64) -> String {
    match ms {
        0..10_000 => format!("{:.1}s", ms as f64 / 1000.0),
        10_000..120_000 => format!("{}s", ms / 1000),
        _ => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
    }
}

pub fn elapsed(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    elapsed_ms(u64::try_from((to - from).num_milliseconds()).unwrap_or(0))
}

fn people(list: &[PersonId]) -> String {
    let names: Vec<&str> = list.iter().map(PersonId::as_str).collect();
    match names.len() {
        0 => "nobody".to_string(),
        1 => names[0].to_string(),
        n => format!("{} and {}", names[..n - 1].join(", "), names[n - 1]),
    }
}

fn groups(list: &[GroupName]) -> String {
    list.iter().map(GroupName::as_str).collect::<Vec<_>>().join(" or ")
}

fn route(from: Option<&PoolName>) -> &str {
    from.map_or("(unknown)", |p| p.as_str())
}

fn plan_lines(out: &mut String, plan: &Plan, exact: bool) {
    for (i, step) in plan.steps.iter().enumerate() {
        let _ = write!(out, "\n  {}. {:<9} {}", i + 1, step.kind.title(), step.summary());
        if exact {
            for a in &step.actions {
                let _ = write!(out, "\n       {}: {}", a.where_long(), a.command_line());
            }
        }
    }
    for w in &plan.warnings {
        let _ = write!(out, "\nWarning: {w}.");
    }
}

/// `: <reason>` after a verb, the reason quoted as typed (platforms neutralise its markup).
fn because(reason: Option<&str>) -> Rich {
    match reason {
        Some(r) => Rich::from(": ").quoted(r),
        None => Rich::new(),
    }
}

/// What the live route and the journal say, when they disagree, and the warnings a plan needs
/// when its target pool carries federation now (its services are about to be stopped).
fn live_lines(out: &mut String, plan: &Plan, live: Option<&LiveRoute>, world: &World) {
    if let Some(live) = live
        && live.pool.as_ref() != plan.from_pool.as_ref()
    {
        let _ = write!(
            out,
            "\nNote: Lync reports the route as {}; Baton's journal says {}.",
            live.seen,
            route(plan.from_pool.as_ref())
        );
    }
    let by_lync = live.and_then(|l| l.pool.as_ref()) == Some(&plan.to_pool);
    let by_dns = world.dns_a.as_ref() == Some(&plan.to_pool);
    if by_lync || by_dns {
        let why = match (by_lync, by_dns) {
            (true, true) => "Lync routes federation to it and DNS points to it",
            (true, false) => "Lync routes federation to it",
            _ => "DNS points the federation host to it",
        };
        let _ = write!(
            out,
            "\nWarning: {} carries federation now ({why}): step 2 stops its services, which interrupts federation until step 7 starts them.",
            plan.to_pool
        );
    }
}

/// The approvers an approval request calls, as mentions (platforms that have mentions notify
/// them; XMPP writes the nickname each uses in the room, which clients highlight).
fn calling(run: &Run, dir: &Directory) -> Rich {
    if run.asked.is_empty() {
        return Rich::from("No one who may approve can be called here now: ask an approver to join.");
    }
    let mut out = Rich::from("Asking ");
    let n = run.asked.len();
    for (i, person) in run.asked.iter().enumerate() {
        if i > 0 {
            out = out.text(if i + 1 == n { " and " } else { ", " });
        }
        out = out.mention(crate::engine::call::mention(dir, person));
    }
    out.text(".")
}

/// The request, with the plan, posted for review.
pub fn plan_posted(run: &Run, world: &World, policy: &Policy, dir: &Directory, prefix: &str) -> Rich {
    let plan = &run.plan;
    let mut out = Rich::from(format!(
        "Run {} requested by {}: move XMPP federation {} -> {} ({}).",
        run.id,
        run.requester,
        route(plan.from_pool.as_ref()),
        plan.to_pool,
        plan.to_site
    ));
    if let Some(reason) = &run.reason {
        out = out.text("\nReason: ").quoted(reason);
    }
    let mut rest = format!("\nPlan (sha256 {}):", run.plan_hash.short());
    plan_lines(&mut rest, plan, false);
    live_lines(&mut rest, plan, run.live_route.as_ref(), world);
    let _ = write!(rest, "\n{}\n", approval_needed(run, policy, prefix));
    out.text(rest).append(calling(run, dir))
}

fn approval_needed(run: &Run, policy: &Policy, prefix: &str) -> String {
    let need = policy.approvals_required.max(1);
    let who = if policy.requester_may_approve {
        format!("from {}", groups(&policy.approve))
    } else {
        format!("from {} other than {}", groups(&policy.approve), run.review.requester())
    };
    let minutes = (run.review.expires_at() - run.requested_at).num_minutes();
    // After a plan change, approvals name the plan they are for.
    let hash = if run.plan_changed {
        format!(" {}", run.plan_hash.short())
    } else {
        String::new()
    };
    format!(
        "Needs {need} approval{} {who}: `{prefix}approve {n}{hash}` or `{prefix}deny {n} <why>`. Expires at {} UTC ({} min).",
        if need == 1 { "" } else { "s" },
        clock(run.review.expires_at()),
        minutes.max(1),
        n = run.id.0,
    )
}

/// `!plan`: the plan with the exact command per host, nothing started.
pub fn plan_preview(plan: &Plan, hash: &PlanHash, live: Option<&LiveRoute>, world: &World, prefix: &str) -> String {
    let mut out = format!(
        "Plan for XMPP federation {} -> {} ({}), sha256 {} (not started):",
        route(plan.from_pool.as_ref()),
        plan.to_pool,
        plan.to_site,
        hash.short()
    );
    plan_lines(&mut out, plan, true);
    live_lines(&mut out, plan, live, world);
    let _ = write!(out, "\nTo request it: {prefix}failover xmpp {} <reason>", plan.to_pool);
    out
}

/// A new plan replaced the one under review.
pub fn plan_changed(run: &Run, lapsed: &[PersonId], policy: &Policy, prefix: &str) -> String {
    let mut out = format!("Run {}: the inventory changed and so did the plan.", run.id);
    if !lapsed.is_empty() {
        let _ = write!(out, " Approvals by {} lapsed.", people(lapsed));
    }
    let _ = write!(out, "\nNew plan (sha256 {}):", run.plan_hash.short());
    plan_lines(&mut out, &run.plan, false);
    let _ = write!(out, "\n{}", approval_needed(run, policy, prefix));
    out
}

pub fn approval_recorded(run: &Run, by: &PersonId, have: u32, need: u32) -> String {
    format!(
        "{} approved by {by} ({have} of {need} approvals). Waiting for {} more.",
        run.id,
        need - have
    )
}

pub fn started(run: &Run) -> String {
    let mut everyone = vec![run.requester.clone()];
    everyone.extend(run.approvers.iter().filter(|p| **p != run.requester).cloned());
    format!(
        "{} approved by {} ({} people: {}). Running.",
        run.id,
        people(&run.approvers),
        everyone.len(),
        people(&everyone)
    )
}

fn action_part(place: &str, report: &ActionReport, single: bool) -> String {
    let time = elapsed_ms(report.elapsed_ms);
    match (&report.outcome, single) {
        (baton_actions::ActionOutcome::Ok { detail }, true) if place == "bot" => format!("{detail} ({time})"),
        (baton_actions::ActionOutcome::Ok { detail }, true) => format!("{place}: {detail} ({time})"),
        (baton_actions::ActionOutcome::Ok { .. }, false) => format!("{place} ok {time}"),
        (baton_actions::ActionOutcome::Failed { error }, _) => format!("{place} FAILED after {time}: {error}"),
        (baton_actions::ActionOutcome::Unknown { error }, _) => {
            format!("{place} UNKNOWN after {time}: {error}")
        }
    }
}

/// One line when a step ends.
pub fn step_finished(run: &Run, step: usize) -> String {
    let plan_step = &run.plan.steps[step];
    let state = &run.steps[step];
    let single = plan_step.actions.len() == 1;
    let parts: Vec<String> = plan_step
        .actions
        .iter()
        .zip(&state.results)
        .filter_map(|(a, r)| r.as_ref().map(|r| action_part(&a.where_short(), r, single)))
        .collect();
    let verdict = if run.step_ok(step) {
        ""
    } else if unknown_places(run, step).is_empty() {
        " FAILED"
    } else {
        " OUTCOME UNKNOWN"
    };
    let attempt = if state.attempt > 1 {
        format!(" (attempt {})", state.attempt)
    } else {
        String::new()
    };
    format!(
        "{} [{}/{}] {}{verdict}{attempt}: {}",
        run.id,
        step + 1,
        run.step_count(),
        plan_step.kind.title(),
        parts.join(", ")
    )
}

/// The places of a step whose action's outcome is unknown in its current attempt.
fn unknown_places(run: &Run, step: usize) -> Vec<String> {
    run.plan.steps[step]
        .actions
        .iter()
        .zip(&run.steps[step].results)
        .filter(|(_, r)| r.as_ref().is_some_and(|r| r.outcome.is_unknown()))
        .map(|(a, _)| a.where_short())
        .collect()
}

pub fn step_failed_help(run: &Run, world: &World, step: usize, prefix: &str) -> String {
    let unknown = unknown_places(run, step);
    let mut out = if !unknown.is_empty() {
        format!(
            "{} stopped at step {}/{} ({}): the outcome on {} is unknown; the action may have run, or may still be running. `{prefix}retry {n}` first asks the agent what became of it and runs it again only if it did not succeed; `{prefix}abort {n}` ends the run.",
            run.id,
            step + 1,
            run.step_count(),
            run.plan.steps[step].kind.title(),
            unknown.join(", "),
            n = run.id.0
        )
    } else {
        format!(
            "{} stopped at step {}/{} ({}); later steps did not run. `{prefix}retry {n}` runs the failed part again, `{prefix}abort {n}` ends the run.",
            run.id,
            step + 1,
            run.step_count(),
            run.plan.steps[step].kind.title(),
            n = run.id.0
        )
    };
    if let Some(left) = left_behind(run, world, prefix) {
        let _ = write!(out, "\n{left}");
    }
    out
}

/// Whether one of the run's actions of this kind succeeded (in any attempt that counted).
fn did(run: &Run, id: &str) -> bool {
    run.plan.steps.iter().zip(&run.steps).any(|(step, state)| {
        step.actions
            .iter()
            .zip(&state.results)
            .any(|(a, r)| a.id() == id && r.as_ref().is_some_and(|r| r.outcome.is_ok()))
    })
}

/// What a run that did not finish left changed, as far as Baton knows: services it stopped and
/// did not start again, the route it moved, the A record it changed.
pub fn left_behind(run: &Run, world: &World, prefix: &str) -> Option<String> {
    if matches!(run.phase, Phase::Succeeded) {
        return None;
    }
    let mut parts = Vec::new();
    let stopped = world.stopped_by(run.id);
    if !stopped.is_empty() {
        let hosts: Vec<&str> = stopped.iter().map(|h| h.as_str()).collect();
        parts.push(format!(
            "the Lync services of {} are stopped (Start-CsWindowsService on each starts them)",
            hosts.join(", ")
        ));
    }
    let mut moved = false;
    if did(run, "route.set") && world.route.as_ref() == Some(&run.plan.to_pool) {
        parts.push(format!("the federation route points to {}", run.plan.to_pool));
        moved = true;
    }
    if did(run, "dns.set_a") && world.dns_a.as_ref() == Some(&run.plan.to_pool) {
        parts.push(format!("DNS points the federation host to {}", run.plan.to_pool));
        moved = true;
    }
    if parts.is_empty() {
        return None;
    }
    // Failing back helps only once something moved; before that the old pool still serves.
    let back = match (&run.plan.from_pool, moved) {
        (Some(p), true) => format!(" To fail back: `{prefix}failover xmpp {p}`."),
        _ => String::new(),
    };
    Some(format!("Left as Baton knows it: {}.{back}", parts.join("; ")))
}

/// `why` says who asked: `for bob`, `approved by carol`.
pub fn retrying(run: &Run, step: usize, why: &str) -> String {
    format!(
        "{} retrying step {}/{} ({}), attempt {}, {why}.",
        run.id,
        step + 1,
        run.step_count(),
        run.plan.steps[step].kind.title(),
        run.steps[step].attempt
    )
}

pub fn retry_needs_approval(run: &Run, step: usize, policy: &Policy, dir: &Directory, prefix: &str) -> Rich {
    Rich::from(format!(
        "{} retry of step {}/{} ({}) requested by {}. {}\n",
        run.id,
        step + 1,
        run.step_count(),
        run.plan.steps[step].kind.title(),
        run.review.requester(),
        approval_needed(run, policy, prefix)
    ))
    .append(calling(run, dir))
}

/// The final summary of a run that reached its end.
pub fn finished(run: &Run, world: &World, now: DateTime<Utc>, prefix: &str) -> Rich {
    let took = run.started_at.map(|s| elapsed(s, now)).unwrap_or_else(|| "0s".into());
    let who = format!(
        "Requested by {} at {} UTC, approved by {}",
        run.requester,
        clock(run.requested_at),
        people(&run.approvers)
    );
    match &run.phase {
        Phase::Succeeded => {
            let verify = run
                .steps
                .last()
                .and_then(|s| s.results.first())
                .and_then(|r| r.as_ref())
                .map(|r| format!(" Verify: {}.", r.outcome.text()))
                .unwrap_or_default();
            Rich::from(format!(
                "{} succeeded in {took}. XMPP federation now served by {} ({}).{verify} {who}.",
                run.id, run.plan.to_pool, run.plan.to_site
            ))
        }
        Phase::Aborted { by, reason } => {
            let done = run.steps.iter().filter(|s| s.status == StepStatus::Succeeded).count();
            let by = by.as_ref().map_or("Baton".to_string(), |p| p.to_string());
            let left = left_behind(run, world, prefix)
                .map(|l| format!("\n{l}"))
                .unwrap_or_default();
            Rich::from(format!("{} aborted by {by}", run.id))
                .append(because(reason.as_deref()))
                .text(format!(
                    ". {done} of {} steps had completed; the rest did not run. {who}.{left}",
                    run.step_count()
                ))
        }
        other => Rich::from(format!("{} {}.", run.id, other.name())),
    }
}

pub fn denied(run: &Run, by: &PersonId, reason: Option<&str>) -> Rich {
    Rich::from(format!("{} denied by {by}", run.id))
        .append(because(reason))
        .text(". Nothing was changed.")
}

pub fn retry_denied(run: &Run, by: &PersonId, reason: Option<&str>, prefix: &str) -> Rich {
    Rich::from(format!("{} retry denied by {by}", run.id))
        .append(because(reason))
        .text(format!(". The run stays failed; `{prefix}abort {}` ends it.", run.id.0))
}

pub fn expired(run: &Run, policy: &Policy) -> String {
    format!(
        "{} expired: not approved within {}. Nothing was changed.",
        run.id,
        humantime::format_duration(policy.expiry)
    )
}

pub fn retry_expired(run: &Run, prefix: &str) -> String {
    format!(
        "{} retry was not approved in time. The run stays failed: `{prefix}retry {n}` or `{prefix}abort {n}`.",
        run.id,
        n = run.id.0
    )
}

pub fn abort_requested(run: &Run, by: &PersonId, reason: Option<&str>) -> Rich {
    let step = run.running_step().unwrap_or(0);
    Rich::from(format!(
        "{} will stop after step {}/{} ({}) ends (abort requested by {by}",
        run.id,
        step + 1,
        run.step_count(),
        run.plan.steps[step].kind.title()
    ))
    .append(because(reason))
    .text("); nothing further will start.")
}

fn step_mark(status: StepStatus) -> &'static str {
    match status {
        StepStatus::NotStarted => "-",
        StepStatus::Running => "running",
        StepStatus::Succeeded => "ok",
        StepStatus::Failed => "FAILED",
    }
}

fn phase_line(run: &Run) -> String {
    match &run.phase {
        Phase::Running { step } | Phase::Failed { step } | Phase::RetryPending { step } => format!(
            "{}, step {}/{} ({})",
            run.phase.name(),
            step + 1,
            run.step_count(),
            run.plan.steps[*step].kind.title()
        ),
        other => other.name().to_string(),
    }
}

/// `!status <run>`: the run's step table.
pub fn status_table(run: &Run, world: &World, now: DateTime<Utc>, prefix: &str) -> String {
    let approved = if run.approvers.is_empty() {
        String::new()
    } else {
        format!(", approved by {}", people(&run.approvers))
    };
    let mut out = format!(
        "{} {}: {} -> {}, requested {} UTC by {}{approved}",
        run.id,
        phase_line(run),
        route(run.plan.from_pool.as_ref()),
        run.plan.to_pool,
        clock(run.requested_at),
        run.requester
    );
    if run.abort_requested.is_some() && run.phase.is_active() {
        out.push_str(" (stopping after this step)");
    }
    for (i, (step, state)) in run.plan.steps.iter().zip(&run.steps).enumerate() {
        let time = match (state.started_at, state.finished_at, state.status) {
            (Some(s), Some(f), _) => elapsed(s, f),
            (Some(s), None, StepStatus::Running) => format!("{} so far", elapsed(s, now)),
            _ => String::new(),
        };
        let line = format!(
            "\n  {}. {:<9} {:<8} {time}",
            i + 1,
            step.kind.title(),
            step_mark(state.status)
        );
        out.push_str(line.trim_end());
        if state.status == StepStatus::Failed {
            for (a, r) in step.actions.iter().zip(&state.results) {
                if let Some(r) = r.as_ref().filter(|r| !r.outcome.is_ok()) {
                    let _ = write!(out, "\n       {}: {}", a.where_short(), r.outcome.text());
                }
            }
        }
    }
    if let Phase::PendingApproval | Phase::RetryPending { .. } = run.phase {
        let asked: Vec<&str> = run.asked.iter().map(PersonId::as_str).collect();
        let asked = if asked.is_empty() {
            "nobody (no approver could be called)".to_string()
        } else {
            asked.join(", ")
        };
        let _ = write!(
            out,
            "\n  waiting {} for approval; asked: {asked}\n  expires at {} UTC",
            elapsed(run.asked_at, now),
            clock(run.review.expires_at())
        );
    }
    if let Some(left) = left_behind(run, world, prefix) {
        let _ = write!(out, "\n  {left}");
    }
    out
}

/// `!status`: active runs, and where the route is.
pub fn active(runs: &[&Run], holder: Option<&PoolName>) -> String {
    let mut out = match holder {
        Some(p) => format!("XMPP federation route: {p} (as Baton last set or was configured)."),
        None => "XMPP federation route: unknown to Baton.".to_string(),
    };
    if runs.is_empty() {
        out.push_str(" No active run.");
    }
    for run in runs {
        let _ = write!(
            out,
            "\n{} {}: {} -> {}, requested by {} at {} UTC",
            run.id,
            phase_line(run),
            route(run.plan.from_pool.as_ref()),
            run.plan.to_pool,
            run.requester,
            clock(run.requested_at)
        );
    }
    out
}

/// `!runs`: the most recent runs, newest first.
pub fn recent(runs: &[&Run]) -> String {
    if runs.is_empty() {
        return "No runs yet.".to_string();
    }
    let mut out = String::from("Recent runs:");
    for run in runs {
        let took = match (run.started_at, run.finished_at) {
            (Some(s), Some(f)) => format!(" in {}", elapsed(s, f)),
            _ => String::new(),
        };
        let _ = write!(
            out,
            "\n{} {}{took}: {} -> {}, {} by {}",
            run.id,
            phase_line(run),
            route(run.plan.from_pool.as_ref()),
            run.plan.to_pool,
            run.requested_at.format("%Y-%m-%d %H:%M UTC"),
            run.requester
        );
    }
    out
}

fn mark_of_step(status: StepStatus) -> Mark {
    match status {
        StepStatus::NotStarted => Mark::Waiting,
        StepStatus::Running => Mark::Running,
        StepStatus::Succeeded => Mark::Ok,
        StepStatus::Failed => Mark::Failed,
    }
}

fn mark_of_run(phase: &Phase) -> Mark {
    match phase {
        Phase::PendingApproval | Phase::RetryPending { .. } => Mark::Waiting,
        Phase::Running { .. } => Mark::Running,
        Phase::Failed { .. } => Mark::Failed,
        Phase::Succeeded => Mark::Ok,
        Phase::Aborted { .. } | Phase::Denied { .. } | Phase::Expired => Mark::Stopped,
    }
}

/// The live card of a run, for platforms that edit messages in place: every step with the exact
/// command per host and each host's outcome, who asked and approved, and the buttons that still
/// make sense (they carry the plan's hash).
pub fn card(run: &Run) -> RunCard {
    let steps = run
        .plan
        .steps
        .iter()
        .zip(&run.steps)
        .enumerate()
        .map(|(i, (s, st))| CardStep {
            number: i + 1,
            title: s.kind.title().to_string(),
            summary: s.summary(),
            mark: mark_of_step(st.status),
            actions: s
                .actions
                .iter()
                .zip(&st.results)
                .map(|(a, r)| CardAction {
                    place: a.where_short(),
                    command: a.command_line(),
                    mark: match (r, st.status) {
                        (Some(r), _) if r.outcome.is_ok() => Mark::Ok,
                        (Some(_), _) => Mark::Failed,
                        (None, StepStatus::Running) => Mark::Running,
                        (None, _) => Mark::Waiting,
                    },
                    detail: r
                        .as_ref()
                        .map(|r| format!("{} ({})", r.outcome.text(), elapsed_ms(r.elapsed_ms))),
                })
                .collect(),
        })
        .collect();
    let approved = if run.approvers.is_empty() {
        String::new()
    } else {
        format!(", approved by {}", people(&run.approvers))
    };
    let when = match (&run.phase, run.started_at, run.finished_at) {
        (Phase::PendingApproval | Phase::RetryPending { .. }, _, _) => {
            format!("; expires at {} UTC", clock(run.review.expires_at()))
        }
        (_, Some(s), Some(f)) => format!("; took {}", elapsed(s, f)),
        _ => String::new(),
    };
    let plan = run.plan_hash.short().to_string();
    let buttons = match run.phase {
        Phase::PendingApproval | Phase::RetryPending { .. } => vec![
            ButtonIntent::Approve {
                run: run.id,
                plan: plan.clone(),
            },
            ButtonIntent::Deny {
                run: run.id,
                plan: plan.clone(),
            },
        ],
        _ => Vec::new(),
    };
    RunCard {
        run: run.id,
        title: format!(
            "{} XMPP federation {} -> {}",
            run.id,
            route(run.plan.from_pool.as_ref()),
            run.plan.to_pool
        ),
        mark: mark_of_run(&run.phase),
        state: phase_line(run),
        reason: run.reason.clone(),
        steps,
        footer: format!(
            "requested by {} at {} UTC{approved}; plan sha256 {plan}{when}",
            run.requester,
            clock(run.requested_at),
        ),
        plan,
        buttons,
        warnings: run.plan.warnings.iter().map(|w| sentence(w)).collect(),
    }
}

/// A mirror room stopped taking messages.
/// A replica took over from another (it leads the shared store now).
pub fn took_over(replica: &str) -> Rich {
    Rich::from(format!(
        "Baton replica {replica} took over: it is the active one now, and open runs carry on from the journal."
    ))
}

pub fn mirror_unreachable(room: &crate::chat::RoomRef, reason: &str) -> Rich {
    Rich::from(format!(
        "Messages to the mirror room {} cannot be delivered ({reason}); Baton records them as undeliverable there and goes on here.",
        room.id
    ))
}

pub fn no_such_run(id: RunId, prefix: &str) -> String {
    format!("There is no run {id}. `{prefix}runs` lists recent runs.")
}

pub fn not_waiting(run: &Run) -> String {
    format!("{} is {}, not waiting for approval.", run.id, phase_line(run))
}

pub fn already_active(run: &Run, prefix: &str) -> String {
    format!(
        "Run {} is already active ({}) for the XMPP federation route; one run at a time. `{prefix}status {}` shows it.",
        run.id,
        phase_line(run),
        run.id.0
    )
}

/// Why an approval naming a plan hash that is not the run's current plan is refused.
pub fn plan_not_current(run: &Run, seen: &str, prefix: &str) -> String {
    let now = run.plan_hash.short();
    format!(
        "the plan of {} is now sha256 {now}, not the {seen} you named; check the new plan and approve that one: `{prefix}approve {} {now}`",
        run.id, run.id.0
    )
}

pub fn reload_refused(why: &str) -> String {
    format!("Configuration reload refused: {why}.")
}

pub fn approval_withdrawn(run: &Run, person: &PersonId, why: &str) -> String {
    format!(
        "{}: the reloaded configuration withdrew {person}'s approval ({why}).",
        run.id
    )
}

pub fn name_the_plan(run: &Run, prefix: &str) -> String {
    let now = run.plan_hash.short();
    format!(
        "the plan of {} changed after it was requested; read the new plan (sha256 {now}, `{prefix}status {n}`) and approve it by naming it: `{prefix}approve {n} {now}`",
        run.id,
        n = run.id.0
    )
}

/// To a clicker whose refusals this minute were used up (a click must be answered; the room hears
/// nothing).
pub fn refusals_silenced() -> String {
    "Refused again: you have had your refusals for this minute; try again later.".to_string()
}

pub fn refused(action: &str, why: &str) -> String {
    format!("Refused ({action}): {why}.")
}

/// `!status xmpp` in `baton demo`: the outside-in view simulated from what Baton's journal knows,
/// because the example's addresses are documentation ranges and the demo sends no packet beyond
/// this machine.
pub fn status_xmpp_simulated(inventory: &baton_actions::Inventory, world: &crate::engine::world::World) -> String {
    let f = &inventory.federation;
    let route = world
        .route
        .as_ref()
        .map_or("no pool (not configured)".to_string(), |p| p.to_string());
    let a_pool = world.dns_a.as_ref().or(world.route.as_ref());
    let a = a_pool
        .and_then(|name| inventory.pools.iter().find(|p| &p.name == name))
        .map_or("unknown".to_string(), |p| {
            format!("{} ({})", p.external_address, p.name)
        });
    let mut out = format!(
        "Simulated outside-in view (baton demo: no packet leaves this machine; `baton run` asks the resolver and probes every pool for real).\n  route  XMPP federation held by {route}\n  A      {} -> {a}\n  SRV    {} -> {}:{}",
        f.host, f.srv, f.host, f.port
    );
    for pool in &inventory.pools {
        let stopped: Vec<&str> = pool
            .servers
            .iter()
            .filter(|h| world.stopped.contains_key(*h))
            .map(|h| h.as_str())
            .collect();
        let state = if stopped.is_empty() {
            "services running".to_string()
        } else {
            format!("services stopped on {}", stopped.join(", "))
        };
        let _ = write!(
            out,
            "\n  {} ({}) {}:{}: {state}",
            pool.name, pool.site, pool.external_address, f.port
        );
    }
    out
}

/// A `!status xmpp` answered from the last look, which ended `age` ago (looks are shared for
/// `cache`: one look answers every ask meanwhile).
pub fn status_xmpp_cached(text: &str, age: std::time::Duration, cache: std::time::Duration) -> String {
    format!(
        "{text}\n(As looked {} ago: one look answers every ask for {}s.)",
        elapsed_ms(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
        cache.as_secs()
    )
}

pub fn status_xmpp_unavailable() -> String {
    "The outside-in view is not available: Baton could not resolve the DNS resolver named in [dns] at start (see its log)."
        .to_string()
}

/// `!status xmpp`: the live outside-in picture, and a one-line verdict first.
pub fn status_xmpp(s: &baton_actions::status::XmppStatus, holder: Option<&PoolName>) -> String {
    let mut out = format!("XMPP federation of {}: {}", s.domain, xmpp_verdict(s));
    let _ = write!(
        out,
        "\n  route per Baton's journal: {}",
        holder.map_or("(unknown)".to_string(), |p| p.to_string())
    );
    for r in &s.routes {
        match &r.route {
            Ok(route) => {
                let _ = write!(out, "\n  route reported by {}: {route}", r.site);
            }
            Err(e) => {
                let _ = write!(out, "\n  route reported by {}: unknown ({e})", r.site);
            }
        }
    }
    let owner =
        |r: &baton_actions::dns::ARecord| match s.pools.iter().find(|p| p.addr.ip() == std::net::IpAddr::V4(r.address))
        {
            Some(p) => format!("{} ({})", r.address, p.pool),
            None => format!("{} (no pool of the inventory)", r.address),
        };
    out.push_str(&records_line("A   ", &s.host, &s.a, owner));
    out.push_str(&records_line("SRV ", &s.srv_name, &s.srv, |r| r.to_string()));
    for p in &s.pools {
        let mut line = format!("\n  {} ({}) {}: {}", p.pool, p.site, p.addr, p.port.summary());
        match &p.s2s {
            Some(Ok(report)) => line.push_str(&format!("; {}", report.summary())),
            Some(Err(e)) => line.push_str(&format!("; s2s probe failed: {e}")),
            None => {}
        }
        if p.in_dns {
            line.push_str(" <- in DNS");
        }
        out.push_str(&line);
    }
    let _ = write!(
        out,
        "\n  (asked resolver {} and probed from Baton's host in {})",
        s.resolver,
        baton_actions::probe::human_duration(s.elapsed)
    );
    out
}

/// `  A    xmpp.contoso.com -> 203.0.113.20 (EdgePool2)`, or no record, or why there is no answer.
fn records_line<T>(
    kind: &str,
    name: &baton_actions::Fqdn,
    answer: &Result<Vec<T>, String>,
    show: impl Fn(&T) -> String,
) -> String {
    match answer {
        Ok(records) if records.is_empty() => format!("\n  {kind} {name} -> no record"),
        Ok(records) => format!(
            "\n  {kind} {name} -> {}",
            records.iter().map(show).collect::<Vec<_>>().join(", ")
        ),
        Err(e) => format!("\n  {kind} {name}: {e}"),
    }
}

fn xmpp_verdict(s: &baton_actions::status::XmppStatus) -> String {
    let records = match &s.a {
        Ok(r) => r,
        Err(_) => return "cannot tell: the A query got no answer (see below).".to_string(),
    };
    let srv_ok = match &s.srv {
        Ok(list) => !list.is_empty() && list.iter().all(|r| r.target == s.host.as_str()),
        Err(_) => false,
    };
    let srv_note = if srv_ok {
        String::new()
    } else {
        format!(" The SRV record does not point at {} only.", s.host)
    };
    let in_dns: Vec<&baton_actions::status::PoolStatus> = s.pools.iter().filter(|p| p.in_dns).collect();
    let verdict = match (in_dns.as_slice(), records.is_empty()) {
        (_, true) => format!("{} has no A record: partners cannot reach federation.", s.host),
        ([], false) => format!("{} points to no pool of the inventory.", s.host),
        ([p], false) => match &p.s2s {
            Some(Ok(_)) => format!("working: DNS points to {} and its s2s stream opens.", p.pool),
            Some(Err(_)) => format!(
                "DNS points to {}, which accepts connections but fails the s2s probe.",
                p.pool
            ),
            None => format!(
                "DNS points to {}, but its port {} is {}.",
                p.pool,
                p.addr.port(),
                p.port.state
            ),
        },
        (many, false) => {
            let names: Vec<&str> = many.iter().map(|p| p.pool.as_str()).collect();
            format!("DNS points to several pools at once: {}.", names.join(", "))
        }
    };
    format!("{verdict}{srv_note}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_actions::dns::{ARecord, SrvRecord};
    use baton_actions::probe::{PortCheck, PortState, S2sReport};
    use baton_actions::status::{PoolStatus, XmppStatus};
    use baton_actions::{Fqdn, PoolName, SiteName};
    use std::time::Duration;

    fn pool(name: &str, ip: &str, state: PortState, s2s: Option<Result<(), &str>>, in_dns: bool) -> PoolStatus {
        let addr: std::net::SocketAddr = format!("{ip}:5269").parse().expect("valid");
        PoolStatus {
            pool: PoolName::parse(name).expect("valid"),
            site: SiteName::parse("Site1").expect("valid"),
            fqdn: Fqdn::parse("edgepool.contoso.com").expect("valid"),
            addr,
            in_dns,
            port: PortCheck {
                addr,
                state,
                latency: Duration::from_micros(300),
                error: None,
            },
            s2s: s2s.map(|r| {
                r.map(|()| S2sReport {
                    addr,
                    stream_id: "x".into(),
                    from: None,
                    features: vec!["starttls".into()],
                    latency: Duration::from_millis(2),
                    tls: None,
                })
                .map_err(str::to_string)
            }),
        }
    }

    fn status(a: Result<Vec<&str>, &str>, pools: Vec<PoolStatus>) -> XmppStatus {
        XmppStatus {
            domain: Fqdn::parse("contoso.com").expect("valid"),
            host: Fqdn::parse("xmpp.contoso.com").expect("valid"),
            a: a.map(|v| {
                v.iter()
                    .map(|ip| ARecord {
                        address: ip.parse().expect("valid"),
                        ttl: 300,
                    })
                    .collect()
            })
            .map_err(str::to_string),
            srv_name: Fqdn::parse("_xmpp-server._tcp.contoso.com").expect("valid"),
            srv: Ok(vec![SrvRecord {
                priority: 10,
                weight: 10,
                port: 5269,
                target: "xmpp.contoso.com".into(),
                ttl: 300,
            }]),
            resolver: "198.51.100.53:53".parse().expect("valid"),
            pools,
            routes: Vec::new(),
            elapsed: Duration::from_millis(3),
        }
    }

    fn verdict(s: &XmppStatus) -> String {
        status_xmpp(s, None).lines().next().unwrap_or_default().to_string()
    }

    #[test]
    fn the_verdict_names_what_is_wrong() {
        let ok = status(
            Ok(vec!["203.0.113.20"]),
            vec![pool("EdgePool2", "203.0.113.20", PortState::Open, Some(Ok(())), true)],
        );
        assert_eq!(
            verdict(&ok),
            "XMPP federation of contoso.com: working: DNS points to EdgePool2 and its s2s stream opens."
        );
        let closed = status(
            Ok(vec!["203.0.113.20"]),
            vec![pool("EdgePool2", "203.0.113.20", PortState::Refused, None, true)],
        );
        assert_eq!(
            verdict(&closed),
            "XMPP federation of contoso.com: DNS points to EdgePool2, but its port 5269 is refused."
        );
        let stray = status(
            Ok(vec!["192.0.2.1"]),
            vec![pool("EdgePool2", "203.0.113.20", PortState::Open, Some(Ok(())), false)],
        );
        assert_eq!(
            verdict(&stray),
            "XMPP federation of contoso.com: xmpp.contoso.com points to no pool of the inventory."
        );
        assert!(status_xmpp(&stray, None).contains("A    xmpp.contoso.com -> 192.0.2.1 (no pool of the inventory)"));
        let broken = status(
            Ok(vec!["203.0.113.20"]),
            vec![pool(
                "EdgePool2",
                "203.0.113.20",
                PortState::Open,
                Some(Err("not an XMPP server-to-server endpoint")),
                true,
            )],
        );
        assert_eq!(
            verdict(&broken),
            "XMPP federation of contoso.com: DNS points to EdgePool2, which accepts connections but fails the s2s probe."
        );
        let silent = status(Err("no answer to the A query within 3 s"), vec![]);
        assert_eq!(
            verdict(&silent),
            "XMPP federation of contoso.com: cannot tell: the A query got no answer (see below)."
        );
        let none = status(Ok(vec![]), vec![]);
        assert_eq!(
            verdict(&none),
            "XMPP federation of contoso.com: xmpp.contoso.com has no A record: partners cannot reach federation."
        );
    }
}

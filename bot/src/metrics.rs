//! Every Prometheus metric Baton exports, and how each follows from the facts the daemon knows:
//! the journaled events (`observe`, called after each commit) and the states only the shell sees
//! (setters for the outbox, chat connections, agents). Encoded in the Prometheus text format by
//! `prometheus-client` for `/metrics` (`server.rs`).
//!
//! Labels stay bounded: steps are the runbook's step kinds, hosts the inventory's short names
//! (`edge2a`, or `dns`/`bot` for the bot's own actions), refusals a fixed set of reasons.
//! Counters start at zero with the process, as Prometheus expects; the runs already in the
//! journal at start are learned (`learn`) so that their later events carry the right labels.

use crate::event::{Event, Recorded};
use crate::run::{Run, RunId};
use baton_actions::{Action, Plan, StepKind};
use baton_policies::Platform;
use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: String,
    command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    step: String,
    action: String,
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlatformLabels {
    platform: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DroppedLabels {
    platform: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DnsLabels {
    record: String,
    result: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// What `observe` remembers of a run to label its later events.
#[derive(Clone, Debug)]
struct RunFacts {
    requested_at: DateTime<Utc>,
    plan: Plan,
    /// When each step's current attempt started.
    step_started: HashMap<usize, DateTime<Utc>>,
}

/// Action durations: from a fast agent answer to a slow service stop.
const ACTION_BUCKETS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// From a request to the approval that starts the run.
const APPROVAL_BUCKETS: [f64; 11] = [
    5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
];

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Baton's metrics.
pub struct Metrics {
    registry: Registry,
    runs_requested: Counter,
    runs: Family<OutcomeLabels, Counter>,
    approvals: Counter,
    refusals: Family<RefusalLabels, Counter>,
    time_to_approval: Histogram,
    step_duration: Family<StepLabels, Histogram>,
    step_retries: Family<RetryLabels, Counter>,
    action_duration: Family<ActionLabels, Histogram>,
    action_failures: Family<ActionLabels, Counter>,
    action_replays: Family<ActionLabels, Counter>,
    dns_updates: Family<DnsLabels, Counter>,
    outbox_depth: Family<PlatformLabels, Gauge>,
    outbox_oldest: Family<PlatformLabels, FloatGauge>,
    chat_connected: Family<PlatformLabels, Gauge>,
    chat_reconnects: Family<PlatformLabels, Counter>,
    agent_up: Family<HostLabels, Gauge>,
    agent_protocol: Family<HostLabels, Gauge>,
    inbound_dropped: Family<DroppedLabels, Counter>,
    refusals_silenced: Counter,
    runs_known: Mutex<HashMap<RunId, RunFacts>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("baton");
        let runs_requested = Counter::default();
        registry.register("runs_requested", "Failover runs requested", runs_requested.clone());
        let runs = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "runs",
            "Runs that reached an outcome: succeeded, failed (a step failed; the run may be retried), aborted, denied, expired",
            runs.clone(),
        );
        let approvals = Counter::default();
        registry.register("approvals", "Approvals that passed the policy", approvals.clone());
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "refusals",
            "Commands refused by the policy or the run's state, by reason and command",
            refusals.clone(),
        );
        let time_to_approval = Histogram::new(APPROVAL_BUCKETS);
        registry.register_with_unit(
            "time_to_approval",
            "From a run's request to the approval that started it",
            Unit::Seconds,
            time_to_approval.clone(),
        );
        let step_duration = Family::<StepLabels, Histogram>::new_with_constructor(|| Histogram::new(ACTION_BUCKETS));
        registry.register_with_unit(
            "step_duration",
            "Duration of a step (all its actions, in parallel), by step kind and outcome",
            Unit::Seconds,
            step_duration.clone(),
        );
        let step_retries = Family::<RetryLabels, Counter>::default();
        registry.register(
            "step_retries",
            "Steps started again by !retry, by step kind",
            step_retries.clone(),
        );
        let action_duration =
            Family::<ActionLabels, Histogram>::new_with_constructor(|| Histogram::new(ACTION_BUCKETS));
        registry.register_with_unit(
            "action_duration",
            "Duration of one action, by step kind, action and host",
            Unit::Seconds,
            action_duration.clone(),
        );
        let action_failures = Family::<ActionLabels, Counter>::default();
        registry.register(
            "action_failures",
            "Actions that failed, by step kind, action and host",
            action_failures.clone(),
        );
        let action_replays = Family::<ActionLabels, Counter>::default();
        registry.register(
            "action_replays",
            "Actions whose recorded outcome was returned for a repeated idempotency key (resumed after a restart)",
            action_replays.clone(),
        );
        let dns_updates = Family::<DnsLabels, Counter>::default();
        registry.register(
            "dns_updates",
            "DNS updates (the runbook's A and SRV steps), by record type and result",
            dns_updates.clone(),
        );
        let outbox_depth = Family::<PlatformLabels, Gauge>::default();
        registry.register(
            "outbox_messages",
            "Chat messages journaled and not yet delivered, by platform",
            outbox_depth.clone(),
        );
        let outbox_oldest = Family::<PlatformLabels, FloatGauge>::default();
        registry.register_with_unit(
            "outbox_oldest_undelivered_age",
            "Age of the oldest undelivered chat message, by platform (0 when none waits)",
            Unit::Seconds,
            outbox_oldest.clone(),
        );
        let chat_connected = Family::<PlatformLabels, Gauge>::default();
        registry.register(
            "chat_connected",
            "1 when the chat platform is connected (and in its rooms), else 0",
            chat_connected.clone(),
        );
        let chat_reconnects = Family::<PlatformLabels, Counter>::default();
        registry.register(
            "chat_reconnects",
            "Sessions re-established with a chat platform after a loss",
            chat_reconnects.clone(),
        );
        let agent_up = Family::<HostLabels, Gauge>::default();
        registry.register(
            "agent_up",
            "1 when the host's agent answered its last health check, else 0",
            agent_up.clone(),
        );
        let agent_protocol = Family::<HostLabels, Gauge>::default();
        registry.register(
            "agent_protocol_version",
            "The protocol version the host's agent speaks (compare with baton_build_info)",
            agent_protocol.clone(),
        );
        let inbound_dropped = Family::<DroppedLabels, Counter>::default();
        registry.register(
            "inbound_dropped",
            "Chat messages dropped before they were handled because the platform's inbound backlog was full, by platform and kind (chatter goes first, then new commands)",
            inbound_dropped.clone(),
        );
        let refusals_silenced = Counter::default();
        registry.register(
            "refusals_silenced",
            "Refusals neither answered nor journaled: the sender had their share of refusals in the window",
            refusals_silenced.clone(),
        );
        let info = Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("commit", env!("BATON_GIT_COMMIT").to_string()),
            ("protocol", baton_actions::protocol::VERSION.to_string()),
        ]);
        registry.register("build", "Baton's version, git commit and agent protocol version", info);
        Metrics {
            registry,
            runs_requested,
            runs,
            approvals,
            refusals,
            time_to_approval,
            step_duration,
            step_retries,
            action_duration,
            action_failures,
            action_replays,
            dns_updates,
            outbox_depth,
            outbox_oldest,
            chat_connected,
            chat_reconnects,
            agent_up,
            agent_protocol,
            inbound_dropped,
            refusals_silenced,
            runs_known: Mutex::new(HashMap::new()),
        }
    }

    /// The metrics in the Prometheus text format (version 0.0.4), served with
    /// [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing into a String cannot fail");
        text
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, RunFacts>> {
        // The map only labels metrics; after a panic elsewhere its contents are still usable.
        self.runs_known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Messages dropped from a platform's full inbound backlog.
    pub fn inbound_dropped(&self, platform: Platform, chatter: u64, commands: u64) {
        for (kind, n) in [("chatter", chatter), ("command", commands)] {
            if n > 0 {
                self.inbound_dropped
                    .get_or_create(&DroppedLabels {
                        platform: platform.as_str().to_string(),
                        kind: kind.to_string(),
                    })
                    .inc_by(n);
            }
        }
    }

    /// Refusals left unsaid.
    pub fn refusals_silenced(&self, n: u64) {
        self.refusals_silenced.inc_by(n);
    }

    /// Learns the runs restored from the journal at start, without counting anything: their
    /// later events are then labelled like those of new runs.
    pub fn learn<'a>(&self, runs: impl IntoIterator<Item = &'a Run>) {
        let mut known = self.known();
        for r in runs {
            let step_started = r
                .steps
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.started_at.map(|t| (i, t)))
                .collect();
            known.insert(
                r.id,
                RunFacts {
                    requested_at: r.requested_at,
                    plan: r.plan.clone(),
                    step_started,
                },
            );
        }
    }

    /// Counts what newly journaled events say. Call it once per committed batch.
    pub fn observe(&self, events: &[Recorded]) {
        let mut known = self.known();
        for rec in events {
            match &rec.event {
                Event::Requested { run, plan, .. } => {
                    self.runs_requested.inc();
                    known.insert(
                        *run,
                        RunFacts {
                            requested_at: rec.at,
                            plan: plan.clone(),
                            step_started: HashMap::new(),
                        },
                    );
                }
                Event::PlanChanged { run, plan, .. } => {
                    if let Some(f) = known.get_mut(run) {
                        f.plan = plan.clone();
                    }
                }
                Event::Approved { .. } => {
                    self.approvals.inc();
                }
                Event::Refused { command, why, .. } => {
                    self.refusals
                        .get_or_create(&RefusalLabels {
                            reason: refusal_reason(why).to_string(),
                            command: command.split_whitespace().next().unwrap_or("?").to_string(),
                        })
                        .inc();
                }
                Event::Started { run, .. } => {
                    if let Some(f) = known.get(run) {
                        self.time_to_approval.observe(seconds_between(f.requested_at, rec.at));
                    }
                }
                Event::StepStarted { run, step, attempt } => {
                    let kind = known.get(run).and_then(|f| f.plan.steps.get(*step)).map(|s| s.kind);
                    if *attempt > 1 {
                        self.step_retries
                            .get_or_create(&RetryLabels { step: step_name(kind) })
                            .inc();
                    }
                    if let Some(f) = known.get_mut(run) {
                        f.step_started.insert(*step, rec.at);
                    }
                }
                Event::ActionFinished {
                    run,
                    step,
                    action,
                    report,
                    ..
                } => {
                    let s = known.get(run).and_then(|f| f.plan.steps.get(*step));
                    let a = s.and_then(|s| s.actions.get(*action));
                    let labels = ActionLabels {
                        step: step_name(s.map(|s| s.kind)),
                        action: a.map_or("unknown", Action::id).to_string(),
                        host: a.map_or_else(|| "unknown".to_string(), Action::where_short),
                    };
                    self.action_duration
                        .get_or_create(&labels)
                        .observe(report.elapsed_ms as f64 / 1000.0);
                    let ok = report.outcome.is_ok();
                    if !ok {
                        self.action_failures.get_or_create(&labels).inc();
                    }
                    if report.replayed {
                        self.action_replays.get_or_create(&labels).inc();
                    }
                    let record = match a {
                        Some(Action::DnsSetA { .. }) => Some("A"),
                        Some(Action::DnsEnsureSrv { .. }) => Some("SRV"),
                        _ => None,
                    };
                    if let Some(record) = record {
                        self.dns_updates
                            .get_or_create(&DnsLabels {
                                record: record.to_string(),
                                result: if ok { "ok" } else { "failed" }.to_string(),
                            })
                            .inc();
                    }
                }
                Event::StepFinished { run, step, ok, .. } => {
                    let f = known.get(run);
                    let kind = f.and_then(|f| f.plan.steps.get(*step)).map(|s| s.kind);
                    if let Some(started) = f.and_then(|f| f.step_started.get(step)) {
                        self.step_duration
                            .get_or_create(&StepLabels {
                                step: step_name(kind),
                                outcome: if *ok { "ok" } else { "failed" }.to_string(),
                            })
                            .observe(seconds_between(*started, rec.at));
                    }
                }
                Event::Succeeded { run } => {
                    self.outcome("succeeded");
                    known.remove(run);
                }
                Event::Failed { .. } => self.outcome("failed"),
                Event::Aborted { run, .. } => {
                    self.outcome("aborted");
                    known.remove(run);
                }
                // A deny during a retry's review leaves the run failed rather than ended, so the
                // run stays known.
                Event::Denied { .. } => self.outcome("denied"),
                Event::Expired { run } => {
                    self.outcome("expired");
                    known.remove(run);
                }
                Event::RetryExpired { .. }
                | Event::RetryRequested { .. }
                | Event::AbortRequested { .. }
                | Event::ApprovalWithdrawn { .. }
                | Event::Reloaded { .. }
                | Event::ReloadRefused { .. } => {}
            }
        }
    }

    fn outcome(&self, outcome: &str) {
        self.runs
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The outbox of one platform: how many messages wait, and how old the oldest is.
    pub fn set_outbox(&self, platform: Platform, depth: usize, oldest: Option<Duration>) {
        let labels = platform_labels(platform);
        self.outbox_depth
            .get_or_create(&labels)
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        self.outbox_oldest
            .get_or_create(&labels)
            .set(oldest.map_or(0.0, |d| d.as_secs_f64()));
    }

    /// Whether a chat platform is connected (and in its rooms).
    pub fn set_chat_connected(&self, platform: Platform, connected: bool) {
        self.chat_connected
            .get_or_create(&platform_labels(platform))
            .set(i64::from(connected));
    }

    /// A chat platform's session was established again after a loss.
    pub fn chat_reconnected(&self, platform: Platform) {
        self.chat_reconnects.get_or_create(&platform_labels(platform)).inc();
    }

    /// The last health check of a host's agent: its protocol version when it answered.
    pub fn set_agent(&self, host: &str, answered: Option<u32>) {
        let labels = HostLabels { host: host.to_string() };
        self.agent_up.get_or_create(&labels).set(i64::from(answered.is_some()));
        if let Some(protocol) = answered {
            self.agent_protocol.get_or_create(&labels).set(i64::from(protocol));
        }
    }
}

fn platform_labels(platform: Platform) -> PlatformLabels {
    PlatformLabels {
        platform: platform.as_str().to_string(),
    }
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).to_std().map_or(0.0, |d| d.as_secs_f64())
}

/// A step kind's label: its journal name (`services_stop`), which tells stop from start.
fn step_name(kind: Option<StepKind>) -> String {
    kind.and_then(|k| serde_json::to_value(k).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string())
}

/// The reason label of a refusal, from the sentence the engine journaled (the policy's
/// refusals and the run-state ones). Unknown sentences count as `other`.
pub fn refusal_reason(why: &str) -> &'static str {
    const REASONS: &[(&str, &str)] = &[
        ("I cannot verify who you are", "unverified"),
        ("is not mapped to any person", "unknown_identity"),
        (" may not ", "not_allowed"),
        ("you requested this", "self_approval"),
        ("you already approved this", "already_approved"),
        ("the request expired", "expired"),
        ("the plan changed", "plan_changed"),
        (" is active", "run_active"),
    ];
    REASONS
        .iter()
        .find(|(needle, _)| why.contains(needle))
        .map_or("other", |(_, reason)| reason)
}

#[cfg(test)]
mod tests;

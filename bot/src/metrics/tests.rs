//! Tests of the metrics: a drill through the real engine, its journaled events observed batch
//! by batch as the daemon does, and the exported text checked line by line; the refusal
//! reasons against the policy's own sentences.

use super::*;
use crate::chat::RoomRef;
use crate::engine::{Dispatch, Engine, EngineConfig, Input};
use baton_actions::{ActionOutcome, ActionReport};
use baton_policies::{GroupName, Identity, PersonId, Refusal, Right, Sender};

const EXAMPLE: &str = include_str!("../../../examples/contoso.toml");

struct Drill {
    engine: Engine,
    metrics: Metrics,
    now: DateTime<Utc>,
    in_flight: Vec<Dispatch>,
}

impl Drill {
    fn new() -> Drill {
        let none = |_: &str| None;
        let c = crate::config::Config::parse(
            EXAMPLE,
            "example",
            &crate::config::secret::SecretEnv {
                var: &none,
                base: ".".into(),
            },
        )
        .expect("the example config is valid");
        Drill {
            engine: Engine::new(EngineConfig::from_config(&c, "st")),
            metrics: Metrics::new(),
            now: DateTime::parse_from_rfc3339("2026-11-26T14:02:11Z")
                .expect("valid time")
                .with_timezone(&Utc),
            in_flight: Vec::new(),
        }
    }

    fn input(&mut self, input: Input) {
        let out = self.engine.handle(input, self.now);
        self.metrics.observe(&out.events);
        self.in_flight.extend(out.dispatches);
    }

    fn say(&mut self, who: &str, text: &str) {
        let command = crate::command::parse("!", text).expect("a command");
        let sender = Sender::Verified(Identity::parse(&format!("console:{who}")).expect("valid"));
        self.input(Input::Chat {
            room: RoomRef::new(baton_policies::Platform::Console, "incident"),
            sender,
            command,
        });
    }

    /// Answers every action in flight after `secs`, failing those `fail` picks.
    fn answer_all(&mut self, secs: i64, fail: impl Fn(&Dispatch) -> bool) {
        while !self.in_flight.is_empty() {
            self.now += chrono::Duration::seconds(secs);
            for d in std::mem::take(&mut self.in_flight) {
                let outcome = if fail(&d) {
                    ActionOutcome::Failed {
                        error: "simulated".into(),
                    }
                } else {
                    ActionOutcome::Ok { detail: "done".into() }
                };
                self.input(Input::ActionFinished {
                    run: d.run,
                    step: d.step,
                    attempt: d.attempt,
                    action: d.action,
                    report: ActionReport {
                        outcome,
                        elapsed_ms: u64::try_from(secs * 1000).expect("positive"),
                        replayed: false,
                    },
                });
            }
        }
    }
}

/// The exported line starting with `prefix` (a metric with its labels), its value parsed.
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_drill_is_counted_from_its_journaled_events() {
    let mut d = Drill::new();
    d.say("alice", "!failover xmpp EdgePool2 drill");
    d.say("alice", "!approve 1");
    d.say("mallory", "!approve 1");
    d.now += chrono::Duration::seconds(90);
    d.say("bob", "!approve 1");
    // Every action takes 2 s; services.start on edge2b fails the first time.
    let first_try =
        |x: &Dispatch| x.request.action.id() == "services.start" && x.request.action.where_short() == "edge2b";
    d.answer_all(2, first_try);
    d.say("carol", "!retry 1");
    d.answer_all(3, |_| false);
    let text = d.metrics.encode();
    let v = |prefix: &str| value(&text, prefix).unwrap_or_else(|| panic!("no {prefix} in:\n{text}"));
    assert_eq!(v("baton_runs_requested_total"), 1.0);
    assert_eq!(v("baton_approvals_total"), 1.0);
    assert_eq!(
        v(r#"baton_refusals_total{reason="self_approval",command="approve"}"#),
        1.0
    );
    assert_eq!(
        v(r#"baton_refusals_total{reason="not_allowed",command="approve"}"#),
        1.0
    );
    assert_eq!(v("baton_time_to_approval_seconds_sum"), 90.0);
    assert_eq!(v("baton_time_to_approval_seconds_count"), 1.0);
    assert_eq!(v(r#"baton_runs_total{outcome="failed"}"#), 1.0);
    assert_eq!(v(r#"baton_runs_total{outcome="succeeded"}"#), 1.0);
    let start_edge2b = r#"{step="services_start",action="services.start",host="edge2b"}"#;
    assert_eq!(v(&format!("baton_action_failures_total{start_edge2b}")), 1.0);
    assert_eq!(v(&format!("baton_action_duration_seconds_count{start_edge2b}")), 2.0);
    assert_eq!(v(&format!("baton_action_duration_seconds_sum{start_edge2b}")), 5.0);
    assert_eq!(
        v(r#"baton_action_duration_seconds_count{step="services_stop",action="services.stop",host="edge2a"}"#),
        1.0
    );
    assert_eq!(v(r#"baton_step_retries_total{step="services_start"}"#), 1.0);
    // The failed attempt of step 7 took 2 s, the retry 3 s.
    assert_eq!(
        v(r#"baton_step_duration_seconds_sum{step="services_start",outcome="failed"}"#),
        2.0
    );
    assert_eq!(
        v(r#"baton_step_duration_seconds_sum{step="services_start",outcome="ok"}"#),
        3.0
    );
    assert_eq!(
        v(r#"baton_step_duration_seconds_count{step="verify",outcome="ok"}"#),
        1.0
    );
    assert_eq!(v(r#"baton_dns_updates_total{record="A",result="ok"}"#), 1.0);
    assert_eq!(v(r#"baton_dns_updates_total{record="SRV",result="ok"}"#), 1.0);
    assert!(text.contains("baton_build_info{version=\""), "{text}");
    assert_eq!(value(&text, "baton_action_failures_total{step=\"services_stop\""), None);
}

#[test]
fn runs_restored_at_start_are_labelled_without_being_counted_again() {
    let mut d = Drill::new();
    d.say("alice", "!failover xmpp EdgePool2 drill");
    d.say("bob", "!approve 1");
    // A restart: a fresh Metrics learns the engine's runs, then sees only what follows.
    let fresh = Metrics::new();
    fresh.learn(d.engine.runs());
    d.metrics = fresh;
    d.answer_all(1, |_| false);
    let text = d.metrics.encode();
    assert_eq!(value(&text, "baton_runs_requested_total"), Some(0.0), "{text}");
    assert_eq!(
        value(&text, r#"baton_runs_total{outcome="succeeded"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"baton_step_duration_seconds_count{step="precheck",outcome="ok"}"#
        ),
        Some(1.0),
        "the step started before the restart is timed from its journaled start:\n{text}"
    );
    assert!(!text.contains("host=\"unknown\""), "{text}");
}

#[test]
fn every_policy_refusal_has_its_own_reason() {
    let cases = [
        (
            Refusal::Unverified {
                why: "the room hides real JIDs".into(),
            },
            "unverified",
        ),
        (
            Refusal::UnknownIdentity {
                identity: Identity::parse("xmpp:eve@contoso.com").expect("valid"),
            },
            "unknown_identity",
        ),
        (
            Refusal::NotAllowed {
                person: PersonId::new("mallory"),
                right: Right::Approve,
                groups: vec![GroupName::new("edge-admins")],
            },
            "not_allowed",
        ),
        (
            Refusal::NotAllowed {
                person: PersonId::new("mallory"),
                right: Right::Abort,
                groups: vec![],
            },
            "not_allowed",
        ),
        (Refusal::SelfApproval, "self_approval"),
        (Refusal::AlreadyApproved, "already_approved"),
        (Refusal::Expired { at: Utc::now() }, "expired"),
        (Refusal::PlanChanged, "plan_changed"),
    ];
    for (refusal, reason) in cases {
        assert_eq!(refusal_reason(&refusal.to_string()), reason, "{refusal}");
    }
    assert_eq!(refusal_reason("run #3 is active"), "run_active");
    assert_eq!(refusal_reason("something new"), "other");
}

#[test]
fn state_setters_export_per_platform_and_host() {
    let m = Metrics::new();
    m.set_outbox(baton_policies::Platform::Xmpp, 3, Some(Duration::from_millis(2500)));
    m.set_chat_connected(baton_policies::Platform::Xmpp, false);
    m.chat_reconnected(baton_policies::Platform::Xmpp);
    m.set_agent("edge2a", Some(1));
    m.set_agent("edge2b", None);
    let text = m.encode();
    assert_eq!(
        value(&text, r#"baton_outbox_messages{platform="xmpp"}"#),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"baton_outbox_oldest_undelivered_age_seconds{platform="xmpp"}"#),
        Some(2.5)
    );
    assert_eq!(value(&text, r#"baton_chat_connected{platform="xmpp"}"#), Some(0.0));
    assert_eq!(
        value(&text, r#"baton_chat_reconnects_total{platform="xmpp"}"#),
        Some(1.0)
    );
    assert_eq!(value(&text, r#"baton_agent_up{host="edge2a"}"#), Some(1.0));
    assert_eq!(value(&text, r#"baton_agent_up{host="edge2b"}"#), Some(0.0));
    assert_eq!(
        value(&text, r#"baton_agent_protocol_version{host="edge2a"}"#),
        Some(1.0)
    );
}

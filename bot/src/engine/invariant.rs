//! The engine's central invariant, as a property: for any sequence of inputs, the engine rebuilt
//! from its journal equals the live engine (a crash at any point loses nothing and invents
//! nothing), and no dispatch leaves the engine before the journal says its step started.

use super::*;
use crate::command::parse;
use baton_actions::ActionOutcome;
use baton_policies::{Identity, Platform};
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../../../examples/contoso.toml");

fn config() -> EngineConfig {
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
    EngineConfig {
        store_id: "st".into(),
        prefix: "!".into(),
        policy: c.policy,
        directory: c.directory,
        inventory: c.inventory,
        initial_route: c.route.initial,
        mirror_rooms: Vec::new(),
    }
}

/// One thing that can happen to the engine.
#[derive(Clone, Debug)]
enum Step {
    /// Someone types a line (index into people and lines).
    Say(usize, usize),
    /// The oldest (or a later) action in flight ends with this outcome (0 ok, 1 failed, 2 unknown).
    Finish(usize, u8),
    /// Time passes, in seconds.
    Wait(u16),
}

const PEOPLE: [&str; 4] = ["alice", "bob", "carol", "mallory"];
const LINES: [&str; 14] = [
    "!failover xmpp EdgePool2 drill",
    "!failover xmpp EdgePool1",
    "!approve 1",
    "!approve 2",
    "!approve 1 d974d3765c60",
    "!deny 1 not now",
    "!deny 2 no",
    "!abort 1 stop",
    "!abort 2",
    "!retry 1",
    "!retry 2",
    "!status 1",
    "!plan xmpp EdgePool2",
    "!help",
];

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        4 => (0..PEOPLE.len(), 0..LINES.len()).prop_map(|(p, l)| Step::Say(p, l)),
        6 => (0..4usize, 0..3u8).prop_map(|(i, o)| Step::Finish(i, o)),
        1 => (0..1200u16).prop_map(Step::Wait),
    ];
    proptest::collection::vec(step, 1..60)
}

fn outcome(kind: u8) -> ActionOutcome {
    match kind {
        0 => ActionOutcome::Ok { detail: "done".into() },
        1 => ActionOutcome::Failed {
            error: "said no".into(),
        },
        _ => ActionOutcome::Unknown {
            error: "connection lost".into(),
        },
    }
}

/// What must survive a restart: the runs, what their actions changed, the next run number.
fn state(e: &Engine) -> String {
    format!("{:?}\n{:?}\n{}", e.runs, e.world, e.next_run)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_journal_rebuilds_the_live_engine_and_every_dispatch_follows_its_start(steps in steps()) {
        let cfg = config();
        let mut live = Engine::new(cfg.clone());
        let mut journal: Vec<Recorded> = Vec::new();
        let mut in_flight: Vec<Dispatch> = Vec::new();
        let mut now = DateTime::parse_from_rfc3339("2026-11-26T14:02:11Z")
            .expect("valid time")
            .with_timezone(&Utc);
        for step in steps {
            let input = match step {
                Step::Say(p, l) => Input::Chat {
                    room: RoomRef::new(Platform::Console, "incident"),
                    sender: Sender::Verified(Identity::new(Platform::Console, PEOPLE[p]).expect("valid name")),
                    command: parse("!", LINES[l]).expect("addressed to the bot"),
                },
                Step::Finish(i, kind) => {
                    if in_flight.is_empty() {
                        continue;
                    }
                    let d = in_flight.remove(i % in_flight.len());
                    Input::ActionFinished {
                        run: d.run,
                        step: d.step,
                        attempt: d.attempt,
                        action: d.action,
                        report: ActionReport { outcome: outcome(kind), elapsed_ms: 700, replayed: false },
                    }
                }
                Step::Wait(s) => {
                    now += chrono::Duration::seconds(i64::from(s));
                    Input::Tick
                }
            };
            now += chrono::Duration::milliseconds(250);
            let out = live.handle(input, now);
            journal.extend(out.events);
            for d in out.dispatches {
                let started = journal.iter().any(|r| matches!(
                    &r.event,
                    crate::event::Event::StepStarted { run, step, attempt }
                        if *run == d.run && *step == d.step && *attempt == d.attempt
                ));
                prop_assert!(started, "dispatch {:?} before its step's start was journaled", d.request.key);
                in_flight.push(d);
            }
            let rebuilt = Engine::restore(cfg.clone(), journal.clone());
            prop_assert_eq!(state(&rebuilt), state(&live));
            // What a restarted engine dispatches again is exactly what is still in flight.
            let mut resumed: Vec<String> = rebuilt.resume().iter().map(|d| d.request.key.to_string()).collect();
            let mut flying: Vec<String> = in_flight.iter()
                .filter(|d| live.run(d.run).and_then(|r| r.running_step()) == Some(d.step))
                .map(|d| d.request.key.to_string())
                .collect();
            resumed.sort();
            flying.sort();
            prop_assert_eq!(resumed, flying);
        }
    }
}

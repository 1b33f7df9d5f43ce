//! Transcript tests of the engine: chat lines and action results go in with times, rendered
//! messages and dispatches come out, and the whole transcript is compared.

use super::*;
use crate::command::parse;
use baton_actions::{ActionOutcome, IdempotencyKey};
use baton_policies::{GroupName, Identity, PersonId, Platform, Tally};
use expect_test::{Expect, expect};

const EXAMPLE: &str = include_str!("../../../examples/contoso.toml");

fn config(tweak: impl FnOnce(&mut Policy)) -> EngineConfig {
    config_from(EXAMPLE, tweak)
}

fn config_from(text: &str, tweak: impl FnOnce(&mut Policy)) -> EngineConfig {
    let none = |_: &str| None;
    let c = crate::config::Config::parse(
        text,
        "example",
        &crate::config::secret::SecretEnv {
            var: &none,
            base: ".".into(),
        },
    )
    .expect("the example config is valid");
    let mut policy = c.policy;
    tweak(&mut policy);
    EngineConfig {
        store_id: "st".into(),
        prefix: "!".into(),
        policy,
        directory: c.directory,
        inventory: c.inventory,
        initial_route: c.route.initial,
        mirror_rooms: Vec::new(),
    }
}

/// Drives an engine and writes a transcript.
struct T {
    /// Shows plans in full; otherwise their step lines are folded (one test shows them all).
    full_plans: bool,
    engine: Engine,
    now: DateTime<Utc>,
    journal: Vec<Recorded>,
    in_flight: Vec<Dispatch>,
    log: String,
}

impl T {
    fn new(tweak: impl FnOnce(&mut Policy)) -> T {
        T {
            full_plans: false,
            engine: Engine::new(config(tweak)),
            now: DateTime::parse_from_rfc3339("2026-11-26T14:02:11Z")
                .expect("valid time")
                .with_timezone(&Utc),
            journal: Vec::new(),
            in_flight: Vec::new(),
            log: String::new(),
        }
    }

    fn feed(&mut self, input: Input) {
        let out = self.engine.handle(input, self.now);
        self.journal.extend(out.events);
        for m in out.messages {
            let text = m.text();
            let text = if self.full_plans || !text.contains("lan (sha256") {
                text
            } else {
                fold_plan(&text)
            };
            let text = text.replace('\n', "\n       ");
            self.log.push_str(&format!("baton> {text}\n"));
        }
        for q in out.queries {
            self.log.push_str(&format!("[query] {q:?}\n"));
        }
        for d in out.dispatches {
            self.log
                .push_str(&format!("[dispatch] {} {}\n", d.request.key, d.request.action));
            self.in_flight.push(d);
        }
    }

    fn say(&mut self, who: &str, text: &str) {
        self.log.push_str(&format!("{who}> {text}\n"));
        let sender = match who {
            "anon" => Sender::Unverified {
                display: "bob".into(),
                why: "this room does not show real JIDs to Baton".into(),
            },
            _ => Sender::Verified(Identity::new(Platform::Console, who).expect("valid console name")),
        };
        let command = parse("!", text).expect("test lines are addressed to the bot");
        self.feed(Input::Chat {
            room: RoomRef::new(Platform::Console, "incident"),
            sender,
            command,
        });
    }

    fn after_secs(&mut self, secs: i64) {
        self.now += chrono::Duration::seconds(secs);
    }

    /// Finishes every action in flight, in dispatch order; those on `failing` hosts fail.
    fn finish_all(&mut self, failing: &[&str]) {
        self.finish_all_with(failing, &[]);
    }

    /// Like [`T::finish_all`]; the actions on `unknown` hosts end with an unknown outcome.
    fn finish_all_with(&mut self, failing: &[&str], unknown: &[&str]) {
        let mut rounds = 0;
        while !self.in_flight.is_empty() {
            rounds += 1;
            assert!(rounds < 50, "the run does not end");
            let batch = std::mem::take(&mut self.in_flight);
            self.after_secs(2);
            for d in batch {
                let place = d.request.action.where_short();
                let outcome = if failing.contains(&place.as_str()) {
                    ActionOutcome::Failed {
                        error: format!("{place} said no"),
                    }
                } else if unknown.contains(&place.as_str()) {
                    ActionOutcome::Unknown {
                        error: format!("{place}: outcome unknown: connection lost"),
                    }
                } else {
                    ActionOutcome::Ok {
                        detail: format!("{} done", d.request.action.id()),
                    }
                };
                let report = ActionReport {
                    outcome,
                    elapsed_ms: 1500,
                    replayed: false,
                };
                self.feed(Input::ActionFinished {
                    run: d.run,
                    step: d.step,
                    attempt: d.attempt,
                    action: d.action,
                    report,
                });
            }
        }
    }

    /// Finishes only the first `n` actions in flight.
    fn finish_some(&mut self, n: usize) {
        let batch: Vec<Dispatch> = self.in_flight.drain(..n).collect();
        for d in batch {
            let report = ActionReport {
                outcome: ActionOutcome::Ok { detail: "done".into() },
                elapsed_ms: 900,
                replayed: false,
            };
            self.feed(Input::ActionFinished {
                run: d.run,
                step: d.step,
                attempt: d.attempt,
                action: d.action,
                report,
            });
        }
    }

    fn check(&self, expect: Expect) {
        expect.assert_eq(&self.log);
    }
}

/// Folds a plan's step lines and warning into one line.
fn fold_plan(text: &str) -> String {
    let is_step = |l: &str| {
        let l = l.trim_start();
        l.len() > 2 && l.as_bytes()[0].is_ascii_digit() && &l[1..3] == ". " || l.starts_with("Warning:")
    };
    let steps = text.lines().filter(|l| is_step(l)).count();
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        if is_step(line) {
            if !out.last().is_some_and(|l| l.starts_with("  [")) {
                out.push(format!("  [{steps} plan lines]"));
            }
        } else {
            out.push(line.to_string());
        }
    }
    out.join("\n")
}

#[test]
fn the_users_story() {
    let mut t = T::new(|_| {});
    t.full_plans = true;
    t.say("alice", "!failover xmpp EdgePool2 pool 1 lost power in DC1");
    t.say("alice", "!approve 1");
    t.say("mallory", "!approve 1");
    t.say("anon", "!approve 1");
    t.say("bob", "!approve 1");
    t.finish_some(2);
    t.say("carol", "!status 1");
    t.finish_all(&[]);
    t.say("carol", "!status");
    t.check(expect![[r#"
        alice> !failover xmpp EdgePool2 pool 1 lost power in DC1
        baton> Run #1 requested by alice: move XMPP federation EdgePool1 -> EdgePool2 (Site2).
               Reason: pool 1 lost power in DC1
               Plan (sha256 d974d3765c60):
                 1. precheck  agents on edge2a, edge2b, mgmt1 answer health
                 2. services  Stop-CsWindowsService on edge2a.contoso.com, edge2b.contoso.com
                 3. route     Set-CsSite -Identity Site2 -XmppFederationRoute EdgeServer:edgepool2.contoso.com (on mgmt1.contoso.com)
                 4. dns A     xmpp.contoso.com -> 203.0.113.20 (RFC 2136 update to 198.51.100.53:53)
                 5. dns SRV   _xmpp-server._tcp.contoso.com -> xmpp.contoso.com:5269, exactly once (RFC 2136 update to 198.51.100.53:53)
                 6. port      203.0.113.20:5269 reachable through the firewall
                 7. services  Start-CsWindowsService on edge2a.contoso.com, edge2b.contoso.com
                 8. verify    _xmpp-server._tcp.contoso.com resolves to the new pool; an XMPP s2s stream opens on 5269
               Warning: stopping the services of EdgePool2 interrupts its remote access and federation until step 7 starts them again.
               Needs 1 approval from edge-admins other than alice: `!approve 1` or `!deny 1 <why>`. Expires at 14:17:11 UTC (15 min).
               Asking bob and carol.
        alice> !approve 1
        baton> Refused (!approve 1): you requested this; another person must approve it.
        mallory> !approve 1
        baton> Refused (!approve 1): mallory may not approve: only members of edge-admins may.
        anon> !approve 1
        baton> Refused (!approve 1): I cannot verify who you are here: this room does not show real JIDs to Baton.
        bob> !approve 1
        baton> #1 approved by bob (2 people: alice and bob). Running.
        [dispatch] st/r1.1a21829eeb8/s1/a1-edge2a/t1 health on edge2a
        [dispatch] st/r1.1a21829eeb8/s1/a2-edge2b/t1 health on edge2b
        [dispatch] st/r1.1a21829eeb8/s1/a3-mgmt1/t1 health on mgmt1
        carol> !status 1
        baton> #1 running, step 1/8 (precheck): EdgePool1 -> EdgePool2, requested 14:02:11 UTC by alice, approved by bob
                 1. precheck  running  0.0s so far
                 2. services  -
                 3. route     -
                 4. dns A     -
                 5. dns SRV   -
                 6. port      -
                 7. services  -
                 8. verify    -
        baton> #1 [1/8] precheck: edge2a ok 0.9s, edge2b ok 0.9s, mgmt1 ok 1.5s
        [dispatch] st/r1.1a21829eeb8/s2/a1-edge2a/t1 services.stop on edge2a
        [dispatch] st/r1.1a21829eeb8/s2/a2-edge2b/t1 services.stop on edge2b
        baton> #1 [2/8] services: edge2a ok 1.5s, edge2b ok 1.5s
        [dispatch] st/r1.1a21829eeb8/s3/a1-mgmt1/t1 route.set on mgmt1
        baton> #1 [3/8] route: mgmt1: route.set done (1.5s)
        [dispatch] st/r1.1a21829eeb8/s4/a1-dns/t1 dns.set_a on dns
        baton> #1 [4/8] dns A: dns: dns.set_a done (1.5s)
        [dispatch] st/r1.1a21829eeb8/s5/a1-dns/t1 dns.ensure_srv on dns
        baton> #1 [5/8] dns SRV: dns: dns.ensure_srv done (1.5s)
        [dispatch] st/r1.1a21829eeb8/s6/a1-bot/t1 port.check on bot
        baton> #1 [6/8] port: port.check done (1.5s)
        [dispatch] st/r1.1a21829eeb8/s7/a1-edge2a/t1 services.start on edge2a
        [dispatch] st/r1.1a21829eeb8/s7/a2-edge2b/t1 services.start on edge2b
        baton> #1 [7/8] services: edge2a ok 1.5s, edge2b ok 1.5s
        [dispatch] st/r1.1a21829eeb8/s8/a1-bot/t1 verify on bot
        baton> #1 [8/8] verify: verify done (1.5s)
        baton> #1 succeeded in 16s. XMPP federation now served by EdgePool2 (Site2). Verify: verify done. Requested by alice at 14:02:11 UTC, approved by bob.
        carol> !status
        baton> XMPP federation route: EdgePool2 (as Baton last set or was configured). No active run.
    "#]]);
}

#[test]
fn one_active_run_deny_and_unknown_pools() {
    let mut t = T::new(|_| {});
    t.say("alice", "!failover xmpp EdgePool9");
    t.say("alice", "!failover xmpp EdgePool1");
    t.say("alice", "!failover xmpp edgepool2");
    t.say("carol", "!failover xmpp EdgePool2 me too");
    t.say("stranger", "!failover xmpp EdgePool2");
    t.say("bob", "!deny 1 wrong pool, DC2 is flooded");
    t.say("bob", "!approve 1");
    t.say("bob", "!deny 1");
    t.say("carol", "!approve 2");
    t.say("carol", "!failover xmpp EdgePool2");
    t.say("mallory", "!runs");
    t.check(expect![[r#"
        alice> !failover xmpp EdgePool9
        baton> Unknown pool 'EdgePool9'; known pools: EdgePool1, EdgePool2.
        alice> !failover xmpp EdgePool1
        baton> EdgePool1 already holds the XMPP federation route; nothing to fail over.
        alice> !failover xmpp edgepool2
        baton> Run #1 requested by alice: move XMPP federation EdgePool1 -> EdgePool2 (Site2).
               Plan (sha256 d974d3765c60):
                 [9 plan lines]
               Needs 1 approval from edge-admins other than alice: `!approve 1` or `!deny 1 <why>`. Expires at 14:17:11 UTC (15 min).
               Asking bob and carol.
        carol> !failover xmpp EdgePool2 me too
        baton> Run #1 is already active (pending approval) for the XMPP federation route; one run at a time. `!status 1` shows it.
        stranger> !failover xmpp EdgePool2
        baton> Refused (!failover xmpp EdgePool2): console:stranger is not mapped to any person in Baton's [people].
        bob> !deny 1 wrong pool, DC2 is flooded
        baton> #1 denied by bob: wrong pool, DC2 is flooded. Nothing was changed.
        bob> !approve 1
        baton> #1 is denied, not waiting for approval.
        bob> !deny 1
        baton> #1 is denied, not waiting for approval.
        carol> !approve 2
        baton> There is no run #2. `!runs` lists recent runs.
        carol> !failover xmpp EdgePool2
        baton> Run #2 requested by carol: move XMPP federation EdgePool1 -> EdgePool2 (Site2).
               Plan (sha256 d974d3765c60):
                 [9 plan lines]
               Needs 1 approval from edge-admins other than carol: `!approve 2` or `!deny 2 <why>`. Expires at 14:17:11 UTC (15 min).
               Asking alice and bob.
        mallory> !runs
        baton> Recent runs:
               #2 pending approval: EdgePool1 -> EdgePool2, 2026-11-26 14:02 UTC by carol
               #1 denied: EdgePool1 -> EdgePool2, 2026-11-26 14:02 UTC by alice
    "#]]);
}

#[test]
fn expiry() {
    let mut t = T::new(|_| {});
    t.say("alice", "!failover xmpp EdgePool2");
    t.after_secs(15 * 60);
    // Not yet ticked: the approval itself sees the deadline.
    t.say("bob", "!approve 1");
    assert_eq!(t.engine.next_deadline(), Some(t.now));
    t.feed(Input::Tick);
    t.say("bob", "!approve 1");
    t.say("bob", "!status 1");
    assert_eq!(t.engine.next_deadline(), None);
    t.check(expect![[r#"
        alice> !failover xmpp EdgePool2
        baton> Run #1 requested by alice: move XMPP federation EdgePool1 -> EdgePool2 (Site2).
               Plan (sha256 d974d3765c60):
                 [9 plan lines]
               Needs 1 approval from edge-admins other than alice: `!approve 1` or `!deny 1 <why>`. Expires at 14:17:11 UTC (15 min).
               Asking bob and carol.
        bob> !approve 1
        baton> Refused (!approve 1): the request expired at 14:17:11 UTC.
        baton> #1 expired: not approved within 15m. Nothing was changed.
        bob> !approve 1
        baton> #1 is expired, not waiting for approval.
        bob> !status 1
        baton> #1 expired: EdgePool1 -> EdgePool2, requested 14:02:11 UTC by alice
                 1. precheck  -
                 2. services  -
                 3. route     -
                 4. dns A     -
                 5. dns SRV   -
                 6. port      -
                 7. services  -
                 8. verify    -
    "#]]);
}

#[test]
fn a_plan_change_voids_earlier_approvals() {
    let mut t = T::new(|p| p.approvals_required = 2);
    t.say("alice", "!failover xmpp EdgePool2");
    t.say("bob", "!approve 1");
    let mut cfg = config(|p| p.approvals_required = 2);
    cfg.inventory.pools[1].external_address = "203.0.113.21".parse().expect("valid");
    t.log.push_str("[reload: EdgePool2 moves to 203.0.113.21]\n");
    t.feed(Input::Reload(Box::new(Reload {
        policy: cfg.policy.clone(),
        directory: cfg.directory.clone(),
        inventory: cfg.inventory.clone(),
    })));
    // The plan changed: a plain approval no longer counts, it must name the new plan.
    t.say("carol", "!approve 1");
    t.say("carol", "!approve 1 d44bb4");
    t.say("bob", "!approve 1 d44bb4a2");
    assert!(t.log.contains("203.0.113.21"));
    assert!(
        t.engine
            .run(RunId(1))
            .is_some_and(|r| matches!(r.phase, Phase::Running { .. }))
    );
    t.check(expect![[r#"
        alice> !failover xmpp EdgePool2
        baton> Run #1 requested by alice: move XMPP federation EdgePool1 -> EdgePool2 (Site2).
               Plan (sha256 d974d3765c60):
                 [9 plan lines]
               Needs 2 approvals from edge-admins other than alice: `!approve 1` or `!deny 1 <why>`. Expires at 14:17:11 UTC (15 min).
               Asking bob and carol.
        bob> !approve 1
        baton> #1 approved by bob (1 of 2 approvals). Waiting for 1 more.
        [reload: EdgePool2 moves to 203.0.113.21]
        baton> Run #1: the inventory changed and so did the plan. Approvals by bob lapsed.
               New plan (sha256 d44bb4a2f4d5):
                 [9 plan lines]
               Needs 2 approvals from edge-admins other than alice: `!approve 1 d44bb4a2f4d5` or `!deny 1 <why>`. Expires at 14:17:11 UTC (15 min).
        carol> !approve 1
        baton> Refused (!approve 1): the plan of #1 changed after it was requested; read the new plan (sha256 d44bb4a2f4d5, `!status 1`) and approve it by naming it: `!approve 1 d44bb4a2f4d5`.
        carol> !approve 1 d44bb4
        baton> #1 approved by carol (1 of 2 approvals). Waiting for 1 more.
        bob> !approve 1 d44bb4a2
        baton> #1 approved by carol and bob (3 people: alice, carol and bob). Running.
        [dispatch] st/r1.1a21829eeb8/s1/a1-edge2a/t1 health on edge2a
        [dispatch] st/r1.1a21829eeb8/s1/a2-edge2b/t1 health on edge2b
        [dispatch] st/r1.1a21829eeb8/s1/a3-mgmt1/t1 health on mgmt1
    "#]]);
}

#[test]
fn a_reload_is_refused_while_a_run_is_under_way() {
    let mut t = T::new(|_| {});
    t.say("alice", "!failover xmpp EdgePool2");
    t.say("bob", "!approve 1");
    let mut cfg = config(|_| {});
    cfg.inventory.pools[1].external_address = "203.0.113.21".parse().expect("valid");
    let out = t.engine.handle(
        Input::Reload(Box::new(Reload {
            policy: cfg.policy.clone(),
            directory: cfg.directory.clone(),
            inventory: cfg.inventory.clone(),
        })),
        t.now,
    );
    assert_eq!(out.reloaded, Some(false));
    assert!(
        out.events
            .iter()
            .any(|e| matches!(&e.event, Event::ReloadRefused { why } if why.contains("run #1 is running"))),
        "{:?}",
        out.events
    );
    assert!(
        out.messages
            .iter()
            .any(|m| m.text().contains("Configuration reload refused"))
    );
    assert!(out.dispatches.is_empty());
    // The running configuration stays: the run's plan still points at the old address.
    assert_ne!(t.engine.cfg.inventory, cfg.inventory);
    // Once the run has ended, the same reload is taken.
    t.finish_all(&[]);
    let out = t.engine.handle(
        Input::Reload(Box::new(Reload {
            policy: cfg.policy.clone(),
            directory: cfg.directory.clone(),
            inventory: cfg.inventory.clone(),
        })),
        t.now,
    );
    assert_eq!(out.reloaded, Some(true), "{:?}", out.events);
    assert_eq!(t.engine.cfg.inventory, cfg.inventory);
}

#[test]
fn a_reload_withdraws_an_approval_the_new_policy_no_longer_allows() {
    let mut t = T::new(|p| p.approvals_required = 2);
    t.say("alice", "!failover xmpp EdgePool2");
    t.say("bob", "!approve 1");
    let text = EXAMPLE.replace(
        r#"edge-admins = ["alice", "bob", "carol"]"#,
        r#"edge-admins = ["alice", "carol"]"#,
    );
    assert_ne!(text, EXAMPLE, "the example's group line moved; update this test");
    let cfg = config_from(&text, |p| p.approvals_required = 2);
    t.feed(Input::Reload(Box::new(Reload {
        policy: cfg.policy,
        directory: cfg.directory,
        inventory: cfg.inventory,
    })));
    assert!(t.log.contains("withdrew bob's approval"), "{}", t.log);
    let run = t.engine.run(RunId(1)).expect("run 1");
    assert!(run.review.approvals().is_empty());
    assert_eq!(run.phase, Phase::PendingApproval);
    // Carol's approval alone is not enough now; the run waits for a second.
    t.say("carol", "!approve 1");
    assert_eq!(t.engine.run(RunId(1)).map(|r| r.phase.name()), Some("pending approval"));
    assert!(
        t.journal
            .iter()
            .any(|e| matches!(&e.event, Event::ApprovalWithdrawn { .. }))
    );
}

#[test]
fn a_reload_that_removes_the_target_aborts_the_request() {
    let mut t = T::new(|_| {});
    t.say("alice", "!failover xmpp EdgePool2");
    let mut cfg = config(|_| {});
    cfg.inventory.pools.truncate(1);
    t.feed(Input::Reload(Box::new(Reload {
        policy: cfg.policy,
        directory: cfg.directory,
        inventory: cfg.inventory,
    })));
    assert_eq!(t.engine.run(RunId(1)).map(|r| r.phase.name()), Some("aborted"));
    assert!(
        t.log
            .contains("the plan can no longer be resolved: unknown pool 'EdgePool2'; known pools: EdgePool1"),
        "{}",
        t.log
    );
}

#[test]
fn failure_retry_and_abort() {
    let mut t = T::new(|_| {});
    t.say("alice", "!failover xmpp EdgePool2");
    t.say("bob", "!approve 1");
    t.finish_some(3); // precheck
    t.finish_all(&["edge2b"]);
    t.say("carol", "!status 1");
    t.say("mallory", "!retry 1");
    t.say("carol", "!retry 1");
    t.finish_all(&["edge2b"]);
    t.say("carol", "!abort 1");
    t.say("carol", "!abort 1");
    t.say("carol", "!retry 1");
    t.check(expect![[r#"
        alice> !failover xmpp EdgePool2
        baton> Run #1 requested by alice: move XMPP federation EdgePool1 -> EdgePool2 (Site2).
               Plan (sha256 d974d3765c60):
                 [9 plan lines]
               Needs 1 approval from edge-admins other than alice: `!approve 1` or `!deny 1 <why>`. Expires at 14:17:11 UTC (15 min).
               Asking bob and carol.
        bob> !approve 1
        baton> #1 approved by bob (2 people: alice and bob). Running.
        [dispatch] st/r1.1a21829eeb8/s1/a1-edge2a/t1 health on edge2a
        [dispatch] st/r1.1a21829eeb8/s1/a2-edge2b/t1 health on edge2b
        [dispatch] st/r1.1a21829eeb8/s1/a3-mgmt1/t1 health on mgmt1
        baton> #1 [1/8] precheck: edge2a ok 0.9s, edge2b ok 0.9s, mgmt1 ok 0.9s
        [dispatch] st/r1.1a21829eeb8/s2/a1-edge2a/t1 services.stop on edge2a
        [dispatch] st/r1.1a21829eeb8/s2/a2-edge2b/t1 services.stop on edge2b
        baton> #1 [2/8] services FAILED: edge2a ok 1.5s, edge2b FAILED after 1.5s: edge2b said no
        baton> #1 stopped at step 2/8 (services); later steps did not run. `!retry 1` runs the failed part again, `!abort 1` ends the run.
               Left as Baton knows it: the Lync services of edge2a.contoso.com are stopped (Start-CsWindowsService on each starts them).
        carol> !status 1
        baton> #1 failed, step 2/8 (services): EdgePool1 -> EdgePool2, requested 14:02:11 UTC by alice, approved by bob
                 1. precheck  ok       0.0s
                 2. services  FAILED   2.0s
                      edge2b: edge2b said no
                 3. route     -
                 4. dns A     -
                 5. dns SRV   -
                 6. port      -
                 7. services  -
                 8. verify    -
                 Left as Baton knows it: the Lync services of edge2a.contoso.com are stopped (Start-CsWindowsService on each starts them).
        mallory> !retry 1
        baton> Refused (!retry 1): mallory may not retry: only members of edge-admins may.
        carol> !retry 1
        baton> #1 retrying step 2/8 (services), attempt 2, for carol.
        [dispatch] st/r1.1a21829eeb8/s2/a2-edge2b/t2 services.stop on edge2b
        baton> #1 [2/8] services FAILED (attempt 2): edge2a ok 1.5s, edge2b FAILED after 1.5s: edge2b said no
        baton> #1 stopped at step 2/8 (services); later steps did not run. `!retry 1` runs the failed part again, `!abort 1` ends the run.
               Left as Baton knows it: the Lync services of edge2a.contoso.com are stopped (Start-CsWindowsService on each starts them).
        carol> !abort 1
        baton> #1 aborted by carol. 1 of 8 steps had completed; the rest did not run. Requested by alice at 14:02:11 UTC, approved by bob.
               Left as Baton knows it: the Lync services of edge2a.contoso.com are stopped (Start-CsWindowsService on each starts them).
        carol> !abort 1
        baton> #1 already ended (aborted); there is nothing to abort.
        carol> !retry 1
        baton> Only a failed run can be retried; #1 is aborted.
    "#]]);
}

#[test]
fn an_unknown_outcome_is_said_as_unknown_and_a_retry_sends_the_next_attempt_which_asks_first() {
    let mut t = T::new(|_| {});
    t.say("alice", "!failover xmpp EdgePool2");
    t.say("bob", "!approve 1");
    t.finish_some(3); // precheck
    t.finish_all_with(&[], &["edge2b"]);
    t.say("carol", "!status 1");
    t.say("carol", "!retry 1");
    // The new attempt's key names the earlier one, which the dispatcher asks about first.
    let retried = &t.in_flight[0].request.key;
    assert_eq!(
        retried.earlier_attempts(),
        [IdempotencyKey::parse("st/r1.1a21829eeb8/s2/a2-edge2b/t1").expect("valid")]
    );
    t.finish_some(1);
    t.check(expect![[r#"
        alice> !failover xmpp EdgePool2
        baton> Run #1 requested by alice: move XMPP federation EdgePool1 -> EdgePool2 (Site2).
               Plan (sha256 d974d3765c60):
                 [9 plan lines]
               Needs 1 approval from edge-admins other than alice: `!approve 1` or `!deny 1 <why>`. Expires at 14:17:11 UTC (15 min).
               Asking bob and carol.
        bob> !approve 1
        baton> #1 approved by bob (2 people: alice and bob). Running.
        [dispatch] st/r1.1a21829eeb8/s1/a1-edge2a/t1 health on edge2a
        [dispatch] st/r1.1a21829eeb8/s1/a2-edge2b/t1 health on edge2b
        [dispatch] st/r1.1a21829eeb8/s1/a3-mgmt1/t1 health on mgmt1
        baton> #1 [1/8] precheck: edge2a ok 0.9s, edge2b ok 0.9s, mgmt1 ok 0.9s
        [dispatch] st/r1.1a21829eeb8/s2/a1-edge2a/t1 services.stop on edge2a
        [dispatch] st/r1.1a21829eeb8/s2/a2-edge2b/t1 services.stop on edge2b
        baton> #1 [2/8] services OUTCOME UNKNOWN: edge2a ok 1.5s, edge2b UNKNOWN after 1.5s: edge2b: outcome unknown: connection lost
        baton> #1 stopped at step 2/8 (services): the outcome on edge2b is unknown; the action may have run, or may still be running. `!retry 1` first asks the agent what became of it and runs it again only if it did not succeed; `!abort 1` ends the run.
               Left as Baton knows it: the Lync services of edge2a.contoso.com are stopped (Start-CsWindowsService on each starts them).
        carol> !status 1
        baton> #1 failed, step 2/8 (services): EdgePool1 -> EdgePool2, requested 14:02:11 UTC by alice, approved by bob
                 1. precheck  ok       0.0s
                 2. services  FAILED   2.0s
                      edge2b: edge2b: outcome unknown: connection lost
                 3. route     -
                 4. dns A     -
                 5. dns SRV   -
                 6. port      -
                 7. services  -
                 8. verify    -
                 Left as Baton knows it: the Lync services of edge2a.contoso.com are stopped (Start-CsWindowsService on each starts them).
        carol> !retry 1
        baton> #1 retrying step 2/8 (services), attempt 2, for carol.
        [dispatch] st/r1.1a21829eeb8/s2/a2-edge2b/t2 services.stop on edge2b
        baton> #1 [2/8] services (attempt 2): edge2a ok 1.5s, edge2b ok 0.9s
        [dispatch] st/r1.1a21829eeb8/s3/a1-mgmt1/t1 route.set on mgmt1
    "#]]);
}

#[test]
fn abort_waits_for_the_step_in_flight() {
    let mut t = T::new(|_| {});
    t.say("alice", "!failover xmpp EdgePool2");
    t.say("bob", "!approve 1");
    t.finish_some(3);
    t.say("carol", "!abort 1");
    t.say("bob", "!abort 1");
    t.say("carol", "!status 1");
    t.finish_all(&[]);
    assert!(t.in_flight.is_empty());
    t.check(expect![[r#"
        alice> !failover xmpp EdgePool2
        baton> Run #1 requested by alice: move XMPP federation EdgePool1 -> EdgePool2 (Site2).
               Plan (sha256 d974d3765c60):
                 [9 plan lines]
               Needs 1 approval from edge-admins other than alice: `!approve 1` or `!deny 1 <why>`. Expires at 14:17:11 UTC (15 min).
               Asking bob and carol.
        bob> !approve 1
        baton> #1 approved by bob (2 people: alice and bob). Running.
        [dispatch] st/r1.1a21829eeb8/s1/a1-edge2a/t1 health on edge2a
        [dispatch] st/r1.1a21829eeb8/s1/a2-edge2b/t1 health on edge2b
        [dispatch] st/r1.1a21829eeb8/s1/a3-mgmt1/t1 health on mgmt1
        baton> #1 [1/8] precheck: edge2a ok 0.9s, edge2b ok 0.9s, mgmt1 ok 0.9s
        [dispatch] st/r1.1a21829eeb8/s2/a1-edge2a/t1 services.stop on edge2a
        [dispatch] st/r1.1a21829eeb8/s2/a2-edge2b/t1 services.stop on edge2b
        carol> !abort 1
        baton> #1 will stop after step 2/8 (services) ends (abort requested by carol); nothing further will start.
        bob> !abort 1
        baton> #1 is already stopping after its current step.
        carol> !status 1
        baton> #1 running, step 2/8 (services): EdgePool1 -> EdgePool2, requested 14:02:11 UTC by alice, approved by bob (stopping after this step)
                 1. precheck  ok       0.0s
                 2. services  running  0.0s so far
                 3. route     -
                 4. dns A     -
                 5. dns SRV   -
                 6. port      -
                 7. services  -
                 8. verify    -
        baton> #1 [2/8] services: edge2a ok 1.5s, edge2b ok 1.5s
        baton> #1 aborted by carol. 2 of 8 steps had completed; the rest did not run. Requested by alice at 14:02:11 UTC, approved by bob.
               Left as Baton knows it: the Lync services of edge2a.contoso.com, edge2b.contoso.com are stopped (Start-CsWindowsService on each starts them).
    "#]]);
}

#[test]
fn retry_with_approval_when_the_policy_asks() {
    let mut t = T::new(|p| p.retry_needs_approval = true);
    t.say("alice", "!failover xmpp EdgePool2");
    t.say("bob", "!approve 1");
    t.finish_some(3);
    t.finish_all(&["mgmt1"]);
    t.say("alice", "!retry 1");
    t.say("alice", "!approve 1");
    t.say("carol", "!approve 1");
    t.finish_all(&[]);
    assert_eq!(t.engine.run(RunId(1)).map(|r| r.phase.name()), Some("succeeded"));
    t.check(expect![[r#"
        alice> !failover xmpp EdgePool2
        baton> Run #1 requested by alice: move XMPP federation EdgePool1 -> EdgePool2 (Site2).
               Plan (sha256 d974d3765c60):
                 [9 plan lines]
               Needs 1 approval from edge-admins other than alice: `!approve 1` or `!deny 1 <why>`. Expires at 14:17:11 UTC (15 min).
               Asking bob and carol.
        bob> !approve 1
        baton> #1 approved by bob (2 people: alice and bob). Running.
        [dispatch] st/r1.1a21829eeb8/s1/a1-edge2a/t1 health on edge2a
        [dispatch] st/r1.1a21829eeb8/s1/a2-edge2b/t1 health on edge2b
        [dispatch] st/r1.1a21829eeb8/s1/a3-mgmt1/t1 health on mgmt1
        baton> #1 [1/8] precheck: edge2a ok 0.9s, edge2b ok 0.9s, mgmt1 ok 0.9s
        [dispatch] st/r1.1a21829eeb8/s2/a1-edge2a/t1 services.stop on edge2a
        [dispatch] st/r1.1a21829eeb8/s2/a2-edge2b/t1 services.stop on edge2b
        baton> #1 [2/8] services: edge2a ok 1.5s, edge2b ok 1.5s
        [dispatch] st/r1.1a21829eeb8/s3/a1-mgmt1/t1 route.set on mgmt1
        baton> #1 [3/8] route FAILED: mgmt1 FAILED after 1.5s: mgmt1 said no
        baton> #1 stopped at step 3/8 (route); later steps did not run. `!retry 1` runs the failed part again, `!abort 1` ends the run.
               Left as Baton knows it: the Lync services of edge2a.contoso.com, edge2b.contoso.com are stopped (Start-CsWindowsService on each starts them).
        alice> !retry 1
        baton> #1 retry of step 3/8 (route) requested by alice. Needs 1 approval from edge-admins other than alice: `!approve 1` or `!deny 1 <why>`. Expires at 14:17:15 UTC (15 min).
               Asking bob and carol.
        alice> !approve 1
        baton> Refused (!approve 1): you requested this; another person must approve it.
        carol> !approve 1
        baton> #1 retrying step 3/8 (route), attempt 2, approved by carol.
        [dispatch] st/r1.1a21829eeb8/s3/a1-mgmt1/t2 route.set on mgmt1
        baton> #1 [3/8] route (attempt 2): mgmt1: route.set done (1.5s)
        [dispatch] st/r1.1a21829eeb8/s4/a1-dns/t1 dns.set_a on dns
        baton> #1 [4/8] dns A: dns: dns.set_a done (1.5s)
        [dispatch] st/r1.1a21829eeb8/s5/a1-dns/t1 dns.ensure_srv on dns
        baton> #1 [5/8] dns SRV: dns: dns.ensure_srv done (1.5s)
        [dispatch] st/r1.1a21829eeb8/s6/a1-bot/t1 port.check on bot
        baton> #1 [6/8] port: port.check done (1.5s)
        [dispatch] st/r1.1a21829eeb8/s7/a1-edge2a/t1 services.start on edge2a
        [dispatch] st/r1.1a21829eeb8/s7/a2-edge2b/t1 services.start on edge2b
        baton> #1 [7/8] services: edge2a ok 1.5s, edge2b ok 1.5s
        [dispatch] st/r1.1a21829eeb8/s8/a1-bot/t1 verify on bot
        baton> #1 [8/8] verify: verify done (1.5s)
        baton> #1 succeeded in 16s. XMPP federation now served by EdgePool2 (Site2). Verify: verify done. Requested by alice at 14:02:11 UTC, approved by bob and carol.
    "#]]);
}

#[test]
fn help_plan_errors_and_status_xmpp() {
    let mut t = T::new(|_| {});
    t.say("mallory", "!help");
    t.say("mallory", "!plan xmpp EdgePool2");
    t.say("mallory", "!status xmpp");
    t.say("mallory", "!approve 42");
    t.say("alice", "!approve 42");
    t.say("alice", "!status 42");
    t.say("alice", "!aprove 1");
    t.check(expect![[r#"
        mallory> !help
        baton> Baton commands:
                 !failover xmpp <Pool> [reason]       plan moving XMPP federation to <Pool> and ask for approval
                 !plan xmpp <Pool>                    show the exact plan for <Pool> without starting anything
                 !approve <run> [<plan hash prefix>]  approve a pending run (not your own)
                 !deny <run> [reason]                 refuse a pending run; it ends
                 !status [<run> | xmpp]               active runs, one run's steps, or federation seen from outside
                 !abort <run> [reason]                stop a run before its next step (a step in flight finishes)
                 !retry <run>                         run a failed step again
                 !runs                                recent runs
                 !help                                this help
        mallory> !plan xmpp EdgePool2
        baton> Plan for XMPP federation EdgePool1 -> EdgePool2 (Site2), sha256 d974d3765c60 (not started):
                 1. precheck  agents on edge2a, edge2b, mgmt1 answer health
                      edge2a.contoso.com: GET /v1/health
                      edge2b.contoso.com: GET /v1/health
                      mgmt1.contoso.com: GET /v1/health
                 2. services  Stop-CsWindowsService on edge2a.contoso.com, edge2b.contoso.com
                      edge2a.contoso.com: Stop-CsWindowsService
                      edge2b.contoso.com: Stop-CsWindowsService
                 3. route     Set-CsSite -Identity Site2 -XmppFederationRoute EdgeServer:edgepool2.contoso.com (on mgmt1.contoso.com)
                      mgmt1.contoso.com: Set-CsSite -Identity Site2 -XmppFederationRoute EdgeServer:edgepool2.contoso.com
                 4. dns A     xmpp.contoso.com -> 203.0.113.20 (RFC 2136 update to 198.51.100.53:53)
                      DNS 198.51.100.53:53 (RFC 2136 + TSIG): update zone contoso.com: delete xmpp.contoso.com A; add xmpp.contoso.com 300 A 203.0.113.20
                 5. dns SRV   _xmpp-server._tcp.contoso.com -> xmpp.contoso.com:5269, exactly once (RFC 2136 update to 198.51.100.53:53)
                      DNS 198.51.100.53:53 (RFC 2136 + TSIG): update zone contoso.com: ensure exactly one _xmpp-server._tcp.contoso.com 300 SRV 10 10 5269 xmpp.contoso.com
                 6. port      203.0.113.20:5269 reachable through the firewall
                      bot: TCP connect 203.0.113.20:5269
                 7. services  Start-CsWindowsService on edge2a.contoso.com, edge2b.contoso.com
                      edge2a.contoso.com: Start-CsWindowsService
                      edge2b.contoso.com: Start-CsWindowsService
                 8. verify    _xmpp-server._tcp.contoso.com resolves to the new pool; an XMPP s2s stream opens on 5269
                      bot: resolve _xmpp-server._tcp.contoso.com SRV -> xmpp.contoso.com:5269 and xmpp.contoso.com A -> 203.0.113.20; open an XMPP s2s stream to 203.0.113.20:5269
               Warning: stopping the services of EdgePool2 interrupts its remote access and federation until step 7 starts them again.
               To request it: !failover xmpp EdgePool2 <reason>
        mallory> !status xmpp
        [query] StatusXmpp { room: RoomRef { platform: Console, id: "incident" } }
        mallory> !approve 42
        baton> Refused (!approve 42): mallory may not approve: only members of edge-admins may.
        alice> !approve 42
        baton> There is no run #42. `!runs` lists recent runs.
        alice> !status 42
        baton> There is no run #42. `!runs` lists recent runs.
        alice> !aprove 1
        baton> Unknown command !aprove. Try !help.
    "#]]);
}

#[test]
fn restore_rebuilds_the_same_state_and_resumes_in_flight_actions_with_their_keys() {
    let mut t = T::new(|_| {});
    t.say("alice", "!failover xmpp EdgePool2");
    t.say("bob", "!approve 1");
    t.finish_some(3);
    t.finish_some(1); // one of the two services.stop actions ended
    let restored = Engine::restore(config(|_| {}), t.journal.clone());
    let resumed: Vec<String> = restored.resume().iter().map(|d| d.request.key.to_string()).collect();
    let in_flight: Vec<String> = t.in_flight.iter().map(|d| d.request.key.to_string()).collect();
    assert_eq!(resumed, in_flight);
    assert_eq!(resumed, ["st/r1.1a21829eeb8/s2/a2-edge2b/t1"]);
    let a = restored.run(RunId(1)).expect("restored");
    let b = t.engine.run(RunId(1)).expect("live");
    assert_eq!((&a.phase, &a.steps, &a.approvers), (&b.phase, &b.steps, &b.approvers));
    assert_eq!(
        crate::render::status_table(a, restored.world(), t.now, "!"),
        crate::render::status_table(b, t.engine.world(), t.now, "!")
    );
}

#[test]
fn restore_numbers_runs_after_the_last_and_keeps_the_route() {
    let mut t = T::new(|_| {});
    t.say("alice", "!failover xmpp EdgePool2");
    t.say("bob", "!approve 1");
    t.finish_all(&[]);
    let mut restored = Engine::restore(config(|_| {}), t.journal.clone());
    assert_eq!(restored.route_holder().map(|p| p.as_str()), Some("EdgePool2"));
    let out = restored.handle(
        Input::Chat {
            room: RoomRef::new(Platform::Console, "incident"),
            sender: Sender::Verified(Identity::new(Platform::Console, "bob").expect("valid")),
            command: parse("!", "!failover xmpp EdgePool1 failback").expect("addressed"),
        },
        t.now,
    );
    assert!(
        out.messages[0]
            .text()
            .starts_with("Run #2 requested by bob: move XMPP federation EdgePool2 -> EdgePool1 (Site1)."),
        "{}",
        out.messages[0].text()
    );
}

#[test]
fn replayed_approvals_are_rechecked_against_the_policy() {
    let mut t = T::new(|p| p.approvals_required = 2);
    t.say("alice", "!failover xmpp EdgePool2");
    t.say("bob", "!approve 1");
    // bob leaves edge-admins before the restart: his approval of the pending run lapses.
    let mut cfg = config(|p| p.approvals_required = 2);
    cfg.directory = baton_policies::Directory::new(
        ["alice", "bob", "carol"].map(|n| {
            (
                PersonId::new(n),
                vec![Identity::new(Platform::Console, n).expect("valid")],
            )
        }),
        [(
            GroupName::new("edge-admins"),
            vec![PersonId::new("alice"), PersonId::new("carol")],
        )],
    )
    .expect("valid directory");
    let restored = Engine::restore(cfg, t.journal.clone());
    let run = restored.run(RunId(1)).expect("restored");
    assert_eq!(
        run.review.tally(&restored.config().policy),
        Tally::Pending { have: 0, need: 2 }
    );
}

#[test]
fn late_and_repeated_reports_change_nothing() {
    let mut t = T::new(|_| {});
    t.say("alice", "!failover xmpp EdgePool2");
    t.say("bob", "!approve 1");
    let d = t.in_flight[0].clone();
    let report = ActionReport {
        outcome: ActionOutcome::Ok { detail: "x".into() },
        elapsed_ms: 1,
        replayed: false,
    };
    t.feed(Input::ActionFinished {
        run: d.run,
        step: d.step,
        attempt: d.attempt,
        action: d.action,
        report: report.clone(),
    });
    let before = t.journal.len();
    t.feed(Input::ActionFinished {
        run: d.run,
        step: d.step,
        attempt: d.attempt,
        action: d.action,
        report: report.clone(),
    });
    t.feed(Input::ActionFinished {
        run: d.run,
        step: 5,
        attempt: 1,
        action: 0,
        report: report.clone(),
    });
    t.feed(Input::ActionFinished {
        run: RunId(9),
        step: 0,
        attempt: 1,
        action: 0,
        report,
    });
    assert_eq!(t.journal.len(), before);
}

#[test]
fn mirror_rooms_get_every_run_message_and_no_command_replies() {
    let mut cfg = config(|_| {});
    let audit = RoomRef::new(Platform::Xmpp, "audit@conference.contoso.com");
    cfg.mirror_rooms = vec![audit.clone()];
    let mut engine = Engine::new(cfg);
    let room = RoomRef::new(Platform::Console, "incident");
    let chat = |who: &str, text: &str| Input::Chat {
        room: room.clone(),
        sender: Sender::Verified(Identity::new(Platform::Console, who).expect("valid")),
        command: parse("!", text).expect("addressed"),
    };
    let now = Utc::now();
    let out = engine.handle(chat("alice", "!failover xmpp EdgePool2"), now);
    let rooms: Vec<&RoomRef> = out.messages.iter().map(|m| &m.room).collect();
    assert_eq!(rooms, [&room, &audit]);
    assert_eq!(out.messages[0].text(), out.messages[1].text());
    let out = engine.handle(chat("mallory", "!help"), now);
    assert!(out.messages.iter().all(|m| m.room == room));
}

#[test]
fn an_approval_naming_a_plan_hash_counts_only_for_that_plan() {
    let mut t = T::new(|p| p.approvals_required = 2);
    t.say("alice", "!failover xmpp EdgePool2");
    t.say("bob", "!approve 1 D974D3");
    let mut cfg = config(|p| p.approvals_required = 2);
    cfg.inventory.pools[1].external_address = "203.0.113.21".parse().expect("valid");
    t.log.push_str("[reload: EdgePool2 moves to 203.0.113.21]\n");
    t.feed(Input::Reload(Box::new(Reload {
        policy: cfg.policy.clone(),
        directory: cfg.directory.clone(),
        inventory: cfg.inventory.clone(),
    })));
    t.say("carol", "!approve 1 d974d3765c60");
    let refused = t.journal.last().map(|r| r.event.clone());
    t.say("mallory", "!approve 1 d44bb4");
    t.say("alice", "!approve 1 ffffff");
    t.say("carol", "!approve 1 d44bb4");
    t.say("bob", "!approve 1");
    t.say("bob", "!approve 1 d44bb4");
    assert_eq!(
        refused,
        Some(Event::Refused {
            run: Some(RunId(1)),
            who: "carol".into(),
            command: "approve 1 d974d3765c60".into(),
            why: "the plan of #1 is now sha256 d44bb4a2f4d5, not the d974d3765c60 you named; check the new plan and approve that one: `!approve 1 d44bb4a2f4d5`".into(),
        })
    );
    t.check(expect![[r#"
        alice> !failover xmpp EdgePool2
        baton> Run #1 requested by alice: move XMPP federation EdgePool1 -> EdgePool2 (Site2).
               Plan (sha256 d974d3765c60):
                 [9 plan lines]
               Needs 2 approvals from edge-admins other than alice: `!approve 1` or `!deny 1 <why>`. Expires at 14:17:11 UTC (15 min).
               Asking bob and carol.
        bob> !approve 1 D974D3
        baton> #1 approved by bob (1 of 2 approvals). Waiting for 1 more.
        [reload: EdgePool2 moves to 203.0.113.21]
        baton> Run #1: the inventory changed and so did the plan. Approvals by bob lapsed.
               New plan (sha256 d44bb4a2f4d5):
                 [9 plan lines]
               Needs 2 approvals from edge-admins other than alice: `!approve 1 d44bb4a2f4d5` or `!deny 1 <why>`. Expires at 14:17:11 UTC (15 min).
        carol> !approve 1 d974d3765c60
        baton> Refused (!approve 1 d974d3765c60): the plan of #1 is now sha256 d44bb4a2f4d5, not the d974d3765c60 you named; check the new plan and approve that one: `!approve 1 d44bb4a2f4d5`.
        mallory> !approve 1 d44bb4
        baton> Refused (!approve 1 d44bb4): mallory may not approve: only members of edge-admins may.
        alice> !approve 1 ffffff
        baton> Refused (!approve 1 ffffff): you requested this; another person must approve it.
        carol> !approve 1 d44bb4
        baton> #1 approved by carol (1 of 2 approvals). Waiting for 1 more.
        bob> !approve 1
        baton> Refused (!approve 1): the plan of #1 changed after it was requested; read the new plan (sha256 d44bb4a2f4d5, `!status 1`) and approve it by naming it: `!approve 1 d44bb4a2f4d5`.
        bob> !approve 1 d44bb4
        baton> #1 approved by carol and bob (3 people: alice, carol and bob). Running.
        [dispatch] st/r1.1a21829eeb8/s1/a1-edge2a/t1 health on edge2a
        [dispatch] st/r1.1a21829eeb8/s1/a2-edge2b/t1 health on edge2b
        [dispatch] st/r1.1a21829eeb8/s1/a3-mgmt1/t1 health on mgmt1
    "#]]);
}

#[test]
fn abort_reasons_are_journaled_and_shown() {
    let mut t = T::new(|_| {});
    t.say("alice", "!failover xmpp EdgePool2");
    t.say("bob", "!approve 1");
    t.finish_some(3);
    t.say("carol", "!abort 1 DNS  points   elsewhere");
    t.finish_all(&[]);
    t.say("alice", "!failover xmpp EdgePool2");
    t.say("bob", "!abort #2 wrong pool");
    t.say("bob", "!abort 2 again");
    let reasons: Vec<(&str, Option<&str>)> = t
        .journal
        .iter()
        .filter_map(|r| match &r.event {
            Event::AbortRequested { reason, .. } => Some(("abort_requested", reason.as_deref())),
            Event::Aborted { reason, .. } => Some(("aborted", reason.as_deref())),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("abort_requested", Some("DNS points elsewhere")),
            ("aborted", Some("DNS points elsewhere")),
            ("aborted", Some("wrong pool")),
        ]
    );
    t.check(expect![[r#"
        alice> !failover xmpp EdgePool2
        baton> Run #1 requested by alice: move XMPP federation EdgePool1 -> EdgePool2 (Site2).
               Plan (sha256 d974d3765c60):
                 [9 plan lines]
               Needs 1 approval from edge-admins other than alice: `!approve 1` or `!deny 1 <why>`. Expires at 14:17:11 UTC (15 min).
               Asking bob and carol.
        bob> !approve 1
        baton> #1 approved by bob (2 people: alice and bob). Running.
        [dispatch] st/r1.1a21829eeb8/s1/a1-edge2a/t1 health on edge2a
        [dispatch] st/r1.1a21829eeb8/s1/a2-edge2b/t1 health on edge2b
        [dispatch] st/r1.1a21829eeb8/s1/a3-mgmt1/t1 health on mgmt1
        baton> #1 [1/8] precheck: edge2a ok 0.9s, edge2b ok 0.9s, mgmt1 ok 0.9s
        [dispatch] st/r1.1a21829eeb8/s2/a1-edge2a/t1 services.stop on edge2a
        [dispatch] st/r1.1a21829eeb8/s2/a2-edge2b/t1 services.stop on edge2b
        carol> !abort 1 DNS  points   elsewhere
        baton> #1 will stop after step 2/8 (services) ends (abort requested by carol: DNS points elsewhere); nothing further will start.
        baton> #1 [2/8] services: edge2a ok 1.5s, edge2b ok 1.5s
        baton> #1 aborted by carol: DNS points elsewhere. 2 of 8 steps had completed; the rest did not run. Requested by alice at 14:02:11 UTC, approved by bob.
               Left as Baton knows it: the Lync services of edge2a.contoso.com, edge2b.contoso.com are stopped (Start-CsWindowsService on each starts them).
        alice> !failover xmpp EdgePool2
        baton> Run #2 requested by alice: move XMPP federation EdgePool1 -> EdgePool2 (Site2).
               Plan (sha256 d974d3765c60):
                 [9 plan lines]
               Needs 1 approval from edge-admins other than alice: `!approve 2` or `!deny 2 <why>`. Expires at 14:17:13 UTC (15 min).
               Asking bob and carol.
        bob> !abort #2 wrong pool
        baton> #2 aborted by bob: wrong pool. 0 of 8 steps had completed; the rest did not run. Requested by alice at 14:02:13 UTC, approved by nobody.
        bob> !abort 2 again
        baton> #2 already ended (aborted); there is nothing to abort.
    "#]]);
}

#[test]
fn an_abort_request_journaled_before_reasons_existed_still_loads() {
    let mut t = T::new(|_| {});
    t.say("alice", "!failover xmpp EdgePool2");
    t.say("bob", "!approve 1");
    t.finish_some(3);
    t.say("carol", "!abort 1");
    // The journal as an older Baton wrote it: abort_requested had no reason field.
    let old: Vec<String> = t
        .journal
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).expect("events serialize");
            if v["event"]["type"] == "abort_requested" {
                let fields = v["event"].as_object_mut().expect("an event is an object");
                assert_eq!(fields.remove("reason"), Some(serde_json::Value::Null));
            }
            v.to_string()
        })
        .collect();
    assert!(
        old.iter()
            .any(|l| l.contains(r#""type":"abort_requested""#) && !l.contains("reason"))
    );
    let journal: Vec<Recorded> = old
        .iter()
        .map(|l| serde_json::from_str(l).expect("an old journal line still loads"))
        .collect();
    let restored = Engine::restore(config(|_| {}), journal);
    let run = restored.run(RunId(1)).expect("restored");
    assert_eq!(
        run.abort_requested,
        Some(crate::run::AbortRequest {
            by: PersonId::new("carol"),
            reason: None,
        })
    );
    assert_eq!(
        crate::render::status_table(run, t.engine.world(), t.now, "!"),
        crate::render::status_table(t.engine.run(RunId(1)).expect("live"), t.engine.world(), t.now, "!")
    );
}

#[test]
fn a_command_typed_in_another_room_is_answered_where_it_was_typed() {
    let mut engine = Engine::new(config(|_| {}));
    let incident = RoomRef::new(Platform::Console, "incident");
    let bridge = RoomRef::new(Platform::Console, "bridge");
    let chat = |room: &RoomRef, who: &str, text: &str| Input::Chat {
        room: room.clone(),
        sender: Sender::Verified(Identity::new(Platform::Console, who).expect("valid")),
        command: parse("!", text).expect("addressed"),
    };
    let now = Utc::now();
    engine.handle(chat(&incident, "alice", "!failover xmpp EdgePool2"), now);
    let out = engine.handle(chat(&bridge, "bob", "!deny 1 wrong pool"), now);
    let said: Vec<(&str, String)> = out.messages.iter().map(|m| (m.room.id.as_str(), m.text())).collect();
    assert_eq!(
        said,
        [
            (
                "incident",
                "#1 denied by bob: wrong pool. Nothing was changed.".to_string()
            ),
            (
                "bridge",
                "#1 denied by bob: wrong pool. Nothing was changed.".to_string()
            ),
        ],
        "the run's room hears it, and so does the room where it was typed"
    );
    assert_eq!(out.messages[1].kind, MessageKind::Reply);
    // Typed in the run's own room, it is said once.
    engine.handle(chat(&incident, "alice", "!failover xmpp EdgePool2"), now);
    let out = engine.handle(chat(&incident, "bob", "!deny 2"), now);
    assert_eq!(out.messages.len(), 1);
}

#[test]
fn a_store_restored_from_a_backup_gives_its_new_runs_new_keys() {
    // The same store id and the same run number (the backup forgot run #1), another request:
    // the agents must not answer the new run's actions with the forgotten run's results.
    let keys = |at: &str| {
        let mut t = T::new(|_| {});
        t.now = DateTime::parse_from_rfc3339(at).expect("valid").with_timezone(&Utc);
        t.say("alice", "!failover xmpp EdgePool2");
        t.say("bob", "!approve 1");
        t.in_flight
            .iter()
            .map(|d| d.request.key.to_string())
            .collect::<Vec<_>>()
    };
    let forgotten = keys("2026-11-26T14:02:11Z");
    let new = keys("2026-11-27T09:00:00Z");
    assert_eq!(forgotten.len(), 3);
    assert!(forgotten.iter().all(|k| !new.contains(k)), "{forgotten:?} vs {new:?}");
    assert!(forgotten[0].starts_with("st/r1."), "{}", forgotten[0]);
}

#[test]
fn a_failback_after_a_half_run_is_planned_from_where_the_route_is() {
    let mut t = T::new(|_| {});
    t.say("alice", "!failover xmpp EdgePool2");
    t.say("bob", "!approve 1");
    // Steps 1 to 5 succeed (the route and DNS move), the port check fails.
    t.finish_all(&["bot"]);
    t.log.clear();
    t.say("carol", "!abort 1 port 5269 closed at the firewall");
    t.say("alice", "!failover xmpp EdgePool2 again");
    t.say("alice", "!failover xmpp EdgePool1 fail back");
    assert_eq!(t.engine.route_holder().map(|p| p.as_str()), Some("EdgePool2"));
    let back = t.engine.run(RunId(2)).expect("the failback is requested");
    assert_eq!(back.plan.from_pool.as_ref().map(|p| p.as_str()), Some("EdgePool2"));
    t.check(expect![[r#"
        carol> !abort 1 port 5269 closed at the firewall
        baton> #1 aborted by carol: port 5269 closed at the firewall. 5 of 8 steps had completed; the rest did not run. Requested by alice at 14:02:11 UTC, approved by bob.
               Left as Baton knows it: the Lync services of edge2a.contoso.com, edge2b.contoso.com are stopped (Start-CsWindowsService on each starts them); the federation route points to EdgePool2; DNS points the federation host to EdgePool2. To fail back: `!failover xmpp EdgePool1`.
        alice> !failover xmpp EdgePool2 again
        baton> EdgePool2 already holds the XMPP federation route; nothing to fail over.
        alice> !failover xmpp EdgePool1 fail back
        baton> Run #2 requested by alice: move XMPP federation EdgePool2 -> EdgePool1 (Site1).
               Reason: fail back
               Plan (sha256 96be43f5c5f3):
                 [9 plan lines]
               Needs 1 approval from edge-admins other than alice: `!approve 2` or `!deny 2 <why>`. Expires at 14:17:23 UTC (15 min).
               Asking bob and carol.
    "#]]);
}

#[test]
fn a_plan_shows_the_live_route_beside_the_journal_and_warns_before_stopping_the_pool_in_use() {
    let mut t = T::new(|_| {});
    t.full_plans = true;
    // Someone moved the route by hand: Lync says EdgePool2, the journal still says EdgePool1.
    let live = LiveRoute {
        pool: Some(PoolName::parse("EdgePool2").expect("valid")),
        seen: "EdgeServer:edgepool2.contoso.com (Site2)".into(),
    };
    t.feed(Input::Observed(live.clone()));
    t.say("alice", "!failover xmpp EdgePool2 route looks odd");
    // The observation is for that one command: the next plan has none.
    t.say("bob", "!plan xmpp EdgePool2");
    let journaled = t.journal.iter().find_map(|r| match &r.event {
        Event::Requested { live_route, .. } => Some(live_route.clone()),
        _ => None,
    });
    assert_eq!(
        journaled,
        Some(Some(live)),
        "the observation is journaled with the request"
    );
    let posted = t.log.split("bob> ").next().unwrap_or_default().to_string();
    assert!(
        posted.contains(
            "Note: Lync reports the route as EdgeServer:edgepool2.contoso.com (Site2); Baton's journal says EdgePool1."
        ),
        "{posted}"
    );
    assert!(
        posted.contains(
            "Warning: EdgePool2 carries federation now (Lync routes federation to it): step 2 stops its services"
        ),
        "{posted}"
    );
    let preview = t.log.split("bob> ").nth(1).unwrap_or_default();
    assert!(!preview.contains("Note: Lync"), "{preview}");
}

/// A request in an XMPP room calls the approvers present (by their identities: the adapter writes
/// the nickname), never the requester or people away; `!status` says who was asked and for how
/// long the run has waited; the journal keeps whom it called.
#[test]
fn the_request_calls_the_approvers_in_the_room() {
    let mut engine = Engine::new(config(|_| {}));
    let room = RoomRef::new(Platform::Xmpp, "ops@conference.contoso.com");
    let xmpp = |jid: &str| Identity::new(Platform::Xmpp, jid).expect("valid jid");
    let occupants = |who: &[(&str, &str)]| crate::chat::Presence {
        rooms: [(
            room.id.clone(),
            who.iter().map(|(jid, nick)| (xmpp(jid), nick.to_string())).collect(),
        )]
        .into(),
    };
    let t0 = DateTime::parse_from_rfc3339("2026-11-26T14:02:11Z")
        .expect("valid time")
        .with_timezone(&Utc);
    let chat = |engine: &mut Engine, who: &str, text: &str, at| {
        engine.handle(
            Input::Chat {
                room: room.clone(),
                sender: Sender::Verified(xmpp(who)),
                command: parse("!", text).expect("addressed to the bot"),
            },
            at,
        )
    };
    // alice, bob (as "Bobby") and mallory are here; carol is not.
    let presence = occupants(&[
        ("alice@contoso.com", "alice"),
        ("bob@contoso.com", "Bobby"),
        ("mallory@contoso.com", "mallory"),
    ]);
    engine.handle(
        Input::Presence {
            platform: Platform::Xmpp,
            presence,
        },
        t0,
    );
    let out = chat(
        &mut engine,
        "alice@contoso.com",
        "!failover xmpp EdgePool2 dc1 down",
        t0,
    );
    let mentions: Vec<&crate::chat::Mention> = out.messages[0]
        .body
        .0
        .iter()
        .filter_map(|s| match s {
            crate::chat::Span::Mention(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(mentions.len(), 1, "{:?}", out.messages[0].body);
    assert_eq!(mentions[0].person, "bob");
    assert_eq!(mentions[0].on(Platform::Xmpp), Some(&xmpp("bob@contoso.com")));
    assert!(
        out.messages[0].text().ends_with("\nAsking bob."),
        "{}",
        out.messages[0].text()
    );
    let asked = out.events.iter().find_map(|r| match &r.event {
        Event::Requested { asked, .. } => Some(asked.clone()),
        _ => None,
    });
    assert_eq!(asked, Some(vec![PersonId::new("bob")]));

    let later = t0 + chrono::Duration::seconds(192);
    let status = chat(&mut engine, "mallory@contoso.com", "!status 1", later);
    expect![[r#"
        #1 pending approval: EdgePool1 -> EdgePool2, requested 14:02:11 UTC by alice
          1. precheck  -
          2. services  -
          3. route     -
          4. dns A     -
          5. dns SRV   -
          6. port      -
          7. services  -
          8. verify    -
          waiting 3m12s for approval; asked: bob
          expires at 14:17:11 UTC"#]]
    .assert_eq(&status.messages[0].text());

    // Rebuilt from the journal, the run knows whom it asked.
    let restored = Engine::restore(config(|_| {}), out.events);
    assert_eq!(
        restored.run(RunId(1)).map(|r| r.asked.clone()),
        Some(vec![PersonId::new("bob")])
    );

    // Nobody who may approve in the room: the request says so and names nobody.
    let mut engine = Engine::new(config(|_| {}));
    engine.handle(
        Input::Presence {
            platform: Platform::Xmpp,
            presence: occupants(&[("alice@contoso.com", "alice"), ("mallory@contoso.com", "m")]),
        },
        t0,
    );
    let out = chat(&mut engine, "alice@contoso.com", "!failover xmpp EdgePool2", t0);
    let text = out.messages[0].text();
    assert!(
        text.ends_with("\nNo one who may approve can be called here now: ask an approver to join."),
        "{text}"
    );
    assert!(
        !out.messages[0]
            .body
            .0
            .iter()
            .any(|s| matches!(s, crate::chat::Span::Mention(_)))
    );
}

/// Says `text` as `who` `times` times: (messages said, events journaled, refusals silenced).
fn spam(t: &mut T, who: &str, text: &str, times: usize) -> (usize, usize, usize) {
    let mut counts = (0, 0, 0);
    for _ in 0..times {
        let sender = match who {
            "anon" => Sender::Unverified {
                display: "bob".into(),
                why: "this room does not show real JIDs to Baton".into(),
            },
            _ => Sender::Verified(Identity::new(Platform::Console, who).expect("valid console name")),
        };
        let out = t.engine.handle(
            Input::Chat {
                room: RoomRef::new(Platform::Console, "incident"),
                sender,
                command: parse("!", text).expect("addressed to the bot"),
            },
            t.now,
        );
        counts.0 += out.messages.len();
        counts.1 += out.events.len();
        counts.2 += out.silenced;
    }
    counts
}

/// A sender refused again and again gets five answers a minute; the rest are neither said nor
/// journaled. Usage errors of people Baton knows are always answered.
#[test]
fn refusals_are_answered_a_few_times_a_minute_per_sender() {
    let mut t = T::new(|_| {});
    assert_eq!(spam(&mut t, "mallory", "!approve 1", 8), (5, 5, 3), "mallory");
    assert_eq!(
        spam(&mut t, "anon", "!failover xmpp EdgePool2", 7),
        (5, 5, 2),
        "an unverified sender"
    );
    assert_eq!(
        spam(&mut t, "stranger", "!approve", 7),
        (5, 0, 2),
        "usage errors of a stranger"
    );
    assert_eq!(
        spam(&mut t, "alice", "!approve", 7),
        (7, 0, 0),
        "usage errors of a known person"
    );
    // A minute later mallory is answered again.
    t.after_secs(60);
    assert_eq!(spam(&mut t, "mallory", "!approve 1", 1), (1, 1, 0));
}

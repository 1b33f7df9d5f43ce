//! What a chat server can do to a run, through the whole of Baton (`baton run` with real agents,
//! BIND9 and Prosody; Baton reaches Prosody through a loopback proxy where the test needs to
//! hold, cut or refuse its traffic). The incident room's view is the test users' transcript;
//! the run's timing is the journal's.
//!
//! - A mirror room that refuses the bot holds nothing up, and is reported once.
//! - Traffic held for 15 s mid-run: the run goes on at its own pace, nothing is posted twice.
//! - Baton's own traffic held: an approval is still acted on and the run ends meanwhile.
//! - The stream reset after some lines reached the room and others did not: each line once.
//! - After an outage, the lines that waited go out within a second of the rejoin.
//! - After a server restart, Baton is back in its rooms within 2 s of the server being ready.
//! - A server that accepts and then throws the bot out meets a growing wait, not a tight loop.

use anyhow::{Context, Result};
use baton_actions::Fqdn;
use baton_e2e::baton::Baton;
use baton_e2e::prosody::{INCIDENT_ROOM, MEMBERS_ONLY_ROOM};
use baton_e2e::proxy::Direction;
use baton_e2e::room::{Follower, every_step_once_in_order, starting_with};
use baton_e2e::stack::{Stack, StackOptions};
use baton_e2e::xmpp_client::JoinHistory;
use serde_json::json;
use std::time::{Duration, Instant};

/// The longest any single wait may take.
const T: Duration = Duration::from_secs(60);

fn start(options: StackOptions) -> Result<(Stack, Baton)> {
    tokio::task::block_in_place(|| {
        let stack = Stack::start(StackOptions {
            xmpp_chat: true,
            ..options
        })?;
        let bot = stack.start_bot_logging("warn,baton=info")?;
        Ok((stack, bot))
    })
}

/// Makes `action` take `ms` on `host` from now on.
fn slow(stack: &Stack, host: &str, action: &str, ms: u64) -> Result<()> {
    stack
        .fleet
        .edit_sim(&Fqdn::parse(host)?, |s| s["inject"][action] = json!({ "delay_ms": ms }))
}

/// alice (waiting until the bot answers), bob and carol in the incident room, straight to
/// Prosody; alice requests a failover and bob approves it.
async fn approved_run(stack: &Stack) -> Result<(Follower, Follower, Follower)> {
    let server = &stack.prosody;
    let mut alice = Follower::join(server, "alice", INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    alice.wait_for_bot(INCIDENT_ROOM).await?;
    let mut bob = Follower::join(server, "bob", INCIDENT_ROOM, "bob", JoinHistory::None).await?;
    let carol = Follower::join(server, "carol", INCIDENT_ROOM, "carol", JoinHistory::None).await?;
    alice.say(INCIDENT_ROOM, "!failover xmpp EdgePool2 drill").await?;
    alice.bot_says(INCIDENT_ROOM, "Run #1 requested by alice", T).await?;
    bob.say(INCIDENT_ROOM, "!approve 1").await?;
    Ok((alice, bob, carol))
}

/// The answers to `!status 1` among the bot's lines (the step table).
fn status_answers(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|l| l.starts_with("#1 ") && l.contains("\n  1. precheck"))
        .collect()
}

fn assert_no_panic(bot: &Baton) {
    let err = bot.stderr();
    assert!(!err.contains("panicked"), "baton panicked:\n{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_room_that_refuses_the_bot_holds_nothing_up_and_is_reported_once() -> Result<()> {
    let (stack, bot) = start(StackOptions {
        sim_args: vec!["--delay-ms".into(), "500".into()],
        bot_config: "mirror_give_up = \"3s\"".into(),
        xmpp_config: format!("mirror_rooms = [\"{MEMBERS_ONLY_ROOM}\"]"),
        ..StackOptions::default()
    })?;
    let server = &stack.prosody;
    let mut alice = Follower::join(server, "alice", INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    alice.wait_for_bot(INCIDENT_ROOM).await?;
    let mut bob = Follower::join(server, "bob", INCIDENT_ROOM, "bob", JoinHistory::None).await?;
    let mut carol = Follower::join(server, "carol", INCIDENT_ROOM, "carol", JoinHistory::None).await?;
    alice.say(INCIDENT_ROOM, "!failover xmpp EdgePool2 drill").await?;
    alice.bot_says(INCIDENT_ROOM, "Run #1 requested by alice", T).await?;
    // A refusal (the requester cannot approve her own run) is answered too.
    alice.say(INCIDENT_ROOM, "!approve 1").await?;
    alice.bot_says(INCIDENT_ROOM, "Refused (!approve 1)", T).await?;
    bob.say(INCIDENT_ROOM, "!approve 1").await?;
    alice.bot_says(INCIDENT_ROOM, "#1 [1/8] precheck", T).await?;
    carol.say(INCIDENT_ROOM, "!status 1").await?;
    carol.bot_says(INCIDENT_ROOM, "#1 running, step ", T).await?;
    alice.bot_says(INCIDENT_ROOM, "#1 succeeded in ", T).await?;
    let report = format!("Messages to the mirror room {MEMBERS_ONLY_ROOM} cannot be delivered");
    // The report comes once the give-up time has passed, whenever that falls in the run.
    let deadline = Instant::now() + T;
    loop {
        alice.settle(Duration::from_millis(500)).await;
        let lines = alice.bot_lines(INCIDENT_ROOM);
        if lines.iter().any(|l| l.starts_with(&report)) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no report of the mirror room:\n{}",
            lines.join("\n")
        );
    }
    // The report waited for the give-up time (3 s), counted from the mirror's first refusal,
    // which came with the request.
    let at = |prefix: &str| {
        alice
            .transcript()
            .iter()
            .find(|m| m.nick == "baton" && m.text.starts_with(prefix))
            .map(|m| m.at)
            .expect("seen above")
    };
    let waited = at(&report).saturating_duration_since(at("Run #1 requested by alice"));
    assert!(
        waited >= Duration::from_secs(2),
        "reported {waited:?} after the request"
    );
    // Long enough for a second report to show, had there been one.
    alice.settle(Duration::from_secs(4)).await;
    let lines = alice.bot_lines(INCIDENT_ROOM);
    every_step_once_in_order(&lines).map_err(anyhow::Error::msg)?;
    let answers = status_answers(&lines);
    assert_eq!(answers.len(), 1, "{}", lines.join("\n"));
    let asked = lines.iter().position(|l| l == answers[0]).expect("just found");
    let step = |n: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(n))
            .expect("every step is there")
    };
    assert!(
        step("#1 [1/8]") < asked && asked < step("#1 [8/8]"),
        "{}",
        lines.join("\n")
    );
    assert_eq!(starting_with(&lines, "#1 succeeded in ").len(), 1);
    assert_eq!(
        starting_with(&lines, "Refused (!approve 1)").len(),
        1,
        "{}",
        lines.join("\n")
    );
    assert_eq!(
        starting_with(&lines, &report).len(),
        1,
        "the mirror's failure is said once:\n{}",
        lines.join("\n")
    );
    // Nothing waits for the mirror any more: its messages are recorded as undeliverable.
    let deadline = Instant::now() + T;
    loop {
        let waiting = tokio::task::block_in_place(|| stack.undelivered())?;
        if waiting.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox never emptied: {waiting:#?}\n{}",
            bot.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_no_panic(&bot);
    for f in [alice, bob, carol] {
        f.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_server_holding_traffic_for_15s_delays_no_step_and_nothing_is_posted_twice() -> Result<()> {
    let (stack, bot) = start(StackOptions {
        xmpp_via_proxy: true,
        ..StackOptions::default()
    })?;
    // Step 2 takes 3 s on the agents.
    slow(&stack, "edge2a.contoso.test", "services.stop", 3000)?;
    slow(&stack, "edge2b.contoso.test", "services.stop", 3000)?;
    let (mut alice, mut bob, mut carol) = approved_run(&stack).await?;
    alice.bot_says(INCIDENT_ROOM, "#1 [1/8] precheck", T).await?;

    // Prosody and Baton stop hearing each other for 15 s (the length of the hold is the
    // condition under test); meanwhile carol and bob ask for the status.
    let proxy = stack.proxy();
    proxy.hold(Direction::Up);
    proxy.hold(Direction::Down);
    let held_at = chrono::Utc::now();
    carol.say(INCIDENT_ROOM, "!status 1").await?;
    bob.say(INCIDENT_ROOM, "!status 1").await?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let released_at = chrono::Utc::now();
    proxy.release(Direction::Up);
    proxy.release(Direction::Down);

    alice.bot_says(INCIDENT_ROOM, "#1 succeeded in ", T).await?;
    for _ in 0..2 {
        carol
            .wait_for(|m| m.nick == "baton" && m.text.contains("\n  1. precheck"), T)
            .await?;
    }
    // Long enough for anything sent twice to show.
    alice.settle(Duration::from_secs(3)).await;

    // The run went on at its own pace while the chat was held: step 2's outcome was journaled
    // and step 3 dispatched during the hold, about 3 s after step 2 began.
    let started = tokio::task::block_in_place(|| stack.journal_times("step_started"))?;
    let finished = tokio::task::block_in_place(|| stack.journal_times("step_finished"))?;
    let at = |rows: &[(chrono::DateTime<chrono::Utc>, serde_json::Value)], step: u64| {
        rows.iter()
            .find(|(_, e)| e["step"] == step)
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("step index {step} is journaled: {rows:?}"))
    };
    let (s2, f2, s3) = (at(&started, 1), at(&finished, 1), at(&started, 2));
    let took = (f2 - s2).to_std()?;
    let next = (s3 - f2).to_std()?;
    println!(
        "step 2 began {} ms after the hold began, took {took:?}; step 3 dispatched {next:?} after; the hold ended {} ms after step 2",
        (s2 - held_at).num_milliseconds(),
        (released_at - f2).num_milliseconds()
    );
    assert!(f2 < released_at, "step 2's outcome waited for the chat server");
    assert!(
        took < Duration::from_secs(6),
        "step 2 took {took:?} (3 s on the agents)"
    );
    assert!(next < Duration::from_secs(1), "step 3 came {next:?} after step 2");

    // Nothing posted twice: each step once, one summary, one answer to each `!status`.
    let lines = alice.bot_lines(INCIDENT_ROOM);
    every_step_once_in_order(&lines).map_err(anyhow::Error::msg)?;
    assert_eq!(
        starting_with(&lines, "#1 succeeded in ").len(),
        1,
        "{}",
        lines.join("\n")
    );
    assert_eq!(status_answers(&lines).len(), 2, "{}", lines.join("\n"));
    // The two answers may well be the same text; every other line is said once.
    let answers = status_answers(&lines);
    let mut seen = std::collections::HashSet::new();
    for l in lines.iter().filter(|l| !answers.contains(l)) {
        assert!(seen.insert(l), "posted twice: {l}\n{}", lines.join("\n"));
    }
    assert_no_panic(&bot);
    for f in [alice, bob, carol] {
        f.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_is_acted_on_and_the_run_ends_while_baton_cannot_post() -> Result<()> {
    let (stack, bot) = start(StackOptions {
        xmpp_via_proxy: true,
        ..StackOptions::default()
    })?;
    let server = &stack.prosody;
    let mut alice = Follower::join(server, "alice", INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    alice.wait_for_bot(INCIDENT_ROOM).await?;
    let mut bob = Follower::join(server, "bob", INCIDENT_ROOM, "bob", JoinHistory::None).await?;
    alice.say(INCIDENT_ROOM, "!failover xmpp EdgePool2 drill").await?;
    alice.bot_says(INCIDENT_ROOM, "Run #1 requested by alice", T).await?;

    // Nothing Baton sends reaches Prosody any more (every line it posts waits for an echo that
    // cannot come), but it still hears the room: bob's approval gets through.
    let proxy = stack.proxy();
    proxy.hold(Direction::Up);
    bob.say(INCIDENT_ROOM, "!approve 1").await?;
    let deadline = Instant::now() + T;
    let ended = loop {
        let kinds = tokio::task::block_in_place(|| stack.journal_kinds())?;
        if kinds.iter().any(|k| k == "succeeded" || k == "failed") {
            break kinds;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the run did not end while Baton could not post: {kinds:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ended.last().map(String::as_str), Some("succeeded"), "{ended:?}");
    // Approved, run and ended without waiting on a single delivery (each would wait for its
    // echo until the delivery timeout, 10 s).
    let at = |kind: &str| -> Result<chrono::DateTime<chrono::Utc>> {
        let rows = tokio::task::block_in_place(|| stack.journal_times(kind))?;
        rows.first()
            .map(|(t, _)| *t)
            .with_context(|| format!("{kind} is journaled"))
    };
    let took = (at("succeeded")? - at("approved")?).to_std()?;
    println!("approved to succeeded in {took:?} while Baton's traffic was held");
    assert!(took < Duration::from_secs(10), "the run waited on the chat: {took:?}");
    proxy.release(Direction::Up);

    // The room then gets every line once, in order.
    alice.bot_says(INCIDENT_ROOM, "#1 succeeded in ", T).await?;
    alice.settle(Duration::from_secs(2)).await;
    let lines = alice.bot_lines(INCIDENT_ROOM);
    every_step_once_in_order(&lines).map_err(anyhow::Error::msg)?;
    assert_eq!(
        starting_with(&lines, "#1 succeeded in ").len(),
        1,
        "{}",
        lines.join("\n")
    );
    assert_no_panic(&bot);
    alice.close().await;
    bob.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reset_only_what_the_room_did_not_get_is_sent_again() -> Result<()> {
    let (stack, bot) = start(StackOptions {
        xmpp_via_proxy: true,
        xmpp_config: "delivery_timeout = \"1s\"".into(),
        ..StackOptions::default()
    })?;
    slow(&stack, "edge2a.contoso.test", "services.stop", 2000)?;
    slow(&stack, "edge2b.contoso.test", "services.stop", 2000)?;
    slow(&stack, "mgmt1.contoso.test", "route.set", 2000)?;
    slow(&stack, "edge2a.contoso.test", "services.start", 3000)?;
    slow(&stack, "edge2b.contoso.test", "services.start", 3000)?;
    let (mut alice, bob, mut carol) = approved_run(&stack).await?;
    alice.bot_says(INCIDENT_ROOM, "#1 [1/8] precheck", T).await?;
    let proxy = stack.proxy();

    // The room gets step 2's line, but Baton never sees it echoed ...
    proxy.hold(Direction::Down);
    carol.bot_says(INCIDENT_ROOM, "#1 [2/8] services", T).await?;
    // ... and steps 3 to 6 never reach the room: Baton counts them late, not lost.
    proxy.hold(Direction::Up);
    let deadline = Instant::now() + T;
    loop {
        let finished = tokio::task::block_in_place(|| stack.journal_times("step_finished"))?;
        let waiting = tokio::task::block_in_place(|| stack.undelivered())?;
        let step6_done = finished.iter().any(|(_, e)| e["step"] == 5);
        if step6_done && starting_with(&waiting, "#1 [").is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "steps 3 to 6 were not handed to the room: {waiting:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The link dies with all of that in it, and stays down past Prosody's resumption time (3 s),
    // so the session is reset rather than resumed.
    proxy.cut();
    proxy.refuse(true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.release(Direction::Up);
    proxy.release(Direction::Down);
    proxy.refuse(false);

    carol.bot_says(INCIDENT_ROOM, "#1 succeeded in ", T).await?;
    carol.settle(Duration::from_secs(3)).await;
    let lines = carol.bot_lines(INCIDENT_ROOM);
    every_step_once_in_order(&lines).map_err(anyhow::Error::msg)?;
    assert_eq!(
        starting_with(&lines, "#1 succeeded in ").len(),
        1,
        "{}",
        lines.join("\n")
    );
    let log = bot.stderr();
    assert!(
        log.contains("sending again what the room's history does not show"),
        "the rejoin checked the history and sent the missing lines again:\n{log}"
    );
    assert_no_panic(&bot);
    for f in [alice, bob, carol] {
        f.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_the_waiting_lines_go_out_within_a_second_of_the_rejoin() -> Result<()> {
    let (mut stack, bot) = start(StackOptions {
        xmpp_via_proxy: true,
        ..StackOptions::default()
    })?;
    // Step 7 outlasts the outage: step 8 probes Prosody's s2s port, which must be up again.
    slow(&stack, "mgmt1.contoso.test", "route.set", 3000)?;
    slow(&stack, "edge2a.contoso.test", "services.start", 12000)?;
    slow(&stack, "edge2b.contoso.test", "services.start", 12000)?;
    let (mut alice, bob, _carol) = approved_run(&stack).await?;
    alice.bot_says(INCIDENT_ROOM, "#1 [2/8] services", T).await?;

    // Prosody goes down for about 7 s while steps 3 to 6 finish; Baton's way back stays shut
    // until carol is in the room to see it arrive.
    let down = Instant::now();
    tokio::task::block_in_place(|| stack.prosody.stop())?;
    stack.proxy().refuse(true);
    let deadline = Instant::now() + T;
    while starting_with(&tokio::task::block_in_place(|| stack.undelivered())?, "#1 [6/8]").is_empty() {
        assert!(Instant::now() < deadline, "step 6 did not finish during the outage");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(7).saturating_sub(down.elapsed())).await;
    tokio::task::block_in_place(|| stack.prosody.start_again())?;
    let verified = tokio::task::block_in_place(|| stack.journal_times("step_started"))?;
    anyhow::ensure!(
        !verified.iter().any(|(_, e)| e["step"] == 7),
        "step 8 (verify) began before Prosody was back; the outage must end within step 7"
    );
    let mut carol = Follower::join(&stack.prosody, "carol", INCIDENT_ROOM, "carol", JoinHistory::None).await?;
    stack.proxy().refuse(false);

    let rejoined = carol.presence_of(INCIDENT_ROOM, "baton", T).await?;
    let first = carol.bot_says(INCIDENT_ROOM, "#1 [3/8] route", T).await?;
    let after = first.at.saturating_duration_since(rejoined);
    println!(
        "first waiting line {after:?} after the bot rejoined (outage {:?})",
        rejoined - down
    );
    assert!(
        after < Duration::from_secs(1),
        "the waiting lines went out {after:?} after the rejoin"
    );
    carol.bot_says(INCIDENT_ROOM, "#1 succeeded in ", T).await?;
    carol.settle(Duration::from_secs(1)).await;
    let room: Vec<String> = alice
        .bot_lines(INCIDENT_ROOM)
        .into_iter()
        .chain(carol.bot_lines(INCIDENT_ROOM))
        .collect();
    every_step_once_in_order(&room).map_err(anyhow::Error::msg)?;
    assert_no_panic(&bot);
    drop((alice, bob));
    carol.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_server_restart_baton_is_back_within_two_seconds() -> Result<()> {
    // The configuration's default backoff (1 s doubling to 60 s).
    let (mut stack, bot) = start(StackOptions {
        xmpp_reconnect: Some(("1s".into(), "60s".into())),
        ..StackOptions::default()
    })?;
    let mut alice = Follower::join(&stack.prosody, "alice", INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    alice.wait_for_bot(INCIDENT_ROOM).await?;
    alice.close().await;
    // Down for 17 s, the time the backoff needs to grow past a quarter of a minute.
    tokio::task::block_in_place(|| stack.prosody.stop())?;
    tokio::time::sleep(Duration::from_secs(17)).await;
    let starting = Instant::now();
    tokio::task::block_in_place(|| stack.prosody.start_again())?;
    let ready = Instant::now();
    let mut carol = Follower::join(&stack.prosody, "carol", INCIDENT_ROOM, "carol", JoinHistory::None).await?;
    let back = carol.presence_of(INCIDENT_ROOM, "baton", T).await?;
    let after = back.saturating_duration_since(ready);
    println!(
        "Baton back in the room {after:?} after Prosody was ready ({:?} after it was started)",
        back.saturating_duration_since(starting)
    );
    assert!(
        after < Duration::from_secs(2),
        "back {after:?} after the server was ready"
    );
    carol.wait_for_bot(INCIDENT_ROOM).await?;
    assert_no_panic(&bot);
    carol.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_throws_the_bot_out_meets_a_growing_wait() -> Result<()> {
    let (stack, bot) = start(StackOptions {
        xmpp_via_proxy: true,
        ..StackOptions::default()
    })?;
    let mut alice = Follower::join(&stack.prosody, "alice", INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    alice.wait_for_bot(INCIDENT_ROOM).await?;
    // Every connection is closed 400 ms after it opened, from now on, for 10 s.
    let proxy = stack.proxy();
    proxy.kick_after(Some(Duration::from_millis(400)));
    let before = proxy.accepted();
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let connections = proxy.accepted() - before;
    println!("{connections} connections in 10 s of being thrown out 400 ms after each");
    assert!(
        connections <= 12,
        "{connections} connections in 10 s: the backoff restarted at every login"
    );
    assert!(connections >= 3, "it kept trying ({connections})");
    // Once the server keeps it, Baton is back.
    proxy.kick_after(None);
    alice.wait_for_bot(INCIDENT_ROOM).await?;
    assert_no_panic(&bot);
    alice.close().await;
    Ok(())
}

//! The user's story through the whole of Baton in real XMPP rooms: `baton run` (XMPP adapter,
//! engine, journal, outbox) in Prosody's rooms, with real agents, BIND9 and probes behind it,
//! and alice, bob, carol and mallory as XMPP clients of their own. The request, the plan, the
//! refused self-approval, bob's approval, every step's status once and in order, a status
//! answered mid-run and the summary; identity by real JID when mallory takes bob's nickname; the
//! semi-anonymous room refused with its explanation; rejoining with history runs nothing again;
//! and a Prosody outage in the middle of a run loses and repeats no status message.

use baton::adapters::xmpp::inbound::HIDDEN_JIDS_NOTICE;
use baton_actions::Fqdn;
use baton_e2e::baton::Baton;
use baton_e2e::prosody::{INCIDENT_ROOM, SEMI_ANONYMOUS_ROOM};
use baton_e2e::room::{BOT_NICK, Follower, starting_with};
use baton_e2e::stack::{Stack, StackOptions};
use baton_e2e::xmpp_client::JoinHistory;
use serde_json::json;
use std::time::{Duration, Instant};

/// The longest any single wait may take (a whole run with delays fits well within it).
const T: Duration = Duration::from_secs(60);

/// The titles of the plan's steps, in order, as the room shows them.
const STEPS: [&str; 8] = [
    "precheck", "services", "route", "dns A", "dns SRV", "port", "services", "verify",
];

/// The full stack with the bot's chat in Prosody's rooms, and `baton run` started on it.
fn stack_with_xmpp_chat(sim_args: &[&str]) -> anyhow::Result<(Stack, Baton)> {
    let stack = stack_without_bot(sim_args)?;
    let bot = tokio::task::block_in_place(|| stack.start_bot())?;
    Ok((stack, bot))
}

/// The full stack with the bot's chat in Prosody's rooms; `baton run` not started yet.
fn stack_without_bot(sim_args: &[&str]) -> anyhow::Result<Stack> {
    tokio::task::block_in_place(|| {
        Stack::start(StackOptions {
            xmpp_chat: true,
            sim_args: sim_args.iter().map(|a| a.to_string()).collect(),
            ..StackOptions::default()
        })
    })
}

/// The numbered step lines of a posted plan: (number, title).
fn plan_steps(plan: &str) -> Vec<(usize, String)> {
    plan.lines()
        .filter_map(|l| {
            let (n, rest) = l.strip_prefix("  ")?.split_once(". ")?;
            Some((n.parse().ok()?, rest.get(..9).unwrap_or(rest).trim().to_string()))
        })
        .collect()
}

/// Asserts that `lines` hold every step line of run #1 exactly once, in order, none failed.
fn assert_every_step_once_in_order(lines: &[String]) {
    let status = starting_with(lines, "#1 [");
    let shown: Vec<String> = status
        .iter()
        .map(|l| l.split(':').next().unwrap_or(l).to_string())
        .collect();
    let expected: Vec<String> = STEPS
        .iter()
        .enumerate()
        .map(|(i, t)| format!("#1 [{}/8] {t}", i + 1))
        .collect();
    assert_eq!(
        shown,
        expected,
        "every step's status once, in order; the bot said:\n{}",
        lines.join("\n")
    );
    assert!(status.iter().all(|l| !l.contains("FAILED")), "{status:#?}");
}

fn position(lines: &[String], prefix: &str) -> usize {
    lines
        .iter()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in\n{}", lines.join("\n")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_story_in_the_incident_room() -> anyhow::Result<()> {
    // Every simulated Lync action takes half a second, so the run lasts long enough to be asked
    // about in the middle.
    let (stack, _bot) = stack_with_xmpp_chat(&["--delay-ms", "500"])?;
    let server = &stack.prosody;
    let mut alice = Follower::join(server, "alice", INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    alice.wait_for_bot(INCIDENT_ROOM).await?;
    let mut bob = Follower::join(server, "bob", INCIDENT_ROOM, "bob", JoinHistory::None).await?;
    let mut carol = Follower::join(server, "carol", INCIDENT_ROOM, "carol", JoinHistory::None).await?;

    alice
        .say(INCIDENT_ROOM, "!failover xmpp EdgePool2 pool 1 lost power in DC1")
        .await?;
    let plan = alice
        .bot_says(INCIDENT_ROOM, "Run #1 requested by alice", T)
        .await?
        .text;
    assert!(
        plan.starts_with("Run #1 requested by alice: move XMPP federation EdgePool1 -> EdgePool2 (Site2).\n"),
        "{plan}"
    );
    assert!(plan.contains("\nReason: pool 1 lost power in DC1\n"), "{plan}");
    let steps = plan_steps(&plan);
    let expected: Vec<(usize, String)> = STEPS.iter().enumerate().map(|(i, t)| (i + 1, t.to_string())).collect();
    assert_eq!(steps, expected, "all 8 steps in the posted plan:\n{plan}");
    assert!(
        plan.contains("Stop-CsWindowsService on edge2a.contoso.test, edge2b.contoso.test"),
        "{plan}"
    );
    assert!(
        plan.contains("Needs 1 approval from edge-admins other than alice: `!approve 1` or `!deny 1 <why>`"),
        "{plan}"
    );
    // The hash shown is the one journaled with the request (the one approvals bind to).
    let shown = plan
        .split("Plan (sha256 ")
        .nth(1)
        .and_then(|r| r.split("):").next())
        .unwrap_or_default()
        .to_string();
    assert_eq!(shown.len(), 12, "{plan}");
    assert!(shown.chars().all(|c| c.is_ascii_hexdigit()), "{plan}");
    let journal = tokio::task::block_in_place(|| stack.journal())?;
    let requested = journal
        .iter()
        .find(|e| e["kind"] == "requested")
        .expect("the request is journaled");
    let full = requested["event"]["plan_hash"].as_str().unwrap_or_default();
    assert!(
        full.len() == 64 && full.starts_with(&shown),
        "posted {shown}, journaled {full}"
    );

    alice.say(INCIDENT_ROOM, "!approve 1").await?;
    alice
        .bot_says(
            INCIDENT_ROOM,
            "Refused (!approve 1): you requested this; another person must approve it.",
            T,
        )
        .await?;

    bob.say(INCIDENT_ROOM, "!approve 1").await?;
    alice
        .bot_says(
            INCIDENT_ROOM,
            "#1 approved by bob (2 people: alice and bob). Running.",
            T,
        )
        .await?;
    alice.bot_says(INCIDENT_ROOM, "#1 [1/8] precheck", T).await?;

    carol.say(INCIDENT_ROOM, "!status 1").await?;
    let table = carol.bot_says(INCIDENT_ROOM, "#1 running, step ", T).await?.text;
    assert!(
        table.contains("requested") && table.contains("by alice, approved by bob"),
        "{table}"
    );
    assert!(table.contains("\n  1. precheck  ok"), "{table}");
    assert!(
        table.contains("\n  8. verify    -"),
        "the last step has not started yet:\n{table}"
    );

    let summary = alice.bot_says(INCIDENT_ROOM, "#1 succeeded in ", T).await?.text;
    let took = summary
        .trim_start_matches("#1 succeeded in ")
        .split(". ")
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        took.ends_with('s') && took.chars().next().is_some_and(|c| c.is_ascii_digit()),
        "a duration: {summary}"
    );
    assert!(
        summary.contains("XMPP federation now served by EdgePool2 (Site2)."),
        "{summary}"
    );
    assert!(
        summary.contains("Requested by alice at ") && summary.ends_with(" UTC, approved by bob."),
        "{summary}"
    );

    // The whole conversation as alice saw it: each step once and in order, the status answer
    // between the first and the last step, the summary once and last.
    alice.settle(Duration::from_secs(1)).await;
    let lines = alice.bot_lines(INCIDENT_ROOM);
    assert_every_step_once_in_order(&lines);
    let asked = position(&lines, "#1 running, step ");
    assert!(
        position(&lines, "#1 [1/8]") < asked && asked < position(&lines, "#1 [8/8]"),
        "{}",
        lines.join("\n")
    );
    assert_eq!(starting_with(&lines, "#1 succeeded in ").len(), 1);
    assert!(
        lines.last().is_some_and(|l| l.starts_with("#1 succeeded in ")),
        "{}",
        lines.join("\n")
    );
    let kinds = tokio::task::block_in_place(|| stack.journal_kinds())?;
    assert_eq!(kinds.iter().filter(|k| *k == "approved").count(), 1, "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("succeeded"), "{kinds:?}");
    for client in [alice, bob, carol] {
        client.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mallory_as_bob_is_still_mallory_and_the_run_stays_pending() -> anyhow::Result<()> {
    let (stack, _bot) = stack_with_xmpp_chat(&[])?;
    let server = &stack.prosody;
    let mut alice = Follower::join(server, "alice", INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    alice.wait_for_bot(INCIDENT_ROOM).await?;
    alice.say(INCIDENT_ROOM, "!failover xmpp EdgePool2 drill").await?;
    alice.bot_says(INCIDENT_ROOM, "Run #1 requested by alice", T).await?;

    // mallory takes the nickname "bob" (the real bob is not in the room).
    let mut mallory = Follower::join(server, "mallory", INCIDENT_ROOM, "bob", JoinHistory::None).await?;
    mallory.say(INCIDENT_ROOM, "!approve 1").await?;
    let refusal = alice.bot_says(INCIDENT_ROOM, "Refused (!approve 1)", T).await?.text;
    assert_eq!(
        refusal,
        "Refused (!approve 1): mallory may not approve: only members of edge-admins may."
    );

    mallory.say(INCIDENT_ROOM, "!status 1").await?;
    let status = alice.bot_says(INCIDENT_ROOM, "#1 ", T).await?.text;
    assert!(
        status.starts_with("#1 pending approval: EdgePool1 -> EdgePool2"),
        "{status}"
    );

    alice.settle(Duration::from_secs(1)).await;
    let lines = alice.bot_lines(INCIDENT_ROOM);
    assert!(
        lines.iter().all(|l| !l.contains("Running.") && !l.starts_with("#1 [")),
        "nothing started:\n{}",
        lines.join("\n")
    );
    let journal = tokio::task::block_in_place(|| stack.journal())?;
    assert!(
        journal
            .iter()
            .all(|e| e["kind"] != "approved" && e["kind"] != "step_started"),
        "{journal:#?}"
    );
    let refused = journal
        .iter()
        .find(|e| e["kind"] == "refused")
        .expect("the refusal is journaled");
    assert_eq!(
        refused["event"]["who"], "xmpp:mallory@contoso.test",
        "the audit names the real account"
    );
    mallory.close().await;
    alice.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_semi_anonymous_room_refuses_requests_and_approvals_with_the_reason() -> anyhow::Result<()> {
    let stack = stack_without_bot(&[])?;
    let server = &stack.prosody;
    // alice is in the lobby before the bot arrives, so she sees everything it says there.
    let mut alice = Follower::join(server, "alice", SEMI_ANONYMOUS_ROOM, "alice", JoinHistory::None).await?;
    let _bot = tokio::task::block_in_place(|| stack.start_bot())?;
    let notice = alice.bot_says(SEMI_ANONYMOUS_ROOM, "real JIDs", T).await?.text;
    assert_eq!(notice, HIDDEN_JIDS_NOTICE);
    alice.also_join(INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    alice.wait_for_bot(INCIDENT_ROOM).await?;

    alice
        .say(SEMI_ANONYMOUS_ROOM, "!failover xmpp EdgePool2 from the lobby")
        .await?;
    let refusal = alice
        .bot_says(SEMI_ANONYMOUS_ROOM, "Refused (!failover xmpp EdgePool2)", T)
        .await?
        .text;
    assert!(
        refusal.contains("I cannot verify who you are here: this room hides members' real JIDs"),
        "{refusal}"
    );
    assert!(
        refusal.contains("make the room non-anonymous or Baton a moderator"),
        "{refusal}"
    );

    // A run requested where identities are visible cannot be approved from the lobby either.
    alice.say(INCIDENT_ROOM, "!failover xmpp EdgePool2 drill").await?;
    alice.bot_says(INCIDENT_ROOM, "Run #1 requested by alice", T).await?;
    let mut bob = Follower::join(server, "bob", SEMI_ANONYMOUS_ROOM, "bob", JoinHistory::None).await?;
    bob.say(SEMI_ANONYMOUS_ROOM, "!approve 1").await?;
    let refusal = bob.bot_says(SEMI_ANONYMOUS_ROOM, "Refused (!approve 1)", T).await?.text;
    assert!(
        refusal.contains("this room hides members' real JIDs from Baton (semi-anonymous room"),
        "{refusal}"
    );
    alice.say(INCIDENT_ROOM, "!status 1").await?;
    let status = alice.bot_says(INCIDENT_ROOM, "#1 ", T).await?.text;
    assert!(status.starts_with("#1 pending approval"), "{status}");

    alice.settle(Duration::from_secs(1)).await;
    let lobby = alice.bot_lines(SEMI_ANONYMOUS_ROOM);
    assert_eq!(
        lobby.iter().filter(|l| *l == HIDDEN_JIDS_NOTICE).count(),
        1,
        "the notice is posted once:\n{}",
        lobby.join("\n")
    );
    assert_eq!(lobby.len(), 3, "the notice and two refusals:\n{}", lobby.join("\n"));
    let kinds = tokio::task::block_in_place(|| stack.journal_kinds())?;
    assert_eq!(
        kinds,
        ["refused", "requested", "refused"],
        "the lobby's request refused, alice's request, bob's approval refused"
    );
    alice.close().await;
    bob.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoining_with_history_runs_nothing_again() -> anyhow::Result<()> {
    let (stack, mut bot) = stack_with_xmpp_chat(&[])?;
    let server = &stack.prosody;
    let mut alice = Follower::join(server, "alice", INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    alice.wait_for_bot(INCIDENT_ROOM).await?;
    let mut bob = Follower::join(server, "bob", INCIDENT_ROOM, "bob", JoinHistory::None).await?;
    alice.say(INCIDENT_ROOM, "!failover xmpp EdgePool2 drill").await?;
    alice.bot_says(INCIDENT_ROOM, "Run #1 requested by alice", T).await?;
    bob.say(INCIDENT_ROOM, "!approve 1").await?;
    alice.bot_says(INCIDENT_ROOM, "#1 succeeded in ", T).await?;
    alice.settle(Duration::from_millis(500)).await;
    let said = alice.bot_lines(INCIDENT_ROOM).len();
    let journal = tokio::task::block_in_place(|| stack.journal_kinds())?;
    assert_eq!(journal.iter().filter(|k| *k == "requested").count(), 1);

    // alice leaves and comes back asking for everything the room kept: the commands are
    // replayed to her (the room does hold them), and the bot says nothing new.
    alice.leave(INCIDENT_ROOM, "alice").await?;
    alice.also_join(INCIDENT_ROOM, "alice", JoinHistory::All).await?;
    alice.settle(Duration::from_secs(2)).await;
    let replayed: Vec<String> = alice.transcript()[..]
        .iter()
        .filter(|m| m.delayed && m.nick != BOT_NICK)
        .map(|m| m.text.clone())
        .collect();
    assert!(
        replayed.iter().any(|t| t == "!failover xmpp EdgePool2 drill"),
        "history replayed: {replayed:?}"
    );
    assert!(
        replayed.iter().any(|t| t == "!approve 1"),
        "history replayed: {replayed:?}"
    );
    let live_after: Vec<&str> = alice.transcript()[..]
        .iter()
        .filter(|m| !m.delayed && m.nick == BOT_NICK)
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(live_after.len(), said, "no new bot message: {live_after:#?}");

    // The bot itself leaves (stopped with SIGINT) and joins again: still nothing runs again.
    let pid = libc::pid_t::try_from(bot.pid())?;
    // SAFETY: kill(2) on the child we started and have not reaped; no memory effects.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    tokio::task::block_in_place(|| bot.wait_exit(Duration::from_secs(20)))?;
    let _bot = tokio::task::block_in_place(|| stack.start_bot())?;
    let before_restart = alice.bot_lines(INCIDENT_ROOM).len();
    // Anything the bot ran again from history would be answered before a later command: ask
    // `!runs` until it answers, then listen a little longer.
    let deadline = Instant::now() + T;
    loop {
        alice.say(INCIDENT_ROOM, "!runs").await?;
        if alice
            .bot_says(INCIDENT_ROOM, "Recent runs:", Duration::from_secs(2))
            .await
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the restarted bot never answered");
    }
    alice.settle(Duration::from_secs(2)).await;
    let after: Vec<String> = alice.bot_lines(INCIDENT_ROOM)[before_restart..].to_vec();
    assert!(
        !after.is_empty() && after.iter().all(|l| l.starts_with("Recent runs:")),
        "only answers to !runs: {after:#?}"
    );
    assert!(after[0].contains("#1 succeeded"), "{after:#?}");
    assert_eq!(
        tokio::task::block_in_place(|| stack.journal_kinds())?,
        journal,
        "the journal is unchanged"
    );
    alice.close().await;
    bob.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prosody_outage_mid_run_loses_and_repeats_no_status() -> anyhow::Result<()> {
    let (mut stack, _bot) = stack_with_xmpp_chat(&[])?;
    // Setting the route (step 3) takes 3 s: the outage begins while none of the bot's messages
    // is on its way. Starting the services (step 7) takes 4 s: Prosody is back before verify
    // (step 8) opens its s2s stream, while steps 3 to 6 finish during the outage.
    let inject = |host: &str, action: &str, ms: u64| {
        stack.fleet.edit_sim(&Fqdn::parse(host)?, |s| {
            s["inject"] = json!({ action: { "delay_ms": ms } })
        })
    };
    inject("mgmt1.contoso.test", "route.set", 3000)?;
    inject("edge2a.contoso.test", "services.start", 4000)?;
    inject("edge2b.contoso.test", "services.start", 4000)?;
    let mut alice = Follower::join(&stack.prosody, "alice", INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    alice.wait_for_bot(INCIDENT_ROOM).await?;
    let mut bob = Follower::join(&stack.prosody, "bob", INCIDENT_ROOM, "bob", JoinHistory::None).await?;
    let request = alice.say(INCIDENT_ROOM, "!failover xmpp EdgePool2 drill").await?;
    alice.bot_says(INCIDENT_ROOM, "Run #1 requested by alice", T).await?;
    bob.say(INCIDENT_ROOM, "!approve 1").await?;
    alice.bot_says(INCIDENT_ROOM, "#1 [2/8] services", T).await?;
    // The room's last message before the outage is alice's: Prosody keeps a room's last message
    // across a restart and replays it as history, and this way it cannot be one of the bot's.
    let chatter = alice.say(INCIDENT_ROOM, "outage starts now").await?;
    alice
        .wait_for(|m| m.nick == "alice" && m.text == "outage starts now", T)
        .await?;

    tokio::task::block_in_place(|| stack.prosody.stop())?;
    let before: Vec<String> = alice.bot_lines(INCIDENT_ROOM);
    assert!(before.last().is_some_and(|l| l.starts_with("#1 [2/8]")), "{before:#?}");
    // The run goes on: its status lines wait in the outbox until the room is back.
    let deadline = Instant::now() + T;
    let queued = loop {
        let waiting = tokio::task::block_in_place(|| stack.undelivered())?;
        if waiting.iter().any(|t| t.starts_with("#1 [6/8]")) {
            break waiting;
        }
        assert!(
            Instant::now() < deadline,
            "step 6 did not finish while the chat was down; outbox: {waiting:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        starting_with(&queued, "#1 [").len(),
        4,
        "steps 3 to 6 finished during the outage: {queued:#?}"
    );
    tokio::task::block_in_place(|| stack.prosody.start_again())?;

    // carol arrives after the restart and asks for the room's whole history: alice's marker
    // (the one message Prosody carried over), everything said since the restart, then live.
    let mut carol = Follower::join(&stack.prosody, "carol", INCIDENT_ROOM, "carol", JoinHistory::All).await?;
    carol.bot_says(INCIDENT_ROOM, "#1 succeeded in ", T).await?;
    carol.settle(Duration::from_secs(1)).await;
    let history: Vec<_> = carol.transcript().iter().filter(|m| m.delayed).collect();
    assert!(
        history.len() < 20,
        "the room keeps 20 messages of history; {} could hide a gap",
        history.len()
    );
    assert!(
        history
            .first()
            .is_some_and(|m| m.nick == "alice" && m.text == "outage starts now"),
        "{history:#?}"
    );
    let after = carol.bot_lines(INCIDENT_ROOM);
    let room: Vec<String> = before.iter().chain(&after).cloned().collect();
    assert_every_step_once_in_order(&room);
    assert_eq!(starting_with(&room, "#1 succeeded in ").len(), 1, "{}", room.join("\n"));
    for line in &queued {
        assert!(
            after.contains(line),
            "queued during the outage, delivered after it: {line}\nafter:\n{}",
            after.join("\n")
        );
    }
    assert!(
        tokio::task::block_in_place(|| stack.undelivered())?.is_empty(),
        "the outbox is empty"
    );
    // Commands are recorded as handled; conversation is not (it costs no journal write).
    let handled = tokio::task::block_in_place(|| stack.handled_ids())?;
    assert!(handled.contains(&request) && !handled.contains(&chatter), "{handled:?}");
    // The first sessions reconnected by themselves meanwhile; close them now that the server is up.
    for client in [alice, bob, carol] {
        client.close().await;
    }
    Ok(())
}

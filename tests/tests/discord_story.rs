//! The user's story through the whole of Baton in a Discord channel: `baton run` with its
//! Discord adapter on the Discord stand-in (HTTPS, serenity's ratelimiter on), real agents,
//! BIND9 and the federation probe behind it. The request posted as a card with buttons, alice's
//! self-approval and mallory's approval refused to them alone, bob's approval by button, the
//! card edited as each step ends, `!status 1` answered, the summary posted, DNS moved — and the
//! bot token in no log line (at debug level), no error and no chat message. With XMPP beside
//! Discord, a person who requested in the XMPP room cannot approve from Discord.

use baton_e2e::discord::{DiscordStandIn, State};
use baton_e2e::discord_bot::{
    ALICE, BOB, CAROL, INCIDENTS, MALLORY, TOKEN, bot_messages, card, ephemeral_for, lines, stand_in_config,
    step_fields,
};
use baton_e2e::prosody::INCIDENT_ROOM;
use baton_e2e::room::Follower;
use baton_e2e::stack::{DiscordChat, POOL2_ADDRESS, Stack, StackOptions};
use baton_e2e::xmpp_client::JoinHistory;
use serde_json::{Value, json};
use std::time::Duration;

/// The longest any single wait may take (a whole run with delays fits well within it).
const T: Duration = Duration::from_secs(60);

fn stack(xmpp_chat: bool, sim_args: &[&str], discord: &DiscordStandIn) -> anyhow::Result<Stack> {
    tokio::task::block_in_place(|| {
        let mut stack = Stack::start(StackOptions {
            xmpp_chat,
            sim_args: sim_args.iter().map(|a| a.to_string()).collect(),
            ..StackOptions::default()
        })?;
        stack.with_discord(DiscordChat::for_stand_in(discord))?;
        Ok(stack)
    })
}

async fn wait<T>(discord: &DiscordStandIn, what: &str, f: impl FnMut(&State) -> Option<T>) -> T {
    discord.wait_until(what, T, f).await.unwrap_or_else(|e| panic!("{e}"))
}

fn line_starting(s: &State, prefix: &str) -> Option<String> {
    lines(s, INCIDENTS).into_iter().find(|l| l.starts_with(prefix))
}

/// Clicks and returns the accepted callback's body.
async fn click(discord: &DiscordStandIn, message: u64, custom_id: &str, user: u64) -> Value {
    let clicked = discord.click(message, custom_id, user).expect("the button is there");
    wait(discord, "the click's answer", |s| {
        s.interaction(clicked.interaction_id)?.accepted().cloned()
    })
    .await
    .body
    .expect("a body")
}

fn done(version: &Value) -> usize {
    step_fields(version).iter().filter(|f| f.starts_with('✅')).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_story_in_a_discord_channel() -> anyhow::Result<()> {
    let discord = DiscordStandIn::start(stand_in_config()).await?;
    let stack = stack(false, &["--delay-ms", "300"], &discord)?;
    let config = stack.config.to_str().expect("a UTF-8 path").to_string();
    let mut bot =
        tokio::task::block_in_place(|| baton_e2e::baton::Baton::start_logging(&["run", "--config", &config], "debug"))?;
    discord.wait_ready(T).await?;

    discord.post_user_message(INCIDENTS, ALICE, "!failover xmpp EdgePool2 pool 1 lost power in DC1")?;
    let plan = wait(&discord, "the plan card", |s| card(s, INCIDENTS, 1)).await;
    let content = plan.content().to_string();
    assert!(
        content.starts_with("Run #1 requested by alice: move XMPP federation EdgePool1 -> EdgePool2 (Site2)."),
        "{content}"
    );
    assert!(
        content.contains("Stop-CsWindowsService on edge2a.contoso.test, edge2b.contoso.test"),
        "{content}"
    );
    let hash = content
        .split("Plan (sha256 ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .expect("the plan hash")
        .to_string();
    let fields = step_fields(&plan.json);
    assert_eq!(fields.len(), 8, "{fields:?}");
    assert!(
        fields[0].ends_with("1. precheck") && fields[7].ends_with("8. verify"),
        "{fields:?}"
    );
    let approve = format!("approve:1:{hash}");
    let ids: Vec<String> = plan.buttons().into_iter().filter_map(|b| b.custom_id).collect();
    assert_eq!(ids, [approve.clone(), format!("deny:1:{hash}")]);

    let refused = click(&discord, plan.id, &approve, ALICE).await;
    assert_eq!(
        (refused["type"].as_u64(), refused["data"]["flags"].as_u64()),
        (Some(4), Some(64))
    );
    assert!(refused.to_string().contains("you requested this"), "{refused}");
    let refused = click(&discord, plan.id, &approve, MALLORY).await;
    assert!(refused.to_string().contains("mallory may not approve"), "{refused}");
    assert_eq!(
        discord.message(plan.id).expect("kept").buttons().len(),
        2,
        "the buttons stay"
    );

    let accepted = click(&discord, plan.id, &approve, BOB).await;
    assert_eq!(accepted["type"], 7, "{accepted}");
    assert!(discord.message(plan.id).expect("kept").buttons().is_empty());
    wait(&discord, "the approval line", |s| {
        line_starting(s, "#1 approved by bob")
    })
    .await;

    discord.post_user_message(INCIDENTS, CAROL, "!status 1")?;
    let status = wait(&discord, "carol's answer", |s| line_starting(s, "#1 running, step")).await;
    assert!(status.contains("requested") && status.contains("by alice"), "{status}");

    let summary = wait(&discord, "the summary", |s| line_starting(s, "#1 succeeded")).await;
    assert!(
        summary.contains("XMPP federation now served by EdgePool2 (Site2)"),
        "{summary}"
    );
    assert!(summary.contains("s2s stream ok"), "{summary}");
    let last = wait(&discord, "the card done", |s| {
        card(s, INCIDENTS, 1).filter(|c| done(&c.json) == 8)
    })
    .await;
    let mut versions: Vec<&Value> = last.history.iter().collect();
    versions.push(&last.json);
    let progress: Vec<usize> = versions.iter().map(|v| done(v)).collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert!(
        progress.iter().filter(|n| (1..8).contains(*n)).count() >= 2,
        "edited per step: {progress:?}"
    );
    let said = discord.read(|s| lines(s, INCIDENTS));
    assert_eq!(said.len(), 3, "approval, status, summary: {said:#?}");
    assert_eq!(stack.a_records()?, [POOL2_ADDRESS.to_string()]);

    // The token: in no log line, no chat message, no request body (IDENTIFY carries it, as
    // Discord requires, and the Authorization header).
    bot.kill9();
    let logs = bot.stderr() + &bot.lines().join("\n");
    assert!(logs.contains("Discord session ready"), "debug logs were on: {logs}");
    assert!(!logs.contains(TOKEN), "the token is in the logs");
    let everything_said: Vec<String> = discord.read(|s| {
        s.messages()
            .map(|m| m.json.to_string())
            .chain(s.calls().iter().map(|c| c.raw_body.clone()))
            .collect()
    });
    assert!(
        everything_said.iter().all(|t| !t.contains(TOKEN)),
        "the token reached the chat"
    );
    assert!(discord.read(|s| ephemeral_for(s, BOB).is_empty()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_who_requested_on_xmpp_cannot_approve_from_discord() -> anyhow::Result<()> {
    let discord = DiscordStandIn::start(stand_in_config()).await?;
    let stack = stack(true, &[], &discord)?;
    let _bot = tokio::task::block_in_place(|| stack.start_bot())?;
    discord.wait_ready(T).await?;
    let mut alice = Follower::join(&stack.prosody, "alice", INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    alice.wait_for_bot(INCIDENT_ROOM).await?;

    alice
        .say(INCIDENT_ROOM, "!failover xmpp EdgePool2 from the XMPP room")
        .await?;
    alice.bot_says(INCIDENT_ROOM, "Run #1 requested by alice", T).await?;
    // The same alice, on Discord.
    discord.post_user_message(INCIDENTS, ALICE, "!approve 1")?;
    let refused = wait(&discord, "alice's refusal on Discord", |s| {
        line_starting(s, "Refused (!approve 1)")
    })
    .await;
    assert!(refused.contains("you requested this"), "{refused}");
    // bob approves from Discord; the run goes on in the XMPP room.
    discord.post_user_message(INCIDENTS, BOB, "!approve 1")?;
    let approved = alice.bot_says(INCIDENT_ROOM, "#1 approved by bob", T).await?.text;
    assert!(approved.contains("(2 people: alice and bob)"), "{approved}");
    alice.bot_says(INCIDENT_ROOM, "#1 succeeded", T).await?;
    let approvals: Vec<Value> = stack
        .journal()?
        .into_iter()
        .filter(|e| e["kind"] == "approved")
        .collect();
    assert_eq!(approvals.len(), 1, "{approvals:#?}");
    assert_eq!(approvals[0]["event"]["person"], json!("bob"), "{approvals:#?}");
    // Discord heard only the answers to what was typed there: alice's refusal, then bob's
    // approval (the run's own messages stay in the XMPP room).
    let said: Vec<String> = discord.read(|s| {
        bot_messages(s, INCIDENTS)
            .iter()
            .map(|m| m.content().to_string())
            .collect()
    });
    assert_eq!(said.len(), 2, "{said:#?}");
    assert!(said[1].starts_with("#1 approved by bob"), "{said:#?}");
    assert!(said.iter().all(|l| !l.starts_with("#1 succeeded")), "{said:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_reported_without_showing_it() -> anyhow::Result<()> {
    let discord = DiscordStandIn::start(stand_in_config()).await?;
    let dir = tempfile::tempdir()?;
    baton_e2e::discord_bot::write_config(&discord, dir.path(), false)?;
    let wrong = "MTk4NjIyNDgzNDcxOTI1MjQ4.GxYzAb.a-revoked-token-never-logged";
    std::fs::write(dir.path().join("discord.token"), wrong)?;
    let config = dir.path().join("baton.toml");
    let mut bot = tokio::task::block_in_place(|| {
        baton_e2e::baton::Baton::start_logging(&["run", "--config", config.to_str().expect("utf-8")], "debug")
    })?;
    // The gateway refuses the token (close code 4004), again after Baton's retry.
    wait(&discord, "two refused IDENTIFYs", |s| {
        (s.identifies().iter().filter(|i| i.outcome == Err(4004)).count() >= 2).then_some(())
    })
    .await;
    bot.kill9();
    let logs = bot.stderr();
    assert!(logs.contains("Discord connection failed"), "{logs}");
    assert!(
        logs.to_lowercase().contains("authentication"),
        "the refusal is named: {logs}"
    );
    assert!(
        !logs.contains(wrong) && !logs.contains("a-revoked-token"),
        "the token is in the logs"
    );
    Ok(())
}

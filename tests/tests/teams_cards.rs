//! Every card Baton posts to Teams, rendered by Microsoft's `adaptivecards` library in headless
//! Chromium: the cards are the ones Baton really sent to the stand-in during runs that were
//! pending, approved, running, failed, aborted, denied and succeeded (and the card of an invoke
//! response). Any renderer warning or error fails the test. Screenshots are written to
//! `target/tmp/teams-cards/` (the running one is `docs/teams-card-running.png`).

use baton_e2e::teams::cards::{self, RenderOptions};
use baton_e2e::teams::{ActivityState, TeamsUser};
use baton_e2e::teams_bot::{BotOptions, TeamsBot};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn state_of(card: &Value) -> String {
    card["body"][0]["items"][1]["inlines"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn title_of(card: &Value) -> String {
    card["body"][0]["items"][0]["inlines"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The card message of run `n`, once it shows a state starting `state`.
async fn card_in_state(bot: &TeamsBot, n: usize, state: &str) -> ActivityState {
    let title = format!("#{n} XMPP federation");
    bot.teams
        .connector()
        .wait_for_activity(
            |a| {
                a.adaptive_cards()
                    .first()
                    .is_some_and(|c| title_of(c).starts_with(&title) && state_of(c).starts_with(state))
            },
            T,
        )
        .await
        .unwrap_or_else(|e| panic!("card {n} never showed {state}: {e}"))
}

fn plan_of(card: &ActivityState) -> String {
    card.versions[0]["attachments"][0]["content"]["actions"][0]["data"]["plan"]
        .as_str()
        .expect("the first version has buttons")
        .to_string()
}

async fn say(bot: &TeamsBot, who: &str, text: &str) {
    let m = bot.teams.message(&TeamsUser::new(who), text).build();
    let r = bot.teams.send(&bot.endpoint, &m).await.expect("the bot answers");
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_card_state_renders_cleanly_in_the_real_renderer() -> anyhow::Result<()> {
    let bot = TeamsBot::start(BotOptions {
        delay: Duration::from_millis(400),
        // Run 1 fails where the route would move (step 3), so runs 2 and 3 are the same
        // failover again; a run that had moved the route would make it a failback.
        failures: vec!["route.set@mgmt1:1".into()],
        ..Default::default()
    })
    .await?;
    let teams = &bot.teams;
    let mut cards: Vec<(String, Value)> = Vec::new();

    // Run 1: pending, then approved and running, then failed at step 3; aborted.
    say(&bot, "alice", "!failover xmpp EdgePool2 pool 1 lost power in DC1").await;
    let c1 = card_in_state(&bot, 1, "pending approval").await;
    cards.push(("pending".into(), c1.adaptive_cards()[0].clone()));
    let click = teams.execute_action(
        &TeamsUser::new("bob"),
        &c1,
        "approve",
        json!({"run": "1", "plan": plan_of(&c1)}),
    );
    let reply = teams.send(&bot.endpoint, &click).await?;
    cards.push((
        "approved".into(),
        reply.invoke_value().expect("the card in the invoke response").clone(),
    ));
    let running = card_in_state(&bot, 1, "running").await;
    cards.push(("running".into(), running.adaptive_cards()[0].clone()));
    let failed = card_in_state(&bot, 1, "failed").await;
    cards.push(("failed".into(), failed.adaptive_cards()[0].clone()));
    say(&bot, "alice", "!abort 1 giving up").await;
    let aborted = card_in_state(&bot, 1, "aborted").await;
    cards.push(("aborted".into(), aborted.adaptive_cards()[0].clone()));

    // Run 2: denied.
    say(&bot, "alice", "!failover xmpp EdgePool2 again").await;
    let c2 = card_in_state(&bot, 2, "pending approval").await;
    let click = teams.execute_action(
        &TeamsUser::new("carol"),
        &c2,
        "deny",
        json!({"run": "2", "plan": plan_of(&c2)}),
    );
    teams.send(&bot.endpoint, &click).await?;
    let denied = card_in_state(&bot, 2, "denied").await;
    cards.push(("denied".into(), denied.adaptive_cards()[0].clone()));

    // Run 3: succeeded.
    say(&bot, "alice", "!failover xmpp EdgePool2 third time").await;
    let c3 = card_in_state(&bot, 3, "pending approval").await;
    let click = teams.execute_action(
        &TeamsUser::new("bob"),
        &c3,
        "approve",
        json!({"run": "3", "plan": plan_of(&c3)}),
    );
    teams.send(&bot.endpoint, &click).await?;
    let done = card_in_state(&bot, 3, "succeeded").await;
    cards.push(("succeeded".into(), done.adaptive_cards()[0].clone()));

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("teams-cards");
    std::fs::create_dir_all(&dir)?;
    let mut files = Vec::new();
    for (name, card) in &cards {
        let path = dir.join(format!("card-{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(card)?)?;
        files.push(path);
    }
    let options = RenderOptions {
        screenshots: Some(dir.clone()),
        ..RenderOptions::default()
    };
    let reports = cards::check_cards(&files, &options).await?.reports()?;
    cards::assert_clean(&reports)?;
    assert_eq!(reports.len(), cards.len());
    for (report, (name, _)) in reports.iter().zip(&cards) {
        assert!(
            report.text.contains("XMPP federation EdgePool1 -> EdgePool2"),
            "{name}: {}",
            report.text
        );
        let buttons: Vec<&str> = report.actions.iter().filter_map(|a| a.title.as_deref()).collect();
        match name.as_str() {
            "pending" => assert_eq!(buttons, ["Approve", "Deny"], "{name}"),
            _ => assert!(buttons.is_empty(), "{name}: {buttons:?}"),
        }
    }
    let text = |name: &str| &reports[cards.iter().position(|(n, _)| n == name).expect("rendered")].text;
    assert!(text("pending").contains("pool 1 lost power in DC1"));
    assert!(text("failed").contains("FAILED"), "{}", text("failed"));
    assert!(text("succeeded").contains("approved by bob"));
    println!("screenshots in {}", dir.display());
    bot.stop().await
}

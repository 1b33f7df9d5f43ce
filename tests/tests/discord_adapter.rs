//! Baton's Discord adapter against the Discord stand-in, the production way (HTTPS, serenity's
//! ratelimiter on), with the daemon, the store and the simulated executor in this process: a
//! run by buttons (self-approval and a person without rights refused to the clicker alone, the
//! buttons left; the approval taking them away), the card edited in place as steps end, the
//! summary posted as a new message, `!status` answered; messages from anywhere else changing
//! nothing; a dropped gateway resumed with every update once and in order; a lost answer
//! retried without a duplicate; clicks on an expired, denied or re-planned run refused with the
//! reason; slow decisions deferred then answered; mentions and quoted text made safe.

use baton::chat::{ChatAdapter, Mention, Outbound, Rich, RoomRef};
use baton_e2e::discord::{CallFilter, Delivery, DropMode, Fault, State, StoredMessage, intents};
use baton_e2e::discord_bot::{
    ALICE, ALICE_DM, AUDIT, BOB, CAROL, DiscordBaton, INCIDENTS, MALLORY, OTHERBOT, Options, RANDOM, WAIT,
    bot_messages, card, ephemeral_for, lines, step_fields,
};
use baton_policies::{Identity, Platform};
use serde_json::{Value, json};
use std::time::Duration;

const POST: &str = "POST /channels/{channel_id}/messages";
const EDIT: &str = "PATCH /channels/{channel_id}/messages/{message_id}";

/// The custom ids of a stored message's buttons.
fn button_ids(m: &StoredMessage) -> Vec<String> {
    m.buttons().into_iter().filter_map(|b| b.custom_id).collect()
}

/// The plan hash a plan message shows.
fn shown_hash(content: &str) -> String {
    content
        .split("Plan (sha256 ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no plan hash in {content}"))
        .to_string()
}

/// Waits for the card of `run` in `channel`.
async fn card_of(bot: &DiscordBaton, channel: u64, run: u64) -> StoredMessage {
    bot.discord
        .wait_until(&format!("the card of #{run} in {channel}"), WAIT, |s| {
            card(s, channel, run)
        })
        .await
        .expect("the card is posted")
}

/// Waits for a plain line in `channel` starting with `prefix`.
async fn line(bot: &DiscordBaton, channel: u64, prefix: &str) -> String {
    bot.discord
        .wait_until(&format!("a line starting {prefix:?}"), WAIT, |s| {
            lines(s, channel).into_iter().find(|l| l.starts_with(prefix))
        })
        .await
        .expect("the line is posted")
}

/// `user` clicks `custom_id` on message `message`; returns the callback Discord accepted.
async fn click(bot: &DiscordBaton, message: u64, custom_id: &str, user: u64) -> (u64, Value) {
    let clicked = bot
        .discord
        .click(message, custom_id, user)
        .expect("the button is there");
    assert!(
        matches!(clicked.delivery, Delivery::Sent { .. }),
        "{:?}",
        clicked.delivery
    );
    let accepted = bot
        .discord
        .wait_until("the click's answer", WAIT, |s| {
            s.interaction(clicked.interaction_id)?.accepted().cloned()
        })
        .await
        .expect("the click is answered");
    (
        clicked.interaction_id,
        accepted.body.expect("an accepted callback has a body"),
    )
}

/// How many steps a card version shows as done.
fn done(version: &Value) -> usize {
    step_fields(version).iter().filter(|f| f.starts_with('✅')).count()
}

fn calls_of(s: &State, route: &str) -> Vec<baton_e2e::discord::Call> {
    s.calls().iter().filter(|c| c.route == Some(route)).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_by_buttons_with_refusals_to_the_clicker_a_live_card_and_a_summary() {
    let bot = DiscordBaton::start(Options {
        delay: Duration::from_millis(300),
        ..Options::default()
    })
    .await
    .expect("Baton starts on the stand-in");
    let d = &bot.discord;
    d.post_user_message(
        INCIDENTS,
        ALICE,
        "!failover xmpp EdgePool2 pool *1* lost @everyone <@2>",
    )
    .expect("alice writes");
    let plan = card_of(&bot, INCIDENTS, 1).await;
    let content = plan.content().to_string();
    assert!(
        content.starts_with("Run #1 requested by alice: move XMPP federation EdgePool1 -> EdgePool2"),
        "{content}"
    );
    assert!(
        content.contains("Reason: pool \\*1\\* lost \\@everyone \\<\\@2\\>"),
        "{content}"
    );
    let hash = shown_hash(&content);
    assert_eq!(
        button_ids(&plan),
        [format!("approve:1:{hash}"), format!("deny:1:{hash}")]
    );
    // Nobody is pinged by what alice typed: only the approvers Baton calls on purpose.
    assert_eq!(plan.json["mention_everyone"], false);
    let pinged: Vec<&str> = plan.json["mentions"]
        .as_array()
        .map(|m| m.iter().filter_map(|u| u["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(pinged, ["2", "3"], "bob and carol, called as approvers");
    assert!(content.ends_with("Asking <@2> and <@3>."), "{content}");
    let posted = d.read(|s| calls_of(s, POST))[0].body.clone().expect("a JSON body");
    assert_eq!(posted["allowed_mentions"]["parse"], json!([]));
    assert_eq!(posted["enforce_nonce"], true);
    assert_eq!(
        posted["embeds"][0]["title"],
        "#1 XMPP federation EdgePool1 -> EdgePool2"
    );
    // The mirror gets the card too, without buttons.
    let mirrored = card_of(&bot, AUDIT, 1).await;
    assert!(mirrored.buttons().is_empty(), "{:?}", mirrored.json["components"]);

    // alice may not approve her own request: she alone is told, and the buttons stay.
    let approve = format!("approve:1:{hash}");
    let (_, answer) = click(&bot, plan.id, &approve, ALICE).await;
    assert_eq!(
        (answer["type"].as_u64(), answer["data"]["flags"].as_u64()),
        (Some(4), Some(64))
    );
    let said = answer["data"]["content"].as_str().unwrap_or_default();
    assert!(
        said.contains("you requested this; another person must approve it"),
        "{said}"
    );
    // mallory has no rights.
    let (_, answer) = click(&bot, plan.id, &approve, MALLORY).await;
    assert_eq!(answer["data"]["flags"], 64);
    assert!(
        answer["data"]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("mallory may not approve"),
        "{answer}"
    );
    assert_eq!(
        button_ids(&d.message(plan.id).expect("kept")).len(),
        2,
        "the buttons stay"
    );
    assert_eq!(d.read(|s| ephemeral_for(s, ALICE)).len(), 1);
    assert_eq!(d.read(|s| ephemeral_for(s, MALLORY)).len(), 1);
    assert!(d.read(|s| ephemeral_for(s, BOB)).is_empty());

    // bob approves: the card loses its buttons in the answer to his click.
    let (_, answer) = click(&bot, plan.id, &approve, BOB).await;
    assert_eq!(answer["type"], 7, "{answer}");
    assert_eq!(answer["data"]["components"], json!([]));
    assert!(d.message(plan.id).expect("kept").buttons().is_empty());
    line(&bot, INCIDENTS, "#1 approved by bob").await;

    // carol asks mid-run.
    d.post_user_message(INCIDENTS, CAROL, "!status 1")
        .expect("carol writes");
    let status = line(&bot, INCIDENTS, "#1 running, step").await;
    assert!(status.contains("approved by bob"), "{status}");

    let summary = line(&bot, INCIDENTS, "#1 succeeded").await;
    assert!(summary.contains("XMPP federation now served by EdgePool2"), "{summary}");
    let finished = d
        .wait_until("the card showing every step done", WAIT, |s| {
            card(s, INCIDENTS, 1).filter(|c| done(&c.json) == 8)
        })
        .await
        .expect("the card ends done");
    assert_eq!(finished.json["embeds"][0]["color"], 0x2ECC71);
    // Edited in place, step by step, never going back.
    assert!(finished.history.len() >= 3, "{} edits", finished.history.len());
    let mut versions: Vec<&Value> = finished.history.iter().collect();
    versions.push(&finished.json);
    let progress: Vec<usize> = versions.iter().map(|v| done(v)).collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    // Lines: the approval, the answer, the summary; progress shows on the card alone.
    let said = d.read(|s| lines(s, INCIDENTS));
    assert_eq!(said.len(), 3, "{said:#?}");
    assert!(
        said[0].starts_with("#1 approved by bob") && said[2].starts_with("#1 succeeded"),
        "{said:#?}"
    );
    assert!(said.iter().all(|l| !l.starts_with("#1 [")), "{said:#?}");
    // The mirror: every run message, no answer to carol.
    let mirror = d.read(|s| lines(s, AUDIT));
    assert!(mirror.iter().any(|l| l.starts_with("#1 succeeded")), "{mirror:#?}");
    assert!(mirror.iter().all(|l| !l.starts_with("#1 running")), "{mirror:#?}");
    // serenity's ratelimiter kept within Discord's limits.
    assert!(d.read(|s| s.calls().iter().all(|c| c.status != 429)));
    bot.stop().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_anywhere_else_change_nothing() {
    let bot = DiscordBaton::start(Options::default()).await.expect("starts");
    let d = &bot.discord;
    // Baton asks for guilds, guild messages and their content, nothing more (DMs included).
    let asked = d.read(|s| s.identifies().iter().map(|i| i.intents).collect::<Vec<_>>());
    assert_eq!(
        asked,
        [Some(intents::BATON)],
        "GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT"
    );
    let command = "!failover xmpp EdgePool2 from the wrong place";
    // A DM: Discord does not send it without the DIRECT_MESSAGES intent; sent anyway, it is
    // ignored.
    let dm = d
        .post_user_message(ALICE_DM, ALICE, command)
        .expect("alice writes to the bot");
    assert_eq!(dm.delivery, Delivery::Filtered);
    let raw = d.message(dm.message_id).expect("stored").json;
    assert!(matches!(d.dispatch_raw("MESSAGE_CREATE", raw), Delivery::Sent { .. }));
    for sent in [
        d.post_user_message(INCIDENTS, OTHERBOT, command),
        d.post_webhook_message(INCIDENTS, 777, "alerts", command),
        d.post_user_message(RANDOM, ALICE, command),
        d.post_user_message(AUDIT, ALICE, command),
        d.post_user_message(INCIDENTS, ALICE, "hello, is anyone on call?"),
    ] {
        assert!(matches!(sent.expect("posted").delivery, Delivery::Sent { .. }));
    }
    d.post_user_message(INCIDENTS, CAROL, "!runs").expect("carol writes");
    line(&bot, INCIDENTS, "No runs yet.").await;
    let everything = d.read(|s| {
        [INCIDENTS, RANDOM, AUDIT, ALICE_DM]
            .iter()
            .flat_map(|c| bot_messages(s, *c))
            .map(|m| m.content().to_string())
            .collect::<Vec<_>>()
    });
    assert_eq!(everything, ["No runs yet."]);
    assert!(bot.journal_kinds().is_empty(), "{:?}", bot.journal_kinds());
    assert!(bot.handled().is_empty(), "{:?}", bot.handled());
    bot.stop().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_gateway_resumes_and_every_update_arrives_once_in_order() {
    let bot = DiscordBaton::start(Options {
        delay: Duration::from_millis(500),
        ..Options::default()
    })
    .await
    .expect("starts");
    let d = &bot.discord;
    d.post_user_message(INCIDENTS, ALICE, "!failover xmpp EdgePool2")
        .expect("alice writes");
    let plan = card_of(&bot, INCIDENTS, 1).await;
    let hash = shown_hash(plan.content());
    click(&bot, plan.id, &format!("approve:1:{hash}"), BOB).await;
    d.wait_until("step 2 done", WAIT, |s| {
        card(s, INCIDENTS, 1).filter(|c| done(&c.json) >= 2)
    })
    .await
    .expect("the run goes on");
    // The connection drops; carol asks while Baton is away.
    d.hold_gateway(true);
    assert!(d.drop_gateway(DropMode::Tcp));
    let asked = d
        .post_user_message(INCIDENTS, CAROL, "!status 1")
        .expect("carol writes");
    assert!(
        matches!(asked.delivery, Delivery::Buffered { .. }),
        "{:?}",
        asked.delivery
    );
    d.hold_gateway(false);
    d.wait_until("a resume", WAIT, |s| {
        s.resumes().iter().find(|r| r.replayed.is_some()).cloned()
    })
    .await
    .expect("serenity resumes");
    let status = line(&bot, INCIDENTS, "#1 running, step").await;
    assert!(status.contains("requested"), "{status}");
    line(&bot, INCIDENTS, "#1 succeeded").await;
    d.wait_until("the card done", WAIT, |s| {
        card(s, INCIDENTS, 1).filter(|c| done(&c.json) == 8)
    })
    .await
    .expect("the card ends done");
    let said = d.read(|s| lines(s, INCIDENTS));
    assert_eq!(said.len(), 3, "each line once: {said:#?}");
    assert!(said[0].starts_with("#1 approved by bob"), "{said:#?}");
    assert!(said[1].starts_with("#1 running, step"), "{said:#?}");
    assert!(said[2].starts_with("#1 succeeded"), "{said:#?}");
    let last = d.message(plan.id).expect("kept");
    let mut versions: Vec<&Value> = last.history.iter().collect();
    versions.push(&last.json);
    let progress: Vec<usize> = versions.iter().map(|v| done(v)).collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "in order: {progress:?}");
    assert!(bot.link.borrow().sessions >= 2, "{:?}", *bot.link.borrow());
    bot.stop().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_retried_without_posting_twice() {
    let bot = DiscordBaton::start(Options::default()).await.expect("starts");
    let d = &bot.discord;
    d.inject(
        Fault::LostAnswer(502),
        CallFilter::matching("POST", "/channels/200/messages"),
        1,
    );
    d.post_user_message(INCIDENTS, ALICE, "!failover xmpp EdgePool2")
        .expect("alice writes");
    let plan = card_of(&bot, INCIDENTS, 1).await;
    let posts = d
        .wait_until("the retry", WAIT, |s| {
            let p: Vec<_> = calls_of(s, POST)
                .into_iter()
                .filter(|c| c.path == "/api/v10/channels/200/messages")
                .collect();
            (p.len() >= 2 && p[1].status == 200).then_some(p)
        })
        .await
        .expect("the post is tried again");
    assert_eq!((posts[0].status, posts[1].status), (502, 200));
    assert_eq!(
        posts[0].body.as_ref().map(|b| b["nonce"].clone()),
        posts[1].body.as_ref().map(|b| b["nonce"].clone()),
        "the same nonce"
    );
    assert_eq!(
        posts[1].response.as_ref().map(|r| r["id"].clone()),
        Some(json!(plan.id.to_string()))
    );
    // The card's later edits go to that one message.
    let hash = shown_hash(plan.content());
    click(&bot, plan.id, &format!("deny:1:{hash}"), BOB).await;
    line(&bot, INCIDENTS, "#1 denied by bob").await;
    let cards = d.read(|s| {
        bot_messages(s, INCIDENTS)
            .into_iter()
            .filter(|m| m.json["embeds"].as_array().is_some_and(|e| !e.is_empty()))
            .count()
    });
    assert_eq!(cards, 1, "one card");
    bot.stop().await.expect("stops cleanly");
}

/// Holds the next edit of `message` for `hold` (a 429 that serenity waits out), and waits until
/// the edit was tried.
fn hold_edits_of(bot: &DiscordBaton, message: u64, hold: Duration) {
    bot.discord.inject(
        Fault::RateLimited {
            retry_after: hold,
            global: false,
        },
        CallFilter::matching("PATCH", &format!("/channels/{INCIDENTS}/messages/{message}")),
        1,
    );
}

async fn edit_held(bot: &DiscordBaton, message: u64) {
    bot.discord
        .wait_until("the held edit", WAIT, |s| {
            calls_of(s, EDIT)
                .into_iter()
                .find(|c| c.status == 429 && c.path.ends_with(&message.to_string()))
        })
        .await
        .expect("the card edit is tried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_on_an_expired_request_is_refused_with_the_reason() {
    let bot = DiscordBaton::start(Options {
        expiry: Some(Duration::from_secs(2)),
        ..Options::default()
    })
    .await
    .expect("starts");
    d_request(&bot).await;
    let plan = card_of(&bot, INCIDENTS, 1).await;
    hold_edits_of(&bot, plan.id, Duration::from_secs(4));
    line(&bot, INCIDENTS, "#1 expired").await;
    edit_held(&bot, plan.id).await;
    let hash = shown_hash(plan.content());
    let (_, answer) = click(&bot, plan.id, &format!("approve:1:{hash}"), BOB).await;
    assert_eq!(answer["data"]["flags"], 64);
    assert_eq!(answer["data"]["content"], "#1 is expired, not waiting for approval.");
    bot.discord
        .wait_until("the buttons gone", WAIT, |s| {
            s.message(plan.id).filter(|m| m.buttons().is_empty()).cloned()
        })
        .await
        .expect("the held edit lands");
    assert!(
        !bot.journal_kinds().contains(&"approved".to_string()),
        "{:?}",
        bot.journal_kinds()
    );
    bot.stop().await.expect("stops cleanly");
}

async fn d_request(bot: &DiscordBaton) {
    bot.discord
        .post_user_message(INCIDENTS, ALICE, "!failover xmpp EdgePool2")
        .expect("alice writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_on_a_denied_request_is_refused_with_the_reason() {
    let bot = DiscordBaton::start(Options::default()).await.expect("starts");
    d_request(&bot).await;
    let plan = card_of(&bot, INCIDENTS, 1).await;
    hold_edits_of(&bot, plan.id, Duration::from_secs(4));
    bot.discord
        .post_user_message(INCIDENTS, CAROL, "!deny 1 wrong pool")
        .expect("carol writes");
    line(&bot, INCIDENTS, "#1 denied by carol: wrong pool").await;
    edit_held(&bot, plan.id).await;
    let hash = shown_hash(plan.content());
    let (_, answer) = click(&bot, plan.id, &format!("approve:1:{hash}"), BOB).await;
    assert_eq!(answer["data"]["flags"], 64);
    assert_eq!(answer["data"]["content"], "#1 is denied, not waiting for approval.");
    bot.stop().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_on_a_changed_plan_is_refused_and_the_new_buttons_work() {
    let bot = DiscordBaton::start(Options::default()).await.expect("starts");
    let d = &bot.discord;
    d_request(&bot).await;
    let plan = card_of(&bot, INCIDENTS, 1).await;
    let old = shown_hash(plan.content());
    hold_edits_of(&bot, plan.id, Duration::from_secs(4));
    bot.reload(|text| {
        text.replace(
            "external_address = \"203.0.113.20\"",
            "external_address = \"203.0.113.21\"",
        )
    })
    .await
    .expect("reloads");
    let changed = line(&bot, INCIDENTS, "Run #1: the inventory changed").await;
    let new = changed
        .split("New plan (sha256 ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .expect("the new hash")
        .to_string();
    assert_ne!(new, old);
    edit_held(&bot, plan.id).await;
    let (_, answer) = click(&bot, plan.id, &format!("approve:1:{old}"), BOB).await;
    assert_eq!(answer["data"]["flags"], 64);
    let said = answer["data"]["content"].as_str().unwrap_or_default();
    assert!(
        said.contains(&format!("the plan of #1 is now sha256 {new}, not the {old} you named")),
        "{said}"
    );
    // Once the held edit lands, the buttons carry the new plan, and they work.
    let updated = d
        .wait_until("the new buttons", WAIT, |s| {
            s.message(plan.id)
                .filter(|m| button_ids(m).contains(&format!("approve:1:{new}")))
                .cloned()
        })
        .await
        .expect("the card shows the new plan");
    assert_eq!(
        button_ids(&updated),
        [format!("approve:1:{new}"), format!("deny:1:{new}")]
    );
    let (_, answer) = click(&bot, plan.id, &format!("approve:1:{new}"), BOB).await;
    assert_eq!(answer["type"], 7, "{answer}");
    line(&bot, INCIDENTS, "#1 approved by bob").await;
    bot.stop().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_decisions_are_deferred_then_answered() {
    let bot = DiscordBaton::start(Options {
        answer_within: Some(Duration::ZERO),
        ..Options::default()
    })
    .await
    .expect("starts");
    let d = &bot.discord;
    d_request(&bot).await;
    let plan = card_of(&bot, INCIDENTS, 1).await;
    let approve = format!("approve:1:{}", shown_hash(plan.content()));
    let (refused, answer) = click(&bot, plan.id, &approve, ALICE).await;
    assert_eq!(answer["type"], 6, "deferred: {answer}");
    let told = d
        .wait_until("the follow-up", WAIT, |s| ephemeral_for(s, ALICE).into_iter().next())
        .await
        .expect("alice is told later");
    assert!(told.contains("you requested this"), "{told}");
    assert_eq!(d.interaction(refused).expect("recorded").followups.len(), 1);
    assert_eq!(
        button_ids(&d.message(plan.id).expect("kept")).len(),
        2,
        "the buttons stay"
    );
    let (_, answer) = click(&bot, plan.id, &approve, BOB).await;
    assert_eq!(answer["type"], 6, "deferred: {answer}");
    let original = d
        .wait_for_call("the card through @original", WAIT, |c| {
            c.route == Some("PATCH /webhooks/{application_id}/{token}/messages/@original")
        })
        .await
        .expect("the card is updated later");
    assert_eq!(original.status, 200);
    assert_eq!(original.body.expect("a body")["components"], json!([]));
    line(&bot, INCIDENTS, "#1 approved by bob").await;
    bot.stop().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mentions_ping_only_the_people_meant_and_long_lines_are_split() {
    let bot = DiscordBaton::start(Options::default()).await.expect("starts");
    let d = &bot.discord;
    let bob = Mention {
        person: "bob".into(),
        identities: vec![
            Identity::parse("xmpp:bob@contoso.com").expect("valid"),
            Identity::parse("discord:2").expect("valid"),
        ],
    };
    let dave = Mention {
        person: "dave".into(),
        identities: vec![Identity::parse("xmpp:dave@contoso.com").expect("valid")],
    };
    let body = Rich::from("Waiting for ")
        .mention(bob)
        .text(" or ")
        .mention(dave)
        .text(". Reason: ")
        .quoted("@everyone <@3> **now**");
    let out = |id: i64, room: &str, body: Rich| Outbound {
        id,
        room: RoomRef::new(Platform::Discord, room),
        run: None,
        body,
        card: None,
        edit: None,
    };
    let delivered = bot.adapter.deliver(&out(-7, "200", body)).await.expect("delivered");
    let id: u64 = delivered
        .reference
        .expect("a message id")
        .0
        .parse()
        .expect("a snowflake");
    let m = d.message(id).expect("stored");
    assert_eq!(
        m.content(),
        "Waiting for <@2> or dave. Reason: \\@everyone \\<\\@3\\> \\*\\*now\\*\\*"
    );
    let pinged: Vec<&str> = m.json["mentions"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|u| u["id"].as_str())
        .collect();
    assert_eq!(pinged, ["2"], "bob alone");
    assert_eq!(m.json["mention_everyone"], false);
    // A line over 2000 characters goes as several messages, cut between lines.
    let long: String = (0..60).map(|i| format!("line {i:02} {}\n", "x".repeat(60))).collect();
    let before = d.read(|s| bot_messages(s, INCIDENTS).len());
    bot.adapter
        .deliver(&out(-8, "200", Rich::from(long.clone())))
        .await
        .expect("delivered");
    let parts: Vec<String> = d.read(|s| {
        bot_messages(s, INCIDENTS)[before..]
            .iter()
            .map(|m| m.content().to_string())
            .collect()
    });
    assert_eq!(
        parts.len(),
        3,
        "{:?}",
        parts.iter().map(|p| p.chars().count()).collect::<Vec<_>>()
    );
    assert!(parts.iter().all(|p| p.chars().count() <= 2000));
    assert_eq!(parts.join("\n"), long.trim_end());
    // Rooms that are not Discord channels, or do not exist, are refused for good.
    for room in ["incident", "999"] {
        let refused = bot.adapter.deliver(&out(-9, room, Rich::from("x"))).await;
        assert!(
            matches!(refused, Err(baton::chat::DeliveryError::Permanent { .. })),
            "{room}: {refused:?}"
        );
    }
    bot.stop().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_card_is_posted_again_and_edited_from_then_on() {
    let bot = DiscordBaton::start(Options::default()).await.expect("starts");
    let d = &bot.discord;
    d_request(&bot).await;
    let plan = card_of(&bot, INCIDENTS, 1).await;
    let hash = shown_hash(plan.content());
    // A moderator deletes the card.
    let deleted = reqwest::Client::new()
        .delete(format!(
            "{}/api/v10/channels/{INCIDENTS}/messages/{}",
            d.http_base(),
            plan.id
        ))
        .header("authorization", format!("Bot {}", baton_e2e::discord_bot::TOKEN))
        .header("user-agent", "DiscordBot (https://example.invalid, 1.0)")
        .send()
        .await
        .expect("the stand-in answers");
    assert_eq!(deleted.status().as_u16(), 204);
    d.post_user_message(INCIDENTS, BOB, &format!("!approve 1 {hash}"))
        .expect("bob writes");
    line(&bot, INCIDENTS, "#1 succeeded").await;
    let again = d
        .wait_until("a new card, done", WAIT, |s| {
            card(s, INCIDENTS, 1).filter(|c| c.id != plan.id && done(&c.json) == 8)
        })
        .await
        .expect("the card is posted again");
    assert!(again.buttons().is_empty());
    let refused_edit = d.read(|s| {
        calls_of(s, EDIT)
            .into_iter()
            .any(|c| c.status == 404 && c.path.ends_with(&plan.id.to_string()))
    });
    assert!(refused_edit, "the edit of the deleted card was refused");
    bot.stop().await.expect("stops cleanly");
}

/// The request calls the approvers with real mentions that ping them and only them: `<@id>` in
/// the content and `allowed_mentions` naming exactly bob's and carol's ids (never alice, who
/// asked, nor mallory, who may not approve); Discord then pings those two. Discord cannot tell
/// Baton who reads a channel, so every approver with a Discord identity is called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_pings_the_approvers_and_nobody_else() {
    let bot = DiscordBaton::start(Options {
        mirrors: false,
        ..Options::default()
    })
    .await
    .expect("starts");
    bot.discord
        .post_user_message(INCIDENTS, ALICE, "!failover xmpp EdgePool2 dc1 down <@5> @everyone")
        .expect("posted");
    let plan = card_of(&bot, INCIDENTS, 1).await;
    assert!(
        plan.content().ends_with(&format!("Asking <@{BOB}> and <@{CAROL}>.")),
        "{}",
        plan.content()
    );
    let pinged: Vec<u64> = plan.json["mentions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|u| u["id"].as_str()?.parse().ok())
        .collect();
    assert_eq!(pinged, [BOB, CAROL], "{:#}", plan.json);
    assert_eq!(plan.json["mention_everyone"], false);
    let posts = bot.discord.read(|s| calls_of(s, POST));
    let request = posts
        .iter()
        .filter_map(|c| c.body.as_ref())
        .find(|b| b["content"].as_str().is_some_and(|t| t.starts_with("Run #1 requested")))
        .expect("the request was posted");
    let allowed = &request["allowed_mentions"];
    let users: Vec<String> = allowed["users"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|u| u.as_str().map_or_else(|| u.to_string(), str::to_string))
        .collect();
    assert_eq!(users, [BOB.to_string(), CAROL.to_string()], "{allowed}");
    assert!(
        allowed["parse"].as_array().is_none_or(|p| p.is_empty()),
        "nothing parsed from the text pings: {allowed}"
    );
    // The next message about the run pings nobody.
    bot.discord
        .post_user_message(INCIDENTS, BOB, "!approve 1")
        .expect("posted");
    let approved = line(&bot, INCIDENTS, "#1 approved by bob").await;
    assert!(!approved.contains("<@"), "{approved}");
    bot.stop().await.expect("stops cleanly");
}

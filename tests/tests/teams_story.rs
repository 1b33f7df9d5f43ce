//! The user's story in a Teams channel through the whole of Baton: `baton run` on the full stack
//! (real agents over mutual TLS, BIND9, the federation probe) with its Teams adapter talking to
//! the Teams stand-in. The request as a card, refused clicks answered to the clicker alone, the
//! approval by card, the card updated per step, a status question answered in the thread, the
//! final card; one person on two platforms (XMPP and a mirrored Teams card) counted once; Teams
//! unreachable in the middle of a run, and nothing lost; and no secret in any log, error or
//! chat message.

use baton_e2e::baton::Baton;
use baton_e2e::prosody::INCIDENT_ROOM;
use baton_e2e::room::Follower;
use baton_e2e::stack::{POOL2_ADDRESS, Stack, StackOptions};
use baton_e2e::teams::{ActivityState, Auth, BadToken, CallKind, Channel, Fault, TeamsConfig, TeamsStandIn, Times};
use baton_e2e::teams_bot::{free_port, stack_teams, wait_for_endpoint};
use baton_e2e::xmpp_client::JoinHistory;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::time::Duration;

/// The longest any single wait may take (a whole run with delays fits well within it).
const T: Duration = Duration::from_secs(60);

struct TeamsStack {
    teams: TeamsStandIn,
    stack: Stack,
    bot: Baton,
    endpoint: String,
    mirror: Option<Channel>,
}

/// The stand-in, then the full stack with Teams (and XMPP rooms when asked), then `baton run`.
async fn start(sim_args: &[&str], xmpp_chat: bool, mirror: bool, log: Option<&str>) -> anyhow::Result<TeamsStack> {
    let teams = TeamsStandIn::start(TeamsConfig::default()).await?;
    let mirror = mirror.then(|| teams.add_channel("Contoso Ops", "Audit"));
    let listen = free_port()?;
    let options = StackOptions {
        xmpp_chat,
        sim_args: sim_args.iter().map(|a| a.to_string()).collect(),
        teams: Some(stack_teams(&teams, listen, &[], mirror.as_ref())),
        ..StackOptions::default()
    };
    let stack = tokio::task::block_in_place(|| Stack::start(options))?;
    let bot = tokio::task::block_in_place(|| match log {
        Some(filter) => stack.start_bot_logging(filter),
        None => stack.start_bot(),
    })?;
    let endpoint = format!("http://{listen}/api/messages");
    wait_for_endpoint(&teams, &endpoint, &TeamsUserOf::new("carol"), T).await?;
    Ok(TeamsStack {
        teams,
        stack,
        bot,
        endpoint,
        mirror,
    })
}

use baton_e2e::teams::TeamsUser as TeamsUserOf;

fn user(name: &str) -> TeamsUserOf {
    TeamsUserOf::new(name)
}

fn plan_of(card: &ActivityState) -> String {
    card.adaptive_cards()[0]["actions"][0]["data"]["plan"]
        .as_str()
        .expect("the Approve button carries the plan")
        .to_string()
}

/// The state column of a card's grid, row by row.
fn marks(card: &Value) -> Vec<String> {
    let Some(table) = card["body"]
        .as_array()
        .and_then(|b| b.iter().find(|e| e["type"] == "Table"))
    else {
        return Vec::new();
    };
    table["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .skip(1)
                .map(|r| {
                    r["cells"][3]["items"][0]["inlines"][0]["text"]
                        .as_str()
                        .unwrap_or("?")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn oks(card: &Value) -> usize {
    marks(card).iter().filter(|m| *m == "ok").count()
}

/// Waits for a successfully posted text containing `needle`, returns it.
async fn said(teams: &TeamsStandIn, needle: &str) -> String {
    let needle = needle.to_string();
    teams
        .connector()
        .wait_for(
            |calls| {
                calls
                    .iter()
                    .filter(|c| c.succeeded())
                    .find_map(|c| c.text().filter(|t| t.contains(&needle)).map(str::to_string))
            },
            T,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The texts Baton got posted, in order.
fn posted_texts(teams: &TeamsStandIn) -> Vec<String> {
    teams
        .connector()
        .calls()
        .iter()
        .filter(|c| c.succeeded())
        .filter_map(|c| c.text().map(str::to_string))
        .collect()
}

fn invoke_text(reply: &baton_e2e::teams::BotReply) -> String {
    assert_eq!(
        reply.invoke_type(),
        Some("application/vnd.microsoft.activity.message"),
        "{}",
        reply.text
    );
    reply
        .invoke_value()
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_story_in_a_teams_channel() -> anyhow::Result<()> {
    // Each simulated Lync action takes 1.2 s: the run lasts long enough for several card edits
    // (one per second at most) and a question in the middle.
    let s = start(&["--delay-ms", "1200"], false, false, None).await?;
    let teams = &s.teams;
    let (alice, bob, mallory) = (user("alice"), user("bob"), user("mallory"));

    let request = teams
        .message(&alice, "!failover xmpp EdgePool2 pool 1 lost power in DC1")
        .build();
    let root = request["id"].as_str().expect("an id").to_string();
    assert_eq!(teams.send(&s.endpoint, &request).await?.status, 200);
    let card = teams
        .connector()
        .wait_for_activity(|a| !a.adaptive_cards().is_empty(), T)
        .await?;
    assert_eq!(
        card.conversation_id,
        request["conversation"]["id"].as_str().expect("an id"),
        "the card is in the thread"
    );
    let content = card.adaptive_cards()[0].clone();
    let shown = content.to_string();
    for needed in [
        "#1 XMPP federation EdgePool1 -> EdgePool2",
        "pending approval",
        "pool 1 lost power in DC1",
        "Stop-CsWindowsService",
        "edge2a",
        "edge2b",
        "Set-CsSite",
        "xmpp.contoso.test",
        "requested by alice",
        "expires at",
    ] {
        assert!(shown.contains(needed), "{needed} on the card: {shown}");
    }
    let plan = plan_of(&card);
    assert!(shown.contains(&format!("plan sha256 {plan}")), "{shown}");
    let rows = marks(&content).len();
    assert!(rows >= 12, "a row per host and step: {:?}", marks(&content));

    // The requester, then someone with no rights: refused to them alone, the card unchanged.
    let data = json!({"run": "1", "plan": plan});
    let reply = teams
        .send(
            &s.endpoint,
            &teams.execute_action(&alice, &card, "approve", data.clone()),
        )
        .await?;
    assert!(invoke_text(&reply).contains("you requested this"), "{}", reply.text);
    let reply = teams
        .send(
            &s.endpoint,
            &teams.execute_action(&mallory, &card, "approve", data.clone()),
        )
        .await?;
    assert!(
        invoke_text(&reply).contains("mallory may not approve"),
        "{}",
        reply.text
    );
    assert_eq!(teams.connector().activity(&card.id).expect("the card").updates(), 0);

    // bob approves by card.
    let reply = teams
        .send(&s.endpoint, &teams.execute_action(&bob, &card, "approve", data))
        .await?;
    assert_eq!(
        reply.invoke_type(),
        Some("application/vnd.microsoft.card.adaptive"),
        "{}",
        reply.text
    );
    said(teams, "#1 approved by bob (2 people: alice and bob). Running.").await;

    // Mid-run, a status question in the thread is answered there, in text.
    teams
        .connector()
        .wait_for_activity(
            |a| a.id == card.id && a.adaptive_cards().first().is_some_and(|c| oks(c) >= 3),
            T,
        )
        .await?;
    let status = teams.message(&bob, "!status 1").in_thread(&root).build();
    assert_eq!(teams.send(&s.endpoint, &status).await?.status, 200);
    let answer = said(teams, "#1 running, step").await;
    assert!(answer.contains("approved by bob"), "{answer}");

    // The end: the same card, updated in place, shows the outcome.
    let last = teams
        .connector()
        .wait_for_activity(
            |a| {
                a.id == card.id
                    && a.adaptive_cards()
                        .first()
                        .is_some_and(|c| c.to_string().contains("\"succeeded\""))
            },
            T,
        )
        .await?;
    said(teams, "#1 succeeded").await;
    let final_card = last.adaptive_cards()[0].to_string();
    for needed in ["requested by alice", "approved by bob", "took"] {
        assert!(final_card.contains(needed), "{needed} on the final card: {final_card}");
    }
    assert!(
        last.adaptive_cards()[0].get("actions").is_none(),
        "no buttons at the end"
    );
    assert_eq!(
        oks(&last.adaptive_cards()[0]),
        rows,
        "{:?}",
        marks(&last.adaptive_cards()[0])
    );
    // Updated as the run moved, never backwards.
    let versions: Vec<usize> = last
        .versions
        .iter()
        .map(|v| v["attachments"][0]["content"].clone())
        .map(|c| oks(&c))
        .collect();
    assert!(
        versions.len() >= 4,
        "the card was updated as the run moved: {versions:?}"
    );
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{versions:?}");
    // Step progress is on the card, not posted as lines.
    let texts = posted_texts(teams);
    assert!(!texts.iter().any(|t| t.contains("[2/8]")), "{texts:#?}");
    assert_eq!(texts.iter().filter(|t| t.contains("#1 succeeded")).count(), 1);
    // And the federation really moved.
    assert_eq!(
        tokio::task::block_in_place(|| s.stack.a_records())?,
        vec![POOL2_ADDRESS.to_string()]
    );
    assert!(teams.connector().busiest(Duration::from_secs(1)) <= 7);
    drop(s.bot);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_on_two_platforms_is_counted_once() -> anyhow::Result<()> {
    let s = start(&["--delay-ms", "200"], true, true, None).await?;
    let teams = &s.teams;
    let server = &s.stack.prosody;
    let mut alice_x = Follower::join(server, "alice", INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    alice_x.wait_for_bot(INCIDENT_ROOM).await?;
    let mut bob_x = Follower::join(server, "bob", INCIDENT_ROOM, "bob", JoinHistory::None).await?;

    alice_x.say(INCIDENT_ROOM, "!failover xmpp EdgePool2 from XMPP").await?;
    alice_x.bot_says(INCIDENT_ROOM, "Run #1 requested by alice", T).await?;
    // The mirrored card: a new thread in the mirror channel.
    let mirror = s.mirror.as_ref().expect("a mirror channel").channel_id.clone();
    let card = teams
        .connector()
        .wait_for_activity(
            |a| a.conversation_id.starts_with(&mirror) && !a.adaptive_cards().is_empty(),
            T,
        )
        .await?;
    assert_eq!(card.created_by, CallKind::CreateConversation);
    let data = json!({"run": "1", "plan": plan_of(&card)});

    // alice, on Teams now, is still the requester.
    let reply = teams
        .send(
            &s.endpoint,
            &teams.execute_action(&user("alice"), &card, "approve", data.clone()),
        )
        .await?;
    assert!(invoke_text(&reply).contains("you requested this"), "{}", reply.text);
    // bob approves on Teams, then types it on XMPP too.
    let reply = teams
        .send(&s.endpoint, &teams.execute_action(&user("bob"), &card, "approve", data))
        .await?;
    assert_eq!(
        reply.invoke_type(),
        Some("application/vnd.microsoft.card.adaptive"),
        "{}",
        reply.text
    );
    alice_x
        .bot_says(INCIDENT_ROOM, "#1 approved by bob (2 people: alice and bob)", T)
        .await?;
    bob_x.say(INCIDENT_ROOM, "!approve 1").await?;
    alice_x.bot_says(INCIDENT_ROOM, "#1 succeeded", T).await?;
    let kinds = tokio::task::block_in_place(|| s.stack.journal_kinds())?;
    assert_eq!(kinds.iter().filter(|k| *k == "approved").count(), 1, "{kinds:?}");
    let lines = alice_x.bot_lines(INCIDENT_ROOM);
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("#1 approved by")).count(),
        1,
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("#1 is running") && l.contains("not waiting for approval")),
        "bob's typed approval is answered, not counted: {lines:#?}"
    );
    // The mirror thread got the run's news, and its card the outcome.
    let thread = card.conversation_id.clone();
    teams
        .connector()
        .wait_for(
            |calls| {
                calls
                    .iter()
                    .find(|c| {
                        c.succeeded()
                            && c.conversation_id.as_deref() == Some(&thread)
                            && c.text().is_some_and(|t| t.contains("#1 succeeded"))
                    })
                    .map(|_| ())
            },
            T,
        )
        .await?;
    teams
        .connector()
        .wait_for_activity(
            |a| {
                a.id == card.id
                    && a.adaptive_cards()
                        .first()
                        .is_some_and(|c| c.to_string().contains("\"succeeded\""))
            },
            T,
        )
        .await?;
    alice_x.close().await;
    bob_x.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_unreachable_mid_run_loses_nothing() -> anyhow::Result<()> {
    let s = start(&["--delay-ms", "500"], false, false, None).await?;
    let teams = &s.teams;
    let request = teams.message(&user("alice"), "!failover xmpp EdgePool2").build();
    teams.send(&s.endpoint, &request).await?;
    let card = teams
        .connector()
        .wait_for_activity(|a| !a.adaptive_cards().is_empty(), T)
        .await?;
    let data = json!({"run": "1", "plan": plan_of(&card)});
    teams
        .send(&s.endpoint, &teams.execute_action(&user("bob"), &card, "approve", data))
        .await?;
    teams
        .connector()
        .wait_for_activity(
            |a| a.id == card.id && a.adaptive_cards().first().is_some_and(|c| oks(c) >= 1),
            T,
        )
        .await?;

    // Teams answers 503, then drops connections, while the run goes on.
    teams.connector().inject(Fault::Unavailable, Times::UntilCleared);
    teams
        .connector()
        .wait_for(
            |calls| (calls.iter().filter(|c| c.fault.is_some()).count() >= 3).then_some(()),
            T,
        )
        .await?;
    teams.connector().inject(Fault::CloseConnection, Times::UntilCleared);
    teams
        .connector()
        .wait_for(
            |calls| {
                calls
                    .iter()
                    .any(|c| c.fault == Some(Fault::CloseConnection))
                    .then_some(())
            },
            T,
        )
        .await?;
    let until = tokio::time::Instant::now() + T;
    while !tokio::task::block_in_place(|| s.stack.journal_kinds())?.contains(&"succeeded".to_string()) {
        assert!(tokio::time::Instant::now() < until, "the run did not end");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let waiting = tokio::task::block_in_place(|| s.stack.undelivered())?;
    assert!(
        waiting.iter().any(|t| t.contains("#1 succeeded")),
        "the summary waits in the outbox: {waiting:#?}"
    );
    let faulted = teams.connector().calls().iter().filter(|c| c.fault.is_some()).count();

    // Teams is back: everything arrives, once, in order.
    teams.connector().clear_faults();
    said(teams, "#1 succeeded").await;
    let last = teams
        .connector()
        .wait_for_activity(
            |a| {
                a.id == card.id
                    && a.adaptive_cards()
                        .first()
                        .is_some_and(|c| c.to_string().contains("\"succeeded\""))
            },
            T,
        )
        .await?;
    let rows = marks(&last.adaptive_cards()[0]).len();
    assert_eq!(oks(&last.adaptive_cards()[0]), rows);
    let texts = posted_texts(teams);
    let approved = texts
        .iter()
        .position(|t| t.contains("approved by bob"))
        .expect("the approval line");
    let done = texts
        .iter()
        .position(|t| t.contains("#1 succeeded"))
        .expect("the summary");
    assert!(approved < done, "{texts:#?}");
    let mut unique = texts.clone();
    unique.dedup();
    assert_eq!(unique, texts, "nothing posted twice: {texts:#?}");
    let until = tokio::time::Instant::now() + T;
    while !tokio::task::block_in_place(|| s.stack.undelivered())?.is_empty() {
        assert!(tokio::time::Instant::now() < until, "the outbox did not empty");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(faulted >= 4, "{faulted} calls met the outage");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_appear_in_no_log_error_or_chat_message() -> anyhow::Result<()> {
    let s = start(&["--delay-ms", "50"], false, false, Some("trace")).await?;
    let teams = &s.teams;
    // Inbound tokens, valid and bad; a revoked access token; a whole run.
    let mut inbound = Vec::new();
    for bad in [BadToken::Expired, BadToken::WrongAudience, BadToken::NotEndorsed] {
        if let Some(h) = teams.authorization(&Auth::Bad(bad)).await? {
            inbound.push(h);
            let reply = teams
                .send_with(
                    &s.endpoint,
                    &teams.message(&user("alice"), "!status").build(),
                    &Auth::Bad(bad),
                )
                .await?;
            assert!(reply.status == 401 || reply.status == 403);
        }
    }
    let valid = teams.authorization(&Auth::Valid).await?.expect("a header");
    inbound.push(valid.clone());
    let request = teams.message(&user("alice"), "!failover xmpp EdgePool2").build();
    teams.send_with(&s.endpoint, &request, &Auth::Header(valid)).await?;
    let card = teams
        .connector()
        .wait_for_activity(|a| !a.adaptive_cards().is_empty(), T)
        .await?;
    teams.login().revoke_all();
    let data = json!({"run": "1", "plan": plan_of(&card)});
    teams
        .send(&s.endpoint, &teams.execute_action(&user("bob"), &card, "approve", data))
        .await?;
    said(teams, "#1 succeeded").await;
    // A configuration error names the secret's source, never the secret.
    let bad = s.stack.dir().join("bad.toml");
    let text = std::fs::read_to_string(&s.stack.config)?.replace(
        "app_secret = { file = \"teams.secret\" }",
        &format!("app_secret = \"{}\"", teams.app_secret().expose_secret()),
    );
    std::fs::write(&bad, text)?;
    let (_, out, err) = tokio::task::block_in_place(|| {
        baton_e2e::baton::run(&["check-config", bad.to_str().expect("UTF-8")], Duration::from_secs(30))
    })?;
    assert!(
        err.contains("chat.teams.app_secret") || out.contains("chat.teams.app_secret"),
        "{out}{err}"
    );

    let mut secrets: Vec<String> = vec![teams.app_secret().expose_secret().to_string()];
    for call in teams.connector().calls() {
        if let Some(token) = call.authorization.as_deref().and_then(|a| a.strip_prefix("Bearer ")) {
            secrets.push(token.to_string());
        }
    }
    for h in inbound {
        secrets.push(h.trim_start_matches("Bearer ").to_string());
    }
    secrets.sort();
    secrets.dedup();
    assert!(
        secrets.len() >= 4,
        "the app secret, two access tokens at least, inbound tokens"
    );
    let log = format!("{}\n{}", s.bot.lines().join("\n"), s.bot.stderr());
    assert!(
        log.lines().count() > 50,
        "the trace log was captured ({} lines)",
        log.lines().count()
    );
    let chat: String = teams.connector().calls().iter().map(|c| c.raw_body.clone()).collect();
    for secret in &secrets {
        // A token's signature alone is enough to recognise it.
        let tail = &secret[secret.len().saturating_sub(24)..];
        for (what, text) in [("log", &log), ("chat", &chat), ("check-config", &format!("{out}{err}"))] {
            assert!(!text.contains(tail), "a secret ends up in the {what}");
        }
    }
    Ok(())
}

//! Baton's Teams adapter against the Teams stand-in, in this process (Baton's daemon with its
//! SQLite store on disk and simulated actions; the full stack with agents and BIND is
//! `teams_story.rs`): every invalid request refused with no outbound call and no state change,
//! a key removed from the JWKS refused after a refresh, a sender without an Entra object id,
//! a withdrawn key refused once the key set ages out and is fetched again, card clicks
//! (Action.Execute answered in the invoke response, the Action.Submit fallback),
//! a fast run's card updates coalesced within Teams' rate limit, a 429 honoured, a revoked
//! access token replaced and an expiring one refreshed in time, a redelivered activity acted on
//! once, stale buttons, a card deleted in Teams posted again, and no request accepted while
//! the signing keys cannot be fetched.

use baton_e2e::teams::identity::SIGNING_KID;
use baton_e2e::teams::{ActivityState, Auth, BadToken, BotReply, CallKind, Fault, Times};
use baton_e2e::teams_bot::{BotOptions, TeamsBot};
use serde_json::{Value, json};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn user(name: &str) -> baton_e2e::teams::TeamsUser {
    TeamsBot::user(name)
}

/// The card message of the run, once posted.
async fn card_message(bot: &TeamsBot) -> ActivityState {
    bot.teams
        .connector()
        .wait_for_activity(|a| !a.adaptive_cards().is_empty(), T)
        .await
        .expect("the run's card is posted")
}

/// The plan hash the card's Approve button carries.
fn plan_of(card: &ActivityState) -> String {
    card.adaptive_cards()[0]["actions"][0]["data"]["plan"]
        .as_str()
        .expect("the Approve button carries the plan")
        .to_string()
}

fn run_data(plan: &str) -> Value {
    json!({"run": "1", "plan": plan})
}

/// The texts Baton posted (not the cards), in order.
fn texts(bot: &TeamsBot) -> Vec<String> {
    bot.teams
        .connector()
        .calls()
        .iter()
        .filter(|c| c.succeeded())
        .filter_map(|c| c.text().map(str::to_string))
        .collect()
}

/// Waits for a posted text containing `needle`.
async fn said(bot: &TeamsBot, needle: &str) -> String {
    let needle = needle.to_string();
    bot.teams
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

fn invoke_text(reply: &BotReply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text);
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
async fn every_invalid_request_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let bot = TeamsBot::start(BotOptions {
        // Let a token naming a new key fetch the JWKS at once (the default waits a minute).
        tweak: |c| c.key_refetch_interval = Duration::ZERO,
        ..Default::default()
    })
    .await?;
    let teams = &bot.teams;
    let alice = user("alice");
    // Every request goes to one thread, where a sentinel is answered last: had any of them been
    // taken, its effect would show first.
    let root = teams.message(&alice, "!status").build();
    let root_id = root["id"].as_str().expect("an id").to_string();
    let forged = || {
        teams
            .message(&alice, "!failover xmpp EdgePool2 forged")
            .in_thread(&root_id)
            .build()
    };

    for bad in BadToken::ALL {
        let reply = teams.send_with(&bot.endpoint, &forged(), &Auth::Bad(bad)).await?;
        assert_eq!(reply.status, bad.expected_status(), "{bad:?}: {}", reply.text);
        assert!(!reply.text.contains("eyJ"), "no token in the answer: {}", reply.text);
    }
    // Authenticated, but from another tenant, another channel, a personal chat, or with a
    // serviceUrl outside the allowlist (the token is signed for it, so only the allowlist
    // stands in the way).
    let foreign = teams
        .message(&alice, "!failover xmpp EdgePool2")
        .in_thread(&root_id)
        .tenant("00000000-0000-4000-8000-00000000bad0")
        .build();
    assert_eq!(teams.send(&bot.endpoint, &foreign).await?.status, 403, "tenant");
    let random = teams.add_channel("Contoso Ops", "Random");
    let elsewhere = teams
        .message(&alice, "!failover xmpp EdgePool2")
        .in_channel(&random)
        .build();
    assert_eq!(teams.send(&bot.endpoint, &elsewhere).await?.status, 403, "channel");
    let mut personal = forged();
    personal["conversation"] =
        json!({"conversationType": "personal", "tenantId": teams.tenant_id(), "id": "a:1personal"});
    assert_eq!(teams.send(&bot.endpoint, &personal).await?.status, 403, "personal chat");
    let mut elsewhere_url = forged();
    elsewhere_url["serviceUrl"] = json!("https://smba.trafficmanager.net.evil.example/teams/");
    let mut claims = teams.valid_claims();
    claims["serviceurl"] = elsewhere_url["serviceUrl"].clone();
    let header = format!("Bearer {}", teams.identity().sign(&claims));
    let reply = teams
        .send_with(&bot.endpoint, &elsewhere_url, &Auth::Header(header))
        .await?;
    assert_eq!(reply.status, 403, "serviceUrl outside the allowlist");
    let mut no_service = forged();
    no_service.as_object_mut().expect("an object").remove("serviceUrl");
    assert_eq!(
        teams.send(&bot.endpoint, &no_service).await?.status,
        401,
        "serviceUrl missing"
    );

    assert!(teams.connector().calls().is_empty(), "{}", teams.connector().describe());
    assert!(bot.journal()?.is_empty(), "{:?}", bot.journal()?);
    assert!(bot.handled()?.is_empty());

    // The sentinel: a valid status question in the same thread is the first thing answered.
    let status = teams.message(&alice, "!status").in_thread(&root_id).build();
    assert_eq!(teams.send(&bot.endpoint, &status).await?.status, 200);
    let answer = said(&bot, "XMPP federation route").await;
    let calls = teams.connector().calls();
    assert_eq!(calls.len(), 1, "{}", teams.connector().describe());
    assert_eq!(calls[0].kind, CallKind::SendToConversation);
    assert!(
        calls[0].conversation_id.as_deref() == Some(status["conversation"]["id"].as_str().expect("an id")),
        "the answer goes into the thread"
    );
    assert!(!answer.contains("requested"), "{answer}");
    assert!(bot.journal()?.is_empty());

    // Key rotation: a new key signs, the old one leaves the JWKS. The first token of the new
    // key makes Baton fetch the JWKS again; from then on the removed key is refused.
    let fetches = teams.identity().jwks_fetches();
    teams.identity().add_key("rotated-1", &["msteams"]).await?;
    teams.identity().use_for_signing("rotated-1")?;
    teams.identity().remove_key(SIGNING_KID)?;
    let fresh = teams.message(&alice, "!status").in_thread(&root_id).build();
    assert_eq!(
        teams.send(&bot.endpoint, &fresh).await?.status,
        200,
        "the new key is fetched"
    );
    assert!(teams.identity().jwks_fetches() > fetches);
    teams.connector().wait_for_calls(2, T).await?;
    let old = teams.identity().sign_with(SIGNING_KID, &teams.valid_claims())?;
    let reply = teams
        .send_with(&bot.endpoint, &forged(), &Auth::Header(format!("Bearer {old}")))
        .await?;
    assert_eq!(reply.status, 401, "a removed key is refused: {}", reply.text);
    let sentinel = teams.message(&alice, "!runs").in_thread(&root_id).build();
    assert_eq!(teams.send(&bot.endpoint, &sentinel).await?.status, 200);
    teams.connector().wait_for_calls(3, T).await?;
    assert_eq!(teams.connector().calls().len(), 3, "{}", teams.connector().describe());
    assert!(bot.journal()?.is_empty(), "nothing was requested: {:?}", bot.journal()?);
    bot.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_answer_the_clicker_and_a_fast_run_stays_within_the_rate_limit() -> anyhow::Result<()> {
    let bot = TeamsBot::start(BotOptions {
        delay: Duration::ZERO,
        ..Default::default()
    })
    .await?;
    let teams = &bot.teams;
    let (alice, bob, mallory) = (user("alice"), user("bob"), user("mallory"));
    let request = teams
        .message(&alice, "!failover xmpp EdgePool2 pool 1 <b>lost</b> power")
        .build();
    assert_eq!(teams.send(&bot.endpoint, &request).await?.status, 200);
    let card = card_message(&bot).await;
    assert_eq!(card.created_by, CallKind::SendToConversation);
    assert_eq!(
        card.conversation_id,
        request["conversation"]["id"].as_str().expect("an id"),
        "in the thread"
    );
    let plan = plan_of(&card);
    let content = &card.adaptive_cards()[0];
    assert_eq!(content["version"], "1.5");
    assert!(
        content.to_string().contains("pool 1 <b>lost</b> power"),
        "the reason as typed"
    );

    // The requester's own click: refused to her alone, the card unchanged.
    let reply = teams
        .send(
            &bot.endpoint,
            &teams.execute_action(&alice, &card, "approve", run_data(&plan)),
        )
        .await?;
    assert!(invoke_text(&reply).contains("you requested this"), "{}", reply.text);
    // Someone with no rights.
    let reply = teams
        .send(
            &bot.endpoint,
            &teams.execute_action(&mallory, &card, "approve", run_data(&plan)),
        )
        .await?;
    assert!(invoke_text(&reply).contains("may not approve"), "{}", reply.text);
    // A button that is not Baton's.
    let reply = teams
        .send(
            &bot.endpoint,
            &teams.execute_action(&bob, &card, "approve", json!({"req": "r1"})),
        )
        .await?;
    assert!(invoke_text(&reply).contains("not one of Baton's"), "{}", reply.text);
    assert_eq!(teams.connector().activity(&card.id).expect("the card").updates(), 0);
    assert!(
        !texts(&bot).iter().any(|t| t.contains("Refused")),
        "refusals are not posted: {:?}",
        texts(&bot)
    );

    // bob approves: the invoke response is the new card; then the run flies through.
    let reply = teams
        .send(
            &bot.endpoint,
            &teams.execute_action(&bob, &card, "approve", run_data(&plan)),
        )
        .await?;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.invoke_type(),
        Some("application/vnd.microsoft.card.adaptive"),
        "{}",
        reply.text
    );
    let shown = reply.invoke_value().expect("a card").to_string();
    assert!(shown.contains("approved by bob"), "{shown}");
    assert!(
        reply.invoke_value().expect("a card").get("actions").is_none(),
        "no buttons once approved"
    );
    let done = teams
        .connector()
        .wait_for_activity(
            |a| {
                a.id == card.id
                    && a.adaptive_cards()
                        .first()
                        .is_some_and(|c| c.to_string().contains("succeeded"))
            },
            T,
        )
        .await?;
    said(&bot, "#1 succeeded").await;
    // Eight steps ended within milliseconds: their updates were coalesced, and no second saw
    // more than Teams' seven operations on the thread.
    let busiest = teams.connector().busiest(Duration::from_secs(1));
    assert!(
        busiest <= 7,
        "{busiest} calls within one second:\n{}",
        teams.connector().describe()
    );
    assert!(done.updates() <= 6, "{} updates for a run of 8 steps", done.updates());
    let last = done.adaptive_cards()[0].to_string();
    assert!(!last.contains("FAILED") && !last.contains("\"running\""), "{last}");
    for call in teams.connector().calls() {
        assert_eq!(
            call.status,
            Some(if call.kind == CallKind::UpdateActivity {
                200
            } else {
                201
            }),
            "{}",
            call.summary()
        );
    }
    bot.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_entra_object_id_a_sender_may_read_but_not_request_and_submit_clicks_count() -> anyhow::Result<()> {
    let bot = TeamsBot::start(BotOptions::default()).await?;
    let teams = &bot.teams;
    let guest = user("alice").without_aad_object_id();
    teams
        .send(&bot.endpoint, &teams.message(&guest, "!status").build())
        .await?;
    said(&bot, "XMPP federation route").await;
    teams
        .send(
            &bot.endpoint,
            &teams.message(&guest, "!failover xmpp EdgePool2").build(),
        )
        .await?;
    let refused = said(&bot, "Refused").await;
    assert!(
        refused.contains("Teams did not say which Entra account you are"),
        "{refused}"
    );
    assert!(!bot.journal()?.contains(&"requested".to_string()));

    // An Action.Submit click (older clients) approves as the invoke does.
    let alice = user("alice");
    teams
        .send(
            &bot.endpoint,
            &teams.message(&alice, "!failover xmpp EdgePool2").build(),
        )
        .await?;
    let card = card_message(&bot).await;
    let plan = plan_of(&card);
    let submit = teams.submit_action(
        &user("carol"),
        &card,
        json!({"verb": "approve", "run": "1", "plan": plan}),
    );
    assert_eq!(teams.send(&bot.endpoint, &submit).await?.status, 200);
    said(&bot, "#1 approved by carol").await;
    said(&bot, "#1 succeeded").await;
    bot.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_honoured_and_a_revoked_token_is_replaced() -> anyhow::Result<()> {
    let bot = TeamsBot::start(BotOptions::default()).await?;
    let teams = &bot.teams;
    let alice = user("alice");
    teams
        .connector()
        .inject(Fault::TooManyRequests { retry_after_secs: 2 }, Times::Next(1));
    teams
        .send(&bot.endpoint, &teams.message(&alice, "!status").build())
        .await?;
    said(&bot, "XMPP federation route").await;
    let calls = teams.connector().calls();
    assert_eq!(calls.len(), 2, "{}", teams.connector().describe());
    assert_eq!(calls[0].status, Some(429));
    let waited = calls[1].at.duration_since(calls[0].at);
    assert!(
        waited >= Duration::from_secs(2),
        "retried after {waited:?}, Retry-After was 2 s"
    );
    assert_eq!(calls[0].body, calls[1].body, "the same message again");

    // The Connector stops accepting the token: Baton gets a new one and delivers.
    let issued = teams.login().issued_count();
    teams.login().revoke_all();
    teams
        .send(&bot.endpoint, &teams.message(&alice, "!runs").build())
        .await?;
    said(&bot, "No runs").await;
    assert!(teams.login().issued_count() > issued);
    let calls = teams.connector().calls();
    assert_eq!(
        calls[calls.len() - 2].status,
        Some(401),
        "{}",
        teams.connector().describe()
    );
    bot.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_activity_is_handled_once_and_a_stale_button_changes_nothing() -> anyhow::Result<()> {
    let bot = TeamsBot::start(BotOptions::default()).await?;
    let teams = &bot.teams;
    let (alice, bob) = (user("alice"), user("bob"));
    // Teams delivers again when the bot was slow to answer: the same activity, the same id.
    let request = teams.message(&alice, "!failover xmpp EdgePool2 redelivered").build();
    let root = request["id"].as_str().expect("an id").to_string();
    assert_eq!(teams.send(&bot.endpoint, &request).await?.status, 200);
    let card = card_message(&bot).await;
    assert_eq!(
        teams.send(&bot.endpoint, &request).await?.status,
        200,
        "a redelivery is acknowledged"
    );

    // A button whose plan is not the run's (a card from before the plan changed), then one
    // for a run that does not exist: each answered to the clicker, nothing else happens.
    let reply = teams
        .send(
            &bot.endpoint,
            &teams.execute_action(&bob, &card, "approve", run_data("0123456789ab")),
        )
        .await?;
    assert!(
        invoke_text(&reply).contains("not the 0123456789ab you named"),
        "{}",
        reply.text
    );
    let reply = teams
        .send(
            &bot.endpoint,
            &teams.execute_action(&bob, &card, "approve", json!({"run": "99", "plan": plan_of(&card)})),
        )
        .await?;
    let told = invoke_text(&reply);
    assert!(told.contains("There is no run #99"), "{told}");

    // The sentinel: the thread's answers come in order, so once the status answer is there
    // the redelivery was handled (or skipped).
    let status = teams.message(&alice, "!status 1").in_thread(&root).build();
    assert_eq!(teams.send(&bot.endpoint, &status).await?.status, 200);
    let answer = said(&bot, "#1 pending approval").await;
    assert!(!answer.contains("#2"), "{answer}");
    let cards: Vec<_> = teams
        .connector()
        .activities()
        .into_iter()
        .filter(|a| !a.adaptive_cards().is_empty())
        .collect();
    assert_eq!(
        cards.len(),
        1,
        "one card for one request: {}",
        teams.connector().describe()
    );
    assert_eq!(cards[0].updates(), 0, "the stale clicks left the card as it was");
    // One run requested, the stale approval refused (and audited), nothing approved.
    let journal = bot.journal()?;
    assert_eq!(
        journal,
        vec!["requested".to_string(), "refused".to_string()],
        "{journal:?}"
    );
    let handled = bot.handled()?;
    assert_eq!(handled.iter().filter(|id| **id == root).count(), 1, "{handled:?}");
    bot.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_token_is_refreshed_before_the_connector_would_refuse_it() -> anyhow::Result<()> {
    // Tokens that live three seconds: Baton must fetch a new one before each expires, so that
    // the Connector (which refuses a token past its lifetime) never has to refuse one.
    let bot = TeamsBot::start(BotOptions {
        token_lifetime: Duration::from_secs(3),
        ..Default::default()
    })
    .await?;
    let teams = &bot.teams;
    let alice = user("alice");
    teams
        .send(&bot.endpoint, &teams.message(&alice, "!status").build())
        .await?;
    said(&bot, "XMPP federation route").await;
    let first = teams.connector().calls()[0]
        .authorization
        .clone()
        .expect("a bearer token");
    let first_token = first.trim_start_matches("Bearer ").to_string();
    // Wait (bounded) until the stand-in no longer accepts the first token.
    let until = tokio::time::Instant::now() + T;
    while teams.login().is_current(&first_token) {
        assert!(tokio::time::Instant::now() < until, "the token never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    teams
        .send(&bot.endpoint, &teams.message(&alice, "!runs").build())
        .await?;
    said(&bot, "No runs").await;
    let calls = teams.connector().calls();
    assert_eq!(calls.len(), 2, "{}", teams.connector().describe());
    assert!(
        calls.iter().all(|c| c.status == Some(201)),
        "{}",
        teams.connector().describe()
    );
    assert_ne!(calls[1].authorization, Some(first), "a new token");
    let requests = teams.login().requests();
    assert!(requests.len() >= 2, "{} token requests", requests.len());
    for r in &requests {
        assert_eq!(r.grant_type.as_deref(), Some("client_credentials"));
        assert_eq!(r.scope.as_deref(), Some("https://api.botframework.com/.default"));
        assert!(r.secret_matched && r.status == Some(200), "{r:?}");
    }
    bot.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_deleted_in_teams_is_posted_again_and_the_run_goes_on() -> anyhow::Result<()> {
    // Steps long enough for several card updates after the deletion.
    let bot = TeamsBot::start(BotOptions {
        delay: Duration::from_millis(600),
        ..Default::default()
    })
    .await?;
    let teams = &bot.teams;
    let request = teams.message(&user("alice"), "!failover xmpp EdgePool2").build();
    assert_eq!(teams.send(&bot.endpoint, &request).await?.status, 200);
    let card = card_message(&bot).await;
    let reply = teams
        .send(
            &bot.endpoint,
            &teams.execute_action(&user("bob"), &card, "approve", run_data(&plan_of(&card))),
        )
        .await?;
    assert_eq!(reply.status, 200, "{}", reply.text);
    teams
        .connector()
        .wait_for_activity(|a| a.id == card.id && a.updates() >= 1, T)
        .await?;
    // Someone deletes the card: its next update is refused for good (404), so Baton posts the
    // card anew in the same thread and keeps that one current; the thread is not held up.
    assert!(teams.connector().delete_activity(&card.id));
    let again = teams
        .connector()
        .wait_for_activity(|a| a.id != card.id && !a.adaptive_cards().is_empty(), T)
        .await?;
    assert_eq!(again.conversation_id, card.conversation_id, "in the same thread");
    said(&bot, "#1 succeeded").await;
    teams
        .connector()
        .wait_for_activity(
            |a| {
                a.id == again.id
                    && a.adaptive_cards()
                        .first()
                        .is_some_and(|c| c.to_string().contains("\"succeeded\""))
            },
            T,
        )
        .await?;
    let refused: Vec<_> = teams
        .connector()
        .calls()
        .into_iter()
        .filter(|c| c.status == Some(404))
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "a refusal for good is not retried: {}",
        teams.connector().describe()
    );
    assert_eq!(refused[0].kind, CallKind::UpdateActivity);
    assert_eq!(refused[0].activity_id.as_deref(), Some(card.id.as_str()));
    bot.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_signing_keys_nothing_is_accepted_until_they_can_be_fetched() -> anyhow::Result<()> {
    // The Bot Framework's login service is down from the start: Baton holds no keys, so it
    // can check no token, and refuses everything with 503 (Teams may try again later).
    let bot = TeamsBot::start(BotOptions {
        keys_down_at_start: true,
        ..Default::default()
    })
    .await?;
    let teams = &bot.teams;
    let request = teams.message(&user("alice"), "!failover xmpp EdgePool2").build();
    let reply = teams.send(&bot.endpoint, &request).await?;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert!(teams.connector().calls().is_empty(), "{}", teams.connector().describe());
    assert!(bot.journal()?.is_empty() && bot.handled()?.is_empty());
    // The service is back: the next request fetches the keys and is served.
    teams.identity().clear_faults();
    let request = teams.message(&user("alice"), "!failover xmpp EdgePool2").build();
    assert_eq!(teams.send(&bot.endpoint, &request).await?.status, 200);
    let card = card_message(&bot).await;
    assert_eq!(
        card.conversation_id,
        request["conversation"]["id"].as_str().expect("an id")
    );
    assert_eq!(bot.journal()?, vec!["requested".to_string()]);
    bot.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_withdrawn_from_the_jwks_is_refused_once_the_key_set_is_fetched_again_by_age() -> anyhow::Result<()> {
    // The key set is fetched again once two seconds old (a day in production); no token with
    // a new key id prompts it. Microsoft withdraws the key that signs.
    let bot = TeamsBot::start(BotOptions {
        tweak: |c| c.key_max_age = Duration::from_secs(2),
        ..Default::default()
    })
    .await?;
    let teams = &bot.teams;
    let alice = user("alice");
    assert_eq!(
        teams
            .send(&bot.endpoint, &teams.message(&alice, "!status").build())
            .await?
            .status,
        200
    );
    said(&bot, "XMPP federation route").await;
    let fetches = teams.identity().jwks_fetches();
    teams.identity().remove_key(SIGNING_KID)?;
    let old = Auth::Header(format!(
        "Bearer {}",
        teams.identity().sign_with(SIGNING_KID, &teams.valid_claims())?
    ));
    // Asked again and again (bounded), a token of the withdrawn key is refused once the held
    // key set has aged out and been fetched again.
    let until = tokio::time::Instant::now() + T;
    let refused = loop {
        let reply = teams
            .send_with(&bot.endpoint, &teams.message(&alice, "!status").build(), &old)
            .await?;
        if reply.status != 200 {
            break reply;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the withdrawn key was never refused"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(refused.status, 401, "{}", refused.text);
    assert!(
        teams.identity().jwks_fetches() > fetches,
        "the key set was fetched again"
    );
    // And stays refused.
    let again = teams
        .send_with(&bot.endpoint, &teams.message(&alice, "!status").build(), &old)
        .await?;
    assert_eq!(again.status, 401);
    bot.stop().await
}

/// The run's card calls the approvers: a TextBlock with `<at>` tags and one `mention` entity
/// per approver, by Entra object id (bob and carol; never alice, who asked, nor mallory, who may
/// not approve). Teams cannot tell Baton who reads a channel, so every approver with a Teams
/// identity is called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_card_mentions_the_approvers() -> anyhow::Result<()> {
    let bot = TeamsBot::start(BotOptions::default()).await?;
    let teams = &bot.teams;
    let request = teams
        .message(&user("alice"), "!failover xmpp EdgePool2 dc1 down")
        .build();
    assert_eq!(teams.send(&bot.endpoint, &request).await?.status, 200);
    let card = card_message(&bot).await;
    let activity = card.latest();
    let oid = |name: &str| user(name).aad_object_id.expect("stand-in users have an object id");
    let entities = activity["attachments"][0]["content"]["msteams"]["entities"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mentioned: Vec<(String, String)> = entities
        .iter()
        .filter(|e| e["type"] == "mention")
        .map(|e| {
            (
                e["text"].as_str().unwrap_or_default().to_string(),
                e["mentioned"]["id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        mentioned,
        [
            ("<at>bob</at>".to_string(), oid("bob")),
            ("<at>carol</at>".to_string(), oid("carol"))
        ],
        "{activity:#}"
    );
    let text = activity.to_string();
    assert!(
        text.contains("<at>bob</at>") && text.contains("<at>carol</at>"),
        "the tags are in the card's text: {text}"
    );
    assert!(
        !text.contains(&oid("alice")) && !text.contains(&oid("mallory")),
        "{text}"
    );
    bot.stop().await
}

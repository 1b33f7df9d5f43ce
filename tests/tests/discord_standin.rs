//! The Discord stand-in against the real client: a minimal serenity 0.12 bot (this file, not
//! Baton's adapter) connects, identifies, reads a command, posts buttons, answers clicks
//! ephemerally and with an update, opens a thread, survives dropped connections by resuming,
//! honours a 429 through its ratelimiter, and loses a click that lacks a required field. A second
//! test shows what the stand-in refuses, as Discord would, with a plain HTTP client.

use baton_e2e::discord::{
    CallFilter, Closed, Delivery, DiscordStandIn, DropMode, Fault, StandInConfig, StoredMessage, intents,
};
use serde_json::{Value, json};
use serenity::all::{
    ButtonStyle, ChannelType, ClientBuilder, ComponentInteraction, Context, CreateActionRow, CreateButton,
    CreateInteractionResponse, CreateInteractionResponseMessage, CreateMessage, CreateThread, EditMessage,
    EventHandler, GatewayIntents, Guild, HttpBuilder, Interaction, Message, Ready, ResumedEvent, ShardManager,
};
use std::time::Duration;
use tokio::sync::watch;

const TOKEN: &str = "test-token.stand-in";
const INCIDENTS: u64 = 200;
const ALICE: u64 = 1;
const BOB: u64 = 2;
const CAROL: u64 = 3;
const WAIT: Duration = Duration::from_secs(20);

/// What the bot's handlers saw, in order.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Ready {
        session_id: String,
    },
    Guild {
        channels: usize,
        roles: usize,
    },
    Message {
        id: u64,
        author: u64,
        bot: bool,
        content: String,
    },
    Click {
        interaction: u64,
        user: u64,
        custom_id: String,
    },
    Answered {
        interaction: u64,
        outcome: Result<(), String>,
    },
    Resumed,
    Progress {
        outcome: Result<(), String>,
    },
}

struct Bot {
    seen: watch::Sender<Vec<Seen>>,
}

impl Bot {
    fn saw(&self, s: Seen) {
        self.seen.send_modify(|all| all.push(s));
    }

    async fn answer_click(&self, ctx: &Context, ci: &ComponentInteraction) -> Result<(), String> {
        let requester = ALICE;
        if ci.user.id.get() == requester {
            let refusal = CreateInteractionResponseMessage::new()
                .content("You cannot approve your own request")
                .ephemeral(true);
            return ci
                .create_response(&ctx.http, CreateInteractionResponse::Message(refusal))
                .await
                .map_err(|e| e.to_string());
        }
        let update = CreateInteractionResponseMessage::new()
            .content(format!("Run #7 approved by {}", ci.user.name))
            .components(vec![]);
        ci.create_response(&ctx.http, CreateInteractionResponse::UpdateMessage(update))
            .await
            .map_err(|e| e.to_string())
    }

    async fn progress(&self, ctx: &Context, ci: &ComponentInteraction) -> Result<(), String> {
        let thread = ci
            .channel_id
            .create_thread_from_message(
                &ctx.http,
                ci.message.id,
                CreateThread::new("failover run 7").kind(ChannelType::PublicThread),
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut step = thread
            .send_message(&ctx.http, CreateMessage::new().content("step 1/3: drain"))
            .await
            .map_err(|e| e.to_string())?;
        step.edit(&ctx.http, EditMessage::new().content("step 1/3: drain ... ok"))
            .await
            .map_err(|e| e.to_string())
    }
}

#[serenity::async_trait]
impl EventHandler for Bot {
    async fn ready(&self, _: Context, ready: Ready) {
        self.saw(Seen::Ready {
            session_id: ready.session_id,
        });
    }

    async fn guild_create(&self, _: Context, guild: Guild, _: Option<bool>) {
        self.saw(Seen::Guild {
            channels: guild.channels.len(),
            roles: guild.roles.len(),
        });
    }

    async fn resume(&self, _: Context, _: ResumedEvent) {
        self.saw(Seen::Resumed);
    }

    async fn message(&self, ctx: Context, msg: Message) {
        self.saw(Seen::Message {
            id: msg.id.get(),
            author: msg.author.id.get(),
            bot: msg.author.bot,
            content: msg.content.clone(),
        });
        if msg.author.bot {
            return;
        }
        let reply = match msg.content.as_str() {
            "!failover xmpp EdgePool2" => CreateMessage::new()
                .content("Run #7 requested by alice: move XMPP federation EdgePool1 -> EdgePool2")
                .components(vec![CreateActionRow::Buttons(vec![
                    CreateButton::new("approve:7")
                        .label("Approve")
                        .style(ButtonStyle::Success),
                    CreateButton::new("deny:7").label("Deny").style(ButtonStyle::Danger),
                ])]),
            "!ping" => CreateMessage::new().content("pong"),
            _ => return,
        };
        let _ = msg.channel_id.send_message(&ctx.http, reply).await;
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        let Interaction::Component(ci) = interaction else {
            return;
        };
        self.saw(Seen::Click {
            interaction: ci.id.get(),
            user: ci.user.id.get(),
            custom_id: ci.data.custom_id.clone(),
        });
        let outcome = self.answer_click(&ctx, &ci).await;
        let approved = outcome.is_ok() && ci.user.id.get() != ALICE;
        self.saw(Seen::Answered {
            interaction: ci.id.get(),
            outcome,
        });
        if approved {
            let outcome = self.progress(&ctx, &ci).await;
            self.saw(Seen::Progress { outcome });
        }
    }
}

/// Waits until the bot saw something `pick` accepts.
async fn seen<T>(rx: &mut watch::Receiver<Vec<Seen>>, what: &str, pick: impl Fn(&Seen) -> Option<T>) -> T {
    let waited = tokio::time::timeout(WAIT, rx.wait_for(|all| all.iter().any(|s| pick(s).is_some())))
        .await
        .map(|found| found.map(|all| all.iter().find_map(&pick)));
    match waited {
        Ok(Ok(Some(found))) => found,
        _ => panic!("the bot never saw {what}; it saw {:?}", rx.borrow()),
    }
}

/// Waits until the bot saw `n` things `pick` accepts.
async fn seen_times(rx: &mut watch::Receiver<Vec<Seen>>, what: &str, n: usize, pick: impl Fn(&Seen) -> bool) {
    let reached = tokio::time::timeout(WAIT, rx.wait_for(|all| all.iter().filter(|s| pick(s)).count() >= n))
        .await
        .is_ok_and(|r| r.is_ok());
    if !reached {
        panic!("the bot never saw {what} {n} times; it saw {:?}", rx.borrow());
    }
}

fn count(rx: &watch::Receiver<Vec<Seen>>, pick: impl Fn(&Seen) -> bool) -> usize {
    rx.borrow().iter().filter(|s| pick(s)).count()
}

/// Starts serenity against `discord`, HTTPS through a reqwest client that resolves discord.com
/// to the stand-in (ratelimiter on) or, with `proxy`, plain HTTP with the ratelimiter off.
async fn start_bot(
    discord: &DiscordStandIn,
    proxy: bool,
) -> (watch::Receiver<Vec<Seen>>, std::sync::Arc<ShardManager>) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let http = if proxy {
        HttpBuilder::new(TOKEN)
            .proxy(discord.http_base())
            .ratelimiter_disabled(true)
            .build()
    } else {
        let ca = reqwest::Certificate::from_pem(discord.ca_pem().as_bytes()).expect("the stand-in's CA is valid PEM");
        let client = reqwest::Client::builder()
            .resolve("discord.com", discord.https_addr())
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .build()
            .expect("a reqwest client with one root certificate builds");
        HttpBuilder::new(TOKEN).client(client).build()
    };
    let (tx, rx) = watch::channel(Vec::new());
    let intents = GatewayIntents::GUILDS | GatewayIntents::GUILD_MESSAGES | GatewayIntents::MESSAGE_CONTENT;
    let mut client = ClientBuilder::new_with_http(http, intents)
        .event_handler(Bot { seen: tx })
        .await
        .expect("serenity's client builds");
    let shards = client.shard_manager.clone();
    tokio::spawn(async move {
        let _ = client.start().await;
    });
    (rx, shards)
}

fn buttons(m: &StoredMessage) -> Vec<(String, u64)> {
    m.buttons()
        .into_iter()
        .map(|b| (b.custom_id.unwrap_or_default(), b.style))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serenity_speaks_to_the_stand_in() {
    let mut cfg = StandInConfig::example(TOKEN);
    cfg.heartbeat_interval = Duration::from_millis(700);
    let discord = DiscordStandIn::start(cfg).await.expect("stand-in starts");
    let (mut rx, shards) = start_bot(&discord, false).await;

    // Connects and identifies with Baton's intents, over HTTPS as discord.com.
    let identify = discord.wait_ready(WAIT).await.expect("serenity identifies");
    assert_eq!(identify.intents, Some(intents::BATON));
    assert_eq!(identify.intents, Some(33281));
    assert_eq!(identify.token, format!("Bot {TOKEN}"));
    assert_eq!(identify.properties["browser"], "serenity");
    let gateway_call = discord
        .calls()
        .into_iter()
        .find(|c| c.is("GET /gateway"))
        .expect("GET /gateway was called");
    assert!(gateway_call.tls, "serenity reached the stand-in over HTTPS");
    assert_eq!(
        gateway_call.header("authorization"),
        Some(format!("Bot {TOKEN}").as_str())
    );
    assert!(
        gateway_call
            .header("user-agent")
            .unwrap_or("")
            .starts_with("DiscordBot (")
    );
    let session = seen(&mut rx, "READY", |s| match s {
        Seen::Ready { session_id } => Some(session_id.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        Some(session.as_str()),
        discord.read(|s| s.session_id().map(str::to_string)).as_deref()
    );
    let guild = seen(&mut rx, "GUILD_CREATE", |s| {
        matches!(s, Seen::Guild { .. }).then(|| s.clone())
    })
    .await;
    assert_eq!(guild, Seen::Guild { channels: 2, roles: 2 });
    // Heartbeats are answered.
    discord
        .wait_until("a heartbeat and its ack", WAIT, |s| {
            let beat = s
                .frames()
                .iter()
                .position(|f| f.op() == Some(1) && f.direction == baton_e2e::discord::Direction::FromClient)?;
            s.frames()[beat..].iter().find(|f| f.op() == Some(11)).map(|_| ())
        })
        .await
        .expect("serenity heartbeats");

    // A command in the channel; the bot answers with two buttons.
    let command = discord
        .post_user_message(INCIDENTS, ALICE, "!failover xmpp EdgePool2")
        .expect("alice can write in #incidents");
    assert!(matches!(command.delivery, Delivery::Sent { .. }));
    let post = discord
        .wait_for_call("the bot's message with buttons", WAIT, |c| {
            c.is("POST /channels/{channel_id}/messages")
        })
        .await
        .expect("the bot posts");
    assert_eq!(post.status, 200, "{:?}", post.response);
    assert_eq!(post.path, "/api/v10/channels/200/messages");
    let row = &post.body.as_ref().expect("a JSON body")["components"][0];
    assert_eq!(row["type"], 1);
    assert_eq!(
        row["components"][0],
        json!({"type": 2, "style": 3, "label": "Approve", "custom_id": "approve:7", "disabled": false})
    );
    let card_id: u64 = post.response.as_ref().expect("a message")["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("snowflake");
    let card = discord.message(card_id).expect("the posted message is kept");
    assert_eq!(
        buttons(&card),
        vec![("approve:7".to_string(), 3), ("deny:7".to_string(), 4)]
    );
    // Discord echoes the bot's own message on the gateway; the bot must (and does) ignore it.
    let echoed = seen(&mut rx, "its own message", |s| match s {
        Seen::Message { id, bot: true, .. } if *id == card_id => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(echoed, ());

    // The requester clicks Approve: an ephemeral refusal (type 4, flags 64).
    let alice_click = discord
        .click(card_id, "approve:7", ALICE)
        .expect("alice sees the button");
    let answered = seen(&mut rx, "alice's click answered", |s| match s {
        Seen::Answered { interaction, outcome } if *interaction == alice_click.interaction_id => Some(outcome.clone()),
        _ => None,
    })
    .await;
    assert_eq!(answered, Ok(()));
    let record = discord.interaction(alice_click.interaction_id).expect("recorded");
    assert_eq!(record.callbacks.len(), 1);
    let callback = &record.callbacks[0];
    assert_eq!((callback.kind, callback.status), (Some(4), 204));
    assert_eq!(callback.body.as_ref().expect("body")["data"]["flags"], 64);
    let refusal = discord
        .message(record.original_message.expect("a response message"))
        .expect("kept");
    assert_eq!(refusal.ephemeral_for, Some(ALICE));
    assert_eq!(refusal.content(), "You cannot approve your own request");
    let callback_call = discord
        .calls()
        .into_iter()
        .find(|c| c.is("POST /interactions/{interaction_id}/{token}/callback"))
        .expect("the callback was recorded");
    assert_eq!(
        callback_call.header("authorization"),
        Some(format!("Bot {TOKEN}").as_str())
    );

    // A click without attachment_size_limit is sent but serenity loses it (so the builders must
    // include the field).
    let broken = discord
        .click_with(card_id, "deny:7", CAROL, |d| {
            d.as_object_mut().expect("an object").remove("attachment_size_limit");
        })
        .expect("carol sees the button");
    assert!(matches!(broken.delivery, Delivery::Sent { .. }));

    // Another approver clicks: the card is updated in place (type 7), buttons gone, then a
    // thread with live progress.
    let bob_click = discord.click(card_id, "approve:7", BOB).expect("bob sees the button");
    let answered = seen(&mut rx, "bob's click answered", |s| match s {
        Seen::Answered { interaction, outcome } if *interaction == bob_click.interaction_id => Some(outcome.clone()),
        _ => None,
    })
    .await;
    assert_eq!(answered, Ok(()));
    let card = discord.message(card_id).expect("kept");
    assert_eq!(card.content(), "Run #7 approved by bob");
    assert!(card.buttons().is_empty());
    assert_eq!(card.history.len(), 1, "one edit");
    let bob = discord.interaction(bob_click.interaction_id).expect("recorded");
    assert_eq!(bob.accepted().map(|c| c.kind), Some(Some(7)));
    let progress = seen(&mut rx, "the progress thread", |s| match s {
        Seen::Progress { outcome } => Some(outcome.clone()),
        _ => None,
    })
    .await;
    assert_eq!(progress, Ok(()));
    let threads = discord.read(|s| s.threads());
    assert_eq!(threads, vec![(card_id, INCIDENTS, "failover run 7".to_string())]);
    let steps: Vec<StoredMessage> = discord.read(|s| s.channel_messages(card_id).into_iter().cloned().collect());
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].content(), "step 1/3: drain ... ok");
    assert_eq!(steps[0].history[0]["content"], "step 1/3: drain");

    // The broken click never reached a handler, though the gateway wrote it to the client.
    assert_eq!(
        count(
            &rx,
            |s| matches!(s, Seen::Click { interaction, .. } if *interaction == broken.interaction_id)
        ),
        0
    );
    assert!(discord.read(|s| {
        s.frames().iter().any(|f| {
            f.event() == Some("INTERACTION_CREATE")
                && f.payload["d"]["id"].as_str() == Some(broken.interaction_id.to_string().as_str())
        })
    }));
    assert!(
        discord
            .interaction(broken.interaction_id)
            .expect("registered")
            .callbacks
            .is_empty()
    );

    // The gateway drops the connection (close 4000) while new connections are held: a message
    // written meanwhile is buffered, replayed on RESUME, and seen exactly once.
    discord.hold_gateway(true);
    assert!(discord.drop_gateway(DropMode::Close(4000)));
    discord
        .wait_until("the first connection to close", WAIT, |s| {
            s.connections()[0].closed.clone()
        })
        .await
        .expect("the connection closes");
    let away = discord
        .post_user_message(INCIDENTS, BOB, "written while the bot was away")
        .expect("bob writes");
    let Delivery::Buffered { seq: away_seq } = away.delivery else {
        panic!("expected a buffered dispatch, got {:?}", away.delivery)
    };
    discord.hold_gateway(false);
    seen(&mut rx, "RESUMED", |s| (*s == Seen::Resumed).then_some(())).await;
    seen(&mut rx, "the buffered message", |s| match s {
        Seen::Message { id, .. } if *id == away.message_id => Some(()),
        _ => None,
    })
    .await;
    let resume = discord.read(|s| s.resumes()[0].clone());
    assert_eq!(resume.session_id, session);
    assert_eq!(resume.replayed.as_deref().map(|r| r.contains(&away_seq)), Some(true));
    let after = discord
        .post_user_message(INCIDENTS, CAROL, "after the resume")
        .expect("carol writes");
    assert!(matches!(after.delivery, Delivery::Sent { .. }));
    seen(&mut rx, "a live message after the resume", |s| match s {
        Seen::Message { id, .. } if *id == after.message_id => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(
        count(&rx, |s| matches!(s, Seen::Message { id, .. } if *id == away.message_id)),
        1
    );
    // Serenity resumes on the URL from GET /gateway, not on READY's resume_gateway_url.
    let targets: Vec<String> = discord.read(|s| s.connections().iter().map(|c| c.target.clone()).collect());
    assert_eq!(targets, vec!["/gw?v=10".to_string(), "/gw?v=10".to_string()]);

    // A bare TCP close (no close frame) is noticed and resumed too.
    assert!(discord.drop_gateway(DropMode::Tcp));
    let lost = discord
        .post_user_message(INCIDENTS, ALICE, "written after a TCP drop")
        .expect("alice writes");
    seen(&mut rx, "the message after a TCP drop", |s| match s {
        Seen::Message { id, .. } if *id == lost.message_id => Some(()),
        _ => None,
    })
    .await;
    seen_times(&mut rx, "RESUMED", 2, |s| *s == Seen::Resumed).await;
    let live = discord
        .post_user_message(INCIDENTS, CAROL, "live again")
        .expect("carol writes");
    seen(&mut rx, "a live message after the second resume", |s| match s {
        Seen::Message { id, .. } if *id == live.message_id => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(
        count(&rx, |s| matches!(s, Seen::Message { id, .. } if *id == lost.message_id)),
        1
    );
    assert_eq!(
        discord.read(|s| s.connections()[1].closed.clone()),
        Some(Closed::DroppedByStandIn)
    );

    // A 429 with Retry-After is honoured by serenity's ratelimiter: the same request again
    // after the delay.
    discord.inject(
        Fault::RateLimited {
            retry_after: Duration::from_millis(400),
            global: false,
        },
        CallFilter::matching("POST", "/channels/200/messages"),
        1,
    );
    let before = discord.calls().len();
    discord
        .post_user_message(INCIDENTS, CAROL, "!ping")
        .expect("carol writes");
    let pong = discord
        .wait_until("pong after a 429", WAIT, |s| {
            s.calls()[before..]
                .iter()
                .find(|c| c.is("POST /channels/{channel_id}/messages") && c.status == 200)
                .cloned()
        })
        .await
        .expect("serenity retries after the 429");
    let limited: Vec<_> = discord.calls()[before..]
        .iter()
        .filter(|c| c.status == 429)
        .cloned()
        .collect();
    assert_eq!(limited.len(), 1);
    assert!(limited[0].injected);
    assert!(pong.since_start - limited[0].since_start >= Duration::from_millis(400));
    assert_eq!(pong.body.as_ref().expect("body")["content"], "pong");

    // No call went anywhere the stand-in does not know.
    let unknown: Vec<String> = discord
        .calls()
        .iter()
        .filter(|c| c.route.is_none())
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert!(unknown.is_empty(), "unexpected calls: {unknown:?}");
    shards.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serenity_through_the_proxy_setting_reaches_it_too() {
    let discord = DiscordStandIn::start(StandInConfig::example(TOKEN))
        .await
        .expect("stand-in starts");
    let (mut rx, shards) = start_bot(&discord, true).await;
    discord.wait_ready(WAIT).await.expect("serenity identifies");
    seen(&mut rx, "GUILD_CREATE", |s| {
        matches!(s, Seen::Guild { .. }).then_some(())
    })
    .await;
    discord.post_user_message(INCIDENTS, BOB, "!ping").expect("bob writes");
    let pong = discord
        .wait_for_call("pong", WAIT, |c| c.is("POST /channels/{channel_id}/messages"))
        .await
        .expect("the bot answers");
    assert!(!pong.tls);
    assert_eq!(pong.status, 200);
    assert_eq!(pong.body.as_ref().expect("body")["content"], "pong");
    shards.shutdown_all().await;
}

/// A plain HTTP client, to show the stand-in refuses what Discord refuses.
struct Raw {
    base: String,
    client: reqwest::Client,
}

impl Raw {
    async fn send(&self, method: &str, path: &str, auth: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method");
        let mut req = self
            .client
            .request(method, format!("{}/api/v10{path}", self.base))
            .header("user-agent", "DiscordBot (https://example.invalid, 1.0)");
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body.to_string());
        }
        let res = req.send().await.expect("the stand-in answers");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, body)
    }
}

#[tokio::test]
async fn the_stand_in_refuses_what_discord_refuses() {
    let discord = DiscordStandIn::start(StandInConfig::example(TOKEN))
        .await
        .expect("stand-in starts");
    let raw = Raw {
        base: discord.http_base(),
        client: reqwest::Client::new(),
    };
    let bot = format!("Bot {TOKEN}");
    let auth = Some(bot.as_str());
    let button = |id: &str| json!({"type": 2, "style": 1, "label": "x", "custom_id": id});

    // Authentication.
    assert_eq!(raw.send("GET", "/gateway", None, None).await.0, 200);
    assert_eq!(raw.send("GET", "/gateway/bot", None, None).await.0, 401);
    assert_eq!(
        raw.send(
            "POST",
            "/channels/200/messages",
            Some("Bearer x"),
            Some(json!({"content": "x"}))
        )
        .await
        .0,
        401
    );
    // Bodies.
    let six =
        json!({"components": [{"type": 1, "components": (0..6).map(|i| button(&i.to_string())).collect::<Vec<_>>()}]});
    let (status, body) = raw.send("POST", "/channels/200/messages", auth, Some(six)).await;
    assert_eq!((status, body["code"].as_u64()), (400, Some(50035)));
    assert_eq!(
        body["errors"]["components"]["0"]["components"]["_errors"][0]["code"],
        "BASE_TYPE_BAD_LENGTH"
    );
    let long_id = json!({"components": [{"type": 1, "components": [button(&"x".repeat(101))]}]});
    assert_eq!(
        raw.send("POST", "/channels/200/messages", auth, Some(long_id)).await.0,
        400
    );
    assert_eq!(
        raw.send("POST", "/channels/200/messages", auth, Some(json!({"content": ""})))
            .await
            .1["code"],
        50006
    );
    assert_eq!(
        raw.send("POST", "/channels/999/messages", auth, Some(json!({"content": "x"})))
            .await
            .1["code"],
        10003
    );
    // Unknown routes are answered 404 and recorded.
    assert_eq!(raw.send("GET", "/guilds/100/members", auth, None).await.0, 404);
    assert!(
        discord
            .calls()
            .iter()
            .any(|c| c.route.is_none() && c.path == "/api/v10/guilds/100/members")
    );
    // Nothing above changed any state.
    assert_eq!(discord.read(|s| s.messages().count()), 0);

    // A real post, then edits and threads.
    let (status, posted) = raw
        .send(
            "POST",
            "/channels/200/messages",
            auth,
            Some(json!({"content": "card", "components": [{"type": 1, "components": [button("approve:1")]}]})),
        )
        .await;
    assert_eq!(status, 200);
    let card: u64 = posted["id"].as_str().expect("id").parse().expect("snowflake");
    assert_eq!(posted["author"]["bot"], true);
    let user_message = discord.post_user_message(200, ALICE, "hello").expect("alice writes");
    let (status, body) = raw
        .send(
            "PATCH",
            &format!("/channels/200/messages/{}", user_message.message_id),
            auth,
            Some(json!({"content": "x"})),
        )
        .await;
    assert_eq!((status, body["code"].as_u64()), (403, Some(50005)));
    let thread_path = format!("/channels/200/messages/{card}/threads");
    assert_eq!(
        raw.send("POST", &thread_path, auth, Some(json!({"name": "run"})))
            .await
            .0,
        201
    );
    assert_eq!(
        raw.send("POST", &thread_path, auth, Some(json!({"name": "run"})))
            .await
            .1["code"],
        160004
    );

    // Interactions: a follow-up before the response, a second response, a late response.
    let first = discord.click(card, "approve:1", BOB).expect("bob sees the button");
    assert_eq!(first.delivery, Delivery::NoSession);
    let app = discord.config().application_id;
    let followup = format!("/webhooks/{app}/{}", first.token);
    assert_eq!(
        raw.send("POST", &followup, None, Some(json!({"content": "later"})))
            .await
            .1["code"],
        10015
    );
    let callback = format!("/interactions/{}/{}/callback", first.interaction_id, first.token);
    assert_eq!(raw.send("POST", &callback, None, Some(json!({"type": 6}))).await.0, 204);
    let (status, body) = raw.send("POST", &callback, None, Some(json!({"type": 6}))).await;
    assert_eq!((status, body["code"].as_u64()), (400, Some(40060)));
    let (status, edited) = raw
        .send(
            "PATCH",
            &format!("/webhooks/{app}/{}/messages/@original", first.token),
            None,
            Some(json!({"content": "approved", "components": []})),
        )
        .await;
    assert_eq!((status, edited["id"].as_str()), (200, Some(card.to_string().as_str())));
    assert_eq!(
        raw.send("POST", &followup, None, Some(json!({"content": "done", "flags": 64})))
            .await
            .0,
        200
    );
    assert_eq!(
        raw.send("POST", &callback, Some("Bot wrong"), Some(json!({"type": 6})))
            .await
            .0,
        401
    );
    let record = discord.interaction(first.interaction_id).expect("recorded");
    assert_eq!(
        record.callbacks.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![204, 400]
    );
    assert_eq!(record.followups.len(), 1);

    let card2 = raw
        .send(
            "POST",
            "/channels/201/messages",
            auth,
            Some(json!({"content": "again", "components": [{"type": 1, "components": [button("deny:2")]}]})),
        )
        .await
        .1["id"]
        .as_str()
        .expect("id")
        .parse::<u64>()
        .expect("snowflake");
    let late = discord.click(card2, "deny:2", CAROL).expect("carol sees the button");
    assert!(discord.age_interaction(late.interaction_id, Duration::from_secs(4)));
    let late_callback = format!("/interactions/{}/{}/callback", late.interaction_id, late.token);
    let (status, body) = raw
        .send(
            "POST",
            &late_callback,
            None,
            Some(json!({"type": 4, "data": {"content": "x"}})),
        )
        .await;
    assert_eq!((status, body["code"].as_u64()), (404, Some(10062)));
    assert!(discord.age_interaction(late.interaction_id, Duration::from_secs(15 * 60)));
    let late_followup = format!("/webhooks/{app}/{}", late.token);
    assert_eq!(
        raw.send("POST", &late_followup, None, Some(json!({"content": "x"})))
            .await
            .1["code"],
        50027
    );
    assert!(matches!(
        discord.click(card2, "nope", CAROL),
        Err(baton_e2e::discord::StandInError::NoSuchButton { .. })
    ));

    // A deferred response (type 5) shows "thinking…" until @original is edited.
    let third = discord.click(card2, "deny:2", BOB).expect("bob sees the button");
    let deferred = format!("/interactions/{}/{}/callback", third.interaction_id, third.token);
    assert_eq!(
        raw.send("POST", &deferred, None, Some(json!({"type": 5, "data": {"flags": 64}})))
            .await
            .0,
        204
    );
    let thinking = discord
        .interaction(third.interaction_id)
        .and_then(|i| i.original_message)
        .expect("a placeholder");
    assert_eq!(discord.message(thinking).expect("kept").flags(), 64 | 128);
    let original = format!("/webhooks/{app}/{}/messages/@original", third.token);
    let (status, filled) = raw
        .send("PATCH", &original, None, Some(json!({"content": "denied"})))
        .await;
    assert_eq!((status, filled["flags"].as_u64()), (200, Some(64)));
    assert_eq!(discord.message(thinking).expect("kept").content(), "denied");

    // Injected faults answer the next matching calls, then the real thing resumes.
    discord.inject(Fault::Status(503), CallFilter::matching("GET", "/users/@me"), 2);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(raw.send("GET", "/users/@me", auth, None).await.0);
    }
    assert_eq!(statuses, vec![503, 503, 200]);

    // Rate limit: 5 per 5 s per channel, then 429 with Retry-After.
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(
            raw.send(
                "POST",
                "/channels/300/messages",
                auth,
                Some(json!({"content": format!("dm {i}")})),
            )
            .await
            .0,
        );
    }
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429]);
    let limited = discord
        .calls()
        .into_iter()
        .rev()
        .find(|c| c.status == 429)
        .expect("a 429");
    assert!(limited.response_header("retry-after").is_some());
    let fifth = discord.calls().into_iter().rev().nth(1).expect("five calls before");
    assert_eq!(fifth.response_header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(fifth.response_header("x-ratelimit-limit"), Some("5"));
}

/// Discord's `enforce_nonce`: a create repeated with the same nonce (a client retrying after a
/// lost answer) returns the message made the first time; a lost answer still made the message.
#[tokio::test]
async fn an_enforced_nonce_makes_one_message_however_often_it_is_sent() {
    let discord = DiscordStandIn::start(StandInConfig::example(TOKEN))
        .await
        .expect("stand-in starts");
    let raw = Raw {
        base: discord.http_base(),
        client: reqwest::Client::new(),
    };
    let bot = format!("Bot {TOKEN}");
    let auth = Some(bot.as_str());
    let body = |content: &str, nonce: &str, enforce: bool| json!({"content": content, "nonce": nonce, "enforce_nonce": enforce});
    discord.inject(
        Fault::LostAnswer(502),
        CallFilter::matching("POST", "/channels/200/messages"),
        1,
    );
    let (status, _) = raw
        .send("POST", "/channels/200/messages", auth, Some(body("one", "n.1", true)))
        .await;
    assert_eq!(status, 502, "the answer is lost");
    let (status, again) = raw
        .send("POST", "/channels/200/messages", auth, Some(body("one", "n.1", true)))
        .await;
    assert_eq!(status, 200);
    let (_, other) = raw
        .send("POST", "/channels/200/messages", auth, Some(body("two", "n.2", true)))
        .await;
    let (_, unenforced) = raw
        .send("POST", "/channels/200/messages", auth, Some(body("one", "n.1", false)))
        .await;
    assert_ne!(again["id"], other["id"]);
    assert_ne!(
        again["id"], unenforced["id"],
        "without enforce_nonce a nonce is only echoed"
    );
    let contents: Vec<String> = discord.read(|s| s.messages().map(|m| m.content().to_string()).collect());
    assert_eq!(contents, ["one", "two", "one"], "one message per enforced nonce");
    assert_eq!(again["nonce"], "n.1");
    let (status, bad) = raw
        .send(
            "POST",
            "/channels/200/messages",
            auth,
            Some(json!({"content": "x", "enforce_nonce": "yes"})),
        )
        .await;
    assert_eq!((status, bad["code"].as_u64()), (400, Some(50035)));
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw gateway client, to show what the gateway refuses.
async fn open(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("the gateway accepts websockets")
        .0
}

/// The next text frame as JSON, or the close code.
async fn next(ws: &mut Ws) -> Result<Value, Option<u16>> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the gateway answers in time");
        match frame {
            Some(Ok(WsMessage::Text(t))) => return Ok(serde_json::from_str(&t).expect("the gateway sends JSON")),
            Some(Ok(WsMessage::Close(f))) => return Err(f.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(None),
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    use futures::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(v.to_string()))
        .await
        .expect("the gateway reads");
}

fn identify(token: &str, intents: u64) -> Value {
    json!({"op": 2, "d": {"token": token, "intents": intents,
        "properties": {"os": "linux", "browser": "raw", "device": "raw"}}})
}

/// Identifies with `intents` and reads HELLO, READY and (with GUILDS) GUILD_CREATE.
async fn identified(url: &str, intents: u64) -> (Ws, String) {
    let mut ws = open(url).await;
    assert_eq!(next(&mut ws).await.expect("HELLO")["op"], 10);
    send(&mut ws, identify(TOKEN, intents)).await;
    let ready = next(&mut ws).await.expect("READY");
    assert_eq!((ready["t"].as_str(), ready["s"].as_u64()), (Some("READY"), Some(1)));
    if intents & baton_e2e::discord::intents::GUILDS != 0 {
        assert_eq!(next(&mut ws).await.expect("GUILD_CREATE")["t"], "GUILD_CREATE");
    }
    let session = ready["d"]["session_id"].as_str().expect("a session id").to_string();
    (ws, session)
}

#[tokio::test]
async fn the_gateway_refuses_what_discord_refuses() {
    use baton_e2e::discord::intents::{GUILD_MEMBERS, GUILD_MESSAGES, GUILDS};
    let discord = DiscordStandIn::start(StandInConfig::example(TOKEN))
        .await
        .expect("stand-in starts");
    let url = format!("{}?v=10", discord.gateway_url());

    let mut old = open(&format!("{}?v=9", discord.gateway_url())).await;
    assert_eq!(next(&mut old).await, Err(Some(4012)));
    for (token, intents, code) in [
        ("wrong", GUILDS, 4004),
        (TOKEN, GUILDS | GUILD_MEMBERS, 4014),
        (TOKEN, 1 << 30, 4013),
    ] {
        let mut ws = open(&url).await;
        assert_eq!(next(&mut ws).await.expect("HELLO")["op"], 10);
        send(&mut ws, identify(token, intents)).await;
        assert_eq!(next(&mut ws).await, Err(Some(code)), "{token} {intents}");
    }
    let mut early = open(&url).await;
    next(&mut early).await.expect("HELLO");
    send(&mut early, json!({"op": 3, "d": {"status": "online"}})).await;
    assert_eq!(next(&mut early).await, Err(Some(4003)));
    assert!(
        discord.read(|s| s.session_id().is_none()),
        "no refused IDENTIFY made a session"
    );

    // Without MESSAGE_CONTENT, others' guild messages arrive empty unless they mention the bot;
    // without DIRECT_MESSAGES, DMs do not arrive at all.
    let (mut ws, session) = identified(&url, GUILDS | GUILD_MESSAGES).await;
    let hidden = discord
        .post_user_message(INCIDENTS, ALICE, "!failover xmpp EdgePool2")
        .expect("alice writes");
    let frame = next(&mut ws).await.expect("MESSAGE_CREATE");
    assert_eq!(
        (frame["t"].as_str(), frame["d"]["content"].as_str()),
        (Some("MESSAGE_CREATE"), Some(""))
    );
    assert_eq!(frame["d"]["id"].as_str(), Some(hidden.message_id.to_string().as_str()));
    discord
        .post_user_message(INCIDENTS, ALICE, "<@900> status")
        .expect("alice writes");
    assert_eq!(
        next(&mut ws).await.expect("MESSAGE_CREATE")["d"]["content"],
        "<@900> status"
    );
    assert_eq!(
        discord
            .post_user_message(300, ALICE, "psst")
            .expect("alice DMs")
            .delivery,
        Delivery::Filtered
    );
    send(&mut ws, json!({"op": 1, "d": 3})).await;
    assert_eq!(next(&mut ws).await.expect("ACK")["op"], 11);
    send(&mut ws, identify(TOKEN, GUILDS)).await;
    assert_eq!(next(&mut ws).await, Err(Some(4005)));

    // RESUME: a wrong session gets INVALID_SESSION; so does the right one after the client
    // closed with 1000, which ends a session on Discord.
    let mut again = open(&url).await;
    next(&mut again).await.expect("HELLO");
    send(
        &mut again,
        json!({"op": 6, "d": {"token": TOKEN, "session_id": "nope", "seq": 1}}),
    )
    .await;
    assert_eq!(
        next(&mut again).await.expect("INVALID_SESSION"),
        json!({"op": 9, "t": null, "s": null, "d": false})
    );
    let (mut ws, session2) = identified(&url, GUILDS | GUILD_MESSAGES).await;
    assert_ne!(session, session2);
    let normal = tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "bye".into(),
    };
    ws.close(Some(normal)).await.expect("the client closes");
    discord
        .wait_until("the client's close", WAIT, |s| (!s.connected()).then_some(()))
        .await
        .expect("the stand-in notices");
    let mut late = open(&url).await;
    next(&mut late).await.expect("HELLO");
    send(
        &mut late,
        json!({"op": 6, "d": {"token": TOKEN, "session_id": session2, "seq": 2}}),
    )
    .await;
    assert_eq!(next(&mut late).await.expect("INVALID_SESSION")["op"], 9);
}

//! A protocol-faithful local stand-in for Discord (REST API v10 and the JSON gateway) on
//! 127.0.0.1, for testing a bot built on serenity 0.12 without reaching Discord.
//!
//! # Starting it and pointing serenity at it
//!
//! ```ignore
//! let discord = DiscordStandIn::start(StandInConfig::example("test-token")).await?;
//! ```
//!
//! It listens on three loopback ports: plain HTTP ([`DiscordStandIn::http_base`]), HTTPS with a
//! certificate for `discord.com` signed by a throwaway CA ([`DiscordStandIn::https_addr`],
//! [`DiscordStandIn::ca_pem`]), and the gateway ([`DiscordStandIn::gateway_url`], plain `ws://`,
//! which `GET /gateway` hands out). Serenity hard-codes `https://discord.com/api/v10`, so there are
//! two ways in (both exercised by `tests/tests/discord_standin.rs`):
//!
//! - **Production-like (preferred): serenity's ratelimiter stays on.** Give serenity a reqwest
//!   0.12 client that resolves discord.com to the stand-in and trusts only its CA:
//!   ```ignore
//!   let client = reqwest::Client::builder()
//!       .resolve("discord.com", discord.https_addr())
//!       .tls_built_in_root_certs(false)
//!       .add_root_certificate(reqwest::Certificate::from_pem(discord.ca_pem().as_bytes())?)
//!       .build()?;
//!   let http = serenity::http::HttpBuilder::new(token).client(client).build();
//!   let client = serenity::all::ClientBuilder::new_with_http(http, intents)
//!       .event_handler(handler)
//!       .await?;
//!   ```
//!   The adapter only needs a way to take a prepared `reqwest::Client` (or the CA and address).
//! - **Proxy:** `HttpBuilder::new(token).proxy(discord.http_base()).ratelimiter_disabled(true)`.
//!   Serenity honours the proxy only with its ratelimiter off, so 429 handling is not exercised.
//!
//! Serenity's `Client::start` calls `GET /gateway` once, connects to the URL it got with `?v=10`
//! appended, and on reconnect resumes on that same URL, not on READY's `resume_gateway_url`
//! (the stand-in gives that one the path `/resume`, so [`Connection::target`] shows which a client
//! used).
//!
//! # What it checks (a wrong client fails here as it would on Discord)
//!
//! REST (every call is recorded as a [`Call`], unknown routes too, answered `404 {"code":0}`;
//! a known path with the wrong method gets 405):
//! - `Authorization: Bot <token>` on every route except `GET /gateway`; on interaction callbacks
//!   and `/webhooks/{app}/{token}…` the token in the path authenticates and the header is
//!   optional (serenity sends it), but a wrong one is still refused: 401 `{"code":0}`.
//! - `User-Agent: DiscordBot (url, version)` as Discord's docs demand (400 otherwise);
//!   JSON bodies only (`multipart/*` for attachments is refused as not modelled).
//! - Message bodies (create, edit, interaction responses, follow-ups) as Discord validates them:
//!   content ≤ 2000 characters; ≤ 10 embeds, embed field limits and 6000 characters in total;
//!   ≤ 5 action rows (type 1) of 1–5 buttons (type 2: style 1–4 need `custom_id` of 1–100
//!   characters, unique in the message, and a label or emoji; style 5 needs `url` and no
//!   `custom_id`) or one select menu; `allowed_mentions` (`parse` ⊆ users/roles/everyone, not
//!   both `parse: ["users"]` and `users`); `flags` allowed per endpoint (64 EPHEMERAL only in
//!   interaction responses and follow-ups). Errors are Discord's: `400 {"code":50035,"message":
//!   "Invalid Form Body","errors":{"components":{"0":{"components":{"1":{"custom_id":{"_errors":
//!   [{"code":"COMPONENT_CUSTOM_ID_DUPLICATED",…}]}}}}}}}`, `50006 Cannot send an empty
//!   message`, `10003 Unknown Channel`, `10008 Unknown Message`, `50005` editing someone
//!   else's message. Components v2, polls and attachments are refused with a message saying the
//!   stand-in does not model them.
//! - Interaction callbacks: types 4, 5, 6, 7 (and 9, modal) to a component interaction, 204
//!   (200 with a body when `?with_response=true`); a second callback is `400 {"code":40060,
//!   "message":"Interaction has already been acknowledged."}`; one later than the response window
//!   (3 s) or with a wrong token is `404 {"code":10062,"message":"Unknown interaction"}`.
//!   Follow-ups (`POST /webhooks/{app}/{token}`) and `GET/PATCH/DELETE …/messages/@original`
//!   (or a follow-up's id) need an accepted callback first (`404 10015 Unknown Webhook` /
//!   `10008`) and a token younger than 15 min (`401 50027 Invalid Webhook Token`).
//! - `enforce_nonce`: a message create repeating a nonce the bot used in the last 5 minutes
//!   returns the message made then instead of a new one (a client's retry after a lost answer).
//! - Rate limits: every bucketed route answers `X-RateLimit-Limit/-Remaining/-Reset/-Reset-After/
//!   -Bucket`; past [`RateLimit`] calls per window per (route, major id) it answers 429 with
//!   `retry_after` and `Retry-After`, as Discord does (default 5 per 5 s).
//!
//! Gateway (every text frame both ways is a [`GatewayFrame`]):
//! - The URL needs `v=10`, JSON encoding and no transport compression (closes 4012 / 4002 /
//!   4000 otherwise). HELLO first; IDENTIFY must carry the token (with or without `Bot `),
//!   `properties {os, browser, device}`, `intents` with known bits only (4013) and privileged
//!   ones only if [`StandInConfig::privileged_intents_enabled`] has them (4014), `shard` `[0, 1]`
//!   if present (4010); a wrong token closes 4004, a second IDENTIFY 4005, other ops before it
//!   4003, unknown ops 4001, bad JSON 4002. What was asked is kept as an [`Identify`].
//! - READY (with `session_id` and `resume_gateway_url`), then GUILD_CREATE (with GUILDS) with
//!   the guild, its roles, text channels, active threads and the bot's member.
//! - Dispatches obey the session's intents as Discord's do: MESSAGE_* in the guild need
//!   GUILD_MESSAGES, in DMs DIRECT_MESSAGES; without MESSAGE_CONTENT, guild messages from others
//!   that do not mention the bot arrive with empty content, embeds and components.
//!   INTERACTION_CREATE always arrives. The bot's own messages come back as MESSAGE_CREATE (a
//!   bot must ignore itself), edits as MESSAGE_UPDATE, threads as THREAD_CREATE; ephemeral
//!   messages are never dispatched.
//! - Heartbeats (op 1) get op 11. RESUME with the right session and a `seq` not past the
//!   session's replays every dispatch after `seq`, then RESUMED; an unknown or ended session gets
//!   op 9 INVALID_SESSION `false`. A client that closes with 1000/1001 ends its session.
//!
//! # Driving it from a test
//!
//! - People act: [`DiscordStandIn::post_user_message`] (a user, bot or the DM recipient writes),
//!   [`DiscordStandIn::post_webhook_message`], [`DiscordStandIn::click`] (a user clicks a button
//!   on a stored message, e.g. one the bot posted; the INTERACTION_CREATE is built from the
//!   message as it is now and carries `member`, `locale`, `entitlements`,
//!   `attachment_size_limit`, the full `message` and a fresh token). Each says what became of
//!   the dispatch ([`Delivery`]: sent, buffered for replay, filtered by intents, no session).
//!   [`DiscordStandIn::click_with`] edits the payload first (to prove a client drops a
//!   malformed one); [`DiscordStandIn::dispatch_raw`] sends any event.
//! - Trouble: [`DiscordStandIn::drop_gateway`] ([`DropMode`]: close code, bare TCP close,
//!   RECONNECT), [`DiscordStandIn::hold_gateway`] (new connections wait before their handshake,
//!   so a test can dispatch while the bot is surely away), [`DiscordStandIn::end_session`] (the
//!   next RESUME gets INVALID_SESSION), [`DiscordStandIn::inject`] (the next K matching calls get
//!   a 429 or a 5xx, or a 5xx after the call took effect: a lost answer),
//!   [`DiscordStandIn::age_interaction`] (pushes a click into the past to test
//!   the 3 s window and the 15 min token without sleeping), [`DiscordStandIn::request_heartbeat`].
//! - Looking: [`DiscordStandIn::wait_for_call`], [`DiscordStandIn::wait_until`] (any condition
//!   over the [`State`]: calls, frames, connections, identifies, resumes, messages with their
//!   edit history, interactions with their callbacks; woken on every change, bounded by a
//!   timeout whose error lists the last calls and frames), [`DiscordStandIn::read`] and the
//!   cloning shortcuts [`DiscordStandIn::calls`], [`DiscordStandIn::message`],
//!   [`DiscordStandIn::interaction`].
//!
//! ```ignore
//! let posted = discord.post_user_message(200, 1, "!failover xmpp EdgePool2")?;   // alice in #incidents
//! let card = discord
//!     .wait_for_call("the plan card", WAIT, |c| c.is("POST /channels/{channel_id}/messages"))
//!     .await?;
//! let card_id: u64 = card.response.unwrap()["id"].as_str().unwrap().parse()?;
//! let click = discord.click(card_id, "approve:7", 2)?;                            // bob approves
//! let answered = discord
//!     .wait_until("bob's answer", WAIT, |s| s.interaction(click.interaction_id)?.accepted().cloned())
//!     .await?;
//! assert_eq!(answered.kind, Some(7));
//! assert!(discord.message(card_id).unwrap().buttons().is_empty());
//! ```
//!
//! # What serenity 0.12.5 does against it (from `tests/tests/discord_standin.rs`)
//!
//! - IDENTIFY: `token: "Bot …"`, `intents: 33281` for GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT,
//!   `compress: true` (it still reads plain text frames), `properties.browser: "serenity"`.
//! - REST: `Authorization: Bot …` on every call, interaction callbacks included; buttons go out
//!   as `{"type":2,"style":3,"label":"Approve","custom_id":"approve:7","disabled":false}`;
//!   `ephemeral(true)` is `flags: 64`; `UpdateMessage(.. .components(vec![]))` is type 7 with
//!   `components: []`; a 429's `Retry-After` is waited out and the request sent again (only with
//!   its ratelimiter on, i.e. the HTTPS way).
//! - Gateway: it resumes after a close frame (4000) and after a bare TCP close, on the `/gateway`
//!   URL; replayed dispatches reach handlers once. An INTERACTION_CREATE without `locale`,
//!   `entitlements`, `attachment_size_limit`, `token`, `message` or `version` never reaches
//!   `interaction_create` (serenity files it as an unknown event).
//! - Its handlers see the bot's own messages (`author.bot`), as on Discord; a bot must skip them.
//!
//! Not modelled: sharding beyond one shard, zlib/ETF transports, attachments, slash commands,
//! permissions beyond "the bot may post where it is configured", guild member lists, presences.
//! Responses to component interactions are stored as type 19 replies to the clicked message;
//! that detail and the exact `_errors` codes for some fields follow Discord's docs and
//! libraries' records, not a capture from Discord itself.

mod config;
mod gateway;
mod objects;
mod rest;
mod state;
mod tls;
pub mod validate;

pub use config::{ChannelKind, ChannelSpec, GuildSpec, RateLimit, RoleSpec, StandInConfig, UserSpec, intents};
pub use gateway::DropMode;
pub use objects::ATTACHMENT_SIZE_LIMIT;
pub use state::{
    Button, Call, CallFilter, CallbackAttempt, Closed, Connection, Delivery, Direction, Fault, GatewayFrame, Identify,
    InteractionRecord, Origin, Resume, State, StoredMessage,
};

use objects::{ComponentClick, InteractionPlace, MessageParts};
use rand::Rng;
use serde_json::Value;
use state::{Place, Shared};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use validate::AllowedMentions;

/// Why a driver action could not happen.
#[derive(Debug, thiserror::Error)]
pub enum StandInError {
    #[error("unknown channel {0}")]
    UnknownChannel(u64),
    #[error("unknown user {0}")]
    UnknownUser(u64),
    #[error("unknown or deleted message {0}")]
    UnknownMessage(u64),
    #[error("message {message} has no button with custom_id {custom_id:?} (buttons: {present:?})")]
    NoSuchButton {
        message: u64,
        custom_id: String,
        present: Vec<String>,
    },
    #[error("button {custom_id:?} on message {message} is disabled")]
    ButtonDisabled { message: u64, custom_id: String },
    #[error("message {message} is ephemeral and not shown to user {user}")]
    NotVisible { message: u64, user: u64 },
    #[error("user {user} cannot write in DM channel {channel}")]
    NotInDm { channel: u64, user: u64 },
    #[error("webhooks post only in guild channels, not in {0}")]
    WebhookOutsideGuild(u64),
    #[error("timed out after {waited:?} waiting for {what}; recently: {recent}")]
    Timeout {
        what: String,
        waited: Duration,
        recent: String,
    },
}

/// A message the driver posted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Posted {
    pub message_id: u64,
    pub delivery: Delivery,
}

/// A click the driver made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clicked {
    pub interaction_id: u64,
    pub token: String,
    pub delivery: Delivery,
}

/// A running stand-in; everything stops when it is dropped.
pub struct DiscordStandIn {
    shared: Arc<Shared>,
    cfg: StandInConfig,
    http_addr: SocketAddr,
    https_addr: SocketAddr,
    gateway_addr: SocketAddr,
    ca_pem: String,
    cancel: CancellationToken,
}

impl Drop for DiscordStandIn {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl DiscordStandIn {
    /// Binds three ports on 127.0.0.1 and serves until dropped.
    pub async fn start(cfg: StandInConfig) -> anyhow::Result<DiscordStandIn> {
        let http = TcpListener::bind("127.0.0.1:0").await?;
        let https = TcpListener::bind("127.0.0.1:0").await?;
        let gw = TcpListener::bind("127.0.0.1:0").await?;
        let (http_addr, https_addr, gateway_addr) = (http.local_addr()?, https.local_addr()?, gw.local_addr()?);
        let tls = tls::discord_tls()?;
        let gateway_url = format!("ws://{gateway_addr}{}", gateway::GATEWAY_PATH);
        let resume_url = format!("ws://{gateway_addr}{}", gateway::RESUME_PATH);
        let shared = Arc::new(Shared::new(state::State::new(cfg.clone(), gateway_url, resume_url)));
        let cancel = CancellationToken::new();
        tokio::spawn(rest::serve(http, None, shared.clone(), cancel.clone()));
        tokio::spawn(rest::serve(https, Some(tls.acceptor), shared.clone(), cancel.clone()));
        tokio::spawn(gateway::serve(gw, shared.clone(), cancel.clone()));
        Ok(DiscordStandIn {
            shared,
            cfg,
            http_addr,
            https_addr,
            gateway_addr,
            ca_pem: tls.ca_pem,
            cancel,
        })
    }

    pub fn config(&self) -> &StandInConfig {
        &self.cfg
    }

    /// `http://127.0.0.1:<port>`: the base for serenity's `HttpBuilder::proxy`.
    pub fn http_base(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Where `discord.com:443` should resolve to: the HTTPS listener.
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// The CA that signed the `discord.com` certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// `ws://127.0.0.1:<port>/gw`, as `GET /gateway` answers.
    pub fn gateway_url(&self) -> String {
        format!("ws://{}{}", self.gateway_addr, gateway::GATEWAY_PATH)
    }

    // ---- people act ----

    /// `user` writes `content` in `channel` (a guild channel, a thread, or the DM channel whose
    /// recipient `user` is).
    pub fn post_user_message(&self, channel: u64, user: u64, content: &str) -> Result<Posted, StandInError> {
        self.shared.with(|s| {
            let author = s.cfg.user(user).cloned().ok_or(StandInError::UnknownUser(user))?;
            let place = s.channel_place(channel).ok_or(StandInError::UnknownChannel(channel))?;
            if let Place::Dm { recipient } = place
                && recipient != user
                && user != s.cfg.bot.id
            {
                return Err(StandInError::NotInDm { channel, user });
            }
            let id = s.next_id();
            let (mentions, roles, everyone) = s.mentions(content, &AllowedMentions::all());
            let mut parts = MessageParts::new(id, channel, objects::user(&author), content, s.now_ts());
            parts.mentions = mentions;
            parts.mention_roles = roles;
            parts.mention_everyone = everyone;
            Ok(store_and_dispatch(s, parts))
        })
    }

    /// The webhook `webhook_id` named `name` posts `content` in the guild channel `channel`.
    pub fn post_webhook_message(
        &self,
        channel: u64,
        webhook_id: u64,
        name: &str,
        content: &str,
    ) -> Result<Posted, StandInError> {
        self.shared.with(|s| {
            match s.channel_place(channel) {
                None => return Err(StandInError::UnknownChannel(channel)),
                Some(Place::Dm { .. }) => return Err(StandInError::WebhookOutsideGuild(channel)),
                Some(_) => {}
            }
            let id = s.next_id();
            let mut parts = MessageParts::new(
                id,
                channel,
                objects::webhook_author(webhook_id, name),
                content,
                s.now_ts(),
            );
            parts.webhook_id = Some(webhook_id);
            Ok(store_and_dispatch(s, parts))
        })
    }

    /// `user` clicks the button `custom_id` on message `message_id`.
    pub fn click(&self, message_id: u64, custom_id: &str, user: u64) -> Result<Clicked, StandInError> {
        self.click_with(message_id, custom_id, user, |_| {})
    }

    /// Like [`DiscordStandIn::click`], with `edit` applied to the INTERACTION_CREATE's `d` before
    /// it is sent (to show what a client does with a malformed payload). The interaction is
    /// registered either way, so callbacks to it are answered as usual.
    pub fn click_with(
        &self,
        message_id: u64,
        custom_id: &str,
        user: u64,
        edit: impl FnOnce(&mut Value),
    ) -> Result<Clicked, StandInError> {
        self.shared.with(|s| {
            let clicker = s.cfg.user(user).cloned().ok_or(StandInError::UnknownUser(user))?;
            let msg = s
                .message(message_id)
                .filter(|m| !m.deleted)
                .cloned()
                .ok_or(StandInError::UnknownMessage(message_id))?;
            if msg.ephemeral_for.is_some_and(|owner| owner != user) {
                return Err(StandInError::NotVisible {
                    message: message_id,
                    user,
                });
            }
            let buttons = msg.buttons();
            let Some(button) = buttons.iter().find(|b| b.custom_id.as_deref() == Some(custom_id)) else {
                return Err(StandInError::NoSuchButton {
                    message: message_id,
                    custom_id: custom_id.to_string(),
                    present: buttons.iter().filter_map(|b| b.custom_id.clone()).collect(),
                });
            };
            if button.disabled {
                return Err(StandInError::ButtonDisabled {
                    message: message_id,
                    custom_id: custom_id.to_string(),
                });
            }
            let place = s
                .channel_place(msg.channel_id)
                .ok_or(StandInError::UnknownChannel(msg.channel_id))?;
            let mut channel = s
                .channel_json(msg.channel_id)
                .ok_or(StandInError::UnknownChannel(msg.channel_id))?;
            channel["permissions"] = Value::from(objects::MEMBER_PERMISSIONS);
            let place = match place {
                Place::Dm { recipient } if recipient != user => {
                    return Err(StandInError::NotInDm {
                        channel: msg.channel_id,
                        user,
                    });
                }
                Place::Dm { .. } => InteractionPlace::Dm { channel },
                _ => InteractionPlace::Guild { cfg: &s.cfg, channel },
            };
            let id = s.ids.next(std::time::SystemTime::now());
            let token = interaction_token();
            let mut d = objects::component_interaction(&ComponentClick {
                id,
                application_id: s.cfg.application_id,
                token: &token,
                custom_id,
                component_id: button.id,
                clicker: &clicker,
                joined_at: &s.joined_at,
                channel_id: msg.channel_id,
                message: &msg.json,
                place,
            });
            edit(&mut d);
            s.interactions.insert(
                id,
                InteractionRecord {
                    id,
                    token: token.clone(),
                    custom_id: custom_id.to_string(),
                    message_id,
                    channel_id: msg.channel_id,
                    user_id: user,
                    callbacks: Vec::new(),
                    original_message: None,
                    followups: Vec::new(),
                    created: Instant::now(),
                },
            );
            let delivery = s.dispatch("INTERACTION_CREATE", d, 0);
            Ok(Clicked {
                interaction_id: id,
                token,
                delivery,
            })
        })
    }

    /// Sends any dispatch `t` with payload `d` (no intent filtering).
    pub fn dispatch_raw(&self, t: &str, d: Value) -> Delivery {
        self.shared.with(|s| s.dispatch(t, d, 0))
    }

    // ---- trouble ----

    /// Ends the current gateway connection as `mode` says; dispatches from now on are buffered
    /// until the client resumes. False when no connection was attached.
    pub fn drop_gateway(&self, mode: DropMode) -> bool {
        self.shared.with(|s| gateway::drop_connection(s, mode))
    }

    /// While held, new gateway connections wait before their websocket handshake.
    pub fn hold_gateway(&self, hold: bool) {
        self.shared.hold.send_replace(hold);
    }

    /// Ends the session: the next RESUME gets INVALID_SESSION (`d: false`).
    pub fn end_session(&self) {
        self.shared.with(|s| {
            if let Some(session) = s.session.as_mut() {
                session.resumable = false;
            }
        })
    }

    /// Sends op 1 to the connected client, which must heartbeat at once.
    pub fn request_heartbeat(&self) -> bool {
        self.shared.with(gateway::request_heartbeat)
    }

    /// The next `count` calls that `filter` accepts get `fault` instead of an answer.
    pub fn inject(&self, fault: Fault, filter: CallFilter, count: usize) {
        if count == 0 {
            return;
        }
        self.shared.with(|s| {
            s.faults.push_back(state::PendingFault {
                fault,
                filter,
                remaining: count,
            })
        })
    }

    /// Moves interaction `id`'s click `by` into the past. False for an unknown interaction.
    pub fn age_interaction(&self, id: u64, by: Duration) -> bool {
        self.shared.with(|s| match s.interactions.get_mut(&id) {
            Some(i) => match i.created.checked_sub(by) {
                Some(earlier) => {
                    i.created = earlier;
                    true
                }
                None => false,
            },
            None => false,
        })
    }

    // ---- looking ----

    /// Runs `f` on the current state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        self.shared.read(f)
    }

    /// A copy of every recorded call.
    pub fn calls(&self) -> Vec<Call> {
        self.read(|s| s.calls().to_vec())
    }

    /// Message `id` as it is now.
    pub fn message(&self, id: u64) -> Option<StoredMessage> {
        self.read(|s| s.message(id).cloned())
    }

    /// Interaction `id` with its callbacks.
    pub fn interaction(&self, id: u64) -> Option<InteractionRecord> {
        self.read(|s| s.interaction(id).cloned())
    }

    /// Waits until `f` finds something in the state, at most `timeout`; `what` names it in the
    /// error.
    pub async fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&State) -> Option<T>,
    ) -> Result<T, StandInError> {
        let mut changes = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            if let Some(found) = self.read(&mut f) {
                return Ok(found);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    if let Some(found) = self.read(&mut f) {
                        return Ok(found);
                    }
                    return Err(StandInError::Timeout {
                        what: what.to_string(),
                        waited: timeout,
                        recent: self.read(summary),
                    });
                }
            }
        }
    }

    /// Waits for the first recorded call (from the start) that `matches`.
    pub async fn wait_for_call(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&Call) -> bool,
    ) -> Result<Call, StandInError> {
        self.wait_until(what, timeout, |s| s.calls().iter().find(|c| matches(c)).cloned())
            .await
    }

    /// Waits until a client identified successfully and is connected; gives its IDENTIFY.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Identify, StandInError> {
        self.wait_until("a successful IDENTIFY", timeout, |s| {
            if !s.connected() {
                return None;
            }
            s.identifies().iter().rev().find(|i| i.outcome.is_ok()).cloned()
        })
        .await
    }
}

fn store_and_dispatch(s: &mut State, parts: MessageParts) -> Posted {
    let id = parts.id;
    let channel_id = parts.channel_id;
    let json = objects::message(&parts);
    s.messages.insert(
        id,
        StoredMessage {
            id,
            channel_id,
            json,
            history: Vec::new(),
            ephemeral_for: None,
            deleted: false,
            origin: Origin::Driver,
        },
    );
    let delivery = s.dispatch_message("MESSAGE_CREATE", id);
    Posted {
        message_id: id,
        delivery,
    }
}

/// A fresh interaction token, shaped like Discord's (base64 of "interaction:" then random).
fn interaction_token() -> String {
    let mut rng = rand::rng();
    let tail: String = (0..80)
        .map(|_| {
            let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            alphabet[rng.random_range(0..alphabet.len())] as char
        })
        .collect();
    format!("aW50ZXJhY3Rpb246{tail}")
}

/// The last calls and frames, for timeout errors.
fn summary(s: &State) -> String {
    let calls: Vec<String> = s
        .calls()
        .iter()
        .rev()
        .take(8)
        .rev()
        .map(|c| format!("{} {} -> {}", c.method, c.path, c.status))
        .collect();
    let frames: Vec<String> = s
        .frames()
        .iter()
        .rev()
        .take(8)
        .rev()
        .map(|f| {
            let dir = if f.direction == Direction::FromClient {
                "<-"
            } else {
                "->"
            };
            match f.event() {
                Some(t) => format!("{dir} op{} {t} s={}", f.op().unwrap_or(99), f.seq().unwrap_or(0)),
                None => format!("{dir} op{}", f.op().unwrap_or(99)),
            }
        })
        .collect();
    format!("calls [{}]; frames [{}]", calls.join(", "), frames.join(", "))
}

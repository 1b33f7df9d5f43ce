//! The stand-in's world behind one lock: what was recorded (REST calls, gateway frames,
//! connections, IDENTIFYs, RESUMEs), what exists (messages with their edit history, threads,
//! interactions with their callbacks) and the gateway session with its dispatch log. REST and
//! gateway handlers and the test driver all change it through [`Shared::with`], which wakes
//! every waiter.

use super::config::{ChannelKind, ChannelSpec, StandInConfig, UserSpec, intents};
use super::objects::{self, MessageParts, Snowflakes, ThreadSpec};
use super::validate::{AllowedMentions, ApiError, MessageBody, flags};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};

/// The lock, the change counter waiters watch, and the gateway's "hold new connections" switch.
pub(super) struct Shared {
    state: Mutex<State>,
    pub(super) changed: watch::Sender<u64>,
    pub(super) hold: watch::Sender<bool>,
}

impl Shared {
    pub(super) fn new(state: State) -> Shared {
        Shared {
            state: Mutex::new(state),
            changed: watch::channel(0).0,
            hold: watch::channel(false).0,
        }
    }

    /// Runs `f` on the state and tells every waiter that something may have changed.
    pub(super) fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let out = {
            let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut state)
        };
        self.changed.send_modify(|n| *n += 1);
        out
    }

    /// Reads the state without waking anyone.
    pub(super) fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&state)
    }
}

/// One HTTP request the stand-in answered, in arrival order.
#[derive(Clone, Debug)]
pub struct Call {
    /// Position in the record, from 0.
    pub index: usize,
    pub at: SystemTime,
    /// Time since the stand-in started.
    pub since_start: Duration,
    /// Whether it came over the HTTPS (`discord.com`) listener.
    pub tls: bool,
    pub method: String,
    /// The full path, `/api/v10/...`.
    pub path: String,
    pub query: Option<String>,
    /// Header names in lower case, values as sent.
    pub headers: Vec<(String, String)>,
    /// The body when it was JSON.
    pub body: Option<Value>,
    /// The body as text (empty when there was none).
    pub raw_body: String,
    /// The route template that matched, e.g. `POST /channels/{channel_id}/messages`; `None` for
    /// a path the stand-in does not know.
    pub route: Option<&'static str>,
    pub status: u16,
    pub response: Option<Value>,
    /// The answer's headers (rate-limit headers, `retry-after`), names in lower case.
    pub response_headers: Vec<(String, String)>,
    /// Whether the answer was an injected fault.
    pub injected: bool,
}

impl Call {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// The value of the answer's header `name` (case-insensitive).
    pub fn response_header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.response_headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this call matched `route` (e.g. `"POST /channels/{channel_id}/messages"`).
    pub fn is(&self, route: &str) -> bool {
        self.route == Some(route)
    }
}

/// Which way a gateway frame went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    FromClient,
    ToClient,
}

/// One websocket text frame, in either direction.
#[derive(Clone, Debug)]
pub struct GatewayFrame {
    pub at: SystemTime,
    pub connection: u64,
    pub direction: Direction,
    pub payload: Value,
}

impl GatewayFrame {
    pub fn op(&self) -> Option<u64> {
        self.payload.get("op").and_then(Value::as_u64)
    }
    /// The dispatch name (`t`) of an op 0 frame.
    pub fn event(&self) -> Option<&str> {
        self.payload.get("t").and_then(Value::as_str)
    }
    pub fn seq(&self) -> Option<u64> {
        self.payload.get("s").and_then(Value::as_u64)
    }
}

/// One websocket connection to the gateway.
#[derive(Clone, Debug)]
pub struct Connection {
    pub id: u64,
    /// The request target, e.g. `/gw?v=10`.
    pub target: String,
    pub opened: SystemTime,
    /// How it ended, once it has: who closed and with which code.
    pub closed: Option<Closed>,
}

/// How a gateway connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The stand-in sent a close frame with this code.
    ByStandIn { code: u16, reason: String },
    /// The stand-in dropped the TCP connection without a close frame.
    DroppedByStandIn,
    /// The client sent a close frame (code, if any).
    ByClient { code: Option<u16> },
    /// The socket ended without a close frame from the client.
    Lost,
}

/// An IDENTIFY as received, and what came of it.
#[derive(Clone, Debug)]
pub struct Identify {
    pub connection: u64,
    /// `token` as sent (serenity sends `Bot <token>`).
    pub token: String,
    pub intents: Option<u64>,
    pub properties: Value,
    pub compress: Option<bool>,
    pub large_threshold: Option<u64>,
    pub shard: Option<Value>,
    pub presence: Option<Value>,
    /// The session made, or the close code the stand-in answered with.
    pub outcome: Result<String, u16>,
}

/// A RESUME as received, and what came of it.
#[derive(Clone, Debug)]
pub struct Resume {
    pub connection: u64,
    pub session_id: String,
    pub seq: Option<u64>,
    /// The sequence numbers replayed before RESUMED, or `None` when the stand-in answered
    /// INVALID_SESSION (or closed).
    pub replayed: Option<Vec<u64>>,
}

/// Where a stored message came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Posted by the driver as a user, a bot or a webhook.
    Driver,
    /// Posted by the bot through `POST /channels/{id}/messages`.
    Rest,
    /// Made by an interaction callback (type 4 or 5) or a follow-up.
    Interaction { interaction_id: u64 },
}

/// A message as it is now, with every earlier version.
#[derive(Clone, Debug)]
pub struct StoredMessage {
    pub id: u64,
    pub channel_id: u64,
    /// The current message object (REST shape).
    pub json: Value,
    /// Earlier versions, oldest first.
    pub history: Vec<Value>,
    /// For an ephemeral message: the only user who sees it.
    pub ephemeral_for: Option<u64>,
    pub deleted: bool,
    pub origin: Origin,
}

/// A button as it appears on a stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Button {
    pub custom_id: Option<String>,
    pub label: Option<String>,
    pub style: u64,
    pub disabled: bool,
    /// Discord's numeric component id.
    pub id: Option<u64>,
}

impl StoredMessage {
    pub fn content(&self) -> &str {
        self.json["content"].as_str().unwrap_or("")
    }

    pub fn flags(&self) -> u64 {
        self.json["flags"].as_u64().unwrap_or(0)
    }

    pub fn author_id(&self) -> u64 {
        self.json["author"]["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// Every button of every action row, in order.
    pub fn buttons(&self) -> Vec<Button> {
        let rows = self.json["components"].as_array().cloned().unwrap_or_default();
        rows.iter()
            .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
            .filter(|c| c["type"] == 2)
            .map(|c| Button {
                custom_id: c["custom_id"].as_str().map(str::to_string),
                label: c["label"].as_str().map(str::to_string),
                style: c["style"].as_u64().unwrap_or(0),
                disabled: c["disabled"].as_bool().unwrap_or(false),
                id: c["id"].as_u64(),
            })
            .collect()
    }
}

/// One attempt at an interaction's initial response.
#[derive(Clone, Debug)]
pub struct CallbackAttempt {
    pub at: SystemTime,
    /// Time since the click.
    pub after: Duration,
    /// The callback `type` sent (`None` when absent or not a number).
    pub kind: Option<u64>,
    pub body: Option<Value>,
    pub status: u16,
    /// The error body when refused.
    pub error: Option<Value>,
}

/// A click and everything the bot answered to it.
#[derive(Clone, Debug)]
pub struct InteractionRecord {
    pub id: u64,
    pub token: String,
    pub custom_id: String,
    pub message_id: u64,
    pub channel_id: u64,
    pub user_id: u64,
    /// Every callback attempt, refused ones included.
    pub callbacks: Vec<CallbackAttempt>,
    /// The message `@original` designates once a callback was accepted.
    pub original_message: Option<u64>,
    /// Follow-up messages, in order.
    pub followups: Vec<u64>,
    pub(super) created: Instant,
}

impl InteractionRecord {
    /// The accepted initial response, if any.
    pub fn accepted(&self) -> Option<&CallbackAttempt> {
        self.callbacks.iter().find(|c| c.status < 300)
    }
}

/// What became of a dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Written to the connected client with this sequence number.
    Sent { seq: u64 },
    /// The session exists but no connection is attached: kept for replay on RESUME.
    Buffered { seq: u64 },
    /// The session's intents exclude this event; Discord would not send it.
    Filtered,
    /// No session: nobody has identified yet. Discord would not send it.
    NoSession,
}

impl Delivery {
    /// The sequence number, when the event reached (or waits for) the session.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Delivery::Sent { seq } | Delivery::Buffered { seq } => Some(*seq),
            _ => None,
        }
    }
}

/// A command to one gateway connection's writer.
#[derive(Debug)]
pub(super) enum ConnCmd {
    Frame(Value),
    Close(u16, String),
    Abort,
}

#[derive(Debug)]
pub(super) struct ConnLink {
    pub(super) id: u64,
    pub(super) tx: mpsc::UnboundedSender<ConnCmd>,
}

/// The one gateway session (one shard).
#[derive(Debug)]
pub(super) struct Session {
    pub(super) id: String,
    pub(super) intents: u64,
    pub(super) seq: u64,
    pub(super) log: Vec<(u64, Value)>,
    pub(super) conn: Option<ConnLink>,
    pub(super) resumable: bool,
}

/// A fault to answer instead of the real thing.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// 429 with `retry_after` in the JSON and `Retry-After`; `global` adds `X-RateLimit-Global`.
    RateLimited { retry_after: Duration, global: bool },
    /// A 5xx (or any) status with Discord's generic error JSON.
    Status(u16),
    /// The call takes effect as usual, but the client gets this status (with Discord's generic
    /// error JSON) instead of the answer: a response lost on its way back.
    LostAnswer(u16),
}

/// Which calls a fault applies to: everything, or a method and/or a path fragment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallFilter {
    pub method: Option<String>,
    pub path_contains: Option<String>,
}

impl CallFilter {
    pub fn any() -> CallFilter {
        CallFilter::default()
    }

    /// Calls with `method` whose path contains `fragment`.
    pub fn matching(method: &str, fragment: &str) -> CallFilter {
        CallFilter {
            method: Some(method.to_string()),
            path_contains: Some(fragment.to_string()),
        }
    }

    pub(super) fn accepts(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.path_contains.as_deref().is_none_or(|f| path.contains(f))
    }
}

#[derive(Debug)]
pub(super) struct PendingFault {
    pub(super) fault: Fault,
    pub(super) filter: CallFilter,
    pub(super) remaining: usize,
}

#[derive(Debug)]
pub(super) struct Bucket {
    pub(super) window_start: Instant,
    pub(super) used: u32,
}

/// Everything the stand-in knows. Tests read it through [`super::DiscordStandIn::wait_until`]
/// and the accessors below.
pub struct State {
    pub(super) cfg: StandInConfig,
    pub(super) started: Instant,
    pub(super) ids: Snowflakes,
    pub(super) joined_at: String,
    pub(super) gateway_url: String,
    pub(super) resume_url: String,
    pub(super) calls: Vec<Call>,
    pub(super) frames: Vec<GatewayFrame>,
    pub(super) connections: Vec<Connection>,
    pub(super) identifies: Vec<Identify>,
    pub(super) resumes: Vec<Resume>,
    pub(super) messages: BTreeMap<u64, StoredMessage>,
    pub(super) threads: BTreeMap<u64, ThreadSpec>,
    pub(super) interactions: BTreeMap<u64, InteractionRecord>,
    pub(super) session: Option<Session>,
    pub(super) buckets: HashMap<String, Bucket>,
    pub(super) faults: VecDeque<PendingFault>,
    /// Messages created with `enforce_nonce`: (author, nonce) -> (message id, when).
    pub(super) nonces: HashMap<(u64, String), (u64, Instant)>,
}

impl State {
    pub(super) fn new(cfg: StandInConfig, gateway_url: String, resume_url: String) -> State {
        State {
            cfg,
            started: Instant::now(),
            ids: Snowflakes::default(),
            joined_at: objects::timestamp(chrono::Utc::now() - chrono::Duration::days(30)),
            gateway_url,
            resume_url,
            calls: Vec::new(),
            frames: Vec::new(),
            connections: Vec::new(),
            identifies: Vec::new(),
            resumes: Vec::new(),
            messages: BTreeMap::new(),
            threads: BTreeMap::new(),
            interactions: BTreeMap::new(),
            session: None,
            buckets: HashMap::new(),
            faults: VecDeque::new(),
            nonces: HashMap::new(),
        }
    }

    // ---- read-only accessors for tests ----

    pub fn config(&self) -> &StandInConfig {
        &self.cfg
    }
    /// Every REST call, in arrival order.
    pub fn calls(&self) -> &[Call] {
        &self.calls
    }
    /// Every gateway text frame, both directions, in order.
    pub fn frames(&self) -> &[GatewayFrame] {
        &self.frames
    }
    pub fn connections(&self) -> &[Connection] {
        &self.connections
    }
    pub fn identifies(&self) -> &[Identify] {
        &self.identifies
    }
    pub fn resumes(&self) -> &[Resume] {
        &self.resumes
    }
    pub fn message(&self, id: u64) -> Option<&StoredMessage> {
        self.messages.get(&id)
    }
    /// All messages of `channel` (deleted ones included), oldest first.
    pub fn channel_messages(&self, channel: u64) -> Vec<&StoredMessage> {
        self.messages.values().filter(|m| m.channel_id == channel).collect()
    }
    /// Every message, oldest first.
    pub fn messages(&self) -> impl Iterator<Item = &StoredMessage> {
        self.messages.values()
    }
    pub fn interaction(&self, id: u64) -> Option<&InteractionRecord> {
        self.interactions.get(&id)
    }
    pub fn interactions(&self) -> impl Iterator<Item = &InteractionRecord> {
        self.interactions.values()
    }
    /// Threads made through the API: (thread id = starter message id, parent channel, name).
    pub fn threads(&self) -> Vec<(u64, u64, String)> {
        self.threads
            .values()
            .map(|t| (t.id, t.parent_id, t.name.clone()))
            .collect()
    }
    /// The current session's id, once someone identified.
    pub fn session_id(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.id.as_str())
    }
    /// Whether a connection is attached to the session (identified or resumed, not dropped).
    pub fn connected(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.conn.is_some())
    }
    /// The last sequence number the session used.
    pub fn last_seq(&self) -> Option<u64> {
        self.session.as_ref().map(|s| s.seq)
    }

    // ---- shared helpers ----

    pub(super) fn now_ts(&self) -> String {
        objects::timestamp(chrono::Utc::now())
    }

    pub(super) fn next_id(&mut self) -> u64 {
        self.ids.next(SystemTime::now())
    }

    pub(super) fn channel_spec(&self, id: u64) -> Option<&ChannelSpec> {
        self.cfg.channels.iter().find(|c| c.id == id)
    }

    /// Whether `id` is a channel the bot can post in, and whether it is in the guild.
    pub(super) fn channel_place(&self, id: u64) -> Option<Place> {
        if let Some(spec) = self.channel_spec(id) {
            return Some(match spec.kind {
                ChannelKind::Text => Place::GuildText,
                ChannelKind::Dm { recipient } => Place::Dm { recipient },
            });
        }
        self.threads.get(&id).map(|t| Place::Thread { parent: t.parent_id })
    }

    /// The channel object of `id` (configured channel or thread).
    pub(super) fn channel_json(&self, id: u64) -> Option<Value> {
        if let Some((pos, spec)) = self.cfg.channels.iter().enumerate().find(|(_, c)| c.id == id) {
            return Some(objects::channel(&self.cfg, spec, pos));
        }
        self.threads.get(&id).map(objects::thread_channel)
    }

    pub(super) fn bot_user(&self) -> UserSpec {
        self.cfg.bot.clone()
    }

    /// Sends a dispatch to the session if its intents allow (`needs` = 0: always).
    pub(super) fn dispatch(&mut self, t: &str, d: Value, needs: u64) -> Delivery {
        let Some(session) = self.session.as_mut() else {
            return Delivery::NoSession;
        };
        if needs != 0 && session.intents & needs == 0 {
            return Delivery::Filtered;
        }
        session.seq += 1;
        let seq = session.seq;
        let frame = objects::dispatch_frame(t, seq, d);
        session.log.push((seq, frame.clone()));
        match &session.conn {
            Some(link) if link.tx.send(ConnCmd::Frame(frame)).is_ok() => Delivery::Sent { seq },
            _ => Delivery::Buffered { seq },
        }
    }

    /// Sends MESSAGE_CREATE or MESSAGE_UPDATE for a stored message, as Discord would to this
    /// session: guild messages need GUILD_MESSAGES, DMs DIRECT_MESSAGES; without MESSAGE_CONTENT
    /// a guild message by someone else that does not mention the bot arrives with empty
    /// content, embeds, attachments and components. Ephemeral messages are never dispatched.
    pub(super) fn dispatch_message(&mut self, t: &str, id: u64) -> Delivery {
        let Some(msg) = self.messages.get(&id) else {
            return Delivery::Filtered;
        };
        if msg.ephemeral_for.is_some() {
            return Delivery::Filtered;
        }
        let place = self.channel_place(msg.channel_id);
        let in_guild = !matches!(place, Some(Place::Dm { .. }) | None);
        let needs = if in_guild {
            intents::GUILD_MESSAGES
        } else {
            intents::DIRECT_MESSAGES
        };
        let author_id = msg.author_id();
        let is_webhook = msg.json.get("webhook_id").is_some_and(|w| !w.is_null());
        let member = if in_guild && !is_webhook {
            self.cfg.user(author_id).map(|u| objects::member(u, &self.joined_at))
        } else {
            None
        };
        let mut d = objects::gateway_message(&msg.json, in_guild.then_some(self.cfg.guild.id), member);
        let bot_id = self.cfg.bot.id;
        let mentions_bot = msg.json["mentions"].as_array().is_some_and(|m| {
            m.iter()
                .any(|u| u["id"].as_str().and_then(|id| id.parse::<u64>().ok()) == Some(bot_id))
        });
        let has_content_intent = self
            .session
            .as_ref()
            .is_some_and(|s| s.intents & intents::MESSAGE_CONTENT != 0);
        if in_guild && !has_content_intent && author_id != bot_id && !mentions_bot {
            d["content"] = Value::from("");
            d["embeds"] = json!([]);
            d["attachments"] = json!([]);
            d["components"] = json!([]);
        }
        self.dispatch(t, d, needs)
    }

    /// Users mentioned in `content` who ping under `allowed`, and whether @everyone pings.
    pub(super) fn mentions(&self, content: &str, allowed: &AllowedMentions) -> (Vec<Value>, Vec<String>, bool) {
        let mut users = Vec::new();
        let mut roles = Vec::new();
        let mut rest = content;
        while let Some(start) = rest.find("<@") {
            rest = &rest[start + 2..];
            let Some(end) = rest.find('>') else { break };
            let inner = &rest[..end];
            if let Some(role) = inner.strip_prefix('&') {
                if let Ok(id) = role.parse::<u64>()
                    && (allowed.parse_roles || allowed.roles.contains(&id))
                    && !roles.contains(&id.to_string())
                {
                    roles.push(id.to_string());
                }
            } else if let Ok(id) = inner.trim_start_matches('!').parse::<u64>()
                && let Some(u) = self.cfg.user(id)
            {
                let object = objects::user(u);
                if allowed.allows_user(id) && !users.contains(&object) {
                    users.push(object);
                }
            }
        }
        let everyone = allowed.parse_everyone && (content.contains("@everyone") || content.contains("@here"));
        (users, roles, everyone)
    }

    /// Makes and stores a new message by the bot from a validated body.
    pub(super) fn new_bot_message(
        &mut self,
        channel_id: u64,
        body: &MessageBody,
        origin: Origin,
        shape: impl FnOnce(&mut MessageParts),
    ) -> u64 {
        let id = self.next_id();
        let allowed = body.allowed_mentions.clone().unwrap_or_else(AllowedMentions::all);
        let content = body.content.clone().unwrap_or_default();
        let (mentions, mention_roles, mention_everyone) = self.mentions(&content, &allowed);
        let mut parts = MessageParts::new(id, channel_id, objects::user(&self.bot_user()), &content, self.now_ts());
        parts.embeds = body.embeds.clone().unwrap_or_default();
        parts.components = body.components.clone().unwrap_or_default();
        parts.mentions = mentions;
        parts.mention_roles = mention_roles;
        parts.mention_everyone = mention_everyone;
        parts.flags = body.flags.unwrap_or(0);
        parts.tts = body.tts;
        parts.nonce = body.nonce.clone();
        shape(&mut parts);
        let ephemeral_for = match &origin {
            Origin::Interaction { interaction_id } if parts.flags & flags::EPHEMERAL != 0 => {
                self.interactions.get(interaction_id).map(|i| i.user_id)
            }
            _ => None,
        };
        let json = objects::message(&parts);
        self.messages.insert(
            id,
            StoredMessage {
                id,
                channel_id,
                json,
                history: Vec::new(),
                ephemeral_for,
                deleted: false,
                origin,
            },
        );
        id
    }

    /// Applies a validated edit to message `id`; refuses (changing nothing) an edit that would
    /// leave the message empty.
    pub(super) fn edit_message(&mut self, id: u64, body: &MessageBody) -> Result<(), ApiError> {
        let Some(msg) = self.messages.get(&id) else {
            return Err(ApiError::new(404, 10008, "Unknown Message"));
        };
        let mut next = msg.json.clone();
        if let Some(content) = &body.content {
            next["content"] = Value::from(content.clone());
            let allowed = body.allowed_mentions.clone().unwrap_or_else(AllowedMentions::all);
            let (users, roles, everyone) = self.mentions(content, &allowed);
            next["mentions"] = Value::from(users);
            next["mention_roles"] = Value::from(roles);
            next["mention_everyone"] = Value::from(everyone);
        }
        if let Some(embeds) = &body.embeds {
            next["embeds"] = Value::from(embeds.clone());
        }
        if let Some(components) = &body.components {
            next["components"] = Value::from(components.clone());
        }
        if let Some(f) = body.flags {
            let old = next["flags"].as_u64().unwrap_or(0);
            next["flags"] = Value::from((old & !flags::SUPPRESS_EMBEDS) | (f & flags::SUPPRESS_EMBEDS));
        }
        // An edit through @original completes a deferred ("thinking…") response.
        let old_flags = next["flags"].as_u64().unwrap_or(0);
        next["flags"] = Value::from(old_flags & !flags::LOADING);
        let empty = next["content"].as_str().unwrap_or("").is_empty()
            && next["embeds"].as_array().is_none_or(Vec::is_empty)
            && next["components"].as_array().is_none_or(Vec::is_empty);
        if empty {
            return Err(ApiError::empty_message());
        }
        next["edited_timestamp"] = Value::from(self.now_ts());
        let msg = self.messages.get_mut(&id).expect("looked up above under the same lock");
        let old = std::mem::replace(&mut msg.json, next);
        msg.history.push(old);
        Ok(())
    }
}

/// Where a channel is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Place {
    GuildText,
    Thread { parent: u64 },
    Dm { recipient: u64 },
}

//! The XMPP adapter: Baton in multi-user chat rooms through tokio-xmpp. One task owns the
//! `StanzaStream` (read and written from the same task: splitting it stalls under sustained
//! request/reply traffic in tokio-xmpp 6.0), joins the configured rooms after every stream
//! reset, turns room messages into [`Inbound`]s, and posts [`Outbound`]s, each confirmed by the
//! room's echo of the message.
//!
//! Files: `config.rs` (settings), `connect.rs` (TCP/TLS/SASL and the reconnect loop),
//! `inbound.rs` (room state and stanza -> `Inbound`), `outbound.rs` (splitting, stanzas).

pub mod config;
pub mod connect;
pub mod inbound;
pub mod outbound;
pub mod section;

pub use config::{RoomConfig, TlsMode, ValidConfig, XmppConfig};
pub use connect::{Backoff, ConnectError, Connector};

use crate::chat::{Capabilities, ChatAdapter, Delivered, DeliveryError, Inbound, Link, MessageRef, Outbound, RoomRef};
use async_trait::async_trait;
use baton_policies::Platform;
use futures::StreamExt;
use inbound::{MessageOutcome, PresenceOutcome, RoomState};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_xmpp::Stanza;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::iq::{Iq, IqPayload};
use tokio_xmpp::parsers::muc::muc::{History, Muc};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::stanzastream::{Event, StanzaStream, StreamEvent};
use tracing::{debug, info, warn};

/// Errors at the adapter's boundary.
#[derive(Debug, thiserror::Error)]
pub enum XmppError {
    #[error("invalid xmpp settings: {}", .0.join("; "))]
    Config(Vec<String>),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the xmpp adapter is already running")]
    AlreadyRunning,
    #[error("the xmpp stream ended unexpectedly")]
    StreamEnded,
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
}

/// What the adapter's connection looks like right now (for health checks and tests): online,
/// the rooms (bare JIDs) it is in, and how many sessions it established.
pub type LinkStatus = Link;

enum Command {
    Deliver {
        room: BareJid,
        parts: Vec<(String, String)>,
        reply: oneshot::Sender<Result<Delivered, DeliveryError>>,
    },
}

/// The XMPP chat adapter. Build it with [`XmppAdapter::new`], drive it with
/// [`ChatAdapter::run`], and post with [`ChatAdapter::deliver`] from any task.
pub struct XmppAdapter {
    config: ValidConfig,
    connector: Connector,
    commands: mpsc::Sender<Command>,
    commands_rx: Mutex<Option<mpsc::Receiver<Command>>>,
    status_tx: watch::Sender<LinkStatus>,
}

impl XmppAdapter {
    /// Validates the settings and prepares TLS (a bad CA file is reported here). Does not connect.
    pub fn new(config: XmppConfig) -> Result<XmppAdapter, XmppError> {
        let config = config.validate().map_err(XmppError::Config)?;
        let connector = Connector::new(
            &config.settings.server,
            &config.settings.tls,
            config.jid.domain().as_str(),
        )?;
        let (commands, commands_rx) = mpsc::channel(64);
        let (status_tx, _) = watch::channel(LinkStatus::default());
        Ok(XmppAdapter {
            config,
            connector,
            commands,
            commands_rx: Mutex::new(Some(commands_rx)),
            status_tx,
        })
    }

    /// Rooms whose messages are read as commands.
    pub fn command_rooms(&self) -> Vec<RoomRef> {
        self.rooms_where(false)
    }

    /// Rooms that only receive copies of run status.
    pub fn mirror_rooms(&self) -> Vec<RoomRef> {
        self.rooms_where(true)
    }

    fn rooms_where(&self, mirror: bool) -> Vec<RoomRef> {
        self.config
            .rooms
            .iter()
            .filter(|r| r.mirror_only == mirror)
            .map(|r| RoomRef::new(Platform::Xmpp, r.jid.as_str()))
            .collect()
    }

    /// A live view of the connection.
    pub fn status(&self) -> watch::Receiver<LinkStatus> {
        self.status_tx.subscribe()
    }

    /// Waits (at most `timeout`) until the adapter is online and in every configured room.
    pub async fn wait_until_joined(&self, timeout: Duration) -> Result<(), XmppError> {
        let all: BTreeSet<String> = self.config.rooms.iter().map(|r| r.jid.to_string()).collect();
        let mut status = self.status();
        tokio::time::timeout(timeout, status.wait_for(|s| s.online && s.joined.is_superset(&all)))
            .await
            .map_err(|_| XmppError::Timeout(timeout, "all rooms joined"))?
            .map(|_| ())
            .map_err(|_| XmppError::StreamEnded)
    }

    fn update_status(&self, f: impl FnOnce(&mut LinkStatus)) {
        self.status_tx.send_modify(f);
    }
}

/// Live messages held for a busy receiver before new ones are dropped.
const MAX_BACKLOG: usize = 10_000;

/// Outbound messages waiting for the room's echo of their last part.
struct Pending {
    reply: oneshot::Sender<Result<Delivered, DeliveryError>>,
    deadline: Instant,
    room: BareJid,
    /// The last part's text: the echo is matched by it when a server rewrote both ids.
    body: String,
    /// The first part's id: the message's reference.
    first: String,
}

/// A room join waiting to be (re)tried.
struct Rejoin {
    at: Instant,
    attempts: u32,
}

fn transient(reason: impl Into<String>) -> DeliveryError {
    DeliveryError::Transient {
        reason: reason.into(),
        retry_after: None,
    }
}

#[async_trait]
impl ChatAdapter for XmppAdapter {
    fn platform(&self) -> Platform {
        Platform::Xmpp
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// One stream: stanzas reach the room in the order they are sent.
    fn ordered_sends(&self) -> bool {
        true
    }

    fn rooms(&self) -> Vec<RoomRef> {
        self.command_rooms().into_iter().chain(self.mirror_rooms()).collect()
    }

    fn link(&self) -> Option<watch::Receiver<Link>> {
        Some(self.status())
    }

    async fn run(&self, inbound: mpsc::Sender<Inbound>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let rx = self
            .commands_rx
            .lock()
            .map_err(|_| anyhow::anyhow!("xmpp adapter state poisoned"))?
            .take()
            .ok_or(XmppError::AlreadyRunning)?;
        let mut driver = Driver::new(self, inbound, rx, shutdown.child_token());
        let result = driver.run().await;
        let Driver { commands, .. } = driver;
        if let Ok(mut slot) = self.commands_rx.lock() {
            *slot = Some(commands);
        }
        self.update_status(|s| {
            s.online = false;
            s.joined.clear();
        });
        result.map_err(anyhow::Error::from)
    }

    async fn deliver(&self, message: &Outbound) -> Result<Delivered, DeliveryError> {
        if message.room.platform != Platform::Xmpp {
            return Err(DeliveryError::Permanent {
                reason: format!("{} is not an xmpp room", message.room),
            });
        }
        let room = BareJid::new(&message.room.id)
            .ok()
            .filter(|jid| self.config.rooms.iter().any(|r| &r.jid == jid))
            .ok_or_else(|| DeliveryError::Permanent {
                reason: format!("{} is not a configured room", message.room.id),
            })?;
        let texts = outbound::split_text(&message.text(), self.config.settings.max_message_bytes);
        if texts.is_empty() {
            return Err(DeliveryError::Permanent {
                reason: "empty message".into(),
            });
        }
        if !self.status_tx.borrow().online {
            return Err(transient("not connected to the xmpp server"));
        }
        let parts = texts
            .into_iter()
            .enumerate()
            .map(|(i, t)| (outbound::part_id(message.id, i), t))
            .collect();
        let (reply, answer) = oneshot::channel();
        let wait = self.config.settings.delivery_timeout + Duration::from_secs(1);
        let command = Command::Deliver { room, parts, reply };
        match tokio::time::timeout(wait, self.commands.send(command)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return Err(transient("the xmpp adapter is not running")),
        }
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(transient("the xmpp adapter stopped")),
            Err(_) => Err(transient("no confirmation from the xmpp adapter")),
        }
    }
}

/// The task that owns the stream.
struct Driver<'a> {
    adapter: &'a XmppAdapter,
    inbound: mpsc::Sender<Inbound>,
    /// Live messages not yet taken by the receiver: the stream keeps being read (so delivery
    /// echoes are seen) even while the engine is busy waiting for a delivery.
    backlog: VecDeque<Inbound>,
    commands: mpsc::Receiver<Command>,
    stop: CancellationToken,
    rooms: HashMap<BareJid, RoomState>,
    pending: HashMap<String, Pending>,
    rejoins: HashMap<BareJid, Rejoin>,
    online: bool,
    notices: u64,
}

impl<'a> Driver<'a> {
    fn new(
        adapter: &'a XmppAdapter,
        inbound: mpsc::Sender<Inbound>,
        commands: mpsc::Receiver<Command>,
        stop: CancellationToken,
    ) -> Driver<'a> {
        let rooms = adapter
            .config
            .rooms
            .iter()
            .map(|r| {
                (
                    r.jid.clone(),
                    RoomState::new(r.jid.clone(), r.nick.clone(), r.mirror_only),
                )
            })
            .collect();
        Driver {
            adapter,
            inbound,
            backlog: VecDeque::new(),
            commands,
            stop,
            rooms,
            pending: HashMap::new(),
            rejoins: HashMap::new(),
            online: false,
            notices: 0,
        }
    }

    async fn run(&mut self) -> Result<(), XmppError> {
        let settings = &self.adapter.config.settings;
        let mut stream = connect::stanza_stream(
            self.adapter.connector.clone(),
            self.adapter.config.jid.clone(),
            settings.password.clone(),
            Backoff {
                initial: settings.reconnect_initial,
                max: settings.reconnect_max,
            },
            settings.connect_timeout,
            self.stop.clone(),
        );
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let inbound = self.inbound.clone();
        let result = loop {
            let waiting = !self.backlog.is_empty();
            tokio::select! {
                _ = self.stop.cancelled() => break Ok(()),
                event = stream.next() => match event {
                    None => break Err(XmppError::StreamEnded),
                    Some(event) => self.on_event(&stream, event).await,
                },
                Some(command) = self.commands.recv() => self.on_command(&stream, command).await,
                permit = inbound.reserve(), if waiting => match permit {
                    Ok(permit) => {
                        if let Some(next) = self.backlog.pop_front() {
                            permit.send(next);
                        }
                    }
                    Err(_) => {
                        info!("inbound receiver closed; stopping the xmpp adapter");
                        break Ok(());
                    }
                },
                _ = tick.tick() => self.on_tick(&stream).await,
            }
        };
        self.stop.cancel();
        self.fail_pending("the xmpp adapter stopped");
        if tokio::time::timeout(Duration::from_secs(5), stream.close())
            .await
            .is_err()
        {
            debug!("xmpp stream did not close within 5s; dropped");
        }
        result
    }

    async fn on_event(&mut self, stream: &StanzaStream, event: Event) {
        match event {
            Event::Stream(StreamEvent::Reset { bound_jid, .. }) => {
                info!(jid = %bound_jid, "xmpp session established; joining rooms");
                self.online = true;
                self.fail_pending("the xmpp session was reset");
                let now = Instant::now();
                for room in self.rooms.values_mut() {
                    room.reset();
                }
                self.rejoins = self
                    .rooms
                    .keys()
                    .map(|jid| (jid.clone(), Rejoin { at: now, attempts: 0 }))
                    .collect();
                self.adapter.update_status(|s| {
                    s.online = true;
                    s.joined.clear();
                    s.sessions += 1;
                });
                self.on_tick(stream).await;
            }
            Event::Stream(StreamEvent::Suspended) => {
                // Messages awaiting their echo stay pending: if the session resumes, stream
                // management retransmits them and the echo still confirms them; otherwise the
                // reset (or their deadline) fails them and the outbox retries.
                warn!("xmpp connection lost; reconnecting");
                self.online = false;
                self.adapter.update_status(|s| s.online = false);
            }
            Event::Stream(StreamEvent::Resumed) => {
                info!("xmpp session resumed");
                self.online = true;
                self.adapter.update_status(|s| s.online = true);
            }
            Event::Stanza(Stanza::Presence(presence)) => self.on_presence(stream, presence).await,
            Event::Stanza(Stanza::Message(message)) => self.on_message(stream, message).await,
            Event::Stanza(Stanza::Iq(iq)) => {
                if let Some(answer) = answer_iq(iq) {
                    stream.send(Box::new(Stanza::Iq(answer))).await;
                }
            }
        }
    }

    async fn on_presence(&mut self, stream: &StanzaStream, presence: Presence) {
        let Some(room_jid) = inbound::room_of(presence.from.as_ref()) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&room_jid) else {
            return;
        };
        match room.on_presence(&presence) {
            PresenceOutcome::Joined { sees_real_jids } => {
                info!(room = %room_jid, nick = %room.nick, sees_real_jids, "joined xmpp room");
                self.rejoins.remove(&room_jid);
                self.adapter.update_status(|s| {
                    s.joined.insert(room_jid.to_string());
                });
                self.post_notice_if_needed(stream, &room_jid).await;
            }
            PresenceOutcome::Left { reason } => {
                warn!(room = %room_jid, reason = %reason, "no longer in xmpp room; will rejoin");
                self.adapter.update_status(|s| {
                    s.joined.remove(room_jid.as_str());
                });
                let attempts = self.rejoins.get(&room_jid).map_or(0, |r| r.attempts);
                self.rejoins.insert(
                    room_jid,
                    Rejoin {
                        at: Instant::now() + Duration::from_secs(5),
                        attempts,
                    },
                );
            }
            PresenceOutcome::JoinRefused { error, nick_conflict } => {
                let attempts = self.rejoins.get(&room_jid).map_or(0, |r| r.attempts);
                warn!(room = %room_jid, nick = %room.nick, error = %error, attempt = attempts, "xmpp room refused the join");
                if nick_conflict && attempts < 3 {
                    room.nick.push('_');
                }
                let wait = Duration::from_secs(2u64.saturating_pow(attempts.min(5)));
                self.rejoins.insert(
                    room_jid,
                    Rejoin {
                        at: Instant::now() + wait,
                        attempts,
                    },
                );
            }
            PresenceOutcome::Occupant | PresenceOutcome::Ignored => {}
        }
    }

    async fn on_message(&mut self, stream: &StanzaStream, message: tokio_xmpp::parsers::message::Message) {
        let Some(room_jid) = inbound::room_of(message.from.as_ref()) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&room_jid) else {
            debug!(from = ?message.from, "message from outside the configured rooms dropped");
            return;
        };
        match room.on_message(&message) {
            MessageOutcome::Live(inbound) => {
                debug!(room = %room_jid, id = %inbound.message_id, "room message received");
                if self.backlog.len() >= MAX_BACKLOG {
                    warn!(room = %room_jid, id = %inbound.message_id, "inbound backlog full; message dropped");
                } else {
                    self.backlog.push_back(inbound);
                }
            }
            MessageOutcome::OwnEcho { id, origin_id, body } => {
                // By stanza id; else by origin id (servers that rewrite stanza ids keep it);
                // else the oldest message to this room with the same text.
                let key = id
                    .filter(|i| self.pending.contains_key(i))
                    .or(origin_id.filter(|i| self.pending.contains_key(i)))
                    .or_else(|| {
                        let body = body?;
                        self.pending
                            .iter()
                            .filter(|(_, p)| p.room == room_jid && p.body == body)
                            .min_by_key(|(_, p)| p.deadline)
                            .map(|(k, _)| k.clone())
                    });
                if let Some(pending) = key.and_then(|k| self.pending.remove(&k)) {
                    let reference = MessageRef(pending.first);
                    let _ = pending.reply.send(Ok(Delivered {
                        reference: Some(reference),
                    }));
                }
            }
            MessageOutcome::Error { id, error, permanent } => {
                warn!(room = %room_jid, id = ?id, error = %error, "xmpp room returned an error");
                if !permanent && room.joined {
                    // Most often: the room no longer counts the bot as an occupant. Rejoin.
                    room.reset();
                    self.adapter.update_status(|s| {
                        s.joined.remove(room_jid.as_str());
                    });
                    self.rejoins.insert(
                        room_jid.clone(),
                        Rejoin {
                            at: Instant::now(),
                            attempts: 0,
                        },
                    );
                }
                if let Some(pending) = id.and_then(|id| self.pending.remove(&id)) {
                    let reason = format!("room {room_jid} refused the message: {error}");
                    let err = if permanent {
                        DeliveryError::Permanent { reason }
                    } else {
                        transient(reason)
                    };
                    let _ = pending.reply.send(Err(err));
                }
            }
            MessageOutcome::ConfigChanged { sees_real_jids } => {
                info!(room = %room_jid, sees_real_jids, "xmpp room configuration changed");
                self.post_notice_if_needed(stream, &room_jid).await;
            }
            MessageOutcome::Dropped(why) => debug!(room = %room_jid, why, "room message dropped"),
        }
    }

    async fn post_notice_if_needed(&mut self, stream: &StanzaStream, room_jid: &BareJid) {
        let Some(room) = self.rooms.get_mut(room_jid) else {
            return;
        };
        if room.sees_real_jids() || room.mirror_only || room.notice_posted || !room.joined {
            return;
        }
        room.notice_posted = true;
        self.notices += 1;
        warn!(room = %room_jid, "room hides real JIDs from the bot; requests and approvals there will be refused");
        let id = format!("baton-notice-{}", self.notices);
        let stanza = outbound::groupchat(room_jid, id, inbound::HIDDEN_JIDS_NOTICE.to_string());
        stream.send(Box::new(Stanza::Message(stanza))).await;
    }

    async fn on_command(&mut self, stream: &StanzaStream, command: Command) {
        let Command::Deliver { room, parts, reply } = command;
        if !self.online {
            let _ = reply.send(Err(transient("not connected to the xmpp server")));
            return;
        }
        if !self.rooms.get(&room).is_some_and(|r| r.joined) {
            let _ = reply.send(Err(transient(format!("not in room {room} yet"))));
            return;
        }
        let (Some((first, _)), Some((last, body))) = (parts.first().cloned(), parts.last().cloned()) else {
            let _ = reply.send(Err(DeliveryError::Permanent {
                reason: "empty message".into(),
            }));
            return;
        };
        for (id, text) in parts {
            stream
                .send(Box::new(Stanza::Message(outbound::groupchat(&room, id, text))))
                .await;
        }
        let deadline = Instant::now() + self.adapter.config.settings.delivery_timeout;
        let pending = Pending {
            reply,
            deadline,
            room,
            body,
            first,
        };
        if let Some(old) = self.pending.insert(last, pending) {
            let _ = old
                .reply
                .send(Err(transient("superseded by a retry of the same message")));
        }
    }

    async fn on_tick(&mut self, stream: &StanzaStream) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(p) = self.pending.remove(&id) {
                let _ = p
                    .reply
                    .send(Err(transient("the room did not echo the message in time")));
            }
        }
        if !self.online {
            return;
        }
        let due: Vec<BareJid> = self
            .rejoins
            .iter()
            .filter(|(_, r)| r.at <= now)
            .map(|(j, _)| j.clone())
            .collect();
        for room_jid in due {
            let Some(room) = self.rooms.get(&room_jid) else {
                continue;
            };
            let Ok(occupant) = room_jid.with_resource_str(&room.nick) else {
                warn!(room = %room_jid, nick = %room.nick, "invalid nickname; not joining");
                self.rejoins.remove(&room_jid);
                continue;
            };
            let attempts = self.rejoins.get(&room_jid).map_or(0, |r| r.attempts) + 1;
            debug!(room = %room_jid, nick = %room.nick, attempt = attempts, "joining xmpp room");
            // Ask for no history: replayed commands must never run again.
            let join = Presence::available()
                .with_to(Jid::from(occupant))
                .with_payload(Muc::new().with_history(History::new().with_maxstanzas(0)));
            stream.send(Box::new(Stanza::Presence(join))).await;
            // If no answer comes, try again later with a growing wait.
            let wait = Duration::from_secs(2u64.saturating_pow(attempts.min(5)) * 5);
            self.rejoins.insert(
                room_jid,
                Rejoin {
                    at: now + wait,
                    attempts,
                },
            );
        }
    }

    fn fail_pending(&mut self, reason: &str) {
        for (_, p) in self.pending.drain() {
            let _ = p.reply.send(Err(transient(reason)));
        }
    }
}

/// Answers IQ requests: pings get a result, anything else "service unavailable".
fn answer_iq(iq: Iq) -> Option<Iq> {
    let (header, payload) = iq.split();
    let to = header.from?;
    match payload {
        IqPayload::Get(el) | IqPayload::Set(el) => {
            if el.is("ping", ns::PING) {
                Some(Iq::empty_result(to, header.id))
            } else {
                let error = StanzaError::new(ErrorType::Cancel, DefinedCondition::ServiceUnavailable, "en", "");
                Some(Iq::from_error(header.id, error).with_to(to))
            }
        }
        _ => None,
    }
}

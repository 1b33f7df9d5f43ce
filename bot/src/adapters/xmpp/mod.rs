//! The XMPP adapter: Baton in multi-user chat rooms through tokio-xmpp. One task owns the
//! `StanzaStream` (read and written from the same task: splitting it stalls under sustained
//! request/reply traffic in tokio-xmpp 6.0), joins the configured rooms after every stream
//! reset, turns room messages into [`Inbound`]s, and posts [`Outbound`]s.
//!
//! **Delivery.** A message counts as delivered when the room echoes every part of it back
//! (matched by stanza id, else XEP-0359 origin id, else text: `confirm.rs`). `deliver` waits for
//! that echo at most `delivery_timeout`; if it has not come by then while the stream is up, the
//! message is *late*, not lost: `deliver` answers `Ok` (so the room's queue moves on and nothing
//! is posted twice), and the adapter keeps tracking it. It is never sent again while the stream
//! stays up (stream management resends what the server did not acknowledge when a session is
//! resumed). Only when the stream is reset (the session was lost) does the rejoin ask the room
//! for its history since just before the oldest late message: Baton's own lines in it confirm
//! what arrived, and the rest is sent again with the same ids, in order, before the room counts
//! as joined and takes new messages. History is only ever read for that: anything with a delay
//! stamp is never a command. `deliver` is therefore bounded (the room's task waits on it), and a
//! room that answers an error while `deliver` waits gets it back to the outbox.
//!
//! **Never commands:** history, corrections (XEP-0308; said once per room per process),
//! private messages (MUC private or 1:1; each sender gets one line, at most every 10 minutes,
//! naming the rooms where commands are taken). A room where Baton cannot see real JIDs is told
//! once; the rooms told are remembered beside the store (`notices.rs`), not told again at restart.
//!
//! **Lifetime.** `run` may be called again after it returned (the daemon may restart it): the
//! command queue and the late messages are handed back to the adapter when it ends.
//!
//! Files: `config.rs` (settings), `connect.rs` (TCP/TLS/SASL and the reconnect policy),
//! `inbound.rs` (room state and stanza -> `Inbound`), `outbound.rs` (splitting, stanzas),
//! `confirm.rs` (echo bookkeeping), `notices.rs` (rooms told), `section.rs` (`[chat.xmpp]`).

pub mod config;
pub mod confirm;
pub mod connect;
pub mod inbound;
pub mod notices;
pub mod outbound;
pub mod section;

pub use config::{RoomConfig, TlsMode, ValidConfig, XmppConfig};
pub use connect::{Backoff, ConnectError, Connector};

use crate::chat::{
    Capabilities, ChatAdapter, Delivered, DeliveryError, Inbound, Link, Outbound, Presence as Occupants, RoomRef, Span,
};
use async_trait::async_trait;
use baton_policies::Platform;
use confirm::{Outstanding, Refusal, Seen};
use futures::{FutureExt, StreamExt};
use inbound::{MessageOutcome, PresenceOutcome, RoomState};
use notices::Told;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_xmpp::Stanza;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::iq::{Iq, IqPayload};
use tokio_xmpp::parsers::message::{Id, Lang, Message, MessageType};
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
    #[error("the xmpp adapter panicked")]
    Panicked,
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

/// What a run of the adapter hands to the next: the queue `deliver` writes to, and the messages
/// sent but not yet seen in their room.
struct Carry {
    commands: mpsc::Receiver<Command>,
    outstanding: Outstanding,
}

/// The XMPP chat adapter. Build it with [`XmppAdapter::new`], drive it with
/// [`ChatAdapter::run`], and post with [`ChatAdapter::deliver`] from any task.
pub struct XmppAdapter {
    config: ValidConfig,
    connector: Connector,
    commands: mpsc::Sender<Command>,
    carry: Mutex<Option<Carry>>,
    status_tx: watch::Sender<LinkStatus>,
    /// Who is in each room (real JIDs and nicknames), for the approval request's call.
    presence_tx: watch::Sender<Occupants>,
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
        let (presence_tx, _) = watch::channel(Occupants::default());
        Ok(XmppAdapter {
            config,
            connector,
            commands,
            carry: Mutex::new(Some(Carry {
                commands: commands_rx,
                outstanding: Outstanding::default(),
            })),
            status_tx,
            presence_tx,
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

    /// The message's text for `room`: a mentioned person present in the room is written as the
    /// nickname they use there (clients highlight their own nickname), anyone else by name.
    fn text_for(&self, room: &BareJid, message: &Outbound) -> String {
        let presence = self.presence_tx.borrow();
        message.body.render(|span| match span {
            Span::Text(t) | Span::Quoted(t) => t.clone(),
            Span::Mention(m) => m
                .on(Platform::Xmpp)
                .and_then(|i| presence.name_in(room.as_str(), i))
                .unwrap_or(&m.person)
                .to_string(),
        })
    }
}

/// Live messages held for a busy receiver before new ones are dropped: at most this many, and
/// at most [`MAX_BACKLOG_BYTES`] of them. The daemon empties this at once into its own backlog
/// (bounded by bytes, chatter dropped first), so this fills only if the daemon stops taking.
const MAX_BACKLOG: usize = 10_000;
const MAX_BACKLOG_BYTES: usize = 4 << 20;
/// How long a rejoin waits for the end of the room's history (its subject) before it sends
/// again what the history did not show.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// A sender of private messages is answered at most once in this time.
const PRIVATE_INTERVAL: Duration = Duration::from_secs(600);
/// Senders remembered for that limit, at most.
const PRIVATE_SENDERS: usize = 10_000;

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

/// Milliseconds since the Unix epoch, from the wall clock (history stamps are wall-clock).
fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
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

    fn presence(&self) -> Option<watch::Receiver<Occupants>> {
        Some(self.presence_tx.subscribe())
    }

    async fn run(&self, inbound: mpsc::Sender<Inbound>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let carry = self
            .carry
            .lock()
            .map_err(|_| anyhow::anyhow!("xmpp adapter state poisoned"))?
            .take()
            .ok_or(XmppError::AlreadyRunning)?;
        let mut driver = Driver::new(self, inbound, carry, shutdown.child_token());
        // A panic in the driver ends this run like any other failure: the queue and the late
        // messages are still handed back below, so the daemon can start the adapter again.
        let result = match std::panic::AssertUnwindSafe(driver.run()).catch_unwind().await {
            Ok(result) => result,
            Err(_) => Err(XmppError::Panicked),
        };
        let Driver {
            commands,
            mut outstanding,
            ..
        } = driver;
        outstanding.fail_waiting("the xmpp adapter stopped");
        if let Ok(mut slot) = self.carry.lock() {
            *slot = Some(Carry { commands, outstanding });
        }
        self.update_status(|s| {
            s.online = false;
            s.joined.clear();
        });
        self.presence_tx.send_if_modified(|p| {
            let changed = !p.rooms.is_empty();
            p.rooms.clear();
            changed
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
        let texts = outbound::split_text(&self.text_for(&room, message), self.config.settings.max_message_bytes);
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
        // The driver answers within `delivery_timeout` (late counts as delivered); these bounds
        // only guard against a driver that stopped.
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
    /// The bytes `backlog` holds (as the daemon's backlog counts them).
    backlog_bytes: usize,
    /// Set while messages are being dropped (logged once until the backlog empties).
    dropping: bool,
    commands: mpsc::Receiver<Command>,
    stop: CancellationToken,
    rooms: HashMap<BareJid, RoomState>,
    outstanding: Outstanding,
    rejoins: HashMap<BareJid, Rejoin>,
    /// Rooms whose join asked for history: they count as joined once it has been read.
    asked_history: HashSet<BareJid>,
    /// Rooms reading their history after a rejoin, until the given instant at the latest.
    catching_up: HashMap<BareJid, Instant>,
    online: bool,
    notices: u64,
    told: Told,
    /// When each private sender was last answered.
    private_told: HashMap<String, Instant>,
}

impl<'a> Driver<'a> {
    fn new(
        adapter: &'a XmppAdapter,
        inbound: mpsc::Sender<Inbound>,
        carry: Carry,
        stop: CancellationToken,
    ) -> Driver<'a> {
        let told = Told::load(adapter.config.settings.notices_file.as_deref());
        let rooms = adapter
            .config
            .rooms
            .iter()
            .map(|r| {
                let mut state = RoomState::new(r.jid.clone(), r.nick.clone(), r.mirror_only);
                state.notice_posted = told.contains(r.jid.as_str());
                (r.jid.clone(), state)
            })
            .collect();
        Driver {
            adapter,
            inbound,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            dropping: false,
            commands: carry.commands,
            stop,
            rooms,
            outstanding: carry.outstanding,
            rejoins: HashMap::new(),
            asked_history: HashSet::new(),
            catching_up: HashMap::new(),
            online: false,
            notices: 0,
            told,
            private_told: HashMap::new(),
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
                            self.backlog_bytes -= crate::daemon::backlog::size(&next);
                            permit.send(next);
                        }
                        if self.backlog.is_empty() {
                            self.dropping = false;
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
        self.outstanding.fail_waiting("the xmpp adapter stopped");
        // Commands queued meanwhile are answered, not left to their timeout.
        while let Ok(Command::Deliver { reply, .. }) = self.commands.try_recv() {
            let _ = reply.send(Err(transient("the xmpp adapter stopped")));
        }
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
                let late = self.outstanding.adopt_all();
                if late > 0 {
                    info!(
                        messages = late,
                        "the session was reset before some messages were seen in their rooms; the rooms' history will tell"
                    );
                }
                let now = Instant::now();
                for room in self.rooms.values_mut() {
                    room.reset();
                }
                self.publish_presence();
                self.asked_history.clear();
                self.catching_up.clear();
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
                // Available to the server, so that a person writing to Baton's own address is
                // answered (a server holds or drops messages to an account with no presence).
                stream.send(Box::new(Stanza::Presence(Presence::available()))).await;
                self.on_tick(stream).await;
            }
            Event::Stream(StreamEvent::Suspended) => {
                // Messages awaiting their echo stay tracked: if the session resumes, stream
                // management retransmits what the server did not acknowledge and the echo still
                // confirms them; if it is reset, the rooms' history decides what to send again.
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

    /// Publishes who is in each command room now (only when it changed).
    fn publish_presence(&self) {
        let rooms = self
            .rooms
            .values()
            .filter(|r| !r.mirror_only)
            .map(|r| (r.room.to_string(), r.present()))
            .collect();
        self.adapter.presence_tx.send_if_modified(|p| {
            let changed = p.rooms != rooms;
            p.rooms = rooms;
            changed
        });
    }

    async fn on_presence(&mut self, stream: &StanzaStream, presence: Presence) {
        let Some(room_jid) = inbound::room_of(presence.from.as_ref()) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&room_jid) else {
            return;
        };
        let outcome = room.on_presence(&presence);
        self.publish_presence();
        let Some(room) = self.rooms.get_mut(&room_jid) else {
            return;
        };
        match outcome {
            PresenceOutcome::Joined { sees_real_jids } => {
                info!(room = %room_jid, nick = %room.nick, sees_real_jids, "joined xmpp room");
                self.rejoins.remove(&room_jid);
                if sees_real_jids {
                    self.told.remove(room_jid.as_str());
                }
                if self.asked_history.remove(&room_jid) {
                    let late = self.outstanding.count(&room_jid);
                    info!(room = %room_jid, messages = late, "reading the room's history for messages not yet seen there");
                    self.catching_up
                        .insert(room_jid.clone(), Instant::now() + CATCH_UP_TIMEOUT);
                } else {
                    self.caught_up(stream, &room_jid).await;
                }
                self.post_notice_if_needed(stream, &room_jid).await;
            }
            PresenceOutcome::Left { reason } => {
                warn!(room = %room_jid, reason = %reason, "no longer in xmpp room; will rejoin");
                self.catching_up.remove(&room_jid);
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

    /// The room's history has been read (or was not asked for): send again what it did not
    /// show, then let new messages in.
    async fn caught_up(&mut self, stream: &StanzaStream, room_jid: &BareJid) {
        self.catching_up.remove(room_jid);
        let again = self.outstanding.resend(room_jid);
        if !again.is_empty() {
            info!(room = %room_jid, parts = again.len(), "sending again what the room's history does not show");
        }
        for (id, text) in again {
            stream
                .send(Box::new(Stanza::Message(outbound::groupchat(room_jid, id, text))))
                .await;
        }
        self.adapter.update_status(|s| {
            s.joined.insert(room_jid.to_string());
        });
    }

    async fn on_message(&mut self, stream: &StanzaStream, message: Message) {
        let Some(room_jid) = inbound::room_of(message.from.as_ref()) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&room_jid) else {
            self.on_direct_message(stream, message).await;
            return;
        };
        match room.on_message(&message) {
            MessageOutcome::Live(inbound) => {
                debug!(room = %room_jid, id = %inbound.message_id, "room message received");
                let bytes = crate::daemon::backlog::size(&inbound);
                if self.backlog.len() >= MAX_BACKLOG || self.backlog_bytes + bytes > MAX_BACKLOG_BYTES {
                    if !self.dropping {
                        self.dropping = true;
                        warn!(room = %room_jid, id = %inbound.message_id, held = self.backlog.len(), bytes = self.backlog_bytes,
                            "inbound backlog full; new messages are dropped until it empties");
                    }
                } else {
                    self.backlog_bytes += bytes;
                    self.backlog.push_back(inbound);
                }
            }
            MessageOutcome::OwnEcho { id, origin_id, body } => {
                self.outstanding.echo(
                    &room_jid,
                    id.as_deref(),
                    origin_id.as_deref(),
                    body.as_deref(),
                    Seen::Live,
                );
            }
            MessageOutcome::OwnHistory {
                id,
                origin_id,
                body,
                stamp_ms,
            } => {
                if self.catching_up.contains_key(&room_jid) {
                    let seen = self.outstanding.echo(
                        &room_jid,
                        id.as_deref(),
                        origin_id.as_deref(),
                        body.as_deref(),
                        Seen::History { stamp_ms },
                    );
                    debug!(room = %room_jid, id = ?id, seen, "own message in the room's history");
                }
            }
            MessageOutcome::Subject => {
                if self.catching_up.contains_key(&room_jid) {
                    self.caught_up(stream, &room_jid).await;
                }
            }
            MessageOutcome::Error { id, error, permanent } => {
                warn!(room = %room_jid, id = ?id, error = %error, "xmpp room returned an error");
                if !permanent && room.joined {
                    // Most often: the room no longer counts the bot as an occupant. Rejoin.
                    room.reset();
                    self.publish_presence();
                    self.catching_up.remove(&room_jid);
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
                if let Some(id) = id {
                    let reason = format!("room {room_jid} refused the message: {error}");
                    match self.outstanding.refused(&id, permanent, &reason) {
                        Refusal::Lost(text) => warn!(room = %room_jid, id = %id, lines = text.lines().count(),
                            "the room refused for good a message counted as late; it is not delivered"),
                        Refusal::Kept => {
                            info!(room = %room_jid, id = %id, "a late message was refused for now; the rejoin checks it")
                        }
                        Refusal::Answered | Refusal::Unknown => {}
                    }
                }
            }
            MessageOutcome::ConfigChanged { sees_real_jids } => {
                info!(room = %room_jid, sees_real_jids, "xmpp room configuration changed");
                if sees_real_jids {
                    self.told.remove(room_jid.as_str());
                }
                self.post_notice_if_needed(stream, &room_jid).await;
            }
            MessageOutcome::Correction => {
                let room = self.rooms.get_mut(&room_jid).expect("the room was just found");
                info!(room = %room_jid, "a corrected message (XEP-0308) is not a command; ignored");
                if !room.edits_notice_posted && room.joined {
                    room.edits_notice_posted = true;
                    self.notice(stream, &room_jid, inbound::EDITS_NOTICE.to_string()).await;
                }
            }
            MessageOutcome::Private { nick } => {
                let Ok(occupant) = room_jid.with_resource_str(&nick) else {
                    return;
                };
                self.answer_private(stream, Jid::from(occupant.clone()), occupant.to_string())
                    .await;
            }
            MessageOutcome::Dropped(why) => debug!(room = %room_jid, why, "room message dropped"),
        }
    }

    /// A message from outside the rooms: a person writing to Baton directly gets one line.
    async fn on_direct_message(&mut self, stream: &StanzaStream, message: Message) {
        let Some(from) = message.from.clone() else {
            return;
        };
        let person = from.node().is_some() && from.to_bare() != self.adapter.config.jid;
        if message.type_ != MessageType::Chat || !person || inbound::best_body(&message).is_none() {
            debug!(from = %from, "message from outside the configured rooms dropped");
            return;
        }
        self.answer_private(stream, from.clone(), from.to_bare().to_string())
            .await;
    }

    /// Tells a private sender where commands are taken, at most once per [`PRIVATE_INTERVAL`].
    async fn answer_private(&mut self, stream: &StanzaStream, to: Jid, sender: String) {
        let now = Instant::now();
        if self
            .private_told
            .get(&sender)
            .is_some_and(|at| now.saturating_duration_since(*at) < PRIVATE_INTERVAL)
        {
            debug!(from = %sender, "private message ignored (answered recently)");
            return;
        }
        if self.private_told.len() >= PRIVATE_SENDERS {
            self.private_told
                .retain(|_, at| now.saturating_duration_since(*at) < PRIVATE_INTERVAL);
        }
        if self.private_told.len() >= PRIVATE_SENDERS {
            warn!(from = %sender, "too many private senders to answer; ignored");
            return;
        }
        self.private_told.insert(sender.clone(), now);
        info!(from = %sender, "private message: not a command; telling the sender where commands are taken");
        let rooms: Vec<String> = self.adapter.command_rooms().into_iter().map(|r| r.id).collect();
        self.notices += 1;
        let mut reply = Message::new(Some(to)).with_body(Lang::new(), inbound::private_notice(&rooms));
        reply.type_ = MessageType::Chat;
        reply.id = Some(Id(format!("baton-private-{}", self.notices)));
        stream.send(Box::new(Stanza::Message(reply))).await;
    }

    async fn post_notice_if_needed(&mut self, stream: &StanzaStream, room_jid: &BareJid) {
        let Some(room) = self.rooms.get_mut(room_jid) else {
            return;
        };
        if room.sees_real_jids() || room.mirror_only || room.notice_posted || !room.joined {
            return;
        }
        room.notice_posted = true;
        self.told.insert(room_jid.as_str());
        warn!(room = %room_jid, "room hides real JIDs from the bot; requests and approvals there will be refused");
        self.notice(stream, room_jid, inbound::HIDDEN_JIDS_NOTICE.to_string())
            .await;
    }

    /// Posts a notice of the adapter's own (not through the outbox: it changes no state).
    async fn notice(&mut self, stream: &StanzaStream, room_jid: &BareJid, text: String) {
        self.notices += 1;
        let id = format!("baton-notice-{}", self.notices);
        let stanza = outbound::groupchat(room_jid, id, text);
        stream.send(Box::new(Stanza::Message(stanza))).await;
    }

    async fn on_command(&mut self, stream: &StanzaStream, command: Command) {
        let Command::Deliver { room, parts, reply } = command;
        if !self.online {
            let _ = reply.send(Err(transient("not connected to the xmpp server")));
            return;
        }
        let joined = self.rooms.get(&room).is_some_and(|r| r.joined);
        if !joined || self.catching_up.contains_key(&room) {
            let _ = reply.send(Err(transient(format!("not in room {room} yet"))));
            return;
        }
        if parts.is_empty() {
            let _ = reply.send(Err(DeliveryError::Permanent {
                reason: "empty message".into(),
            }));
            return;
        }
        for (id, text) in &parts {
            stream
                .send(Box::new(Stanza::Message(outbound::groupchat(
                    &room,
                    id.clone(),
                    text.clone(),
                ))))
                .await;
        }
        let answer_by = Instant::now() + self.adapter.config.settings.delivery_timeout;
        let forgotten = self.outstanding.push(room.clone(), parts, reply, answer_by, wall_ms());
        if forgotten > 0 {
            warn!(room = %room, forgotten, "too many messages not yet seen in the room; the oldest are no longer tracked");
        }
    }

    async fn on_tick(&mut self, stream: &StanzaStream) {
        let now = Instant::now();
        let late = self.outstanding.overdue(now);
        if late > 0 {
            info!(
                messages = late,
                "the room has not echoed some messages yet; they count as late, not lost, and are not sent again while connected"
            );
        }
        let done: Vec<BareJid> = self
            .catching_up
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(room, _)| room.clone())
            .collect();
        for room in done {
            info!(room = %room, "the room's history did not end in time; going on with what it showed");
            self.caught_up(stream, &room).await;
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
            let join = Presence::available()
                .with_to(Jid::from(occupant))
                .with_payload(Muc::new().with_history(self.history_to_ask(&room_jid)));
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

    /// The history a join asks for: none (replayed commands must never run again, and history
    /// is never read as commands anyway), unless messages sent to the room were not seen there
    /// before the session was lost: then the history since just before the oldest of them, to
    /// tell which arrived.
    fn history_to_ask(&mut self, room: &BareJid) -> History {
        let since = self
            .outstanding
            .history_since(room)
            .and_then(chrono::DateTime::from_timestamp_millis)
            .and_then(|t| {
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    .parse::<tokio_xmpp::parsers::date::DateTime>()
                    .ok()
            });
        match since {
            Some(since) => {
                self.asked_history.insert(room.clone());
                History::new().with_since(since)
            }
            None => {
                self.asked_history.remove(room);
                History::new().with_maxstanzas(0)
            }
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

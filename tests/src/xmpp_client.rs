//! A test user's XMPP client (alice, bob, carol, mallory): connects to the harness's Prosody
//! with Baton's own connector, joins rooms under a chosen nickname (with or without history),
//! sends groupchat messages, and collects what the rooms say with bounded waits.

use crate::prosody::Prosody;
use anyhow::{Context, bail};
use baton::adapters::xmpp::TlsMode;
use baton::adapters::xmpp::connect::{Backoff, Connector, stanza_stream};
use baton::adapters::xmpp::inbound::best_body;
use futures::StreamExt;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_xmpp::Stanza;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::delay::Delay;
use tokio_xmpp::parsers::message::{Id, Lang, Message, MessageType};
use tokio_xmpp::parsers::muc::muc::{History, Muc};
use tokio_xmpp::parsers::muc::user::{MucUser, Status};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::stanzastream::{Event, StanzaStream, StreamEvent};

/// How long connecting and joining may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Which history to ask for when joining.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinHistory {
    /// `maxstanzas=0`, as Baton asks.
    None,
    /// Whatever the room keeps.
    All,
}

/// A groupchat message as a test user saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomMessage {
    /// The room's bare JID.
    pub room: String,
    /// The sender's nickname in the room.
    pub nick: String,
    pub text: String,
    pub id: Option<String>,
    /// Carried a delay stamp (history replay).
    pub delayed: bool,
    /// When this client received it.
    pub at: std::time::Instant,
}

/// A one-to-one (`chat`) message as a test user saw it: from whom, and the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    pub from: String,
    pub text: String,
}

/// One connected test user.
pub struct TestClient {
    user: String,
    stream: StanzaStream,
    stop: CancellationToken,
    received: VecDeque<RoomMessage>,
    presences: VecDeque<(std::time::Instant, Presence)>,
    chats: VecDeque<ChatMessage>,
    sent: u64,
}

impl TestClient {
    /// Logs in as `user` (registered by the harness) and waits for the session.
    pub async fn connect(server: &Prosody, user: &str) -> anyhow::Result<TestClient> {
        let jid = BareJid::new(&server.jid(user)).context("test user jid")?;
        let connector = Connector::new(&server.c2s_addr().to_string(), &TlsMode::Plain, server.domain())?;
        let stop = CancellationToken::new();
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let stream = stanza_stream(
            connector,
            jid,
            server.password(user)?,
            backoff,
            Duration::from_secs(5),
            stop.clone(),
        );
        let mut client = TestClient {
            user: user.to_string(),
            stream,
            stop,
            received: VecDeque::new(),
            presences: VecDeque::new(),
            chats: VecDeque::new(),
            sent: 0,
        };
        let deadline = Instant::now() + SETUP_TIMEOUT;
        loop {
            match client.next_event(deadline).await? {
                Event::Stream(StreamEvent::Reset { .. }) => return Ok(client),
                other => client.keep(other),
            }
        }
    }

    /// Joins `room` as `nick` and waits for the room's confirmation (self-presence).
    pub async fn join(&mut self, room: &str, nick: &str, history: JoinHistory) -> anyhow::Result<()> {
        let occupant = BareJid::new(room)
            .context("room jid")?
            .with_resource_str(nick)
            .context("nickname")?;
        let muc = match history {
            JoinHistory::None => Muc::new().with_history(History::new().with_maxstanzas(0)),
            JoinHistory::All => Muc::new(),
        };
        let join = Presence::available()
            .with_to(Jid::from(occupant.clone()))
            .with_payload(muc);
        self.stream.send(Box::new(Stanza::Presence(join))).await;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        self.wait_presence(deadline, |p| {
            if p.from.as_ref().map(|f| f.to_bare().to_string()) != Some(room.to_string()) {
                return None;
            }
            if p.type_ == PresenceType::Error {
                return Some(Err(format!("join refused: {p:?}")));
            }
            (p.type_ == PresenceType::None && is_self(p)).then_some(Ok(()))
        })
        .await
        .with_context(|| format!("{} joining {room} as {nick}", self.user))
    }

    /// Leaves `room` and waits for the room to confirm.
    pub async fn leave(&mut self, room: &str, nick: &str) -> anyhow::Result<()> {
        let occupant = BareJid::new(room)
            .context("room jid")?
            .with_resource_str(nick)
            .context("nickname")?;
        let leave = Presence::unavailable().with_to(Jid::from(occupant));
        self.stream.send(Box::new(Stanza::Presence(leave))).await;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        self.wait_presence(deadline, |p| {
            let from_room = p.from.as_ref().map(|f| f.to_bare().to_string()) == Some(room.to_string());
            (from_room && p.type_ == PresenceType::Unavailable && is_self(p)).then_some(Ok(()))
        })
        .await
        .with_context(|| format!("{} leaving {room}", self.user))
    }

    /// Sends a groupchat message with a fresh id and returns the id.
    pub async fn send(&mut self, room: &str, text: &str) -> anyhow::Result<String> {
        self.sent += 1;
        let id = format!("{}-{}-{}", self.user, std::process::id(), self.sent);
        self.send_with_id(room, text, &id).await?;
        Ok(id)
    }

    /// Sends a groupchat message with the given id (to test redelivery).
    pub async fn send_with_id(&mut self, room: &str, text: &str, id: &str) -> anyhow::Result<()> {
        let to = BareJid::new(room).context("room jid")?;
        let mut message = Message::groupchat(Some(Jid::from(to))).with_body(Lang::new(), text.to_string());
        message.id = Some(Id(id.to_string()));
        self.stream.send(Box::new(Stanza::Message(message))).await;
        Ok(())
    }

    /// Corrects an earlier message of ours (XEP-0308 Last Message Correction) to `text`.
    pub async fn send_correction(&mut self, room: &str, text: &str, replaces: &str) -> anyhow::Result<String> {
        self.sent += 1;
        let id = format!("{}-{}-{}", self.user, std::process::id(), self.sent);
        let to = BareJid::new(room).context("room jid")?;
        let mut message = Message::groupchat(Some(Jid::from(to))).with_body(Lang::new(), text.to_string());
        message.id = Some(Id(id.clone()));
        message.payloads.push(
            tokio_xmpp::parsers::message_correct::Replace {
                id: Id(replaces.to_string()),
            }
            .into(),
        );
        self.stream.send(Box::new(Stanza::Message(message))).await;
        Ok(id)
    }

    /// Sends a one-to-one message to `to` (a bare or full JID, or a room occupant `room/nick`:
    /// a private message through the room).
    pub async fn send_chat(&mut self, to: &str, text: &str) -> anyhow::Result<()> {
        self.sent += 1;
        let to = Jid::new(to).context("recipient jid")?;
        let mut message = Message::new(Some(to)).with_body(Lang::new(), text.to_string());
        message.type_ = MessageType::Chat;
        message.id = Some(Id(format!("{}-{}-{}", self.user, std::process::id(), self.sent)));
        self.stream.send(Box::new(Stanza::Message(message))).await;
        Ok(())
    }

    /// The one-to-one messages received within `window` (buffered ones included).
    pub async fn chats_for(&mut self, window: Duration) -> Vec<ChatMessage> {
        let deadline = Instant::now() + window;
        while let Ok(event) = self.next_event(deadline).await {
            self.keep(event);
        }
        self.chats.drain(..).collect()
    }

    /// Waits (at most `timeout`) for `nick` to be present in `room` (the presence the room
    /// sends when someone is there or arrives); returns when this client received it.
    pub async fn expect_presence(
        &mut self,
        room: &str,
        nick: &str,
        timeout: Duration,
    ) -> anyhow::Result<std::time::Instant> {
        let deadline = Instant::now() + timeout;
        let wanted = format!("{room}/{nick}");
        loop {
            while let Some((at, p)) = self.presences.pop_front() {
                if p.type_ == PresenceType::None && p.from.as_ref().map(|f| f.to_string()) == Some(wanted.clone()) {
                    return Ok(at);
                }
            }
            let event = self
                .next_event(deadline)
                .await
                .with_context(|| format!("{} waiting for {wanted} to be present", self.user))?;
            self.keep(event);
        }
    }

    /// Returns the first received message (already buffered or arriving within `timeout`) that
    /// `matching` accepts; messages it skips stay buffered for later calls.
    pub async fn expect_message(
        &mut self,
        matching: impl Fn(&RoomMessage) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<RoomMessage> {
        let deadline = Instant::now() + timeout;
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.received.iter().skip(scanned).position(&matching) {
                let found = self
                    .received
                    .remove(scanned + pos)
                    .expect("position is within the buffer");
                return Ok(found);
            }
            scanned = self.received.len();
            match self.next_event(deadline).await {
                Ok(event) => self.keep(event),
                Err(e) => {
                    let seen: Vec<String> = self
                        .received
                        .iter()
                        .map(|m| format!("<{}> {}", m.nick, m.text))
                        .collect();
                    return Err(e.context(format!(
                        "{}: no matching message; unmatched so far: {seen:?}",
                        self.user
                    )));
                }
            }
        }
    }

    /// Like [`TestClient::expect_message`], but every other message received meanwhile is
    /// dropped, not buffered (for rooms flooded with chatter).
    pub async fn expect_message_dropping_others(
        &mut self,
        matching: impl Fn(&RoomMessage) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<RoomMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(m) = self.received.pop_front() {
                if matching(&m) {
                    return Ok(m);
                }
            }
            self.presences.clear();
            let event = self
                .next_event(deadline)
                .await
                .with_context(|| format!("{}: no matching message", self.user))?;
            self.keep(event);
        }
    }

    /// Reads what has already arrived and drops it (a client that sends a lot keeps its own
    /// stream moving).
    pub async fn discard_received(&mut self) {
        while let Ok(event) = self.next_event(Instant::now()).await {
            drop(event);
        }
        self.received.clear();
        self.presences.clear();
        self.chats.clear();
    }

    /// Everything received until `window` has passed (buffered messages included), in order.
    pub async fn collect_for(&mut self, window: Duration) -> Vec<RoomMessage> {
        let deadline = Instant::now() + window;
        while let Ok(event) = self.next_event(deadline).await {
            self.keep(event);
        }
        self.received.drain(..).collect()
    }

    /// Closes the session cleanly (bounded).
    pub async fn close(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.stream.close()).await;
    }

    async fn next_event(&mut self, deadline: Instant) -> anyhow::Result<Event> {
        match tokio::time::timeout_at(deadline, self.stream.next()).await {
            Ok(Some(event)) => Ok(event),
            Ok(None) => bail!("{}: stream ended", self.user),
            Err(_) => bail!("{}: timed out", self.user),
        }
    }

    async fn wait_presence(
        &mut self,
        deadline: Instant,
        done: impl Fn(&Presence) -> Option<Result<(), String>>,
    ) -> anyhow::Result<()> {
        loop {
            let mut kept = VecDeque::new();
            while let Some((at, p)) = self.presences.pop_front() {
                if let Some(result) = done(&p) {
                    kept.extend(self.presences.drain(..));
                    self.presences = kept;
                    return result.map_err(anyhow::Error::msg);
                }
                kept.push_back((at, p));
            }
            self.presences = kept;
            let event = self.next_event(deadline).await?;
            self.keep(event);
        }
    }

    fn keep(&mut self, event: Event) {
        match event {
            Event::Stanza(Stanza::Message(m)) if m.type_ == MessageType::Groupchat => {
                let Some(from) = m.from.as_ref() else { return };
                let (Some(nick), Some(text)) = (from.resource(), best_body(&m)) else {
                    return;
                };
                self.received.push_back(RoomMessage {
                    room: from.to_bare().to_string(),
                    nick: nick.to_string(),
                    text: text.to_string(),
                    id: m.id.as_ref().map(|i| i.0.clone()),
                    delayed: m.payloads.iter().any(|p| Delay::try_from(p.clone()).is_ok()),
                    at: std::time::Instant::now(),
                });
            }
            Event::Stanza(Stanza::Message(m)) if m.type_ == MessageType::Chat => {
                let (Some(from), Some(text)) = (m.from.as_ref(), best_body(&m)) else {
                    return;
                };
                self.chats.push_back(ChatMessage {
                    from: from.to_string(),
                    text: text.to_string(),
                });
            }
            Event::Stanza(Stanza::Presence(p)) => self.presences.push_back((std::time::Instant::now(), p)),
            _ => {}
        }
    }
}

fn is_self(p: &Presence) -> bool {
    p.payloads
        .iter()
        .filter(|e: &&Element| e.is("x", "http://jabber.org/protocol/muc#user"))
        .filter_map(|e| MucUser::try_from(e.clone()).ok())
        .any(|m| m.status.contains(&Status::SelfPresence))
}

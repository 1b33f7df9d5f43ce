//! The chat seam: the one interface every chat platform implements (console, XMPP, Teams,
//! Discord), and the platform-neutral shapes that cross it.
//!
//! Inbound, an adapter turns a platform event into an [`Inbound`]: the room, who sent it (as far
//! as the platform can vouch for it), the text or a button press, the platform's message id for
//! de-duplication, and for a button press a [`ReplyHandle`] to answer the clicker alone.
//! Outbound, it receives [`Outbound`] items from its room's queue in order: a new message (a
//! line, or a run's card with its buttons) or an edit of a card it posted before, named by the
//! [`MessageRef`] that [`ChatAdapter::deliver`] returned for it. Text is a [`Rich`] message model
//! (Baton's words, text quoted from users, mentions) that each adapter renders with the escaping
//! its platform needs.

use crate::run::RunId;
use async_trait::async_trait;
use baton_policies::{Identity, Platform, Sender};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// A room (channel, conversation) on one platform: an XMPP MUC's bare JID, a Teams conversation
/// id, a Discord channel id, or the console.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RoomRef {
    pub platform: Platform,
    pub id: String,
}

impl RoomRef {
    pub fn new(platform: Platform, id: impl Into<String>) -> RoomRef {
        RoomRef {
            platform,
            id: id.into(),
        }
    }
}

impl fmt::Display for RoomRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.platform, self.id)
    }
}

/// What a platform assigned to a message Baton posted (an XMPP stanza id, a Teams activity id, a
/// Discord message id): kept in the store for a run's card, so an edit after a restart edits the
/// same message.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageRef(pub String);

impl fmt::Display for MessageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// ----- the message model --------------------------------------------------------------------

/// A person to call by name: adapters render it as a mention where the platform has them (and the
/// person has an identity there), otherwise as the person's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mention {
    /// The person's name in Baton's directory (`bob`).
    pub person: String,
    /// The person's identities on every platform.
    pub identities: Vec<Identity>,
}

impl Mention {
    /// The person's identity on `platform`, if they have one.
    pub fn on(&self, platform: Platform) -> Option<&Identity> {
        self.identities.iter().find(|i| i.platform() == platform)
    }
}

/// One piece of a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "lowercase")]
pub enum Span {
    /// Baton's own words (commands to type appear in backticks, as code where the platform has
    /// it).
    Text(String),
    /// Text that came from a person (a reason, a display name): shown as written, with the
    /// platform's markup and mention syntax neutralised.
    Quoted(String),
    /// People to call, e.g. the approvers of a request.
    Mention(Mention),
}

/// A message as Baton means it, before a platform renders it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Rich(pub Vec<Span>);

impl Rich {
    pub fn new() -> Rich {
        Rich::default()
    }

    pub fn text(mut self, s: impl Into<String>) -> Rich {
        let s = s.into();
        if !s.is_empty() {
            match self.0.last_mut() {
                Some(Span::Text(t)) => t.push_str(&s),
                _ => self.0.push(Span::Text(s)),
            }
        }
        self
    }

    pub fn quoted(mut self, s: impl Into<String>) -> Rich {
        self.0.push(Span::Quoted(s.into()));
        self
    }

    pub fn mention(mut self, m: Mention) -> Rich {
        self.0.push(Span::Mention(m));
        self
    }

    /// Appends another message.
    pub fn append(mut self, other: Rich) -> Rich {
        for span in other.0 {
            self = match span {
                Span::Text(t) => self.text(t),
                other => {
                    self.0.push(other);
                    self
                }
            };
        }
        self
    }

    /// Renders every span with `f`, concatenated.
    pub fn render(&self, mut f: impl FnMut(&Span) -> String) -> String {
        self.0.iter().map(&mut f).collect()
    }

    /// The plain text: what the console and XMPP show (quoted text as written, mentions as the
    /// person's name).
    pub fn plain(&self) -> String {
        self.render(|s| match s {
            Span::Text(t) | Span::Quoted(t) => t.clone(),
            Span::Mention(m) => m.person.clone(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Rich {
    fn from(s: String) -> Rich {
        Rich::new().text(s)
    }
}

impl From<&str> for Rich {
    fn from(s: &str) -> Rich {
        Rich::new().text(s)
    }
}

impl fmt::Display for Rich {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.plain())
    }
}

// ----- run cards and buttons ----------------------------------------------------------------

/// A platform-neutral button, for platforms that have them (Teams cards, Discord components).
/// It carries the plan hash it was shown with, so a click approves the plan the clicker saw.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "intent", rename_all = "lowercase")]
pub enum ButtonIntent {
    Approve { run: RunId, plan: String },
    Deny { run: RunId, plan: String },
}

impl ButtonIntent {
    pub fn run(&self) -> RunId {
        match self {
            ButtonIntent::Approve { run, .. } | ButtonIntent::Deny { run, .. } => *run,
        }
    }

    pub fn plan(&self) -> &str {
        match self {
            ButtonIntent::Approve { plan, .. } | ButtonIntent::Deny { plan, .. } => plan,
        }
    }

    pub fn verb(&self) -> &'static str {
        match self {
            ButtonIntent::Approve { .. } => "approve",
            ButtonIntent::Deny { .. } => "deny",
        }
    }

    /// `approve:7:d974d3765c60`: a compact id for platforms that carry a string per button
    /// (Discord's `custom_id`).
    pub fn encode(&self) -> String {
        format!("{}:{}:{}", self.verb(), self.run().0, self.plan())
    }

    /// Reads [`ButtonIntent::encode`]'s form back; anything else is `None`.
    pub fn decode(s: &str) -> Option<ButtonIntent> {
        let mut parts = s.splitn(3, ':');
        let (verb, run, plan) = (parts.next()?, parts.next()?, parts.next()?);
        let run = RunId(run.parse().ok().filter(|n: &u64| *n > 0)?);
        if plan.len() < 6 || plan.len() > 64 || !plan.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let plan = plan.to_ascii_lowercase();
        match verb {
            "approve" => Some(ButtonIntent::Approve { run, plan }),
            "deny" => Some(ButtonIntent::Deny { run, plan }),
            _ => None,
        }
    }
}

/// Where a run (or one of its steps, or one host's action) stands, for colouring a card.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    Waiting,
    Running,
    Ok,
    Failed,
    /// Ended without running (aborted, denied, expired), or its outcome is not known.
    Stopped,
}

/// One host's (or the bot's) part of a step on a card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardAction {
    /// `edge2a`, `mgmt1`, `dns`, `bot`.
    pub place: String,
    /// The exact command or operation.
    pub command: String,
    pub mark: Mark,
    /// The outcome's sentence and time, once ended.
    pub detail: Option<String>,
}

/// One step on a card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardStep {
    pub number: usize,
    pub title: String,
    pub summary: String,
    pub mark: Mark,
    pub actions: Vec<CardAction>,
}

/// The live state of a run, for platforms that keep one card per run up to date.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCard {
    pub run: RunId,
    /// `#7 XMPP federation EdgePool1 -> EdgePool2`.
    pub title: String,
    /// The run as a whole.
    pub mark: Mark,
    /// `pending approval`, `running, step 2/8 (services)`, `succeeded`, ...
    pub state: String,
    /// The requester's reason, as typed.
    pub reason: Option<String>,
    pub steps: Vec<CardStep>,
    /// Who requested, who approved, when, the plan hash, the expiry or the duration.
    pub footer: String,
    /// The plan hash the buttons carry (its short form).
    pub plan: String,
    /// Buttons that still make sense (approve/deny while pending).
    pub buttons: Vec<ButtonIntent>,
    /// Warnings of the plan.
    pub warnings: Vec<String>,
}

// ----- the seam -----------------------------------------------------------------------------

/// An answer to the person who pressed a button, and only to them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InteractionReply {
    /// The press was refused (not allowed, plan changed, run over): say why to the clicker;
    /// the card stays as it is.
    Refused(Rich),
    /// The press was taken: the card as it is now (the platform may show it in its answer to the
    /// click). Room-wide messages follow through the outbox.
    Accepted(Option<RunCard>),
}

/// A way to answer the clicker directly, before `deadline` (Teams answers in the HTTP response
/// of the invoke, Discord within 3 seconds of the interaction). Cloning shares the one answer:
/// the first [`ReplyHandle::answer`] wins.
#[derive(Clone, Debug)]
pub struct ReplyHandle {
    slot: Arc<Mutex<Option<oneshot::Sender<InteractionReply>>>>,
    pub deadline: tokio::time::Instant,
}

impl ReplyHandle {
    /// A handle and the receiving end the adapter awaits (until `deadline`).
    pub fn new(deadline: tokio::time::Instant) -> (ReplyHandle, oneshot::Receiver<InteractionReply>) {
        let (tx, rx) = oneshot::channel();
        (
            ReplyHandle {
                slot: Arc::new(Mutex::new(Some(tx))),
                deadline,
            },
            rx,
        )
    }

    /// Answers the clicker; returns false when already answered or the adapter gave up waiting.
    pub fn answer(&self, reply: InteractionReply) -> bool {
        let tx = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        tx.is_some_and(|tx| tx.send(reply).is_ok())
    }
}

/// Fired once the daemon has handled a message and delivered its immediate answers in the
/// message's room (the console waits for it, so a piped session reads like a conversation).
#[derive(Clone, Debug)]
pub struct Ack(Arc<Mutex<Option<oneshot::Sender<()>>>>);

impl Ack {
    pub fn new() -> (Ack, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Ack(Arc::new(Mutex::new(Some(tx)))), rx)
    }

    pub fn fire(&self) {
        if let Some(tx) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
        }
    }
}

/// One message received from a room.
#[derive(Clone, Debug)]
pub struct Inbound {
    pub room: RoomRef,
    pub sender: Sender,
    /// The text as typed (a button press carries the equivalent command text).
    pub text: String,
    /// The platform's id for this message, unique per room and sender; a second message with the
    /// same id from the same sender in the same room is ignored. Empty when the platform gave
    /// none (such a message is never taken for another).
    pub message_id: String,
    /// Set when the message is a button press rather than typed text.
    pub button: Option<ButtonIntent>,
    /// Set for interactions that can be answered to the clicker alone.
    pub reply: Option<ReplyHandle>,
    /// Set when the adapter waits until the message was handled.
    pub ack: Option<Ack>,
}

impl PartialEq for Inbound {
    fn eq(&self, other: &Inbound) -> bool {
        self.room == other.room
            && self.sender == other.sender
            && self.text == other.text
            && self.message_id == other.message_id
            && self.button == other.button
    }
}

impl Inbound {
    /// A typed message.
    pub fn text(room: RoomRef, sender: Sender, text: impl Into<String>, message_id: impl Into<String>) -> Inbound {
        Inbound {
            room,
            sender,
            text: text.into(),
            message_id: message_id.into(),
            button: None,
            reply: None,
            ack: None,
        }
    }
}

/// One item to post, taken from a room's queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbound {
    /// The outbox sequence number: unique and increasing, usable as an idempotent message id.
    /// Negative for answers delivered directly, without the outbox (they changed no state).
    pub id: i64,
    pub room: RoomRef,
    /// The run this message is about, if any.
    pub run: Option<RunId>,
    /// The message (for an edit: the line that caused it).
    pub body: Rich,
    /// The run's card after this update: for a new message on a platform with cards, post the
    /// card (with its buttons) and return its reference; for an edit, the card to show.
    pub card: Option<RunCard>,
    /// Set for a card update: replace the message with this reference by `card`.
    pub edit: Option<MessageRef>,
}

impl Outbound {
    /// The plain text of the message.
    pub fn text(&self) -> String {
        self.body.plain()
    }
}

/// What the platform assigned to a delivered message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    pub reference: Option<MessageRef>,
}

/// Why a message could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Not connected, not in the room yet, or the platform asked to slow down: the room's queue
    /// keeps the message and tries again, in order, after `retry_after` (or its own backoff).
    #[error("not delivered yet: {reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The platform will never accept this message (room gone, forbidden): the queue records the
    /// reason and moves on.
    #[error("cannot be delivered: {reason}")]
    Permanent { reason: String },
}

impl DeliveryError {
    pub fn transient(reason: impl Into<String>) -> DeliveryError {
        DeliveryError::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }
}

/// What a platform can do beyond posting lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// It posts a run's card (with buttons) and edits it in place as the run moves: step lines
    /// become card edits there, and notices stay separate messages.
    pub cards: bool,
    /// The least time between two edits of one card (the platform's rate limit): updates in
    /// between are coalesced, the latest wins.
    pub edit_interval: Duration,
}

impl Default for Capabilities {
    fn default() -> Capabilities {
        Capabilities {
            cards: false,
            edit_interval: Duration::ZERO,
        }
    }
}

/// How an adapter's connection looks right now: the room queues wake up the moment their room
/// is joined again, and health checks read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    /// Connected and authenticated.
    pub online: bool,
    /// Rooms (ids as in [`RoomRef::id`]) the bot can post to now.
    pub joined: BTreeSet<String>,
    /// How many times a session was (re-)established.
    pub sessions: u64,
}

/// Who is in each room now, as far as the platform tells (XMPP: the occupants whose real JID the
/// room shows, by the nickname they use there). Only platforms that report presence have one;
/// elsewhere Baton cannot know who is in a room.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Presence {
    /// Room id (as in [`RoomRef::id`]) -> the identities present there and the name each goes by
    /// in the room.
    pub rooms: BTreeMap<String, BTreeMap<Identity, String>>,
}

impl Presence {
    /// The name `identity` goes by in `room`, when it is there.
    pub fn name_in(&self, room: &str, identity: &Identity) -> Option<&str> {
        self.rooms.get(room)?.get(identity).map(String::as_str)
    }
}

/// A chat platform connection.
#[async_trait]
pub trait ChatAdapter: Send + Sync + 'static {
    fn platform(&self) -> Platform;

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Rooms the platform must join before it is ready (`/readyz`); none where there is
    /// nothing to join.
    fn rooms(&self) -> Vec<RoomRef> {
        Vec::new()
    }

    /// Whether deliveries started one after the other reach their room in that order even when
    /// none waits for the confirmation of the one before (one ordered stream, as XMPP's). The
    /// room's task then sends the read-only answers waiting in a row together and waits for
    /// their confirmations together, not one round trip each.
    fn ordered_sends(&self) -> bool {
        false
    }

    /// The connection's state, for platforms that connect (none for the console).
    fn link(&self) -> Option<watch::Receiver<Link>> {
        None
    }

    /// Who is in the platform's rooms, for platforms that report presence (XMPP). The approval
    /// request calls only the approvers present; where this is `None`, it calls every approver
    /// the platform can address.
    fn presence(&self) -> Option<watch::Receiver<Presence>> {
        None
    }

    /// Connects (and reconnects, with backoff) and forwards every live message from the
    /// configured rooms to `inbound` until `shutdown` is cancelled.
    async fn run(&self, inbound: mpsc::Sender<Inbound>, shutdown: CancellationToken) -> anyhow::Result<()>;

    /// Posts one message, or edits the card `message.edit` names. Returns once the platform
    /// accepted it, with the reference it assigned.
    async fn deliver(&self, message: &Outbound) -> Result<Delivered, DeliveryError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buttons_round_trip_and_refuse_anything_else() {
        let b = ButtonIntent::Approve {
            run: RunId(7),
            plan: "d974d3765c60".into(),
        };
        assert_eq!(b.encode(), "approve:7:d974d3765c60");
        assert_eq!(ButtonIntent::decode(&b.encode()), Some(b));
        assert_eq!(
            ButtonIntent::decode("deny:12:ABCDEF"),
            Some(ButtonIntent::Deny {
                run: RunId(12),
                plan: "abcdef".into()
            })
        );
        for bad in [
            "",
            "approve",
            "approve:7",
            "approve:0:d974d3",
            "approve:x:d974d3",
            "approve:7:d97",
            "approve:7:zz74d3",
            "retry:7:d974d3",
            "approve:7:d974d3:extra",
        ] {
            assert_eq!(ButtonIntent::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn rich_text_merges_and_renders_plain() {
        let m = Rich::from("Reason: ")
            .quoted("@everyone *now*")
            .text(" (by ")
            .text("alice)");
        assert_eq!(m.0.len(), 3);
        assert_eq!(m.plain(), "Reason: @everyone *now* (by alice)");
        let mention = Mention {
            person: "bob".into(),
            identities: vec![],
        };
        assert_eq!(Rich::from("ask ").mention(mention).plain(), "ask bob");
    }

    #[test]
    fn a_reply_handle_answers_once() {
        let (h, mut rx) = ReplyHandle::new(tokio::time::Instant::now());
        let h2 = h.clone();
        assert!(h.answer(InteractionReply::Accepted(None)));
        assert!(!h2.answer(InteractionReply::Refused("no".into())));
        assert_eq!(rx.try_recv().expect("answered"), InteractionReply::Accepted(None));
    }
}

//! The chat seam: the one interface every chat platform implements (console now; XMPP, Teams
//! and Discord behind the same trait).
//!
//! Inbound, an adapter turns a platform event into an [`Inbound`]: the room, who sent it (as far
//! as the platform can vouch for it), the text or a button press, and the platform's message id
//! for de-duplication. Outbound, it receives [`Outbound`] messages from the outbox in order: the
//! text to post and the run it belongs to, with a [`RunCard`] snapshot so that a platform able to
//! edit messages keeps one live card per run while a plain one posts a line per update.

use crate::run::RunId;
use async_trait::async_trait;
use baton_policies::{Platform, Sender};
use serde::{Deserialize, Serialize};
use std::fmt;
use tokio::sync::mpsc;
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

/// A platform-neutral button, for platforms that have them (Teams cards, Discord components).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "intent", content = "run", rename_all = "lowercase")]
pub enum ButtonIntent {
    Approve(RunId),
    Deny(RunId),
}

/// One message received from a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub room: RoomRef,
    pub sender: Sender,
    /// The text as typed (a button press carries the equivalent command text).
    pub text: String,
    /// The platform's id for this message; a second message with the same id in the same room is
    /// ignored.
    pub message_id: String,
    /// Set when the message is a button press rather than typed text.
    pub button: Option<ButtonIntent>,
}

/// The live state of a run, for platforms that keep one card per run up to date.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCard {
    pub run: RunId,
    /// `#7 EdgePool1 -> EdgePool2`.
    pub title: String,
    /// `pending approval`, `running`, `succeeded`, ...
    pub state: String,
    /// One line per step with its status mark.
    pub steps: Vec<String>,
    /// Who requested, who approved, when.
    pub footer: String,
    /// Buttons that still make sense (approve/deny while pending).
    pub buttons: Vec<ButtonIntent>,
}

/// One message to post, taken from the outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbound {
    /// The outbox sequence number: unique and increasing, usable as an idempotent message id.
    /// Negative for answers delivered directly, without the outbox (they changed no state).
    pub id: i64,
    pub room: RoomRef,
    /// The run this message is about, if any.
    pub run: Option<RunId>,
    /// Plain text, for every platform.
    pub text: String,
    /// The run's card after this update, for platforms that edit messages in place.
    pub card: Option<RunCard>,
}

/// Why a message could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Not connected, or the platform asked to slow down: the outbox keeps the message and tries
    /// again, in order, after `retry_after` (or its own backoff).
    #[error("not delivered yet: {reason}")]
    Transient {
        reason: String,
        retry_after: Option<std::time::Duration>,
    },
    /// The platform will never accept this message (room gone, forbidden): the outbox records the
    /// reason and moves on so one bad room cannot block the others.
    #[error("cannot be delivered: {reason}")]
    Permanent { reason: String },
}

/// A chat platform connection.
#[async_trait]
pub trait ChatAdapter: Send + Sync + 'static {
    fn platform(&self) -> Platform;

    /// Connects (and reconnects, with backoff) and forwards every live message from the
    /// configured rooms to `inbound` until `shutdown` is cancelled.
    async fn run(&self, inbound: mpsc::Sender<Inbound>, shutdown: CancellationToken) -> anyhow::Result<()>;

    /// Posts (or, for a run card, edits) one message. Returns once the platform accepted it.
    async fn deliver(&self, message: &Outbound) -> Result<(), DeliveryError>;
}

//! What the bot knows about each room it sits in, and how a received stanza becomes an
//! [`Inbound`] (or is dropped): the sender is the occupant's real bare JID taken from MUC
//! presence, never the nickname; history (anything with a delay stamp), corrections
//! (XEP-0308), private messages, the bot's own messages and ids already handled are never
//! commands. The bot's own messages, live or replayed from history, are handed back only to
//! confirm their delivery. Pure: no IO, so every rule is tested with stanzas.

use crate::chat::{Inbound, RoomRef};
use baton_policies::{Identity, Platform, Sender};
use std::collections::{HashMap, HashSet, VecDeque};
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::delay::Delay;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::muc::user::{MucUser, Role, Status};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::StanzaError;
use tokio_xmpp::parsers::stanza_id::{OriginId, StanzaId};

/// Posted once in a room where the bot cannot see real JIDs.
pub const HIDDEN_JIDS_NOTICE: &str = "I cannot see members' real JIDs in this room (it is semi-anonymous and I am \
     not a moderator), so I will not accept requests or approvals here. To use Baton in this room, make it \
     non-anonymous (Prosody: whois = anyone; ejabberd: anonymous = false) or make me a moderator.";

/// Posted once per room (per process) the first time someone corrects a message there.
pub const EDITS_NOTICE: &str = "I do not act on edited messages (XEP-0308 corrections): to give a command, \
     send it again as a new message.";

/// The one line a private message to Baton gets (`rooms`: the rooms where commands are read).
pub fn private_notice(rooms: &[String]) -> String {
    let (word, list) = match rooms {
        [one] => ("room", one.clone()),
        _ => ("rooms", rooms.join(", ")),
    };
    format!(
        "I take commands only in the incident {word} ({list}), where everyone can see them; private messages \
         to me are not read."
    )
}

/// The reason attached to senders whose real JID the bot cannot see.
pub const HIDDEN_JIDS_WHY: &str = "this room hides members' real JIDs from Baton (semi-anonymous room, Baton is \
     not a moderator), so requests and approvals are refused here; make the room non-anonymous or Baton a moderator";

/// How many handled message ids each room remembers for de-duplication.
const REMEMBERED_IDS: usize = 4096;

/// A set of recently handled ids with a fixed capacity (oldest forgotten first).
#[derive(Debug, Default)]
pub struct RecentIds {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl RecentIds {
    /// Records `id`; returns false if it was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= REMEMBERED_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(id.to_string());
        self.set.insert(id.to_string());
        true
    }
}

/// What a presence from the room changed.
#[derive(Debug, PartialEq, Eq)]
pub enum PresenceOutcome {
    /// The bot's own join was confirmed; `sees_real_jids` says whether senders can be verified.
    Joined {
        sees_real_jids: bool,
    },
    /// The bot is no longer in the room (left, kicked, room shut down).
    Left {
        reason: String,
    },
    /// The room refused the join.
    JoinRefused {
        error: String,
        nick_conflict: bool,
    },
    /// Someone else's presence, recorded.
    Occupant,
    Ignored,
}

/// What a groupchat message from the room is.
#[derive(Debug, PartialEq)]
pub enum MessageOutcome {
    /// A live message from an occupant.
    Live(Inbound),
    /// The room reflected one of the bot's own messages (proof of delivery): its stanza id,
    /// its XEP-0359 origin id (kept by servers that rewrite stanza ids) and its body.
    OwnEcho {
        id: Option<String>,
        origin_id: Option<String>,
        body: Option<String>,
    },
    /// One of the bot's own messages replayed from the room's history (asked for after a
    /// reconnect, to see what the room got), stamped at `stamp_ms` (Unix milliseconds).
    OwnHistory {
        id: Option<String>,
        origin_id: Option<String>,
        body: Option<String>,
        stamp_ms: i64,
    },
    /// The room's subject: sent after the history when joining, so it ends the history.
    Subject,
    /// A correction of an earlier message (XEP-0308): never a command.
    Correction,
    /// A private message to the bot from the occupant `nick` (never a command).
    Private {
        nick: String,
    },
    /// The room reported an error for a message the bot sent.
    Error {
        id: Option<String>,
        error: String,
        permanent: bool,
    },
    /// The room's configuration changed; the bot may now see (or no longer see) real JIDs.
    ConfigChanged {
        sees_real_jids: bool,
    },
    Dropped(&'static str),
}

/// One room the bot is configured to be in.
#[derive(Debug)]
pub struct RoomState {
    pub room: BareJid,
    /// The bot's nickname (as configured, possibly with a suffix after a conflict).
    pub nick: String,
    /// Mirror rooms are written to but not read.
    pub mirror_only: bool,
    pub joined: bool,
    non_anonymous: bool,
    moderator: bool,
    /// Nickname -> real bare JID, when the room shows it.
    occupants: HashMap<String, Option<BareJid>>,
    handled: RecentIds,
    /// Set once the hidden-JIDs notice was posted (remembered across restarts by the driver).
    pub notice_posted: bool,
    /// Set once the edits notice was posted (once per process).
    pub edits_notice_posted: bool,
}

impl RoomState {
    pub fn new(room: BareJid, nick: String, mirror_only: bool) -> RoomState {
        RoomState {
            room,
            nick,
            mirror_only,
            joined: false,
            non_anonymous: false,
            moderator: false,
            occupants: HashMap::new(),
            handled: RecentIds::default(),
            notice_posted: false,
            edits_notice_posted: false,
        }
    }

    pub fn room_ref(&self) -> RoomRef {
        RoomRef::new(Platform::Xmpp, self.room.as_str())
    }

    /// Who is here, as far as the room shows real JIDs: each occupant's identity and nickname
    /// (the bot itself excluded; one nickname per identity when a person has several clients).
    pub fn present(&self) -> std::collections::BTreeMap<Identity, String> {
        let mut out = std::collections::BTreeMap::new();
        if !self.joined || self.mirror_only {
            return out;
        }
        let mut nicks: Vec<(&String, &BareJid)> = self
            .occupants
            .iter()
            .filter(|(nick, _)| **nick != self.nick)
            .filter_map(|(nick, real)| real.as_ref().map(|r| (nick, r)))
            .collect();
        nicks.sort();
        for (nick, real) in nicks {
            if let Ok(identity) = Identity::new(Platform::Xmpp, real.as_str()) {
                out.entry(identity).or_insert_with(|| nick.clone());
            }
        }
        out
    }

    /// Whether the bot can tell who sends messages here.
    pub fn sees_real_jids(&self) -> bool {
        self.non_anonymous || self.moderator
    }

    /// Forgets the occupants (the stream was reset: the bot is out of the room until it rejoins).
    pub fn reset(&mut self) {
        self.joined = false;
        self.moderator = false;
        self.occupants.clear();
    }

    /// Handles a presence whose `from` is this room (bare or with a nickname).
    pub fn on_presence(&mut self, presence: &Presence) -> PresenceOutcome {
        let Some(from) = &presence.from else {
            return PresenceOutcome::Ignored;
        };
        let nick = from.resource().map(|r| r.as_str().to_string());
        if presence.type_ == PresenceType::Error {
            let error = presence_error(presence);
            let conflict = error.contains("conflict");
            return PresenceOutcome::JoinRefused {
                error,
                nick_conflict: conflict,
            };
        }
        let Some(nick) = nick else {
            return PresenceOutcome::Ignored;
        };
        let muc = muc_user(&presence.payloads);
        let statuses = muc.as_ref().map(|m| m.status.clone()).unwrap_or_default();
        let is_self = statuses.contains(&Status::SelfPresence) || nick == self.nick;
        let item = muc.as_ref().and_then(|m| m.items.first());
        if presence.type_ == PresenceType::Unavailable {
            self.occupants.remove(&nick);
            if is_self && !statuses.contains(&Status::NewNick) {
                self.reset();
                let reason = if statuses.contains(&Status::Kicked) {
                    "kicked"
                } else if statuses.contains(&Status::Banned) {
                    "banned"
                } else if statuses.contains(&Status::ServiceShutdown) {
                    "room service shut down"
                } else {
                    "left the room"
                };
                return PresenceOutcome::Left {
                    reason: reason.to_string(),
                };
            }
            if is_self && let Some(new_nick) = item.and_then(|i| i.nick.clone()) {
                self.nick = new_nick;
            }
            return PresenceOutcome::Occupant;
        }
        if presence.type_ != PresenceType::None {
            return PresenceOutcome::Ignored;
        }
        let real = item.and_then(|i| i.jid.clone()).map(|full| full.into_bare());
        if is_self {
            self.nick = nick.clone();
            self.moderator = item.is_some_and(|i| i.role == Role::Moderator);
            if statuses.contains(&Status::NonAnonymousRoom) {
                self.non_anonymous = true;
            }
            let newly_joined = !self.joined;
            self.joined = true;
            self.occupants.insert(nick, real);
            if newly_joined {
                return PresenceOutcome::Joined {
                    sees_real_jids: self.sees_real_jids(),
                };
            }
            return PresenceOutcome::Occupant;
        }
        self.occupants.insert(nick, real);
        PresenceOutcome::Occupant
    }

    /// Handles a message whose `from` is this room (bare or with a nickname).
    pub fn on_message(&mut self, message: &Message) -> MessageOutcome {
        let id = message.id.as_ref().map(|i| i.0.clone());
        if message.type_ == MessageType::Error {
            let (error, permanent) = message_error(message);
            return MessageOutcome::Error { id, error, permanent };
        }
        let nick = message
            .from
            .as_ref()
            .and_then(|f| f.resource())
            .map(|r| r.as_str().to_string());
        if message.type_ == MessageType::Chat {
            // A private message through the room: answered with one line, never a command.
            return match (nick, best_body(message)) {
                (Some(nick), Some(_)) if !has_delay(&message.payloads) && nick != self.nick => {
                    MessageOutcome::Private { nick }
                }
                _ => MessageOutcome::Dropped("private message without a body"),
            };
        }
        if message.type_ != MessageType::Groupchat {
            return MessageOutcome::Dropped("not a groupchat message");
        }
        let Some(nick) = nick else {
            // From the room itself: configuration changes are announced with status codes.
            let statuses = muc_user(&message.payloads).map(|m| m.status).unwrap_or_default();
            if statuses.contains(&Status::ConfigRoomNonAnonymous) {
                self.non_anonymous = true;
                return MessageOutcome::ConfigChanged {
                    sees_real_jids: self.sees_real_jids(),
                };
            }
            if statuses.contains(&Status::ConfigRoomSemiAnonymous) {
                self.non_anonymous = false;
                self.notice_posted = false;
                return MessageOutcome::ConfigChanged {
                    sees_real_jids: self.sees_real_jids(),
                };
            }
            if !message.subjects.is_empty() {
                return MessageOutcome::Subject;
            }
            return MessageOutcome::Dropped("room notice");
        };
        if let Some(stamp_ms) = delay_stamp(&message.payloads) {
            // History is never a command; the bot's own lines in it show what the room got.
            if nick == self.nick {
                return MessageOutcome::OwnHistory {
                    id,
                    origin_id: origin_id(&message.payloads),
                    body: best_body(message).map(str::to_string),
                    stamp_ms,
                };
            }
            return MessageOutcome::Dropped("history (delay stamp)");
        }
        if best_body(message).is_none() && !message.subjects.is_empty() {
            return MessageOutcome::Subject;
        }
        if nick == self.nick {
            return MessageOutcome::OwnEcho {
                id,
                origin_id: origin_id(&message.payloads),
                body: best_body(message).map(str::to_string),
            };
        }
        if !self.joined {
            return MessageOutcome::Dropped("received before the join completed");
        }
        let Some(text) = best_body(message) else {
            return MessageOutcome::Dropped("no body");
        };
        if self.mirror_only {
            return MessageOutcome::Dropped("mirror room");
        }
        if is_correction(&message.payloads) {
            return MessageOutcome::Correction;
        }
        let sender = match self.occupants.get(&nick) {
            Some(Some(real)) => match Identity::new(Platform::Xmpp, real.as_str()) {
                Ok(identity) => Sender::Verified(identity),
                Err(e) => Sender::Unverified {
                    display: nick.clone(),
                    why: format!("unusable jid: {e}"),
                },
            },
            Some(None) => Sender::Unverified {
                display: nick.clone(),
                why: HIDDEN_JIDS_WHY.to_string(),
            },
            None => Sender::Unverified {
                display: nick.clone(),
                why: "the sender is not among the room's occupants as Baton sees them".to_string(),
            },
        };
        // The id the room stamped (XEP-0359, unique in the room's archive) where it offers one,
        // else the client's own id: unique only per sender, so the key holds the sender. A
        // message without any id is never taken for another one.
        let message_id = stanza_id_by(&message.payloads, &self.room)
            .map(|sid| format!("sid:{sid}"))
            .or(id)
            .unwrap_or_default();
        if !message_id.is_empty() && !self.handled.insert(&format!("{} {message_id}", sender_key(&sender))) {
            return MessageOutcome::Dropped("id already handled");
        }
        MessageOutcome::Live(Inbound::text(self.room_ref(), sender, text, message_id))
    }
}

/// The message body to read: the one without a language tag, else English, else any.
pub fn best_body(message: &Message) -> Option<&str> {
    message.get_best_body(vec!["", "en"]).map(|(_, body)| body.as_str())
}

fn muc_user(payloads: &[Element]) -> Option<MucUser> {
    payloads.iter().find_map(|p| MucUser::try_from(p.clone()).ok())
}

/// The sender, as far as the room lets the bot tell people apart.
fn sender_key(sender: &Sender) -> String {
    match sender {
        Sender::Verified(id) => id.to_string(),
        Sender::Unverified { display, .. } => format!("nick:{display}"),
    }
}

/// The XEP-0359 origin id the sender set.
fn origin_id(payloads: &[Element]) -> Option<String> {
    payloads
        .iter()
        .find_map(|p| OriginId::try_from(p.clone()).ok())
        .map(|o| o.id)
}

/// The XEP-0359 stanza id stamped by `room` itself (one stamped by anyone else proves nothing).
fn stanza_id_by(payloads: &[Element], room: &BareJid) -> Option<String> {
    payloads
        .iter()
        .filter_map(|p| StanzaId::try_from(p.clone()).ok())
        .find(|s| s.by.to_bare() == *room)
        .map(|s| s.id)
}

fn has_delay(payloads: &[Element]) -> bool {
    payloads.iter().any(|p| Delay::try_from(p.clone()).is_ok())
}

/// The delay stamp (Unix milliseconds) of a stanza that carries one; a stamp that does not
/// parse still marks the stanza as delayed (at time zero).
fn delay_stamp(payloads: &[Element]) -> Option<i64> {
    if let Some(delay) = payloads.iter().find_map(|p| Delay::try_from(p.clone()).ok()) {
        return Some(delay.stamp.0.timestamp_millis());
    }
    payloads.iter().any(|p| p.is("delay", "urn:xmpp:delay")).then_some(0)
}

/// Whether the message corrects an earlier one (XEP-0308 Last Message Correction).
fn is_correction(payloads: &[Element]) -> bool {
    payloads.iter().any(|p| p.is("replace", "urn:xmpp:message-correct:0"))
}

fn describe(error: &StanzaError) -> String {
    let text = error
        .texts
        .values()
        .next()
        .map(|t| format!(": {t}"))
        .unwrap_or_default();
    format!("{:?} ({:?}){text}", error.defined_condition, error.type_).to_lowercase()
}

fn presence_error(presence: &Presence) -> String {
    presence
        .payloads
        .iter()
        .find_map(|p| StanzaError::try_from(p.clone()).ok())
        .map(|e| describe(&e))
        .unwrap_or_else(|| "unspecified error".to_string())
}

fn message_error(message: &Message) -> (String, bool) {
    use tokio_xmpp::parsers::stanza_error::DefinedCondition as C;
    match message
        .payloads
        .iter()
        .find_map(|p| StanzaError::try_from(p.clone()).ok())
    {
        // The room is gone or will never accept the bot: retrying cannot help.
        Some(e) => {
            let permanent = matches!(
                e.defined_condition,
                C::ItemNotFound | C::Forbidden | C::NotAllowed | C::Gone { .. }
            );
            (describe(&e), permanent)
        }
        None => ("unspecified error".to_string(), false),
    }
}

/// The bare room JID a stanza comes from, if any.
pub fn room_of(from: Option<&Jid>) -> Option<BareJid> {
    from.map(|j| j.to_bare())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: &str = "incident@conference.contoso.test";

    fn presence(xml: &str) -> Presence {
        let el: Element = xml.parse().expect("test xml parses");
        Presence::try_from(el).expect("test presence parses")
    }

    fn message(xml: &str) -> Message {
        let el: Element = xml.parse().expect("test xml parses");
        Message::try_from(el).expect("test message parses")
    }

    fn occupant(nick: &str, jid: Option<&str>, statuses: &[u16], role: &str) -> String {
        let jid = jid.map(|j| format!(" jid='{j}/res'")).unwrap_or_default();
        let statuses: String = statuses.iter().map(|c| format!("<status code='{c}'/>")).collect();
        format!(
            "<presence xmlns='jabber:client' from='{ROOM}/{nick}' to='baton@contoso.test/x'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='{role}'{jid}/>{statuses}</x></presence>"
        )
    }

    fn groupchat(nick: &str, id: &str, body: &str, extra: &str) -> String {
        format!(
            "<message xmlns='jabber:client' type='groupchat' id='{id}' from='{ROOM}/{nick}' to='baton@contoso.test/x'>\
             <body>{body}</body>{extra}</message>"
        )
    }

    fn joined_room(non_anonymous: bool) -> RoomState {
        let mut room = RoomState::new(BareJid::new(ROOM).expect("valid"), "baton".into(), false);
        let alice = if non_anonymous {
            Some("alice@contoso.test")
        } else {
            None
        };
        let mallory = if non_anonymous {
            Some("mallory@contoso.test")
        } else {
            None
        };
        room.on_presence(&presence(&occupant("alice", alice, &[], "participant")));
        room.on_presence(&presence(&occupant("bob", mallory, &[], "participant")));
        let codes: &[u16] = if non_anonymous { &[100, 110] } else { &[110] };
        let own = if non_anonymous {
            Some("baton@contoso.test")
        } else {
            None
        };
        let out = room.on_presence(&presence(&occupant("baton", own, codes, "participant")));
        assert_eq!(
            out,
            PresenceOutcome::Joined {
                sees_real_jids: non_anonymous
            }
        );
        room
    }

    /// Runs one message through the room and prints the outcome on one line.
    fn check(room: &mut RoomState, xml: &str, expect: &str) {
        let got = match room.on_message(&message(xml)) {
            MessageOutcome::Live(inbound) => match inbound.sender {
                Sender::Verified(id) => format!("live {id} {:?} id={}", inbound.text, inbound.message_id),
                Sender::Unverified { display, why } => {
                    format!(
                        "unverified {display} {:?} why={}",
                        inbound.text,
                        &why[..why.len().min(30)]
                    )
                }
            },
            other => format!("{other:?}"),
        };
        assert_eq!(got, expect, "for {xml}");
    }

    #[test]
    fn identity_is_the_real_jid_never_the_nickname() {
        let mut room = joined_room(true);
        check(
            &mut room,
            &groupchat("alice", "m1", "!status", ""),
            "live xmpp:alice@contoso.test \"!status\" id=m1",
        );
        // mallory joined with the nickname "bob": she is mallory.
        check(
            &mut room,
            &groupchat("bob", "m2", "!approve 7", ""),
            "live xmpp:mallory@contoso.test \"!approve 7\" id=m2",
        );
        check(
            &mut room,
            &groupchat("ghost", "m3", "hi", ""),
            "unverified ghost \"hi\" why=the sender is not among the ro",
        );
    }

    #[test]
    fn history_own_messages_and_repeated_ids_are_dropped() {
        let mut room = joined_room(true);
        let delay =
            "<delay xmlns='urn:xmpp:delay' stamp='2024-01-01T00:00:00Z' from='incident@conference.contoso.test'/>";
        check(
            &mut room,
            &groupchat("alice", "h1", "!failover xmpp EdgePool2", delay),
            "Dropped(\"history (delay stamp)\")",
        );
        check(
            &mut room,
            &groupchat("baton", "baton-1-0", "Run #7", ""),
            "OwnEcho { id: Some(\"baton-1-0\"), origin_id: None, body: Some(\"Run #7\") }",
        );
        // A server that rewrote the stanza id: the origin id still names the message.
        check(
            &mut room,
            &groupchat(
                "baton",
                "server-42",
                "Run #7",
                "<origin-id xmlns='urn:xmpp:sid:0' id='baton-1-0'/>",
            ),
            "OwnEcho { id: Some(\"server-42\"), origin_id: Some(\"baton-1-0\"), body: Some(\"Run #7\") }",
        );
        check(
            &mut room,
            &groupchat("alice", "m1", "!status", ""),
            "live xmpp:alice@contoso.test \"!status\" id=m1",
        );
        check(
            &mut room,
            &groupchat("alice", "m1", "!status", ""),
            "Dropped(\"id already handled\")",
        );
        // Ids are unique per sender only: carol's message with alice's id is a message of its own.
        check(
            &mut room,
            &groupchat("bob", "m1", "!runs", ""),
            "live xmpp:mallory@contoso.test \"!runs\" id=m1",
        );
        // A message without an id is never taken for another.
        for _ in 0..2 {
            check(
                &mut room,
                &format!(
                    "<message xmlns='jabber:client' type='groupchat' from='{ROOM}/alice'><body>!approve 1</body></message>"
                ),
                "live xmpp:alice@contoso.test \"!approve 1\" id=",
            );
        }
        // The room's own stanza id (XEP-0359) is preferred; one stamped by anyone else is not.
        let by_room = format!("<stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='r-9'/>");
        check(
            &mut room,
            &groupchat("alice", "m5", "!status", &by_room),
            "live xmpp:alice@contoso.test \"!status\" id=sid:r-9",
        );
        let by_other = "<stanza-id xmlns='urn:xmpp:sid:0' by='alice@contoso.test' id='forged'/>";
        check(
            &mut room,
            &groupchat("alice", "m6", "!status", by_other),
            "live xmpp:alice@contoso.test \"!status\" id=m6",
        );
        let subject = format!(
            "<message xmlns='jabber:client' type='groupchat' from='{ROOM}/alice'><subject>x</subject></message>"
        );
        check(&mut room, &subject, "Subject");
    }

    #[test]
    fn corrections_private_messages_and_history_are_never_commands() {
        let mut room = joined_room(true);
        // XEP-0308: alice turns harmless text into a command by correcting it.
        let replace = "<replace xmlns='urn:xmpp:message-correct:0' id='m1'/>";
        check(
            &mut room,
            &groupchat("alice", "m2", "!failover xmpp EdgePool2 now", replace),
            "Correction",
        );
        // A private message through the room.
        let private = format!(
            "<message xmlns='jabber:client' type='chat' id='p1' from='{ROOM}/alice' to='baton@contoso.test/x'>\
             <body>!approve 1</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>"
        );
        check(&mut room, &private, "Private { nick: \"alice\" }");
        let empty = format!(
            "<message xmlns='jabber:client' type='chat' from='{ROOM}/alice'>\
             <active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        );
        check(&mut room, &empty, "Dropped(\"private message without a body\")");
        // The bot's own line replayed from history confirms delivery; anyone else's is dropped.
        let delay = "<delay xmlns='urn:xmpp:delay' stamp='2024-01-01T00:00:01Z' from='incident@conference.contoso.test'/>\
                     <origin-id xmlns='urn:xmpp:sid:0' id='baton-4-0'/>";
        check(
            &mut room,
            &groupchat("baton", "baton-4-0", "#1 [3/8] route", delay),
            "OwnHistory { id: Some(\"baton-4-0\"), origin_id: Some(\"baton-4-0\"), body: Some(\"#1 [3/8] route\"), \
             stamp_ms: 1704067201000 }",
        );
        check(
            &mut room,
            &groupchat("alice", "h9", "!approve 1", delay),
            "Dropped(\"history (delay stamp)\")",
        );
        // A delay element that does not parse still marks history.
        let broken = "<delay xmlns='urn:xmpp:delay' stamp='yesterday'/>";
        check(
            &mut room,
            &groupchat("alice", "h10", "!approve 1", broken),
            "Dropped(\"history (delay stamp)\")",
        );
        // The subject ends the history sent at a join, from the room or from an occupant.
        let subject = format!("<message xmlns='jabber:client' type='groupchat' from='{ROOM}'><subject/></message>");
        check(&mut room, &subject, "Subject");
        let by_alice = format!(
            "<message xmlns='jabber:client' type='groupchat' from='{ROOM}/alice'><subject>DC1 down</subject></message>"
        );
        check(&mut room, &by_alice, "Subject");
    }

    #[test]
    fn the_private_notice_names_the_rooms() {
        assert_eq!(
            private_notice(&["incident@conference.contoso.test".into()]),
            "I take commands only in the incident room (incident@conference.contoso.test), where everyone can see \
             them; private messages to me are not read."
        );
        assert!(private_notice(&["a@c.t".into(), "b@c.t".into()]).contains("incident rooms (a@c.t, b@c.t)"));
    }

    #[test]
    fn semi_anonymous_rooms_give_unverified_senders() {
        let mut room = joined_room(false);
        assert!(!room.sees_real_jids());
        check(
            &mut room,
            &groupchat("alice", "m1", "!approve 7", ""),
            "unverified alice \"!approve 7\" why=this room hides members' real ",
        );
    }

    #[test]
    fn a_moderator_sees_real_jids_in_a_semi_anonymous_room() {
        let mut room = RoomState::new(BareJid::new(ROOM).expect("valid"), "baton".into(), false);
        room.on_presence(&presence(&occupant(
            "alice",
            Some("alice@contoso.test"),
            &[],
            "participant",
        )));
        let out = room.on_presence(&presence(&occupant(
            "baton",
            Some("baton@contoso.test"),
            &[110],
            "moderator",
        )));
        assert_eq!(out, PresenceOutcome::Joined { sees_real_jids: true });
        check(
            &mut room,
            &groupchat("alice", "m1", "!status", ""),
            "live xmpp:alice@contoso.test \"!status\" id=m1",
        );
    }

    #[test]
    fn messages_before_the_join_and_in_mirror_rooms_are_not_commands() {
        let mut room = RoomState::new(BareJid::new(ROOM).expect("valid"), "baton".into(), false);
        check(
            &mut room,
            &groupchat("alice", "m1", "!status", ""),
            "Dropped(\"received before the join completed\")",
        );
        let mut mirror = joined_room(true);
        mirror.mirror_only = true;
        check(
            &mut mirror,
            &groupchat("alice", "m1", "!status", ""),
            "Dropped(\"mirror room\")",
        );
    }

    #[test]
    fn leaving_and_nickname_changes_update_occupants() {
        let mut room = joined_room(true);
        let gone = format!(
            "<presence xmlns='jabber:client' type='unavailable' from='{ROOM}/alice'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none' jid='alice@contoso.test/r'/></x></presence>"
        );
        assert_eq!(room.on_presence(&presence(&gone)), PresenceOutcome::Occupant);
        check(
            &mut room,
            &groupchat("alice", "m9", "hi", ""),
            "unverified alice \"hi\" why=the sender is not among the ro",
        );
        let kicked = format!(
            "<presence xmlns='jabber:client' type='unavailable' from='{ROOM}/baton'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none'/><status code='110'/><status code='307'/></x></presence>"
        );
        assert_eq!(
            room.on_presence(&presence(&kicked)),
            PresenceOutcome::Left {
                reason: "kicked".into()
            }
        );
        assert!(!room.joined);
    }

    #[test]
    fn presence_lists_the_occupants_whose_real_jid_shows_by_nickname() {
        let names = |room: &RoomState| -> Vec<String> {
            room.present().iter().map(|(id, nick)| format!("{id}={nick}")).collect()
        };
        let mut room = joined_room(true);
        // The bot itself is not listed; "bob" is the nickname mallory uses.
        assert_eq!(
            names(&room),
            ["xmpp:alice@contoso.test=alice", "xmpp:mallory@contoso.test=bob"]
        );
        let gone = format!(
            "<presence xmlns='jabber:client' type='unavailable' from='{ROOM}/alice'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none'/></x></presence>"
        );
        room.on_presence(&presence(&gone));
        assert_eq!(names(&room), ["xmpp:mallory@contoso.test=bob"]);
        room.reset();
        assert!(names(&room).is_empty(), "out of the room, nobody is known present");
        // A room that hides real JIDs shows nobody.
        assert!(names(&joined_room(false)).is_empty());
    }

    #[test]
    fn join_errors_and_message_errors_are_reported() {
        let mut room = RoomState::new(BareJid::new(ROOM).expect("valid"), "baton".into(), false);
        let conflict = format!(
            "<presence xmlns='jabber:client' type='error' from='{ROOM}/baton'>\
             <error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>"
        );
        assert!(matches!(
            room.on_presence(&presence(&conflict)),
            PresenceOutcome::JoinRefused {
                nick_conflict: true,
                ..
            }
        ));
        let refused = format!(
            "<message xmlns='jabber:client' type='error' id='baton-3-0' from='{ROOM}'>\
             <error type='cancel'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
        );
        match room.on_message(&message(&refused)) {
            MessageOutcome::Error { id, permanent, .. } => {
                assert_eq!(id.as_deref(), Some("baton-3-0"));
                assert!(!permanent, "not-acceptable (not in the room) is fixed by rejoining");
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn bodies_are_read_whatever_their_language_tag() {
        let tagged = "<message xmlns='jabber:client' type='groupchat'><body xml:lang='en'>hello</body></message>";
        assert_eq!(best_body(&message(tagged)), Some("hello"));
        let french = "<message xmlns='jabber:client' type='groupchat'><body xml:lang='fr'>bonjour</body></message>";
        assert_eq!(best_body(&message(french)), Some("bonjour"));
    }

    #[test]
    fn recent_ids_forget_the_oldest() {
        let mut ids = RecentIds::default();
        assert!(ids.insert("a"));
        assert!(!ids.insert("a"));
        for i in 0..REMEMBERED_IDS {
            ids.insert(&i.to_string());
        }
        assert!(ids.insert("a"), "the oldest id was forgotten");
    }
}

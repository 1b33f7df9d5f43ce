//! Each chat platform's inbound backlog, bounded by bytes: messages an adapter received and the
//! daemon has not handled yet. When a platform's backlog is full, its chatter (messages that
//! are not commands) goes first, oldest first, so that a flood of chatter from a room can
//! neither grow Baton's memory nor push a command out; when only commands are left, the new
//! message is dropped. Platforms are served in turn, so one platform's flood does not delay
//! another's commands. Pure: the daemon classifies and feeds it.

use crate::chat::Inbound;
use baton_policies::Platform;
use std::collections::{BTreeMap, VecDeque};

/// Each platform's backlog bound by default: a mebibyte, thousands of commands.
pub const INBOUND_BACKLOG_BYTES: usize = 1 << 20;

/// What a message costs in the backlog: its texts and a fixed share for the rest.
pub fn size(m: &Inbound) -> usize {
    let sender = match &m.sender {
        baton_policies::Sender::Verified(id) => id.account().len(),
        baton_policies::Sender::Unverified { display, why } => display.len() + why.len(),
    };
    128 + m.text.len() + m.message_id.len() + m.room.id.len() + sender
}

/// What a push did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Chatter dropped to make room (older messages), with the new message when it was chatter
    /// and still did not fit.
    pub chatter_dropped: usize,
    /// The new message was a command and did not fit (the backlog is full of commands).
    pub command_dropped: bool,
}

struct Item {
    message: Inbound,
    bytes: usize,
    command: bool,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    bytes: usize,
}

/// Every platform's backlog.
pub struct Backlog {
    limit: usize,
    queues: BTreeMap<Platform, Queue>,
    /// The platform served last: the next pop starts after it.
    last: Option<Platform>,
}

impl Backlog {
    pub fn new(limit: usize) -> Backlog {
        Backlog {
            limit,
            queues: BTreeMap::new(),
            last: None,
        }
    }

    /// Queues a message (`command`: it is addressed to Baton), dropping chatter first when the
    /// platform's backlog is full. A dropped message's acknowledgement fires (whoever waits for
    /// it is not left waiting).
    pub fn push(&mut self, message: Inbound, command: bool) -> Pushed {
        let bytes = size(&message);
        let limit = self.limit;
        let q = self.queues.entry(message.room.platform).or_default();
        let mut pushed = Pushed::default();
        if q.bytes + bytes > limit {
            // Oldest chatter first, only as much as needed.
            let mut i = 0;
            while q.bytes + bytes > limit && i < q.items.len() {
                if q.items[i].command {
                    i += 1;
                    continue;
                }
                if let Some(old) = q.items.remove(i) {
                    q.bytes -= old.bytes;
                    pushed.chatter_dropped += 1;
                    drop_message(old.message);
                }
            }
        }
        if q.bytes + bytes > limit {
            if command {
                pushed.command_dropped = true;
            } else {
                pushed.chatter_dropped += 1;
            }
            drop_message(message);
            return pushed;
        }
        q.bytes += bytes;
        q.items.push_back(Item {
            message,
            bytes,
            command,
        });
        pushed
    }

    /// The next message, taking the platforms in turn.
    pub fn pop(&mut self) -> Option<Inbound> {
        let platforms: Vec<Platform> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.items.is_empty())
            .map(|(p, _)| *p)
            .collect();
        let next = match self.last {
            Some(last) => platforms.iter().find(|p| **p > last).or(platforms.first()).copied(),
            None => platforms.first().copied(),
        }?;
        self.last = Some(next);
        let q = self.queues.get_mut(&next)?;
        let item = q.items.pop_front()?;
        q.bytes -= item.bytes;
        Some(item.message)
    }

    /// Each platform's bound, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn is_empty(&self) -> bool {
        self.queues.values().all(|q| q.items.is_empty())
    }

    /// The bytes a platform's backlog holds now.
    pub fn bytes(&self, platform: Platform) -> usize {
        self.queues.get(&platform).map_or(0, |q| q.bytes)
    }
}

fn drop_message(m: Inbound) {
    if let Some(ack) = m.ack {
        ack.fire();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::RoomRef;
    use baton_policies::{Identity, Sender};

    fn msg(platform: Platform, text: &str) -> Inbound {
        let sender = Sender::Verified(Identity::new(Platform::Console, "alice").expect("valid"));
        Inbound::text(RoomRef::new(platform, "r"), sender, text, "")
    }

    fn texts(b: &mut Backlog) -> Vec<String> {
        std::iter::from_fn(|| b.pop()).map(|m| m.text).collect()
    }

    #[test]
    fn chatter_goes_first_then_new_messages_are_dropped() {
        let one = size(&msg(Platform::Xmpp, "chat 1"));
        let mut b = Backlog::new(one * 3);
        assert_eq!(b.push(msg(Platform::Xmpp, "chat 1"), false), Pushed::default());
        assert_eq!(b.push(msg(Platform::Xmpp, "!cmd 1"), true), Pushed::default());
        assert_eq!(b.push(msg(Platform::Xmpp, "chat 2"), false), Pushed::default());
        assert_eq!(b.bytes(Platform::Xmpp), one * 3);
        // Full: a command pushes out the oldest chatter, then the next.
        let p = b.push(msg(Platform::Xmpp, "!cmd 2"), true);
        assert_eq!(p.chatter_dropped, 1);
        let p = b.push(msg(Platform::Xmpp, "!cmd 3"), true);
        assert_eq!(p.chatter_dropped, 1);
        // Only commands left: new chatter and new commands are dropped, the backlog kept.
        assert_eq!(
            b.push(msg(Platform::Xmpp, "chat 3"), false),
            Pushed {
                chatter_dropped: 1,
                command_dropped: false
            }
        );
        assert_eq!(
            b.push(msg(Platform::Xmpp, "!cmd 4"), true),
            Pushed {
                chatter_dropped: 0,
                command_dropped: true
            }
        );
        assert!(b.bytes(Platform::Xmpp) <= one * 3);
        assert_eq!(texts(&mut b), ["!cmd 1", "!cmd 2", "!cmd 3"]);
        assert!(b.is_empty());
        assert_eq!(b.bytes(Platform::Xmpp), 0);
    }

    #[test]
    fn a_message_bigger_than_the_bound_is_dropped_and_its_ack_fires() {
        let mut b = Backlog::new(1024);
        let (ack, mut fired) = crate::chat::Ack::new();
        let mut big = msg(Platform::Console, &"x".repeat(4096));
        big.ack = Some(ack);
        assert_eq!(b.push(big, false).chatter_dropped, 1);
        assert!(fired.try_recv().is_ok(), "the waiting console goes on");
        assert!(b.is_empty());
    }

    #[test]
    fn platforms_are_served_in_turn() {
        let mut b = Backlog::new(INBOUND_BACKLOG_BYTES);
        for i in 0..3 {
            b.push(msg(Platform::Xmpp, &format!("x{i}")), false);
        }
        b.push(msg(Platform::Discord, "!d"), true);
        b.push(msg(Platform::Teams, "!t"), true);
        assert_eq!(texts(&mut b), ["x0", "!t", "!d", "x1", "x2"]);
    }
}

//! A room as one test user follows it through the whole bot: every groupchat message the user's
//! client receives is kept in arrival order (the transcript), waits scan forward from the last
//! thing waited for, and the bot counts as present once it answers `!help` in the room.

use crate::prosody::Prosody;
use crate::xmpp_client::{JoinHistory, RoomMessage, TestClient};
use anyhow::{Context, bail};
use std::time::Duration;
use tokio::time::Instant;

/// The bot's nickname in the stack's rooms.
pub const BOT_NICK: &str = "baton";

/// How long the bot may take to answer its first `!help` after it was started.
const BOT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A test user in one or more rooms, with everything they saw.
pub struct Follower {
    client: TestClient,
    user: String,
    log: Vec<RoomMessage>,
    /// Where the next [`Follower::wait_for`] starts scanning.
    cursor: usize,
}

impl Follower {
    /// Connects as `user` and joins `room` as `nick`.
    pub async fn join(
        server: &Prosody,
        user: &str,
        room: &str,
        nick: &str,
        history: JoinHistory,
    ) -> anyhow::Result<Follower> {
        let mut client = TestClient::connect(server, user).await?;
        client.join(room, nick, history).await?;
        Ok(Follower {
            client,
            user: user.to_string(),
            log: Vec::new(),
            cursor: 0,
        })
    }

    /// Joins a further room with the same connection.
    pub async fn also_join(&mut self, room: &str, nick: &str, history: JoinHistory) -> anyhow::Result<()> {
        self.client.join(room, nick, history).await
    }

    /// Leaves `room` (the transcript keeps what was seen there).
    pub async fn leave(&mut self, room: &str, nick: &str) -> anyhow::Result<()> {
        self.client.leave(room, nick).await
    }

    /// Says `text` in `room`; returns the stanza id.
    pub async fn say(&mut self, room: &str, text: &str) -> anyhow::Result<String> {
        self.client.send(room, text).await
    }

    /// The first message at or after the cursor that `matching` accepts, waiting at most
    /// `timeout`; the cursor moves past it.
    pub async fn wait_for(
        &mut self,
        matching: impl Fn(&RoomMessage) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<RoomMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = self.log[self.cursor..].iter().position(&matching) {
                self.cursor += pos + 1;
                return Ok(self.log[self.cursor - 1].clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "{}: no matching message within {timeout:?}; seen since the last match:\n{}",
                    self.user,
                    self.render(self.cursor)
                );
            }
            match self.client.expect_message(|_| true, left).await {
                Ok(m) => self.log.push(m),
                Err(e) => {
                    return Err(e.context(format!(
                        "{}: waiting; seen since the last match:\n{}",
                        self.user,
                        self.render(self.cursor)
                    )));
                }
            }
        }
    }

    /// The bot's next message in `room` that contains `needle`.
    pub async fn bot_says(&mut self, room: &str, needle: &str, timeout: Duration) -> anyhow::Result<RoomMessage> {
        self.wait_for(
            |m| m.room == room && m.nick == BOT_NICK && m.text.contains(needle),
            timeout,
        )
        .await
        .with_context(|| format!("waiting for the bot to say {needle:?} in {room}"))
    }

    /// Waits until `nick` is present in `room` (already there when this user joined, or
    /// arriving); returns when this user's client received that presence.
    pub async fn presence_of(
        &mut self,
        room: &str,
        nick: &str,
        timeout: Duration,
    ) -> anyhow::Result<std::time::Instant> {
        self.client.expect_presence(room, nick, timeout).await
    }

    /// Receives for `window` more (everything goes into the transcript).
    pub async fn settle(&mut self, window: Duration) {
        let more = self.client.collect_for(window).await;
        self.log.extend(more);
    }

    /// Everything seen so far, in arrival order.
    pub fn transcript(&self) -> &[RoomMessage] {
        &self.log
    }

    /// The bot's messages in `room`, in arrival order.
    pub fn bot_lines(&self, room: &str) -> Vec<String> {
        self.log
            .iter()
            .filter(|m| m.room == room && m.nick == BOT_NICK)
            .map(|m| m.text.clone())
            .collect()
    }

    /// Sends `!help` until the bot answers in `room` (it is connected and in the room). Messages
    /// sent before the bot joined never reach it (it asks for no history), so a probe is only
    /// answered once the bot is there; later answers to earlier probes are waited out.
    pub async fn wait_for_bot(&mut self, room: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + BOT_READY_TIMEOUT;
        loop {
            self.say(room, "!help").await?;
            let answer = self.bot_says(room, "Baton commands:", Duration::from_secs(2)).await;
            if answer.is_ok() {
                // An earlier probe may still be answered: take it into the transcript now.
                self.settle(Duration::from_millis(500)).await;
                self.cursor = self.log.len();
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{}: the bot did not answer !help in {room} within {BOT_READY_TIMEOUT:?}",
                    self.user
                );
            }
        }
    }

    /// Closes the connection (bounded).
    pub async fn close(self) {
        self.client.close().await;
    }

    fn render(&self, from: usize) -> String {
        self.log[from.min(self.log.len())..]
            .iter()
            .map(|m| {
                format!(
                    "  [{}] <{}>{} {}",
                    m.room,
                    m.nick,
                    if m.delayed { " (history)" } else { "" },
                    m.text.replace('\n', "\n      ")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The messages of `lines` that start with `prefix`, in order (e.g. every `#1 [` status line).
pub fn starting_with<'a>(lines: &'a [String], prefix: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|l| l.starts_with(prefix))
        .map(String::as_str)
        .collect()
}

/// The titles of the stack's plan steps, in order, as the room shows them.
pub const STEPS: [&str; 8] = [
    "precheck", "services", "route", "dns A", "dns SRV", "port", "services", "verify",
];

/// Checks that `lines` hold every step line of run #1 exactly once, in order, none failed.
pub fn every_step_once_in_order(lines: &[String]) -> Result<(), String> {
    let status = starting_with(lines, "#1 [");
    let shown: Vec<String> = status
        .iter()
        .map(|l| l.split(':').next().unwrap_or(l).to_string())
        .collect();
    let expected: Vec<String> = STEPS
        .iter()
        .enumerate()
        .map(|(i, t)| format!("#1 [{}/8] {t}", i + 1))
        .collect();
    if shown != expected {
        return Err(format!(
            "every step's status once, in order:\n{shown:#?}\nthe bot said:\n{}",
            lines.join("\n")
        ));
    }
    if let Some(failed) = status.iter().find(|l| l.contains("FAILED")) {
        return Err(format!("a step failed: {failed}"));
    }
    Ok(())
}

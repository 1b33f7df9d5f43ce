//! The console adapter: the chat room of `baton demo`. Lines on standard input written as
//! `alice> !failover xmpp EdgePool2 DC1 lost power` are messages from `console:alice`; Baton's
//! messages are printed as `baton> …` on standard output.
//!
//! With piped input the adapter takes one line at a time and waits until Baton has answered it
//! before reading the next, so a piped session reads like a conversation. A line `:sleep 2`
//! pauses the script (to look at a run mid-way).

use crate::adapters::PlatformConfig;
use crate::chat::{Ack, ChatAdapter, Delivered, DeliveryError, Inbound, Outbound, RoomRef};
use crate::config::secret::SecretEnv;
use crate::config::walk::{Errors, Table};
use async_trait::async_trait;
use baton_policies::{Identity, Platform, Sender};
use std::any::Any;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

/// How long piped input waits for Baton's answer to a line before reading the next one.
const TURN: Duration = Duration::from_secs(5);

/// `[chat.console]`: the console as a chat room (lines on stdin, replies on stdout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleSettings {
    pub room: String,
}

impl PlatformConfig for ConsoleSettings {
    fn platform(&self) -> Platform {
        Platform::Console
    }

    fn mirror_rooms(&self) -> Vec<RoomRef> {
        Vec::new()
    }

    fn build(&self) -> anyhow::Result<Arc<dyn ChatAdapter>> {
        Ok(Arc::new(ConsoleAdapter::new(
            &self.room,
            Box::new(tokio::io::BufReader::new(tokio::io::stdin())),
            Box::new(std::io::stdout()),
            false,
        )))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Reads `[chat.console]`.
pub fn read(e: &mut Errors<'_>, t: Option<Table<'_, '_>>, _env: &SecretEnv<'_>) -> Option<Arc<dyn PlatformConfig>> {
    let c = t?;
    let enabled: bool = c.opt(e, "enabled").unwrap_or(true);
    let room: String = c.opt(e, "room").unwrap_or_else(|| "incident".into());
    if room.is_empty() || room.len() > 64 || room.chars().any(char::is_control) {
        e.at(&c.key_path("room"), c.span_of("room"), "must be a short room name");
    }
    c.finish(e);
    enabled.then(|| Arc::new(ConsoleSettings { room }) as Arc<dyn PlatformConfig>)
}

/// The console room.
pub struct ConsoleAdapter {
    room: RoomRef,
    input: Mutex<Option<Box<dyn AsyncBufRead + Send + Unpin>>>,
    output: std::sync::Mutex<Box<dyn Write + Send>>,
    /// Echo input lines (when stdin is not a terminal, so the transcript shows both sides).
    echo: bool,
    /// Distinguishes this session's message ids from earlier sessions on the same store.
    session: String,
}

impl ConsoleAdapter {
    pub fn new(
        room: &str,
        input: Box<dyn AsyncBufRead + Send + Unpin>,
        output: Box<dyn Write + Send>,
        echo: bool,
    ) -> ConsoleAdapter {
        let session = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_string();
        ConsoleAdapter {
            room: RoomRef::new(Platform::Console, room),
            input: Mutex::new(Some(input)),
            output: std::sync::Mutex::new(output),
            echo,
            session,
        }
    }

    fn print(&self, text: &str) {
        let mut out = self.output.lock().unwrap_or_else(|p| p.into_inner());
        // A closed stdout (the reader went away) is not worth crashing the bot for.
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

/// `alice> text` -> (`alice`, `text`).
fn split_line(line: &str) -> Option<(&str, &str)> {
    let (who, text) = line.split_once('>')?;
    let who = who.trim();
    (!who.is_empty() && !who.contains(char::is_whitespace)).then_some((who, text.trim()))
}

fn sender(who: &str) -> Sender {
    match Identity::new(Platform::Console, who) {
        Ok(id) => Sender::Verified(id),
        Err(e) => Sender::Unverified {
            display: who.chars().take(32).collect(),
            why: format!("'{who}' is not a console name: {e}"),
        },
    }
}

/// Formats a message: `baton> ` then continuation lines indented under it.
pub fn format_message(text: &str) -> String {
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        if i == 0 {
            out.push_str("baton> ");
        } else {
            out.push_str("\n       ");
        }
        out.push_str(line);
    }
    out
}

#[async_trait]
impl ChatAdapter for ConsoleAdapter {
    fn platform(&self) -> Platform {
        Platform::Console
    }

    async fn run(&self, inbound: mpsc::Sender<Inbound>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Some(input) = self.input.lock().await.take() else {
            anyhow::bail!("the console adapter runs once");
        };
        let mut lines = input.lines();
        let mut number = 0u64;
        loop {
            let line = tokio::select! {
                line = lines.next_line() => line,
                _ = shutdown.cancelled() => return Ok(()),
            };
            let line = match line {
                Ok(Some(line)) => line,
                Ok(None) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "console input unreadable; treating it as ended");
                    return Ok(());
                }
            };
            number += 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if let Some(secs) = trimmed.strip_prefix(":sleep") {
                let secs: f64 = secs.trim().parse().unwrap_or(1.0);
                tokio::time::sleep(Duration::from_secs_f64(secs.clamp(0.0, 600.0))).await;
                continue;
            }
            if self.echo {
                self.print(trimmed);
            }
            let Some((who, text)) = split_line(trimmed) else {
                self.print("baton> Console lines look like: alice> !failover xmpp EdgePool2 <reason>");
                continue;
            };
            let (ack, answered) = Ack::new();
            let mut message = Inbound::text(
                self.room.clone(),
                sender(who),
                text,
                format!("{}-{number}", self.session),
            );
            message.ack = Some(ack);
            if inbound.send(message).await.is_err() {
                return Ok(());
            }
            // Wait (bounded) until the daemon has handled this line and printed its answer.
            let _ = tokio::time::timeout(TURN, answered).await;
        }
    }

    async fn deliver(&self, message: &Outbound) -> Result<Delivered, DeliveryError> {
        self.print(&format_message(&message.text()));
        Ok(Delivered::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_senders() {
        assert_eq!(split_line("alice> !status 1"), Some(("alice", "!status 1")));
        assert_eq!(split_line("  bob >!approve 1 "), Some(("bob", "!approve 1")));
        assert_eq!(split_line("no marker"), None);
        assert_eq!(split_line("two words> x"), None);
        assert_eq!(
            sender("Alice"),
            Sender::Verified(Identity::new(Platform::Console, "alice").expect("valid"))
        );
        assert!(matches!(sender("al$ce"), Sender::Unverified { .. }));
        assert_eq!(format_message("a\nb"), "baton> a\n       b");
    }
}

//! The console adapter: the chat room of `baton demo`. Lines on standard input written as
//! `alice> !failover xmpp EdgePool2 DC1 lost power` are messages from `console:alice`; Baton's
//! messages are printed as `baton> …` on standard output.
//!
//! With piped input the adapter takes one line at a time and waits until Baton has answered it
//! before reading the next, so a piped session reads like a conversation. A line `:sleep 2`
//! pauses the script (to look at a run mid-way).

use crate::chat::{ChatAdapter, DeliveryError, Inbound, Outbound, RoomRef};
use async_trait::async_trait;
use baton_policies::{Identity, Platform, Sender};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

/// Progress shared with the daemon, so piped input can wait for each answer.
#[derive(Default)]
pub struct Turns {
    /// Console lines the daemon has finished handling.
    pub handled: AtomicU64,
}

/// The console room.
pub struct ConsoleAdapter {
    room: RoomRef,
    input: Mutex<Option<Box<dyn AsyncBufRead + Send + Unpin>>>,
    output: std::sync::Mutex<Box<dyn Write + Send>>,
    /// Echo input lines (when stdin is not a terminal, so the transcript shows both sides).
    echo: bool,
    turns: Arc<Turns>,
    /// Distinguishes this session's message ids from earlier sessions on the same store.
    session: String,
}

impl ConsoleAdapter {
    pub fn new(
        room: &str,
        input: Box<dyn AsyncBufRead + Send + Unpin>,
        output: Box<dyn Write + Send>,
        echo: bool,
        turns: Arc<Turns>,
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
            turns,
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
        let mut sent = 0u64;
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
            let message = Inbound {
                room: self.room.clone(),
                sender: sender(who),
                text: text.to_string(),
                message_id: format!("{}-{number}", self.session),
                button: None,
            };
            if inbound.send(message).await.is_err() {
                return Ok(());
            }
            sent += 1;
            // Wait (bounded) until the daemon has handled this line and printed its answer.
            for _ in 0..500 {
                if self.turns.handled.load(Ordering::Acquire) >= sent {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    async fn deliver(&self, message: &Outbound) -> Result<(), DeliveryError> {
        self.print(&format_message(&message.text));
        Ok(())
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

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

/// `[chat.console]`: the console as a chat room (lines on stdin, replies on stdout). Anyone
/// at the terminal can type as any person with a `console:<name>` identity, so `baton run`
/// reads it only when `trusted = true` says it is a local operator's console; the demo always
/// uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleSettings {
    pub room: String,
    pub trusted: bool,
}

/// What an untrusted console means, for check-config and the log.
pub const UNTRUSTED: &str = "chat.console: not trusted, so `baton run` does not read commands from its terminal \
     (the demo still uses this room). Set trusted = true only for a local operator's console: anyone at that \
     terminal can act as every person with a console:<name> identity";

impl PlatformConfig for ConsoleSettings {
    fn platform(&self) -> Platform {
        Platform::Console
    }

    fn mirror_rooms(&self) -> Vec<RoomRef> {
        Vec::new()
    }

    fn build(&self) -> anyhow::Result<Option<Arc<dyn ChatAdapter>>> {
        if !self.trusted {
            tracing::warn!("{UNTRUSTED}");
            return Ok(None);
        }
        Ok(Some(Arc::new(ConsoleAdapter::new(
            &self.room,
            Box::new(tokio::io::BufReader::new(tokio::io::stdin())),
            Box::new(std::io::stdout()),
            false,
        ))))
    }

    fn note(&self) -> Option<String> {
        (!self.trusted).then(|| UNTRUSTED.to_string())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Reads `[chat.console]`.
pub fn read(e: &mut Errors<'_>, t: Option<Table<'_, '_>>, _env: &SecretEnv<'_>) -> Option<Arc<dyn PlatformConfig>> {
    let c = t?;
    let enabled: bool = c.opt(e, "enabled").unwrap_or(true);
    let trusted: bool = c.opt(e, "trusted").unwrap_or(false);
    let room: String = c.opt(e, "room").unwrap_or_else(|| "incident".into());
    if room.is_empty() || room.len() > 64 || room.chars().any(char::is_control) {
        e.at(&c.key_path("room"), c.span_of("room"), "must be a short room name");
    }
    c.finish(e);
    enabled.then(|| Arc::new(ConsoleSettings { room, trusted }) as Arc<dyn PlatformConfig>)
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
        Err(e) => {
            // Echoed with control and bidi characters escaped, cut short.
            let shown: String = who.chars().take(32).flat_map(char::escape_debug).collect();
            Sender::Unverified {
                why: format!("'{shown}' is not a console name: {e}"),
                display: shown,
            }
        }
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
        let Some(mut input) = self.input.lock().await.take() else {
            anyhow::bail!("the console adapter runs once");
        };
        let mut number = 0u64;
        let mut raw = Vec::new();
        loop {
            raw.clear();
            let read = tokio::select! {
                read = input.read_until(b'\n', &mut raw) => read,
                _ = shutdown.cancelled() => return Ok(()),
            };
            match read {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "console input unreadable; treating it as ended");
                    return Ok(());
                }
            }
            // One bad line (bytes that are not UTF-8) is skipped; the session goes on.
            let Ok(line) = std::str::from_utf8(&raw) else {
                number += 1;
                self.print("baton> That line is not valid UTF-8; it was skipped.");
                continue;
            };
            let line = line.to_string();
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
        let Sender::Unverified { display, why } = sender("bob\u{202e}\u{7}ecilA") else {
            panic!("not a console name")
        };
        assert_eq!(
            display, "bob\\u{202e}\\u{7}ecilA",
            "bidi and control characters are escaped"
        );
        assert!(
            why.starts_with("'bob\\u{202e}\\u{7}ecilA' is not a console name"),
            "{why}"
        );
        assert_eq!(format_message("a\nb"), "baton> a\n       b");
    }

    /// Output shared with the test.
    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_line_that_is_not_utf8_is_skipped_and_the_session_goes_on() {
        let input: &[u8] = b"alice> !status\nbob> \xff\xfe !approve 1\ncarol> !runs\n";
        let out = Shared::default();
        let console = ConsoleAdapter::new(
            "incident",
            Box::new(tokio::io::BufReader::new(input)),
            Box::new(out.clone()),
            false,
        );
        let (tx, mut rx) = mpsc::channel::<Inbound>(8);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(m) = rx.recv().await {
                if let Some(ack) = &m.ack {
                    ack.fire();
                }
                got.push(m.text);
            }
            got
        });
        console
            .run(tx, CancellationToken::new())
            .await
            .expect("runs to the end of input");
        drop(console);
        assert_eq!(reader.await.expect("joins"), ["!status", "!runs"]);
        let printed = String::from_utf8(out.0.lock().expect("not poisoned").clone()).expect("utf-8");
        assert!(printed.contains("not valid UTF-8; it was skipped"), "{printed}");
    }
}

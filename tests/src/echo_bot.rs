//! The bare XMPP echo bots as processes, the baselines of the latency benchmarks: the example on
//! Baton's connector (`bot/examples/xmpp_echo`, found among the built examples), or the one on
//! stock tokio-xmpp ([`crate::stock_echo`]); each started in one room with an account of its
//! own, ready once it reports its join, stopped so that it leaves the room at once.

use crate::prosody::Prosody;
use anyhow::{Context, bail};
use secrecy::ExposeSecret;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// How long the echo bot may take to join, and to stop.
const WAIT: Duration = Duration::from_secs(10);

/// A running echo bot.
pub struct EchoBot {
    child: tokio::process::Child,
    /// The stock echo bot's input: closing it stops that bot.
    stdin: Option<tokio::process::ChildStdin>,
}

/// `target/<profile>/examples/xmpp_echo`, seen from a benchmark (`target/<profile>/deps/..`) or
/// an example (`target/<profile>/examples/..`).
fn binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running benchmark")?;
    let dir = exe.parent().context("the benchmark has a folder")?;
    let profile = dir
        .parent()
        .context("the benchmark runs from target/<profile>/<folder>")?;
    let bin = profile
        .join("examples")
        .join(format!("xmpp_echo{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        bail!(
            "{} is missing: build it with cargo build [--release] -p baton --example xmpp_echo",
            bin.display()
        );
    }
    Ok(bin)
}

impl EchoBot {
    /// Starts the echo bot as `user` (registered on `server`) in `room` under `nick`, answering
    /// messages that start with `prefix`, and waits until it has joined.
    pub async fn start(server: &Prosody, user: &str, room: &str, nick: &str, prefix: &str) -> anyhow::Result<EchoBot> {
        let bin = binary()?;
        let mut command = tokio::process::Command::new(&bin);
        command
            .args([
                "--jid",
                &server.jid(user),
                "--server",
                &server.c2s_addr().to_string(),
                "--plain",
            ])
            .args(["--room", room, "--nick", nick, "--prefix", prefix])
            .env("XMPP_PASSWORD", server.password(user)?.expose_secret());
        EchoBot::spawn(command, &bin).await
    }

    /// Starts the floor of the latency benchmarks, the echo bot on stock tokio-xmpp
    /// ([`crate::stock_echo`]): the running benchmark's own executable, started again with
    /// [`crate::stock_echo::ARG`] (its `main` must call [`crate::stock_echo::serve_if_asked`]).
    pub async fn start_stock(
        server: &Prosody,
        user: &str,
        room: &str,
        nick: &str,
        prefix: &str,
    ) -> anyhow::Result<EchoBot> {
        let bin = std::env::current_exe().context("locating the running benchmark")?;
        let mut command = tokio::process::Command::new(&bin);
        command
            .arg(crate::stock_echo::ARG)
            .args([&server.jid(user), &server.c2s_addr().to_string(), room, nick, prefix])
            .env("XMPP_PASSWORD", server.password(user)?.expose_secret())
            .stdin(std::process::Stdio::piped());
        EchoBot::spawn(command, &bin).await
    }

    async fn spawn(mut command: tokio::process::Command, bin: &std::path::Path) -> anyhow::Result<EchoBot> {
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("echo bot stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await? {
                if line.starts_with("joined ") {
                    return Ok(());
                }
            }
            bail!("the echo bot exited before joining")
        })
        .await
        .context("waiting for the echo bot to join")??;
        Ok(EchoBot { child, stdin })
    }

    /// The process id (for /proc readings), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops it by closing its input (the stock bot) or with SIGINT (the example bot); either
    /// closes its stream and leaves the room. SIGKILL if it does not stop in time (then the room
    /// keeps a ghost of it for Prosody's hibernation time, waited out).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(pid) = self.child.id() else { return Ok(()) };
        if self.stdin.take().is_none() {
            let pid = libc::pid_t::try_from(pid)?;
            // SAFETY: kill(2) on a child we started and have not reaped; no memory effects.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
        if tokio::time::timeout(WAIT, self.child.wait()).await.is_err() {
            self.child.kill().await.context("killing the echo bot")?;
            tokio::time::sleep(Duration::from_secs(4)).await;
        }
        Ok(())
    }
}

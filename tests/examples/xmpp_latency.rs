//! Command->first-reply latency through a real Prosody (a benchmark, not a test): a test user
//! sends `!ping N` and waits for the answer, first to the bare echo bot (`bot/examples/xmpp_echo`,
//! a separate process), then to Baton's XMPP adapter with a trivial echo loop behind it (in
//! process), and prints p50/p99 of each next to each other. The whole bot (`baton run` on the
//! full stack) is measured by `tests/benches/xmpp_bot_latency.rs`.
//!
//! ```text
//! cargo build --release -p baton --example xmpp_echo
//! cargo run --release -p baton-e2e --example xmpp_latency -- 300
//! ```

use anyhow::{Context, bail};
use baton::adapters::xmpp::{TlsMode, XmppAdapter, XmppConfig};
use baton::chat::{ChatAdapter, Outbound};
use baton_e2e::echo_bot::EchoBot;
use baton_e2e::prosody::{INCIDENT_ROOM, Prosody};
use baton_e2e::xmpp_client::{JoinHistory, TestClient};
use secrecy::SecretString;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);
const WARM_UP: usize = 20;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()
        .context("rounds must be a number")?
        .unwrap_or(300);
    if rounds < 10 {
        bail!("use at least 10 rounds");
    }
    let mut server = Prosody::start()?;
    server.register("echo", SecretString::from(format!("echo-{}", std::process::id())))?;
    let mut alice = TestClient::connect(&server, "alice").await?;
    alice.join(INCIDENT_ROOM, "alice", JoinHistory::None).await?;

    // The bare echo bot, a sibling binary of this example.
    let mut echo = EchoBot::start(&server, "echo", INCIDENT_ROOM, "echo", "!").await?;
    let bare = measure(&mut alice, "echo", rounds, |n| format!("echo: !ping {n}")).await?;
    let echo_rss = echo.pid().and_then(rss_kib);
    echo.stop().await.context("stopping the echo bot")?;

    // The adapter with an echo loop behind it.
    let mut config = XmppConfig::new(
        server.jid("baton"),
        server.password("baton")?,
        server.c2s_addr().to_string(),
        TlsMode::Plain,
    )
    .with_room(INCIDENT_ROOM, "baton");
    config.reconnect_initial = Duration::from_millis(100);
    let adapter = Arc::new(XmppAdapter::new(config)?);
    let (tx, mut rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn({
        let (adapter, shutdown) = (adapter.clone(), shutdown.clone());
        async move { adapter.run(tx, shutdown).await }
    });
    adapter.wait_until_joined(WAIT).await?;
    let echoer = tokio::spawn({
        let adapter = adapter.clone();
        async move {
            let mut id = 0;
            while let Some(inbound) = rx.recv().await {
                id += 1;
                let reply = Outbound {
                    id,
                    room: inbound.room,
                    run: None,
                    body: format!("echo: {}", inbound.text).into(),
                    card: None,
                    edit: None,
                };
                if let Err(e) = adapter.deliver(&reply).await {
                    eprintln!("delivery failed: {e}");
                }
            }
        }
    });
    let through_adapter = measure(&mut alice, "baton", rounds, |n| format!("echo: !ping {n}")).await?;
    let own_rss = rss_kib(std::process::id());
    shutdown.cancel();
    let _ = tokio::time::timeout(WAIT, runner).await;
    echoer.abort();
    server.stop()?;

    println!("command->first reply through Prosody, {rounds} commands each");
    println!("{:<28} {:>10} {:>10} {:>12}", "", "p50", "p99", "rss");
    // The second row's memory is this whole benchmark process (adapter, test user, harness).
    print_row("bare echo bot (process)", &bare, echo_rss);
    print_row("adapter + echo (in process)", &through_adapter, own_rss);
    let ratio = percentile(&through_adapter, 50).as_secs_f64() / percentile(&bare, 50).as_secs_f64();
    println!("p50 ratio adapter/bare: {ratio:.2}");
    Ok(())
}

/// Sends `!ping N` for N in 0..rounds (after a warm-up) and times each first reply from `nick`.
async fn measure(
    alice: &mut TestClient,
    nick: &str,
    rounds: usize,
    reply: impl Fn(usize) -> String,
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(rounds);
    for n in 0..rounds + WARM_UP {
        let started = Instant::now();
        alice.send(INCIDENT_ROOM, &format!("!ping {n}")).await?;
        let want = reply(n);
        alice.expect_message(|m| m.nick == nick && m.text == want, WAIT).await?;
        if n >= WARM_UP {
            times.push(started.elapsed());
        }
    }
    times.sort();
    Ok(times)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let index = (sorted.len() * p).div_ceil(100).saturating_sub(1).min(sorted.len() - 1);
    sorted[index]
}

fn print_row(name: &str, sorted: &[Duration], rss: Option<u64>) {
    let rss = rss
        .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "?".into());
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    println!(
        "{name:<28} {:>10} {:>10} {rss:>12}",
        ms(percentile(sorted, 50)),
        ms(percentile(sorted, 99))
    );
}

/// Resident memory of a process in KiB, from /proc.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

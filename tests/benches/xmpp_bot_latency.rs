//! Command->first-reply latency through a real Prosody for the whole of Baton (`baton run` on
//! the full stack: XMPP adapter, command parser, engine, journal commit, outbox, delivery) next
//! to the bare echo bot (`bot/examples/xmpp_echo`) in the same room in the same run, and Baton's
//! resident memory idle, after the commands and during a failover. Prints figures; asserts
//! nothing.
//!
//! Each bot answers only its own commands (Baton `!status`, the echo bot `?status`), each answer
//! timed from the moment alice sends the command to the moment her client reads the answer.
//! Phases: (1) the echo bot alone in the incident room; (2) Baton joins, and commands for the one
//! and the other alternate; (3) the echo bot leaves and Baton is alone; (4) a failover runs (each
//! simulated Lync action takes 300 ms) while alice keeps asking Baton, and its memory is sampled.
//!
//! ```text
//! cargo build --release -p baton -p baton-agent -p baton-lync-sim --bins --example xmpp_echo
//! cargo bench -p baton-e2e --bench xmpp_bot_latency [-- ROUNDS]
//! ```
//!
//! To see where Baton's time goes, `BATON_TEST_LOG=info,baton=debug` makes it log and
//! `BATON_BENCH_STDERR=FILE` keeps that log.

use anyhow::{Context, bail};
use baton_e2e::echo_bot::EchoBot;
use baton_e2e::prosody::INCIDENT_ROOM;
use baton_e2e::stack::{Stack, StackOptions};
use baton_e2e::xmpp_client::{JoinHistory, RoomMessage, TestClient};
use secrecy::SecretString;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);
const WARM_UP: usize = 20;
/// Baton's command, and how its answer begins.
const BATON_COMMAND: &str = "!status";
const BATON_ANSWER: &str = "XMPP federation route:";
/// The echo bot's prefix differs from Baton's, so each bot answers only its own commands.
const ECHO_PREFIX: &str = "?";
const ECHO_COMMAND: &str = "?status";

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; the one other argument is the number of rounds.
    let rounds = match std::env::args().skip(1).find(|a| !a.starts_with("--")) {
        Some(a) => a
            .parse::<usize>()
            .with_context(|| format!("rounds must be a number, got {a:?}"))?,
        None => 300,
    };
    if rounds < 200 {
        bail!("use at least 200 rounds (p99 needs them)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench(rounds))
}

/// Which bot a command is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bot {
    Echo,
    Baton,
}

/// Reply times per bot.
#[derive(Default)]
struct Samples {
    echo: Vec<Duration>,
    baton: Vec<Duration>,
}

impl Samples {
    fn push(&mut self, bot: Bot, took: Duration) {
        match bot {
            Bot::Echo => self.echo.push(took),
            Bot::Baton => self.baton.push(took),
        }
    }
}

async fn bench(rounds: usize) -> anyhow::Result<()> {
    let mut stack = tokio::task::block_in_place(|| {
        Stack::start(StackOptions {
            xmpp_chat: true,
            sim_args: vec!["--delay-ms".into(), "300".into()],
            ..StackOptions::default()
        })
    })?;
    stack
        .prosody
        .register("echo", SecretString::from(format!("echo-{}", std::process::id())))?;
    let mut alice = TestClient::connect(&stack.prosody, "alice").await?;
    alice.join(INCIDENT_ROOM, "alice", JoinHistory::None).await?;

    // (1) The bare echo bot alone in the room.
    let mut echo = EchoBot::start(&stack.prosody, "echo", INCIDENT_ROOM, "echo", ECHO_PREFIX).await?;
    let echo_alone = measure(&mut alice, rounds, &[Bot::Echo]).await?;

    // (2) Baton joins; commands for the one and the other alternate.
    let mut bot = tokio::task::block_in_place(|| stack.start_bot())?;
    wait_for_baton(&mut alice).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = memory(bot.pid());
    let both = measure(&mut alice, rounds, &[Bot::Echo, Bot::Baton]).await?;
    let echo_memory = echo.pid().map(memory);

    // (3) The echo bot leaves (SIGINT: it closes its stream, so the room drops it at once).
    echo.stop().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baton_alone = measure(&mut alice, rounds, &[Bot::Baton]).await?;
    let after_commands = memory(bot.pid());

    // (4) A failover runs while alice keeps asking.
    let mut bob = TestClient::connect(&stack.prosody, "bob").await?;
    bob.join(INCIDENT_ROOM, "bob", JoinHistory::None).await?;
    alice.send(INCIDENT_ROOM, "!failover xmpp EdgePool2 benchmark").await?;
    alice
        .expect_message(
            |m| m.nick == "baton" && m.text.starts_with("Run #1 requested by alice"),
            WAIT,
        )
        .await?;
    bob.send(INCIDENT_ROOM, "!approve 1").await?;
    alice
        .expect_message(|m| m.nick == "baton" && m.text.ends_with("Running."), WAIT)
        .await?;
    let mut during = Samples::default();
    let mut peak_during = 0u64;
    let run_started = Instant::now();
    let mut finished = false;
    while !finished && run_started.elapsed() < Duration::from_secs(60) {
        let (took, done) = one_round(&mut alice, Bot::Baton).await?;
        during.push(Bot::Baton, took);
        finished = done;
        peak_during = peak_during.max(memory(bot.pid()).rss_kib);
    }
    let after_run = memory(bot.pid());
    bot.kill9();
    if let Ok(path) = std::env::var("BATON_BENCH_STDERR") {
        std::fs::write(path, bot.stderr())?;
    }

    println!("command -> first reply through Prosody, timed by alice's client from sending to reading the answer");
    println!("({BATON_COMMAND} for Baton, {ECHO_COMMAND} for the echo bot; {rounds} per row after {WARM_UP} warm-up)");
    println!("{:<44} {:>9} {:>9} {:>9} {:>6}", "", "p50", "p90", "p99", "n");
    row("bare echo bot, alone in the room", &echo_alone.echo);
    row("baton run, alone in the room", &baton_alone.baton);
    row("bare echo bot, both in the room (alternating)", &both.echo);
    row("baton run, both in the room (alternating)", &both.baton);
    row("baton run, during a failover", &during.baton);
    let ratio = |a: &[Duration], b: &[Duration], p| ms(percentile(a, p)) / ms(percentile(b, p));
    println!("baton run / bare echo (goal: within 1.3x):");
    println!(
        "  each alone in the room:        p50 {:.2}x, p99 {:.2}x",
        ratio(&baton_alone.baton, &echo_alone.echo, 50),
        ratio(&baton_alone.baton, &echo_alone.echo, 99)
    );
    println!(
        "  both in the room, alternating: p50 {:.2}x, p99 {:.2}x",
        ratio(&both.baton, &both.echo, 50),
        ratio(&both.baton, &both.echo, 99)
    );
    println!("resident memory (VmRSS) of baton run:");
    println!("  idle, joined, before any command    {}", mib(idle.rss_kib));
    println!(
        "  after {:>4} commands for it          {}",
        2 * (rounds + WARM_UP),
        mib(after_commands.rss_kib)
    );
    println!("  during a failover (peak of samples) {}", mib(peak_during));
    println!(
        "  after the run                       {} (VmHWM, the process's peak: {})",
        mib(after_run.rss_kib),
        mib(after_run.hwm_kib)
    );
    if let Some(m) = echo_memory {
        println!("  (the bare echo bot: {}, peak {})", mib(m.rss_kib), mib(m.hwm_kib));
    }
    Ok(())
}

/// Warm-up plus `rounds` commands for each of `bots`, taking turns.
async fn measure(alice: &mut TestClient, rounds: usize, bots: &[Bot]) -> anyhow::Result<Samples> {
    let mut all = Samples::default();
    for n in 0..rounds + WARM_UP {
        for &who in bots {
            let (took, _) = one_round(alice, who).await?;
            if n >= WARM_UP {
                all.push(who, took);
            }
        }
    }
    Ok(all)
}

/// Sends one command to `who` and times its answer. Also reports whether Baton announced the
/// end of run #1 meanwhile. An answer from the other bot is an error: the prefixes keep them
/// apart, so it would mean the figures mix the two.
async fn one_round(alice: &mut TestClient, who: Bot) -> anyhow::Result<(Duration, bool)> {
    let mut run_done = false;
    let started = Instant::now();
    let command = match who {
        Bot::Echo => ECHO_COMMAND,
        Bot::Baton => BATON_COMMAND,
    };
    alice.send(INCIDENT_ROOM, command).await?;
    loop {
        let left = WAIT.saturating_sub(started.elapsed());
        let m: RoomMessage = alice
            .expect_message(|_| true, left)
            .await
            .context("waiting for the answer")?;
        let took = started.elapsed();
        let echo_answer = m.nick == "echo" && m.text.starts_with("echo: ");
        let baton_answer = m.nick == "baton" && m.text.starts_with(BATON_ANSWER);
        if m.nick == "baton" && m.text.starts_with("#1 succeeded in") {
            run_done = true;
        }
        match who {
            Bot::Echo if echo_answer => return Ok((took, run_done)),
            Bot::Baton if baton_answer => return Ok((took, run_done)),
            _ if echo_answer || baton_answer => {
                bail!("<{}> answered a command that was not for it: {}", m.nick, m.text)
            }
            _ => {}
        }
    }
}

/// Waits until Baton answers (it asks for no history, so only a command sent after it joined is
/// answered), then lets late answers to earlier probes arrive and drops them.
async fn wait_for_baton(alice: &mut TestClient) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        alice.send(INCIDENT_ROOM, BATON_COMMAND).await?;
        let answered = alice
            .expect_message(
                |m| m.nick == "baton" && m.text.starts_with(BATON_ANSWER),
                Duration::from_secs(2),
            )
            .await;
        if answered.is_ok() {
            alice.collect_for(Duration::from_millis(500)).await;
            return Ok(());
        }
    }
    bail!("baton did not answer within 30 s")
}

#[derive(Clone, Copy, Default)]
struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
}

/// VmRSS and VmHWM of a process, from /proc (zero if unreadable).
fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

fn percentile(samples: &[Duration], p: usize) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = (sorted.len() * p).div_ceil(100).saturating_sub(1).min(sorted.len() - 1);
    sorted[index]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn row(name: &str, samples: &[Duration]) {
    let cell = |p| format!("{:.2} ms", ms(percentile(samples, p)));
    println!(
        "{name:<44} {:>9} {:>9} {:>9} {:>6}",
        cell(50),
        cell(90),
        cell(99),
        samples.len()
    );
}

//! Command->first-reply latency through a real Prosody for the whole of Baton (`baton run` on
//! the full stack: XMPP adapter, command parser, engine, outbox, delivery) against the floor, a
//! minimal echo bot on stock tokio-xmpp with TCP_NODELAY ([`baton_e2e::stock_echo`], not Baton's
//! connector), both in the same room of the same Prosody in the same run. The floor answers
//! `?status` and `?help` with texts as long as Baton's, so the ratios measure Baton's work and
//! not the size of its answers. Prints figures; asserts nothing.
//!
//! Each bot answers only its own commands (Baton `!status` and `!help`, the echo bot `?status`
//! and `?help`), each answer timed from the moment alice sends the command to the moment her
//! client reads the answer. Phases, all with both bots in the room:
//! (1) interleaved round by round: each round asks the echo bot and Baton `status`, then both
//!     `help`, the bot asked first alternating from round to round;
//! (2) bursts: alice sends 50 commands back to back to one bot and waits for all 50 answers,
//!     the bots taking turns (again alternating which goes first);
//! (3) a failover runs (each simulated Lync action takes 300 ms) while alice keeps asking Baton,
//!     and its memory is sampled.
//!
//! ```text
//! cargo build --release -p baton -p baton-agent -p baton-lync-sim --bins
//! cargo bench -p baton-e2e --bench xmpp_bot_latency [-- ROUNDS]
//! ```
//!
//! To see where Baton's time goes, `BATON_TEST_LOG=info,baton=debug` makes it log and
//! `BATON_BENCH_STDERR=FILE` keeps that log.

use anyhow::{Context, bail};
use baton_e2e::echo_bot::EchoBot;
use baton_e2e::measure::{memory, mib, ms, percentile};
use baton_e2e::prosody::INCIDENT_ROOM;
use baton_e2e::stack::{Stack, StackOptions};
use baton_e2e::xmpp_client::{JoinHistory, RoomMessage, TestClient};
use secrecy::SecretString;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);
const WARM_UP: usize = 20;
/// Commands in one burst, and bursts per bot.
const BURST: usize = 50;
const BURSTS: usize = 10;
/// How Baton's answers begin.
const STATUS_ANSWER: &str = "XMPP federation route:";
const HELP_ANSWER: &str = "Baton commands:";
/// The echo bot's prefix differs from Baton's, so each bot answers only its own commands.
const ECHO_PREFIX: &str = "?";

fn main() -> anyhow::Result<()> {
    // The floor runs as this executable started again.
    if baton_e2e::stock_echo::serve_if_asked()? {
        return Ok(());
    }
    // `cargo bench` passes `--bench`; the one other argument is the number of rounds.
    let rounds = match std::env::args().skip(1).find(|a| !a.starts_with("--")) {
        Some(a) => a
            .parse::<usize>()
            .with_context(|| format!("rounds must be a number, got {a:?}"))?,
        None => 300,
    };
    if rounds < 100 {
        bail!("use at least 100 rounds (p99 needs them)");
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

/// Which command.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Status,
    Help,
}

fn command(bot: Bot, cmd: Cmd) -> &'static str {
    match (bot, cmd) {
        (Bot::Echo, Cmd::Status) => "?status",
        (Bot::Echo, Cmd::Help) => "?help",
        (Bot::Baton, Cmd::Status) => "!status",
        (Bot::Baton, Cmd::Help) => "!help",
    }
}

/// Whether `m` is `bot`'s answer to `cmd`: both bots answer `status` and `help` with texts
/// of the same length (the floor's are Baton's, see `baton_e2e::stock_echo`).
fn answers(m: &RoomMessage, bot: Bot, cmd: Cmd) -> bool {
    let nick = match bot {
        Bot::Echo => "echo",
        Bot::Baton => "baton",
    };
    m.nick == nick
        && m.text.starts_with(match cmd {
            Cmd::Status => STATUS_ANSWER,
            Cmd::Help => HELP_ANSWER,
        })
}

/// Reply times per bot and command.
#[derive(Default)]
struct Samples {
    echo_status: Vec<Duration>,
    echo_help: Vec<Duration>,
    baton_status: Vec<Duration>,
    baton_help: Vec<Duration>,
}

impl Samples {
    fn of(&mut self, bot: Bot, cmd: Cmd) -> &mut Vec<Duration> {
        match (bot, cmd) {
            (Bot::Echo, Cmd::Status) => &mut self.echo_status,
            (Bot::Echo, Cmd::Help) => &mut self.echo_help,
            (Bot::Baton, Cmd::Status) => &mut self.baton_status,
            (Bot::Baton, Cmd::Help) => &mut self.baton_help,
        }
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

async fn bench(rounds: usize) -> anyhow::Result<()> {
    let load_before = load();
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
    let mut echo = EchoBot::start_stock(&stack.prosody, "echo", INCIDENT_ROOM, "echo", ECHO_PREFIX).await?;
    let mut bot = tokio::task::block_in_place(|| stack.start_bot())?;
    wait_for_baton(&mut alice).await?;
    let idle = memory(bot.pid());

    // (1) Interleaved, round by round.
    let mut samples = Samples::default();
    for n in 0..rounds + WARM_UP {
        let order = if n % 2 == 0 {
            [Bot::Echo, Bot::Baton]
        } else {
            [Bot::Baton, Bot::Echo]
        };
        for cmd in [Cmd::Status, Cmd::Help] {
            for who in order {
                let (took, _) = one_round(&mut alice, who, cmd).await?;
                if n >= WARM_UP {
                    samples.of(who, cmd).push(took);
                }
            }
        }
    }
    let after_commands = memory(bot.pid());

    // (2) Bursts, the bots taking turns.
    let mut echo_bursts = Vec::new();
    let mut baton_bursts = Vec::new();
    for n in 0..BURSTS + 1 {
        let order = if n % 2 == 0 {
            [Bot::Echo, Bot::Baton]
        } else {
            [Bot::Baton, Bot::Echo]
        };
        for who in order {
            let took = burst(&mut alice, who).await?;
            // The first pair warms up.
            if n > 0 {
                match who {
                    Bot::Echo => echo_bursts.push(took),
                    Bot::Baton => baton_bursts.push(took),
                }
            }
        }
    }
    let echo_memory = echo.pid().map(memory);
    echo.stop().await?;

    // (3) A failover runs while alice keeps asking.
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
    let mut during = Vec::new();
    let mut peak_during = 0u64;
    let run_started = Instant::now();
    let mut finished = false;
    while !finished && run_started.elapsed() < Duration::from_secs(60) {
        let (took, done) = one_round(&mut alice, Bot::Baton, Cmd::Status).await?;
        during.push(took);
        finished = done;
        peak_during = peak_during.max(memory(bot.pid()).rss_kib);
    }
    let after_run = memory(bot.pid());
    bot.kill9();
    if let Ok(path) = std::env::var("BATON_BENCH_STDERR") {
        std::fs::write(path, bot.stderr())?;
    }

    println!("command -> first reply through Prosody, timed by alice's client from sending to reading the answer");
    println!("floor: echo bot on stock tokio-xmpp (TCP_NODELAY); both bots in the room, interleaved round by round");
    println!("command: cargo bench -p baton-e2e --bench xmpp_bot_latency -- {rounds}");
    println!("load (1, 5, 15 min) before: {load_before}; after: {}", load());
    println!("({rounds} rounds after {WARM_UP} warm-up)");
    println!("{:<44} {:>9} {:>9} {:>9} {:>6}", "", "p50", "p90", "p99", "n");
    row("floor ?status", &samples.echo_status);
    row("baton !status", &samples.baton_status);
    row("floor ?help", &samples.echo_help);
    row("baton !help", &samples.baton_help);
    row("baton !status during a failover", &during);
    let ratio = |a: &[Duration], b: &[Duration], p| ms(percentile(a, p)) / ms(percentile(b, p));
    println!("baton / floor (goal: p50 within 1.1x):");
    println!(
        "  !status: p50 {:.2}x, p99 {:.2}x",
        ratio(&samples.baton_status, &samples.echo_status, 50),
        ratio(&samples.baton_status, &samples.echo_status, 99)
    );
    println!(
        "  !help:   p50 {:.2}x, p99 {:.2}x",
        ratio(&samples.baton_help, &samples.echo_help, 50),
        ratio(&samples.baton_help, &samples.echo_help, 99)
    );
    println!(
        "burst of {BURST} commands from one client, first sent -> last answer read ({BURSTS} per bot, alternating):"
    );
    row(&format!("floor, {BURST} x ?status"), &echo_bursts);
    row(&format!("baton, {BURST} x !status"), &baton_bursts);
    println!(
        "  baton / floor (goal: within 1.15x): p50 {:.2}x, p99 {:.2}x",
        ratio(&baton_bursts, &echo_bursts, 50),
        ratio(&baton_bursts, &echo_bursts, 99)
    );
    println!("resident memory (VmRSS) of baton run:");
    println!("  idle, joined, one command answered  {}", mib(idle.rss_kib));
    println!(
        "  after {:>5} commands for it         {}",
        2 * (rounds + WARM_UP) + BURST * (BURSTS + 1),
        mib(after_commands.rss_kib)
    );
    println!("  during a failover (peak of samples) {}", mib(peak_during));
    println!(
        "  after the run                       {} (VmHWM, the process's peak: {})",
        mib(after_run.rss_kib),
        mib(after_run.hwm_kib)
    );
    if let Some(m) = echo_memory {
        println!("  (the floor echo bot: {}, peak {})", mib(m.rss_kib), mib(m.hwm_kib));
    }
    Ok(())
}

/// Sends `cmd` to `who` and times its answer. Also reports whether Baton announced the end of
/// run #1 meanwhile. An answer from the other bot is an error: the prefixes keep them apart, so
/// it would mean the figures mix the two.
async fn one_round(alice: &mut TestClient, who: Bot, cmd: Cmd) -> anyhow::Result<(Duration, bool)> {
    let mut run_done = false;
    let started = Instant::now();
    alice.send(INCIDENT_ROOM, command(who, cmd)).await?;
    loop {
        let left = WAIT.saturating_sub(started.elapsed());
        let m: RoomMessage = alice
            .expect_message(|_| true, left)
            .await
            .context("waiting for the answer")?;
        let took = started.elapsed();
        if m.nick == "baton" && m.text.starts_with("#1 succeeded in") {
            run_done = true;
        }
        if answers(&m, who, cmd) {
            return Ok((took, run_done));
        }
        let other = match who {
            Bot::Echo => Bot::Baton,
            Bot::Baton => Bot::Echo,
        };
        if answers(&m, other, Cmd::Status) || answers(&m, other, Cmd::Help) {
            bail!("<{}> answered a command that was not for it: {}", m.nick, m.text);
        }
    }
}

/// Sends `BURST` `status` commands to `who` back to back and times them until the last answer.
async fn burst(alice: &mut TestClient, who: Bot) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for _ in 0..BURST {
        alice.send(INCIDENT_ROOM, command(who, Cmd::Status)).await?;
    }
    let mut answered = 0;
    while answered < BURST {
        let left = (WAIT * 3).saturating_sub(started.elapsed());
        let m = alice
            .expect_message(|_| true, left)
            .await
            .with_context(|| format!("waiting for answer {} of the burst", answered + 1))?;
        if answers(&m, who, Cmd::Status) {
            answered += 1;
        }
    }
    Ok(started.elapsed())
}

/// Waits until Baton answers (it asks for no history, so only a command sent after it joined is
/// answered), then lets late answers to earlier probes arrive and drops them.
async fn wait_for_baton(alice: &mut TestClient) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        alice.send(INCIDENT_ROOM, command(Bot::Baton, Cmd::Status)).await?;
        let answered = alice
            .expect_message(|m| answers(m, Bot::Baton, Cmd::Status), Duration::from_secs(2))
            .await;
        if answered.is_ok() {
            alice.collect_for(Duration::from_millis(500)).await;
            return Ok(());
        }
    }
    bail!("baton did not answer within 30 s")
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

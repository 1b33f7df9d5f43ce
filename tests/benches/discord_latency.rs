//! MESSAGE_CREATE -> Baton's first REST call, through the Discord stand-in, for `baton run` with
//! its Discord adapter (HTTPS to the stand-in with serenity's ratelimiter on, the simulated
//! executor, a SQLite store), and Baton's resident memory with Discord enabled next to the
//! same configuration with only the console. Prints figures; asserts nothing.
//!
//! Each sample is timed by the stand-in's own clock: from the moment it wrote the
//! MESSAGE_CREATE frame to the bot to the moment Baton's REST call for the answer arrived.
//! Two commands: `!status` (answered without the journal) and `!failover xmpp EdgePool2` (the
//! request is journaled before its card is posted; each is then denied so the next can start).
//! Commands come back to back, so the stand-in's per-channel limit (Discord's 5 per 5 s, which
//! serenity's ratelimiter waits out) is lifted: the figures are Baton's, not the window's.
//!
//! ```text
//! cargo build --release -p baton --bins
//! cargo bench -p baton-e2e --bench discord_latency [-- ROUNDS]
//! ```
//!
//! The `baton` binary is taken from the bench's own profile folder (`target/release` for
//! `cargo bench`).

use anyhow::{Context, bail};
use baton_e2e::baton::Baton;
use baton_e2e::discord::{Direction, DiscordStandIn, RateLimit};
use baton_e2e::discord_bot::{ALICE, CAROL, INCIDENTS, lines, stand_in_config, write_config};
use baton_e2e::measure::{self, memory, mib, percentile};
use std::time::{Duration, SystemTime};

const WAIT: Duration = Duration::from_secs(20);
const WARM_UP: usize = 20;

fn main() -> anyhow::Result<()> {
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

async fn bench(rounds: usize) -> anyhow::Result<()> {
    // Discord allows 5 messages per 5 s in a channel; serenity's ratelimiter then holds the
    // next one until the window ends. Commands here come back to back, so the limit is lifted
    // to time Baton rather than the window.
    let mut cfg = stand_in_config();
    cfg.rate_limit = RateLimit {
        limit: 1_000_000,
        window: Duration::from_secs(1),
    };
    let discord = DiscordStandIn::start(cfg).await?;
    let dir = tempfile::Builder::new().prefix("baton-discord-bench-").tempdir()?;
    write_config(&discord, dir.path(), false)?;
    let config = dir.path().join("baton.toml");
    let config = config.to_str().context("a UTF-8 path")?;
    let mut bot = Baton::start_logging(&["run", "--config", config], "warn")?;
    discord.wait_ready(WAIT).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = memory(bot.pid());

    let mut status = Vec::new();
    for i in 0..WARM_UP + rounds {
        let took = one(&discord, CAROL, "!status", |l| l.starts_with("XMPP federation route:")).await?;
        if i >= WARM_UP {
            status.push(took);
        }
    }
    let after_status = memory(bot.pid());

    let requests = rounds.min(150);
    let mut failover = Vec::new();
    let mut peak = 0;
    for n in 1..=requests {
        let took = one(&discord, ALICE, "!failover xmpp EdgePool2 benchmark", |l| {
            l.starts_with(&format!("Run #{n} requested"))
        })
        .await?;
        failover.push(took);
        discord.post_user_message(INCIDENTS, CAROL, &format!("!deny {n} benchmark"))?;
        let denied = format!("#{n} denied by carol");
        discord
            .wait_until("the denial", WAIT, |s| {
                lines(s, INCIDENTS).iter().any(|l| l.starts_with(&denied)).then_some(())
            })
            .await?;
        peak = peak.max(memory(bot.pid()).rss_kib);
    }
    let after_runs = memory(bot.pid());
    bot.kill9();

    // The same configuration with the console instead of Discord, for comparison.
    let text = std::fs::read_to_string(dir.path().join("baton.toml"))?
        .replace(
            "[chat.console]\nenabled = false\ntrusted = false",
            "[chat.console]\nenabled = true\ntrusted = true",
        )
        .replace("[chat.discord]\nenabled = true", "[chat.discord]\nenabled = false")
        .replace("store = \"baton.sqlite\"", "store = \"console.sqlite\"");
    let console_config = dir.path().join("console.toml");
    std::fs::write(&console_config, text)?;
    let mut console = Baton::start_logging(
        &["run", "--config", console_config.to_str().context("a UTF-8 path")?],
        "warn",
    )?;
    console.send("carol> !status")?;
    console.wait_for("XMPP federation route:", WAIT)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let console_idle = memory(console.pid());
    console.kill9();

    println!("MESSAGE_CREATE -> first REST call of the answer, by the Discord stand-in's clock");
    println!("(baton run, HTTPS with serenity's ratelimiter on, the channel's rate limit lifted;");
    println!(" {rounds} `!status` after {WARM_UP} warm-up, {requests} `!failover` each then denied)");
    println!(
        "{:<46} {:>9} {:>9} {:>9} {:>9} {:>5}",
        "", "p50", "p90", "p99", "max", "n"
    );
    row("!status (answered without the journal)", &status);
    row("!failover (journaled, then the card posted)", &failover);
    println!("resident memory (VmRSS) of baton run:");
    println!("  Discord enabled, idle after READY          {}", mib(idle.rss_kib));
    println!(
        "  after {:>4} !status                        {}",
        WARM_UP + rounds,
        mib(after_status.rss_kib)
    );
    println!(
        "  after {requests:>4} requests and denials           {} (peak {})",
        mib(after_runs.rss_kib),
        mib(peak)
    );
    println!(
        "  high-water mark (VmHWM)                    {}",
        mib(after_runs.hwm_kib)
    );
    println!(
        "  console only, same configuration, idle     {}",
        mib(console_idle.rss_kib)
    );
    Ok(())
}

/// `user` sends `command` in `#incidents`; the time from the stand-in writing its MESSAGE_CREATE
/// to Baton's first POST in the channel after it (whose content `answer` accepts).
async fn one(
    discord: &DiscordStandIn,
    user: u64,
    command: &str,
    answer: impl Fn(&str) -> bool,
) -> anyhow::Result<Duration> {
    let calls_before = discord.read(|s| s.calls().len());
    let posted = discord.post_user_message(INCIDENTS, user, command)?;
    let id = posted.message_id.to_string();
    let sent_at = discord
        .wait_until("the MESSAGE_CREATE frame", WAIT, |s| {
            s.frames()
                .iter()
                .rev()
                .find(|f| {
                    f.direction == Direction::ToClient
                        && f.event() == Some("MESSAGE_CREATE")
                        && f.payload["d"]["id"].as_str() == Some(id.as_str())
                })
                .map(|f| f.at)
        })
        .await?;
    let answered_at: SystemTime = discord
        .wait_until("the answer's REST call", WAIT, |s| {
            s.calls()[calls_before..]
                .iter()
                .find(|c| {
                    c.method == "POST"
                        && c.path == format!("/api/v10/channels/{INCIDENTS}/messages")
                        && c.body.as_ref().and_then(|b| b["content"].as_str()).is_some_and(&answer)
                })
                .map(|c| c.at)
        })
        .await?;
    Ok(answered_at.duration_since(sent_at).unwrap_or_default())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", measure::ms(d))
}

fn row(name: &str, samples: &[Duration]) {
    println!(
        "{name:<46} {:>9} {:>9} {:>9} {:>9} {:>5}",
        ms(percentile(samples, 50)),
        ms(percentile(samples, 90)),
        ms(percentile(samples, 99)),
        ms(samples.iter().max().copied().unwrap_or_default()),
        samples.len()
    );
}

//! Fan-out through the whole bot (prints figures; asserts nothing): `baton run` on the stack
//! (console chat, real agents, BIND, Prosody for the probes) with N servers in EdgePool2, each
//! simulated Lync action taking 1 s. A failover to EdgePool2 stops and later starts the services
//! of all N servers, one step each; the time of such a step is taken from the line of the step
//! before it (the engine starts the next step when it journals the last one's end, and prints
//! that line at the same moment) to the step's own line, as the harness reads Baton's stdout.
//! Runs alternate between EdgePool2 (measured) and back to EdgePool1 (two servers).
//!
//! The floor, interleaved: after each pair of runs, an independent minimal client
//! (`baton_e2e::fanout_floor`: tokio-rustls and hand-written HTTP/1.1, connections opened
//! before its clock starts) sends the same two steps' calls (stop, then start, on all N servers)
//! straight to the same agents and times the first write to the last answer. A step's ratio to
//! the floor is what Baton adds to what the agents and their simulators take on this machine.
//!
//! Also: the run's overhead beyond its actions' critical path (from the "Running." line to the
//! last step's line, minus the sum over the steps of the slowest action's time as the journal
//! records it), and Baton's resident memory idle and at its peak (VmHWM) during the runs.
//!
//! ```text
//! cargo build --release -p baton -p baton-agent -p baton-lync-sim --bins
//! cargo bench -p baton-e2e --bench bot_fanout [-- RUNS]
//! ```

use anyhow::{Context, bail};
use baton_actions::protocol::ActionCall;
use baton_actions::{Action, Fqdn, IdempotencyKey};
use baton_e2e::baton::Baton;
use baton_e2e::fanout_floor;
use baton_e2e::stack::{Stack, StackOptions};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(120);
/// The simulated Lync action's duration.
const ACTION_MS: u64 = 1000;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The value at quantile `q` (nearest rank) of `v`, sorted here.
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// The wall clock in milliseconds since the epoch.
fn wall_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Where one fan-out step's time went, in milliseconds from the step's start (the line of the
/// step before it), from the agents' journals: when each agent recorded the call as running,
/// when its executor started (the answer's time recorded, less the executor's own time), and
/// when it recorded the answer; then the step's line.
#[derive(Clone, Debug, Default)]
struct Split {
    /// The first and the last agent recording the call.
    first_recorded: f64,
    last_recorded: f64,
    /// Recorded -> executor started, the median and the largest over the agents.
    to_spawn_p50: f64,
    to_spawn_max: f64,
    /// The executor's start -> exit beyond the action's own time, median and largest.
    process_extra_p50: f64,
    process_extra_max: f64,
    /// The last answer recorded by an agent, and the step's line.
    last_answer: f64,
    line: f64,
}

/// Reads the agents' journals for step `step` of run `run`, which ran from `from` to `to`.
fn split(
    stack: &Stack,
    clock: (Instant, i64),
    run: u32,
    step: usize,
    from: Instant,
    to: Instant,
) -> anyhow::Result<Split> {
    // The agents' times as milliseconds after the step's start.
    let from_wall = clock.1 as f64 + ms(from - clock.0);
    let after = |wall: i64| wall as f64 - from_wall;
    let (run_segment, step_segment) = (format!("r{run}"), format!("s{step}"));
    let mut recorded = Vec::new();
    let mut to_spawn = Vec::new();
    let mut extra = Vec::new();
    let mut answers = Vec::new();
    for host in stack.hosts().iter().filter(|h| h.starts_with("edge2")) {
        let host = baton_actions::Fqdn::parse(host)?;
        for c in stack.fleet.call_times(&host)? {
            let parts: Vec<&str> = c.key.split('/').collect();
            let ours = parts.len() == 5
                && parts[0] != fanout_floor::KEY_STORE
                && (parts[1] == run_segment || parts[1].starts_with(&format!("{run_segment}.")))
                && parts[2] == step_segment;
            let (true, Some(finished), Some(process)) = (ours, c.finished_ms, c.process_ms) else {
                continue;
            };
            let spawned = finished as f64 - process as f64;
            recorded.push(after(c.started_ms));
            to_spawn.push(spawned - c.started_ms as f64);
            extra.push(process as f64 - ACTION_MS as f64);
            answers.push(after(finished));
        }
    }
    anyhow::ensure!(!recorded.is_empty(), "no agent journal has run #{run} step {step}");
    Ok(Split {
        first_recorded: quantile(&recorded, 0.0),
        last_recorded: quantile(&recorded, 1.0),
        to_spawn_p50: quantile(&to_spawn, 0.5),
        to_spawn_max: quantile(&to_spawn, 1.0),
        process_extra_p50: quantile(&extra, 0.5),
        process_extra_max: quantile(&extra, 1.0),
        last_answer: quantile(&answers, 1.0),
        line: ms(to - from),
    })
}

/// Prints the median over the measured steps of each part of [`Split`].
fn print_splits(n: usize, splits: &[Split]) {
    let p50 = |f: fn(&Split) -> f64| quantile(&splits.iter().map(f).collect::<Vec<_>>(), 0.5);
    println!(
        "  where a step to {n} servers goes (median of {} steps; ms after the step's start): \
         agents record the call {:.0} (first) to {:.0} (last); recorded -> executor started \
         {:.1} median, {:.1} max; executor start -> exit beyond the 1 s action {:.1} median, \
         {:.1} max; last answer recorded {:.0}; step line {:.0}",
        splits.len(),
        p50(|s| s.first_recorded),
        p50(|s| s.last_recorded),
        p50(|s| s.to_spawn_p50),
        p50(|s| s.to_spawn_max),
        p50(|s| s.process_extra_p50),
        p50(|s| s.process_extra_max),
        p50(|s| s.last_answer),
        p50(|s| s.line),
    );
}

/// Waits for a line of run `run` that ends it (success or a stop), and fails on a stop.
fn wait_run_end(bot: &Baton, run: u32) -> anyhow::Result<()> {
    let done = format!("#{run} succeeded in");
    let stopped = format!("#{run} stopped");
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        for l in bot.lines() {
            if l.contains(&done) {
                return Ok(());
            }
            if l.contains(&stopped) {
                bail!("run #{run} stopped: {l}\n{}", bot.lines().join("\n"));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("run #{run} did not end within {WAIT:?}:\n{}", bot.lines().join("\n"))
}

/// When the first line containing `needle` was read.
fn line_at(lines: &[(Instant, String)], needle: &str) -> anyhow::Result<Instant> {
    lines
        .iter()
        .find(|(_, l)| l.contains(needle))
        .map(|(t, _)| *t)
        .with_context(|| format!("no line contains {needle:?}"))
}

/// The sum over run `run`'s steps of the slowest action's time, from the journal.
fn critical_path_ms(journal: &[serde_json::Value], run: u32) -> f64 {
    let mut slowest = std::collections::BTreeMap::<u64, u64>::new();
    for e in journal {
        let ev = &e["event"];
        if ev["type"] == "action_finished" && ev["run"].as_u64() == Some(u64::from(run)) {
            let step = ev["step"].as_u64().unwrap_or(0);
            let took = ev["report"]["elapsed_ms"].as_u64().unwrap_or(0);
            let s = slowest.entry(step).or_default();
            *s = (*s).max(took);
        }
    }
    slowest.values().sum::<u64>() as f64
}

/// CPU time a process used, its own and its reaped children's (utime, stime, cutime, cstime of
/// `/proc/<pid>/stat`), in milliseconds.
fn cpu_ms(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The fields after the command name, which is in parentheses and may hold spaces.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime..cstime are fields 14..17.
    let ticks: u64 = (11..15).filter_map(|i| fields.get(i)?.parse::<u64>().ok()).sum();
    // SAFETY: sysconf reads a constant of the system; no memory is touched.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 * 1000.0 / hz
}

/// Resident memory of a process at one moment, in KiB: in all, anonymous (heap, stacks) and
/// file-backed (the executable's pages, mapped libraries), and its thread count.
#[derive(Clone, Copy, Debug, Default)]
struct Rss {
    total: u64,
    anon: u64,
    file: u64,
    threads: u64,
}

fn rss(pid: u32) -> Rss {
    Rss {
        total: status_kib(pid, "VmRSS:"),
        anon: status_kib(pid, "RssAnon:"),
        file: status_kib(pid, "RssFile:"),
        threads: status_kib(pid, "Threads:"),
    }
}

/// Resident memory of `pid` per mapping, from `/proc/<pid>/smaps`: KiB per file (or
/// `[heap]`, `[stack]`, `anonymous`), largest first, with the part of each that is anonymous
/// (pages written since mapped, e.g. relocated data).
fn rss_by_mapping(pid: u32) -> Vec<(String, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by = std::collections::BTreeMap::<String, (u64, u64)>::new();
    let mut current = String::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: address range, perms, offset, device, inode, [path].
            let path = fields.nth(4).unwrap_or("anonymous");
            current = path.rsplit('/').next().unwrap_or(path).to_string();
        } else if first == "Rss:" || first == "Anonymous:" {
            let kib: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let e = by.entry(current.clone()).or_default();
            if first == "Rss:" {
                e.0 += kib;
            } else {
                e.1 += kib;
            }
        }
    }
    let mut v: Vec<(String, u64, u64)> = by.into_iter().map(|(k, (r, a))| (k, r, a)).collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v
}

/// Samples `pid`'s resident memory every 5 ms until `stop`, and returns the largest sample.
fn sample_peak(pid: u32, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<Rss> {
    std::thread::spawn(move || {
        let mut peak = Rss::default();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let now = rss(pid);
            if now.total > peak.total {
                peak = now;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        peak
    })
}

struct Figures {
    steps: Vec<f64>,
    /// The floor's time for the same steps, in the same order (see [`Floor`]).
    floors: Vec<f64>,
    prechecks: Vec<f64>,
    overheads: Vec<f64>,
    idle: Rss,
    peak: Rss,
    hwm_kib: u64,
    startup: Duration,
    /// Resident KiB per mapping after the runs (see [`rss_by_mapping`]).
    mappings: Vec<(String, u64, u64)>,
    /// Where each measured fan-out step's time went (see [`Split`]).
    splits: Vec<Split>,
    /// CPU time over all the runs: Baton's, and the agents' with their simulators'.
    bot_cpu_ms: f64,
    agents_cpu_ms: f64,
    runs: u32,
}

fn stop_action(host: Fqdn) -> Action {
    Action::ServicesStop { host }
}

fn start_action(host: Fqdn) -> Action {
    Action::ServicesStart { host }
}

/// The floor's client pointed at EdgePool2's agents, with the bot's certificate.
struct Floor {
    runtime: tokio::runtime::Runtime,
    config: baton_actions::dispatcher::DispatcherConfig,
    agents: Vec<(Fqdn, std::net::SocketAddr)>,
}

impl Floor {
    fn new(stack: &Stack) -> anyhow::Result<Floor> {
        let agents = stack
            .pool2_hosts()
            .iter()
            .map(|h| {
                let host = Fqdn::parse(h)?;
                let address = stack.fleet.address(&host)?;
                anyhow::Ok((host, address))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Floor {
            runtime: tokio::runtime::Builder::new_current_thread().enable_all().build()?,
            config: stack.fleet.dispatcher_config(),
            agents,
        })
    }

    /// Step `step` (0-based, as in the keys) of `action` on every agent, after run `run`;
    /// milliseconds from the first call written to the last answer read.
    fn step(&self, run: u32, step: usize, action: fn(Fqdn) -> Action) -> anyhow::Result<f64> {
        let calls = self
            .agents
            .iter()
            .enumerate()
            .map(|(i, (host, _))| {
                let key = IdempotencyKey::new(fanout_floor::KEY_STORE, u64::from(run), step, i, "edge", 1);
                ActionCall::new(
                    key,
                    action(host.clone()),
                    Duration::from_secs(30),
                    Duration::from_secs(10),
                )
            })
            .collect();
        let credentials = fanout_floor::Credentials {
            ca: &self.config.ca,
            cert: &self.config.cert,
            key: &self.config.key,
        };
        let took = self
            .runtime
            .block_on(fanout_floor::call_all(&credentials, &self.agents, calls, WAIT))?;
        Ok(ms(took))
    }
}

fn bench(n: usize, runs: u32) -> anyhow::Result<Figures> {
    let started = Instant::now();
    // The agents' journals keep wall-clock times; this pair turns them into instants.
    let clock = (Instant::now(), wall_ms());
    let stack = Stack::start(StackOptions {
        sim_args: vec!["--delay-ms".into(), ACTION_MS.to_string()],
        pool2_servers: n,
        ..StackOptions::default()
    })?;
    let startup = started.elapsed();
    let mut bot = stack.start_bot()?;
    // Idle: the bot has read its configuration and answered a command.
    bot.send("alice> !help")?;
    bot.wait_for("!failover", WAIT)?;
    let pid = bot.pid();
    let idle = rss(pid);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_peak(pid, stop.clone());
    let mut figures = Figures {
        steps: Vec::new(),
        floors: Vec::new(),
        prechecks: Vec::new(),
        overheads: Vec::new(),
        splits: Vec::new(),
        mappings: Vec::new(),
        idle,
        peak: Rss::default(),
        hwm_kib: 0,
        startup,
        bot_cpu_ms: 0.0,
        agents_cpu_ms: 0.0,
        runs: runs * 2,
    };
    let agent_pids: Vec<u32> = stack
        .hosts()
        .iter()
        .filter_map(|h| stack.fleet.pid(&baton_actions::Fqdn::parse(h).ok()?))
        .collect();
    let agents_cpu = || agent_pids.iter().map(|p| cpu_ms(*p)).sum::<f64>();
    let floor = Floor::new(&stack)?;
    let mut measured = Vec::new();
    for run in 1..=runs * 2 {
        let target = if run % 2 == 1 { "EdgePool2" } else { "EdgePool1" };
        // CPU is counted over the bot's runs only, not the floor's calls between them.
        let (bot_before, agents_before) = (cpu_ms(pid), agents_cpu());
        bot.send(&format!("alice> !failover xmpp {target} fan-out bench"))?;
        bot.wait_for(&format!("Run #{run} requested by"), WAIT)?;
        bot.send(&format!("bob> !approve {run}"))?;
        wait_run_end(&bot, run)?;
        figures.bot_cpu_ms += cpu_ms(pid) - bot_before;
        figures.agents_cpu_ms += agents_cpu() - agents_before;
        if target == "EdgePool2" {
            measured.push(run);
        } else {
            // The same two steps' calls from the floor's client, in the order of the run.
            figures.floors.push(floor.step(run, 1, stop_action)?);
            figures.floors.push(floor.step(run, 6, start_action)?);
        }
    }
    figures.hwm_kib = status_kib(pid, "VmHWM:");
    figures.mappings = rss_by_mapping(pid);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    figures.peak = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the memory sampler panicked"))?;
    let lines = bot.timed_lines();
    let journal = stack.journal()?;
    for run in measured {
        let running = lines
            .iter()
            .find(|(_, l)| l.contains(&format!("#{run} approved by")) && l.ends_with("Running."))
            .map(|(t, _)| *t)
            .with_context(|| format!("no Running. line for #{run}"))?;
        let step = |k: usize| line_at(&lines, &format!("#{run} [{k}/8]"));
        let (s1, s2, s6, s7, s8) = (step(1)?, step(2)?, step(6)?, step(7)?, step(8)?);
        figures.prechecks.push(ms(s1 - running));
        figures.steps.push(ms(s2 - s1));
        figures.steps.push(ms(s7 - s6));
        for (k, from, to) in [(2, s1, s2), (7, s6, s7)] {
            figures.splits.push(split(&stack, clock, run, k, from, to)?);
        }
        figures
            .overheads
            .push(ms(s8 - running) - critical_path_ms(&journal, run));
    }
    bot.kill9();
    Ok(figures)
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; the one other argument is the number of measured runs.
    let runs = match std::env::args().skip(1).find(|a| !a.starts_with("--")) {
        Some(a) => a
            .parse::<u32>()
            .with_context(|| format!("runs must be a number, got {a:?}"))?,
        None => 5,
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "fan-out through `baton run` (console chat), {} cores, load before: {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        load.trim()
    );
    println!("command: cargo bench -p baton-e2e --bench bot_fanout -- {runs}");
    println!("{:<40} {:>9} {:>9} {:>9} {:>6}", "", "p50 ms", "p99 ms", "ratio", "n");
    let mut memory = Vec::new();
    for n in [10usize, 100] {
        let f = bench(n, runs)?;
        // The ratio: of a step's median to the action's own time (none for the other rows).
        let row = |what: &str, v: &[f64], per: Option<f64>| {
            println!(
                "{:<40} {:>9.1} {:>9.1} {:>9} {:>6}",
                what,
                quantile(v, 0.5),
                quantile(v, 0.99),
                per.map_or_else(|| "-".to_string(), |per| format!("{:.3}x", quantile(v, 0.5) / per)),
                v.len()
            );
        };
        row(
            &format!("step to {n} servers (1 s actions)"),
            &f.steps,
            Some(ACTION_MS as f64),
        );
        row(
            &format!("floor: the same calls to {n}, direct"),
            &f.floors,
            Some(ACTION_MS as f64),
        );
        // Each step against the floor's same step of the same round.
        let paired: Vec<f64> = f.steps.iter().zip(&f.floors).map(|(s, fl)| s / fl).collect();
        println!(
            "{:<40} {:>9} {:>9} {:>9} {:>6}",
            format!("step to {n} / floor, paired by round"),
            "-",
            "-",
            format!("{:.3}x", quantile(&paired, 0.5)),
            paired.len()
        );
        row(&format!("precheck of {} hosts (health)", n + 1), &f.prechecks, None);
        row(&format!("8-step run overhead, {n} servers"), &f.overheads, None);
        println!(
            "  ({n} servers: stack started in {:.1} s; CPU per run: baton {:.0} ms, agents and simulators {:.0} ms)",
            f.startup.as_secs_f64(),
            f.bot_cpu_ms / f64::from(f.runs),
            f.agents_cpu_ms / f64::from(f.runs)
        );
        print_splits(n, &f.splits);
        memory.push((n, f.idle, f.peak, f.hwm_kib, f.mappings));
    }
    let mib = |kib: u64| kib as f64 / 1024.0;
    for (n, idle, peak, hwm, mappings) in memory {
        println!(
            "baton resident memory with {n} servers: peak (VmHWM) {:.1} MiB; idle {:.1} MiB \
             (anonymous {:.1}, file-backed {:.1}, {} threads); largest sample during the runs {:.1} MiB \
             (anonymous {:.1}, file-backed {:.1}, {} threads)",
            mib(hwm),
            mib(idle.total),
            mib(idle.anon),
            mib(idle.file),
            idle.threads,
            mib(peak.total),
            mib(peak.anon),
            mib(peak.file),
            peak.threads
        );
        println!(
            "  resident after the runs, by mapping (KiB, of it anonymous): {}",
            mappings
                .iter()
                .take(8)
                .map(|(name, rss, anon)| format!("{name} {rss} ({anon})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load after: {}", load.trim());
    Ok(())
}

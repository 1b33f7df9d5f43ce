//! Fan-out benchmark (prints figures; asserts nothing): one step sent to 1, 10 and 100 local
//! agents whose action takes 1 s, the cost of one dispatch (mutual TLS, HTTP, journal,
//! executor process) without the action's own time, and where the time of a step to 100 agents
//! goes: the health calls to all of them (new connections with full and resumed TLS handshakes,
//! kept connections), 100 actions that take no time (everything but the action), and 100
//! actions of 1 s split into the agents' own process time and the rest, on kept connections and
//! on a new connection for each exchange.
//!
//! Run: `cargo build --release -p baton-agent -p baton-lync-sim --bins`, then
//! `cargo bench -p baton-e2e --bench fanout`.

use baton_actions::{Action, ActionRequest, Executor, Fqdn, IdempotencyKey};
use baton_e2e::agents::{AgentSpec, Fleet};
use std::time::{Duration, Instant};

fn spec(host: &str, delay_ms: u64) -> AgentSpec {
    let mut s = AgentSpec::new(host);
    s.actions = vec!["services.stop".into(), "services.status".into()];
    s.sim_args = vec!["--delay-ms".into(), delay_ms.to_string()];
    s
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fan_out(n: usize, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let hosts: Vec<String> = (1..=n).map(|i| format!("edge{i:03}.contoso.com")).collect();
    let started = Instant::now();
    let fleet = Fleet::start_all(hosts.iter().map(|h| spec(h, 1000)).collect())?;
    let startup = started.elapsed();
    let dispatcher = fleet.dispatcher()?;
    let mut rounds = Vec::new();
    for round in 1..=3usize {
        let requests: Vec<ActionRequest> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| ActionRequest {
                // A run of its own per round: the same run with attempt 2 would first ask about
                // attempt 1, find it succeeded and run nothing.
                key: IdempotencyKey::new("bench", (n * 10 + round) as u64, 1, i, &h[..7], 1),
                action: Action::ServicesStop {
                    host: Fqdn::parse(h).expect("valid"),
                },
                timeout: Duration::from_secs(30),
            })
            .collect();
        let t = Instant::now();
        let reports = runtime.block_on(futures::future::join_all(
            requests.into_iter().map(|r| dispatcher.execute(r)),
        ));
        rounds.push(t.elapsed());
        let failed: Vec<&str> = reports
            .iter()
            .filter(|r| !r.outcome.is_ok())
            .map(|r| r.outcome.text())
            .collect();
        anyhow::ensure!(
            failed.is_empty(),
            "{} of {n} failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(3)]
        );
    }
    let best = *rounds.iter().min().expect("three rounds");
    println!(
        "fan-out {n:>3} agents, 1 s action: best {:7.1} ms, median {:7.1} ms (rounds: {}) [{} agents started in {:.1} s]",
        ms(best),
        ms(median(rounds.clone())),
        rounds
            .iter()
            .map(|d| format!("{:.0}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", "),
        n,
        startup.as_secs_f64()
    );
    Ok(())
}

fn overhead(runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let host = "edge001.contoso.com";
    let fleet = Fleet::start_all(vec![spec(host, 0)])?;
    let dispatcher = fleet.dispatcher()?;
    let mut config = fleet.dispatcher_config();
    config.keep_idle = Duration::ZERO;
    let fresh = baton_actions::dispatcher::Dispatcher::new(config)?;
    let edge = Fqdn::parse(host)?;
    let n = 50;
    let mut health_fresh = Vec::new();
    let mut health = Vec::new();
    let mut action = Vec::new();
    let mut replay = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        runtime.block_on(dispatcher.health(&edge))?;
        health.push(t.elapsed());
        let t = Instant::now();
        runtime.block_on(fresh.health(&edge))?;
        health_fresh.push(t.elapsed());
        let request = ActionRequest {
            key: IdempotencyKey::new("overhead", 1, 1, i, "edge001", 1),
            action: Action::ServicesStatus { host: edge.clone() },
            timeout: Duration::from_secs(10),
        };
        let t = Instant::now();
        let report = runtime.block_on(dispatcher.execute(request.clone()));
        action.push(t.elapsed());
        anyhow::ensure!(report.outcome.is_ok(), "{}", report.outcome.text());
        let t = Instant::now();
        let again = runtime.block_on(dispatcher.execute(request));
        replay.push(t.elapsed());
        anyhow::ensure!(again.replayed, "the repeat is a replay");
    }
    println!(
        "per dispatch ({n} sequential, median): health on a kept connection {:.2} ms, on a new one \
         (mTLS connect + HTTP) {:.2} ms; action with a 0 ms simulator (+ journal + process) {:.2} ms; \
         repeated key (journal replay) {:.2} ms",
        ms(median(health)),
        ms(median(health_fresh)),
        ms(median(action)),
        ms(median(replay))
    );
    Ok(())
}

/// `v` sorted, and its median and maximum.
fn spread(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

/// Where the time of one step to `n` agents goes, each part timed for all `n` at once, with
/// connections kept open between exchanges (as the bot does) and with a new connection for each.
fn breakdown(n: usize, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let hosts: Vec<Fqdn> = (1..=n)
        .map(|i| Fqdn::parse(&format!("edge{i:03}.contoso.com")))
        .collect::<Result<_, _>>()?;
    let fleet = Fleet::start_all(hosts.iter().map(|h| spec(h.as_str(), 0)).collect())?;
    // services.stop takes 1 s on every agent; services.status takes no time.
    for h in &hosts {
        fleet.edit_sim(h, |v| {
            v["inject"]["services.stop"] = serde_json::json!({ "delay_ms": 1000 })
        })?;
    }
    let kept = fleet.dispatcher()?;
    let mut config = fleet.dispatcher_config();
    config.keep_idle = Duration::ZERO;
    let fresh = baton_actions::dispatcher::Dispatcher::new(config)?;
    let all_health = |d: &baton_actions::dispatcher::Dispatcher| {
        let t = Instant::now();
        let answers = runtime.block_on(futures::future::join_all(hosts.iter().map(|h| d.health(h))));
        anyhow::ensure!(answers.iter().all(Result::is_ok), "a health call failed");
        Ok(t.elapsed())
    };
    let fresh_cold = all_health(&fresh)?;
    let fresh_resumed = all_health(&fresh)?;
    let kept_first = all_health(&kept)?;
    let kept_again = all_health(&kept)?;
    let call_all = |d: &baton_actions::dispatcher::Dispatcher, action: fn(Fqdn) -> Action, tag: &str| {
        let t0 = Instant::now();
        let answers = runtime.block_on(futures::future::join_all(hosts.iter().enumerate().map(|(i, h)| {
            let key = IdempotencyKey::new(tag, n as u64, 1, i, "edge", 1);
            let action = action(h.clone());
            async move {
                let answer = d.call(h, &key, &action, Duration::from_secs(30)).await;
                (t0.elapsed(), answer)
            }
        })));
        (t0.elapsed(), answers)
    };
    let mut rows = Vec::new();
    for (label, d) in [("kept connections", &kept), ("a new connection each", &fresh)] {
        let (zero_took, zero) = call_all(
            d,
            |host| Action::ServicesStatus { host },
            &format!("zero-{}", label.len()),
        );
        let (one_took, one) = call_all(d, |host| Action::ServicesStop { host }, &format!("one-{}", label.len()));
        let mut process = Vec::new();
        let mut outside = Vec::new();
        for (_, answer) in zero.iter().chain(&one) {
            match answer {
                Ok(baton_runbook::protocol::ActionAnswer::Ok { .. }) => {}
                other => anyhow::bail!("an action did not succeed: {other:?}"),
            }
        }
        for (done_at, answer) in &one {
            if let Ok(baton_runbook::protocol::ActionAnswer::Ok { elapsed_ms, .. }) = answer {
                process.push(*elapsed_ms as f64);
                outside.push(ms(*done_at) - *elapsed_ms as f64);
            }
        }
        rows.push((label, zero_took, one_took, spread(process), spread(outside)));
        // services.stop is refused while the last one's key is recorded running; each round
        // uses keys of its own, and the agents are idle again here.
    }
    println!("where the time of one step to {n} agents goes (all {n} at once):");
    println!(
        "  health to all, new connections, full TLS handshakes      {:7.1} ms",
        ms(fresh_cold)
    );
    println!(
        "  health to all, new connections, resumed TLS sessions     {:7.1} ms",
        ms(fresh_resumed)
    );
    println!(
        "  health to all, kept dispatcher, first (connections made) {:7.1} ms",
        ms(kept_first)
    );
    println!(
        "  health to all, kept connections                          {:7.1} ms",
        ms(kept_again)
    );
    for (label, zero_took, one_took, (process_median, process_max), (outside_median, outside_max)) in rows {
        println!("  {label}:");
        println!("    an action of no time on all             {:7.1} ms", ms(zero_took));
        println!("    an action of 1 s on all                 {:7.1} ms", ms(one_took));
        println!(
            "      the agents' process time (spawn to exit): median {process_median:.1} ms, max {process_max:.1} ms"
        );
        println!(
            "      the rest (dispatch, TLS, HTTP, agent journal, spawn, answer): median {outside_median:.1} ms, max {outside_max:.1} ms"
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; a filter argument selects nothing here.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!(
        "baton-agent fan-out benchmark ({} cores)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    overhead(&runtime)?;
    breakdown(100, &runtime)?;
    for n in [1, 10, 100] {
        fan_out(n, &runtime)?;
    }
    Ok(())
}

//! Fan-out benchmark (prints figures; asserts nothing): one step sent to 1, 10 and 100 local
//! agents whose action takes 1 s, and the cost of one dispatch (mutual TLS, HTTP, journal,
//! executor process) without the action's own time.
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
    for round in 1..=3 {
        let requests: Vec<ActionRequest> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| ActionRequest {
                key: IdempotencyKey::new("bench", n as u64, 1, i, &h[..7], round),
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
    let edge = Fqdn::parse(host)?;
    let n = 50;
    let mut health = Vec::new();
    let mut action = Vec::new();
    let mut replay = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        runtime.block_on(dispatcher.health(&edge))?;
        health.push(t.elapsed());
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
        "per dispatch ({n} sequential, median): health (mTLS connect + HTTP) {:.2} ms; \
         action with a 0 ms simulator (+ journal + process) {:.2} ms; repeated key (journal replay) {:.2} ms",
        ms(median(health)),
        ms(median(action)),
        ms(median(replay))
    );
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
    for n in [1, 10, 100] {
        fan_out(n, &runtime)?;
    }
    Ok(())
}

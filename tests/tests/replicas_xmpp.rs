//! Two replicas in a real XMPP room (Prosody), on a real PostgreSQL, with real agents and BIND:
//! only the active replica is in the room; killed mid-step, the standby joins, says once that it
//! took over, and the room sees every step's status once and in order and the summary once,
//! while no action starts twice at the agents.

use baton_actions::Fqdn;
use baton_e2e::postgres::Postgres;
use baton_e2e::prosody::INCIDENT_ROOM;
use baton_e2e::replicas::{Shared, connected_to, start_replica, store_section};
use baton_e2e::room::{Follower, starting_with};
use baton_e2e::stack::{Stack, StackOptions};
use baton_e2e::xmpp_client::JoinHistory;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(90);

const STEPS: [&str; 8] = [
    "precheck", "services", "route", "dns A", "dns SRV", "port", "services", "verify",
];

/// Runs blocking work (PostgreSQL's blocking client, process waits) off the runtime's threads.
fn blocking<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    tokio::task::block_in_place(|| std::thread::scope(|s| s.spawn(f).join().expect("the blocking work panicked")))
}

fn starts(stack: &Stack, host: &str, action: &str) -> anyhow::Result<Vec<String>> {
    Ok(stack
        .fleet
        .executions(&Fqdn::parse(host)?)?
        .into_iter()
        .filter(|(_, a, _)| a == action)
        .map(|(k, _, _)| k)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_real_room_the_standby_takes_over_mid_run_and_the_room_sees_each_step_once() -> anyhow::Result<()> {
    let pg = blocking(Postgres::start)?;
    blocking(|| pg.create_db("xmpp"))?;
    let stack = blocking(|| {
        Stack::start(StackOptions {
            xmpp_chat: true,
            sim_args: vec!["--delay-ms".into(), "1000".into()],
            extra_config: store_section(&pg, "xmpp", "2s"),
            ..StackOptions::default()
        })
    })?;
    let (mut site1, site2) = blocking(|| -> anyhow::Result<_> {
        let a = start_replica(&stack.config, "site1")?;
        let mut shared = Shared::connect(&pg, "xmpp")?;
        shared.wait_leader("site1", T)?;
        let b = start_replica(&stack.config, "site2")?;
        shared.wait("site2 stands by", T, |s| s.connected("site2"))?;
        Ok((a, b))
    })?;
    let server = &stack.prosody;
    let mut alice = Follower::join(server, "alice", INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    alice.wait_for_bot(INCIDENT_ROOM).await?;
    let mut bob = Follower::join(server, "bob", INCIDENT_ROOM, "bob", JoinHistory::None).await?;
    alice
        .say(INCIDENT_ROOM, "!failover xmpp EdgePool2 pool 1 lost power in DC1")
        .await?;
    alice.bot_says(INCIDENT_ROOM, "Run #1 requested by alice", T).await?;
    bob.say(INCIDENT_ROOM, "!approve 1").await?;
    alice.bot_says(INCIDENT_ROOM, "#1 [2/8] services", T).await?;
    // Set-CsSite runs at the management agent, and everything said so far is recorded.
    blocking(|| -> anyhow::Result<()> {
        let mut shared = Shared::connect(&pg, "xmpp")?;
        shared.wait("Set-CsSite started and the outbox drained", T, |s| {
            Ok(!starts(&stack, "mgmt1.contoso.test", "route.set")?.is_empty() && s.undelivered()? == 0)
        })?;
        Ok(())
    })?;
    let c2s = server.c2s_addr().port();
    assert!(
        connected_to(site1.pid(), c2s)?,
        "the active replica is connected to the chat server"
    );
    assert!(
        !connected_to(site2.pid(), c2s)?,
        "the standby is not: it is connected to the database only"
    );
    site1.kill9();
    let killed = Instant::now();
    alice
        .bot_says(INCIDENT_ROOM, "Baton replica site2 took over", T)
        .await?;
    let in_room = killed.elapsed();
    alice.bot_says(INCIDENT_ROOM, "#1 succeeded in ", T).await?;
    eprintln!("takeover in the room: the notice {in_room:?} after SIGKILL");
    assert!(
        connected_to(site2.pid(), c2s)?,
        "the new active replica is connected to the chat server"
    );
    alice.settle(Duration::from_secs(1)).await;
    let lines = alice.bot_lines(INCIDENT_ROOM);
    let text = lines.join("\n");
    let shown: Vec<String> = starting_with(&lines, "#1 [")
        .iter()
        .map(|l| l.split(':').next().unwrap_or(l).to_string())
        .collect();
    let expected: Vec<String> = STEPS
        .iter()
        .enumerate()
        .map(|(i, t)| format!("#1 [{}/8] {t}", i + 1))
        .collect();
    assert_eq!(shown, expected, "every step's status once, in order:\n{text}");
    assert_eq!(
        starting_with(&lines, "Baton replica ").len(),
        1,
        "one takeover notice:\n{text}"
    );
    assert_eq!(starting_with(&lines, "#1 succeeded in ").len(), 1, "{text}");
    let notice = lines
        .iter()
        .position(|l| l.starts_with("Baton replica site2 took over"));
    let route = lines.iter().position(|l| l.starts_with("#1 [3/8]"));
    assert!(
        notice < route,
        "the notice comes before the resumed step's status:\n{text}"
    );
    let route = starts(&stack, "mgmt1.contoso.test", "route.set")?;
    assert_eq!(route.len(), 1, "Set-CsSite started once: {route:?}");
    for host in ["edge2a.contoso.test", "edge2b.contoso.test"] {
        for action in ["services.stop", "services.start"] {
            assert_eq!(starts(&stack, host, action)?.len(), 1, "{action} on {host}");
        }
    }
    for client in [alice, bob] {
        client.close().await;
    }
    drop(site2);
    Ok(())
}

//! Two `baton run` replicas on one real PostgreSQL, with real agents over mutual TLS and BIND:
//! started together, exactly one acts; the active one SIGKILLed while a step runs at an agent,
//! the standby takes over, resumes the step with the same idempotency key and finishes the run,
//! and no action starts twice (the agents' simulator records every start); the active one
//! SIGSTOPped past its lease is deposed, and when it wakes it commits nothing, posts nothing
//! and stands by; PostgreSQL restarted mid-run, the run completes with nothing doubled; a
//! SQLite journal with a run in flight moved by `baton store migrate` resumes on PostgreSQL with
//! the same keys; each replica serves /healthz, and /readyz says which one leads.

use baton_actions::Fqdn;
use baton_e2e::baton::Baton;
use baton_e2e::postgres::Postgres;
use baton_e2e::replicas::{Shared, start_replica, start_replica_listening, store_section};
use baton_e2e::stack::{Stack, StackOptions};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(90);

fn stack(pg: &Postgres, db: &str) -> anyhow::Result<Stack> {
    pg.create_db(db)?;
    Stack::start(StackOptions {
        sim_args: vec!["--delay-ms".into(), "1000".into()],
        extra_config: store_section(pg, db, "2s"),
        ..StackOptions::default()
    })
}

/// Every simulator start on `host` for `action`, by key.
fn starts(stack: &Stack, host: &str, action: &str) -> anyhow::Result<Vec<String>> {
    Ok(stack
        .fleet
        .executions(&Fqdn::parse(host)?)?
        .into_iter()
        .filter(|(_, a, _)| a == action)
        .map(|(k, _, _)| k)
        .collect())
}

/// Each action of the run started exactly once at the agents.
fn each_action_started_once(stack: &Stack) -> anyhow::Result<()> {
    let route = starts(stack, "mgmt1.contoso.test", "route.set")?;
    assert_eq!(route.len(), 1, "Set-CsSite started once: {route:?}");
    for host in ["edge2a.contoso.test", "edge2b.contoso.test"] {
        for action in ["services.stop", "services.start"] {
            let keys = starts(stack, host, action)?;
            assert_eq!(keys.len(), 1, "{action} on {host} started once: {keys:?}");
        }
    }
    Ok(())
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

/// A replica's process and its name.
type Replica = (Baton, &'static str);

/// Starts both replicas at once; returns (active, standby) once one leads and the other has
/// its session, checking that only one takeover ever happened.
fn both(stack: &Stack, shared: &mut Shared) -> anyhow::Result<(Replica, Replica)> {
    let a = start_replica(&stack.config, "site1")?;
    let b = start_replica(&stack.config, "site2")?;
    shared.wait("one replica leads, the other stands by", T, |s| {
        Ok(s.leader()?.1.is_some() && s.connected("site1")? && s.connected("site2")?)
    })?;
    let (epoch, holder) = shared.leader()?;
    assert_eq!(epoch, 1, "started together, exactly one ever took the lead");
    Ok(if holder.as_deref() == Some("site1") {
        ((a, "site1"), (b, "site2"))
    } else {
        ((b, "site2"), (a, "site1"))
    })
}

/// Requests and approves run 1 on the active replica, and waits until Set-CsSite has started
/// at the management agent and every message so far is recorded delivered.
fn run_until_route_step(stack: &Stack, pg: &Postgres, db: &str, active: &mut Baton) -> anyhow::Result<()> {
    active.send("alice> !failover xmpp EdgePool2 drill")?;
    active.wait_for("Expires at", T)?;
    active.send("bob> !approve 1")?;
    let mut outbox = pg.client(db)?;
    let deadline = Instant::now() + T;
    loop {
        let started = !starts(stack, "mgmt1.contoso.test", "route.set")?.is_empty();
        let waiting: i64 = outbox
            .query_one("SELECT count(*) FROM outbox WHERE delivered_at IS NULL", &[])?
            .get(0);
        if started && waiting == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "Set-CsSite never started:\n{}",
            active.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn started_together_one_acts_and_when_it_is_killed_mid_step_the_standby_finishes_the_run_once() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let stack = stack(&pg, "killed")?;
    let mut shared = Shared::connect(&pg, "killed")?;
    let ((mut active, _), (standby, standby_name)) = both(&stack, &mut shared)?;
    run_until_route_step(&stack, &pg, "killed", &mut active)?;
    assert!(
        standby.lines().is_empty(),
        "the standby says nothing while the other acts"
    );
    let steps_before = shared.count("step_started")?;
    active.kill9();
    let killed = Instant::now();
    shared.wait_leader(standby_name, T)?;
    let leading = killed.elapsed();
    shared.wait("the run resumed", T, |s| Ok(s.count("step_started")? > steps_before))?;
    let resumed = killed.elapsed();
    standby.wait_for("#1 succeeded in", T)?;
    eprintln!("takeover after SIGKILL: leading after {leading:?}, next step started after {resumed:?}");
    each_action_started_once(&stack)?;
    let route = starts(&stack, "mgmt1.contoso.test", "route.set")?;
    assert!(route[0].ends_with("/t1"), "the original key, first attempt: {route:?}");
    let mut lines = active.lines();
    lines.extend(standby.lines());
    let text = lines.join("\n");
    for k in 1..=8 {
        assert_eq!(
            count(&lines, &format!("#1 [{k}/8]")),
            1,
            "step {k} reported exactly once:\n{text}"
        );
    }
    assert_eq!(
        count(&lines, "took over"),
        1,
        "one takeover notice in the room:\n{text}"
    );
    assert!(
        standby
            .lines()
            .iter()
            .any(|l| l.contains(&format!("replica {standby_name} took over"))),
        "the notice names the replica:\n{text}"
    );
    assert_eq!(shared.leader()?.0, 2, "one takeover, one new epoch");
    for (who, log) in [("the killed one", active.stderr()), ("the standby", standby.stderr())] {
        assert!(
            !log.contains(baton_e2e::postgres::PASSWORD),
            "{who} logged the password"
        );
    }
    let kinds = shared.kinds()?;
    assert_eq!(kinds.iter().filter(|k| *k == "succeeded").count(), 1, "{kinds:?}");
    // The journal verifies, read through `baton audit` on the PostgreSQL store.
    let config = stack.config.with_file_name(format!("baton-{standby_name}.toml"));
    let (status, stdout, stderr) = baton_e2e::baton::run(
        &["audit", "all", "--config", config.to_str().expect("UTF-8")],
        Duration::from_secs(30),
    )?;
    assert!(status.success(), "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout)?;
    assert_eq!(doc["chain"]["intact"], true, "{stdout}");
    Ok(())
}

#[test]
fn a_frozen_leader_is_deposed_and_when_it_wakes_commits_nothing_posts_nothing_and_stands_by() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let stack = stack(&pg, "frozen")?;
    let mut shared = Shared::connect(&pg, "frozen")?;
    let ((mut active, active_name), (standby, standby_name)) = both(&stack, &mut shared)?;
    run_until_route_step(&stack, &pg, "frozen", &mut active)?;
    // SAFETY: kill with the pid of our own child and a valid signal.
    unsafe { libc::kill(active.pid() as i32, libc::SIGSTOP) };
    let frozen = Instant::now();
    shared.wait_leader(standby_name, T)?;
    eprintln!(
        "takeover from a frozen leader (2 s lease): leading after {:?}",
        frozen.elapsed()
    );
    standby.wait_for("#1 succeeded in", T)?;
    let journal = shared.kinds()?;
    let said = active.lines();
    // SAFETY: as above.
    unsafe { libc::kill(active.pid() as i32, libc::SIGCONT) };
    shared.wait(&format!("{active_name} is back, standing by"), T, |s| {
        Ok(s.connected(active_name)? && s.leader()?.1.as_deref() == Some(standby_name))
    })?;
    let deadline = Instant::now() + T;
    while !active.stderr().contains("stepped down") && !active.stderr().contains("stopped acting") {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the woken replica never said it stepped down:\n{}",
            active.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(shared.kinds()?, journal, "the woken replica committed nothing");
    assert_eq!(active.lines(), said, "the woken replica posted nothing");
    assert_eq!(
        shared.leader()?.1.as_deref(),
        Some(standby_name),
        "and it did not take the lead back"
    );
    each_action_started_once(&stack)?;
    Ok(())
}

#[test]
fn postgres_restarted_mid_run_the_run_completes_with_nothing_doubled() -> anyhow::Result<()> {
    let mut pg = Postgres::start()?;
    let stack = stack(&pg, "restarted")?;
    let mut shared = Shared::connect(&pg, "restarted")?;
    let ((mut active, _), (mut standby, _)) = both(&stack, &mut shared)?;
    run_until_route_step(&stack, &pg, "restarted", &mut active)?;
    pg.restart()?;
    let mut shared = Shared::connect(&pg, "restarted")?;
    shared.wait("the run finished", T, |s| Ok(s.count("succeeded")? == 1))?;
    shared.wait("every message delivered", T, |s| Ok(s.undelivered()? == 0))?;
    let mut lines = active.lines();
    lines.extend(standby.lines());
    let text = lines.join("\n");
    assert_eq!(count(&lines, "#1 succeeded in"), 1, "{text}");
    each_action_started_once(&stack)?;
    assert!(shared.leader()?.0 >= 2, "leadership was taken again after the restart");
    active.close_stdin();
    standby.close_stdin();
    Ok(())
}

#[test]
fn a_sqlite_journal_with_a_run_in_flight_migrates_and_the_run_resumes_on_postgres() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    pg.create_db("migrated")?;
    // First on SQLite: the run stops (SIGKILL) while Set-CsSite runs at the agent.
    let stack = Stack::start(StackOptions {
        sim_args: vec!["--delay-ms".into(), "1000".into()],
        ..StackOptions::default()
    })?;
    let mut sqlite = stack.start_bot()?;
    sqlite.send("alice> !failover xmpp EdgePool2 drill")?;
    sqlite.wait_for("Expires at", T)?;
    sqlite.send("bob> !approve 1")?;
    let deadline = Instant::now() + T;
    while starts(&stack, "mgmt1.contoso.test", "route.set")?.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "Set-CsSite never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    baton_e2e::baton::wait_outbox_recorded(&stack.store, T)?;
    sqlite.kill9();
    // Then onto PostgreSQL, and a replica there.
    let config = stack.config.with_file_name("baton-pg.toml");
    let text = std::fs::read_to_string(&stack.config)? + "\n" + &store_section(&pg, "migrated", "2s");
    std::fs::write(&config, text)?;
    let (status, stdout, stderr) = baton_e2e::baton::run(
        &[
            "store",
            "migrate",
            "--from",
            stack.store.to_str().expect("UTF-8"),
            "--config",
            config.to_str().expect("UTF-8"),
        ],
        T,
    )?;
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("the hash chain verifies on both sides"), "{stdout}");
    let mut replica = start_replica(&config, "site1")?;
    replica.wait_for("#1 succeeded in", T)?;
    let mut lines = sqlite.lines();
    lines.extend(replica.lines());
    let text = lines.join("\n");
    for k in 1..=8 {
        assert_eq!(
            count(&lines, &format!("#1 [{k}/8]")),
            1,
            "step {k} reported exactly once:\n{text}"
        );
    }
    each_action_started_once(&stack)?;
    let route = starts(&stack, "mgmt1.contoso.test", "route.set")?;
    assert!(
        route[0].ends_with("/t1"),
        "the key from SQLite, reused on PostgreSQL: {route:?}"
    );
    replica.close_stdin();
    Ok(())
}

/// GET `path` on `listen`: `Ok(body)` for 200, `Err("<status>: <body>")` otherwise.
fn get(listen: std::net::SocketAddr, path: &str) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let url = baton::server::CheckUrl::for_listener(listen, path);
    runtime.block_on(baton::server::check(&url, Duration::from_secs(2)))
}

/// Waits (bounded) until `GET path` answers as `want` says.
fn wait_answer(
    listen: std::net::SocketAddr,
    path: &str,
    what: &str,
    want: impl Fn(&Result<String, String>) -> bool,
) -> anyhow::Result<Result<String, String>> {
    let deadline = Instant::now() + T;
    loop {
        let answer = get(listen, path);
        if want(&answer) {
            return Ok(answer);
        }
        anyhow::ensure!(Instant::now() < deadline, "{what}: last answer {answer:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn each_replica_answers_health_and_only_the_leader_is_ready() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let stack = stack(&pg, "health")?;
    let mut shared = Shared::connect(&pg, "health")?;
    let port = || -> anyhow::Result<u16> { Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()) };
    let listen1: std::net::SocketAddr = ([127, 0, 0, 1], port()?).into();
    let listen2: std::net::SocketAddr = ([127, 0, 0, 1], port()?).into();
    let mut a = start_replica_listening(&stack.config, "site1", listen1)?;
    shared.wait_leader("site1", T)?;
    let mut b = start_replica_listening(&stack.config, "site2", listen2)?;
    shared.wait("site2 stands by", T, |s| s.connected("site2"))?;
    // The leader is ready once its agents answer; the standby is alive but not ready, and says
    // who leads.
    let ready = wait_answer(listen1, "/readyz", "the leader never became ready", |a| a.is_ok())?;
    let ready = ready.expect("ready");
    assert!(
        ready.contains("replica: ok\n") && ready.contains("agent:mgmt1.contoso.test: ok\n"),
        "{ready}"
    );
    let standby = wait_answer(listen2, "/readyz", "the standby never said it stands by", |a| {
        a.as_ref().is_err_and(|e| e.contains("replica: standby: site1 leads"))
    })?;
    assert!(standby.as_ref().is_err_and(|e| e.starts_with("503")), "{standby:?}");
    for listen in [listen1, listen2] {
        assert_eq!(
            get(listen, "/healthz").map(|b| b.trim().to_string()),
            Ok("ok".to_string())
        );
    }
    let metrics = get(listen1, "/metrics").map_err(anyhow::Error::msg)?;
    assert!(metrics.contains("baton_build_info"), "{metrics}");
    // The leader goes; the standby takes over and becomes ready.
    a.kill9();
    shared.wait_leader("site2", T)?;
    let ready = wait_answer(listen2, "/readyz", "the new leader never became ready", |a| {
        a.as_ref().is_ok_and(|b| b.contains("replica: ok\n"))
    })?;
    assert!(ready.is_ok_and(|b| b.starts_with("ready\n")));
    b.terminate()?;
    assert!(b.wait_exit(T)?.success(), "{}", b.stderr());
    Ok(())
}

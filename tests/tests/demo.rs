//! End-to-end tests of `baton demo`: the user's story through the real binary, crash safety
//! under SIGKILL at several points, the audit of a tampered journal, and bad configurations.

use baton_e2e::baton::{Baton, executions, run, started_not_ended, wait_action_in_flight, wait_outbox_recorded};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

#[test]
fn the_story_through_the_demo() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("baton.sqlite");
    let mut b = Baton::demo(&store, &["--delay", "200ms"])?;
    b.send("alice> !failover xmpp EdgePool2 pool 1 lost power in DC1")?;
    b.wait_for("Expires at", T)?;
    b.send("alice> !approve 1")?;
    b.send("mallory> !approve 1")?;
    b.send("bob> !approve 1")?;
    b.wait_for("[3/8]", T)?;
    b.send("carol> !status 1")?;
    b.close_stdin();
    assert!(b.wait_exit(T)?.success());
    let lines = b.lines();
    let text = lines.join("\n");
    assert!(text.contains("Plan (sha256 "), "{text}");
    assert!(text.contains("Refused (!approve 1): you requested this; another person must approve it."));
    assert!(text.contains("Refused (!approve 1): mallory may not approve: only members of edge-admins may."));
    assert!(text.contains("#1 approved by bob (2 people: alice and bob). Running."));
    // Every step reported once, in order.
    let positions: Vec<usize> = (1..=8)
        .map(|k| {
            lines
                .iter()
                .position(|l| l.contains(&format!("#1 [{k}/8]")))
                .expect("every step reported")
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "steps out of order:\n{text}");
    for k in 1..=8 {
        assert_eq!(count(&lines, &format!("#1 [{k}/8]")), 1, "step {k} reported once");
    }
    // The status table mid-run, then the summary naming requester, approver and duration.
    assert!(text.contains("#1 running, step "), "{text}");
    let summary = lines
        .iter()
        .find(|l| l.contains("#1 succeeded in"))
        .expect("a final summary");
    assert!(
        summary.contains("Requested by alice") && summary.contains("approved by bob"),
        "{summary}"
    );
    // The agent steps went through real agent processes: their hosts' simulated state shows it.
    let host = |name: &str| -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_slice(&std::fs::read(
            dir.path().join("fleet").join(name).join("host.json"),
        )?)?)
    };
    let mgmt = host("mgmt1.contoso.com")?;
    assert_eq!(mgmt["sites"]["Site2"], "EdgeServer:edgepool2.contoso.com");
    for edge in ["edge2a.contoso.com", "edge2b.contoso.com"] {
        let h = host(edge)?;
        let actions: Vec<&str> = h["executions"]
            .as_array()
            .expect("executions")
            .iter()
            .filter_map(|x| x["action"].as_str())
            .collect();
        assert_eq!(actions, ["services.stop", "services.start"], "{edge}");
        assert!(
            h["services"]
                .as_object()
                .expect("services")
                .values()
                .all(|v| v == "Running"),
            "{edge}: {h}"
        );
    }
    let untouched = host("edge1a.contoso.com")?;
    assert_eq!(untouched["executions"].as_array().map_or(0, Vec::len), 0, "{untouched}");
    Ok(())
}

/// Starts a run with slow steps, SIGKILLs the demo when `kill_at` appears (and, past the
/// approval, once the simulation's record shows an action in flight), restarts it on the same
/// store with `after` as input, and checks that no key executed twice, counting executions where
/// they start. An action cut short by the kill is reported interrupted and never run again under
/// its key; `!retry` runs it as a new attempt, and then every status line appears exactly once
/// but the interrupted step's failure.
fn crash_at(kill_at: &str, after: &[&str]) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("baton.sqlite");
    let record = dir.path().join("simulation.sqlite");
    let mut first = Baton::demo(&store, &["--simulate", "--delay", "400ms"])?;
    first.send("alice> !failover xmpp EdgePool2 drill")?;
    first.wait_for("Expires at", T)?;
    if kill_at != "before approval" {
        first.send("bob> !approve 1")?;
        first.wait_for(kill_at, T)?;
        wait_action_in_flight(&record, T)?;
    }
    wait_outbox_recorded(&store, T)?;
    first.kill9();
    let cut_short = started_not_ended(&record)?;
    let mut second = Baton::demo(&store, &["--simulate", "--delay", "400ms"])?;
    for line in after {
        second.send(line)?;
    }
    if !cut_short.is_empty() {
        second.wait_for("stopped at step", T)?;
        second.send("carol> !retry 1")?;
    }
    second.close_stdin();
    assert!(second.wait_exit(T)?.success(), "{}", second.stderr());
    let mut lines = first.lines();
    lines.extend(second.lines());
    let text = lines.join("\n");
    let failed = lines
        .iter()
        .filter(|l| l.contains("#1 [") && l.contains(" FAILED"))
        .count();
    assert_eq!(
        failed,
        usize::from(!cut_short.is_empty()),
        "only an action cut short fails (killed at {kill_at}, cut short: {cut_short:?}):\n{text}"
    );
    if !cut_short.is_empty() {
        assert!(text.contains(baton_actions::simulated::INTERRUPTED), "{text}");
    }
    for k in 1..=8 {
        let reported = lines
            .iter()
            .filter(|l| l.contains(&format!("#1 [{k}/8]")) && !l.contains(" FAILED"))
            .count();
        assert_eq!(
            reported, 1,
            "step {k} must be reported done exactly once (killed at {kill_at}):\n{text}"
        );
    }
    assert_eq!(count(&lines, "#1 succeeded in"), 1, "{text}");
    assert_eq!(count(&lines, "Run #1 requested by alice"), 1, "{text}");
    let runs = executions(&record)?;
    assert!(runs.iter().all(|(_, n)| *n == 1), "a key executed twice: {runs:?}");
    assert_eq!(
        runs.len(),
        12 + cut_short.len(),
        "3 health, 2 stops, route, A, SRV, port, 2 starts, verify, and a new attempt of what was cut short ({cut_short:?}): got {runs:?}"
    );
    for key in &cut_short {
        let retried = key.replace("/t1", "/t2");
        assert!(
            runs.iter().any(|(k, _)| *k == retried),
            "{key} was retried as {retried}: {runs:?}"
        );
    }
    Ok(())
}

#[test]
fn crash_before_approval() -> anyhow::Result<()> {
    crash_at("before approval", &["bob> !approve 1"])
}

#[test]
fn crash_mid_first_step() -> anyhow::Result<()> {
    crash_at("Running.", &[])
}

#[test]
fn crash_mid_run() -> anyhow::Result<()> {
    crash_at("#1 [2/8]", &[])
}

#[test]
fn crash_later_in_the_run() -> anyhow::Result<()> {
    crash_at("#1 [6/8]", &["carol> !status 1"])
}

#[test]
fn crash_after_an_action_executed_but_before_its_outcome_was_journaled() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("baton.sqlite");
    let mut first = Baton::demo(
        &store,
        &[
            "--simulate",
            "--delay",
            "100ms",
            "--crash-after",
            "services.stop@edge2b",
        ],
    )?;
    first.send("alice> !failover xmpp EdgePool2 drill")?;
    first.send("bob> !approve 1")?;
    let status = first.wait_exit(T)?;
    assert!(!status.success(), "the drill aborts the process");
    assert!(
        first
            .stderr()
            .contains("simulated crash after executing services.stop on edge2b"),
        "{}",
        first.stderr()
    );
    assert_eq!(
        count(&first.lines(), "#1 [2/8]"),
        0,
        "the step's outcome was never journaled"
    );
    // The other host's stop was in flight when the process died: it is interrupted, not run
    // again under its key, and `!retry` runs it as a new attempt.
    let record = dir.path().join("simulation.sqlite");
    let cut_short = started_not_ended(&record)?;
    let mut second = Baton::demo(&store, &["--simulate", "--delay", "100ms"])?;
    if !cut_short.is_empty() {
        second.wait_for("stopped at step 2/8", T)?;
        second.send("carol> !retry 1")?;
    }
    second.close_stdin();
    assert!(second.wait_exit(T)?.success(), "{}", second.stderr());
    let lines = second.lines();
    let text = lines.join("\n");
    let edge2a_done = if cut_short.is_empty() {
        "#1 [2/8] services: edge2a ok"
    } else {
        "#1 [2/8] services (attempt 2): edge2a ok"
    };
    assert_eq!(count(&lines, edge2a_done), 1, "{text}");
    assert_eq!(count(&lines, "#1 succeeded in"), 1, "{text}");
    let runs = executions(&record)?;
    assert_eq!(runs.len(), 12 + cut_short.len(), "{runs:?}");
    assert!(runs.iter().all(|(_, n)| *n == 1), "a key executed twice: {runs:?}");
    Ok(())
}

#[test]
fn audit_detects_an_edited_journal_row() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("baton.sqlite");
    let mut b = Baton::demo(&store, &["--delay", "10ms"])?;
    b.send("alice> !failover xmpp EdgePool2 drill")?;
    b.send("bob> !approve 1")?;
    b.close_stdin();
    assert!(b.wait_exit(T)?.success());
    let s = store.to_str().expect("utf-8 path");
    let (status, out, _) = run(&["audit", "1", "--store", s], T)?;
    assert!(status.success(), "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(doc["chain"]["intact"], true);
    let kinds: Vec<&str> = doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds.first(), Some(&"requested"));
    assert_eq!(kinds.last(), Some(&"succeeded"));
    // Someone with file access changes who approved.
    let conn = rusqlite::Connection::open(&store)?;
    let seq: i64 = conn.query_row("SELECT seq FROM events WHERE kind = 'approved'", [], |r| r.get(0))?;
    conn.execute_batch("DROP TRIGGER events_no_update; UPDATE events SET body = replace(body, '\"bob\"', '\"carol\"') WHERE kind = 'approved';")?;
    drop(conn);
    let (status, out, err) = run(&["audit", "1", "--store", s], T)?;
    assert_eq!(status.code(), Some(2), "{out}\n{err}");
    let doc: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(doc["chain"]["intact"], false);
    let problem = format!("row {seq} (approved) was altered");
    assert!(
        doc["chain"]["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains(&problem)),
        "{out}"
    );
    assert!(err.contains(&problem), "{err}");
    // And Baton refuses to act on it.
    let (status, _, err) = run(&["demo", "--store", s], T)?;
    assert!(!status.success());
    assert!(
        err.contains("the journal does not verify") && err.contains(&problem),
        "{err}"
    );
    Ok(())
}

#[test]
fn check_config_lists_every_error_and_echoes_no_secret() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let example = include_str!("../../examples/contoso.toml");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, example)?;
    let (status, out, err) = run(&["check-config", good.to_str().expect("utf-8")], T)?;
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("ok (2 pools, 4 people, route held by EdgePool1)"), "{out}");
    assert!(
        out.contains("note: chat.console: not trusted, so `baton run` does not read commands from its terminal"),
        "check-config says what an untrusted console means: {out}"
    );
    // `baton run` on the example: the console is not trusted, so nobody at the bot's terminal
    // can type as alice and bob; with no other platform, it refuses to start and says why.
    let (status, out, err) = run(&["run", "--config", good.to_str().expect("utf-8")], T)?;
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(err.contains("no chat platform is enabled for `baton run`"), "{err}");
    assert!(
        err.contains("Set trusted = true only for a local operator's console"),
        "{err}"
    );
    assert!(!out.contains("Run #1"), "{out}");

    let bad = example
        .replace(
            "tsig_secret = { env = \"BATON_TSIG_SECRET\" }",
            "tsig_secret = \"Tm90QVJlYWxTZWNyZXQ=\"",
        )
        .replace(
            "servers = [\"edge2a.contoso.com\", \"edge2b.contoso.com\"]",
            "servers = [\"edge2a\", \"edge2b.contoso.com\"]",
        )
        .replace("expiry = \"15m\"", "expiry = 15")
        .replace(
            "[chat.xmpp]\nenabled = false",
            "[chat.xmpp]\nenabled = true\ncolour = \"blue\"",
        );
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, bad)?;
    let (status, out, err) = run(&["check-config", path.to_str().expect("utf-8")], T)?;
    assert_eq!(status.code(), Some(1));
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("bad.toml: 5 errors"), "{err}");
    for expected in [
        "policy.expiry: invalid type: integer `15`, expected a string",
        "inventory.pools.EdgePool2.servers: 'edge2a' is not a valid host name: it needs a domain (e.g. edge2a.contoso.com)",
        "dns.tsig_secret: secrets may not be written in the configuration file",
        "chat.xmpp.password: environment variable BATON_XMPP_PASSWORD is not set",
        "chat.xmpp.colour: unknown key",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(
        err.lines().skip(1).all(|l| l.trim_start().starts_with("line ")),
        "every error has a line:\n{err}"
    );
    assert!(
        !err.contains("Tm90QVJlYWxTZWNyZXQ") && !err.contains("panicked"),
        "{err}"
    );

    let (status, _, err) = run(&["check-config", "/nonexistent/baton.toml"], T)?;
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("cannot read the file"), "{err}");
    Ok(())
}

#[test]
fn a_rehearsed_agent_failure_is_retried_through_the_agents() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("baton.sqlite");
    let mut b = Baton::demo(&store, &["--delay", "50ms", "--fail", "services.start@edge2b:1"])?;
    b.send("alice> !failover xmpp EdgePool2 drill")?;
    b.send("bob> !approve 1")?;
    b.wait_for("#1 stopped at step 7/8 (services)", T)?;
    let failed = b
        .lines()
        .into_iter()
        .find(|l| l.contains("#1 [7/8] services FAILED"))
        .expect("the step's line");
    assert!(
        failed.contains("edge2a ok") && failed.contains("edge2b FAILED"),
        "{failed}"
    );
    b.send("carol> !retry 1")?;
    b.close_stdin();
    assert!(b.wait_exit(T)?.success(), "{}", b.stderr());
    assert_eq!(count(&b.lines(), "#1 succeeded in"), 1, "{}", b.lines().join("\n"));
    // The failure came from edge2b's simulator, behind its agent, and the retry ran it again there.
    let edge2b: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("fleet/edge2b.contoso.com/host.json"))?)?;
    let starts: Vec<&str> = edge2b["executions"]
        .as_array()
        .expect("executions")
        .iter()
        .filter(|x| x["action"] == "services.start")
        .filter_map(|x| x["status"].as_str())
        .collect();
    assert_eq!(starts, ["failed", "ok"]);
    let (status, _, err) = run(&["demo", "--fail", "health@edge2a"], T)?;
    assert!(
        !status.success() && err.contains("--fail health needs --simulate"),
        "{err}"
    );
    Ok(())
}

/// `!status xmpp` in the demo is simulated from the journal and says so: the example's addresses
/// are documentation ranges, and the demo sends nothing beyond this machine (no resolver asked,
/// no pool probed). After a failover it shows the route, the A record and the services where the
/// run left them.
#[test]
fn the_demo_simulates_the_outside_in_view_and_says_so() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("baton.sqlite");
    let mut demo = Baton::demo(&store, &["--simulate", "--delay", "10ms"])?;
    demo.send("carol> !status xmpp")?;
    demo.wait_for("Simulated outside-in view", T)?;
    demo.send("alice> !failover xmpp EdgePool2 drill")?;
    demo.wait_for("Expires at", T)?;
    demo.send("bob> !approve 1")?;
    demo.wait_for("#1 succeeded", T)?;
    demo.send("carol> !status xmpp")?;
    demo.close_stdin();
    assert!(demo.wait_exit(T)?.success(), "{}", demo.stderr());
    let text = demo.lines().join("\n");
    let views: Vec<&str> = text.split("Simulated outside-in view").skip(1).collect();
    assert_eq!(views.len(), 2, "{text}");
    assert!(
        views[0].contains("held by EdgePool1") && views[0].contains("-> 203.0.113.10 (EdgePool1)"),
        "{text}"
    );
    assert!(
        views[1].contains("held by EdgePool2") && views[1].contains("-> 203.0.113.20 (EdgePool2)"),
        "{text}"
    );
    assert!(
        !text.contains("asked resolver") && !text.contains("probed from"),
        "nothing was looked up for real:\n{text}"
    );
    Ok(())
}

//! Runs through `baton run` and real agents: an agent down during a step fails the step after
//! bounded retries, naming the host, and `!retry` completes the run once it is back; the bot
//! killed mid-step while the agents keep working resumes with the same idempotency keys, and
//! nothing runs twice.

use baton_actions::Fqdn;
use baton_e2e::stack::{Stack, StackOptions};
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

fn slow() -> StackOptions {
    StackOptions {
        sim_args: vec!["--delay-ms".into(), "1000".into()],
        ..StackOptions::default()
    }
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

/// Every simulator execution of `host` for `action`, by key.
fn runs_of(stack: &Stack, host: &str, action: &str) -> anyhow::Result<Vec<String>> {
    Ok(stack
        .fleet
        .executions(&Fqdn::parse(host)?)?
        .into_iter()
        .filter(|(_, a, _)| a == action)
        .map(|(k, _, _)| k)
        .collect())
}

#[test]
fn an_agent_down_fails_its_step_naming_the_host_and_retry_completes_the_run() -> anyhow::Result<()> {
    let mut stack = Stack::start(slow())?;
    let edge2b = Fqdn::parse("edge2b.contoso.test")?;
    let mut bot = stack.start_bot()?;
    bot.send("alice> !failover xmpp EdgePool2 drill")?;
    bot.wait_for("Expires at", T)?;
    bot.send("bob> !approve 1")?;
    // edge2b goes down after its services stopped, before step 7 starts them again.
    bot.wait_for("#1 [2/8] services:", T)?;
    stack.fleet.kill(&edge2b)?;
    bot.wait_for("#1 stopped at step 7/8 (services)", T)?;
    let failed = bot
        .lines()
        .into_iter()
        .find(|l| l.contains("#1 [7/8] services FAILED"))
        .expect("the step's line");
    assert!(failed.contains("edge2a ok"), "{failed}");
    assert!(
        failed.contains("edge2b FAILED") && failed.contains("edge2b.contoso.test: agent unreachable after 3 attempts"),
        "{failed}"
    );
    stack.fleet.restart(&edge2b)?;
    bot.send("carol> !retry 1")?;
    bot.wait_for("#1 succeeded in", T)?;
    let lines = bot.lines();
    assert_eq!(
        count(&lines, "#1 [7/8] services (attempt 2): edge2a ok"),
        1,
        "{}",
        lines.join("\n")
    );
    // edge2a's start ran once (attempt 1); edge2b's ran once (attempt 2), after it came back.
    let a = runs_of(&stack, "edge2a.contoso.test", "services.start")?;
    let b = runs_of(&stack, "edge2b.contoso.test", "services.start")?;
    assert!(a.len() == 1 && a[0].ends_with("/t1"), "{a:?}");
    assert!(b.len() == 1 && b[0].ends_with("/t2"), "{b:?}");
    Ok(())
}

#[test]
fn the_bot_killed_mid_step_resumes_with_the_same_keys_and_nothing_runs_twice() -> anyhow::Result<()> {
    let stack = Stack::start(slow())?;
    let mut first = stack.start_bot()?;
    first.send("alice> !failover xmpp EdgePool2 drill")?;
    first.wait_for("Expires at", T)?;
    first.send("bob> !approve 1")?;
    // Step 3 (Set-CsSite on mgmt1, 1 s) is in flight at the agent when the bot dies: killed
    // when mgmt1's journal says its key is running.
    first.wait_for("#1 [2/8] services:", T)?;
    let mgmt1 = Fqdn::parse("mgmt1.contoso.test")?;
    let in_flight = stack.fleet.wait_action_running(&mgmt1, "route.set", T)?;
    first.kill9();
    assert_eq!(
        stack
            .fleet
            .journal_row(&mgmt1, &in_flight)?
            .map(|(state, _)| state)
            .as_deref(),
        Some("running"),
        "the bot died while route.set ran at the agent"
    );
    let mut second = stack.start_bot()?;
    second.wait_for("#1 succeeded in", T)?;
    second.close_stdin();
    let mut lines = first.lines();
    lines.extend(second.lines());
    let text = lines.join("\n");
    for k in 1..=8 {
        assert_eq!(
            count(&lines, &format!("#1 [{k}/8]")),
            1,
            "step {k} reported exactly once:\n{text}"
        );
    }
    let route = runs_of(&stack, "mgmt1.contoso.test", "route.set")?;
    assert_eq!(route.len(), 1, "Set-CsSite ran once: {route:?}");
    assert!(route[0].ends_with("/t1"), "with the original key: {route:?}");
    for host in ["edge2a.contoso.test", "edge2b.contoso.test"] {
        assert_eq!(runs_of(&stack, host, "services.stop")?.len(), 1, "{host}");
        assert_eq!(runs_of(&stack, host, "services.start")?.len(), 1, "{host}");
    }
    Ok(())
}

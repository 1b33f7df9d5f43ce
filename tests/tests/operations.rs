//! Operating Baton, end to end: a real Prometheus scrapes `baton run` during a drill in real XMPP
//! rooms (with real agents, BIND9 and Prosody) and its HTTP API returns the run, step, outbox,
//! chat and agent metrics; `/readyz` and `baton healthcheck` answer; the JSON log lines of the
//! drill parse one by one, carry run/step/host fields and never a secret. Also: the systemd
//! units pass `systemd-analyze verify` and its offline security score, the alert rules pass
//! `promtool`, and `--version` names the commit.

use baton::server::{CheckUrl, check};
use baton_e2e::baton::{Baton, bin, run};
use baton_e2e::prometheus::{Prometheus, Sample};
use baton_e2e::prosody::INCIDENT_ROOM;
use baton_e2e::room::Follower;
use baton_e2e::stack::{HOSTS, Stack, StackOptions};
use baton_e2e::xmpp_client::JoinHistory;
use secrecy::ExposeSecret;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

fn one(samples: &[Sample]) -> Option<f64> {
    match samples {
        [s] => Some(s.value),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_is_scraped_by_prometheus_and_logged_as_json_lines() -> anyhow::Result<()> {
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let stack = tokio::task::block_in_place(|| {
        Stack::start(StackOptions {
            xmpp_chat: true,
            sim_args: vec!["--delay-ms".into(), "300".into()],
            extra_config: format!(
                "[server]\nlisten = \"{listen}\"\ncheck_interval = \"500ms\"\n\n\
                 [log]\nformat = \"json\"\nfilter = \"info,baton=debug,baton_actions=debug\"\n"
            ),
            ..StackOptions::default()
        })
    })?;
    let config = stack.config.to_str().expect("a UTF-8 path").to_string();
    let bot = tokio::task::block_in_place(|| Baton::start_with_config_logs(&["run", "--config", &config]))?;
    let prometheus = Prometheus::start(&[listen]).await?;

    // Ready once the store is writable, the XMPP rooms joined and all five agents answer.
    let readyz = CheckUrl::for_listener(listen, "/readyz");
    let deadline = Instant::now() + T;
    let ready = loop {
        match check(&readyz, Duration::from_secs(2)).await {
            Ok(body) => break body,
            Err(why) if Instant::now() > deadline => anyhow::bail!("never ready: {why}\n{}", bot.stderr()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert!(ready.starts_with("ready\n"), "{ready}");
    assert!(
        ready.contains("chat:xmpp: ok\n") && ready.contains("store: ok\n"),
        "{ready}"
    );
    for h in HOSTS {
        assert!(ready.contains(&format!("agent:{h}: ok\n")), "{ready}");
    }

    // The drill, in the incident room.
    let server = &stack.prosody;
    let mut alice = Follower::join(server, "alice", INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    alice.wait_for_bot(INCIDENT_ROOM).await?;
    let mut bob = Follower::join(server, "bob", INCIDENT_ROOM, "bob", JoinHistory::None).await?;
    alice.say(INCIDENT_ROOM, "!failover xmpp EdgePool2 drill").await?;
    alice.bot_says(INCIDENT_ROOM, "Run #1 requested by alice", T).await?;
    alice.say(INCIDENT_ROOM, "!approve 1").await?;
    alice.bot_says(INCIDENT_ROOM, "Refused (!approve 1)", T).await?;
    bob.say(INCIDENT_ROOM, "!approve 1").await?;
    alice.bot_says(INCIDENT_ROOM, "#1 succeeded in ", T).await?;

    // What Prometheus scraped, through its HTTP API.
    let is = |want: f64| move |s: &[Sample]| one(s) == Some(want);
    prometheus
        .wait_for(r#"baton_runs_total{outcome="succeeded"}"#, T, is(1.0))
        .await?;
    prometheus.wait_for("baton_runs_requested_total", T, is(1.0)).await?;
    prometheus.wait_for("baton_approvals_total", T, is(1.0)).await?;
    prometheus
        .wait_for(
            r#"baton_refusals_total{reason="self_approval",command="approve"}"#,
            T,
            is(1.0),
        )
        .await?;
    prometheus
        .wait_for("baton_time_to_approval_seconds_count", T, is(1.0))
        .await?;
    for step in [
        "precheck",
        "services_stop",
        "route_set",
        "dns_a",
        "dns_srv",
        "port_check",
        "services_start",
        "verify",
    ] {
        prometheus
            .wait_for(
                &format!(r#"baton_step_duration_seconds_count{{step="{step}",outcome="ok"}}"#),
                T,
                is(1.0),
            )
            .await?;
    }
    // Stopping services takes the simulator's 300 ms on each Edge server, in parallel.
    let stop = prometheus
        .query(r#"baton_step_duration_seconds_sum{step="services_stop"}"#)
        .await?;
    assert!(one(&stop).is_some_and(|s| (0.3..30.0).contains(&s)), "{stop:?}");
    let by_host = prometheus
        .wait_for(
            r#"baton_action_duration_seconds_count{step="services_start"}"#,
            T,
            |s| s.len() == 2,
        )
        .await?;
    let mut hosts: Vec<&str> = by_host.iter().filter_map(|s| s.labels["host"].as_str()).collect();
    hosts.sort();
    assert_eq!(hosts, ["edge2a", "edge2b"]);
    prometheus
        .wait_for(r#"baton_dns_updates_total{record="A",result="ok"}"#, T, is(1.0))
        .await?;
    // Every status message was delivered: the xmpp outbox is empty, and says so.
    prometheus
        .wait_for(r#"baton_outbox_messages{platform="xmpp"}"#, T, is(0.0))
        .await?;
    prometheus
        .wait_for(
            r#"baton_outbox_oldest_undelivered_age_seconds{platform="xmpp"}"#,
            T,
            is(0.0),
        )
        .await?;
    prometheus
        .wait_for(r#"baton_chat_connected{platform="xmpp"}"#, T, is(1.0))
        .await?;
    prometheus
        .wait_for("sum(baton_agent_up)", T, is(HOSTS.len() as f64))
        .await?;
    let info = prometheus.query("baton_build_info").await?;
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0].labels["version"], env!("CARGO_PKG_VERSION"), "{info:?}");
    assert!(
        info[0].labels["commit"].as_str().is_some_and(|c| !c.is_empty()),
        "{info:?}"
    );

    // The container's health check, against the running bot.
    let (status, out, err) = tokio::task::block_in_place(|| run(&["healthcheck", "--config", &config], T))?;
    assert!(status.success(), "{out}{err}");
    assert_eq!(out, "ok");
    let url = format!("http://{listen}/readyz");
    let (status, out, err) = tokio::task::block_in_place(|| run(&["healthcheck", "--url", &url], T))?;
    assert!(status.success() && out.starts_with("ready"), "{out}{err}");
    let closed = format!("http://127.0.0.1:{}/healthz", free_port()?);
    let (status, _, err) = tokio::task::block_in_place(|| run(&["healthcheck", "--url", &closed], T))?;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("cannot connect"), "{err}");

    // The drill's log: JSON, one object per line, fields at the top level.
    let lines = bot.stderr_lines();
    assert!(lines.len() > 20, "{lines:#?}");
    let mut records = Vec::new();
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| anyhow::anyhow!("a log line is not JSON ({e}): {line}"))?;
        assert!(
            v["timestamp"].is_string() && v["level"].is_string() && v["message"].is_string(),
            "{line}"
        );
        records.push(v);
    }
    let starting = records
        .iter()
        .find(|r| r["message"] == "baton starting")
        .expect("the start is logged");
    assert_eq!(starting["version"], baton::VERSION);
    // Every line about an action names the run, the step and the host.
    for kind in ["action dispatched", "action finished"] {
        let about: Vec<&serde_json::Value> = records.iter().filter(|r| r["message"] == kind).collect();
        // The plan's 12 actions: 3 health checks (edge2a, edge2b, mgmt1), 2 stops, the route,
        // 2 DNS updates, the port probe, 2 starts and verify.
        assert_eq!(about.len(), 12, "{kind}: {about:#?}");
        for r in about {
            assert_eq!(r["run"], "#1", "{r}");
            assert!(r["step"].as_u64().is_some_and(|s| (1..=8).contains(&s)), "{r}");
            assert!(r["host"].as_str().is_some_and(|h| !h.is_empty()), "{r}");
            assert!(r["action"].is_string() && r["key"].is_string(), "{r}");
        }
    }
    let hosts_logged: std::collections::BTreeSet<&str> = records
        .iter()
        .filter(|r| r["message"] == "action dispatched")
        .filter_map(|r| r["host"].as_str())
        .collect();
    assert!(
        ["edge2a", "edge2b", "mgmt1", "dns", "bot"]
            .iter()
            .all(|h| hosts_logged.contains(h)),
        "{hosts_logged:?}"
    );
    // No secret in any line: the TSIG secret, the XMPP password, nor its SASL PLAIN encoding.
    let tsig = stack.bind.secret().to_string();
    let password = stack.prosody.password("baton")?.expose_secret().to_string();
    use base64::Engine as _;
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0baton\0{password}"));
    let all = lines.join("\n");
    for (name, secret) in [
        ("TSIG secret", &tsig),
        ("XMPP password", &password),
        ("SASL PLAIN", &plain),
    ] {
        assert!(secret.len() >= 8, "a real {name}");
        assert!(!all.contains(secret.as_str()), "the {name} appears in the logs");
    }
    drop(prometheus);
    drop(bot);
    Ok(())
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() -> anyhow::Result<()> {
    let units = workspace().join("packaging/systemd");
    let unit_names = ["baton.service", "baton-agent.service"];
    // A root with what the units name: the built binaries, kill for ExecReload, and systemd's
    // own units (the targets they order against). No running systemd is needed.
    let root = tempfile::Builder::new().prefix("baton-systemd-").tempdir()?;
    let r = root.path();
    let system = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("multi-user.target").exists())
        .expect("systemd's units are installed (Debian package systemd)");
    std::fs::create_dir_all(r.join("usr/lib/systemd"))?;
    let copied = Command::new("cp")
        .arg("-a")
        .arg(system)
        .arg(r.join("usr/lib/systemd/system"))
        .status()?;
    assert!(copied.success());
    for dir in ["usr/local/bin", "bin", "etc/systemd/system"] {
        std::fs::create_dir_all(r.join(dir))?;
    }
    std::fs::copy(bin("baton"), r.join("usr/local/bin/baton"))?;
    std::fs::copy(bin("baton-agent"), r.join("usr/local/bin/baton-agent"))?;
    let kill = ["/bin/kill", "/usr/bin/kill"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("kill is installed");
    std::fs::copy(kill, r.join("bin/kill"))?;
    let verify = |names: &[&str]| -> anyhow::Result<(bool, String)> {
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(format!("--root={}", r.display()))
            .args(names)
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    };
    for name in unit_names {
        std::fs::copy(units.join(name), r.join("etc/systemd/system").join(name))?;
    }
    let (ok, text) = verify(&unit_names)?;
    assert!(ok && text.trim().is_empty(), "systemd-analyze verify: {text}");

    // systemd's own exposure score, offline: 2.0 at most on its 0-10 scale ("OK").
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(format!("--root={}", r.display()))
        .args(unit_names)
        .output()?;
    let report = String::from_utf8_lossy(&security.stdout);
    assert!(security.status.success(), "exposure above 2.0:\n{report}");
    assert!(report.contains("Overall exposure level for baton.service"), "{report}");

    // The check bites: a misspelt key is reported (a warning, so the output must stay empty).
    let good = std::fs::read_to_string(units.join("baton.service"))?;
    let typo = good.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes");
    std::fs::write(r.join("etc/systemd/system/baton.service"), typo)?;
    let (_, text) = verify(&["baton.service"])?;
    assert!(text.contains("Unknown key"), "{text}");

    // The hardening the issue asks for.
    for unit in unit_names {
        let text = std::fs::read_to_string(units.join(unit))?;
        for line in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "Restart=on-failure",
        ] {
            assert!(text.lines().any(|l| l == line), "{unit} lacks {line}");
        }
        let user = unit.trim_end_matches(".service");
        assert!(text.contains(&format!("\nUser={user}\n")), "{unit}: a dedicated user");
        assert!(
            text.contains(&format!("\nReadWritePaths=/var/lib/{user}\n")),
            "{unit}: only its state folder is writable"
        );
    }
    assert!(good.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"));
    Ok(())
}

#[test]
fn the_alert_rules_pass_promtool() -> anyhow::Result<()> {
    let dir = workspace().join("packaging/prometheus");
    let check = Command::new("promtool")
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir)
        .output()?;
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(text.contains("SUCCESS: 5 rules found"), "{text}");
    // Each alert fires on the series that mean trouble, at the time it should.
    let test = Command::new("promtool")
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(&dir)
        .output()?;
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    // The alerts name only metrics Baton exports.
    let rules = std::fs::read_to_string(dir.join("alerts.yml"))?;
    let metrics = baton::metrics::Metrics::new();
    metrics.set_outbox(baton_policies::Platform::Xmpp, 0, None);
    metrics.set_chat_connected(baton_policies::Platform::Xmpp, true);
    metrics.set_agent("edge2a", Some(1));
    metrics.observe(&[baton::event::Recorded {
        at: "2030-01-01T00:00:00Z".parse().expect("a valid time"),
        event: baton::event::Event::Failed {
            run: baton::run::RunId(1),
            step: 6,
        },
    }]);
    let exported = metrics.encode();
    for metric in [
        "baton_outbox_oldest_undelivered_age_seconds",
        "baton_chat_connected",
        "baton_agent_up",
        "baton_runs_total",
    ] {
        assert!(rules.contains(metric), "{metric}");
        assert!(exported.contains(&format!("# TYPE {metric} ")), "{metric} is exported");
    }
    Ok(())
}

#[test]
fn version_names_the_commit() -> anyhow::Result<()> {
    let (status, out, err) = run(&["--version"], T)?;
    assert!(status.success(), "{err}");
    assert_eq!(out, format!("baton {}", baton::VERSION));
    let (status, agent, err) = run_agent(&["--version"])?;
    assert!(status, "{err}");
    assert!(
        agent.starts_with(&format!("baton-agent {} (", env!("CARGO_PKG_VERSION"))),
        "{agent}"
    );
    // In a git checkout, the commit is HEAD's (the binaries are built from the tree tested).
    if let Ok(head) = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(workspace())
        .output()
        && head.status.success()
    {
        let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
        assert!(out.ends_with(&format!("({head})")), "{out} vs HEAD {head}");
        assert!(agent.ends_with(&format!("({head})")), "{agent} vs HEAD {head}");
    }
    Ok(())
}

fn run_agent(args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let out = Command::new(bin("baton-agent")).args(args).output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

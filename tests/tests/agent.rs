//! The agent and the dispatcher end to end: real `baton-agent` processes on 127.0.0.1 with
//! certificates made per test, the `command` executor and the Lync simulator.

use anyhow::Result;
use baton_actions::dispatcher::AgentRoutes;
use baton_actions::inventory::Inventory;
use baton_actions::protocol::ActionAnswer;
use baton_actions::{Action, ActionReport, ActionRequest, Executor, Fqdn, IdempotencyKey, PoolName, SiteName, Target};
use baton_agent::INTERRUPTED;
use baton_e2e::agents::{AgentSpec, Fleet, SimExecution, gone_within, raw_request, sim_state};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn fqdn(s: &str) -> Fqdn {
    Fqdn::parse(s).expect("test names are valid")
}

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::parse(s).expect("test keys are valid")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn stop(host: &str) -> Action {
    Action::ServicesStop { host: fqdn(host) }
}

fn request(k: &str, action: Action, timeout: Duration) -> ActionRequest {
    ActionRequest {
        key: key(k),
        action,
        timeout,
    }
}

/// The Contoso inventory with Windows DNS on the management host, so that every step of the
/// runbook but the port check and the verification runs through an agent.
fn contoso() -> Inventory {
    let pool = |name: &str, site: &str, address: &str, servers: [&str; 2]| {
        json!({ "name": name, "site": site, "fqdn": format!("{}.contoso.com", name.to_ascii_lowercase()),
                "external_address": address, "servers": servers })
    };
    serde_json::from_value(json!({
        "sites": ["Site1", "Site2"],
        "pools": [
            pool("EdgePool1", "Site1", "203.0.113.10", ["edge1a.contoso.com", "edge1b.contoso.com"]),
            pool("EdgePool2", "Site2", "203.0.113.20", ["edge2a.contoso.com", "edge2b.contoso.com"]),
        ],
        "management_host": "mgmt1.contoso.com",
        "federation": { "domain": "contoso.com", "host": "xmpp.contoso.com", "srv": "_xmpp-server._tcp.contoso.com",
                        "port": 5269, "srv_priority": 10, "srv_weight": 10, "ttl": 300 },
        "dns": { "provider": "agent", "host": "mgmt1.contoso.com", "zone": "contoso.com" },
    }))
    .expect("the test inventory is valid")
}

/// One line describing the simulated hosts: each edge's services, each site's route, the
/// federation host's A records and the SRV records.
fn hosts_line(fleet: &Fleet) -> Result<String> {
    let mut parts = Vec::new();
    for host in ["edge2a.contoso.com", "edge2b.contoso.com"] {
        let state = fleet.sim(&fqdn(host))?;
        let services = state["services"].as_object().cloned().unwrap_or_default();
        let mut statuses: Vec<&str> = services.values().filter_map(Value::as_str).collect();
        statuses.dedup();
        parts.push(format!("{} {}", &host[..6], statuses.join("/")));
    }
    let mgmt = fleet.sim(&fqdn("mgmt1.contoso.com"))?;
    let sites = mgmt["sites"].as_object().cloned().unwrap_or_default();
    let routes: Vec<String> = sites
        .iter()
        .map(|(s, r)| format!("{s}={}", r.as_str().unwrap_or("-")))
        .collect();
    parts.push(routes.join(" "));
    parts.push(format!("A {}", mgmt["dns"]["xmpp.contoso.com"]["a"]));
    parts.push(format!("SRV {}", mgmt["dns"]["_xmpp-server._tcp.contoso.com"]["srv"]));
    Ok(parts.join(" | "))
}

fn outcome_line(action: &Action, report: &ActionReport) -> String {
    let status = if report.outcome.is_ok() { "ok" } else { "FAILED" };
    format!(
        "{} {status} {}",
        action.where_short(),
        without_commit(report.outcome.text())
    )
}

/// The agent's health answer names the commit it was built from (`baton-agent 0.1.0 (abc1234)`);
/// the transcript keeps the version and shows the commit as `(commit)`.
fn without_commit(text: &str) -> String {
    let marker = "baton-agent 0.1.0 (";
    match text.find(marker) {
        Some(at) => {
            let rest = &text[at + marker.len()..];
            let end = rest.find(')').map_or(rest.len(), |e| e + 1);
            format!("{}baton-agent 0.1.0 (commit){}", &text[..at], &rest[end..])
        }
        None => text.to_string(),
    }
}

#[test]
fn the_runbook_against_three_agents_changes_the_hosts_as_the_runbook_says() -> Result<()> {
    let mut mgmt = AgentSpec::new("mgmt1.contoso.com");
    let mut state = sim_state(&[("Site1", Some("EdgeServer:edgepool1.contoso.com")), ("Site2", None)]);
    state["dns"] = json!({ "xmpp.contoso.com": { "a": ["203.0.113.10"] } });
    mgmt.sim_state = Some(state);
    let fleet = Fleet::start_all(vec![
        AgentSpec::new("edge2a.contoso.com"),
        AgentSpec::new("edge2b.contoso.com"),
        mgmt,
    ])?;
    let dispatcher = fleet.dispatcher()?;
    let rt = runtime();
    let plan = baton_actions::plan::resolve(&contoso(), "EdgePool2", Some(&PoolName::parse("EdgePool1")?))?;

    let mut transcript = format!("before: {}\n", hosts_line(&fleet)?);
    let mut keys = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        // The step fans out in parallel over its agent actions; bot actions belong to the bot.
        let requests: Vec<ActionRequest> = step
            .actions
            .iter()
            .enumerate()
            .filter(|(_, a)| matches!(a.target(), Target::Agent(_)))
            .map(|(j, a)| ActionRequest {
                key: IdempotencyKey::new("e2e", 7, i, j, &a.where_short(), 1),
                action: a.clone(),
                timeout: Duration::from_secs(30),
            })
            .collect();
        if requests.is_empty() {
            transcript.push_str(&format!("{}. {}: runs on the bot\n", i + 1, step.kind.title()));
            continue;
        }
        let reports = rt.block_on(futures::future::join_all(
            requests.iter().map(|r| dispatcher.execute(r.clone())),
        ));
        let lines: Vec<String> = requests
            .iter()
            .zip(&reports)
            .map(|(r, rep)| outcome_line(&r.action, rep))
            .collect();
        transcript.push_str(&format!(
            "{}. {}: {}\n   {}\n",
            i + 1,
            step.kind.title(),
            lines.join("; "),
            hosts_line(&fleet)?
        ));
        keys.extend(
            requests
                .iter()
                .filter(|r| !matches!(r.action, Action::Health { .. }))
                .map(|r| (r.action.target(), r.key.clone())),
        );
    }
    expect_test::expect![[r#"
        before: edge2a Running | edge2b Running | Site1=EdgeServer:edgepool1.contoso.com Site2=- | A ["203.0.113.10"] | SRV null
        1. precheck: edge2a ok baton-agent 0.1.0 (commit) answers (7 actions); edge2b ok baton-agent 0.1.0 (commit) answers (7 actions); mgmt1 ok baton-agent 0.1.0 (commit) answers (7 actions)
           edge2a Running | edge2b Running | Site1=EdgeServer:edgepool1.contoso.com Site2=- | A ["203.0.113.10"] | SRV null
        2. services: edge2a ok 5 services stopped; edge2b ok 5 services stopped
           edge2a Stopped | edge2b Stopped | Site1=EdgeServer:edgepool1.contoso.com Site2=- | A ["203.0.113.10"] | SRV null
        3. route: mgmt1 ok Site2 route (none) -> EdgeServer:edgepool2.contoso.com (-XmppFederationRoute)
           edge2a Stopped | edge2b Stopped | Site1=EdgeServer:edgepool1.contoso.com Site2=EdgeServer:edgepool2.contoso.com | A ["203.0.113.10"] | SRV null
        4. dns A: mgmt1 ok xmpp.contoso.com A 203.0.113.20 confirmed
           edge2a Stopped | edge2b Stopped | Site1=EdgeServer:edgepool1.contoso.com Site2=EdgeServer:edgepool2.contoso.com | A ["203.0.113.20"] | SRV null
        5. dns SRV: mgmt1 ok _xmpp-server._tcp.contoso.com SRV -> xmpp.contoso.com:5269 created, present once
           edge2a Stopped | edge2b Stopped | Site1=EdgeServer:edgepool1.contoso.com Site2=EdgeServer:edgepool2.contoso.com | A ["203.0.113.20"] | SRV [{"port":5269,"priority":10,"target":"xmpp.contoso.com","weight":10}]
        6. port: runs on the bot
        7. services: edge2a ok 5 services running; edge2b ok 5 services running
           edge2a Running | edge2b Running | Site1=EdgeServer:edgepool1.contoso.com Site2=EdgeServer:edgepool2.contoso.com | A ["203.0.113.20"] | SRV [{"port":5269,"priority":10,"target":"xmpp.contoso.com","weight":10}]
        8. verify: runs on the bot
    "#]]
    .assert_eq(&transcript);

    // Every action ran exactly once, under its own key, on its own host.
    for (target, k) in &keys {
        let Target::Agent(host) = target else {
            unreachable!("only agent actions were sent")
        };
        assert_eq!(fleet.executions_of(host, k.as_str())?, 1, "{k} on {host}");
    }
    assert_eq!(fleet.executions(&fqdn("edge2a.contoso.com"))?.len(), 2);
    assert_eq!(fleet.executions(&fqdn("mgmt1.contoso.com"))?.len(), 3);

    // The read-only actions see the new state, and running the SRV step again adds nothing.
    let site2 = SiteName::parse("Site2")?;
    let reads = [
        request(
            "e2e/read/1",
            Action::ServicesStatus {
                host: fqdn("edge2b.contoso.com"),
            },
            Duration::from_secs(10),
        ),
        request(
            "e2e/read/2",
            Action::RouteGet {
                host: fqdn("mgmt1.contoso.com"),
                site: site2,
            },
            Duration::from_secs(10),
        ),
        request("e2e/read/3", plan.steps[4].actions[0].clone(), Duration::from_secs(10)),
    ];
    let texts: Vec<String> = reads
        .iter()
        .map(|r| rt.block_on(dispatcher.execute(r.clone())).outcome.text().to_string())
        .collect();
    assert_eq!(
        texts,
        [
            "5 of 5 services running",
            "Site2 XMPP federation route EdgeServer:edgepool2.contoso.com",
            "_xmpp-server._tcp.contoso.com SRV -> xmpp.contoso.com:5269 already present, present once",
        ]
    );
    assert_eq!(
        fleet.sim(&fqdn("mgmt1.contoso.com"))?["dns"]["_xmpp-server._tcp.contoso.com"]["srv"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // `!status xmpp` reads every site's route through the management agent.
    use baton_actions::status::RouteReader;
    let routes = AgentRoutes::new(
        std::sync::Arc::new(dispatcher),
        fqdn("mgmt1.contoso.com"),
        Duration::from_secs(10),
    );
    let read = |s: &str| rt.block_on(routes.route(&SiteName::parse(s).expect("valid")));
    assert_eq!(read("Site1"), Ok("EdgeServer:edgepool1.contoso.com".to_string()));
    assert_eq!(read("Site2"), Ok("EdgeServer:edgepool2.contoso.com".to_string()));
    assert_eq!(
        read("Site9"),
        Err("mgmt1.contoso.com: route.get failed with exit code 1: Get-CsSite: no site Site9".to_string())
    );
    Ok(())
}

fn valid_call(k: &str, action: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({ "protocol": 1, "key": k, "action": action, "timeout_ms": 10000, "wait_ms": 5000 }))
        .expect("json serializes")
}

#[test]
fn clients_without_the_right_certificate_are_refused_and_nothing_runs() -> Result<()> {
    let edge2a = fqdn("edge2a.contoso.com");
    let edge2b = fqdn("edge2b.contoso.com");
    let edge2c = fqdn("edge2c.contoso.com");
    let mut fleet = Fleet::new(vec![
        AgentSpec::new("edge2a.contoso.com"),
        AgentSpec::new("edge2b.contoso.com"),
        AgentSpec::new("edge2c.contoso.com"),
    ])?;
    // edge2b admits only another subject; edge2c pins the bot's certificate by fingerprint.
    fleet.spec_mut(&edge2b)?.pin_subjects = vec!["CN=someone-else".to_string()];
    let bot_der = baton_tls::load_certs(&fleet.pki.bot_cert)?.remove(0);
    fleet.spec_mut(&edge2c)?.pin_sha256 = vec![baton_tls::sha256_hex(&bot_der)];
    for h in [&edge2a, &edge2b, &edge2c] {
        fleet.spawn(h)?;
    }
    fleet.wait_ready(&edge2a)?;
    fleet.wait_ready(&edge2c)?;
    let other = baton_pki::init(
        &fleet.dir().join("other-ca"),
        std::slice::from_ref(&edge2a),
        &Default::default(),
    )?;
    let rt = runtime();
    let pki = fleet.pki.clone();
    let body = valid_call(
        "sec/1",
        json!({ "action": "services.stop", "host": "edge2a.contoso.com" }),
    );
    let a = fleet.address(&edge2a)?;

    // No client certificate: the handshake is refused (TLS 1.3 reports it on the first read).
    let none = rt.block_on(raw_request(
        a,
        &edge2a,
        &pki.ca_cert,
        None,
        "POST",
        "/v1/actions",
        &body,
    ));
    let err = none.expect_err("refused without a certificate");
    assert!(err.contains("received fatal alert: CertificateRequired"), "{err}");

    // A certificate from another CA: refused at the handshake.
    let foreign = rt.block_on(raw_request(
        a,
        &edge2a,
        &pki.ca_cert,
        Some((&other.bot_cert, &other.bot_key)),
        "POST",
        "/v1/actions",
        &body,
    ));
    let err = foreign.expect_err("refused with a foreign certificate");
    // (Both CAs are named "Baton CA": the signature check is what fails.)
    assert!(
        err.contains("received fatal alert: DecryptError") || err.contains("received fatal alert: UnknownCA"),
        "{err}"
    );

    // The right CA but not pinned: 403, also through the dispatcher, naming the host.
    let b = fleet.address(&edge2b)?;
    let body_b = valid_call(
        "sec/2",
        json!({ "action": "services.stop", "host": "edge2b.contoso.com" }),
    );
    let (status, text) = rt
        .block_on(raw_request(
            b,
            &edge2b,
            &pki.ca_cert,
            Some((&pki.bot_cert, &pki.bot_key)),
            "POST",
            "/v1/actions",
            &body_b,
        ))
        .map_err(anyhow::Error::msg)?;
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains("client certificate not allowed here (subject CN=baton-bot, sha256 "),
        "{text}"
    );
    let dispatcher = fleet.dispatcher()?;
    let refused =
        rt.block_on(dispatcher.execute(request("sec/3", stop("edge2b.contoso.com"), Duration::from_secs(10))));
    assert!(
        refused.outcome.text().starts_with(
            "edge2b.contoso.com: the agent refused the request (403): client certificate not allowed here"
        ),
        "{}",
        refused.outcome.text()
    );

    // Pinned by fingerprint: admitted.
    let pinned = rt.block_on(dispatcher.execute(request("sec/4", stop("edge2c.contoso.com"), Duration::from_secs(10))));
    assert_eq!(pinned.outcome.text(), "5 services stopped");

    // The bot verifies the agent too: an agent certificate from another CA, or for another
    // name, fails at once (no retries) and names the host.
    let mut foreign_ca = fleet.dispatcher_config();
    foreign_ca.ca = other.ca_cert.clone();
    let d = baton_actions::dispatcher::Dispatcher::new(foreign_ca)?;
    let started = Instant::now();
    let err = rt.block_on(d.health(&edge2a)).expect_err("untrusted agent").to_string();
    assert!(
        err.starts_with("edge2a.contoso.com: TLS with the agent failed: invalid peer certificate"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a certificate failure is not retried"
    );
    let mut misrouted = fleet.dispatcher_config();
    misrouted.agents.insert(edge2b.clone(), a.into());
    let d = baton_actions::dispatcher::Dispatcher::new(misrouted)?;
    let err = rt.block_on(d.health(&edge2b)).expect_err("wrong agent").to_string();
    assert!(
        err.starts_with("edge2b.contoso.com: TLS with the agent failed: invalid peer certificate"),
        "{err}"
    );

    assert!(fleet.executions(&edge2a)?.is_empty(), "nothing ran on edge2a");
    assert!(fleet.executions(&edge2b)?.is_empty(), "nothing ran on edge2b");
    assert_eq!(fleet.executions(&edge2c)?.len(), 1);
    Ok(())
}

#[test]
fn malformed_or_dangerous_requests_get_400_and_nothing_runs() -> Result<()> {
    let edge2a = fqdn("edge2a.contoso.com");
    let mut spec = AgentSpec::new("edge2a.contoso.com");
    spec.actions = vec!["services.stop".into(), "services.start".into()];
    let fleet = Fleet::start_all(vec![spec])?;
    let rt = runtime();
    let pki = fleet.pki.clone();
    let address = fleet.address(&edge2a)?;
    let send = |method: &str, path: &str, body: &[u8]| -> (u16, String) {
        rt.block_on(raw_request(
            address,
            &edge2a,
            &pki.ca_cert,
            Some((&pki.bot_cert, &pki.bot_key)),
            method,
            path,
            body,
        ))
        .unwrap_or_else(|e| (0, e))
    };
    let call = |action: Value| valid_call("bad/1", action);
    let long = "a".repeat(300);
    let cases: Vec<(&str, Vec<u8>, u16, String)> = vec![
        (
            "unknown action",
            call(json!({"action": "shell", "cmd": "rm -rf /"})),
            400,
            "unknown variant `shell`".into(),
        ),
        (
            "extra field in the action",
            call(json!({"action": "services.stop", "host": "edge2a.contoso.com", "force": true})),
            400,
            "unknown field `force`".into(),
        ),
        (
            "extra field in the call",
            serde_json::to_vec(
                &json!({"protocol": 1, "key": "bad/1", "action": {"action": "services.stop", "host": "edge2a.contoso.com"}, "timeout_ms": 1000, "wait_ms": 0, "shell": "x"}),
            )?,
            400,
            "unknown field `shell`".into(),
        ),
        (
            "shell metacharacters",
            call(json!({"action": "services.stop", "host": "edge2a.contoso.com;reboot"})),
            400,
            "is not a valid host name".into(),
        ),
        (
            "command substitution",
            call(json!({"action": "services.stop", "host": "$(reboot).contoso.com"})),
            400,
            "is not a valid host name".into(),
        ),
        (
            "PowerShell subexpression",
            call(
                json!({"action": "route.set", "host": "edge2a.contoso.com", "site": "Site2$(Stop-Computer)", "edge_pool": "edgepool2.contoso.com"}),
            ),
            400,
            "is not a valid site name".into(),
        ),
        (
            "PowerShell backtick",
            call(json!({"action": "route.get", "host": "edge2a.contoso.com", "site": "Site2`n"})),
            400,
            "is not a valid site name".into(),
        ),
        (
            "a raw string with a quote",
            call(
                json!({"action": "dns.set_a", "dns": {"provider": "rfc2136", "server": "ns1'; rm x", "zone": "contoso.com"}, "name": "xmpp.contoso.com", "address": "203.0.113.20", "ttl": 300}),
            ),
            400,
            "carries the character".into(),
        ),
        (
            "extra field in a nested part",
            call(
                json!({"action": "dns.set_a", "dns": {"provider": "agent", "host": "edge2a.contoso.com", "zone": "contoso.com", "script": "x"}, "name": "xmpp.contoso.com", "address": "203.0.113.20", "ttl": 300}),
            ),
            400,
            "action.dns: unknown field `script`".into(),
        ),
        (
            "over-long site",
            call(json!({"action": "route.get", "host": "edge2a.contoso.com", "site": long})),
            400,
            "is not a valid site name".into(),
        ),
        (
            "over-long host",
            call(json!({"action": "services.stop", "host": format!("{long}.contoso.com")})),
            400,
            "is not a valid host name".into(),
        ),
        (
            "over-long key",
            valid_call(
                &"k".repeat(201),
                json!({"action": "services.stop", "host": "edge2a.contoso.com"}),
            ),
            400,
            "is not 1 to 200 characters".into(),
        ),
        (
            "not an address",
            call(
                json!({"action": "dns.set_a", "dns": {"provider": "agent", "host": "edge2a.contoso.com", "zone": "contoso.com"}, "name": "xmpp.contoso.com", "address": "203.0.113.2000", "ttl": 300}),
            ),
            400,
            "invalid IPv4 address syntax".into(),
        ),
        (
            "another host's action",
            call(json!({"action": "services.stop", "host": "edge2b.contoso.com"})),
            400,
            "this agent serves edge2a.contoso.com; the action is for edge2b.contoso.com".into(),
        ),
        (
            "a disabled action",
            call(json!({"action": "route.get", "host": "edge2a.contoso.com", "site": "Site2"})),
            400,
            "action route.get is not enabled on this agent (enabled: services.start, services.stop)".into(),
        ),
        (
            "a bot action",
            call(json!({"action": "port.check", "address": "203.0.113.20", "port": 5269})),
            400,
            "port.check runs on the bot, not on an agent".into(),
        ),
        (
            "another protocol",
            serde_json::to_vec(
                &json!({"protocol": 2, "key": "bad/1", "action": {"action": "services.stop", "host": "edge2a.contoso.com"}, "timeout_ms": 1000, "wait_ms": 0}),
            )?,
            400,
            "protocol version 2 is not supported".into(),
        ),
        (
            "not JSON",
            b"services.stop edge2a".to_vec(),
            400,
            "invalid request: expected value".into(),
        ),
        ("a huge body", vec![b' '; 70_000], 413, "larger than".into()),
    ];
    for (what, body, status, needle) in &cases {
        let (got, text) = send("POST", "/v1/actions", body);
        assert_eq!(got, *status, "{what}: {text}");
        assert!(text.contains(needle.as_str()), "{what}: {text}");
    }
    assert_eq!(send("GET", "/v1/actions", b"").0, 405);
    assert_eq!(send("GET", "/v1/admin", b"").0, 404);
    assert!(
        fleet.executions(&edge2a)?.is_empty(),
        "nothing ran: {:?}",
        fleet.executions(&edge2a)?
    );

    // None of the refused calls used up the key: the first valid call with it runs, once.
    let (status, text) = send(
        "POST",
        "/v1/actions",
        &call(json!({"action": "services.stop", "host": "edge2a.contoso.com"})),
    );
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#""status":"ok""#), "{text}");
    assert_eq!(fleet.executions_of(&edge2a, "bad/1")?, 1);
    // The same key for another action is a conflict, and runs nothing.
    let (status, text) = send(
        "POST",
        "/v1/actions",
        &call(json!({"action": "services.start", "host": "edge2a.contoso.com"})),
    );
    assert_eq!(status, 409, "{text}");
    assert_eq!(fleet.executions(&edge2a)?.len(), 1);
    Ok(())
}

#[test]
fn an_action_past_its_timeout_is_killed_with_its_children_and_fails_clearly() -> Result<()> {
    let edge2a = fqdn("edge2a.contoso.com");
    let mut spec = AgentSpec::new("edge2a.contoso.com");
    spec.sim_args = vec!["--delay-ms".into(), "60000".into(), "--spawn-child".into()];
    spec.timeouts = vec![("services.stop".into(), "1s".into())];
    let fleet = Fleet::start_all(vec![spec])?;
    let rt = runtime();
    let started = Instant::now();
    // The bot allows 60 s; the agent's configuration caps services.stop at 1 s.
    let report = rt.block_on(fleet.dispatcher()?.execute(request(
        "slow/1",
        stop("edge2a.contoso.com"),
        Duration::from_secs(60),
    )));
    assert_eq!(
        report.outcome.text(),
        "edge2a.contoso.com: services.stop timed out after 1s; the process and its children were killed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed at the deadline, took {:?}",
        started.elapsed()
    );
    let state = fleet.sim(&edge2a)?;
    let execution = &state["executions"][0];
    assert_eq!(
        execution["status"], "started",
        "the simulator never finished: {execution}"
    );
    for field in ["pid", "child_pid"] {
        let pid = u32::try_from(execution[field].as_u64().expect("a recorded pid")).expect("pids fit");
        assert!(gone_within(pid, Duration::from_secs(5)), "{field} {pid} is gone");
    }
    assert_eq!(
        state["services"]["RTCSRV"], "Running",
        "the killed action changed nothing"
    );
    // The same key is not run again: its recorded failure comes back.
    let again = rt.block_on(fleet.dispatcher()?.execute(request(
        "slow/1",
        stop("edge2a.contoso.com"),
        Duration::from_secs(60),
    )));
    assert!(again.replayed && !again.outcome.is_ok());
    assert_eq!(fleet.executions(&edge2a)?.len(), 1);
    Ok(())
}

#[test]
fn a_key_executes_once_across_repeats_concurrent_calls_and_restarts() -> Result<()> {
    let edge2a = fqdn("edge2a.contoso.com");
    let mut fleet = Fleet::start_all(vec![AgentSpec::new("edge2a.contoso.com")])?;
    let rt = runtime();
    let dispatcher = fleet.dispatcher()?;
    fleet.edit_sim(&edge2a, |s| {
        s["inject"] = json!({ "services.stop": { "delay_ms": 300 } })
    })?;
    let r = request("once/1", stop("edge2a.contoso.com"), Duration::from_secs(10));
    let (first, second) =
        rt.block_on(async { tokio::join!(dispatcher.execute(r.clone()), dispatcher.execute(r.clone())) });
    assert!(first.outcome.is_ok() && second.outcome.is_ok(), "{first:?} {second:?}");
    let third = rt.block_on(dispatcher.execute(r.clone()));
    assert!(third.replayed, "a repeated key answers the recorded result");
    assert_eq!(fleet.executions_of(&edge2a, "once/1")?, 1);

    // A clean stop and a start: the recorded result survives.
    fleet.stop(&edge2a)?;
    fleet.restart(&edge2a)?;
    let fourth = rt.block_on(dispatcher.execute(r.clone()));
    assert!(fourth.replayed && fourth.outcome.is_ok(), "{fourth:?}");
    assert_eq!(fleet.executions_of(&edge2a, "once/1")?, 1);

    // An action still running when the agent dies is reported interrupted, never run again.
    fleet.edit_sim(&edge2a, |s| {
        s["inject"] = json!({ "services.start": { "delay_ms": 1500 } })
    })?;
    let start = json!({ "action": "services.start", "host": "edge2a.contoso.com" });
    let body = serde_json::to_vec(
        &json!({ "protocol": 1, "key": "once/2", "action": start, "timeout_ms": 10000, "wait_ms": 100 }),
    )?;
    let pki = fleet.pki.clone();
    let address = fleet.address(&edge2a)?;
    let (status, text) = rt
        .block_on(raw_request(
            address,
            &edge2a,
            &pki.ca_cert,
            Some((&pki.bot_cert, &pki.bot_key)),
            "POST",
            "/v1/actions",
            &body,
        ))
        .map_err(anyhow::Error::msg)?;
    assert_eq!(status, 200);
    assert!(
        matches!(ActionAnswer::decode(text.as_bytes())?, ActionAnswer::Running { .. }),
        "{text}"
    );
    // Killed when the journal says the key is running with its executor started.
    fleet.wait_running(&edge2a, "once/2", Duration::from_secs(15))?;
    let pid = fleet
        .execution_pids(&edge2a)?
        .into_iter()
        .find(|e| e.key == "once/2")
        .and_then(|e| e.pid);
    fleet.kill(&edge2a)?;
    fleet.restart(&edge2a)?;
    let report = rt.block_on(dispatcher.execute(request(
        "once/2",
        Action::ServicesStart { host: edge2a.clone() },
        Duration::from_secs(10),
    )));
    assert_eq!(report.outcome.text(), format!("edge2a.contoso.com: {INTERRUPTED}"));
    assert!(report.replayed);
    // Its executor is gone, so it cannot finish later either.
    if let Some(pid) = pid {
        assert!(!baton_e2e::agents::alive(pid), "the interrupted executor {pid} is gone");
    }
    assert_eq!(
        fleet.executions_of(&edge2a, "once/2")?,
        1,
        "the interrupted key was not run again"
    );
    assert_eq!(
        fleet.executions(&edge2a)?.last().map(|(_, _, status)| status.as_str()),
        Some("started"),
        "the interrupted execution never completed"
    );
    Ok(())
}

/// How many connections `host`'s agent admitted, from its log (one line per connection).
fn admitted(fleet: &Fleet, host: &Fqdn) -> usize {
    fleet.log(host).matches("client admitted").count()
}

#[test]
fn a_run_s_exchanges_share_one_kept_connection_and_a_restarted_agent_gets_a_new_one() -> Result<()> {
    let edge2a = fqdn("edge2a.contoso.com");
    let mut fleet = Fleet::start_all(vec![AgentSpec::new("edge2a.contoso.com")])?;
    let rt = runtime();
    let before = admitted(&fleet, &edge2a);
    let dispatcher = fleet.dispatcher()?;
    // A precheck and three steps, one after the other: one connection carries them all.
    rt.block_on(dispatcher.health(&edge2a))?;
    let look = Action::ServicesStatus { host: edge2a.clone() };
    for i in 1..=3 {
        let report = rt.block_on(dispatcher.execute(request(
            &format!("kept/s{i}/a1-edge2a/t1"),
            look.clone(),
            Duration::from_secs(10),
        )));
        assert!(report.outcome.is_ok(), "{:?}", report.outcome);
    }
    assert_eq!(admitted(&fleet, &edge2a) - before, 1, "{}", fleet.log(&edge2a));

    // The agent restarts between two steps: the kept connection is dead; the next step opens a
    // new one, runs once and is not reported unknown.
    fleet.kill(&edge2a)?;
    fleet.restart(&edge2a)?;
    let after_restart = admitted(&fleet, &edge2a);
    let report = rt.block_on(dispatcher.execute(request(
        "kept/s4/a1-edge2a/t1",
        stop("edge2a.contoso.com"),
        Duration::from_secs(10),
    )));
    assert_eq!(report.outcome.text(), "5 services stopped");
    assert_eq!(fleet.executions_of(&edge2a, "kept/s4/a1-edge2a/t1")?, 1);
    assert_eq!(admitted(&fleet, &edge2a) - after_restart, 1);

    // With keeping turned off, every exchange has a connection of its own.
    let mut fresh = fleet.dispatcher_config();
    fresh.keep_idle = Duration::ZERO;
    let fresh = baton_actions::dispatcher::Dispatcher::new(fresh)?;
    let before = admitted(&fleet, &edge2a);
    rt.block_on(fresh.health(&edge2a))?;
    rt.block_on(fresh.health(&edge2a))?;
    assert_eq!(admitted(&fleet, &edge2a) - before, 2);
    Ok(())
}

#[test]
fn polling_waits_for_a_long_action_through_running_answers() -> Result<()> {
    let edge2a = fqdn("edge2a.contoso.com");
    let mut spec = AgentSpec::new("edge2a.contoso.com");
    spec.sim_args = vec!["--delay-ms".into(), "2500".into()];
    let fleet = Fleet::start_all(vec![spec])?;
    let mut config = fleet.dispatcher_config();
    config.poll_wait = Duration::from_millis(500);
    let dispatcher = baton_actions::dispatcher::Dispatcher::new(config)?;
    let rt = runtime();
    let started = Instant::now();
    let answer = rt.block_on(dispatcher.call(
        &edge2a,
        &key("poll/1"),
        &stop("edge2a.contoso.com"),
        Duration::from_secs(30),
    ))?;
    assert!(
        matches!(&answer, ActionAnswer::Ok { detail, replayed: false, .. } if detail == "5 services stopped"),
        "{answer:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(2500));
    assert_eq!(fleet.executions_of(&edge2a, "poll/1")?, 1);
    Ok(())
}

#[test]
fn an_answer_longer_than_the_connection_s_read_buffer_arrives_whole() -> Result<()> {
    // The dispatcher reads agents' answers through a 4 KiB buffer; a failure's output tails
    // (2 KiB each, here every byte escaped in JSON) make a body well beyond it.
    let edge2a = fqdn("edge2a.contoso.com");
    let why = "\"\\".repeat(1500);
    let mut spec = AgentSpec::new("edge2a.contoso.com");
    spec.sim_args = vec!["--fail".into(), why.clone()];
    let fleet = Fleet::start_all(vec![spec])?;
    let dispatcher = fleet.dispatcher()?;
    let rt = runtime();
    let answer = rt.block_on(dispatcher.call(
        &edge2a,
        &key("long/1"),
        &stop("edge2a.contoso.com"),
        Duration::from_secs(30),
    ))?;
    let body = serde_json::to_vec(&answer)?.len();
    assert!(body > 4096, "the answer is only {body} bytes: {answer:?}");
    match &answer {
        ActionAnswer::Failed {
            stderr_tail,
            replayed: false,
            ..
        } => {
            let kept = stderr_tail.trim_end().trim_start_matches('…');
            assert!(kept.len() >= 2000, "{} bytes of stderr kept", kept.len());
            assert!(
                why.ends_with(kept),
                "the tail is not the end of the output: {stderr_tail:?}"
            );
        }
        other => panic!("expected the injected failure, got {other:?}"),
    }
    assert_eq!(fleet.executions_of(&edge2a, "long/1")?, 1);
    Ok(())
}

#[test]
fn an_agent_down_fails_after_bounded_retries_naming_the_host_and_works_again_once_back() -> Result<()> {
    let edge2a = fqdn("edge2a.contoso.com");
    let edge2b = fqdn("edge2b.contoso.com");
    let mut fleet = Fleet::start_all(vec![
        AgentSpec::new("edge2a.contoso.com"),
        AgentSpec::new("edge2b.contoso.com"),
    ])?;
    let rt = runtime();
    let dispatcher = fleet.dispatcher()?;
    fleet.kill(&edge2a)?;

    // The step fans out; edge2a fails after 3 attempts, edge2b is done.
    let started = Instant::now();
    let (a, b) = rt.block_on(async {
        tokio::join!(
            dispatcher.execute(request(
                "down/s2/a1-edge2a/t1",
                stop("edge2a.contoso.com"),
                Duration::from_secs(30)
            )),
            dispatcher.execute(request(
                "down/s2/a2-edge2b/t1",
                stop("edge2b.contoso.com"),
                Duration::from_secs(30)
            )),
        )
    });
    let took = started.elapsed();
    let port = fleet.address(&edge2a)?.port();
    assert!(
        a.outcome.text().starts_with(&format!(
            "edge2a.contoso.com: agent unreachable after 3 attempts: cannot connect to 127.0.0.1:{port}"
        )),
        "{}",
        a.outcome.text()
    );
    assert!(took < Duration::from_secs(5), "bounded retries, took {took:?}");
    assert_eq!(b.outcome.text(), "5 services stopped");

    // Back again: a new attempt (what !retry sends) runs; so does the failed key, once.
    fleet.restart(&edge2a)?;
    let retried = rt.block_on(dispatcher.execute(request(
        "down/s2/a1-edge2a/t2",
        stop("edge2a.contoso.com"),
        Duration::from_secs(30),
    )));
    assert_eq!(retried.outcome.text(), "5 services stopped");
    assert_eq!(fleet.executions(&edge2a)?.len(), 1);

    // Down during the retries and back within them: the same key gets through, once.
    fleet.kill(&edge2a)?;
    let mut patient = fleet.dispatcher_config();
    patient.attempts = 50;
    patient.backoff = Duration::from_millis(200);
    patient.max_backoff = Duration::from_millis(200);
    let patient = baton_actions::dispatcher::Dispatcher::new(patient)?;
    let start = Action::ServicesStart { host: edge2a.clone() };
    let pending = rt.spawn(async move {
        patient
            .execute(request("down/s7/a1-edge2a/t1", start, Duration::from_secs(30)))
            .await
    });
    std::thread::sleep(Duration::from_millis(700));
    fleet.restart(&edge2a)?;
    let report = rt.block_on(pending)?;
    assert_eq!(report.outcome.text(), "5 services running");
    assert_eq!(fleet.executions_of(&edge2a, "down/s7/a1-edge2a/t1")?, 1);
    assert_eq!(fleet.executions(&edge2b)?.len(), 1);
    Ok(())
}

/// Sends `POST /v1/actions` over mutual TLS one byte every `every`, as a slowloris would (the
/// headers too when `trickle_headers`), for at most `bytes` bytes. Returns when the agent
/// closed the connection (`Some(time since connected)`) or the bytes ran out (`None`).
async fn slow_client(
    address: std::net::SocketAddr,
    host: Fqdn,
    pki: baton_pki::PkiFiles,
    every: Duration,
    bytes: usize,
    trickle_headers: bool,
    connected: tokio::sync::mpsc::Sender<()>,
) -> Result<Option<Duration>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = rustls::ClientConfig::builder_with_provider(baton_tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(baton_tls::load_roots(&pki.ca_cert)?)
        .with_client_auth_cert(
            baton_tls::load_certs(&pki.bot_cert)?,
            baton_tls::load_key(&pki.bot_key)?,
        )?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let tls = connector
        .connect(rustls::pki_types::ServerName::try_from(host.as_str().to_string())?, tcp)
        .await?;
    let started = Instant::now();
    let (mut rx, mut tx) = tokio::io::split(tls);
    let head = format!(
        "POST /v1/actions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {bytes}\r\n\r\n"
    );
    let mut data = head.clone().into_bytes();
    data.extend(std::iter::repeat_n(b' ', bytes));
    let mut sent = 0;
    if !trickle_headers {
        tx.write_all(head.as_bytes()).await?;
        tx.flush().await?;
        sent = head.len();
    }
    let _ = connected.send(()).await;
    let mut buf = [0u8; 512];
    while sent < data.len() {
        tokio::select! {
            read = rx.read(&mut buf) => match read {
                // An answer (408) or the close: the agent is done with this client.
                Ok(_) | Err(_) => return Ok(Some(started.elapsed())),
            },
            () = tokio::time::sleep(every) => {
                if tx.write_all(&data[sent..=sent]).await.is_err() || tx.flush().await.is_err() {
                    return Ok(Some(started.elapsed()));
                }
                sent += 1;
            }
        }
    }
    Ok(None)
}

#[test]
fn slow_clients_are_cut_at_the_request_deadline() -> Result<()> {
    let edge2a = fqdn("edge2a.contoso.com");
    let mut spec = AgentSpec::new("edge2a.contoso.com");
    spec.request_timeout = Some("1s".into());
    let fleet = Fleet::start_all(vec![spec])?;
    let rt = runtime();
    let address = fleet.address(&edge2a)?;
    // A client sending its body one byte every 300 ms (45 s in the field), and one sending its
    // headers that way: each would hold its connection for 60 s; the agent ends both at its
    // 1 s deadline for a whole request.
    for trickle_headers in [false, true] {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let cut = rt.block_on(slow_client(
            address,
            edge2a.clone(),
            fleet.pki.clone(),
            Duration::from_millis(300),
            200,
            trickle_headers,
            tx,
        ))?;
        let cut = cut.expect("the agent closed the slow connection before it finished");
        assert!(
            cut >= Duration::from_millis(900) && cut < Duration::from_secs(10),
            "headers trickled: {trickle_headers}; cut after {cut:?}"
        );
    }
    // A normal call still works, and nothing ran for the slow ones.
    let report = rt.block_on(fleet.dispatcher()?.execute(request(
        "slow/ok",
        stop("edge2a.contoso.com"),
        Duration::from_secs(10),
    )));
    assert_eq!(report.outcome.text(), "5 services stopped");
    assert_eq!(fleet.executions(&edge2a)?.len(), 1);
    Ok(())
}

/// Over one mutual-TLS connection: `GET /v1/health` answered in full, then the headers of a
/// second request one byte every `every`. Returns the time from the first answer to the
/// agent's close, or `None` if it never closed while 60 bytes went out.
async fn slow_second_request(
    address: std::net::SocketAddr,
    host: Fqdn,
    pki: baton_pki::PkiFiles,
    every: Duration,
) -> Result<Option<Duration>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = rustls::ClientConfig::builder_with_provider(baton_tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(baton_tls::load_roots(&pki.ca_cert)?)
        .with_client_auth_cert(
            baton_tls::load_certs(&pki.bot_cert)?,
            baton_tls::load_key(&pki.bot_key)?,
        )?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let mut tls = connector
        .connect(rustls::pki_types::ServerName::try_from(host.as_str().to_string())?, tcp)
        .await?;
    tls.write_all(format!("GET /v1/health HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    tls.flush().await?;
    // The whole first answer: its head, then as many bytes as its Content-Length says.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let answered = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "the agent closed before answering the first request");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
            anyhow::ensure!(!head.to_ascii_lowercase().contains("connection: close"), "{head}");
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if body.len() >= length {
                break Instant::now();
            }
        }
    };
    let second = format!(
        "GET /v1/health HTTP/1.1\r\nHost: {host}\r\nX-Padding: {}\r\n\r\n",
        "x".repeat(40)
    );
    let (mut rx, mut tx) = tokio::io::split(tls);
    for byte in second.as_bytes().iter().take(60) {
        tokio::select! {
            read = rx.read(&mut buf) => match read {
                Ok(_) | Err(_) => return Ok(Some(answered.elapsed())),
            },
            () = tokio::time::sleep(every) => {
                if tx.write_all(std::slice::from_ref(byte)).await.is_err() || tx.flush().await.is_err() {
                    return Ok(Some(answered.elapsed()));
                }
            }
        }
    }
    Ok(None)
}

#[test]
fn a_kept_connection_s_next_request_has_a_deadline_of_its_own() -> Result<()> {
    let edge2a = fqdn("edge2a.contoso.com");
    let mut spec = AgentSpec::new("edge2a.contoso.com");
    spec.request_timeout = Some("1s".into());
    let fleet = Fleet::start_all(vec![spec])?;
    let rt = runtime();
    // Answered once, the connection stays open for the next request; one whose headers trickle
    // in (one byte per 300 ms: 18 s in all) is closed at the 1 s deadline counted from the
    // first answer.
    let cut = rt
        .block_on(slow_second_request(
            fleet.address(&edge2a)?,
            edge2a.clone(),
            fleet.pki.clone(),
            Duration::from_millis(300),
        ))?
        .expect("the agent closed the connection before the second request's headers were in");
    assert!(
        cut >= Duration::from_millis(800) && cut < Duration::from_secs(10),
        "cut after {cut:?}"
    );
    Ok(())
}

#[test]
fn a_real_call_gets_through_while_slow_clients_hold_every_connection() -> Result<()> {
    let edge2a = fqdn("edge2a.contoso.com");
    let mut spec = AgentSpec::new("edge2a.contoso.com");
    spec.request_timeout = Some("60s".into());
    spec.max_connections = Some(4);
    let fleet = Fleet::start_all(vec![spec])?;
    let rt = runtime();
    let address = fleet.address(&edge2a)?;
    // Four clients with the bot's own certificate take every connection and trickle their
    // bodies (one byte per 300 ms, 30 bytes: 9 s unless the agent closes them).
    let (tx, mut connected) = tokio::sync::mpsc::channel(8);
    let slow: Vec<_> = (0..4)
        .map(|_| {
            rt.spawn(slow_client(
                address,
                edge2a.clone(),
                fleet.pki.clone(),
                Duration::from_millis(300),
                30,
                false,
                tx.clone(),
            ))
        })
        .collect();
    for _ in 0..4 {
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), connected.recv()).await })?
            .expect("a slow client connected");
    }
    // The real call at the cap: the slowest unfinished request makes room for it.
    let started = Instant::now();
    let report = rt.block_on(fleet.dispatcher()?.execute(request(
        "cap/ok",
        stop("edge2a.contoso.com"),
        Duration::from_secs(10),
    )));
    assert_eq!(report.outcome.text(), "5 services stopped");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered while the cap was held"
    );
    let results: Vec<Option<Duration>> = slow
        .into_iter()
        .map(|h| {
            rt.block_on(h)
                .expect("the slow client's task ends")
                .expect("it connected")
        })
        .collect();
    let closed = results.iter().filter(|r| r.is_some()).count();
    assert!(
        (1..4).contains(&closed),
        "the agent closed slow clients to make room, not all of them: {results:?}"
    );
    assert_eq!(fleet.executions(&edge2a)?.len(), 1);
    Ok(())
}

#[test]
fn a_subject_pin_admits_that_name_in_any_order_and_not_a_common_name_that_spells_it() -> Result<()> {
    let edge2a = fqdn("edge2a.contoso.com");
    let mut fleet = Fleet::new(vec![AgentSpec::new("edge2a.contoso.com")])?;
    let certs = fleet.dir().join("clients");
    std::fs::create_dir_all(&certs)?;
    // One CN that reads like the pin, and the real name written in both RDN orders.
    let spoof = baton_pki::issue_client(&fleet.pki, &[("CN", "baton-bot, OU=Ops")], &certs, "spoof")?;
    let real = baton_pki::issue_client(&fleet.pki, &[("OU", "Ops"), ("CN", "baton-bot")], &certs, "real")?;
    let reversed = baton_pki::issue_client(&fleet.pki, &[("CN", "baton-bot"), ("OU", "Ops")], &certs, "reversed")?;
    let more = baton_pki::issue_client(
        &fleet.pki,
        &[("O", "Contoso"), ("OU", "Ops"), ("CN", "baton-bot")],
        &certs,
        "more",
    )?;
    // A pin that does not parse stops the agent at start, naming the key.
    {
        let spec = fleet.spec_mut(&edge2a)?;
        spec.ca_dedicated = false;
        spec.pin_subjects = vec!["baton-bot".into()];
    }
    let err = fleet
        .spawn(&edge2a)
        .expect_err("an unparsable pin is refused")
        .to_string();
    assert!(
        err.contains("tls.client_subjects[0]: 'baton-bot' is not a distinguished name (RFC 4514)"),
        "{err}"
    );
    fleet.spec_mut(&edge2a)?.pin_subjects = vec!["CN=baton-bot, OU=Ops".into()];
    fleet.spawn(&edge2a)?;
    let rt = runtime();
    let address = fleet.address(&edge2a)?;
    let ca = fleet.pki.ca_cert.clone();
    let call = |client: &baton_pki::AgentFiles, k: &str| -> Result<(u16, String)> {
        rt.block_on(raw_request(
            address,
            &edge2a,
            &ca,
            Some((&client.cert, &client.key)),
            "POST",
            "/v1/actions",
            &valid_call(k, json!({ "action": "services.status", "host": "edge2a.contoso.com" })),
        ))
        .map_err(anyhow::Error::msg)
    };
    let (status, text) = call(&spoof, "pin/1")?;
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains(r"client certificate not allowed here (subject CN=baton-bot\\, OU\\=Ops, sha256 "),
        "the refusal shows the subject as one escaped CN: {text}"
    );
    let (status, text) = call(&more, "pin/2")?;
    assert_eq!(status, 403, "an extra attribute is another name: {text}");
    for (client, k) in [(&real, "pin/3"), (&reversed, "pin/4")] {
        let (status, text) = call(client, k)?;
        assert_eq!(status, 200, "{text}");
    }
    let keys: Vec<String> = fleet.executions(&edge2a)?.into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(keys, ["pin/3", "pin/4"]);
    Ok(())
}

#[test]
fn a_ca_without_pins_must_be_declared_dedicated_and_revoked_certificates_are_refused() -> Result<()> {
    let edge2a = fqdn("edge2a.contoso.com");
    let mut fleet = Fleet::new(vec![AgentSpec::new("edge2a.contoso.com")])?;
    fleet.spec_mut(&edge2a)?.ca_dedicated = false;
    let err = fleet.spawn(&edge2a).expect_err("no pin, no dedicated CA").to_string();
    assert!(
        err.contains("tls: no client pin: every certificate client_ca ever issued would be admitted"),
        "{err}"
    );
    // A dedicated CA with a CRL that revokes an older bot certificate.
    let certs = fleet.dir().join("clients");
    std::fs::create_dir_all(&certs)?;
    let old = baton_pki::issue_client(&fleet.pki, &[("CN", "baton-bot")], &certs, "old-bot")?;
    let crl = certs.join("ca.crl");
    baton_pki::revoke(&fleet.pki, &[&old.cert], &crl)?;
    {
        let spec = fleet.spec_mut(&edge2a)?;
        spec.ca_dedicated = true;
        spec.crls = vec![crl];
    }
    fleet.restart(&edge2a)?;
    let rt = runtime();
    let body = valid_call(
        "crl/1",
        json!({ "action": "services.stop", "host": "edge2a.contoso.com" }),
    );
    let err = rt
        .block_on(raw_request(
            fleet.address(&edge2a)?,
            &edge2a,
            &fleet.pki.ca_cert,
            Some((&old.cert, &old.key)),
            "POST",
            "/v1/actions",
            &body,
        ))
        .expect_err("a revoked certificate is refused at the handshake");
    assert!(err.contains("received fatal alert: CertificateRevoked"), "{err}");
    assert!(fleet.executions(&edge2a)?.is_empty(), "nothing ran");
    // The current bot certificate is not revoked: the same call goes through.
    let report = rt.block_on(fleet.dispatcher()?.execute(request(
        "crl/2",
        stop("edge2a.contoso.com"),
        Duration::from_secs(10),
    )));
    assert_eq!(report.outcome.text(), "5 services stopped");
    Ok(())
}

#[test]
fn an_agent_killed_mid_action_takes_its_children_along_and_a_retry_never_runs_beside_them() -> Result<()> {
    let edge2a = fqdn("edge2a.contoso.com");
    let mut fleet = Fleet::start_all(vec![AgentSpec::new("edge2a.contoso.com")])?;
    // The first execution takes 30 s and starts a child of its own (a PowerShell would).
    fleet.edit_sim(&edge2a, |s| {
        s["inject"] = json!({ "services.stop": { "delay_ms": 30000, "spawn_child": true, "times": 1 } })
    })?;
    let rt = runtime();
    let (t1, t2) = ("orphan/s2/a1-edge2a/t1", "orphan/s2/a1-edge2a/t2");
    let dispatcher = std::sync::Arc::new(fleet.dispatcher()?);
    let d = dispatcher.clone();
    let first = rt.spawn(async move {
        d.execute(request(t1, stop("edge2a.contoso.com"), Duration::from_secs(60)))
            .await
    });
    // Kill the agent when its journal says the key is running and the child exists.
    fleet.wait_running(&edge2a, t1, Duration::from_secs(15))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let (pid, child) = loop {
        let started = fleet.execution_pids(&edge2a)?.into_iter().find(|e| e.key == t1);
        if let Some(SimExecution {
            pid: Some(pid),
            child_pid: Some(child),
            ..
        }) = started
        {
            break (pid, child);
        }
        anyhow::ensure!(Instant::now() < deadline, "the simulator never recorded its child");
        std::thread::sleep(Duration::from_millis(10));
    };
    fleet.kill(&edge2a)?;
    assert!(
        gone_within(pid, Duration::from_secs(5)),
        "the executor {pid} died with its agent"
    );
    fleet.restart(&edge2a)?;
    assert!(
        !baton_e2e::agents::alive(child),
        "the restarted agent ended the executor's child {child} before it answered"
    );
    // The call in flight gets the recorded interrupted answer from the new agent.
    let report = rt.block_on(first)?;
    assert_eq!(report.outcome.text(), format!("edge2a.contoso.com: {INTERRUPTED}"));
    // The retry asks about the first attempt, then runs, with nothing of the first still alive.
    let retried = rt.block_on(dispatcher.execute(request(t2, stop("edge2a.contoso.com"), Duration::from_secs(30))));
    assert_eq!(retried.outcome.text(), "5 services stopped");
    let starts: Vec<(String, String)> = fleet
        .execution_pids(&edge2a)?
        .into_iter()
        .map(|e| (e.key, e.status))
        .collect();
    assert_eq!(
        starts,
        [
            (t1.to_string(), "started".to_string()),
            (t2.to_string(), "ok".to_string())
        ],
        "each attempt started once; the first never finished"
    );
    assert!(
        fleet
            .log(&edge2a)
            .contains("its processes were still there and are ended")
            || fleet.log(&edge2a).contains("its processes are gone"),
        "{}",
        fleet.log(&edge2a)
    );
    Ok(())
}

/// A TCP relay between the dispatcher and an agent that can be cut (every connection dropped,
/// new ones closed at once) and mended, to lose a call's connection after its request was sent.
struct Relay {
    address: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    fn start(rt: &tokio::runtime::Runtime, agent: std::net::SocketAddr) -> Result<Relay> {
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let address = listener.local_addr()?;
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, l) = (cut.clone(), links.clone());
        rt.spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(agent).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                l.lock().expect("not poisoned").push(task.abort_handle());
            }
        });
        Ok(Relay { address, cut, links })
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().expect("not poisoned").drain(..) {
            link.abort();
        }
    }

    fn mend(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_lost_connection_is_an_unknown_outcome_and_the_next_attempt_asks_before_it_runs() -> Result<()> {
    let edge2a = fqdn("edge2a.contoso.com");
    let fleet = Fleet::start_all(vec![AgentSpec::new("edge2a.contoso.com")])?;
    fleet.edit_sim(&edge2a, |s| {
        s["inject"] = json!({ "services.stop": { "delay_ms": 2000 } })
    })?;
    let rt = runtime();
    let relay = Relay::start(&rt, fleet.address(&edge2a)?)?;
    let mut config = fleet.dispatcher_config();
    config.agents.insert(edge2a.clone(), relay.address.into());
    config.poll_wait = Duration::from_millis(300);
    config.request_timeout = Duration::from_secs(1);
    let dispatcher = std::sync::Arc::new(baton_actions::dispatcher::Dispatcher::new(config)?);
    let (t1, t2) = ("flap/s2/a1-edge2a/t1", "flap/s2/a1-edge2a/t2");
    let d = dispatcher.clone();
    let first = rt.spawn(async move {
        d.execute(request(t1, stop("edge2a.contoso.com"), Duration::from_secs(3)))
            .await
    });
    // The network fails once the agent has the call, and stays down past the call's deadline.
    fleet.wait_running(&edge2a, t1, Duration::from_secs(15))?;
    relay.cut();
    let report = rt.block_on(first)?;
    assert!(report.outcome.is_unknown(), "{:?}", report.outcome);
    assert!(
        report
            .outcome
            .text()
            .starts_with("edge2a.contoso.com: outcome unknown: the request may have reached the agent"),
        "{}",
        report.outcome.text()
    );
    // Meanwhile the agent finished the action. The network is back; the next attempt asks
    // about the first, learns it succeeded, and stops nothing a second time.
    relay.mend();
    let retried = rt.block_on(dispatcher.execute(request(t2, stop("edge2a.contoso.com"), Duration::from_secs(10))));
    assert_eq!(
        retried.outcome.text(),
        "5 services stopped (by attempt 1, found when asked before this one)"
    );
    assert!(retried.replayed);
    let keys: Vec<String> = fleet.executions(&edge2a)?.into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(keys, [t1], "Stop-CsWindowsService ran once");
    // The agent retired nothing and recorded no second key: t2 was never sent.
    assert_eq!(fleet.journal_row(&edge2a, t2)?, None);
    Ok(())
}

#[test]
fn a_second_key_of_the_same_kind_is_refused_while_one_runs_and_a_key_never_received_is_retired() -> Result<()> {
    let edge2a = fqdn("edge2a.contoso.com");
    let fleet = Fleet::start_all(vec![AgentSpec::new("edge2a.contoso.com")])?;
    fleet.edit_sim(&edge2a, |s| {
        s["inject"] = json!({ "services.stop": { "delay_ms": 3000, "times": 1 } })
    })?;
    let rt = runtime();
    let dispatcher = std::sync::Arc::new(fleet.dispatcher()?);
    let d = dispatcher.clone();
    let first = rt.spawn(async move {
        d.execute(request("busy/a", stop("edge2a.contoso.com"), Duration::from_secs(10)))
            .await
    });
    fleet.wait_running(&edge2a, "busy/a", Duration::from_secs(15))?;
    let second =
        rt.block_on(dispatcher.execute(request("busy/b", stop("edge2a.contoso.com"), Duration::from_secs(10))));
    assert!(
        second.outcome.text().starts_with(
            "edge2a.contoso.com: the agent refused the request (409): services.stop is already running on edge2a.contoso.com (key busy/a, for "
        ),
        "{}",
        second.outcome.text()
    );
    // A look is not held up.
    let look = rt.block_on(dispatcher.execute(request(
        "busy/look",
        Action::ServicesStatus { host: edge2a.clone() },
        Duration::from_secs(10),
    )));
    assert!(look.outcome.is_ok(), "{:?}", look.outcome);
    assert_eq!(rt.block_on(first)?.outcome.text(), "5 services stopped");
    // Asking about a key the agent never received retires it: its call can never run later.
    let never = key("busy/never");
    let state = rt.block_on(dispatcher.ask(&edge2a, &never, &stop("edge2a.contoso.com"), Duration::from_secs(5)))?;
    assert_eq!(state, baton_actions::protocol::KeyState::Retired { key: never.clone() });
    let late = rt.block_on(dispatcher.execute(request(
        "busy/never",
        stop("edge2a.contoso.com"),
        Duration::from_secs(10),
    )));
    assert!(
        late.replayed && late.outcome.text().contains("never received"),
        "{:?}",
        late.outcome
    );
    let keys: Vec<String> = fleet.executions(&edge2a)?.into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(keys, ["busy/a", "busy/look"]);
    Ok(())
}

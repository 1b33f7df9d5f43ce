//! Turns a finished executor process into the agent's answer: exit status and timeout into
//! clear failures, the last line of standard output into the action's typed result, and the
//! result checked against what the action was meant to achieve (the cmdlets print nothing on
//! success, so the scripts read the state back and the agent verifies it here).

use crate::process::{Exit, Finished};
use baton_runbook::IdempotencyKey;
use baton_runbook::catalog::{Action, xmpp_route};
use baton_runbook::names::shown;
use baton_runbook::protocol::{
    ActionAnswer, ActionResult, DnsAReport, DnsSrvReport, RouteChangeReport, RouteReport, ServiceState, ServicesReport,
};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Bytes of each output tail sent back in a failed answer.
pub const TAIL_SENT: usize = 2048;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The answer for a finished process.
pub fn interpret(action: &Action, key: &IdempotencyKey, finished: &Finished, timeout: Duration) -> ActionAnswer {
    let elapsed_ms = millis(finished.elapsed);
    let failed = |error: String| ActionAnswer::Failed {
        key: key.clone(),
        error,
        elapsed_ms,
        replayed: false,
        stdout_tail: finished.stdout.text(TAIL_SENT),
        stderr_tail: finished.stderr.text(TAIL_SENT),
    };
    let last_err = || {
        finished
            .stderr
            .last_line()
            .map(|l| format!(": {}", shown(&l)))
            .unwrap_or_default()
    };
    match &finished.exit {
        Exit::SpawnFailed(why) => failed(format!("{} could not run: {why}", action.id())),
        Exit::TimedOut => failed(format!(
            "{} timed out after {}; the process and its children were killed",
            action.id(),
            humantime::format_duration(Duration::from_millis(millis(timeout)))
        )),
        Exit::Signal(sig) => failed(format!(
            "{} was killed by signal {}{}",
            action.id(),
            sig.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
            last_err()
        )),
        Exit::Code(code) if *code != 0 => failed(format!("{} failed with exit code {code}{}", action.id(), last_err())),
        Exit::Code(_) => match verify(action, finished.stdout.last_line().as_deref()) {
            Ok((detail, result)) => ActionAnswer::Ok {
                key: key.clone(),
                detail,
                result,
                elapsed_ms,
                replayed: false,
            },
            Err(why) => failed(format!("{}: {why}", action.id())),
        },
    }
}

fn parse<T: DeserializeOwned>(line: Option<&str>) -> Result<T, String> {
    let line = line.ok_or_else(|| "the executor printed no result".to_string())?;
    serde_json::from_str(line).map_err(|e| format!("the result is not the expected JSON ({e}): {}", shown(line)))
}

fn service_list(services: &[ServiceState]) -> String {
    services
        .iter()
        .map(|s| format!("{} ({})", shown(&s.name), shown(&s.status)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every service must be in `wanted` state after a stop or start.
fn services_in(report: ServicesReport, wanted: &str, verb: &str) -> Result<(String, ActionResult), String> {
    if report.services.is_empty() {
        return Err("Get-CsWindowsService lists no Lync services on this host".to_string());
    }
    let wrong: Vec<ServiceState> = report
        .services
        .iter()
        .filter(|s| !s.status.eq_ignore_ascii_case(wanted))
        .cloned()
        .collect();
    if !wrong.is_empty() {
        return Err(format!("not {verb} after the cmdlet: {}", service_list(&wrong)));
    }
    Ok((
        format!("{} services {verb}", report.services.len()),
        ActionResult::Services(report),
    ))
}

fn route_text(route: &Option<String>) -> String {
    route.as_deref().map(shown).unwrap_or_else(|| "(none)".to_string())
}

/// Checks the printed result against the action's intent.
fn verify(action: &Action, line: Option<&str>) -> Result<(String, ActionResult), String> {
    match action {
        Action::ServicesStop { .. } => services_in(parse(line)?, "Stopped", "stopped"),
        Action::ServicesStart { .. } => services_in(parse(line)?, "Running", "running"),
        Action::ServicesStatus { .. } => {
            let report: ServicesReport = parse(line)?;
            let running = report
                .services
                .iter()
                .filter(|s| s.status.eq_ignore_ascii_case("Running"))
                .count();
            let detail = format!("{running} of {} services running", report.services.len());
            Ok((detail, ActionResult::Services(report)))
        }
        Action::RouteGet { site, .. } => {
            let report: RouteReport = parse(line)?;
            if report.site != *site {
                return Err(format!("asked for site {site}, the result is for {}", report.site));
            }
            let detail = match &report.route {
                Some(r) => format!("{site} XMPP federation route {}", shown(r)),
                None => format!("{site} has no XMPP federation route"),
            };
            Ok((detail, ActionResult::Route(report)))
        }
        Action::RouteSet { site, edge_pool, .. } => {
            let report: RouteChangeReport = parse(line)?;
            let wanted = xmpp_route(edge_pool);
            let took = report
                .after
                .as_deref()
                .is_some_and(|a| a.eq_ignore_ascii_case(&wanted) || a.eq_ignore_ascii_case(edge_pool.as_str()));
            if report.site != *site || !took {
                return Err(format!(
                    "Set-CsSite {site} -{} did not take: Get-CsSite shows {} (wanted {wanted})",
                    shown(&report.parameter),
                    route_text(&report.after)
                ));
            }
            let detail = format!(
                "{site} route {} -> {} (-{})",
                route_text(&report.before),
                route_text(&report.after),
                shown(&report.parameter)
            );
            Ok((detail, ActionResult::RouteChange(report)))
        }
        Action::DnsSetA { name, address, .. } => {
            let report: DnsAReport = parse(line)?;
            if report.name != *name || report.addresses != [*address] {
                let got: Vec<String> = report.addresses.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "{name} A is [{}] after the change, wanted [{address}]",
                    got.join(", ")
                ));
            }
            Ok((format!("{name} A {address} confirmed"), ActionResult::DnsA(report)))
        }
        Action::DnsEnsureSrv {
            name,
            target,
            port,
            priority,
            weight,
            ..
        } => {
            let report: DnsSrvReport = parse(line)?;
            let matching = report
                .records
                .iter()
                .filter(|r| r.target == *target && r.port == *port && r.priority == *priority && r.weight == *weight)
                .count();
            if report.name != *name || matching != 1 {
                return Err(format!(
                    "{name} holds {matching} SRV records {priority} {weight} {port} {target}, wanted exactly one"
                ));
            }
            let how = if report.created { "created" } else { "already present" };
            Ok((
                format!("{name} SRV -> {target}:{port} {how}, present once"),
                ActionResult::DnsSrv(report),
            ))
        }
        Action::Health { .. } | Action::PortCheck { .. } | Action::Verify { .. } => {
            Err("is not an agent action".to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invoke::tests::catalog;
    use crate::process::Tail;

    fn finished(exit: Exit, stdout: &str, stderr: &str) -> Finished {
        let mut out = Tail::new(1 << 16);
        out.push(stdout.as_bytes());
        let mut err = Tail::new(1 << 16);
        err.push(stderr.as_bytes());
        Finished {
            exit,
            stdout: out,
            stderr: err,
            elapsed: Duration::from_millis(1500),
            pid: Some(1),
        }
    }

    /// Interprets one process end and shows `ok: detail` or `failed: error`.
    fn check(action: &Action, exit: Exit, stdout: &str, stderr: &str, expect: &str) {
        let key = IdempotencyKey::parse("k").expect("valid");
        let got = match interpret(action, &key, &finished(exit, stdout, stderr), Duration::from_secs(2)) {
            ActionAnswer::Ok { detail, .. } => format!("ok: {detail}"),
            ActionAnswer::Failed { error, .. } => format!("failed: {error}"),
            ActionAnswer::Running { .. } => "running".to_string(),
        };
        assert_eq!(got, expect);
    }

    #[test]
    fn processes_become_answers() {
        let [stop, _start, status, get, set, a, srv] = <[Action; 7]>::try_from(catalog()).expect("seven actions");
        let stopped = r#"{"services":[{"name":"RTCSRV","status":"Stopped"},{"name":"RTCMRAUTH","status":"Stopped"}]}"#;
        check(
            &stop,
            Exit::Code(0),
            &format!("WARNING: noise\n{stopped}\n"),
            "",
            "ok: 2 services stopped",
        );
        check(
            &stop,
            Exit::Code(0),
            r#"{"services":[{"name":"RTCSRV","status":"Running"},{"name":"RTCMRAUTH","status":"Stopped"}]}"#,
            "",
            "failed: services.stop: not stopped after the cmdlet: RTCSRV (Running)",
        );
        check(
            &stop,
            Exit::Code(0),
            r#"{"services":[]}"#,
            "",
            "failed: services.stop: Get-CsWindowsService lists no Lync services on this host",
        );
        check(
            &stop,
            Exit::Code(0),
            "",
            "",
            "failed: services.stop: the executor printed no result",
        );
        check(
            &stop,
            Exit::Code(0),
            r#"{"services":[],"extra":1}"#,
            "",
            "failed: services.stop: the result is not the expected JSON (unknown field `extra`, expected `services` at line 1 column 22): {\\\"services\\\":[],\\\"extra\\\":1}",
        );
        check(
            &stop,
            Exit::Code(1),
            "",
            "line1\nThe term 'Stop-CsWindowsService' is not recognized\n",
            "failed: services.stop failed with exit code 1: The term \\'Stop-CsWindowsService\\' is not recognized",
        );
        check(
            &stop,
            Exit::TimedOut,
            "",
            "",
            "failed: services.stop timed out after 2s; the process and its children were killed",
        );
        check(
            &stop,
            Exit::Signal(Some(9)),
            "",
            "",
            "failed: services.stop was killed by signal 9",
        );
        check(
            &stop,
            Exit::SpawnFailed("cannot start x: not found".into()),
            "",
            "",
            "failed: services.stop could not run: cannot start x: not found",
        );

        check(
            &status,
            Exit::Code(0),
            r#"{"services":[{"name":"A","status":"Running"},{"name":"B","status":"Stopped"}]}"#,
            "",
            "ok: 1 of 2 services running",
        );

        check(
            &set,
            Exit::Code(0),
            r#"{"site":"Site2","parameter":"XmppFederationRoute","value":"EdgeServer:edgepool2.contoso.com","before":"EdgeServer:edgepool1.contoso.com","after":"EdgeServer:edgepool2.contoso.com"}"#,
            "",
            "ok: Site2 route EdgeServer:edgepool1.contoso.com -> EdgeServer:edgepool2.contoso.com (-XmppFederationRoute)",
        );
        check(
            &set,
            Exit::Code(0),
            r#"{"site":"Site2","parameter":"XmppExternalFederationRoute","value":"edgepool2.contoso.com","before":null,"after":"edgepool2.contoso.com"}"#,
            "",
            "ok: Site2 route (none) -> edgepool2.contoso.com (-XmppExternalFederationRoute)",
        );
        check(
            &set,
            Exit::Code(0),
            r#"{"site":"Site2","parameter":"XmppFederationRoute","value":"EdgeServer:edgepool2.contoso.com","before":"EdgeServer:edgepool1.contoso.com","after":"EdgeServer:edgepool1.contoso.com"}"#,
            "",
            "failed: route.set: Set-CsSite Site2 -XmppFederationRoute did not take: Get-CsSite shows EdgeServer:edgepool1.contoso.com (wanted EdgeServer:edgepool2.contoso.com)",
        );
        check(
            &get,
            Exit::Code(0),
            r#"{"site":"Site2","route":null}"#,
            "",
            "ok: Site2 has no XMPP federation route",
        );
        check(
            &get,
            Exit::Code(0),
            r#"{"site":"Site1","route":null}"#,
            "",
            "failed: route.get: asked for site Site2, the result is for Site1",
        );

        check(
            &a,
            Exit::Code(0),
            r#"{"name":"xmpp.contoso.com","addresses":["203.0.113.20"]}"#,
            "",
            "ok: xmpp.contoso.com A 203.0.113.20 confirmed",
        );
        check(
            &a,
            Exit::Code(0),
            r#"{"name":"xmpp.contoso.com","addresses":["203.0.113.10","203.0.113.20"]}"#,
            "",
            "failed: dns.set_a: xmpp.contoso.com A is [203.0.113.10, 203.0.113.20] after the change, wanted [203.0.113.20]",
        );
        check(
            &srv,
            Exit::Code(0),
            r#"{"name":"_xmpp-server._tcp.contoso.com","records":[{"target":"XMPP.contoso.com","port":5269,"priority":10,"weight":10}],"created":true}"#,
            "",
            "ok: _xmpp-server._tcp.contoso.com SRV -> xmpp.contoso.com:5269 created, present once",
        );
        check(
            &srv,
            Exit::Code(0),
            r#"{"name":"_xmpp-server._tcp.contoso.com","records":[],"created":true}"#,
            "",
            "failed: dns.ensure_srv: _xmpp-server._tcp.contoso.com holds 0 SRV records 10 10 5269 xmpp.contoso.com, wanted exactly one",
        );
    }

    #[test]
    fn failures_carry_bounded_tails() {
        let key = IdempotencyKey::parse("k").expect("valid");
        let stop = &catalog()[0];
        let noisy = "x".repeat(10_000);
        match interpret(
            stop,
            &key,
            &finished(Exit::Code(2), &noisy, &noisy),
            Duration::from_secs(1),
        ) {
            ActionAnswer::Failed {
                stdout_tail,
                stderr_tail,
                ..
            } => {
                assert!(stdout_tail.len() <= TAIL_SENT + 3 && stdout_tail.starts_with('…'));
                assert!(stderr_tail.len() <= TAIL_SENT + 3);
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}

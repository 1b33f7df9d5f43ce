//! The Lync simulator's command line, as the agent's `command` executor runs it: parameters on
//! stdin, one JSON result line, state in a file, injected delays and failures.

use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs one action and returns (exit code, stdout, stderr).
fn sim(state: &Path, action: &str, key: &str, params: Value, extra: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton-lync-sim"))
        .arg("--state")
        .arg(state)
        .args(extra)
        .env("BATON_ACTION", action)
        .env("BATON_KEY", key)
        .env_remove("BATON_SIM_DELAY_MS")
        .env_remove("BATON_SIM_FAIL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the simulator starts");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(params.to_string().as_bytes())
        .expect("writes");
    let out = child.wait_with_output().expect("the simulator ends");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn state(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("state exists")).expect("state is JSON")
}

#[test]
fn actions_change_the_state_and_print_one_result_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mgmt.json");
    std::fs::write(
        &path,
        json!({"services": {"RTCSRV": "Running"}, "sites": {"Site2": null}}).to_string(),
    )
    .expect("seed");
    let host = json!({"host": "edge2a.contoso.com"});
    assert_eq!(
        sim(&path, "services.stop", "k1", host.clone(), &[]).1,
        r#"{"services":[{"name":"RTCSRV","status":"Stopped"}]}"#
    );
    let route =
        json!({"site": "Site2", "edge_pool": "edgepool2.contoso.com", "route": "EdgeServer:edgepool2.contoso.com"});
    assert_eq!(
        sim(&path, "route.set", "k2", route, &[]).1,
        r#"{"site":"Site2","parameter":"XmppFederationRoute","value":"EdgeServer:edgepool2.contoso.com","before":null,"after":"EdgeServer:edgepool2.contoso.com"}"#
    );
    let (code, _, err) = sim(&path, "route.get", "k3", json!({"site": "Site9"}), &[]);
    assert_eq!((code, err.as_str()), (1, "Get-CsSite: no site Site9"));
    let (code, _, err) = sim(
        &path,
        "services.start",
        "k4",
        host.clone(),
        &["--fail", "RTCSRV would not start"],
    );
    assert_eq!((code, err.as_str()), (1, "RTCSRV would not start"));
    let s = state(&path);
    assert_eq!(s["services"]["RTCSRV"], "Stopped", "a failed action changes nothing");
    let runs: Vec<(&str, &str)> = s["executions"]
        .as_array()
        .expect("executions")
        .iter()
        .map(|e| (e["key"].as_str().unwrap_or(""), e["status"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(runs, [("k1", "ok"), ("k2", "ok"), ("k3", "failed"), ("k4", "failed")]);
}

#[test]
fn injected_failures_apply_the_given_number_of_times() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edge.json");
    std::fs::write(
        &path,
        json!({"services": {"RTCSRV": "Stopped"}, "inject": {"services.start": {"fail": "boom", "times": 1}}})
            .to_string(),
    )
    .expect("seed");
    let host = json!({"host": "edge2a.contoso.com"});
    assert_eq!(sim(&path, "services.start", "a", host.clone(), &[]).0, 1);
    assert_eq!(sim(&path, "services.start", "b", host, &[]).0, 0);
    assert_eq!(state(&path)["services"]["RTCSRV"], "Running");
    assert!(state(&path)["inject"].as_object().is_some_and(|m| m.is_empty()));
}

//! What each executor starts for an action: the flat parameter object every executor receives,
//! the `command` executor's argv with parameters on stdin and in the environment, and the
//! `powershell` executor's fixed embedded scripts run with `-EncodedCommand`.
//!
//! Parameters are always data (JSON on stdin or in `BATON_PARAMS`, one `BATON_PARAM_*` variable
//! each); no parameter is ever spliced into an argv element or a script text.

use crate::config::{ExecutorConfig, LyncModule};
use crate::process::Invocation;
use base64::Engine;
use baton_runbook::IdempotencyKey;
use baton_runbook::catalog::{Action, DnsVia, relative, xmpp_route};
use serde_json::{Map, Value, json};

/// The flat parameters of an action, as executors receive them: names, addresses and numbers
/// only, with derived values (the route's service identity, a record's zone-relative name)
/// computed here so that scripts stay simple.
pub fn parameters(action: &Action) -> Map<String, Value> {
    let value = match action {
        Action::Health { host }
        | Action::ServicesStop { host }
        | Action::ServicesStart { host }
        | Action::ServicesStatus { host } => json!({ "host": host }),
        Action::RouteGet { host, site } => json!({ "host": host, "site": site }),
        Action::RouteSet { host, site, edge_pool } => {
            json!({ "host": host, "site": site, "edge_pool": edge_pool, "route": xmpp_route(edge_pool) })
        }
        Action::DnsSetA {
            dns,
            name,
            address,
            ttl,
        } => {
            let zone = dns_zone(dns);
            json!({ "zone": zone, "name": name, "record": relative(name, zone), "address": address, "ttl": ttl })
        }
        Action::DnsEnsureSrv {
            dns,
            name,
            target,
            port,
            priority,
            weight,
            ttl,
        } => {
            let zone = dns_zone(dns);
            json!({
                "zone": zone, "name": name, "record": relative(name, zone), "target": target,
                "port": port, "priority": priority, "weight": weight, "ttl": ttl,
            })
        }
        Action::PortCheck { address, port } => json!({ "address": address, "port": port }),
        Action::Verify {
            srv,
            host,
            address,
            port,
            domain,
        } => {
            json!({ "srv": srv, "host": host, "address": address, "port": port, "domain": domain })
        }
    };
    match value {
        Value::Object(map) => map,
        _ => unreachable!("every arm above builds an object"),
    }
}

fn dns_zone(dns: &DnsVia) -> &baton_runbook::names::Fqdn {
    match dns {
        DnsVia::Rfc2136 { zone, .. } | DnsVia::Agent { zone, .. } => zone,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The variables every executor gets: the action id, the key, and the parameters as JSON.
fn common_env(key: &IdempotencyKey, action: &Action, params: &Map<String, Value>) -> Vec<(String, String)> {
    vec![
        ("BATON_ACTION".to_string(), action.id().to_string()),
        ("BATON_KEY".to_string(), key.to_string()),
        ("BATON_PARAMS".to_string(), Value::Object(params.clone()).to_string()),
    ]
}

/// The `command` executor: the configured argv, parameters as JSON on stdin, and each parameter
/// also as `BATON_PARAM_<NAME>`.
pub fn command(argv: &[String], key: &IdempotencyKey, action: &Action) -> Invocation {
    let params = parameters(action);
    let mut env = common_env(key, action, &params);
    env.extend(
        params
            .iter()
            .map(|(k, v)| (format!("BATON_PARAM_{}", k.to_ascii_uppercase()), text(v))),
    );
    Invocation {
        program: argv.first().map(Into::into).unwrap_or_default(),
        args: argv.iter().skip(1).cloned().collect(),
        env,
        stdin: Some(Value::Object(params).to_string().into_bytes()),
    }
}

const PRELUDE: &str = include_str!("scripts/prelude.ps1");
const SERVICES: &str = include_str!("scripts/services.ps1");
const ROUTE: &str = include_str!("scripts/route.ps1");

/// The fixed script of an action: the prelude, the module import, shared functions and the
/// action's body. The module name comes from a closed enum, never from a request.
pub fn script(module: LyncModule, action: &Action) -> Option<String> {
    let lync = format!("Import-Module {}\n", module.name());
    let dns = "Import-Module DnsServer\n".to_string();
    let (import, parts): (String, &[&str]) = match action {
        Action::ServicesStop { .. } => (lync, &[SERVICES, include_str!("scripts/services_stop.ps1")]),
        Action::ServicesStart { .. } => (lync, &[SERVICES, include_str!("scripts/services_start.ps1")]),
        Action::ServicesStatus { .. } => (lync, &[SERVICES, include_str!("scripts/services_status.ps1")]),
        Action::RouteGet { .. } => (lync, &[ROUTE, include_str!("scripts/route_get.ps1")]),
        Action::RouteSet { .. } => (lync, &[ROUTE, include_str!("scripts/route_set.ps1")]),
        Action::DnsSetA { .. } => (dns, &[include_str!("scripts/dns_set_a.ps1")]),
        Action::DnsEnsureSrv { .. } => (dns, &[include_str!("scripts/dns_ensure_srv.ps1")]),
        Action::Health { .. } | Action::PortCheck { .. } | Action::Verify { .. } => return None,
    };
    let mut s = String::from(PRELUDE);
    s.push_str(&import);
    for p in parts {
        s.push_str(p);
    }
    Some(s)
}

/// `-EncodedCommand` takes the script as base64 of its UTF-16LE encoding.
pub fn encode_command(script: &str) -> String {
    let utf16: Vec<u8> = script.encode_utf16().flat_map(u16::to_le_bytes).collect();
    base64::engine::general_purpose::STANDARD.encode(utf16)
}

/// The `powershell` executor: `powershell.exe -NoLogo -NoProfile -NonInteractive
/// -EncodedCommand <fixed script>`, parameters as JSON in `BATON_PARAMS`, no standard input.
pub fn powershell(
    program: &std::path::Path,
    module: LyncModule,
    key: &IdempotencyKey,
    action: &Action,
) -> Option<Invocation> {
    let script = script(module, action)?;
    let params = parameters(action);
    Some(Invocation {
        program: program.to_path_buf(),
        args: vec![
            "-NoLogo".into(),
            "-NoProfile".into(),
            "-NonInteractive".into(),
            "-EncodedCommand".into(),
            encode_command(&script),
        ],
        env: common_env(key, action, &params),
        stdin: None,
    })
}

/// What the configured executor starts for `action`, or `None` if it has nothing for it.
pub fn invocation(executor: &ExecutorConfig, key: &IdempotencyKey, action: &Action) -> Option<Invocation> {
    match executor {
        ExecutorConfig::Command { commands } => commands.get(action.id()).map(|argv| command(argv, key, action)),
        ExecutorConfig::PowerShell { program, module } => powershell(program, *module, key, action),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::DEFAULT_POWERSHELL;
    use baton_runbook::names::{Fqdn, SiteName};
    use std::path::Path;

    fn fqdn(s: &str) -> Fqdn {
        Fqdn::parse(s).expect("valid")
    }

    fn key() -> IdempotencyKey {
        IdempotencyKey::new("st", 7, 1, 0, "edge2a", 1)
    }

    fn windows_dns() -> DnsVia {
        DnsVia::Agent {
            host: fqdn("dns1.contoso.com"),
            zone: fqdn("contoso.com"),
        }
    }

    /// One action of each kind an agent carries out, in [`crate::config::AGENT_ACTIONS`]
    /// order (the other agent modules' tests use it too).
    pub(crate) fn catalog() -> Vec<Action> {
        vec![
            Action::ServicesStop {
                host: fqdn("edge2a.contoso.com"),
            },
            Action::ServicesStart {
                host: fqdn("edge2a.contoso.com"),
            },
            Action::ServicesStatus {
                host: fqdn("edge2a.contoso.com"),
            },
            Action::RouteGet {
                host: fqdn("mgmt1.contoso.com"),
                site: SiteName::parse("Site2").expect("valid"),
            },
            Action::RouteSet {
                host: fqdn("mgmt1.contoso.com"),
                site: SiteName::parse("Site2").expect("valid"),
                edge_pool: fqdn("edgepool2.contoso.com"),
            },
            Action::DnsSetA {
                dns: windows_dns(),
                name: fqdn("xmpp.contoso.com"),
                address: "203.0.113.20".parse().expect("ip"),
                ttl: 300,
            },
            Action::DnsEnsureSrv {
                dns: windows_dns(),
                name: fqdn("_xmpp-server._tcp.contoso.com"),
                target: fqdn("xmpp.contoso.com"),
                port: 5269,
                priority: 10,
                weight: 10,
                ttl: 300,
            },
        ]
    }

    /// Decodes `-EncodedCommand` back to the script, as PowerShell does.
    fn decode_command(b64: &str) -> String {
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16(&units).expect("utf-16")
    }

    /// One line per action: program, flags, the environment, and what the decoded script runs.
    fn describe_powershell(module: LyncModule) -> String {
        let mut out = String::new();
        for action in catalog() {
            let inv = powershell(Path::new(DEFAULT_POWERSHELL), module, &key(), &action).expect("an agent action");
            let (flags, encoded) = inv.args.split_at(4);
            let script = decode_command(&encoded[0]);
            assert!(inv.args.len() == 5 && inv.stdin.is_none());
            let cmdlets: Vec<&str> = [
                "Import-Module Lync",
                "Import-Module SkypeForBusiness",
                "Import-Module DnsServer",
                "Stop-CsWindowsService",
                "Start-CsWindowsService",
                "Get-CsWindowsService",
                "Get-CsSite",
                "Set-CsSite",
                "Remove-DnsServerResourceRecord",
                "Add-DnsServerResourceRecordA",
                "Add-DnsServerResourceRecord ",
            ]
            .into_iter()
            .filter(|c| script.contains(c))
            .collect();
            out.push_str(&format!("{} {}\n", inv.program.display(), flags.join(" ")));
            for (k, v) in &inv.env {
                out.push_str(&format!("  {k}={v}\n"));
            }
            out.push_str(&format!("  script: {}\n", cmdlets.join(", ")));
        }
        out
    }

    #[test]
    fn powershell_command_lines_and_environment_for_lync_2013() {
        expect_test::expect![[r#"
            C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe -NoLogo -NoProfile -NonInteractive -EncodedCommand
              BATON_ACTION=services.stop
              BATON_KEY=st/r7/s2/a1-edge2a/t1
              BATON_PARAMS={"host":"edge2a.contoso.com"}
              script: Import-Module Lync, Stop-CsWindowsService, Get-CsWindowsService
            C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe -NoLogo -NoProfile -NonInteractive -EncodedCommand
              BATON_ACTION=services.start
              BATON_KEY=st/r7/s2/a1-edge2a/t1
              BATON_PARAMS={"host":"edge2a.contoso.com"}
              script: Import-Module Lync, Start-CsWindowsService, Get-CsWindowsService
            C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe -NoLogo -NoProfile -NonInteractive -EncodedCommand
              BATON_ACTION=services.status
              BATON_KEY=st/r7/s2/a1-edge2a/t1
              BATON_PARAMS={"host":"edge2a.contoso.com"}
              script: Import-Module Lync, Get-CsWindowsService
            C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe -NoLogo -NoProfile -NonInteractive -EncodedCommand
              BATON_ACTION=route.get
              BATON_KEY=st/r7/s2/a1-edge2a/t1
              BATON_PARAMS={"host":"mgmt1.contoso.com","site":"Site2"}
              script: Import-Module Lync, Get-CsSite
            C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe -NoLogo -NoProfile -NonInteractive -EncodedCommand
              BATON_ACTION=route.set
              BATON_KEY=st/r7/s2/a1-edge2a/t1
              BATON_PARAMS={"edge_pool":"edgepool2.contoso.com","host":"mgmt1.contoso.com","route":"EdgeServer:edgepool2.contoso.com","site":"Site2"}
              script: Import-Module Lync, Get-CsSite, Set-CsSite
            C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe -NoLogo -NoProfile -NonInteractive -EncodedCommand
              BATON_ACTION=dns.set_a
              BATON_KEY=st/r7/s2/a1-edge2a/t1
              BATON_PARAMS={"address":"203.0.113.20","name":"xmpp.contoso.com","record":"xmpp","ttl":300,"zone":"contoso.com"}
              script: Import-Module DnsServer, Remove-DnsServerResourceRecord, Add-DnsServerResourceRecordA
            C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe -NoLogo -NoProfile -NonInteractive -EncodedCommand
              BATON_ACTION=dns.ensure_srv
              BATON_KEY=st/r7/s2/a1-edge2a/t1
              BATON_PARAMS={"name":"_xmpp-server._tcp.contoso.com","port":5269,"priority":10,"record":"_xmpp-server._tcp","target":"xmpp.contoso.com","ttl":300,"weight":10,"zone":"contoso.com"}
              script: Import-Module DnsServer, Add-DnsServerResourceRecord 
        "#]]
        .assert_eq(&describe_powershell(LyncModule::Lync));
    }

    #[test]
    fn skype_for_business_imports_its_own_module() {
        let text = describe_powershell(LyncModule::SkypeForBusiness);
        assert_eq!(text.matches("Import-Module SkypeForBusiness").count(), 5);
        assert!(!text.contains("Import-Module Lync,"));
    }

    #[test]
    fn scripts_are_fixed_and_fit_a_windows_command_line() {
        for module in [LyncModule::Lync, LyncModule::SkypeForBusiness] {
            for action in catalog() {
                let inv = powershell(Path::new(DEFAULT_POWERSHELL), module, &key(), &action).expect("an agent action");
                let line_len: usize = inv.args.iter().map(|a| a.len() + 1).sum::<usize>() + DEFAULT_POWERSHELL.len();
                assert!(line_len < 32_767, "{} is {line_len} characters", action.id());
                let script = decode_command(&inv.args[4]);
                // No parameter value appears in the script text: they travel in BATON_PARAMS.
                for value in ["edge2a", "Site2", "edgepool2", "203.0.113.20", "xmpp.contoso.com"] {
                    assert!(!script.contains(value), "{} script contains {value}", action.id());
                }
                assert!(script.starts_with("# baton-agent fixed script."));
                assert!(script.contains("$env:BATON_PARAMS | ConvertFrom-Json"));
            }
        }
        let route = script(LyncModule::Lync, &catalog()[4]).expect("route.set");
        // The script detects the parameter the module offers and reads the route back.
        for needle in [
            "ContainsKey('XmppFederationRoute')",
            "ContainsKey('XmppExternalFederationRoute')",
            "$before = Read-Route",
            "$after = Read-Route",
        ] {
            assert!(route.contains(needle), "route.set script has {needle}");
        }
        assert!(
            script(
                LyncModule::Lync,
                &Action::PortCheck {
                    address: "203.0.113.20".parse().expect("ip"),
                    port: 5269
                }
            )
            .is_none()
        );
    }

    #[test]
    fn command_executor_passes_parameters_as_data() {
        let argv = vec![
            "/usr/bin/baton-lync-sim".to_string(),
            "--state".to_string(),
            "/tmp/mgmt.json".to_string(),
        ];
        let inv = command(&argv, &key(), &catalog()[4]);
        assert_eq!(inv.program, Path::new("/usr/bin/baton-lync-sim"));
        assert_eq!(inv.args, ["--state", "/tmp/mgmt.json"]);
        expect_test::expect![[r#"
            [
                (
                    "BATON_ACTION",
                    "route.set",
                ),
                (
                    "BATON_KEY",
                    "st/r7/s2/a1-edge2a/t1",
                ),
                (
                    "BATON_PARAMS",
                    "{\"edge_pool\":\"edgepool2.contoso.com\",\"host\":\"mgmt1.contoso.com\",\"route\":\"EdgeServer:edgepool2.contoso.com\",\"site\":\"Site2\"}",
                ),
                (
                    "BATON_PARAM_EDGE_POOL",
                    "edgepool2.contoso.com",
                ),
                (
                    "BATON_PARAM_HOST",
                    "mgmt1.contoso.com",
                ),
                (
                    "BATON_PARAM_ROUTE",
                    "EdgeServer:edgepool2.contoso.com",
                ),
                (
                    "BATON_PARAM_SITE",
                    "Site2",
                ),
            ]
        "#]]
        .assert_debug_eq(&inv.env);
        assert_eq!(
            String::from_utf8_lossy(inv.stdin.as_deref().expect("stdin")),
            r#"{"edge_pool":"edgepool2.contoso.com","host":"mgmt1.contoso.com","route":"EdgeServer:edgepool2.contoso.com","site":"Site2"}"#
        );
    }
}

//! Steps 4 to 6 and `verify` against real servers: TSIG-signed updates to BIND9 checked with
//! `dig`, port checks on loopback sockets, and the XMPP s2s probe.

use base64::Engine as _;
use baton_actions::Fqdn;
use baton_actions::dns::{Change, DnsUpdater, TsigKey};
use baton_e2e::bind::{Bind, FEDERATION_HOST, KEY_NAME, SRV_NAME, ZONE};
use secrecy::SecretString;
use std::net::Ipv4Addr;
use std::time::Duration;

fn fqdn(s: &str) -> Fqdn {
    Fqdn::parse(s).expect("test names are valid")
}

fn updater(bind: &Bind, secret: &str) -> DnsUpdater {
    let key = TsigKey::from_base64(KEY_NAME, &SecretString::from(secret.to_string())).expect("a valid key");
    DnsUpdater::new(bind.addr(), fqdn(ZONE), key, Duration::from_secs(5))
}

const POOL1: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 10);
const POOL2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 20);

#[tokio::test]
async fn steps_4_and_5_change_the_zone_once_and_then_nothing() {
    let bind = Bind::start(&format!(
        "xmpp 300 IN A {POOL1}\n_xmpp-server._tcp 300 IN SRV 10 10 5269 edgepool1.{ZONE}.\n"
    ))
    .expect("named starts");
    let dns = updater(&bind, bind.secret());
    let host = fqdn(FEDERATION_HOST);
    let srv = fqdn(SRV_NAME);

    let a = dns
        .set_a(&host, POOL2, 300)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", bind.log()));
    assert_eq!(
        a,
        Change::Replaced {
            before: vec![POOL1.to_string()]
        }
    );
    assert_eq!(
        bind.records(FEDERATION_HOST, "A").expect("dig"),
        vec![POOL2.to_string()]
    );

    let s = dns
        .ensure_srv(&srv, 10, 10, 5269, &host, 300)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", bind.log()));
    assert_eq!(
        s,
        Change::Replaced {
            before: vec![format!("10 10 5269 edgepool1.{ZONE}")]
        }
    );
    assert_eq!(
        bind.records(SRV_NAME, "SRV").expect("dig"),
        vec![format!("10 10 5269 {FEDERATION_HOST}.")]
    );

    let serial = bind.serial().expect("serial");
    assert_eq!(
        dns.set_a(&host, POOL2, 300).await.expect("second run"),
        Change::Unchanged
    );
    assert_eq!(
        dns.ensure_srv(&srv, 10, 10, 5269, &host, 300)
            .await
            .expect("second run"),
        Change::Unchanged
    );
    assert_eq!(
        bind.serial().expect("serial"),
        serial,
        "a second run does not touch the zone"
    );
    assert_eq!(bind.records(SRV_NAME, "SRV").expect("dig").len(), 1);
}

/// A zone with pool 1 in place, and the three answers a test compares before and after.
fn pool1_zone() -> Bind {
    Bind::start(&format!("xmpp 300 IN A {POOL1}\n")).expect("named starts")
}

fn snapshot(bind: &Bind) -> (Vec<String>, Vec<String>, u32) {
    (
        bind.records(FEDERATION_HOST, "A").expect("dig"),
        bind.records(SRV_NAME, "SRV").expect("dig"),
        bind.serial().expect("serial"),
    )
}

#[tokio::test]
async fn a_wrong_secret_or_unknown_key_fails_clearly_and_changes_nothing() {
    let bind = pool1_zone();
    let before = snapshot(&bind);
    let host = fqdn(FEDERATION_HOST);

    // Another valid HMAC-SHA256 secret: BIND knows the key name but the MAC does not verify.
    let wrong = updater(&bind, "Zm9yZ2VkLXNlY3JldC1mb3ItYmF0b24tdGVzdHMtMDE=");
    let err = wrong
        .set_a(&host, POOL2, 300)
        .await
        .expect_err("BIND rejects the signature");
    assert_eq!(
        err.to_string(),
        "the DNS server rejected TSIG key 'baton': the secret does not match the server's (BADSIG)"
    );
    let err = wrong
        .ensure_srv(&fqdn(SRV_NAME), 10, 10, 5269, &host, 300)
        .await
        .expect_err("rejected");
    assert!(
        err.to_string().starts_with("the DNS server rejected TSIG key 'baton'"),
        "{err}"
    );

    // A key name BIND does not know at all.
    let stranger = TsigKey::from_base64("intruder", &SecretString::from(bind.secret().to_string())).expect("key");
    let stranger = DnsUpdater::new(bind.addr(), fqdn(ZONE), stranger, Duration::from_secs(5));
    let err = stranger
        .set_a(&host, POOL2, 300)
        .await
        .expect_err("BIND does not know the key");
    assert_eq!(
        err.to_string(),
        "the DNS server rejected TSIG key 'intruder': the server does not know a key of that name and algorithm (BADKEY)"
    );

    assert_eq!(snapshot(&bind), before, "the zone is unchanged");
    assert!(
        bind.log().contains("BADSIG"),
        "named logged the rejection:\n{}",
        bind.log()
    );
}

#[tokio::test]
async fn a_name_outside_the_update_policy_is_refused_clearly() {
    let bind = pool1_zone();
    let before = snapshot(&bind);
    let dns = updater(&bind, bind.secret());
    let err = dns
        .set_a(&fqdn("www.contoso.test"), POOL2, 300)
        .await
        .expect_err("policy refuses");
    assert_eq!(
        err.to_string(),
        format!(
            "the DNS server {} refused to change www.contoso.test A (REFUSED): its update policy does not let key 'baton' change that record",
            bind.addr()
        )
    );
    // The SRV name may hold only SRV records under the policy.
    let err = dns
        .set_a(&fqdn(SRV_NAME), POOL2, 300)
        .await
        .expect_err("policy refuses");
    assert!(err.to_string().contains("(REFUSED)"), "{err}");
    assert_eq!(
        bind.records("www.contoso.test", "A").expect("dig"),
        Vec::<String>::new()
    );
    // A zone the server does not hold.
    let key = TsigKey::from_base64(KEY_NAME, &SecretString::from(bind.secret().to_string())).expect("key");
    let elsewhere = DnsUpdater::new(bind.addr(), fqdn("fabrikam.test"), key, Duration::from_secs(5));
    let err = elsewhere
        .set_a(&fqdn("xmpp.fabrikam.test"), POOL2, 300)
        .await
        .expect_err("not authoritative");
    assert_eq!(
        err.to_string(),
        format!(
            "the DNS server {} answered REFUSED to the query xmpp.fabrikam.test A",
            bind.addr()
        )
    );
    assert_eq!(snapshot(&bind), before);
}

#[tokio::test]
async fn queries_read_the_zone_and_a_stopped_server_is_named() {
    let bind = pool1_zone();
    let dns = updater(&bind, bind.secret());
    let a = dns.a(&fqdn(FEDERATION_HOST)).await.expect("query");
    assert_eq!(
        a.iter().map(|r| (r.address, r.ttl)).collect::<Vec<_>>(),
        vec![(POOL1, 300)]
    );
    assert!(dns.srv(&fqdn(SRV_NAME)).await.expect("query").is_empty(), "no SRV yet");
    assert!(
        dns.a(&fqdn("nothing.contoso.test"))
            .await
            .expect("NXDOMAIN is an empty answer")
            .is_empty()
    );
    let addr = bind.addr();
    drop(bind);
    let err = dns
        .set_a(&fqdn(FEDERATION_HOST), POOL2, 300)
        .await
        .expect_err("server gone");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot reach the DNS server {addr}: ")),
        "{err}"
    );
}

/// The secret must not reach any log line, error or Debug output, whatever the outcome.
#[tokio::test]
async fn the_tsig_secret_never_reaches_logs_or_errors() {
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let bind = pool1_zone();
    let right = updater(&bind, bind.secret());
    let wrong_secret = "Zm9yZ2VkLXNlY3JldC1mb3ItYmF0b24tdGVzdHMtMDE=";
    let wrong = updater(&bind, wrong_secret);
    let host = fqdn(FEDERATION_HOST);
    let mut said = vec![format!("{right:?}"), format!("{wrong:?}")];
    said.push(format!("{:?}", right.set_a(&host, POOL2, 300).await));
    said.push(format!("{:?}", wrong.set_a(&host, POOL1, 300).await));
    said.push(format!(
        "{:?}",
        right.set_a(&fqdn("www.contoso.test"), POOL1, 300).await
    ));
    let logged = logs.text();
    assert!(
        logged.contains("A record replaced and confirmed"),
        "the capture works:\n{logged}"
    );
    for secret in [bind.secret(), wrong_secret] {
        let raw = hex::encode(
            base64::engine::general_purpose::STANDARD
                .decode(secret)
                .expect("valid base64"),
        );
        assert_eq!(raw.len(), 64, "a 32-byte HMAC-SHA256 key");
        for text in said.iter().chain(std::iter::once(&logged)) {
            assert!(
                !text.contains(secret) && !text.contains(&raw),
                "secret leaked in: {text}"
            );
        }
    }
}

#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// The federation side: Prosody's s2s listener (the shared harness, with a certificate from a
// test CA) is the real endpoint the probe must accept.

use baton_actions::probe::{PortState, TlsTrust, port_check, s2s_probe};
use baton_e2e::prosody::{DOMAIN, Prosody, ProsodyOptions, TestPki, TlsFiles};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

fn test_pki(dir: &Path, name: &str) -> TestPki {
    baton_e2e::prosody::test_pki(dir, name).expect("test certificates")
}

/// Prosody with STARTTLS from `pki` (on its client and server-to-server ports).
fn start_prosody(pki: &TestPki) -> Prosody {
    let tls = TlsFiles {
        certificate: pki.cert.clone(),
        key: pki.key.clone(),
    };
    Prosody::start_with(ProsodyOptions {
        tls: Some(tls),
        ..ProsodyOptions::default()
    })
    .expect("prosody starts")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Kills a child process when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Python's standard HTTP server: a real HTTP endpoint that is not XMPP.
async fn http_server() -> (Running, SocketAddr) {
    let port = free_port();
    let dir = std::env::temp_dir();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts python3 -m http.server");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let running = Running(child);
    for _ in 0..150 {
        if port_check(addr, Duration::from_millis(200)).await.state == PortState::Open {
            return (running, addr);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("python3 -m http.server did not listen on {addr} within 15s")
}

fn domain() -> Fqdn {
    fqdn(DOMAIN)
}

#[tokio::test]
async fn the_s2s_probe_passes_against_prosody_and_completes_starttls() {
    let certs = tempfile::tempdir().expect("tempdir");
    let pki = test_pki(certs.path(), "good");
    let prosody = start_prosody(&pki);

    let plain = s2s_probe(prosody.s2s_addr(), &domain(), None, Duration::from_secs(5))
        .await
        .expect("s2s stream opens");
    assert!(!plain.stream_id.is_empty());
    assert_eq!(plain.from.as_deref(), Some(DOMAIN));
    assert!(plain.features.contains(&"starttls".to_string()), "{:?}", plain.features);
    assert!(plain.tls.is_none());

    let trust = TlsTrust::from_ca_file(&pki.ca).expect("CA loads");
    let secure = s2s_probe(prosody.s2s_addr(), &domain(), Some(&trust), Duration::from_secs(5))
        .await
        .expect("STARTTLS completes");
    let tls = secure.tls.as_ref().expect("TLS report");
    assert!(tls.version.starts_with("TLSv1"), "{tls:?}");
    assert!(
        !tls.stream_id.is_empty() && tls.stream_id != secure.stream_id,
        "a new stream after TLS: {tls:?}"
    );
    assert!(secure.summary().contains("STARTTLS ok, TLSv1"), "{}", secure.summary());

    let stranger = TlsTrust::from_ca_file(&test_pki(certs.path(), "other").ca).expect("CA loads");
    let e = s2s_probe(prosody.s2s_addr(), &domain(), Some(&stranger), Duration::from_secs(5))
        .await
        .expect_err("unknown CA");
    assert_eq!(
        e.to_string(),
        format!(
            "STARTTLS with {} failed: invalid peer certificate: UnknownIssuer",
            prosody.s2s_addr()
        )
    );

    let e = s2s_probe(prosody.s2s_addr(), &fqdn("other.test"), None, Duration::from_secs(5))
        .await
        .expect_err("not served");
    assert!(
        e.to_string()
            .contains("ended the stream for other.test with error 'host-unknown'"),
        "{e}"
    );
}

#[tokio::test]
async fn the_s2s_probe_rejects_http_and_client_ports() {
    let certs = tempfile::tempdir().expect("tempdir");
    let prosody = start_prosody(&test_pki(certs.path(), "good"));
    let (_http, http) = http_server().await;

    let e = s2s_probe(prosody.c2s_addr(), &domain(), None, Duration::from_secs(5))
        .await
        .expect_err("client port");
    assert_eq!(
        e.to_string(),
        format!(
            "{} is not an XMPP server-to-server endpoint: it opened a jabber:client stream (a client port, not the federation port)",
            prosody.c2s_addr()
        )
    );
    let e = s2s_probe(http, &domain(), None, Duration::from_secs(5))
        .await
        .expect_err("HTTP port");
    // Python answers the odd request line the HTTP/0.9 way: an HTML page without a status line.
    assert!(
        e.to_string()
            .starts_with(&format!("{http} is not an XMPP server-to-server endpoint: it sent '")),
        "{e}"
    );
    assert!(
        e.to_string().contains("DOCTYPE") || e.to_string().contains("HTTP/"),
        "{e}"
    );
}

#[tokio::test]
async fn port_check_sees_a_listening_port_open_and_a_closed_one_refused() {
    let certs = tempfile::tempdir().expect("tempdir");
    let prosody = start_prosody(&test_pki(certs.path(), "good"));
    let open = port_check(prosody.s2s_addr(), Duration::from_secs(2)).await;
    assert_eq!(open.state, PortState::Open, "{}", open.summary());
    let closed = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let refused = port_check(closed, Duration::from_secs(2)).await;
    assert_eq!(refused.state, PortState::Refused, "{}", refused.summary());
    assert!(refused.summary().starts_with("refused in "), "{}", refused.summary());
}

// ---------------------------------------------------------------------------------------------
// Steps 4 to 6 and verify through the direct executor, and the `!status xmpp` picture.

use baton_actions::direct::{DirectConfig, DirectExecutor};
use baton_actions::status::{RouteReader, StatusSettings, gather_xmpp_status};
use baton_actions::{Action, ActionOutcome, ActionRequest, DnsVia, Executor, IdempotencyKey, SiteName};
use std::collections::BTreeMap;

/// The plan's name for the DNS server, as `[dns] server` would give it.
const DNS_SERVER: &str = "ns1.contoso.test:53";

fn executor(bind: &Bind, tls: Option<TlsTrust>) -> DirectExecutor {
    DirectExecutor::new(DirectConfig {
        updaters: BTreeMap::from([(DNS_SERVER.to_string(), updater(bind, bind.secret()))]),
        resolver: bind.addr(),
        dns_timeout: Duration::from_secs(3),
        probe_timeout: Duration::from_secs(3),
        tls,
    })
}

fn via() -> DnsVia {
    DnsVia::Rfc2136 {
        server: DNS_SERVER.to_string(),
        zone: fqdn(ZONE),
    }
}

async fn step(exec: &DirectExecutor, n: usize, attempt: u32, action: Action) -> (ActionOutcome, bool) {
    let key = IdempotencyKey::new("e2e", 1, n, 0, "bot", attempt);
    let report = exec
        .execute(ActionRequest {
            key,
            action,
            timeout: Duration::from_secs(20),
        })
        .await;
    (report.outcome, report.replayed)
}

fn ok_detail(outcome: &ActionOutcome) -> &str {
    match outcome {
        ActionOutcome::Ok { detail } => detail,
        ActionOutcome::Failed { error } | ActionOutcome::Unknown { error } => panic!("the step failed: {error}"),
    }
}

#[tokio::test]
async fn the_direct_executor_moves_federation_and_verify_passes() {
    let certs = tempfile::tempdir().expect("tempdir");
    let pki = test_pki(certs.path(), "good");
    let prosody = start_prosody(&pki);
    let port = prosody.s2s_addr().port();
    // Before: the zone points at pool 1 (nothing listens there) through a stale SRV target.
    let bind = Bind::start(&format!(
        "xmpp 300 IN A {POOL1}\n_xmpp-server._tcp 300 IN SRV 10 10 5269 edgepool1.{ZONE}.\n"
    ))
    .expect("named starts");
    let exec = executor(&bind, Some(TlsTrust::from_ca_file(&pki.ca).expect("CA loads")));
    let host = fqdn(FEDERATION_HOST);
    let set_a = Action::DnsSetA {
        dns: via(),
        name: host.clone(),
        address: Ipv4Addr::LOCALHOST,
        ttl: 300,
    };
    let ensure_srv = Action::DnsEnsureSrv {
        dns: via(),
        name: fqdn(SRV_NAME),
        target: host.clone(),
        port,
        priority: 10,
        weight: 10,
        ttl: 300,
    };
    let verify = Action::Verify {
        srv: fqdn(SRV_NAME),
        host: host.clone(),
        address: Ipv4Addr::LOCALHOST,
        port,
        domain: domain(),
    };

    // Verify fails while DNS still points at the old pool.
    let (before, _) = step(&exec, 7, 1, verify.clone()).await;
    assert_eq!(
        before,
        ActionOutcome::Failed {
            error: format!("{SRV_NAME} SRV points at edgepool1.{ZONE}:5269, expected only {FEDERATION_HOST}:{port}")
        }
    );

    let (a, replayed) = step(&exec, 3, 1, set_a.clone()).await;
    assert_eq!(
        ok_detail(&a),
        format!("{FEDERATION_HOST} A 127.0.0.1 confirmed (was {POOL1})")
    );
    assert!(!replayed);
    let (srv, _) = step(&exec, 4, 1, ensure_srv.clone()).await;
    assert_eq!(
        ok_detail(&srv),
        format!(
            "{SRV_NAME} SRV 10 10 {port} {FEDERATION_HOST} confirmed (was 10 10 5269 edgepool1.{ZONE}), exactly once"
        )
    );
    assert_eq!(
        bind.records(FEDERATION_HOST, "A").expect("dig"),
        vec!["127.0.0.1".to_string()]
    );
    assert_eq!(
        bind.records(SRV_NAME, "SRV").expect("dig"),
        vec![format!("10 10 {port} {FEDERATION_HOST}.")]
    );

    let (check, _) = step(
        &exec,
        5,
        1,
        Action::PortCheck {
            address: Ipv4Addr::LOCALHOST.into(),
            port,
        },
    )
    .await;
    assert!(ok_detail(&check).starts_with("open in "), "{check:?}");
    let closed = free_port();
    let (check, _) = step(
        &exec,
        5,
        2,
        Action::PortCheck {
            address: Ipv4Addr::LOCALHOST.into(),
            port: closed,
        },
    )
    .await;
    assert!(
        ok_detail(&check).ends_with("(reachable, nothing listening yet)"),
        "{check:?}"
    );

    let (verified, _) = step(&exec, 7, 2, verify.clone()).await;
    let detail = ok_detail(&verified);
    assert!(
        detail.starts_with(&format!(
            "SRV -> {FEDERATION_HOST}:{port}, A -> 127.0.0.1; s2s stream ok in "
        )),
        "{detail}"
    );
    assert!(detail.contains("STARTTLS ok, TLSv1"), "{detail}");

    // The same key returns the recorded report; a new attempt runs again and changes nothing.
    let serial = bind.serial().expect("serial");
    let (again, replayed) = step(&exec, 3, 1, set_a.clone()).await;
    assert!(replayed);
    assert_eq!(again, a);
    let (second, replayed) = step(&exec, 3, 2, set_a).await;
    assert!(!replayed);
    assert_eq!(
        ok_detail(&second),
        format!("{FEDERATION_HOST} A 127.0.0.1 already in place (unchanged)")
    );
    let (second, _) = step(&exec, 4, 2, ensure_srv).await;
    assert!(
        ok_detail(&second).contains("already in place (unchanged), exactly once"),
        "{second:?}"
    );
    assert_eq!(bind.serial().expect("serial"), serial);
}

#[tokio::test]
async fn the_direct_executor_fails_clearly_on_what_it_cannot_do() {
    let bind = pool1_zone();
    let exec = executor(&bind, None);
    let host = fqdn(FEDERATION_HOST);
    let unknown_server = DnsVia::Rfc2136 {
        server: "ns9.contoso.test:53".into(),
        zone: fqdn(ZONE),
    };
    let (o, _) = step(
        &exec,
        3,
        1,
        Action::DnsSetA {
            dns: unknown_server,
            name: host.clone(),
            address: POOL2,
            ttl: 300,
        },
    )
    .await;
    assert_eq!(
        o,
        ActionOutcome::Failed {
            error: "no TSIG key is configured for the DNS server ns9.contoso.test:53".into()
        }
    );
    let other_zone = DnsVia::Rfc2136 {
        server: DNS_SERVER.into(),
        zone: fqdn("contoso.com"),
    };
    let (o, _) = step(
        &exec,
        3,
        2,
        Action::DnsSetA {
            dns: other_zone,
            name: host.clone(),
            address: POOL2,
            ttl: 300,
        },
    )
    .await;
    assert_eq!(
        o.text(),
        format!("the DNS server {DNS_SERVER} is configured for zone {ZONE}, not contoso.com")
    );
    let windows = DnsVia::Agent {
        host: fqdn("dns1.contoso.test"),
        zone: fqdn(ZONE),
    };
    let (o, _) = step(
        &exec,
        3,
        3,
        Action::DnsSetA {
            dns: windows,
            name: host.clone(),
            address: POOL2,
            ttl: 300,
        },
    )
    .await;
    assert_eq!(
        o.text(),
        "dns.set_a is carried out by dns1.contoso.test, not by the bot itself"
    );
    let (o, _) = step(
        &exec,
        1,
        1,
        Action::ServicesStop {
            host: fqdn("edge2a.contoso.test"),
        },
    )
    .await;
    assert_eq!(
        o.text(),
        "services.stop is carried out by edge2a.contoso.test, not by the bot itself"
    );
    let (o, _) = step(
        &exec,
        3,
        4,
        Action::DnsSetA {
            dns: via(),
            name: fqdn("www.contoso.test"),
            address: POOL2,
            ttl: 300,
        },
    )
    .await;
    assert!(o.text().contains("(REFUSED)"), "{o:?}");
    // Verify with no SRV at all, and with nothing listening on the resolved target.
    let verify = Action::Verify {
        srv: fqdn(SRV_NAME),
        host: host.clone(),
        address: POOL1,
        port: 5269,
        domain: domain(),
    };
    let (o, _) = step(&exec, 7, 1, verify).await;
    assert_eq!(
        o.text(),
        format!("{SRV_NAME} has no SRV record (asked {})", bind.addr())
    );
    assert_eq!(
        bind.records(FEDERATION_HOST, "A").expect("dig"),
        vec![POOL1.to_string()],
        "nothing changed"
    );
}

/// A route reader that answers for Site1 and never answers for Site2.
struct HalfDeadAgents;

#[async_trait::async_trait]
impl RouteReader for HalfDeadAgents {
    async fn route(&self, site: &SiteName) -> Result<String, String> {
        if site.as_str() == "Site1" {
            return Ok("EdgeServer:edgepool1.contoso.test".to_string());
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Err("unreachable".to_string())
    }
}

#[tokio::test]
async fn status_xmpp_gathers_dns_and_every_pool_in_parallel_within_its_budget() {
    let certs = tempfile::tempdir().expect("tempdir");
    let prosody = start_prosody(&test_pki(certs.path(), "good"));
    let port = prosody.s2s_addr().port();
    let bind = Bind::start(&format!(
        "xmpp 300 IN A 127.0.0.1\n_xmpp-server._tcp 300 IN SRV 10 10 {port} xmpp.{ZONE}.\n"
    ))
    .expect("named starts");
    let inventory = status_inventory(port);
    let settings = StatusSettings {
        resolver: bind.addr(),
        timeout: Duration::from_millis(1500),
        tls: None,
    };
    let started = std::time::Instant::now();
    let status = gather_xmpp_status(&inventory, &settings, Some(&HalfDeadAgents)).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );

    let a = status.a.as_ref().expect("A answer");
    assert_eq!(
        a.iter().map(|r| r.address).collect::<Vec<_>>(),
        vec![Ipv4Addr::LOCALHOST]
    );
    let srv = status.srv.as_ref().expect("SRV answer");
    assert_eq!(
        srv.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec![format!("10 10 {port} {FEDERATION_HOST}")]
    );

    let [pool1, pool2] = status.pools.as_slice() else {
        panic!("two pools: {:?}", status.pools)
    };
    assert_eq!(
        (pool1.pool.as_str(), pool1.in_dns, pool1.port.state),
        ("EdgePool1", true, PortState::Open)
    );
    let s2s = pool1.s2s.as_ref().expect("probed").as_ref().expect("s2s ok");
    assert!(s2s.features.contains(&"starttls".to_string()));
    assert_eq!(
        (pool2.pool.as_str(), pool2.in_dns, pool2.port.state),
        ("EdgePool2", false, PortState::Refused)
    );
    assert!(pool2.s2s.is_none());

    let routes: Vec<(&str, &Result<String, String>)> =
        status.routes.iter().map(|r| (r.site.as_str(), &r.route)).collect();
    assert_eq!(
        routes,
        vec![
            ("Site1", &Ok("EdgeServer:edgepool1.contoso.test".to_string())),
            (
                "Site2",
                &Err("no answer to route.get for Site2 within 1.5 s".to_string())
            ),
        ]
    );

    // With the resolver gone, the DNS parts say so and the probes still answer.
    let addr = bind.addr();
    drop(bind);
    let status = gather_xmpp_status(&inventory, &settings, None).await;
    assert!(
        status
            .a
            .as_ref()
            .expect_err("no resolver")
            .starts_with(&format!("cannot reach the DNS server {addr}")),
        "{:?}",
        status.a
    );
    assert!(status.routes.is_empty());
    assert_eq!(status.pools[0].port.state, PortState::Open);
}

/// Two pools on loopback: EdgePool1 at 127.0.0.1 (where Prosody listens), EdgePool2 at
/// 127.0.0.2 (nothing listens: refused).
fn status_inventory(port: u16) -> baton_actions::Inventory {
    use baton_actions::{DnsProvider, Federation, Inventory, Pool, PoolName};
    let pool = |name: &str, site: &str, address: Ipv4Addr| Pool {
        name: PoolName::parse(name).expect("valid"),
        site: SiteName::parse(site).expect("valid"),
        fqdn: fqdn(&format!("{}.{ZONE}", name.to_ascii_lowercase())),
        external_address: address,
        servers: vec![fqdn(&format!("{}a.{ZONE}", name.to_ascii_lowercase()))],
    };
    Inventory {
        sites: vec![
            SiteName::parse("Site1").expect("valid"),
            SiteName::parse("Site2").expect("valid"),
        ],
        pools: vec![
            pool("EdgePool1", "Site1", Ipv4Addr::LOCALHOST),
            pool("EdgePool2", "Site2", Ipv4Addr::new(127, 0, 0, 2)),
        ],
        management_host: fqdn(&format!("mgmt1.{ZONE}")),
        federation: Federation {
            domain: domain(),
            host: fqdn(FEDERATION_HOST),
            srv: fqdn(SRV_NAME),
            port,
            srv_priority: 10,
            srv_weight: 10,
            ttl: 300,
        },
        dns: DnsProvider::Rfc2136 {
            server: DNS_SERVER.to_string(),
            zone: fqdn(ZONE),
        },
    }
}

/// Figures, not assertions: `cargo test -p baton-e2e --test dns -- --ignored --nocapture measure`.
#[tokio::test]
#[ignore = "prints timings; run by hand"]
async fn measure_update_probe_and_status_latency() {
    fn median(mut v: Vec<Duration>) -> String {
        v.sort();
        baton_actions::probe::human_duration(v[v.len() / 2])
    }
    let certs = tempfile::tempdir().expect("tempdir");
    let pki = test_pki(certs.path(), "good");
    let prosody = start_prosody(&pki);
    let port = prosody.s2s_addr().port();
    let bind = Bind::start(&format!("xmpp 300 IN A {POOL1}\n")).expect("named starts");
    let dns = updater(&bind, bind.secret());
    let host = fqdn(FEDERATION_HOST);
    let mut updates = Vec::new();
    for i in 0..20u8 {
        let t = std::time::Instant::now();
        dns.set_a(&host, Ipv4Addr::new(127, 0, 1, i), 300)
            .await
            .expect("update");
        updates.push(t.elapsed());
    }
    let trust = TlsTrust::from_ca_file(&pki.ca).expect("CA");
    let (mut plain, mut tls) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let t = std::time::Instant::now();
        s2s_probe(prosody.s2s_addr(), &domain(), None, Duration::from_secs(5))
            .await
            .expect("probe");
        plain.push(t.elapsed());
        let t = std::time::Instant::now();
        s2s_probe(prosody.s2s_addr(), &domain(), Some(&trust), Duration::from_secs(5))
            .await
            .expect("probe");
        tls.push(t.elapsed());
    }
    let settings = StatusSettings {
        resolver: bind.addr(),
        timeout: Duration::from_secs(2),
        tls: None,
    };
    let inventory = status_inventory(port);
    let mut status = Vec::new();
    for _ in 0..10 {
        let t = std::time::Instant::now();
        gather_xmpp_status(&inventory, &settings, None).await;
        status.push(t.elapsed());
    }
    println!(
        "set_a (query, signed update, confirming query) against BIND 9.18: median {}",
        median(updates)
    );
    println!(
        "s2s probe to Prosody, header and features:                     median {}",
        median(plain)
    );
    println!(
        "s2s probe with STARTTLS and a second stream over TLS:           median {}",
        median(tls)
    );
    println!(
        "!status xmpp gathering (A, SRV, 2 pools, no routes):            median {}",
        median(status)
    );
}

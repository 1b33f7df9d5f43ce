//! STARTTLS and failed logins against a real Prosody: a server certificate from a CA given as a
//! file is accepted; a certificate from another CA and a wrong password never bring the adapter
//! online, and every failed attempt is logged with its reason (and never with the password).

use baton::adapters::xmpp::{TlsMode, XmppAdapter, XmppConfig};
use baton::chat::ChatAdapter;
use baton_e2e::prosody::{INCIDENT_ROOM, Prosody, ProsodyOptions, TlsFiles};
use baton_e2e::xmpp_client::{JoinHistory, TestClient};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use secrecy::{ExposeSecret, SecretString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Log lines written by every test in this binary.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("log buffer poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer not poisoned")).into_owned()
    }
}

fn capture_logs() -> Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("baton=debug")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        logs
    })
    .clone()
}

/// A CA certificate file and the key that signs with it.
fn make_ca(dir: &Path, name: &str) -> (PathBuf, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list is valid");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let key = KeyPair::generate().expect("key generation");
    let cert = params.self_signed(&key).expect("self-signed CA");
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, cert.pem()).expect("write CA");
    (path, Issuer::new(params, key))
}

fn make_server_cert(dir: &Path, issuer: &Issuer<'static, KeyPair>) -> TlsFiles {
    let params = CertificateParams::new(vec!["contoso.test".to_string()]).expect("valid SAN");
    let key = KeyPair::generate().expect("key generation");
    let cert = params.signed_by(&key, issuer).expect("signed server cert");
    let certificate = dir.join("server.pem");
    let key_path = dir.join("server.key");
    std::fs::write(&certificate, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    TlsFiles {
        certificate,
        key: key_path,
    }
}

fn adapter(server: &Prosody, password: SecretString, ca: &Path) -> Arc<XmppAdapter> {
    let mut config = XmppConfig::new(
        server.jid("baton"),
        password,
        server.c2s_addr().to_string(),
        TlsMode::StartTls {
            ca_file: Some(ca.to_path_buf()),
            server_name: None,
        },
    )
    .with_room(INCIDENT_ROOM, "baton");
    config.reconnect_initial = Duration::from_millis(100);
    config.reconnect_max = Duration::from_millis(400);
    Arc::new(XmppAdapter::new(config).expect("valid config"))
}

fn spawn(adapter: &Arc<XmppAdapter>) -> (CancellationToken, mpsc::Receiver<baton::chat::Inbound>) {
    let (tx, rx) = mpsc::channel(16);
    let shutdown = CancellationToken::new();
    let a = adapter.clone();
    let s = shutdown.clone();
    tokio::spawn(async move { a.run(tx, s).await });
    (shutdown, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_checks_the_ca_and_failed_attempts_are_logged_with_their_reason() {
    let logs = capture_logs();
    let certs = tempfile::tempdir().expect("tempdir");
    let (good_ca, issuer) = make_ca(certs.path(), "good");
    let (other_ca, _) = make_ca(certs.path(), "other");
    let tls = make_server_cert(certs.path(), &issuer);
    let server = Prosody::start_with(ProsodyOptions {
        tls: Some(tls),
        ..ProsodyOptions::default()
    })
    .expect("prosody starts");
    let password = server.password("baton").expect("registered");

    // The right CA: the adapter connects over TLS and works.
    let good = adapter(&server, password.clone(), &good_ca);
    let (stop_good, mut inbound) = spawn(&good);
    good.wait_until_joined(Duration::from_secs(10))
        .await
        .expect("joins over STARTTLS");
    let mut alice = TestClient::connect(&server, "alice").await.expect("alice connects");
    alice
        .join(INCIDENT_ROOM, "alice", JoinHistory::None)
        .await
        .expect("alice joins");
    alice.send(INCIDENT_ROOM, "!status").await.expect("sent");
    let got = tokio::time::timeout(Duration::from_secs(10), inbound.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(got.text, "!status");
    stop_good.cancel();

    // Another CA: never online, each attempt logged as a TLS failure.
    let foreign = adapter(&server, password.clone(), &other_ca);
    let (stop_foreign, _rx) = spawn(&foreign);
    assert!(
        foreign.wait_until_joined(Duration::from_millis(1500)).await.is_err(),
        "connected despite a foreign CA"
    );
    stop_foreign.cancel();
    let text = logs.text();
    let tls_failures = text
        .lines()
        .filter(|l| {
            l.contains("xmpp connection attempt failed") && l.contains("tls handshake with contoso.test failed")
        })
        .count();
    assert!(tls_failures >= 2, "expected repeated logged TLS failures, log:\n{text}");

    // A wrong password: never online, each attempt logged as an authentication failure.
    let wrong = SecretString::from("not-the-password-4711");
    let denied = adapter(&server, wrong, &good_ca);
    let (stop_denied, _rx) = spawn(&denied);
    assert!(
        denied.wait_until_joined(Duration::from_millis(1500)).await.is_err(),
        "connected with a wrong password"
    );
    stop_denied.cancel();
    let text = logs.text();
    let auth_failures = text
        .lines()
        .filter(|l| l.contains("xmpp connection attempt failed") && l.contains("authentication failed"))
        .count();
    assert!(
        auth_failures >= 2,
        "expected repeated logged auth failures, log:\n{text}"
    );
    assert!(text.contains("retry_in="), "each failure says when the next attempt is");

    if std::env::var_os("SHOW_LOGS").is_some() {
        println!("{text}");
    }
    // No password ever reaches the log.
    assert!(!text.contains("not-the-password-4711"));
    assert!(!text.contains(password.expose_secret()));
}

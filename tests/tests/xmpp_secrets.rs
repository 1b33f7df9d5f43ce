//! The XMPP password never reaches Baton's logs: `baton run` logging at `trace` against a
//! Prosody that offers only SASL PLAIN (so the password crosses the wire in base64, here on
//! plain TCP over loopback, which is where `tls = "plain"` is allowed), through the loopback
//! proxy that keeps what Baton sent. The wire shows the PLAIN exchange carrying the password (so
//! the logs had the chance to leak it); the logs show neither it nor its encodings.

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use baton_e2e::prosody::INCIDENT_ROOM;
use baton_e2e::room::Follower;
use baton_e2e::stack::{Stack, StackOptions};
use baton_e2e::xmpp_client::JoinHistory;
use secrecy::ExposeSecret;
use std::time::{Duration, Instant};

/// The longest any single wait may take.
const T: Duration = Duration::from_secs(60);

/// The payloads of the SASL `<auth mechanism='PLAIN'>` elements in what Baton sent; fails on
/// an `<auth>` with another mechanism.
fn plain_auths(wire: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = wire;
    while let Some(at) = rest.find("<auth ") {
        let element = &rest[at..];
        let open_end = element.find('>').context("the <auth> element is complete")?;
        let open = &element[..open_end];
        anyhow::ensure!(
            open.contains("mechanism='PLAIN'") || open.contains("mechanism=\"PLAIN\""),
            "Baton chose another mechanism: {open}"
        );
        let close = element.find("</auth>").context("the <auth> element is closed")?;
        out.push(element[open_end + 1..close].to_string());
        rest = &element[close..];
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_against_a_plain_only_server_never_show_the_password() -> Result<()> {
    let stack = tokio::task::block_in_place(|| {
        Stack::start(StackOptions {
            xmpp_chat: true,
            xmpp_via_proxy: true,
            sasl_plain_only: true,
            ..StackOptions::default()
        })
    })?;
    let bot = tokio::task::block_in_place(|| stack.start_bot_logging("trace"))?;
    let mut alice = Follower::join(&stack.prosody, "alice", INCIDENT_ROOM, "alice", JoinHistory::None).await?;
    alice.wait_for_bot(INCIDENT_ROOM).await?;
    // A second login: the link dies and Baton signs in again.
    let first = stack.proxy().accepted();
    stack.proxy().cut();
    let deadline = Instant::now() + T;
    while plain_auths(&String::from_utf8_lossy(&stack.proxy().sent_up()))?.len() < 2 {
        anyhow::ensure!(Instant::now() < deadline, "Baton did not sign in again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stack.proxy().accepted() > first);
    alice.wait_for_bot(INCIDENT_ROOM).await?;
    // A look at federation: DNS, the agents over mutual TLS and an s2s probe, so the other
    // libraries write their trace lines too.
    alice.say(INCIDENT_ROOM, "!status xmpp").await?;
    alice.bot_says(INCIDENT_ROOM, "", T).await?;
    alice.close().await;

    let password = stack.prosody.password("baton")?;
    let password = password.expose_secret();
    let wire = String::from_utf8_lossy(&stack.proxy().sent_up()).into_owned();
    let auths = plain_auths(&wire)?;
    assert!(auths.len() >= 2, "two PLAIN logins went over the wire: {auths:?}");
    for payload in &auths {
        let decoded = B64.decode(payload.trim()).context("the PLAIN payload is base64")?;
        assert_eq!(
            decoded,
            format!("\0baton\0{password}").into_bytes(),
            "the PLAIN payload is the authzid-less login with the password"
        );
    }

    // Everything Baton wrote, at trace level.
    let logs = format!("{}\n{}", bot.stderr(), bot.lines().join("\n"));
    assert!(
        logs.lines().any(|l| l.contains("TRACE")),
        "the logs really are at trace level:\n{}",
        &logs[..logs.len().min(4000)]
    );
    let mut secrets = vec![
        password.to_string(),
        B64.encode(password),
        B64.encode(format!("baton\0{password}")),
    ];
    secrets.extend(auths.iter().map(|a| a.trim().to_string()));
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "the logs show a form of the password");
    }
    // Base64 of the password at any alignment inside a longer blob: the three shifted
    // encodings share a core that does not depend on what precedes the password.
    for shift in 0..3 {
        let padded = format!("{}{password}", "\0".repeat(shift));
        let encoded = B64.encode(padded.as_bytes());
        let core = &encoded[4..encoded.len().saturating_sub(4).max(4)];
        assert!(
            core.len() < 8 || !logs.contains(core),
            "the logs show the password in base64 at offset {shift}"
        );
    }
    let err = bot.stderr();
    assert!(!err.contains("panicked"), "baton panicked:\n{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_to_a_server_off_loopback_is_refused_by_check_config() -> Result<()> {
    let stack = tokio::task::block_in_place(|| {
        Stack::start(StackOptions {
            xmpp_chat: true,
            ..StackOptions::default()
        })
    })?;
    let text = std::fs::read_to_string(&stack.config)?;
    let loopback = format!("server = \"{}\"", stack.xmpp_addr());
    assert!(text.contains(&loopback), "the stack's config names its server: {text}");
    // A documentation address: `check-config` connects to nothing, and `baton run` loads the
    // configuration through the same check before it connects anywhere.
    let remote = text.replace(&loopback, "server = \"192.0.2.10:5222\"");
    let path = stack.dir().join("remote.toml");
    std::fs::write(&path, remote)?;
    let path = path.to_str().context("the path is UTF-8")?;
    let (status, stdout, stderr) =
        tokio::task::block_in_place(|| baton_e2e::baton::run(&["check-config", path], Duration::from_secs(30)))?;
    assert!(!status.success(), "refused: {stdout}{stderr}");
    let said = format!("{stdout}{stderr}");
    assert!(
        said.contains("chat.xmpp.tls: \"plain\" would send the password and every message unencrypted to 192.0.2.10"),
        "{said}"
    );
    let password = stack.prosody.password("baton")?;
    assert!(
        !said.contains(password.expose_secret()),
        "the message shows no password"
    );
    // The same file with the loopback server is fine.
    let (status, stdout, stderr) = tokio::task::block_in_place(|| {
        baton_e2e::baton::run(
            &["check-config", stack.config.to_str().context("UTF-8")?],
            Duration::from_secs(30),
        )
    })?;
    assert!(status.success(), "the loopback server is accepted: {stdout}{stderr}");
    Ok(())
}

//! The Prosody harness itself: it starts, answers streams on c2s and s2s, registers users, and
//! survives a stop/start with the same ports and data.

use baton_e2e::prosody::{DOMAIN, Prosody, probe_stream};
use std::time::Duration;

#[test]
fn starts_answers_and_restarts_on_the_same_ports() {
    let mut server = Prosody::start().expect("prosody starts");
    let c2s = server.c2s_addr();
    let s2s = server.s2s_addr();
    probe_stream(c2s, DOMAIN, "jabber:client", Duration::from_secs(5)).expect("c2s answers a stream");
    probe_stream(s2s, DOMAIN, "jabber:server", Duration::from_secs(5)).expect("s2s answers a stream");
    assert!(server.password("alice").is_ok());
    assert!(server.password("nobody").is_err());

    server.stop().expect("prosody stops");
    assert!(!server.is_running());
    assert!(
        probe_stream(c2s, DOMAIN, "jabber:client", Duration::from_secs(1)).is_err(),
        "stopped server still answers"
    );

    server.start_again().expect("prosody starts again");
    assert_eq!(server.c2s_addr(), c2s);
    assert_eq!(server.s2s_addr(), s2s);
    probe_stream(c2s, DOMAIN, "jabber:client", Duration::from_secs(5)).expect("c2s answers again");
}

#[test]
fn debug_output_shows_no_password() {
    let server = Prosody::start().expect("prosody starts");
    let password = server.password("bob").expect("bob is registered");
    let shown = format!("{server:?} {password:?}");
    use secrecy::ExposeSecret;
    assert!(!shown.contains(password.expose_secret()), "{shown}");
}

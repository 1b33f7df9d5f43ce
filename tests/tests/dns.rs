//! Steps 4 to 6 and `verify` against real servers: TSIG-signed updates to BIND9 checked with
//! `dig`, port checks on loopback sockets, and the XMPP s2s probe.

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

    let a = dns.set_a(&host, POOL2, 300).await.unwrap_or_else(|e| panic!("{e}\n{}", bind.log()));
    assert_eq!(a, Change::Replaced { before: vec![POOL1.to_string()] });
    assert_eq!(bind.records(FEDERATION_HOST, "A").expect("dig"), vec![POOL2.to_string()]);

    let s = dns.ensure_srv(&srv, 10, 10, 5269, &host, 300).await.unwrap_or_else(|e| panic!("{e}\n{}", bind.log()));
    assert_eq!(s, Change::Replaced { before: vec![format!("10 10 5269 edgepool1.{ZONE}")] });
    assert_eq!(bind.records(SRV_NAME, "SRV").expect("dig"), vec![format!("10 10 5269 {FEDERATION_HOST}.")]);

    let serial = bind.serial().expect("serial");
    assert_eq!(dns.set_a(&host, POOL2, 300).await.expect("second run"), Change::Unchanged);
    assert_eq!(dns.ensure_srv(&srv, 10, 10, 5269, &host, 300).await.expect("second run"), Change::Unchanged);
    assert_eq!(bind.serial().expect("serial"), serial, "a second run does not touch the zone");
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
    let err = wrong.set_a(&host, POOL2, 300).await.expect_err("BIND rejects the signature");
    assert_eq!(err.to_string(), "the DNS server rejected TSIG key 'baton': the secret does not match the server's (BADSIG)");
    let err = wrong.ensure_srv(&fqdn(SRV_NAME), 10, 10, 5269, &host, 300).await.expect_err("rejected");
    assert!(err.to_string().starts_with("the DNS server rejected TSIG key 'baton'"), "{err}");

    // A key name BIND does not know at all.
    let stranger = TsigKey::from_base64("intruder", &SecretString::from(bind.secret().to_string())).expect("key");
    let stranger = DnsUpdater::new(bind.addr(), fqdn(ZONE), stranger, Duration::from_secs(5));
    let err = stranger.set_a(&host, POOL2, 300).await.expect_err("BIND does not know the key");
    assert_eq!(
        err.to_string(),
        "the DNS server rejected TSIG key 'intruder': the server does not know a key of that name and algorithm (BADKEY)"
    );

    assert_eq!(snapshot(&bind), before, "the zone is unchanged");
    assert!(bind.log().contains("BADSIG"), "named logged the rejection:\n{}", bind.log());
}

#[tokio::test]
async fn a_name_outside_the_update_policy_is_refused_clearly() {
    let bind = pool1_zone();
    let before = snapshot(&bind);
    let dns = updater(&bind, bind.secret());
    let err = dns.set_a(&fqdn("www.contoso.test"), POOL2, 300).await.expect_err("policy refuses");
    assert_eq!(
        err.to_string(),
        format!(
            "the DNS server {} refused to change www.contoso.test A (REFUSED): its update policy does not let key 'baton' change that record",
            bind.addr()
        )
    );
    // The SRV name may hold only SRV records under the policy.
    let err = dns.set_a(&fqdn(SRV_NAME), POOL2, 300).await.expect_err("policy refuses");
    assert!(err.to_string().contains("(REFUSED)"), "{err}");
    assert_eq!(bind.records("www.contoso.test", "A").expect("dig"), Vec::<String>::new());
    assert_eq!(snapshot(&bind), before);
}

#[tokio::test]
async fn queries_read_the_zone_and_a_stopped_server_is_named() {
    let bind = pool1_zone();
    let dns = updater(&bind, bind.secret());
    let a = dns.a(&fqdn(FEDERATION_HOST)).await.expect("query");
    assert_eq!(a.iter().map(|r| (r.address, r.ttl)).collect::<Vec<_>>(), vec![(POOL1, 300)]);
    assert!(dns.srv(&fqdn(SRV_NAME)).await.expect("query").is_empty(), "no SRV yet");
    assert!(dns.a(&fqdn("nothing.contoso.test")).await.expect("NXDOMAIN is an empty answer").is_empty());
    let addr = bind.addr();
    drop(bind);
    let err = dns.set_a(&fqdn(FEDERATION_HOST), POOL2, 300).await.expect_err("server gone");
    assert!(err.to_string().starts_with(&format!("cannot reach the DNS server {addr}: ")), "{err}");
}

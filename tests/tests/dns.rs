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

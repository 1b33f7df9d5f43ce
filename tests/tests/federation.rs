//! The whole runbook against real parts: BIND9 for the zone, Prosody as the federation endpoint,
//! real agents for the Edge servers and the management host, `baton run` in between. A failover
//! to EdgePool2 ends with verify passing; the failback restores the zone.

use baton_e2e::stack::{POOL1_ADDRESS, POOL2_ADDRESS, Stack, StackOptions};
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

#[test]
fn failover_then_failback_moves_the_zone_and_verify_passes() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default())?;
    let port = stack.prosody.s2s_addr().port();
    assert_eq!(stack.a_records()?, [POOL1_ADDRESS.to_string()]);
    let mut bot = stack.start_bot()?;
    bot.send("alice> !failover xmpp EdgePool2 drill")?;
    bot.wait_for("Expires at", T)?;
    bot.send("bob> !approve 1")?;
    bot.wait_for("#1 succeeded in", T)?;
    let text = bot.lines().join("\n");
    assert!(text.contains("#1 [8/8] verify: SRV -> xmpp.contoso.test:"), "{text}");
    assert_eq!(stack.a_records()?, [POOL2_ADDRESS.to_string()], "{text}");
    assert_eq!(stack.srv_records()?, [format!("10 10 {port} xmpp.contoso.test.")]);
    let mgmt = stack.fleet.sim(&baton_actions::Fqdn::parse("mgmt1.contoso.test")?)?;
    assert_eq!(mgmt["sites"]["Site2"], "EdgeServer:edgepool2.contoso.test");

    bot.send("carol> !status xmpp")?;
    bot.wait_for("XMPP federation of contoso.test: working: DNS points to EdgePool2", T)?;

    bot.send("bob> !failover xmpp EdgePool1 failback")?;
    bot.wait_for(
        "Run #2 requested by bob: move XMPP federation EdgePool2 -> EdgePool1",
        T,
    )?;
    bot.send("alice> !approve 2")?;
    bot.wait_for("#2 succeeded in", T)?;
    assert_eq!(stack.a_records()?, [POOL1_ADDRESS.to_string()]);
    assert_eq!(
        stack.srv_records()?,
        [format!("10 10 {port} xmpp.contoso.test.")],
        "the SRV record stays exactly once"
    );
    Ok(())
}

//! Tests of the command grammar: one line per case, and a property test with hostile input.

use super::*;
use proptest::prelude::*;

fn check(input: &str, expect: &str) {
    let got = match parse("!", input) {
        None => "ignored".to_string(),
        Some(Ok(c)) => format!("{c:?}"),
        Some(Err(e)) => format!("error: {e}"),
    };
    assert_eq!(got, expect, "input {input:?}");
}

#[test]
fn the_grammar() {
    check(
        "!failover xmpp EdgePool2 pool 1 lost power in DC1",
        r#"Failover { pool: "EdgePool2", reason: Some("pool 1 lost power in DC1") }"#,
    );
    check(
        "  !FAILOVER XMPP edgepool2",
        r#"Failover { pool: "edgepool2", reason: None }"#,
    );
    check(
        "!failover xmpp EdgePool2   \t ",
        r#"Failover { pool: "EdgePool2", reason: None }"#,
    );
    check("!plan xmpp EdgePool2", r#"Plan { pool: "EdgePool2" }"#);
    check("!approve 7", "Approve { run: RunId(7) }");
    check("!approve #7", "Approve { run: RunId(7) }");
    check("!deny 7", "Deny { run: RunId(7), reason: None }");
    check(
        "!deny 7 wrong pool, use EdgePool3",
        r#"Deny { run: RunId(7), reason: Some("wrong pool, use EdgePool3") }"#,
    );
    check("!status", "Status");
    check("!status 12", "StatusRun { run: RunId(12) }");
    check("!status xmpp", "StatusXmpp");
    check("!abort 3", "Abort { run: RunId(3) }");
    check("!retry 3", "Retry { run: RunId(3) }");
    check("!runs", "Runs");
    check("!help", "Help");
    check("!help me please", "Help");
}

#[test]
fn errors_say_what_to_type() {
    check("!approv 7", "error: unknown command !approv. Try !help");
    check(
        "!failover",
        "error: !failover needs the route and the target pool. Usage: !failover xmpp <Pool> [reason]",
    );
    check(
        "!failover sip EdgePool2",
        "error: Baton knows one route, xmpp, not 'sip'. Usage: !failover xmpp <Pool> [reason]",
    );
    check(
        "!failover xmpp",
        "error: name the pool that should take over. Usage: !failover xmpp <Pool> [reason]",
    );
    check(
        "!failover xmpp Edge;Pool2",
        "error: 'Edge;Pool2' is not a pool name. Usage: !failover xmpp <Pool> [reason]",
    );
    check(
        "!failover xmpp $(reboot)",
        "error: '$(reboot)' is not a pool name. Usage: !failover xmpp <Pool> [reason]",
    );
    check(
        "!plan xmpp EdgePool2 now",
        "error: !plan takes no reason. Usage: !plan xmpp <Pool>",
    );
    check(
        "!approve",
        "error: which run? Give its number, e.g. 7. Usage: !approve <run>",
    );
    check(
        "!approve seven",
        "error: 'seven' is not a run number. Usage: !approve <run>",
    );
    check("!approve 0", "error: runs are numbered from 1. Usage: !approve <run>");
    check(
        "!approve 7 8",
        "error: !approve takes one run number. Usage: !approve <run>",
    );
    check(
        "!approve 99999999999",
        "error: '99999999999' is not a run number. Usage: !approve <run>",
    );
    check(
        "!status 7 xmpp",
        "error: !status takes one argument. Usage: !status [<run> | xmpp]",
    );
    check(
        "!status sip",
        "error: 'sip' is not a run number. Usage: !status [<run> | xmpp]",
    );
    check("!runs 5", "error: !runs takes no arguments. Usage: !runs");
    check("!r\u{e9}boot", "error: unknown command !réboot. Try !help");
}

#[test]
fn conversation_is_ignored() {
    check("failover xmpp EdgePool2", "ignored");
    check("!!", "ignored");
    check("! look", "ignored");
    check("!1 approve", "ignored");
    check("", "ignored");
    check("wow!approve 7", "ignored");
}

#[test]
fn reasons_are_flattened_and_cut() {
    let long = format!("!failover xmpp EdgePool2 {}", "x".repeat(500));
    let Some(Ok(Command::Failover { reason: Some(r), .. })) = parse("!", &long) else {
        panic!("parses")
    };
    assert_eq!(r.chars().count(), MAX_REASON + 1);
    let Some(Ok(Command::Failover { reason, .. })) =
        parse("!", "!failover xmpp EdgePool2 line1\nline2\u{7}\u{1b}[31m red")
    else {
        panic!("parses")
    };
    assert_eq!(reason.as_deref(), Some("line1 line2 [31m red"));
}

#[test]
fn other_prefixes_and_length_limit() {
    assert_eq!(parse("baton:", "baton:status"), Some(Ok(Command::Status)));
    assert_eq!(parse("?", "!status"), None);
    let huge = format!("!failover xmpp EdgePool2 {}", "é".repeat(100_000));
    assert!(matches!(parse("!", &huge), Some(Err(CommandError::TooLong { .. }))));
}

#[test]
fn help_lists_every_command() {
    let help = help_text("!");
    for u in USAGE {
        assert!(help.contains(&format!("!{}", u.name)), "help lacks {}", u.name);
    }
    assert!(help_text("baton ").contains("baton status"));
}

fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "![a-z]{1,10}( [^\\n]{0,60}){0,4}",
        "!(failover|plan|approve|deny|status|abort|retry|runs|help)( [\\PC\\pC]{0,30}){0,4}",
        Just("!failover xmpp EdgePool2; rm -rf / #".to_string()),
        Just("!failover xmpp `Stop-Computer -Force`".to_string()),
        Just("!failover xmpp EdgePool2 | Invoke-Expression $x".to_string()),
        Just("!deny 7 \u{202e}evil\u{0}\r\n!approve 7".to_string()),
        proptest::collection::vec(any::<char>(), 0..5000)
            .prop_map(|v| format!("!failover xmpp {}", v.into_iter().collect::<String>())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics_and_only_safe_values_leave(text in hostile()) {
        if let Some(Ok(cmd)) = parse("!", &text) {
            match cmd {
                Command::Failover { pool, reason } => {
                    prop_assert!(POOL.is_match(&pool));
                    if let Some(r) = reason {
                        prop_assert!(!r.chars().any(char::is_control));
                        prop_assert!(r.chars().count() <= MAX_REASON + 1);
                    }
                }
                Command::Plan { pool } => prop_assert!(POOL.is_match(&pool)),
                Command::Deny { reason: Some(r), .. } => prop_assert!(!r.chars().any(char::is_control)),
                _ => {}
            }
        }
    }

    #[test]
    fn errors_are_short_and_clean(text in hostile()) {
        if let Some(Err(e)) = parse("!", &text) {
            let msg = e.to_string();
            prop_assert!(msg.len() < 400, "error too long: {}", msg.len());
            prop_assert!(!msg.chars().any(|c| c.is_control()));
        }
    }
}

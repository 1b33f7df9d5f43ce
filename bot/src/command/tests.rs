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
    check("!approve 7", "Approve { run: RunId(7), plan: None }");
    check("!approve #7", "Approve { run: RunId(7), plan: None }");
    check(
        "!approve 7 d974d3",
        r#"Approve { run: RunId(7), plan: Some("d974d3") }"#,
    );
    check(
        "!approve 7   D974D3765C60 ",
        r#"Approve { run: RunId(7), plan: Some("d974d3765c60") }"#,
    );
    check(
        &format!("!approve 7 {}", "ab".repeat(32)),
        &format!(r#"Approve {{ run: RunId(7), plan: Some("{}") }}"#, "ab".repeat(32)),
    );
    check("!deny 7", "Deny { run: RunId(7), reason: None }");
    check(
        "!deny 7 wrong pool, use EdgePool3",
        r#"Deny { run: RunId(7), reason: Some("wrong pool, use EdgePool3") }"#,
    );
    check("!status", "Status");
    check("!status 12", "StatusRun { run: RunId(12) }");
    check("!status xmpp", "StatusXmpp");
    check("!abort 3", "Abort { run: RunId(3), reason: None }");
    check(
        "!abort #3 DNS\tis\nwrong ",
        r#"Abort { run: RunId(3), reason: Some("DNS is wrong") }"#,
    );
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
        "error: which run? Give its number, e.g. 7. Usage: !approve <run> [<plan hash prefix>]",
    );
    check(
        "!approve seven",
        "error: 'seven' is not a run number. Usage: !approve <run> [<plan hash prefix>]",
    );
    check(
        "!approve 0",
        "error: runs are numbered from 1. Usage: !approve <run> [<plan hash prefix>]",
    );
    check(
        "!approve 7 8",
        "error: '8' is not a plan hash prefix (6 to 64 hex digits). Usage: !approve <run> [<plan hash prefix>]",
    );
    check(
        "!approve 7 d974d",
        "error: 'd974d' is not a plan hash prefix (6 to 64 hex digits). Usage: !approve <run> [<plan hash prefix>]",
    );
    check(
        "!approve 7 d974g3",
        "error: 'd974g3' is not a plan hash prefix (6 to 64 hex digits). Usage: !approve <run> [<plan hash prefix>]",
    );
    check(
        &format!("!approve 7 {}", "a".repeat(65)),
        &format!(
            "error: '{}…' is not a plan hash prefix (6 to 64 hex digits). Usage: !approve <run> [<plan hash prefix>]",
            "a".repeat(40)
        ),
    );
    check(
        "!approve 7 d974d3 looks fine",
        "error: !approve takes a run number and at most a plan hash prefix. Usage: !approve <run> [<plan hash prefix>]",
    );
    check(
        "!abort",
        "error: which run? Give its number, e.g. 7. Usage: !abort <run> [reason]",
    );
    check(
        "!retry 3 now",
        "error: !retry takes one run number. Usage: !retry <run>",
    );
    check(
        "!approve 99999999999",
        "error: '99999999999' is not a run number. Usage: !approve <run> [<plan hash prefix>]",
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

/// One command of each variant. The match below stops compiling when a variant is added, until
/// it is given a number and a sample here.
fn one_of_each() -> Vec<Command> {
    const VARIANTS: usize = 11;
    let variant = |c: &Command| match c {
        Command::Failover { .. } => 0,
        Command::Plan { .. } => 1,
        Command::Approve { .. } => 2,
        Command::Deny { .. } => 3,
        Command::Status => 4,
        Command::StatusRun { .. } => 5,
        Command::StatusXmpp => 6,
        Command::Abort { .. } => 7,
        Command::Retry { .. } => 8,
        Command::Runs => 9,
        Command::Help => 10,
    };
    let samples = vec![
        Command::Failover {
            pool: "EdgePool2".into(),
            reason: Some("DC1 is dark".into()),
        },
        Command::Plan {
            pool: "EdgePool2".into(),
        },
        Command::Approve {
            run: RunId(7),
            plan: Some("d974d3".into()),
        },
        Command::Deny {
            run: RunId(7),
            reason: Some("wrong pool".into()),
        },
        Command::Status,
        Command::StatusRun { run: RunId(7) },
        Command::StatusXmpp,
        Command::Abort {
            run: RunId(7),
            reason: Some("DNS is wrong".into()),
        },
        Command::Retry { run: RunId(7) },
        Command::Runs,
        Command::Help,
    ];
    let numbers: Vec<usize> = samples.iter().map(variant).collect();
    assert_eq!(
        numbers,
        (0..VARIANTS).collect::<Vec<_>>(),
        "one sample per variant, in order"
    );
    samples
}

#[test]
fn every_variant_has_exactly_one_entry_and_every_entry_a_variant() {
    let samples = one_of_each();
    for cmd in &samples {
        let entries: Vec<&str> = USAGE
            .iter()
            .filter(|u| (u.audit)(cmd).is_some())
            .map(|u| u.name)
            .collect();
        assert_eq!(entries.len(), 1, "{cmd:?} is in {entries:?}");
    }
    for u in USAGE {
        assert!(
            samples.iter().any(|c| (u.audit)(c).is_some()),
            "the entry {} covers no command",
            u.name
        );
        assert_eq!(USAGE.iter().filter(|v| v.name == u.name).count(), 1, "{} twice", u.name);
    }
}

/// What the table says of the command typed as `input`: its audit text, right and run.
fn meta(input: &str, expect: &str) {
    let cmd = match parse("!", input) {
        Some(Ok(cmd)) => cmd,
        other => panic!("{input:?} is not a command: {other:?}"),
    };
    let run = cmd.run().map_or("no run".to_string(), |r| format!("run {}", r.0));
    let got = format!("{} / {:?} / {run}", cmd.describe(), cmd.right());
    assert_eq!(got, expect, "input {input:?}");
}

#[test]
fn the_table_gives_each_command_its_audit_text_right_and_run() {
    meta(
        "!failover xmpp EdgePool2 DC1 is dark",
        "failover xmpp EdgePool2 / Request / no run",
    );
    meta("!plan XMPP EdgePool2", "plan xmpp EdgePool2 / View / no run");
    meta("!approve #7", "approve 7 / Approve / run 7");
    meta("!approve 7 D974D3", "approve 7 d974d3 / Approve / run 7");
    meta("!deny 7 wrong pool", "deny 7 / Deny / run 7");
    meta("!status", "status / View / no run");
    meta("!status 7", "status 7 / View / run 7");
    meta("!status xmpp", "status xmpp / View / no run");
    meta("!abort 7 DNS is wrong", "abort 7 / Abort / run 7");
    meta("!retry 7", "retry 7 / Retry / run 7");
    meta("!runs", "runs / View / no run");
    meta("!help me", "help / View / no run");
}

#[test]
fn the_audit_text_reads_back_as_the_same_command() {
    for cmd in one_of_each() {
        let text = format!("!{}", cmd.describe());
        let Some(Ok(back)) = parse("!", &text) else {
            panic!("{text:?} does not parse")
        };
        assert_eq!(
            (back.describe(), back.run(), back.right()),
            (cmd.describe(), cmd.run(), cmd.right()),
            "{text:?}"
        );
    }
}

#[test]
fn help_shows_every_entry_on_its_own_line_in_table_order() {
    let help = help_text("!");
    let lines: Vec<&str> = help.lines().skip(1).collect();
    assert_eq!(lines.len(), USAGE.len());
    for (line, u) in lines.iter().zip(USAGE) {
        assert!(
            line.trim_start().starts_with(&u.call("!")),
            "{line:?} is not {}",
            u.name
        );
        assert!(line.ends_with(u.summary), "{line:?} lacks its summary");
    }
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
        "!approve #?[0-9]{1,3} [0-9a-fA-Fg-z;$]{0,70}( [^\n]{0,10})?",
        Just("!abort 7 \u{1b}]0;pwned\u{7}\r\n!approve 7".to_string()),
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
                Command::Deny { reason: Some(r), .. } | Command::Abort { reason: Some(r), .. } => {
                    prop_assert!(!r.chars().any(char::is_control));
                    prop_assert!(r.chars().count() <= MAX_REASON + 1);
                }
                Command::Approve { plan: Some(p), .. } => {
                    prop_assert!(PLAN_PREFIX.is_match(&p));
                    prop_assert!(!p.chars().any(|c| c.is_ascii_uppercase()));
                }
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

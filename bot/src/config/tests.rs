//! Tests of configuration loading: the example loads, and bad files list every error with its
//! key path and line, without echoing secrets.

use super::*;
use secrecy::ExposeSecret;

const EXAMPLE: &str = include_str!("../../../examples/contoso.toml");

fn parse_with(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let lookup = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    Config::parse(
        text,
        "test.toml",
        &SecretEnv {
            var: &lookup,
            base: dir.path().to_path_buf(),
        },
    )
}

fn errors(text: &str) -> String {
    match parse_with(text, &[]) {
        Ok(_) => "ok".to_string(),
        Err(e) => e.errors.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("\n"),
    }
}

#[test]
fn the_example_loads() {
    let c = parse_with(EXAMPLE, &[]).expect("the example is valid");
    assert_eq!(c.inventory.pool_names(), ["EdgePool1", "EdgePool2"]);
    assert_eq!(c.route.initial.as_ref().map(|p| p.as_str()), Some("EdgePool1"));
    assert_eq!(c.policy.approvals_required, 1);
    assert_eq!(c.policy.expiry, Duration::from_secs(900));
    assert_eq!(c.bot.command_prefix, "!");
    assert_eq!(
        c.chat.get::<ConsoleSettings>(),
        Some(&ConsoleSettings {
            room: "incident".into()
        })
    );
    assert_eq!(c.simulation.delays.get("services.stop"), Some(&Duration::from_secs(1)));
    assert!(
        c.directory
            .person_of(&Identity::parse("console:bob").expect("valid"))
            .is_some()
    );
}

#[test]
fn every_error_is_listed_with_path_and_line() {
    let bad = EXAMPLE
        .replace(
            "identities = [\"xmpp:carol@contoso.com\", \"console:carol\"]",
            "identities = [\"xmpp:carol\", \"console:carol\"]",
        )
        .replace("approvals_required = 1 ", "approvals_required = 0 ")
        .replace("expiry = \"15m\"", "expiry = \"soon\"")
        .replace("external_address = \"203.0.113.20\"", "external_address = \"edge\"")
        .replace("site = \"Site2\"", "site = \"Site9\"")
        .replace("initial = \"EdgePool1\"", "initial = \"EdgePool7\"")
        .replace(
            "edge-admins = [\"alice\", \"bob\", \"carol\"]",
            "edge-admins = [\"alice\", \"bob\", \"carol\", \"dave\"]",
        )
        .replace("port = 5269", "port = 5269\nprot = 1");
    expect_test::expect![[r#"
        line 26: people.carol.identities[0]: xmpp account must be a bare JID like alice@contoso.com
        line 33: groups.edge-admins: group edge-admins names dave, who is not in [people]
        line 43: policy.approvals_required: must be between 1 and 10 (the two-person rule needs at least 1)
        line 45: policy.expiry: 'soon' is not a duration like 15m or 2s: expected number at 0
        line 62: inventory.pools.EdgePool2.site: site 'Site9' is not listed in inventory.sites
        line 64: inventory.pools.EdgePool2.external_address: 'edge' is not an IPv4 address (the runbook moves an A record to it)
        line 72: inventory.federation.prot: unknown key
        line 80: inventory.route.initial: 'EdgePool7' is not a pool in inventory.pools"#]]
    .assert_eq(&errors(&bad));
}

#[test]
fn syntax_errors_and_missing_sections() {
    expect_test::expect![[r#"
        line 1: TOML syntax: key with no value, expected `=`
        bot: is missing
        people: is missing: name at least the people who may request and approve
        dns: is missing: provider = "rfc2136" (server, zone, tsig_key_name, tsig_secret) or "agent" (host, zone)
        inventory: is missing: sites, pools, management_host and federation"#]]
    .assert_eq(&errors("this is not toml\n"));
}

#[test]
fn secrets_are_named_never_written_and_never_echoed() {
    let literal = EXAMPLE
        .replace(
            "tsig_secret = { env = \"BATON_TSIG_SECRET\" }",
            "tsig_secret = \"c2VjcmV0LXRzaWc9PQ==\"",
        )
        .replace(
            "password = { env = \"BATON_XMPP_PASSWORD\" }",
            "password = \"hunter2-xmpp\"",
        );
    let out = errors(&literal);
    expect_test::expect![[r#"
        line 89: dns.tsig_secret: secrets may not be written in the configuration file; name an environment variable ({ env = "NAME" }) or a file ({ file = "PATH" })
        line 101: chat.xmpp.password: secrets may not be written in the configuration file; name an environment variable ({ env = "NAME" }) or a file ({ file = "PATH" })"#]]
    .assert_eq(&out);
    assert!(!out.contains("hunter2") && !out.contains("c2VjcmV0"));
    let both = EXAMPLE.replace(
        "{ env = \"BATON_TSIG_SECRET\" }",
        "{ env = \"BATON_TSIG_SECRET\", file = \"x\" }",
    );
    assert!(errors(&both).contains("dns.tsig_secret: give exactly one of env or file"));
}

#[test]
fn a_secret_resolves_from_env_or_file_and_debug_redacts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pw"), "s3cret-from-file\n").expect("write");
    let mut e = Errors::new("");
    let text = "[x]\na = { env = \"PW\" }\nb = { file = \"pw\" }\nc = { env = \"NOPE\" }\n";
    let (doc, _) = toml::de::DeTable::parse_recoverable(text);
    let root = Table::root(&doc);
    let t = root.sub(&mut e, "x").expect("table");
    let lookup = |n: &str| (n == "PW").then(|| "s3cret-from-env".to_string());
    let env = SecretEnv {
        var: &lookup,
        base: dir.path().to_path_buf(),
    };
    let a = secret::read(&mut e, &t, "a", &env, true).expect("from env");
    let b = secret::read(&mut e, &t, "b", &env, true).expect("from file");
    assert!(secret::read(&mut e, &t, "c", &env, true).is_none());
    assert_eq!(a.expose_secret(), "s3cret-from-env");
    assert_eq!(b.expose_secret(), "s3cret-from-file");
    assert!(!format!("{a:?} {b:?}").contains("s3cret"));
    assert_eq!(e.list.len(), 1);
    assert_eq!(e.list[0].message, "environment variable NOPE is not set");
}

#[test]
fn policy_groups_must_exist_and_enabled_adapters_need_their_secrets() {
    let text = EXAMPLE
        .replace("approve = [\"edge-admins\"] ", "approve = [\"edge-admin\"] ")
        .replace("[chat.xmpp]\nenabled = false", "[chat.xmpp]\nenabled = true");
    expect_test::expect![[r#"
        line 38: policy.approve: group 'edge-admin' is not defined in [groups]
        line 101: chat.xmpp.password: environment variable BATON_XMPP_PASSWORD is not set"#]]
    .assert_eq(&errors(&text));
}

#[test]
fn duplicate_servers_and_single_pools_are_refused() {
    let dup = EXAMPLE.replace(
        "servers = [\"edge2a.contoso.com\", \"edge2b.contoso.com\"]",
        "servers = [\"edge2a.contoso.com\", \"edge1b.contoso.com\"]",
    );
    assert!(
        errors(&dup).contains("inventory.pools.EdgePool2.servers: edge1b.contoso.com is also a server of EdgePool1"),
        "{}",
        errors(&dup)
    );
}

#[test]
fn xmpp_settings_are_validated_by_the_adapter_rules() {
    let text = EXAMPLE
        .replace(
            "[chat.xmpp]\nenabled = false",
            "[chat.xmpp]\nenabled = true\ntls = \"plain\"",
        )
        .replace("jid = \"baton@contoso.com\"", "jid = \"contoso.com\"")
        .replace(
            "rooms = [\"incident@conference.contoso.com\"]",
            "rooms = [\"incident@conference.contoso.com\", \"incident@conference.contoso.com\"]",
        );
    let got = match parse_with(&text, &[("BATON_XMPP_PASSWORD", "pw")]) {
        Ok(_) => "ok".to_string(),
        Err(e) => e.errors.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("\n"),
    };
    expect_test::expect![[r#"
        line 101: chat.xmpp.jid: 'contoso.com' has no local part (expected like baton@contoso.com)
        line 104: chat.xmpp.rooms: incident@conference.contoso.com is listed twice"#]]
    .assert_eq(&got);
    let good = EXAMPLE.replace("[chat.xmpp]\nenabled = false", "[chat.xmpp]\nenabled = true");
    let c = parse_with(&good, &[("BATON_XMPP_PASSWORD", "pw")]).expect("valid");
    let x = c.chat.get::<crate::adapters::xmpp::XmppConfig>().expect("enabled");
    assert_eq!(x.rooms.len(), 1);
    assert!(!format!("{x:?}").contains("pw\""), "the password stays redacted");
}

#[test]
fn teams_settings_are_read_and_validated_by_the_adapter_rules() {
    let on = |s: &str| {
        s.replace(
            "[chat.teams]\nenabled = false",
            "[chat.teams]\nenabled = true\nlisten_never_used = 1",
        )
    };
    let text = on(EXAMPLE)
        .replace("listen_never_used = 1\n", "")
        .replace(
            "app_id = \"3f5d1c2b-8a7e-4d6f-9b0a-1c2d3e4f5a6b\"",
            "app_id = \"baton\"",
        )
        .replace(
            "channels = [\"19:4f3e2d1c0b9a48879685a4b3c2d1e0f9@thread.tacv2\"]",
            "channels = [\"General\"]\nservice_url_allowlist = [\"http://smba.trafficmanager.net/\"]",
        )
        .replace("listen = \"0.0.0.0:3978\"", "listen = \"everywhere\"");
    let got = match parse_with(&text, &[("BATON_TEAMS_APP_SECRET", "hunter2-teams")]) {
        Ok(_) => "ok".to_string(),
        Err(e) => e.errors.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("\n"),
    };
    expect_test::expect!["line 115: chat.teams.listen: 'everywhere' must be an address and port like 0.0.0.0:3978"]
        .assert_eq(&got);
    let text = text.replace("listen = \"everywhere\"", "listen = \"127.0.0.1:0\"");
    let got = match parse_with(&text, &[("BATON_TEAMS_APP_SECRET", "hunter2-teams")]) {
        Ok(_) => "ok".to_string(),
        Err(e) => e.errors.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("\n"),
    };
    expect_test::expect![[r#"
        line 112: chat.teams.app_id: 'baton' is not a Microsoft App ID (a GUID)
        line 116: chat.teams.channels: 'General' is not a channel's conversation id like 19:…@thread.tacv2 (without ;messageid=)
        line 117: chat.teams.service_url_allowlist: 'http://smba.trafficmanager.net/' must use https:// (plain http is only accepted for loopback addresses)"#]]
    .assert_eq(&got);
    assert!(!got.contains("hunter2"));
    // Enabled without its secret; an unknown key.
    let missing = on(EXAMPLE);
    expect_test::expect![[r#"
        line 112: chat.teams.listen_never_used: unknown key
        line 114: chat.teams.app_secret: environment variable BATON_TEAMS_APP_SECRET is not set"#]]
    .assert_eq(&errors(&missing));
    let good = EXAMPLE.replace("[chat.teams]\nenabled = false", "[chat.teams]\nenabled = true");
    let c = parse_with(&good, &[("BATON_TEAMS_APP_SECRET", "hunter2-teams")]).expect("valid");
    let t = c.chat.get::<crate::adapters::teams::TeamsConfig>().expect("enabled");
    assert_eq!(t.channels, ["19:4f3e2d1c0b9a48879685a4b3c2d1e0f9@thread.tacv2"]);
    assert_eq!(
        t.token_url,
        "https://login.microsoftonline.com/9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d/oauth2/v2.0/token"
    );
    assert!(!format!("{c:?}").contains("hunter2"), "the secret stays redacted");
}

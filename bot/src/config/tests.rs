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
            room: "incident".into(),
            trusted: false,
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
        line 31: people.carol.identities[0]: xmpp account must be a bare JID like alice@contoso.com
        line 38: groups.edge-admins: group edge-admins names dave, who is not in [people]
        line 48: policy.approvals_required: must be between 1 and 10 (the two-person rule needs at least 1)
        line 50: policy.expiry: 'soon' is not a duration like 15m or 2s: expected number at 0
        line 67: inventory.pools.EdgePool2.site: site 'Site9' is not listed in inventory.sites
        line 69: inventory.pools.EdgePool2.external_address: 'edge' is not an IPv4 address (the runbook moves an A record to it)
        line 77: inventory.federation.prot: unknown key
        line 85: inventory.route.initial: 'EdgePool7' is not a pool in inventory.pools"#]]
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
        line 94: dns.tsig_secret: secrets may not be written in the configuration file; name an environment variable ({ env = "NAME" }) or a file ({ file = "PATH" })
        line 110: chat.xmpp.password: secrets may not be written in the configuration file; name an environment variable ({ env = "NAME" }) or a file ({ file = "PATH" })"#]]
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
        line 43: policy.approve: group 'edge-admin' is not defined in [groups]
        line 110: chat.xmpp.password: environment variable BATON_XMPP_PASSWORD is not set"#]]
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
        line 109: chat.xmpp.tls: "plain" would send the password and every message unencrypted to im.contoso.com; it is only for a server on loopback (127.0.0.1, ::1, localhost): use "starttls"
        line 110: chat.xmpp.jid: 'contoso.com' has no local part (expected like baton@contoso.com)
        line 113: chat.xmpp.rooms: incident@conference.contoso.com is listed twice"#]]
    .assert_eq(&got);
    let good = EXAMPLE.replace("[chat.xmpp]\nenabled = false", "[chat.xmpp]\nenabled = true");
    let c = parse_with(&good, &[("BATON_XMPP_PASSWORD", "pw")]).expect("valid");
    let x = c.chat.get::<crate::adapters::xmpp::XmppConfig>().expect("enabled");
    assert_eq!(x.rooms.len(), 1);
    assert!(!format!("{x:?}").contains("pw\""), "the password stays redacted");
}

#[test]
fn the_server_is_off_by_default_and_stays_on_loopback_unless_made_public() {
    let c = parse_with(EXAMPLE, &[]).expect("valid");
    assert_eq!(c.server, None);
    assert_eq!(c.log, LogSettings::default());
    let with = |section: &str| format!("{EXAMPLE}\n{section}\n");
    let c = parse_with(&with("[server]\nlisten = \"127.0.0.1:9464\""), &[]).expect("valid");
    assert_eq!(
        c.server,
        Some(ServerSettings {
            listen: "127.0.0.1:9464".parse().expect("valid"),
            check_interval: Duration::from_secs(15),
        })
    );
    let c = parse_with(&with("[server]\nlisten = \"[::1]:9464\"\ncheck_interval = \"1s\""), &[]).expect("valid");
    assert_eq!(c.server.map(|s| s.check_interval), Some(Duration::from_secs(1)));
    let c = parse_with(&with("[server]\nlisten = \"0.0.0.0:9464\"\npublic = true"), &[]).expect("valid");
    assert_eq!(c.server.map(|s| s.listen.port()), Some(9464));
    let c = parse_with(&with("[server]\nenabled = false\nlisten = \"127.0.0.1:9464\""), &[]).expect("valid");
    assert_eq!(c.server, None);
    let bad = with(
        "[server]\nlisten = \"0.0.0.0:9464\"\ncheck_interval = \"1ms\"\nport = 1\n\n[log]\nformat = \"yaml\"\nfilter = \"baton=loud\"",
    );
    let n = EXAMPLE.lines().count();
    let got = errors(&bad).replace(&format!("line {}:", n + 3), "line S+1:");
    let got = got
        .replace(&format!("line {}:", n + 4), "line S+2:")
        .replace(&format!("line {}:", n + 5), "line S+3:")
        .replace(&format!("line {}:", n + 8), "line L+1:")
        .replace(&format!("line {}:", n + 9), "line L+2:");
    expect_test::expect![[r#"
        line S+1: server.listen: 0.0.0.0:9464 is not a loopback address: health and metrics are served without authentication, so listening beyond this host needs `public = true` in [server]
        line S+2: server.check_interval: must be between 200ms and 10m
        line S+3: server.port: unknown key
        line L+1: log.format: unknown log format 'yaml' (formats: text, json)
        line L+2: log.filter: not a log filter like "info,baton=debug": error parsing level filter: expected one of "off", "error", "warn", "info", "debug", "trace", or a number 0-5"#]]
    .assert_eq(&got);
    assert!(
        errors(&with("[server]\nlisten = \"nine\""))
            .contains("server.listen: 'nine' is not an address like 127.0.0.1:9464")
    );
    assert!(errors(&with("[server]\npublic = true")).contains("server.listen"));
    let c = parse_with(&with("[log]\nformat = \"json\"\nfilter = \"info,baton=debug\""), &[]).expect("valid");
    assert_eq!(
        c.log,
        LogSettings {
            format: LogFormat::Json,
            filter: Some("info,baton=debug".into())
        }
    );
}

#[test]
fn discord_settings_are_validated_and_the_token_never_echoed() {
    let text = EXAMPLE
        .replace("[chat.discord]\nenabled = false", "[chat.discord]\nenabled = true")
        .replace("token = { env = \"BATON_DISCORD_TOKEN\" }", "token = \"MTIz.secret-discord-token\"")
        .replace("guilds = [\"613425648685547541\"]", "guilds = [\"613425648685547541\", \"guild-1\", -4]")
        .replace(
            "mirror_channels = []\nedit_interval = \"1s\"",
            "mirror_channels = [\"613425648685547544\"]\nedit_interval = \"1s\"\nstand_in = { address = \"192.0.2.1:443\", ca_file = \"/nonexistent/ca.pem\" }\nthreads = true",
        )
        .replace("edit_interval = \"1s\"", "edit_interval = \"5ms\"");
    let out = errors(&text);
    expect_test::expect![[r#"
        line 133: chat.discord.token: secrets may not be written in the configuration file; name an environment variable ({ env = "NAME" }) or a file ({ file = "PATH" })
        line 134: chat.discord.guilds: 'guild-1' is not a Discord id (Developer Mode, right click, Copy ID: digits like "80351110224678912")
        line 134: chat.discord.guilds: -4 is not a Discord id (Developer Mode, right click, Copy ID: digits like "80351110224678912")
        line 139: chat.discord.threads: unknown key"#]]
    .assert_eq(&out);
    assert!(!out.contains("secret-discord-token"), "{out}");
    // With the token and ids right, the adapter's own rules speak.
    let text = text
        .replace(
            "token = \"MTIz.secret-discord-token\"",
            "token = { env = \"BATON_DISCORD_TOKEN\" }",
        )
        .replace(", \"guild-1\", -4]", "]")
        .replace("\nthreads = true", "");
    let got = match parse_with(&text, &[("BATON_DISCORD_TOKEN", "MTIz.secret-discord-token")]) {
        Ok(_) => "ok".to_string(),
        Err(e) => e.errors.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("\n"),
    };
    expect_test::expect![[r#"
        line 136: chat.discord.mirror_channels: 613425648685547544 is also a command channel; a channel is one or the other
        line 137: chat.discord.edit_interval: 5ms is out of range (200ms to 60s)
        line 138: chat.discord.stand_in: address 192.0.2.1:443 is not a loopback address: a stand-in runs on this machine (Baton talks to discord.com otherwise)
        line 138: chat.discord.stand_in: ca_file /nonexistent/ca.pem is not a readable file"#]]
    .assert_eq(&got);
    assert!(!got.contains("secret-discord-token"), "{got}");
    let good = EXAMPLE.replace("[chat.discord]\nenabled = false", "[chat.discord]\nenabled = true");
    let c = parse_with(&good, &[("BATON_DISCORD_TOKEN", "MTIz.secret-discord-token")]).expect("valid");
    let d = c
        .chat
        .get::<crate::adapters::discord::DiscordConfig>()
        .expect("enabled");
    assert_eq!(d.guilds, [613425648685547541]);
    assert_eq!(d.channels, [613425648685547544]);
    assert_eq!(d.token.expose_secret(), "MTIz.secret-discord-token");
    assert!(
        !format!("{c:?}").contains("secret-discord-token"),
        "the token stays redacted"
    );
    assert_eq!(
        c.chat.platforms.iter().flat_map(|p| p.mirror_rooms()).count(),
        0,
        "no mirror channels in the example"
    );
}

#[test]
fn check_config_never_quotes_a_value_under_a_secret_named_key_wherever_it_is() {
    // Each planted value would otherwise be quoted by some check: a type error, an unknown
    // action, an identity that does not parse, a syntax error.
    let planted = [
        ("[bot]\n", "[bot]\npassword = \"pw-in-bot-0001\"\n"),
        ("[groups]\n", "[groups]\ntoken = \"tok-in-groups-0002\"\n"),
        (
            "[people.alice]\n",
            "[people.token]\nidentities = [\"xmpp:tok-in-identity-0003\"]\n\n[people.alice]\n",
        ),
        ("[policy]\n", "[policy]\nsecret = [\"sec-in-policy-0004\"]\n"),
        (
            "[simulation.delays]\n",
            "[simulation.delays]\napi_token = \"tok-in-delays-0005\"\n",
        ),
        ("[inventory.route]\n", "[inventory.route]\npasswd = 90060006\n"),
        ("[chat.console]\n", "[chat.console]\nsecret = unquoted pw-broken-0007\n"),
        (
            "[inventory.federation]\n",
            "[inventory.federation]\ntoken = { credential = \"nested-0009\" }\n",
        ),
        (
            "[inventory.pools.EdgePool1]\n",
            "[inventory.pools.EdgePool1]\npassword = [\"pw-list-0008\"]\n",
        ),
    ];
    let mut text = EXAMPLE.to_string();
    for (at, with) in planted {
        assert!(text.contains(at), "{at}");
        text = text.replacen(at, with, 1);
    }
    let text = text
        .replace(
            "tsig_secret = { env = \"BATON_TSIG_SECRET\" }",
            "tsig_secret = \"tsig-literal-0010\"",
        )
        .replace(
            "[chat.xmpp]\nenabled = false",
            "[chat.discord]\ntoken = 11110011\n\n[chat.xmpp]\nenabled = false",
        );
    let err = parse_with(&text, &[]).expect_err("the planted keys are errors");
    let shown = err.to_string();
    for n in 1..=11 {
        let tail = format!("{n:04}");
        assert!(
            !shown.contains(&format!("-{tail}")) && !shown.contains(&format!("0{tail}")),
            "value #{n} is quoted:\n{shown}"
        );
    }
    // Every planted key is still reported, by its path.
    for path in [
        "bot.password",
        "groups.token",
        "policy.secret",
        "simulation.delays.api_token",
        "inventory.route.passwd",
        "dns.tsig_secret",
        "chat.discord.token",
        "inventory.federation.token",
    ] {
        assert!(shown.contains(path), "{path} is named:\n{shown}");
    }
    assert!(shown.contains("TOML syntax"), "{shown}");
}

#[test]
fn the_mirror_give_up_time_is_a_bounded_duration() {
    let c = parse_with(EXAMPLE, &[]).expect("valid");
    assert_eq!(c.bot.mirror_give_up, Duration::from_secs(60));
    let short = EXAMPLE.replacen(
        "executor = \"simulated\"",
        "executor = \"simulated\"\nmirror_give_up = \"3s\"",
        1,
    );
    let c = parse_with(&short, &[]).expect("valid");
    assert_eq!(c.bot.mirror_give_up, Duration::from_secs(3));
    for (bad, why) in [
        ("\"0s\"", "bot.mirror_give_up: must be between 1s and 24h"),
        ("\"2d\"", "bot.mirror_give_up: must be between 1s and 24h"),
        (
            "\"soon\"",
            "bot.mirror_give_up: 'soon' is not a duration like 15m or 2s",
        ),
    ] {
        let text = EXAMPLE.replacen(
            "executor = \"simulated\"",
            &format!("executor = \"simulated\"\nmirror_give_up = {bad}"),
            1,
        );
        assert!(errors(&text).contains(why), "{bad}: {}", errors(&text));
    }
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
    expect_test::expect!["line 124: chat.teams.listen: 'everywhere' must be an address and port like 0.0.0.0:3978"]
        .assert_eq(&got);
    let text = text.replace("listen = \"everywhere\"", "listen = \"127.0.0.1:0\"");
    let got = match parse_with(&text, &[("BATON_TEAMS_APP_SECRET", "hunter2-teams")]) {
        Ok(_) => "ok".to_string(),
        Err(e) => e.errors.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("\n"),
    };
    expect_test::expect![[r#"
        line 121: chat.teams.app_id: 'baton' is not a Microsoft App ID (a GUID)
        line 125: chat.teams.channels: 'General' is not a channel's conversation id like 19:…@thread.tacv2 (without ;messageid=)
        line 126: chat.teams.service_url_allowlist: 'http://smba.trafficmanager.net/' must use https:// (plain http is only accepted for loopback addresses)"#]]
    .assert_eq(&got);
    assert!(!got.contains("hunter2"));
    // Enabled without its secret; an unknown key.
    let missing = on(EXAMPLE);
    expect_test::expect![[r#"
        line 121: chat.teams.listen_never_used: unknown key
        line 123: chat.teams.app_secret: environment variable BATON_TEAMS_APP_SECRET is not set"#]]
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

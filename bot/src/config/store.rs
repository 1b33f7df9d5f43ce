//! `[store]`: where the journal lives when it is not the embedded SQLite file of `[bot] store`:
//! a PostgreSQL database shared by two replicas (`postgres = "postgres://user@host/db"`, the
//! password a secret read from an environment variable or a file; `ca = "FILE"` for TLS to the
//! server, verified with that CA).

use super::secret::{self, SecretEnv};
use super::walk::{Errors, Table};
use crate::store::postgres::PgSettings;
use std::time::Duration;

/// Reads `[store]`; `Ok(None)` when the section is absent (SQLite, the default).
pub fn read(e: &mut Errors<'_>, root: &Table<'_, '_>, env: &SecretEnv<'_>) -> Option<Option<PgSettings>> {
    if !root.has("store") {
        return Some(None);
    }
    let before = e.list.len();
    let t = root.sub(e, "store")?;
    let url: Option<String> = t.req(e, "postgres");
    let url = url.and_then(|u| match PgSettings::check_url(&u) {
        Ok(()) => Some(u),
        Err(why) => {
            e.at(&t.key_path("postgres"), t.span_of("postgres"), why);
            None
        }
    });
    let password = t
        .has("password")
        .then(|| secret::read(e, &t, "password", env, true))
        .flatten();
    let replica: Option<String> = t.opt(e, "replica");
    if let Some(r) = &replica
        && (r.is_empty() || r.len() > 40 || !r.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
    {
        e.at(
            &t.key_path("replica"),
            t.span_of("replica"),
            "must be 1 to 40 letters, digits, '-', '_' or '.' (it names this replica to the other one and in the rooms)",
        );
    }
    let lease = super::duration(e, &t, "lease").unwrap_or(PgSettings::DEFAULT_LEASE);
    if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&lease) {
        e.at(&t.key_path("lease"), t.span_of("lease"), "must be between 1s and 60s");
    }
    let connect_timeout = super::duration(e, &t, "connect_timeout").unwrap_or(Duration::from_secs(3));
    let ca: Option<String> = t.opt(e, "ca");
    let ca = ca.map(|c| {
        let p = std::path::PathBuf::from(c);
        if p.is_absolute() { p } else { env.base.join(p) }
    });
    t.finish(e);
    if e.list.len() != before {
        return None;
    }
    let replica = replica.unwrap_or_else(default_replica);
    Some(Some(PgSettings {
        url: url?,
        password,
        replica,
        lease,
        connect_timeout,
        ca,
    }))
}

/// This machine's name and the process id: unique enough when the configuration names no
/// replica.
fn default_replica() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(30)
        .collect();
    format!(
        "{}-{}",
        if host.is_empty() { "baton" } else { &host },
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::super::secret::SecretEnv;

    const BASE: &str = include_str!("../../../examples/contoso.toml");

    /// The example with `extra` appended; with a `CHAINKEY` variable, `[bot]` names it as the
    /// journal's key.
    fn parse(extra: &str, vars: &[(&str, &str)]) -> Result<Config, String> {
        let base = if vars.iter().any(|(k, _)| *k == "CHAINKEY") {
            BASE.replacen("[bot]\n", "[bot]\nchain_key = { env = \"CHAINKEY\" }\n", 1)
        } else {
            BASE.to_string()
        };
        let text = format!("{base}\n{extra}");
        let var = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        Config::parse(
            &text,
            "test.toml",
            &SecretEnv {
                var: &var,
                base: std::path::PathBuf::from("/nonexistent"),
            },
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_postgres_store_is_read_with_its_password_from_the_environment() {
        let c = parse(
            "[store]\npostgres = \"postgres://baton@db1.contoso.com:5433/baton\"\npassword = { env = \"PGPW\" }\nreplica = \"site1\"\nlease = \"2s\"\n",
            &[("PGPW", "s3cret-pw"), ("CHAINKEY", "0123456789abcdef0123456789abcdef")],
        )
        .expect("valid");
        assert!(c.bot.chain_key.is_some());
        let pg = c.postgres.clone().expect("a postgres store");
        assert_eq!(pg.replica, "site1");
        assert_eq!(pg.lease, std::time::Duration::from_secs(2));
        let shown = format!("{pg:?} {c:?}");
        assert!(!shown.contains("s3cret-pw"), "the password never shows: {shown}");
        assert!(
            parse("", &[]).expect("valid").postgres.is_none(),
            "SQLite stays the default"
        );
    }

    #[test]
    fn bad_store_sections_name_the_key_and_never_echo_a_password() {
        let err = parse("[store]\npostgres = \"postgres://baton:hunter2@db1/baton\"\n", &[])
            .expect_err("a password inside the URL is refused");
        assert!(err.contains("store.postgres"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = parse("[store]\npostgres = \"mysql://db1/baton\"\n", &[]).expect_err("not postgres");
        assert!(err.contains("store.postgres"), "{err}");
        let err = parse(
            "[store]\npostgres = \"postgres://baton@db1/baton\"\npassword = \"hunter2\"\n",
            &[],
        )
        .expect_err("a password written in the file is refused");
        assert!(err.contains("store.password") && !err.contains("hunter2"), "{err}");
        let err = parse(
            "[store]\npostgres = \"postgres://baton@db1/baton\"\npassword = { env = \"NOPE\" }\nreplica = \"a b\"\nlease = \"500ms\"\nflavour = 1\n",
            &[],
        )
        .expect_err("several errors");
        for key in ["store.password", "store.replica", "store.lease", "store.flavour"] {
            assert!(err.contains(key), "{key} in {err}");
        }
    }

    #[test]
    fn a_postgres_store_needs_the_journals_key_and_a_short_key_is_never_echoed() {
        let pg = "[store]\npostgres = \"postgres://baton@db1/baton\"\n";
        let err = parse(pg, &[]).expect_err("no key");
        assert!(
            err.contains("bot.chain_key: is required with a PostgreSQL store"),
            "{err}"
        );
        let err = parse(pg, &[("CHAINKEY", "tiny-s3cret")]).expect_err("a short key");
        assert!(err.contains("bot.chain_key") && err.contains("at least 32"), "{err}");
        assert!(!err.contains("tiny-s3cret"), "{err}");
        assert_eq!(err.matches("bot.chain_key").count(), 1, "said once: {err}");
        let c = parse("", &[]).expect("SQLite needs no key in the file");
        assert!(c.bot.chain_key.is_none());
    }
}

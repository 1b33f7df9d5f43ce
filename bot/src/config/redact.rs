//! Keeping secrets out of configuration errors: a key whose name says secret, password or token
//! may hold one whatever section it was (mis)placed in, so no error message ever quotes its
//! value. Values found under such keys (in the parsed document, and on the raw lines, for files
//! that do not even parse) are hidden in every message, and type errors at such keys never
//! repeat the value.

use super::walk::ConfigError;
use toml::de::{DeTable, DeValue};

/// What replaces a hidden value in a message.
pub const HIDDEN: &str = "(hidden)";

/// Values shorter than this are not hunted down in messages: they cannot be secrets worth the
/// name, and hiding them would garble unrelated words.
const SHORTEST: usize = 3;

/// Whether a key's name says that its value is (or holds) a secret.
pub fn is_secret_name(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["secret", "password", "passwd", "token", "credential"]
        .iter()
        .any(|w| key.contains(w))
}

/// Whether any key on a dotted path (`groups.token`, `people.x.api_token[0]`) names a secret.
pub fn path_is_secret(path: &str) -> bool {
    path.split(['.', '['])
        .any(|part| is_secret_name(part.trim_matches('"')))
}

/// Every value held under a secret-named key of `doc` or of the raw `text`.
pub fn secret_values(doc: &DeTable<'_>, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    walk_table(doc, false, &mut out);
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim().trim_matches(['"', '\'']);
        if key.is_empty() || !is_secret_name(key.rsplit('.').next().unwrap_or(key)) {
            continue;
        }
        let value = value.trim();
        // Tables and arrays are read from the document (a secret's `{ env = "NAME" }` names a
        // variable, not a secret); a scalar may be on a line too broken to parse.
        if value.starts_with(['{', '[']) {
            continue;
        }
        match value.strip_prefix(['"', '\'']) {
            // A quoted string, perhaps followed by a comment.
            Some(quoted) => out.push(quoted.split(['"', '\'']).next().unwrap_or(quoted).to_string()),
            None => out.push(value.split('#').next().unwrap_or(value).trim().to_string()),
        }
    }
    out.retain(|v| v.chars().count() >= SHORTEST);
    // The longest first, so a value that contains another is hidden whole.
    out.sort_by_key(|v| std::cmp::Reverse(v.len()));
    out.dedup();
    out
}

fn walk_table(t: &DeTable<'_>, secret: bool, out: &mut Vec<String>) {
    for (k, v) in t.iter() {
        // `{ env = "NAME" }` and `{ file = "PATH" }` say where a secret is, which is no secret.
        if secret && matches!(k.get_ref().as_ref(), "env" | "file") {
            continue;
        }
        walk_value(v.get_ref(), secret || is_secret_name(k.get_ref()), out);
    }
}

fn walk_value(v: &DeValue<'_>, secret: bool, out: &mut Vec<String>) {
    match v {
        DeValue::Table(t) => walk_table(t, secret, out),
        DeValue::Array(items) => {
            for item in items {
                walk_value(item.get_ref(), secret, out);
            }
        }
        DeValue::String(s) if secret => out.push(s.to_string()),
        DeValue::Integer(i) if secret => out.push(i.to_string()),
        DeValue::Float(f) if secret => out.push(f.to_string()),
        _ => {}
    }
}

/// The message of a type error at `path`: serde's own, unless the path names a secret, in which
/// case only what was expected is kept (serde's text quotes the value it found).
pub fn value_error(path: &str, message: String) -> String {
    if !path_is_secret(path) {
        return message;
    }
    match message.split_once(", expected ") {
        Some((_, expected)) => {
            format!("has the wrong type or value (not shown: the key's name says it is secret); expected {expected}")
        }
        None => "has the wrong type or value (not shown: the key's name says it is secret)".to_string(),
    }
}

/// Hides every secret value in every message, as written and as error messages escape it.
pub fn scrub(errors: &mut [ConfigError], secrets: &[String]) {
    for e in errors {
        for s in secrets {
            for form in [s.clone(), s.escape_debug().to_string(), s.escape_default().to_string()] {
                if !form.is_empty() && e.message.contains(&form) {
                    e.message = e.message.replace(&form, HIDDEN);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_recognised_anywhere_on_a_path() {
        for name in [
            "password",
            "tsig_secret",
            "app_secret",
            "token",
            "API_TOKEN",
            "passwd",
            "credentials",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["jid", "server", "tls", "rooms", "store"] {
            assert!(!is_secret_name(name), "{name}");
        }
        assert!(path_is_secret("groups.token"));
        assert!(path_is_secret("people.x.\"my password\"[0]"));
        assert!(!path_is_secret("people.alice.identities[0]"));
    }

    #[test]
    fn values_under_secret_keys_are_found_in_tables_arrays_and_broken_lines() {
        let text = "[a]\ntoken = \"tok-123\"\n[b]\nx = { password = [\"pw-in-array\", 42424] }\n\
                    [c]\nsecret = unquoted-and-broken\nplain = \"not-a-secret\"\n\
                    [d]\npassword = { env = \"BATON_PW\" }\n";
        let (doc, _) = DeTable::parse_recoverable(text);
        let found = secret_values(doc.get_ref(), text);
        for want in ["tok-123", "pw-in-array", "42424", "unquoted-and-broken"] {
            assert!(found.iter().any(|f| f == want), "{want} in {found:?}");
        }
        assert!(!found.iter().any(|f| f.contains("not-a-secret")), "{found:?}");
        assert!(
            !found.iter().any(|f| f.contains("BATON_PW")),
            "a variable's name is no secret: {found:?}"
        );
        let mut errors = vec![ConfigError {
            path: "groups.token".into(),
            line: Some(2),
            message: "invalid type: string \"tok-123\", expected a sequence".into(),
        }];
        scrub(&mut errors, &found);
        assert_eq!(
            errors[0].message,
            "invalid type: string \"(hidden)\", expected a sequence"
        );
    }

    #[test]
    fn type_errors_at_secret_keys_keep_only_what_was_expected() {
        assert_eq!(
            value_error("groups.token", "invalid type: string \"x\", expected a sequence".into()),
            "has the wrong type or value (not shown: the key's name says it is secret); expected a sequence"
        );
        assert_eq!(
            value_error(
                "groups.admins",
                "invalid type: string \"x\", expected a sequence".into()
            ),
            "invalid type: string \"x\", expected a sequence"
        );
    }
}

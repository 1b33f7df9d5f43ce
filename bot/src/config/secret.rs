//! Secrets named in the configuration: read from an environment variable or a file, held in
//! `secrecy` types, never written in the file itself and never echoed in errors.

use super::walk::{Errors, Table};
use secrecy::SecretString;
use std::path::{Path, PathBuf};
use toml::de::DeValue;

/// Where secrets come from; tests pass their own environment.
pub struct SecretEnv<'a> {
    pub var: &'a dyn Fn(&str) -> Option<String>,
    /// Relative secret files are read from here (the configuration file's folder).
    pub base: PathBuf,
}

const HOW: &str = "name an environment variable ({ env = \"NAME\" }) or a file ({ file = \"PATH\" })";

/// Reads the secret at `key`. When `resolve` is false (the section is disabled) only its shape
/// is checked.
pub fn read(
    e: &mut Errors<'_>,
    t: &Table<'_, '_>,
    key: &str,
    env: &SecretEnv<'_>,
    resolve: bool,
) -> Option<SecretString> {
    let path = t.key_path(key);
    let Some(v) = t.get(key) else {
        e.at(&path, t.span_of(key), format!("is missing: {HOW}"));
        return None;
    };
    let span = Some(v.span());
    let DeValue::Table(_) = v.get_ref() else {
        // Deliberately silent about the value: it may be the secret itself.
        e.at(
            &path,
            span,
            format!("secrets may not be written in the configuration file; {HOW}"),
        );
        return None;
    };
    let st = Table::of(e, path.clone(), v)?;
    let from_env: Option<String> = st.opt(e, "env");
    let from_file: Option<String> = st.opt(e, "file");
    st.finish(e);
    let secret = match (from_env, from_file) {
        (Some(name), None) => {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                e.at(&path, span, "env must name a variable of letters, digits and '_'");
                return None;
            }
            if !resolve {
                return None;
            }
            match (env.var)(&name) {
                Some(value) if !value.is_empty() => value,
                _ => {
                    e.at(&path, span, format!("environment variable {name} is not set"));
                    return None;
                }
            }
        }
        (None, Some(file)) => {
            if !resolve {
                return None;
            }
            let full = if Path::new(&file).is_absolute() {
                PathBuf::from(&file)
            } else {
                env.base.join(&file)
            };
            match std::fs::read_to_string(&full) {
                Ok(text) if !text.trim().is_empty() => text.trim_end_matches(['\r', '\n']).to_string(),
                Ok(_) => {
                    e.at(&path, span, format!("secret file {} is empty", full.display()));
                    return None;
                }
                Err(err) => {
                    e.at(
                        &path,
                        span,
                        format!("cannot read secret file {}: {err}", full.display()),
                    );
                    return None;
                }
            }
        }
        _ => {
            e.at(&path, span, format!("give exactly one of env or file: {HOW}"));
            return None;
        }
    };
    Some(SecretString::from(secret))
}

//! Validated names: FQDNs, site and pool names. Every value that may end up as a parameter on an
//! Edge server or in a DNS update passes through one of these types first.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("'{shown}' is not a valid host name: {why}")]
    Fqdn { shown: String, why: &'static str },
    #[error(
        "'{shown}' is not a valid {what} name: use 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"
    )]
    Simple { shown: String, what: &'static str },
}

/// Shows at most 80 characters of a rejected value, with control characters escaped, so an error
/// message never carries a hostile payload whole.
pub fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// A fully qualified domain name, lower-cased, without a trailing dot: letters, digits and
/// hyphens in labels of 1 to 63 characters, at least two labels, 253 characters at most.
/// Labels may start with `_` so that SRV owner names (`_xmpp-server._tcp.contoso.com`) fit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Fqdn(String);

impl Fqdn {
    pub fn parse(s: &str) -> Result<Fqdn, NameError> {
        let err = |why| Err(NameError::Fqdn { shown: shown(s), why });
        let trimmed = s.strip_suffix('.').unwrap_or(s);
        if trimmed.is_empty() {
            return err("it is empty");
        }
        if trimmed.len() > 253 {
            return err("it is longer than 253 characters");
        }
        let labels: Vec<&str> = trimmed.split('.').collect();
        if labels.len() < 2 {
            return err("it needs a domain (e.g. edge2a.contoso.com)");
        }
        for label in &labels {
            let body = label.strip_prefix('_').unwrap_or(label);
            if label.is_empty() || label.len() > 63 {
                return err("each label needs 1 to 63 characters");
            }
            if body.is_empty() || !body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return err("labels may hold only letters, digits and '-'");
            }
            if body.starts_with('-') || body.ends_with('-') {
                return err("labels may not start or end with '-'");
            }
        }
        Ok(Fqdn(trimmed.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first label: `edge2a` for `edge2a.contoso.com`.
    pub fn short(&self) -> &str {
        self.0.split('.').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for Fqdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Fqdn {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Fqdn::parse(&s)
    }
}

impl From<Fqdn> for String {
    fn from(f: Fqdn) -> String {
        f.0
    }
}

fn simple_name(s: &str, what: &'static str) -> Result<String, NameError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(s.to_string())
    } else {
        Err(NameError::Simple { shown: shown(s), what })
    }
}

macro_rules! simple_name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<$name, NameError> {
                simple_name(s, $what).map($name)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                $name::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }
    };
}

simple_name_type!(
    /// A Lync/Skype for Business site name as `Get-CsSite` shows it (`Site2`).
    SiteName,
    "site"
);
simple_name_type!(
    /// An Edge pool's name in Baton's inventory (`EdgePool2`); matched case-insensitively in chat.
    PoolName,
    "pool"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: &str) {
        let got = match Fqdn::parse(input) {
            Ok(f) => f.to_string(),
            Err(e) => e.to_string(),
        };
        assert_eq!(got, expect, "input {input:?}");
    }

    #[test]
    fn fqdns() {
        check("Edge2A.Contoso.com.", "edge2a.contoso.com");
        check("_xmpp-server._tcp.contoso.com", "_xmpp-server._tcp.contoso.com");
        check(
            "edge2a",
            "'edge2a' is not a valid host name: it needs a domain (e.g. edge2a.contoso.com)",
        );
        check("", "'' is not a valid host name: it is empty");
        check(
            "a..b",
            "'a..b' is not a valid host name: each label needs 1 to 63 characters",
        );
        check(
            "-a.b",
            "'-a.b' is not a valid host name: labels may not start or end with '-'",
        );
        check(
            "a;rm -rf /.com",
            "'a;rm -rf /.com' is not a valid host name: labels may hold only letters, digits and '-'",
        );
        check(
            "a$(x).com",
            "'a$(x).com' is not a valid host name: labels may hold only letters, digits and '-'",
        );
        check(
            "a\n.com",
            "'a\\n.com' is not a valid host name: labels may hold only letters, digits and '-'",
        );
        check(
            &format!("{}.com", "a".repeat(64)),
            &format!(
                "'{}.com' is not a valid host name: each label needs 1 to 63 characters",
                "a".repeat(64)
            ),
        );
        let long = format!("{}com", "abcdefghi.".repeat(30));
        assert!(
            Fqdn::parse(&long)
                .expect_err("too long")
                .to_string()
                .ends_with("it is longer than 253 characters")
        );
    }

    #[test]
    fn simple_names() {
        assert_eq!(SiteName::parse("Site2").expect("valid").as_str(), "Site2");
        assert_eq!(
            SiteName::parse("Site2; Stop-Computer")
                .expect_err("invalid")
                .to_string(),
            "'Site2; Stop-Computer' is not a valid site name: use 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"
        );
        assert!(PoolName::parse("").is_err());
        assert!(PoolName::parse(".hidden").is_err());
        assert!(PoolName::parse(&"p".repeat(65)).is_err());
        assert!(PoolName::parse("EdgePool_2.b-c").is_ok());
    }
}

//! Chat identities: a platform plus an account on it, normalised so that the same person is
//! recognised however their client spells the account.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A chat platform Baton can listen on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Xmpp,
    Teams,
    Discord,
    Console,
}

impl Platform {
    pub const ALL: [Platform; 4] = [Platform::Xmpp, Platform::Teams, Platform::Discord, Platform::Console];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Xmpp => "xmpp",
            Platform::Teams => "teams",
            Platform::Discord => "discord",
            Platform::Console => "console",
        }
    }

    pub fn parse(s: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An account on one platform, e.g. `xmpp:alice@contoso.com` or `discord:80351110224678912`.
///
/// The account is normalised on construction: XMPP bare JIDs are lower-cased (a resource part
/// is refused: identity is the bare JID), Teams AAD object ids are lower-cased GUIDs, Discord ids
/// are decimal snowflakes, console names are lower-case words.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Identity {
    platform: Platform,
    account: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity must look like platform:account (platforms: xmpp, teams, discord, console)")]
    Shape,
    #[error("unknown platform '{0}' (platforms: xmpp, teams, discord, console)")]
    UnknownPlatform(String),
    #[error("{platform} account {reason}")]
    Account { platform: Platform, reason: &'static str },
}

const MAX_ACCOUNT: usize = 256;

impl Identity {
    /// Builds an identity from a platform and the account as the platform reports it.
    pub fn new(platform: Platform, account: &str) -> Result<Identity, IdentityError> {
        let bad = |reason| Err(IdentityError::Account { platform, reason });
        if account.is_empty() {
            return bad("is empty");
        }
        if account.len() > MAX_ACCOUNT {
            return bad("is too long");
        }
        if account.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return bad("contains spaces or control characters");
        }
        let account = match platform {
            Platform::Xmpp => {
                if account.contains('/') {
                    return bad("must be a bare JID (no /resource)");
                }
                let Some((local, domain)) = account.split_once('@') else {
                    return bad("must be a bare JID like alice@contoso.com");
                };
                if local.is_empty() || domain.is_empty() || domain.contains('@') {
                    return bad("must be a bare JID like alice@contoso.com");
                }
                account.to_lowercase()
            }
            Platform::Teams => {
                let lower = account.to_ascii_lowercase();
                if !is_guid(&lower) {
                    return bad("must be an Azure AD object id (a GUID)");
                }
                lower
            }
            Platform::Discord => {
                if !(account.len() <= 20 && account.bytes().all(|b| b.is_ascii_digit())) {
                    return bad("must be a numeric Discord user id");
                }
                account.to_string()
            }
            Platform::Console => {
                let lower = account.to_ascii_lowercase();
                if !(lower.len() <= 32
                    && lower
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
                {
                    return bad("must be a short name of letters, digits, - or _");
                }
                lower
            }
        };
        Ok(Identity { platform, account })
    }

    /// Parses `platform:account`.
    pub fn parse(s: &str) -> Result<Identity, IdentityError> {
        let (platform, account) = s.split_once(':').ok_or(IdentityError::Shape)?;
        let platform = Platform::parse(platform)
            .ok_or_else(|| IdentityError::UnknownPlatform(platform.chars().take(20).collect()))?;
        Identity::new(platform, account)
    }

    pub fn platform(&self) -> Platform {
        self.platform
    }

    pub fn account(&self) -> &str {
        &self.account
    }
}

fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.platform, self.account)
    }
}

impl TryFrom<String> for Identity {
    type Error = IdentityError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Identity::parse(&s)
    }
}

impl From<Identity> for String {
    fn from(i: Identity) -> String {
        i.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: &str) {
        let got = match Identity::parse(input) {
            Ok(id) => id.to_string(),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expect, "input {input:?}");
    }

    #[test]
    fn parses_and_normalises() {
        check("xmpp:Alice@Contoso.COM", "xmpp:alice@contoso.com");
        check(
            "xmpp:alice@contoso.com/laptop",
            "error: xmpp account must be a bare JID (no /resource)",
        );
        check(
            "xmpp:alice",
            "error: xmpp account must be a bare JID like alice@contoso.com",
        );
        check(
            "xmpp:@contoso.com",
            "error: xmpp account must be a bare JID like alice@contoso.com",
        );
        check(
            "xmpp:a@b@c",
            "error: xmpp account must be a bare JID like alice@contoso.com",
        );
        check(
            "teams:0F4E1B2C-1234-4abc-8def-0123456789AB",
            "teams:0f4e1b2c-1234-4abc-8def-0123456789ab",
        );
        check(
            "teams:not-a-guid",
            "error: teams account must be an Azure AD object id (a GUID)",
        );
        check("discord:80351110224678912", "discord:80351110224678912");
        check(
            "discord:bob",
            "error: discord account must be a numeric Discord user id",
        );
        check("console:Bob", "console:bob");
        check(
            "console:bob smith",
            "error: console account contains spaces or control characters",
        );
        check("console:", "error: console account is empty");
        check(
            "irc:bob",
            "error: unknown platform 'irc' (platforms: xmpp, teams, discord, console)",
        );
        check(
            "bob",
            "error: identity must look like platform:account (platforms: xmpp, teams, discord, console)",
        );
        check(
            "xmpp:al\u{0}ice@x",
            "error: xmpp account contains spaces or control characters",
        );
    }

    #[test]
    fn long_accounts_are_refused() {
        let long = format!("xmpp:{}@contoso.com", "a".repeat(300));
        check(&long, "error: xmpp account is too long");
    }
}

//! The tokens the stand-in puts on the activities it sends to the bot: valid Bot Connector
//! tokens, and one builder for every kind of bad token the bot's validator must refuse.

use super::keys::{SigningKey, b64url};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

/// The issuer of Bot Connector tokens.
pub const ISSUER: &str = "https://api.botframework.com";
/// The channel id of Teams activities, which a signing key must endorse.
pub const CHANNEL_ID: &str = "msteams";
/// How far outside `nbf`/`exp` the expired and not-yet-valid tokens lie: well beyond the 5 min
/// clock skew a validator allows.
pub const OUT_OF_SKEW_SECS: i64 = 15 * 60;
/// The lifetime of valid tokens.
pub const TOKEN_LIFETIME_SECS: i64 = 60 * 60;

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

/// The claims of a valid Bot Connector token for `app_id`, sent from `service_url`:
/// `{iss, aud, nbf, exp, serviceurl}`.
pub fn valid_claims(app_id: &str, service_url: &str) -> Value {
    let now = now_secs();
    json!({
        "serviceurl": service_url,
        "nbf": now - 60,
        "exp": now + TOKEN_LIFETIME_SECS,
        "iss": ISSUER,
        "aud": app_id,
    })
}

/// Every way an inbound `Authorization` header can be wrong. A correct validator refuses each
/// one (see [`BadToken::expected_status`]) and the bot does nothing else for that request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadToken {
    /// No `Authorization` header at all.
    MissingHeader,
    /// A valid token under another scheme: `Authorization: Basic <token>`.
    WrongScheme,
    /// Not a JWT: the valid token without its signature part (`header.payload`).
    Malformed,
    /// Signed by a key the JWKS does not hold, under the `kid` of the signing key that it does.
    BadSignature,
    /// Signed by a key whose `kid` the JWKS does not list (and never will).
    UnknownKid,
    /// `iss` is `https://api.botframework.com.evil.example` instead of the Bot Framework's.
    WrongIssuer,
    /// `aud` is another application's id.
    WrongAudience,
    /// `exp` passed 15 minutes ago (beyond the 5 minute skew).
    Expired,
    /// `nbf` is 15 minutes ahead (beyond the 5 minute skew).
    NotYetValid,
    /// The `serviceurl` claim names another Connector than the activity's `serviceUrl`.
    ServiceUrlMismatch,
    /// Signed by a published key whose `endorsements` do not include `msteams`.
    NotEndorsed,
    /// `alg: "none"` with an empty signature.
    AlgNone,
    /// HS256 with the HMAC secret set to the signing key's public PEM (key confusion).
    Hs256WithPublicKey,
}

impl BadToken {
    /// All variants, for tests that loop over them.
    pub const ALL: [BadToken; 13] = [
        BadToken::MissingHeader,
        BadToken::WrongScheme,
        BadToken::Malformed,
        BadToken::BadSignature,
        BadToken::UnknownKid,
        BadToken::WrongIssuer,
        BadToken::WrongAudience,
        BadToken::Expired,
        BadToken::NotYetValid,
        BadToken::ServiceUrlMismatch,
        BadToken::NotEndorsed,
        BadToken::AlgNone,
        BadToken::Hs256WithPublicKey,
    ];

    /// The status a bot should answer (platforms.md A.4b): 403 for a key that does not endorse
    /// the channel, 401 for every other authentication failure.
    pub fn expected_status(self) -> u16 {
        match self {
            BadToken::NotEndorsed => 403,
            _ => 401,
        }
    }

    /// A short description for failure messages.
    pub fn describe(self) -> &'static str {
        match self {
            BadToken::MissingHeader => "no Authorization header",
            BadToken::WrongScheme => "scheme is not Bearer",
            BadToken::Malformed => "not a well-formed JWT",
            BadToken::BadSignature => "signature does not verify with the kid's key",
            BadToken::UnknownKid => "kid not in the JWKS",
            BadToken::WrongIssuer => "wrong issuer",
            BadToken::WrongAudience => "wrong audience",
            BadToken::Expired => "expired",
            BadToken::NotYetValid => "not yet valid",
            BadToken::ServiceUrlMismatch => "serviceurl claim differs from the activity's serviceUrl",
            BadToken::NotEndorsed => "signing key does not endorse msteams",
            BadToken::AlgNone => "alg none",
            BadToken::Hs256WithPublicKey => "HS256 signed with the public key",
        }
    }
}

/// The keys a bad token can need.
pub(crate) struct BadTokenKeys<'a> {
    /// The key valid tokens are signed with (published, endorsing `msteams`).
    pub signing: &'a SigningKey,
    /// A published key that does not endorse `msteams`.
    pub unendorsed: &'a SigningKey,
    /// A key that is not published.
    pub foreign: &'a SigningKey,
}

/// The `Authorization` header value for `bad` (None for [`BadToken::MissingHeader`]).
pub(crate) fn bad_header(bad: BadToken, keys: &BadTokenKeys<'_>, app_id: &str, service_url: &str) -> Option<String> {
    let claims = valid_claims(app_id, service_url);
    let with = |field: &str, value: Value| {
        let mut c = claims.clone();
        c[field] = value;
        c
    };
    let token = match bad {
        BadToken::MissingHeader => return None,
        BadToken::WrongScheme => return Some(format!("Basic {}", keys.signing.sign(&claims))),
        BadToken::Malformed => {
            let valid = keys.signing.sign(&claims);
            valid
                .rsplit_once('.')
                .map(|(head, _)| head.to_string())
                .unwrap_or(valid)
        }
        BadToken::BadSignature => keys.foreign.sign_with_header(&keys.signing.header(), &claims),
        BadToken::UnknownKid => keys.foreign.sign(&claims),
        BadToken::WrongIssuer => keys
            .signing
            .sign(&with("iss", json!("https://api.botframework.com.evil.example"))),
        BadToken::WrongAudience => keys
            .signing
            .sign(&with("aud", json!("00000000-0000-0000-0000-00000000beef"))),
        BadToken::Expired => {
            let now = now_secs();
            let mut c = claims.clone();
            c["nbf"] = json!(now - TOKEN_LIFETIME_SECS - OUT_OF_SKEW_SECS);
            c["exp"] = json!(now - OUT_OF_SKEW_SECS);
            keys.signing.sign(&c)
        }
        BadToken::NotYetValid => {
            let now = now_secs();
            let mut c = claims.clone();
            c["nbf"] = json!(now + OUT_OF_SKEW_SECS);
            c["exp"] = json!(now + OUT_OF_SKEW_SECS + TOKEN_LIFETIME_SECS);
            keys.signing.sign(&c)
        }
        BadToken::ServiceUrlMismatch => keys
            .signing
            .sign(&with("serviceurl", json!("https://smba.trafficmanager.net/evil/"))),
        BadToken::NotEndorsed => keys.unendorsed.sign(&claims),
        BadToken::AlgNone => {
            let header = json!({"typ": "JWT", "alg": "none", "kid": keys.signing.kid()});
            format!(
                "{}.{}.",
                b64url(header.to_string().as_bytes()),
                b64url(claims.to_string().as_bytes())
            )
        }
        BadToken::Hs256WithPublicKey => {
            let mut header = keys.signing.header();
            header.alg = Algorithm::HS256;
            let key = EncodingKey::from_secret(keys.signing.public_key_pem().as_bytes());
            jsonwebtoken::encode(&header, &claims, &key).expect("HS256 signing of JSON claims cannot fail")
        }
    };
    Some(format!("Bearer {token}"))
}

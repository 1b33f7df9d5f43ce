//! Inbound authentication, the pure part: the Bot Connector's JWT checked as Microsoft documents
//! it (bot-docs "Authenticate requests from the Bot Connector service", step 4): the `Bearer`
//! scheme, a well-formed RS256 token whose `kid` names a key of the JWKS, its signature, the
//! issuer, the audience (the app id), `exp`/`nbf` with five minutes of clock skew, the key's
//! endorsements containing the activity's `channelId`, and the `serviceurl` claim equal to the
//! activity's `serviceUrl`. Also the parsing of the OpenID metadata and of the JWKS (with the
//! Bot Framework's `endorsements` per key).
//!
//! Nothing here can be switched off: there is no setting for it.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;

/// The clock skew allowed on `exp` and `nbf` (Microsoft: five minutes).
pub const LEEWAY_SECS: u64 = 300;

/// Why a request was refused. Never carries the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header.
    Missing,
    /// A scheme other than `Bearer`.
    Scheme,
    /// Not a well-formed JWT.
    Malformed,
    /// Signed with another algorithm than RS256 (`none`, HS256, …).
    Algorithm(String),
    /// No `kid` in the header.
    NoKeyId,
    /// The `kid` is not in the JWKS, even after a refresh.
    UnknownKey,
    /// The signature or a claim check failed (the check's name).
    Invalid(String),
    /// The `serviceurl` claim differs from the activity's `serviceUrl`.
    ServiceUrl,
    /// The key does not endorse the activity's channel.
    NotEndorsed,
    /// The keys could not be fetched (the identity service is unreachable).
    KeysUnavailable,
}

impl Refusal {
    /// The HTTP status to answer: 403 for a key that does not endorse the channel, 503 when
    /// the keys cannot be had, 401 for every other failure.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::NotEndorsed => 403,
            Refusal::KeysUnavailable => 503,
            _ => 401,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Missing => f.write_str("no Authorization header"),
            Refusal::Scheme => f.write_str("the Authorization scheme is not Bearer"),
            Refusal::Malformed => f.write_str("the token is not a well-formed JWT"),
            Refusal::Algorithm(alg) => write!(f, "the token is signed with {alg}, not RS256"),
            Refusal::NoKeyId => f.write_str("the token names no key (kid)"),
            Refusal::UnknownKey => f.write_str("the token's key is not in the Bot Framework's key set"),
            Refusal::Invalid(why) => write!(f, "the token is invalid: {why}"),
            Refusal::ServiceUrl => f.write_str("the token's serviceurl differs from the activity's serviceUrl"),
            Refusal::NotEndorsed => f.write_str("the token's key does not endorse the activity's channel"),
            Refusal::KeysUnavailable => f.write_str("the Bot Framework's keys cannot be fetched"),
        }
    }
}

/// A public key of the JWKS with the channels it endorses.
#[derive(Clone)]
pub struct PublicKey {
    pub kid: String,
    key: DecodingKey,
    /// Channel ids (`msteams`, …); empty means the JWKS said nothing.
    pub endorsements: Vec<String>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("endorsements", &self.endorsements)
            .finish_non_exhaustive()
    }
}

/// The keys of one JWKS fetch, by `kid`.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: HashMap<String, PublicKey>,
}

impl KeySet {
    pub fn get(&self, kid: &str) -> Option<&PublicKey> {
        self.keys.get(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The parts of the OpenID metadata Baton uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub jwks_uri: String,
    /// `id_token_signing_alg_values_supported`.
    pub algorithms: Vec<String>,
}

/// Reads the OpenID metadata document.
pub fn parse_metadata(body: &[u8]) -> Result<Metadata, String> {
    #[derive(Deserialize)]
    struct Raw {
        jwks_uri: Option<String>,
        #[serde(default)]
        id_token_signing_alg_values_supported: Vec<String>,
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| format!("the OpenID metadata is not JSON: {e}"))?;
    let jwks_uri = raw.jwks_uri.ok_or("the OpenID metadata has no jwks_uri")?;
    Ok(Metadata {
        jwks_uri,
        algorithms: raw.id_token_signing_alg_values_supported,
    })
}

/// Reads a JWKS: RSA signing keys with `kid`, `n`, `e` and the optional `endorsements`. Keys
/// that are not RSA signing keys, or cannot be read, are skipped and named in the second list.
pub fn parse_jwks(body: &[u8]) -> Result<(KeySet, Vec<String>), String> {
    #[derive(Deserialize)]
    struct Raw {
        keys: Vec<Value>,
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| format!("the JWKS is not a key set: {e}"))?;
    let mut set = KeySet::default();
    let mut skipped = Vec::new();
    for k in raw.keys {
        let text = |name: &str| k.get(name).and_then(Value::as_str).map(str::to_string);
        let Some(kid) = text("kid") else {
            skipped.push("a key without kid".to_string());
            continue;
        };
        if text("kty").as_deref() != Some("RSA") || text("use").is_some_and(|u| u != "sig") {
            skipped.push(format!("{kid}: not an RSA signing key"));
            continue;
        }
        let (Some(n), Some(e)) = (text("n"), text("e")) else {
            skipped.push(format!("{kid}: no modulus or exponent"));
            continue;
        };
        let key = match DecodingKey::from_rsa_components(&n, &e) {
            Ok(key) => key,
            Err(err) => {
                skipped.push(format!("{kid}: {err}"));
                continue;
            }
        };
        let endorsements = k
            .get("endorsements")
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        set.keys.insert(kid.clone(), PublicKey { kid, key, endorsements });
    }
    Ok((set, skipped))
}

/// The token of an `Authorization` header, with the key id its header names. Only RS256 tokens
/// get this far.
#[derive(Debug)]
pub struct Bearer<'a> {
    token: &'a str,
    pub kid: String,
}

/// Reads the `Authorization` header: the scheme, the JWT's shape, RS256, a `kid`.
pub fn bearer(header: Option<&str>) -> Result<Bearer<'_>, Refusal> {
    let header = header.ok_or(Refusal::Missing)?;
    let (scheme, token) = header.trim().split_once(' ').ok_or(Refusal::Scheme)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal::Scheme);
    }
    let token = token.trim();
    if token.split('.').count() != 3 {
        return Err(Refusal::Malformed);
    }
    let head = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
    if head.alg != Algorithm::RS256 {
        return Err(Refusal::Algorithm(format!("{:?}", head.alg)));
    }
    let kid = head.kid.filter(|k| !k.is_empty()).ok_or(Refusal::NoKeyId)?;
    Ok(Bearer { token, kid })
}

/// What the token must say.
#[derive(Clone, Debug)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    /// The bot's app id.
    pub audience: &'a str,
    /// The algorithms the metadata lists (RS256 must be among them).
    pub algorithms: &'a [String],
}

/// What the activity says, to compare with the token.
#[derive(Clone, Copy, Debug)]
pub struct Claimed<'a> {
    pub service_url: &'a str,
    pub channel_id: &'a str,
}

/// Verifies the token with `key` (the JWKS entry of its `kid`) against `expected`: the
/// signature, issuer, audience, `exp` and `nbf`. Returns its claims. Reads the clock.
pub fn verify(bearer: &Bearer<'_>, key: &PublicKey, expected: &Expected<'_>) -> Result<Value, Refusal> {
    if !expected.algorithms.is_empty() && !expected.algorithms.iter().any(|a| a == "RS256") {
        return Err(Refusal::Algorithm("RS256 (not offered by the metadata)".into()));
    }
    let mut v = Validation::new(Algorithm::RS256);
    v.set_issuer(&[expected.issuer]);
    v.set_audience(&[expected.audience]);
    v.leeway = LEEWAY_SECS;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    let data = jsonwebtoken::decode::<Value>(bearer.token, &key.key, &v).map_err(|e| Refusal::Invalid(kind(&e)))?;
    Ok(data.claims)
}

/// Binds a verified token to the activity it came with: the key endorses the activity's
/// channel, and the `serviceurl` claim is the activity's `serviceUrl`.
pub fn binds(claims: &Value, key: &PublicKey, activity: Claimed<'_>) -> Result<(), Refusal> {
    if !key.endorsements.is_empty() && !key.endorsements.iter().any(|c| c == activity.channel_id) {
        return Err(Refusal::NotEndorsed);
    }
    if claims.get("serviceurl").and_then(Value::as_str) != Some(activity.service_url) {
        return Err(Refusal::ServiceUrl);
    }
    Ok(())
}

/// The name of a failed check (no token content).
fn kind(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => "InvalidSignature".into(),
        K::ExpiredSignature => "ExpiredSignature".into(),
        K::ImmatureSignature => "ImmatureSignature".into(),
        K::InvalidIssuer => "InvalidIssuer".into(),
        K::InvalidAudience => "InvalidAudience".into(),
        K::InvalidAlgorithm => "InvalidAlgorithm".into(),
        K::MissingRequiredClaim(c) => format!("MissingRequiredClaim({c})"),
        K::InvalidClaimFormat(c) => format!("InvalidClaimFormat({c})"),
        K::InvalidToken => "InvalidToken".into(),
        _ => "Malformed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_read_before_any_key_is_looked_up() {
        assert_eq!(bearer(None).unwrap_err(), Refusal::Missing);
        assert_eq!(bearer(Some("Basic abc")).unwrap_err(), Refusal::Scheme);
        assert_eq!(bearer(Some("Bearer")).unwrap_err(), Refusal::Scheme);
        assert_eq!(bearer(Some("Bearer a.b")).unwrap_err(), Refusal::Malformed);
        assert_eq!(bearer(Some("Bearer !!.??.**")).unwrap_err(), Refusal::Malformed);
        let b64 = |v: &str| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
        };
        let none = format!("Bearer {}.{}.", b64(r#"{"alg":"none","kid":"k"}"#), b64("{}"));
        assert_eq!(
            bearer(Some(&none)).unwrap_err(),
            Refusal::Malformed,
            "alg none is not even an algorithm"
        );
        let hs = format!("Bearer {}.{}.c2ln", b64(r#"{"alg":"HS256","kid":"k"}"#), b64("{}"));
        assert_eq!(bearer(Some(&hs)).unwrap_err(), Refusal::Algorithm("HS256".into()));
        let nokid = format!("Bearer {}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64("{}"));
        assert_eq!(bearer(Some(&nokid)).unwrap_err(), Refusal::NoKeyId);
        let ok = format!(
            "bearer {}.{}.c2ln",
            b64(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#),
            b64("{}")
        );
        assert_eq!(bearer(Some(&ok)).expect("well formed").kid, "k1");
    }

    #[test]
    fn statuses_follow_the_documented_answers() {
        assert_eq!(Refusal::NotEndorsed.status(), 403);
        assert_eq!(Refusal::Invalid("ExpiredSignature".into()).status(), 401);
        assert_eq!(Refusal::KeysUnavailable.status(), 503);
    }

    #[test]
    fn metadata_and_key_sets_are_read_leniently_but_keys_strictly() {
        let m = parse_metadata(br#"{"issuer":"https://api.botframework.com","jwks_uri":"https://x/keys","id_token_signing_alg_values_supported":["RS256"]}"#)
            .expect("metadata");
        assert_eq!(m.jwks_uri, "https://x/keys");
        assert_eq!(m.algorithms, vec!["RS256".to_string()]);
        assert!(parse_metadata(b"{}").is_err());
        assert!(parse_metadata(b"<html>").is_err());
        // RFC 7517's example modulus is enough to be read; the endorsements come along.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let body = serde_json::json!({"keys": [
            {"kty": "RSA", "use": "sig", "kid": "a", "n": n, "e": "AQAB", "endorsements": ["msteams", "skype"]},
            {"kty": "RSA", "kid": "b", "n": n, "e": "AQAB"},
            {"kty": "EC", "kid": "c", "crv": "P-256"},
            {"kty": "RSA", "use": "enc", "kid": "d", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "e"},
            {"kty": "RSA", "n": n, "e": "AQAB"},
        ]});
        let (set, skipped) = parse_jwks(body.to_string().as_bytes()).expect("a key set");
        assert_eq!(set.len(), 2);
        assert_eq!(set.get("a").expect("a").endorsements, vec!["msteams", "skype"]);
        assert!(set.get("b").expect("b").endorsements.is_empty());
        assert_eq!(skipped.len(), 4, "{skipped:?}");
        assert!(parse_jwks(b"{\"keys\":5}").is_err());
    }
}

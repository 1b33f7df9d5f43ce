//! Tests of the Teams stand-in itself: its tokens validate against its own JWKS with an
//! independent validator written after Microsoft's checks and each bad token fails for its own
//! reason; key rotation; the token endpoint's refusals; the Connector's record, checks and
//! faults; the activity shapes; and the Adaptive Card renderer on a good and a broken card.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use baton_e2e::teams::cards::{self, RenderOptions};
use baton_e2e::teams::http::{self as standin_http, Reply};
use baton_e2e::teams::identity::{SIGNING_KID, UNENDORSED_KID};
use baton_e2e::teams::{Auth, BadToken, CallKind, Fault, TeamsConfig, TeamsStandIn, TeamsUser, Times, tokens};
use hyper::{Method, StatusCode};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

async fn standin() -> TeamsStandIn {
    TeamsStandIn::start(TeamsConfig::default())
        .await
        .expect("the stand-in starts")
}

async fn get_json(url: &str) -> Value {
    let response = standin_http::request(Method::GET, url, &[], Vec::new(), WAIT)
        .await
        .expect("GET answers");
    assert_eq!(response.status, 200, "GET {url}: {}", response.text());
    response.json().expect("a JSON document")
}

// ---------------------------------------------------------------------------------------------
// An independent validator, written after Microsoft's documented checks (platforms.md A.2), that
// names the first check a token fails.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Missing,
    NotBearer,
    Malformed,
    AlgorithmNotAllowed,
    UnknownKid,
    Signature,
    Issuer,
    Audience,
    Expired,
    NotYetValid,
    ServiceUrl,
    NotEndorsed,
}

fn validate(authorization: Option<&str>, jwks: &Value, app_id: &str, service_url: &str) -> Result<Value, Refusal> {
    let value = authorization.ok_or(Refusal::Missing)?;
    let token = value.strip_prefix("Bearer ").ok_or(Refusal::NotBearer)?;
    // Read `alg` by hand first: jsonwebtoken cannot even represent `none`.
    let first = token.split('.').next().unwrap_or_default();
    let raw_header: Value = URL_SAFE_NO_PAD
        .decode(first)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(Refusal::Malformed)?;
    if raw_header["alg"] != json!("RS256") {
        return Err(Refusal::AlgorithmNotAllowed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
    let kid = header.kid.ok_or(Refusal::Malformed)?;
    let key = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["kid"] == json!(kid))
        .ok_or(Refusal::UnknownKid)?;
    let decoding = DecodingKey::from_rsa_components(
        key["n"].as_str().expect("n is a string"),
        key["e"].as_str().expect("e is a string"),
    )
    .expect("the JWK's components decode");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[tokens::ISSUER]);
    validation.set_audience(&[app_id]);
    validation.leeway = 300;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
    let data = jsonwebtoken::decode::<Value>(token, &decoding, &validation).map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => Refusal::Signature,
        ErrorKind::InvalidIssuer => Refusal::Issuer,
        ErrorKind::InvalidAudience => Refusal::Audience,
        ErrorKind::ExpiredSignature => Refusal::Expired,
        ErrorKind::ImmatureSignature => Refusal::NotYetValid,
        _ => Refusal::Malformed,
    })?;
    let endorsements: Vec<&str> = key["endorsements"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !endorsements.is_empty() && !endorsements.contains(&tokens::CHANNEL_ID) {
        return Err(Refusal::NotEndorsed);
    }
    if data.claims["serviceurl"].as_str() != Some(service_url) {
        return Err(Refusal::ServiceUrl);
    }
    Ok(data.claims)
}

fn expected_refusal(bad: BadToken) -> Refusal {
    match bad {
        BadToken::MissingHeader => Refusal::Missing,
        BadToken::WrongScheme => Refusal::NotBearer,
        BadToken::Malformed => Refusal::Malformed,
        BadToken::BadSignature => Refusal::Signature,
        BadToken::UnknownKid => Refusal::UnknownKid,
        BadToken::WrongIssuer => Refusal::Issuer,
        BadToken::WrongAudience => Refusal::Audience,
        BadToken::Expired => Refusal::Expired,
        BadToken::NotYetValid => Refusal::NotYetValid,
        BadToken::ServiceUrlMismatch => Refusal::ServiceUrl,
        BadToken::NotEndorsed => Refusal::NotEndorsed,
        BadToken::AlgNone | BadToken::Hs256WithPublicKey => Refusal::AlgorithmNotAllowed,
    }
}

// ---------------------------------------------------------------------------------------------
// Identity provider and tokens.

#[tokio::test]
async fn a_signed_token_validates_against_the_served_metadata_and_jwks() {
    let teams = standin().await;
    let metadata = get_json(&teams.openid_metadata_url()).await;
    assert_eq!(metadata["issuer"], json!("https://api.botframework.com"));
    assert_eq!(metadata["id_token_signing_alg_values_supported"], json!(["RS256"]));
    let jwks_uri = metadata["jwks_uri"].as_str().expect("jwks_uri is a string");
    assert!(jwks_uri.starts_with("http://127.0.0.1:"), "{jwks_uri}");
    let jwks = get_json(jwks_uri).await;
    assert_eq!(teams.identity().metadata_fetches(), 1);
    assert_eq!(teams.identity().jwks_fetches(), 1);

    let keys = jwks["keys"].as_array().expect("keys is a list");
    let signing = keys
        .iter()
        .find(|k| k["kid"] == json!(SIGNING_KID))
        .expect("the signing key is published");
    assert_eq!(signing["kty"], json!("RSA"));
    assert_eq!(signing["use"], json!("sig"));
    assert_eq!(signing["e"], json!("AQAB"));
    assert_eq!(signing["endorsements"], json!(["msteams"]));
    let modulus = URL_SAFE_NO_PAD
        .decode(signing["n"].as_str().expect("n"))
        .expect("n is base64url");
    assert_eq!(modulus.len() * 8, 2048, "an RSA-2048 key");
    // x5t is the SHA-1 thumbprint of the certificate in x5c.
    let cert = STANDARD
        .decode(signing["x5c"][0].as_str().expect("x5c[0]"))
        .expect("x5c is base64");
    assert_eq!(signing["x5t"], json!(URL_SAFE_NO_PAD.encode(Sha1::digest(&cert))));

    let token = teams.identity().valid_token();
    let header = jsonwebtoken::decode_header(&token).expect("a JWT header");
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), Some(SIGNING_KID));
    assert_eq!(header.x5t, signing["x5t"].as_str().map(str::to_string));
    let claims = validate(
        Some(&format!("Bearer {token}")),
        &jwks,
        teams.app_id(),
        teams.service_url(),
    )
    .expect("a valid token validates");
    assert_eq!(claims["iss"], json!("https://api.botframework.com"));
    assert_eq!(claims["aud"], json!(teams.app_id()));
    assert_eq!(claims["serviceurl"], json!(teams.service_url()));
    let (nbf, exp) = (
        claims["nbf"].as_i64().expect("nbf"),
        claims["exp"].as_i64().expect("exp"),
    );
    assert!(
        nbf <= tokens::now_secs() && exp > tokens::now_secs() + 300,
        "nbf {nbf} exp {exp}"
    );

    // The same token against another app or another serviceUrl is refused: the validator is
    // not a rubber stamp.
    assert_eq!(
        validate(
            Some(&format!("Bearer {token}")),
            &jwks,
            "another-app",
            teams.service_url()
        ),
        Err(Refusal::Audience)
    );
    assert_eq!(
        validate(
            Some(&format!("Bearer {token}")),
            &jwks,
            teams.app_id(),
            "http://127.0.0.1:1/teams/"
        ),
        Err(Refusal::ServiceUrl)
    );
}

#[tokio::test]
async fn every_bad_token_fails_for_its_own_reason() {
    let teams = standin().await;
    let jwks = get_json(&teams.identity().jwks_url()).await;
    assert!(
        jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .any(|k| k["kid"] == json!(UNENDORSED_KID) && k["endorsements"] == json!(["skype", "slack"])),
        "the unendorsed key is published from the start: {jwks}"
    );
    let mut seen = std::collections::HashSet::new();
    for bad in BadToken::ALL {
        let header = teams.authorization(&Auth::Bad(bad)).await.expect("bad token built");
        assert_eq!(header.is_none(), bad == BadToken::MissingHeader, "{bad:?}");
        let verdict = validate(header.as_deref(), &jwks, teams.app_id(), teams.service_url());
        assert_eq!(verdict, Err(expected_refusal(bad)), "{bad:?} ({})", bad.describe());
        assert_eq!(
            bad.expected_status(),
            if bad == BadToken::NotEndorsed { 403 } else { 401 }
        );
        if let Some(h) = header {
            assert!(seen.insert(h), "{bad:?} repeats another variant's header");
        }
    }

    // The two algorithm attacks are real attacks, not garbage: alg none has an empty
    // signature, and the HS256 token verifies with the public PEM as HMAC secret.
    let none = teams
        .authorization(&Auth::Bad(BadToken::AlgNone))
        .await
        .expect("built")
        .expect("a header");
    assert!(none.ends_with('.'), "{none}");
    let hs = teams
        .authorization(&Auth::Bad(BadToken::Hs256WithPublicKey))
        .await
        .expect("built")
        .expect("a header");
    let hs = hs.strip_prefix("Bearer ").expect("Bearer");
    let pem = public_pem_of(&jwks, SIGNING_KID);
    let mut hmac = Validation::new(Algorithm::HS256);
    hmac.set_audience(&[teams.app_id()]);
    jsonwebtoken::decode::<Value>(hs, &DecodingKey::from_secret(pem.as_bytes()), &hmac)
        .expect("the HS256 token is signed with the public key's PEM");
}

/// The SPKI PEM of a published key, rebuilt from its JWK.
fn public_pem_of(jwks: &Value, kid: &str) -> String {
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    let key = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == json!(kid))
        .expect("kid published");
    let n = URL_SAFE_NO_PAD
        .decode(key["n"].as_str().expect("n"))
        .expect("n decodes");
    let e = URL_SAFE_NO_PAD
        .decode(key["e"].as_str().expect("e"))
        .expect("e decodes");
    rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(&n), rsa::BigUint::from_bytes_be(&e))
        .expect("a valid public key")
        .to_public_key_pem(LineEnding::LF)
        .expect("PEM encodes")
}

#[tokio::test]
async fn keys_rotate_and_a_removed_key_is_refused_after_a_refresh() {
    let teams = standin().await;
    let idp = teams.identity();
    let before = get_json(&idp.jwks_url()).await;

    idp.add_key("rotated-2", &["msteams"]).await.expect("a key is added");
    assert!(idp.add_key("rotated-2", &["msteams"]).await.is_err(), "kids are unique");
    idp.use_for_signing("rotated-2").expect("the new key signs");
    let token = format!("Bearer {}", idp.valid_token());
    assert_eq!(
        jsonwebtoken::decode_header(token.strip_prefix("Bearer ").expect("Bearer"))
            .expect("header")
            .kid
            .as_deref(),
        Some("rotated-2")
    );
    // A validator with the old JWKS does not know the new kid; after a refresh it does.
    assert_eq!(
        validate(Some(&token), &before, teams.app_id(), teams.service_url()),
        Err(Refusal::UnknownKid)
    );
    let refreshed = get_json(&idp.jwks_url()).await;
    validate(Some(&token), &refreshed, teams.app_id(), teams.service_url()).expect("valid after a refresh");
    assert_eq!(idp.wait_for_jwks_fetches(2, WAIT).await.expect("two fetches"), 2);

    // Removing the first key: a token it signs validates against a stale JWKS but not after a
    // refresh.
    idp.remove_key(SIGNING_KID).expect("removed");
    assert_eq!(
        idp.published_kids(),
        vec![UNENDORSED_KID.to_string(), "rotated-2".to_string()]
    );
    let old = format!(
        "Bearer {}",
        idp.sign_with(SIGNING_KID, &teams.valid_claims())
            .expect("the stand-in still holds the key")
    );
    validate(Some(&old), &refreshed, teams.app_id(), teams.service_url()).expect("the stale JWKS still has it");
    let after_removal = get_json(&idp.jwks_url()).await;
    assert_eq!(
        validate(Some(&old), &after_removal, teams.app_id(), teams.service_url()),
        Err(Refusal::UnknownKid)
    );
    assert_eq!(idp.jwks_fetches(), 3);

    // Endorsements can change too.
    idp.set_endorsements("rotated-2", &["slack"]).expect("re-endorsed");
    let unendorsed = get_json(&idp.jwks_url()).await;
    assert_eq!(
        validate(Some(&token), &unendorsed, teams.app_id(), teams.service_url()),
        Err(Refusal::NotEndorsed)
    );
    assert!(idp.remove_key("no-such-kid").is_err());
    assert!(idp.use_for_signing("no-such-kid").is_err());
}

#[tokio::test]
async fn the_identity_provider_can_fail_on_purpose() {
    let teams = standin().await;
    let idp = teams.identity();
    idp.inject(Fault::Unavailable, Times::Next(1));
    let failed = standin_http::request(Method::GET, &idp.jwks_url(), &[], Vec::new(), WAIT)
        .await
        .expect("answers");
    assert_eq!(failed.status, 503);
    get_json(&idp.jwks_url()).await;
    assert_eq!(idp.jwks_fetches(), 2, "faulted fetches count too");
}

// ---------------------------------------------------------------------------------------------
// Token endpoint.

async fn token_request(url: &str, form: &[(&str, &str)]) -> standin_http::HttpResponse {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    standin_http::request(
        Method::POST,
        url,
        &[("content-type", "application/x-www-form-urlencoded")],
        body.into_bytes(),
        WAIT,
    )
    .await
    .expect("the token endpoint answers")
}

/// A token request's form fields.
type Form = Vec<(&'static str, String)>;

fn good_form(teams: &TeamsStandIn) -> Form {
    vec![
        ("grant_type", "client_credentials".to_string()),
        ("client_id", teams.app_id().to_string()),
        ("client_secret", teams.app_secret().expose_secret().to_string()),
        ("scope", "https://api.botframework.com/.default".to_string()),
    ]
}

fn with(form: &[(&'static str, String)], key: &str, value: Option<&str>) -> Vec<(&'static str, String)> {
    let mut changed: Vec<(&'static str, String)> = form.iter().filter(|(k, _)| *k != key).cloned().collect();
    if let Some(v) = value {
        let k = form.iter().find(|(k, _)| *k == key).expect("a known field").0;
        changed.push((k, v.to_string()));
    }
    changed
}

fn pairs<'a>(form: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    form.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn the_token_endpoint_issues_tokens_and_refuses_bad_requests() {
    let teams = standin().await;
    let login = teams.login();
    let good = good_form(&teams);

    let ok = token_request(&teams.token_url(), &pairs(&good)).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let body = ok.json().expect("JSON");
    assert_eq!(body["token_type"], json!("Bearer"));
    assert_eq!(body["expires_in"], json!(3600));
    assert_eq!(body["ext_expires_in"], json!(3600));
    let token = body["access_token"].as_str().expect("a token");
    assert!(login.is_current(token));

    // (form change, status, OAuth error)
    let cases: Vec<(Form, u16, &str)> = vec![
        (
            with(&good, "client_secret", Some("wrong-secret")),
            401,
            "invalid_client",
        ),
        (with(&good, "client_secret", None), 401, "invalid_client"),
        (
            with(&good, "scope", Some("https://graph.microsoft.com/.default")),
            400,
            "invalid_resource",
        ),
        (
            with(&good, "scope", Some("https://api.botframework.com")),
            400,
            "invalid_scope",
        ),
        (with(&good, "scope", None), 400, "invalid_resource"),
        (
            with(&good, "grant_type", Some("password")),
            400,
            "unsupported_grant_type",
        ),
        (with(&good, "grant_type", None), 400, "invalid_request"),
        (
            with(&good, "client_id", Some("someone-else")),
            400,
            "unauthorized_client",
        ),
    ];
    for (form, status, error) in &cases {
        let refused = token_request(&teams.token_url(), &pairs(form)).await;
        let body = refused.json().expect("a JSON error");
        assert_eq!(
            (refused.status, body["error"].as_str()),
            (*status, Some(*error)),
            "{form:?}: {body}"
        );
        assert!(
            body["error_description"]
                .as_str()
                .expect("a description")
                .starts_with("AADSTS")
        );
        assert!(
            !refused.text().contains(teams.app_secret().expose_secret()),
            "a refusal must not echo the secret"
        );
    }
    // Another tenant's URL, and a JSON body instead of a form.
    let foreign = token_request(&login.token_url_for("contoso.onmicrosoft.com"), &pairs(&good)).await;
    assert_eq!(foreign.status, 400);
    let as_json = standin_http::request(
        Method::POST,
        &teams.token_url(),
        &[("content-type", "application/json")],
        json!({"grant_type": "client_credentials"}).to_string().into_bytes(),
        WAIT,
    )
    .await
    .expect("answers");
    assert_eq!(as_json.status, 400);

    assert_eq!(login.request_count(), 1 + cases.len() + 2);
    assert_eq!(login.issued_count(), 1);
    let logged = login.requests();
    assert!(logged[1..].iter().all(|r| r.status != Some(200) && r.error.is_some()));
    assert!(format!("{logged:?}").contains("secret_matched: false"));
    assert!(!format!("{logged:?}").contains(teams.app_secret().expose_secret()));
    login.wait_for_requests(logged.len(), WAIT).await.expect("counted");

    // A configurable lifetime, and revocation.
    login.set_token_lifetime(Duration::from_millis(1500));
    let short = token_request(&teams.token_url(), &pairs(&good))
        .await
        .json()
        .expect("JSON");
    assert_eq!(short["expires_in"], json!(2));
    login.revoke_all();
    assert!(!login.is_current(token));
    login.set_token_lifetime(Duration::ZERO);
    let expired = token_request(&teams.token_url(), &pairs(&good))
        .await
        .json()
        .expect("JSON");
    assert_eq!(expired["expires_in"], json!(0));
    assert!(!login.is_current(expired["access_token"].as_str().expect("token")));
}

// ---------------------------------------------------------------------------------------------
// Connector.

async fn access_token(teams: &TeamsStandIn) -> String {
    let ok = token_request(&teams.token_url(), &pairs(&good_form(teams))).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    ok.json().expect("JSON")["access_token"]
        .as_str()
        .expect("a token")
        .to_string()
}

async fn connector_call(
    teams: &TeamsStandIn,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: &Value,
) -> anyhow::Result<standin_http::HttpResponse> {
    let url = format!("{}{path}", teams.service_url());
    let authorization = bearer.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json; charset=utf-8")];
    if let Some(a) = &authorization {
        headers.push(("authorization", a.as_str()));
    }
    standin_http::request(method, &url, &headers, body.to_string().into_bytes(), WAIT).await
}

fn card_message(text: &str) -> Value {
    json!({"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": {
        "type": "AdaptiveCard", "version": "1.5", "body": [{"type": "TextBlock", "text": text, "wrap": true}]}}]})
}

fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn the_connector_records_posts_replies_updates_and_new_threads() {
    let teams = standin().await;
    let connector = teams.connector();
    let token = access_token(&teams).await;
    let alice = TeamsUser::new("alice");
    let inbound = teams.message(&alice, "!failover xmpp EdgePool2").build();
    let conversation = inbound["conversation"]["id"]
        .as_str()
        .expect("conversation id")
        .to_string();
    let inbound_id = inbound["id"].as_str().expect("id").to_string();

    // A reply to the inbound message, path ids percent-encoded as botbuilder sends them.
    let reply_path = format!(
        "v3/conversations/{}/activities/{}",
        percent_encode(&conversation),
        inbound_id
    );
    let reply = connector_call(
        &teams,
        Method::POST,
        &reply_path,
        Some(&token),
        &card_message("Run #1 requested"),
    )
    .await
    .expect("answers");
    assert_eq!(reply.status, 201, "{}", reply.text());
    let card_id = reply.json().expect("JSON")["id"].as_str().expect("an id").to_string();

    // A post to the thread, with the raw id in the path.
    let post_path = format!("v3/conversations/{conversation}/activities");
    let post = connector_call(
        &teams,
        Method::POST,
        &post_path,
        Some(&token),
        &json!({"type": "message", "text": "step 1/8"}),
    )
    .await
    .expect("answers");
    assert_eq!(post.status, 201);
    let status_id = post.json().expect("JSON")["id"].as_str().expect("id").to_string();
    assert_ne!(status_id, card_id, "each activity gets a fresh id");

    // Updates, then the latest state.
    for text in ["Run #1 approved", "Run #1 running"] {
        let put = connector_call(
            &teams,
            Method::PUT,
            &format!(
                "v3/conversations/{}/activities/{card_id}",
                percent_encode(&conversation)
            ),
            Some(&token),
            &card_message(text),
        )
        .await
        .expect("answers");
        assert_eq!(put.status, 200, "{}", put.text());
        assert_eq!(put.json().expect("JSON"), json!({"id": card_id}));
    }
    let card = connector.activity(&card_id).expect("the card is known");
    assert_eq!(card.updates(), 2);
    assert_eq!(card.conversation_id, conversation);
    assert_eq!(card.created_by, CallKind::ReplyToActivity);
    assert_eq!(card.adaptive_cards()[0]["body"][0]["text"], json!("Run #1 running"));
    assert_eq!(
        card.versions[0]["attachments"][0]["content"]["body"][0]["text"],
        json!("Run #1 requested")
    );

    // A new thread in the channel.
    let channel = teams.channel();
    let created = connector_call(
        &teams,
        Method::POST,
        "v3/conversations",
        Some(&token),
        &json!({"isGroup": true, "channelData": {"channel": {"id": channel.channel_id}, "tenant": {"id": teams.tenant_id()}},
                "activity": {"type": "message", "text": "Run #2 requested"}}),
    )
    .await
    .expect("answers");
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json().expect("JSON");
    let thread = created["id"].as_str().expect("id");
    let activity_id = created["activityId"].as_str().expect("activityId");
    assert_eq!(thread, format!("{};messageid={activity_id}", channel.channel_id));
    assert_eq!(
        connector.activity(activity_id).expect("known").text(),
        Some("Run #2 requested")
    );

    // The record.
    let calls = connector.wait_for_calls(5, WAIT).await.expect("five calls");
    let kinds: Vec<CallKind> = calls.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        vec![
            CallKind::ReplyToActivity,
            CallKind::SendToConversation,
            CallKind::UpdateActivity,
            CallKind::UpdateActivity,
            CallKind::CreateConversation
        ]
    );
    assert_eq!(calls[0].conversation_id.as_deref(), Some(conversation.as_str()));
    assert_eq!(calls[0].activity_id.as_deref(), Some(inbound_id.as_str()));
    assert!(calls[0].path.contains("%3B"), "the raw path is kept: {}", calls[0].path);
    assert_eq!(calls[1].path, format!("/teams/{post_path}"));
    assert_eq!(calls[1].text(), Some("step 1/8"));
    assert_eq!(calls[0].authorization, Some(format!("Bearer {token}")));
    assert!(
        calls[0]
            .headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("application/json"))
    );
    assert!(calls.iter().all(|c| c.succeeded()));
    assert!(calls.windows(2).all(|w| w[0].at <= w[1].at && w[0].seq + 1 == w[1].seq));
    assert_eq!(calls[4].conversation_id.as_deref(), Some(thread));
    assert_eq!(connector.activities().len(), 3);
    assert_eq!(connector.busiest(Duration::from_secs(60)), 5);
}

#[tokio::test]
async fn the_connector_refuses_what_teams_would_refuse() {
    let teams = standin().await;
    let token = access_token(&teams).await;
    let conversation = format!("{};messageid=1", teams.channel().channel_id);
    let path = format!("v3/conversations/{conversation}/activities");
    let text = json!({"type": "message", "text": "hello"});

    let status = |r: anyhow::Result<standin_http::HttpResponse>| r.expect("answers").status;
    assert_eq!(
        status(connector_call(&teams, Method::POST, &path, None, &text).await),
        401
    );
    assert_eq!(
        status(connector_call(&teams, Method::POST, &path, Some("made-up"), &text).await),
        401
    );
    // An inbound Bot Connector token is not an outbound access token.
    let inbound = teams.identity().valid_token();
    assert_eq!(
        status(connector_call(&teams, Method::POST, &path, Some(&inbound), &text).await),
        401
    );
    let unknown = "v3/conversations/19:nobody@thread.tacv2;messageid=1/activities";
    assert_eq!(
        status(connector_call(&teams, Method::POST, unknown, Some(&token), &text).await),
        404
    );
    let put_unknown = format!("v3/conversations/{conversation}/activities/999");
    assert_eq!(
        status(connector_call(&teams, Method::PUT, &put_unknown, Some(&token), &text).await),
        404
    );
    let double_slash = format!("/{path}");
    assert_eq!(
        status(connector_call(&teams, Method::POST, &double_slash, Some(&token), &text).await),
        404
    );
    assert_eq!(
        status(connector_call(&teams, Method::DELETE, &put_unknown, Some(&token), &text).await),
        405
    );
    let empty = json!({"type": "message", "text": "  "});
    assert_eq!(
        status(connector_call(&teams, Method::POST, &path, Some(&token), &empty).await),
        400
    );
    let untyped = json!({"text": "hello"});
    assert_eq!(
        status(connector_call(&teams, Method::POST, &path, Some(&token), &untyped).await),
        400
    );
    let versionless = json!({"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
        "content": {"type": "AdaptiveCard", "body": []}}]});
    assert_eq!(
        status(connector_call(&teams, Method::POST, &path, Some(&token), &versionless).await),
        400
    );
    let huge = json!({"type": "message", "text": "x".repeat(30 * 1024)});
    assert_eq!(
        status(connector_call(&teams, Method::POST, &path, Some(&token), &huge).await),
        413
    );
    let plain = standin_http::request(
        Method::POST,
        &format!("{}{path}", teams.service_url()),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("content-type", "text/plain"),
        ],
        text.to_string().into_bytes(),
        WAIT,
    )
    .await
    .expect("answers");
    assert_eq!(plain.status, 415);
    let no_channel = json!({"isGroup": true, "activity": {"type": "message", "text": "hi"}});
    assert_eq!(
        status(connector_call(&teams, Method::POST, "v3/conversations", Some(&token), &no_channel).await),
        400
    );

    // Expired and revoked tokens.
    teams.login().set_token_lifetime(Duration::ZERO);
    let expired = access_token(&teams).await;
    assert_eq!(
        status(connector_call(&teams, Method::POST, &path, Some(&expired), &text).await),
        401
    );
    assert_eq!(
        status(connector_call(&teams, Method::POST, &path, Some(&token), &text).await),
        201
    );
    teams.login().revoke_all();
    let denied = connector_call(&teams, Method::POST, &path, Some(&token), &text)
        .await
        .expect("answers");
    assert_eq!(denied.status, 401);
    assert_eq!(
        denied.json().expect("JSON"),
        json!({"message": "Authorization has been denied for this request."})
    );

    let calls = teams.connector().calls();
    assert_eq!(
        calls.iter().filter(|c| c.succeeded()).count(),
        1,
        "only one call got through"
    );
    assert_eq!(teams.connector().activities().len(), 1, "refusals change nothing");
    assert_eq!(
        calls.len(),
        16,
        "every refusal is recorded:\n{}",
        teams.connector().describe()
    );
}

#[tokio::test]
async fn the_connector_honours_fault_injection() {
    let teams = standin().await;
    let connector = teams.connector();
    let token = access_token(&teams).await;
    let path = format!("v3/conversations/{}/activities", teams.channel().channel_id);
    let text = json!({"type": "message", "text": "status"});

    connector.inject(Fault::Unavailable, Times::Next(2));
    for _ in 0..2 {
        let r = connector_call(&teams, Method::POST, &path, Some(&token), &text)
            .await
            .expect("answers");
        assert_eq!(r.status, 503);
    }
    let r = connector_call(&teams, Method::POST, &path, Some(&token), &text)
        .await
        .expect("answers");
    assert_eq!(r.status, 201, "service resumes after the two faults");

    connector.inject(Fault::TooManyRequests { retry_after_secs: 3 }, Times::UntilCleared);
    for _ in 0..3 {
        let r = connector_call(&teams, Method::POST, &path, Some(&token), &text)
            .await
            .expect("answers");
        assert_eq!((r.status, r.header("retry-after")), (429, Some("3")));
    }
    connector.clear_faults();
    let r = connector_call(&teams, Method::POST, &path, Some(&token), &text)
        .await
        .expect("answers");
    assert_eq!(r.status, 201);

    connector.inject(Fault::CloseConnection, Times::Next(1));
    let dropped = connector_call(&teams, Method::POST, &path, Some(&token), &text).await;
    assert!(dropped.is_err(), "the connection closes without an answer: {dropped:?}");
    let r = connector_call(&teams, Method::POST, &path, Some(&token), &text)
        .await
        .expect("answers");
    assert_eq!(r.status, 201);

    // Faults come before authentication, are recorded, and create nothing.
    connector.inject(Fault::Unavailable, Times::Next(1));
    assert_eq!(
        connector_call(&teams, Method::POST, &path, None, &text)
            .await
            .expect("answers")
            .status,
        503
    );
    let calls = connector.calls();
    let faults: Vec<Option<Fault>> = calls.iter().map(|c| c.fault).collect();
    assert_eq!(
        faults,
        vec![
            Some(Fault::Unavailable),
            Some(Fault::Unavailable),
            None,
            Some(Fault::TooManyRequests { retry_after_secs: 3 }),
            Some(Fault::TooManyRequests { retry_after_secs: 3 }),
            Some(Fault::TooManyRequests { retry_after_secs: 3 }),
            None,
            Some(Fault::CloseConnection),
            None,
            Some(Fault::Unavailable),
        ]
    );
    assert_eq!(calls[7].status, None);
    assert_eq!(connector.activities().len(), 3);
}

#[tokio::test]
async fn waiting_on_the_connector_wakes_on_the_call_and_times_out_clearly() {
    let teams = standin().await;
    let connector = teams.connector().clone();
    let token = access_token(&teams).await;
    let path = format!("v3/conversations/{}/activities", teams.channel().channel_id);

    // Nothing arrives: the wait ends at its limit, with a readable error.
    let nothing = connector
        .wait_for(|calls| calls.first().map(|c| c.seq), Duration::from_millis(200))
        .await;
    let message = format!("{:#}", nothing.expect_err("no call came"));
    assert!(message.contains("(none)"), "{message}");

    // A call made while the test waits wakes the wait.
    let waiter = tokio::spawn({
        let connector = connector.clone();
        async move {
            connector
                .wait_for_activity(|a| a.text() == Some("step 3/8 ok"), WAIT)
                .await
        }
    });
    let post = connector_call(
        &teams,
        Method::POST,
        &path,
        Some(&token),
        &json!({"type": "message", "text": "step 3/8"}),
    )
    .await
    .expect("answers");
    let id = post.json().expect("JSON")["id"].as_str().expect("id").to_string();
    let put = connector_call(
        &teams,
        Method::PUT,
        &format!("v3/conversations/{}/activities/{id}", teams.channel().channel_id),
        Some(&token),
        &json!({"type": "message", "id": id, "text": "step 3/8 ok"}),
    )
    .await
    .expect("answers");
    assert_eq!(put.status, 200);
    let state = waiter.await.expect("the waiter ran").expect("the update was seen");
    assert_eq!((state.id.as_str(), state.updates()), (id.as_str(), 1));
}

// ---------------------------------------------------------------------------------------------
// Activities and the client, against a small reference bot that validates with the
// independent validator above.

struct ReferenceBot {
    endpoint: String,
    received: Arc<Mutex<Vec<Value>>>,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn reference_bot(teams: &TeamsStandIn) -> ReferenceBot {
    let jwks = get_json(&teams.identity().jwks_url()).await;
    let (listener, address) = standin_http::bind_loopback().await.expect("bound");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let received = Arc::new(Mutex::new(Vec::new()));
    let (app_id, service_url) = (teams.app_id().to_string(), teams.service_url().to_string());
    let seen = received.clone();
    let handler: standin_http::Handler = Arc::new(move |req| {
        let (jwks, app_id, service_url, seen) = (jwks.clone(), app_id.clone(), service_url.clone(), seen.clone());
        Box::pin(async move {
            let Ok(activity) = serde_json::from_slice::<Value>(&req.body) else {
                return Reply::json(StatusCode::BAD_REQUEST, &json!({"error": "not JSON"}));
            };
            let activity_url = activity["serviceUrl"].as_str().unwrap_or_default();
            let verdict = validate(req.header("authorization"), &jwks, &app_id, &service_url).and_then(|claims| {
                match claims["serviceurl"].as_str() == Some(activity_url) {
                    true => Ok(()),
                    false => Err(Refusal::ServiceUrl),
                }
            });
            match verdict {
                Err(Refusal::NotEndorsed) => return Reply::json(StatusCode::FORBIDDEN, &json!({})),
                Err(_) => return Reply::json(StatusCode::UNAUTHORIZED, &json!({})),
                Ok(()) => {}
            }
            seen.lock().expect("no panics while holding").push(activity.clone());
            if activity["type"] == json!("invoke") {
                let verb = activity["value"]["action"]["verb"].as_str().unwrap_or_default();
                Reply::json(
                    StatusCode::OK,
                    &json!({"statusCode": 200, "type": "application/vnd.microsoft.activity.message", "value": format!("got {verb}")}),
                )
            } else {
                Reply::json(StatusCode::OK, &json!({}))
            }
        })
    });
    tokio::spawn(standin_http::serve(listener, shutdown.clone(), handler));
    ReferenceBot {
        endpoint: format!("http://{address}/api/messages"),
        received,
        _shutdown: shutdown.drop_guard(),
    }
}

#[tokio::test]
async fn activities_follow_the_documented_shapes_and_reach_a_bot_signed() {
    let teams = standin().await;
    let bot = reference_bot(&teams).await;
    let alice = TeamsUser::new("alice");
    let bob = TeamsUser::new("bob");
    assert_eq!(alice, TeamsUser::new("alice"), "ids are stable");
    assert_ne!(alice.aad_object_id, bob.aad_object_id);
    assert!(alice.id.starts_with("29:"));
    let aad = alice.aad_object_id.clone().expect("an object id");
    assert_eq!(aad.len(), 36);
    assert_eq!(alice.baton_identity(), Some(format!("teams:{aad}")));

    let message = teams.message(&alice, "!failover xmpp EdgePool2").build();
    assert_eq!(message["type"], json!("message"));
    assert_eq!(message["channelId"], json!("msteams"));
    assert_eq!(message["serviceUrl"], json!(teams.service_url()));
    assert_eq!(message["text"], json!("<at>Baton</at> !failover xmpp EdgePool2"));
    assert_eq!(message["from"]["aadObjectId"], json!(aad));
    assert_eq!(message["recipient"]["id"], json!(format!("28:{}", teams.app_id())));
    let mention = &message["entities"][0];
    assert_eq!(
        (&mention["type"], &mention["text"], &mention["mentioned"]["id"]),
        (
            &json!("mention"),
            &json!("<at>Baton</at>"),
            &json!(format!("28:{}", teams.app_id()))
        )
    );
    let id = message["id"].as_str().expect("id");
    let channel = teams.channel();
    assert_eq!(
        message["conversation"]["id"],
        json!(format!("{};messageid={id}", channel.channel_id))
    );
    assert_eq!(message["conversation"]["conversationType"], json!("channel"));
    assert_eq!(message["conversation"]["tenantId"], json!(teams.tenant_id()));
    assert_eq!(message["channelData"]["tenant"]["id"], json!(teams.tenant_id()));
    assert_eq!(message["channelData"]["teamsChannelId"], json!(channel.channel_id));
    assert_eq!(message["channelData"]["team"]["id"], json!(channel.team_id));
    assert!(message.get("replyToId").is_none());

    let anonymous = teams
        .message(&alice.clone().without_aad_object_id(), "!approve 1")
        .build();
    assert!(anonymous["from"].get("aadObjectId").is_none());
    assert!(anonymous["from"]["id"].is_string());
    let plain = teams
        .message(&alice, "hello")
        .without_mention()
        .in_thread(id)
        .tenant("other-tenant")
        .build();
    assert_eq!(plain["text"], json!("hello"));
    assert_eq!(plain["replyToId"], json!(id));
    assert_eq!(plain["conversation"]["id"], message["conversation"]["id"]);
    assert_eq!(plain["channelData"]["tenant"]["id"], json!("other-tenant"));

    let invoke = teams.execute_action_at(
        &bob,
        &format!("{};messageid={id}", channel.channel_id),
        "1700",
        "approve",
        json!({"req": "r1"}),
    );
    assert_eq!(invoke["type"], json!("invoke"));
    assert_eq!(invoke["name"], json!("adaptiveCard/action"));
    assert_eq!(invoke["replyToId"], json!("1700"));
    assert_eq!(
        invoke["value"],
        json!({"action": {"type": "Action.Execute", "verb": "approve", "data": {"req": "r1"}}, "trigger": "manual"})
    );
    assert_eq!(invoke["from"]["aadObjectId"], json!(bob.aad_object_id));
    assert_eq!(invoke["channelData"]["tenant"]["id"], json!(teams.tenant_id()));
    let submit = teams.submit_action_at(
        &bob,
        &format!("{};messageid={id}", channel.channel_id),
        "1700",
        json!({"verb": "deny", "req": "r1"}),
    );
    assert_eq!(submit["type"], json!("message"));
    assert!(submit.get("text").is_none(), "an Action.Submit message carries no text");
    assert_eq!(submit["value"], json!({"verb": "deny", "req": "r1"}));
    assert_eq!(submit["replyToId"], json!("1700"));

    // The client: signed posts reach the bot; invokes return the invoke response.
    let ok = teams.send(&bot.endpoint, &message).await.expect("the bot answers");
    assert_eq!(ok.status, 200);
    let answered = teams.send(&bot.endpoint, &invoke).await.expect("the bot answers");
    assert_eq!(answered.status, 200);
    assert_eq!(
        answered.invoke_type(),
        Some("application/vnd.microsoft.activity.message")
    );
    assert_eq!(answered.invoke_value(), Some(&json!("got approve")));
    for bad in BadToken::ALL {
        let refused = teams
            .send_with(&bot.endpoint, &message, &Auth::Bad(bad))
            .await
            .expect("the bot answers");
        assert_eq!(refused.status, bad.expected_status(), "{bad:?}");
    }
    assert_eq!(
        bot.received.lock().expect("no panics").len(),
        2,
        "only the signed activities got in"
    );
}

// ---------------------------------------------------------------------------------------------
// The Adaptive Card renderer.

#[tokio::test]
async fn the_renderer_accepts_the_sample_card_and_rejects_broken_ones() {
    let fixtures = cards::harness_dir().join("fixtures");
    let shots = tempfile::tempdir().expect("a folder for screenshots");
    let options = RenderOptions {
        screenshots: Some(shots.path().to_path_buf()),
        ..RenderOptions::default()
    };
    let too_new = json!({"type": "AdaptiveCard", "version": "1.6", "body": [{"type": "TextBlock", "text": "hi"}]});
    let not_a_card = json!({"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
        "content": {"version": "1.5", "body": [{"type": "TextBlock", "text": "no type"}]}}]});
    let dir = tempfile::tempdir().expect("a folder for cards");
    let mut files = vec![fixtures.join("approval-request.json"), fixtures.join("broken.json")];
    for (name, value) in [("too-new.json", &too_new), ("not-a-card.json", &not_a_card)] {
        let path = dir.path().join(name);
        std::fs::write(&path, value.to_string()).expect("written");
        files.push(path);
    }
    let outcome = cards::check_cards(&files, &options).await.expect("the harness runs");
    let reports = match outcome {
        cards::Outcome::Skipped(why) => {
            eprintln!("{why}");
            return;
        }
        cards::Outcome::Rendered(reports) => reports,
    };
    assert_eq!(reports.len(), 4, "{reports:#?}");
    let sample = &reports[0];
    assert!(sample.ok, "the sample card renders cleanly: {:?}", sample.issues);
    assert!(sample.text.contains("Alice requests"), "{}", sample.text);
    let titles: Vec<(&str, Option<&str>)> = sample
        .actions
        .iter()
        .map(|a| (a.kind.as_str(), a.verb.as_deref()))
        .collect();
    assert_eq!(
        titles,
        vec![("Action.Execute", Some("approve")), ("Action.Execute", Some("deny"))]
    );
    let png = std::fs::read(sample.screenshot.as_ref().expect("a screenshot")).expect("the PNG exists");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    cards::assert_clean(&reports[..1]).expect("clean");

    let broken = &reports[1];
    assert!(!broken.ok);
    let issues = broken.issues.join("\n");
    for expected in [
        "UnknownElementType",
        "TextBlok",
        "UnknownActionType",
        "Action.Exectue",
        "DuplicateId",
    ] {
        assert!(issues.contains(expected), "{expected} missing from:\n{issues}");
    }
    assert!(
        reports[2].issues.iter().any(|i| i.contains("UnsupportedCardVersion")),
        "{:?}",
        reports[2].issues
    );
    assert!(
        reports[3].issues.iter().any(|i| i.contains("MissingCardType")),
        "{:?}",
        reports[3].issues
    );
    let error = cards::assert_clean(&reports).expect_err("broken cards fail");
    assert!(format!("{error}").contains("broken.json"), "{error}");
}

#[tokio::test]
async fn a_missing_chromium_fails_the_check_unless_skipping_is_allowed() {
    let card = cards::harness_dir().join("fixtures/approval-request.json");
    let missing = std::path::Path::new("/nonexistent/chromium");
    let error = cards::check_cards_using(missing, false, std::slice::from_ref(&card), &RenderOptions::default())
        .await
        .expect_err("a missing Chromium fails by default");
    let message = format!("{error}");
    assert!(message.contains("/nonexistent/chromium is missing"), "{message}");
    assert!(message.contains(cards::SKIP_ENV), "{message}");
    let skipped = cards::check_cards_using(missing, true, &[card], &RenderOptions::default())
        .await
        .expect("skipping is allowed");
    match skipped {
        cards::Outcome::Skipped(why) => assert!(why.contains("SKIPPED"), "{why}"),
        cards::Outcome::Rendered(reports) => panic!("rendered without Chromium: {reports:?}"),
    }
}

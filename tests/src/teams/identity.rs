//! The stand-in for `login.botframework.com`: the OpenID metadata, the JWKS with per-key
//! `endorsements`, key rotation for tests (add, remove, re-endorse, switch the signing key),
//! fetch counters, and signing with the published keys.

use super::http::{self, Changes, Fault, Faults, Reply, Request, Times};
use super::keys::SigningKey;
use super::tokens::{self, BadToken, BadTokenKeys, ISSUER};
use anyhow::{Context, Result, bail};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

/// The path of the OpenID metadata document.
pub const METADATA_PATH: &str = "/v1/.well-known/openidconfiguration";
/// The path of the JWKS.
pub const JWKS_PATH: &str = "/v1/.well-known/keys";

struct KeyEntry {
    key: Arc<SigningKey>,
    endorsements: Vec<String>,
    published: bool,
}

struct Inner {
    base_url: String,
    app_id: String,
    service_url: String,
    keys: Mutex<KeyRing>,
    foreign: OnceCell<Arc<SigningKey>>,
    metadata_fetches: AtomicUsize,
    jwks_fetches: AtomicUsize,
    changes: Changes,
    faults: Faults,
}

struct KeyRing {
    entries: Vec<KeyEntry>,
    signing: String,
    unendorsed: String,
}

/// The identity provider: serves the metadata and the JWKS, and signs tokens. Cheap to clone.
#[derive(Clone)]
pub struct IdentityProvider {
    inner: Arc<Inner>,
}

/// The kid of the key valid tokens are signed with at start.
pub const SIGNING_KID: &str = "baton-standin-1";
/// The kid of the published key that endorses only other channels.
pub const UNENDORSED_KID: &str = "baton-standin-skype-only";
/// The endorsements of [`UNENDORSED_KID`].
pub const UNENDORSED_ENDORSEMENTS: [&str; 2] = ["skype", "slack"];
const FOREIGN_KID: &str = "not-published-anywhere";

impl IdentityProvider {
    /// Generates the signing key and the unendorsed key (in parallel), and serves on
    /// 127.0.0.1:0 until `shutdown`.
    pub(crate) async fn start(
        app_id: &str,
        service_url: &str,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<IdentityProvider> {
        let (signing, unendorsed) = tokio::try_join!(
            SigningKey::generate_async(SIGNING_KID),
            SigningKey::generate_async(UNENDORSED_KID)
        )?;
        let (listener, address) = http::bind_loopback().await?;
        let inner = Arc::new(Inner {
            base_url: format!("http://{address}"),
            app_id: app_id.to_string(),
            service_url: service_url.to_string(),
            keys: Mutex::new(KeyRing {
                entries: vec![
                    KeyEntry {
                        key: Arc::new(signing),
                        endorsements: vec![tokens::CHANNEL_ID.to_string()],
                        published: true,
                    },
                    KeyEntry {
                        key: Arc::new(unendorsed),
                        endorsements: UNENDORSED_ENDORSEMENTS.iter().map(|s| s.to_string()).collect(),
                        published: true,
                    },
                ],
                signing: SIGNING_KID.to_string(),
                unendorsed: UNENDORSED_KID.to_string(),
            }),
            foreign: OnceCell::new(),
            metadata_fetches: AtomicUsize::new(0),
            jwks_fetches: AtomicUsize::new(0),
            changes: Changes::default(),
            faults: Faults::default(),
        });
        let served = inner.clone();
        let handler: http::Handler = Arc::new(move |req| {
            let inner = served.clone();
            Box::pin(async move { inner.handle(req) })
        });
        tokio::spawn(http::serve(listener, shutdown, handler));
        Ok(IdentityProvider { inner })
    }

    /// `http://127.0.0.1:<port>/v1/.well-known/openidconfiguration`: configure the bot's
    /// OpenID metadata URL with this.
    pub fn openid_metadata_url(&self) -> String {
        format!("{}{METADATA_PATH}", self.inner.base_url)
    }

    /// `http://127.0.0.1:<port>/v1/.well-known/keys`, as the metadata's `jwks_uri` names it.
    pub fn jwks_url(&self) -> String {
        format!("{}{JWKS_PATH}", self.inner.base_url)
    }

    /// The metadata document, as served.
    pub fn metadata(&self) -> Value {
        metadata_document(&self.inner.base_url)
    }

    /// The JWKS, as served now: `{"keys":[{kty,use,kid,x5t,n,e,x5c,endorsements}, …]}`.
    pub fn jwks(&self) -> Value {
        self.inner.jwks()
    }

    /// How many times the JWKS was fetched (faulted fetches count too).
    pub fn jwks_fetches(&self) -> usize {
        self.inner.jwks_fetches.load(Ordering::SeqCst)
    }

    /// How many times the metadata was fetched (faulted fetches count too).
    pub fn metadata_fetches(&self) -> usize {
        self.inner.metadata_fetches.load(Ordering::SeqCst)
    }

    /// Waits until the JWKS has been fetched at least `n` times in all; returns the count.
    pub async fn wait_for_jwks_fetches(&self, n: usize, timeout: Duration) -> Result<usize> {
        self.inner
            .changes
            .wait(timeout, || {
                let seen = self.jwks_fetches();
                (seen >= n).then_some(seen)
            })
            .await
            .with_context(|| {
                format!(
                    "the JWKS was fetched {} times within {timeout:?}, expected at least {n}",
                    self.jwks_fetches()
                )
            })
    }

    /// The kid valid tokens are signed with now.
    pub fn signing_kid(&self) -> String {
        self.inner.lock().signing.clone()
    }

    /// The kid of the published key that does not endorse `msteams`.
    pub fn unendorsed_kid(&self) -> String {
        self.inner.lock().unendorsed.clone()
    }

    /// The kids the JWKS lists now, in order.
    pub fn published_kids(&self) -> Vec<String> {
        self.inner
            .lock()
            .entries
            .iter()
            .filter(|e| e.published)
            .map(|e| e.key.kid().to_string())
            .collect()
    }

    /// Generates a new key `kid` and publishes it with these endorsements (`["msteams"]` for an
    /// ordinary Teams key). Fails if the kid is taken.
    pub async fn add_key(&self, kid: &str, endorsements: &[&str]) -> Result<()> {
        if self.inner.lock().entries.iter().any(|e| e.key.kid() == kid) {
            bail!("a key with kid {kid} exists already");
        }
        let key = SigningKey::generate_async(kid).await?;
        let mut ring = self.inner.lock();
        if ring.entries.iter().any(|e| e.key.kid() == kid) {
            bail!("a key with kid {kid} exists already");
        }
        ring.entries.push(KeyEntry {
            key: Arc::new(key),
            endorsements: endorsements.iter().map(|s| s.to_string()).collect(),
            published: true,
        });
        Ok(())
    }

    /// Takes `kid` out of the JWKS. The stand-in keeps the private key, so tests can still sign
    /// with it ([`IdentityProvider::sign_with`]) and show that the bot refuses such tokens once
    /// it has refreshed its keys.
    pub fn remove_key(&self, kid: &str) -> Result<()> {
        self.inner.entry(kid, |e| e.published = false)
    }

    /// Puts a removed key back into the JWKS.
    pub fn republish_key(&self, kid: &str) -> Result<()> {
        self.inner.entry(kid, |e| e.published = true)
    }

    /// Replaces the endorsements of `kid`.
    pub fn set_endorsements(&self, kid: &str, endorsements: &[&str]) -> Result<()> {
        let list: Vec<String> = endorsements.iter().map(|s| s.to_string()).collect();
        self.inner.entry(kid, move |e| e.endorsements = list.clone())
    }

    /// Makes `kid` the key valid tokens are signed with (a rotation).
    pub fn use_for_signing(&self, kid: &str) -> Result<()> {
        let mut ring = self.inner.lock();
        if !ring.entries.iter().any(|e| e.key.kid() == kid) {
            bail!("no key with kid {kid}");
        }
        ring.signing = kid.to_string();
        Ok(())
    }

    /// Signs `claims` with the current signing key (RS256, header `{typ, alg, kid, x5t}`).
    pub fn sign(&self, claims: &Value) -> String {
        let kid = self.signing_kid();
        self.sign_with(&kid, claims)
            .expect("the signing kid always names a key of the ring")
    }

    /// Signs `claims` with the key `kid`, published or not.
    pub fn sign_with(&self, kid: &str, claims: &Value) -> Result<String> {
        let key = self.inner.key(kid).with_context(|| format!("no key with kid {kid}"))?;
        Ok(key.sign(claims))
    }

    /// A valid Bot Connector token for the bot, as the Connector signs one.
    pub fn valid_token(&self) -> String {
        self.sign(&tokens::valid_claims(&self.inner.app_id, &self.inner.service_url))
    }

    /// The `Authorization` header value carrying `bad`, or None for
    /// [`BadToken::MissingHeader`]. The first call that needs an unpublished key generates one.
    pub async fn bad_authorization(&self, bad: BadToken) -> Result<Option<String>> {
        let foreign = self
            .inner
            .foreign
            .get_or_try_init(|| async { SigningKey::generate_async(FOREIGN_KID).await.map(Arc::new) })
            .await?
            .clone();
        let (signing, unendorsed) = {
            let ring = self.inner.lock();
            let find = |kid: &str| {
                ring.entries
                    .iter()
                    .find(|e| e.key.kid() == kid)
                    .map(|e| e.key.clone())
                    .expect("the signing and unendorsed kids always name keys of the ring")
            };
            (find(&ring.signing), find(&ring.unendorsed))
        };
        let keys = BadTokenKeys {
            signing: &signing,
            unendorsed: &unendorsed,
            foreign: &foreign,
        };
        Ok(tokens::bad_header(
            bad,
            &keys,
            &self.inner.app_id,
            &self.inner.service_url,
        ))
    }

    /// Answers the next metadata and JWKS requests with `fault`.
    pub fn inject(&self, fault: Fault, times: Times) {
        self.inner.faults.inject(fault, times);
    }

    /// Serves normally again.
    pub fn clear_faults(&self) {
        self.inner.faults.clear();
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeyRing> {
        self.keys.lock().expect("no code panics while holding the key ring")
    }

    fn key(&self, kid: &str) -> Option<Arc<SigningKey>> {
        if kid == FOREIGN_KID {
            return self.foreign.get().cloned();
        }
        self.lock()
            .entries
            .iter()
            .find(|e| e.key.kid() == kid)
            .map(|e| e.key.clone())
    }

    fn entry(&self, kid: &str, change: impl Fn(&mut KeyEntry)) -> Result<()> {
        let mut ring = self.lock();
        let entry = ring
            .entries
            .iter_mut()
            .find(|e| e.key.kid() == kid)
            .with_context(|| format!("no key with kid {kid}"))?;
        change(entry);
        Ok(())
    }

    fn jwks(&self) -> Value {
        let ring = self.lock();
        let keys: Vec<Value> = ring
            .entries
            .iter()
            .filter(|e| e.published)
            .map(|e| e.key.jwk(&e.endorsements))
            .collect();
        json!({ "keys": keys })
    }

    fn handle(&self, req: Request) -> Reply {
        let counter = match req.path.as_str() {
            METADATA_PATH => Some(&self.metadata_fetches),
            JWKS_PATH => Some(&self.jwks_fetches),
            _ => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        let reply = if let Some(fault) = self.faults.take() {
            Faults::reply(fault)
        } else if req.method != Method::GET {
            Reply::json(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": {"code": "MethodNotAllowed", "message": "only GET is served here"}}),
            )
        } else {
            match req.path.as_str() {
                METADATA_PATH => Reply::json(StatusCode::OK, &metadata_document(&self.base_url)),
                JWKS_PATH => Reply::json(StatusCode::OK, &self.jwks()),
                _ => Reply::json(
                    StatusCode::NOT_FOUND,
                    &json!({"error": {"code": "NotFound", "message": "no such document"}}),
                ),
            }
        };
        self.changes.bump();
        reply
    }
}

/// The OpenID metadata of the Bot Framework's login service, with `jwks_uri` on loopback.
fn metadata_document(base_url: &str) -> Value {
    json!({
        "issuer": ISSUER,
        "authorization_endpoint": "https://invalid.botframework.com",
        "jwks_uri": format!("{base_url}{JWKS_PATH}"),
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
    })
}

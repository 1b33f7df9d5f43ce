//! The Bot Framework's signing keys, fetched and cached: the OpenID metadata names the JWKS;
//! the key set is fetched at start, again when it is a day old, and at once when a token names
//! a key it does not hold (at most once per `refetch_interval`, so a flood of forged key ids
//! cannot make Baton hammer the identity service). A key removed from the JWKS is gone after
//! the next fetch. One fetch at a time; requests wait for it.

use super::auth::{self, KeySet, PublicKey};
use super::config::WebUrl;
use super::http::Http;
use hyper::Method;
use hyper::body::Bytes;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A key set is fetched again once this old, by default (Microsoft: at least once a day).
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

#[derive(Default)]
struct Cached {
    set: Option<Arc<KeySet>>,
    algorithms: Arc<Vec<String>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// The cache.
pub struct Keys {
    http: Http,
    metadata: WebUrl,
    refetch_interval: Duration,
    /// A key set this old is fetched again before it is used.
    max_age: Duration,
    cached: Mutex<Cached>,
    /// Held during a fetch so that concurrent requests share it.
    fetching: tokio::sync::Mutex<()>,
}

/// A key found for a token, with the algorithms the metadata offers.
pub struct Found {
    pub key: PublicKey,
    pub algorithms: Arc<Vec<String>>,
}

impl Keys {
    pub fn new(http: Http, metadata: WebUrl, refetch_interval: Duration, max_age: Duration) -> Keys {
        Keys {
            http,
            metadata,
            refetch_interval,
            max_age,
            cached: Mutex::new(Cached::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key `kid`, fetching the key set when there is none yet, when it is a day old, or
    /// when it lacks `kid` and the last fetch is older than the refetch interval.
    pub async fn find(&self, kid: &str) -> Result<Option<Found>, auth::Refusal> {
        if let Some(found) = self.lookup(kid, false) {
            return Ok(Some(found));
        }
        let _one = self.fetching.lock().await;
        // Another request may have fetched meanwhile.
        if let Some(found) = self.lookup(kid, false) {
            return Ok(Some(found));
        }
        let (have_set, stale, may_refetch) = {
            let c = self.cached();
            let now = Instant::now();
            (
                c.set.is_some(),
                c.fetched_at.is_none_or(|t| now.duration_since(t) >= self.max_age),
                c.last_attempt
                    .is_none_or(|t| now.duration_since(t) >= self.refetch_interval),
            )
        };
        if !(stale || may_refetch) {
            return Ok(None);
        }
        match self.fetch().await {
            Ok(()) => Ok(self.lookup(kid, true)),
            // Keep using a key set that is merely old when the service is unreachable.
            Err(e) if have_set => {
                tracing::warn!(error = %e, "cannot refresh the Bot Framework's keys; using the ones held");
                Ok(self.lookup(kid, true))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the Bot Framework's keys");
                Err(auth::Refusal::KeysUnavailable)
            }
        }
    }

    /// The key from the cache; `any_age` accepts a set older than a day.
    fn lookup(&self, kid: &str, any_age: bool) -> Option<Found> {
        let c = self.cached();
        let fresh = c.fetched_at.is_some_and(|t| t.elapsed() < self.max_age);
        if !(fresh || any_age) {
            return None;
        }
        let key = c.set.as_ref()?.get(kid)?.clone();
        Some(Found {
            key,
            algorithms: c.algorithms.clone(),
        })
    }

    /// Fetches the metadata and the key set now (callers hold `fetching`, or it is the start).
    pub async fn fetch(&self) -> Result<(), String> {
        self.cached().last_attempt = Some(Instant::now());
        let metadata = self.get(&self.metadata).await?;
        let metadata = auth::parse_metadata(&metadata)?;
        let jwks_url = WebUrl::parse(&metadata.jwks_uri).map_err(|e| format!("the metadata's jwks_uri: {e}"))?;
        let body = self.get(&jwks_url).await?;
        let (set, skipped) = auth::parse_jwks(&body)?;
        for s in &skipped {
            tracing::debug!(key = %s, "JWKS entry skipped");
        }
        tracing::info!(keys = set.len(), "Bot Framework keys fetched");
        let mut c = self.cached();
        c.set = Some(Arc::new(set));
        c.algorithms = Arc::new(metadata.algorithms);
        c.fetched_at = Some(Instant::now());
        Ok(())
    }

    /// Fetches at start (warming the cache); failures are retried by the first request.
    pub async fn warm(&self) {
        let _one = self.fetching.lock().await;
        if let Err(e) = self.fetch().await {
            tracing::warn!(error = %e, "cannot fetch the Bot Framework's keys yet; the first request tries again");
            // Let the first request try again at once.
            self.cached().last_attempt = None;
        }
    }

    async fn get(&self, url: &WebUrl) -> Result<Bytes, String> {
        let answer = self
            .http
            .call(Method::GET, url, &[], None)
            .await
            .map_err(|e| format!("{}: {e}", url.as_str()))?;
        if !answer.ok() {
            return Err(format!("{}: HTTP {}", url.as_str(), answer.status));
        }
        Ok(answer.body)
    }
}

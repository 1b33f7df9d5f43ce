//! The stand-in for `login.microsoftonline.com`: the client-credentials token endpoint
//! `POST /{tenant}/oauth2/v2.0/token`, strict about the form the Bot Framework documents, with
//! a configurable token lifetime, revocation, a request log and fault injection.

use super::http::{self, Changes, Fault, Faults, Reply, Request, Times};
use anyhow::{Context, Result};
use hyper::{Method, StatusCode};
use rand::Rng as _;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The scope the bot must ask for.
pub const SCOPE: &str = "https://api.botframework.com/.default";

/// One request to the token endpoint, as logged (the secret is never kept).
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub at: Instant,
    /// The `{tenant}` path segment.
    pub tenant: String,
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub scope: Option<String>,
    /// Whether a `client_secret` was sent and matched.
    pub secret_matched: bool,
    /// The answer's status, or None when the connection was closed by a fault.
    pub status: Option<u16>,
    /// The OAuth `error` code of a refusal (`invalid_client`, `invalid_scope`, …).
    pub error: Option<String>,
}

struct Issued {
    token: String,
    expires: Instant,
}

struct State {
    lifetime: Duration,
    issued: Vec<Issued>,
    requests: Vec<TokenRequest>,
}

struct Inner {
    base_url: String,
    tenant: String,
    app_id: String,
    secret: SecretString,
    state: Mutex<State>,
    changes: Changes,
    faults: Faults,
}

/// The token endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Login {
    inner: Arc<Inner>,
}

impl Login {
    pub(crate) async fn start(
        tenant: &str,
        app_id: &str,
        secret: SecretString,
        lifetime: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<Login> {
        let (listener, address) = http::bind_loopback().await?;
        let inner = Arc::new(Inner {
            base_url: format!("http://{address}"),
            tenant: tenant.to_string(),
            app_id: app_id.to_string(),
            secret,
            state: Mutex::new(State {
                lifetime,
                issued: Vec::new(),
                requests: Vec::new(),
            }),
            changes: Changes::default(),
            faults: Faults::default(),
        });
        let served = inner.clone();
        let handler: http::Handler = Arc::new(move |req| {
            let inner = served.clone();
            Box::pin(async move { inner.handle(req) })
        });
        tokio::spawn(http::serve(listener, shutdown, handler));
        Ok(Login { inner })
    }

    /// `http://127.0.0.1:<port>/<tenant>/oauth2/v2.0/token`: configure the bot's token URL with
    /// this.
    pub fn token_url(&self) -> String {
        self.token_url_for(&self.inner.tenant)
    }

    /// The token URL of another tenant (which this endpoint refuses: unknown tenant).
    pub fn token_url_for(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.inner.base_url)
    }

    /// The lifetime of tokens issued from now on (`expires_in`, rounded up to whole seconds); a
    /// short one forces the bot to refresh. The Connector refuses a token once its lifetime has
    /// passed, so `Duration::ZERO` issues tokens the Connector refuses at once.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.inner.lock().lifetime = lifetime;
    }

    /// Invalidates every token issued so far: the Connector answers 401 to them from now on.
    pub fn revoke_all(&self) {
        self.inner.lock().issued.clear();
        self.inner.changes.bump();
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.inner.lock().requests.clone()
    }

    /// How many requests arrived (refused and faulted ones included).
    pub fn request_count(&self) -> usize {
        self.inner.lock().requests.len()
    }

    /// How many tokens were issued.
    pub fn issued_count(&self) -> usize {
        self.inner
            .lock()
            .requests
            .iter()
            .filter(|r| r.status == Some(200))
            .count()
    }

    /// Waits until at least `n` requests have arrived; returns the count.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Result<usize> {
        self.inner
            .changes
            .wait(timeout, || {
                let seen = self.request_count();
                (seen >= n).then_some(seen)
            })
            .await
            .with_context(|| {
                format!(
                    "the token endpoint got {} requests within {timeout:?}, expected at least {n}",
                    self.request_count()
                )
            })
    }

    /// Whether `token` was issued here, is not revoked and has not expired.
    pub fn is_current(&self, token: &str) -> bool {
        let now = Instant::now();
        self.inner
            .lock()
            .issued
            .iter()
            .any(|i| i.token == token && i.expires > now)
    }

    /// Answers the next token requests with `fault`.
    pub fn inject(&self, fault: Fault, times: Times) {
        self.inner.faults.inject(fault, times);
    }

    /// Serves normally again.
    pub fn clear_faults(&self) {
        self.inner.faults.clear();
    }
}

/// An Entra ID style error answer.
fn oauth_error(status: StatusCode, error: &str, code: u32, description: &str) -> (Reply, Option<String>) {
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description}"),
        "error_codes": [code],
        "timestamp": chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
        "trace_id": "00000000-0000-0000-0000-000000000000",
        "correlation_id": "00000000-0000-0000-0000-000000000000",
    });
    (Reply::json(status, &body), Some(error.to_string()))
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("no code panics while holding the login state")
    }

    fn handle(&self, req: Request) -> Reply {
        let tenant = req
            .path
            .strip_prefix('/')
            .and_then(|p| p.strip_suffix("/oauth2/v2.0/token"))
            .unwrap_or("")
            .to_string();
        let form: Vec<(String, String)> = form_urlencoded::parse(&req.body).into_owned().collect();
        let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut logged = TokenRequest {
            at: Instant::now(),
            tenant: tenant.clone(),
            grant_type: field("grant_type"),
            client_id: field("client_id"),
            scope: field("scope"),
            secret_matched: field("client_secret").as_deref() == Some(self.secret.expose_secret()),
            status: None,
            error: None,
        };
        let (reply, error) = match self.faults.take() {
            Some(fault) => (Faults::reply(fault), None),
            None => self.decide(&req, &tenant, &logged),
        };
        if let Reply::Answer(r) = &reply {
            logged.status = Some(r.status().as_u16());
        }
        logged.error = error;
        self.lock().requests.push(logged);
        self.changes.bump();
        reply
    }

    fn decide(&self, req: &Request, tenant: &str, r: &TokenRequest) -> (Reply, Option<String>) {
        if !req.path.ends_with("/oauth2/v2.0/token") || tenant.is_empty() || tenant.contains('/') {
            return (
                Reply::json(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
                Some("not_found".into()),
            );
        }
        if req.method != Method::POST {
            return oauth_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                900561,
                "The endpoint only accepts POST requests.",
            );
        }
        if tenant != self.tenant {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                90002,
                &format!("Tenant '{tenant}' not found."),
            );
        }
        let form_type = req
            .header("content-type")
            .is_some_and(|v| v.split(';').next().map(str::trim) == Some("application/x-www-form-urlencoded"));
        if !form_type {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'. (Content-Type must be application/x-www-form-urlencoded.)",
            );
        }
        match r.grant_type.as_deref() {
            None => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'grant_type'.",
                );
            }
            Some("client_credentials") => {}
            Some(other) => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    70003,
                    &format!("The app requested an unsupported grant type '{other}'."),
                );
            }
        }
        if r.client_id.as_deref() != Some(self.app_id.as_str()) {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                "Application with the given identifier was not found in the directory.",
            );
        }
        if !r.secret_matched {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                "Invalid client secret provided.",
            );
        }
        match r.scope.as_deref() {
            Some(SCOPE) => {}
            Some(s) if !s.ends_with("/.default") => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    1002012,
                    "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
                );
            }
            _ => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_resource",
                    500011,
                    "The resource principal was not found in the tenant.",
                );
            }
        }
        let token = issue_token();
        let mut state = self.lock();
        let lifetime = state.lifetime;
        // Whole seconds, rounded up; a zero lifetime issues tokens that are expired at once.
        let secs = lifetime.as_millis().div_ceil(1000) as u64;
        state.issued.push(Issued {
            token: token.clone(),
            expires: Instant::now() + lifetime,
        });
        let body: Value = json!({
            "token_type": "Bearer",
            "expires_in": secs,
            "ext_expires_in": secs,
            "access_token": token,
        });
        (Reply::json(StatusCode::OK, &body), None)
    }
}

/// An opaque access token (Entra's are JWTs, but a client must treat them as opaque).
fn issue_token() -> String {
    let bytes: [u8; 48] = rand::rng().random();
    format!("standin.{}", super::keys::b64url(&bytes))
}

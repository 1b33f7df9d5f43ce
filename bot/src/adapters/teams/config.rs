//! The Teams adapter's settings: the app's identity and secret, the tenants and channels it
//! serves, where its messaging endpoint listens, and the URLs of the Bot Framework services
//! (overridable for sovereign clouds and for the loopback stand-in in tests), checked in one
//! pass by [`TeamsConfig::validate`] that reports every problem with its key.
//!
//! There is deliberately no setting that weakens the validation of inbound tokens.

use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The Bot Framework's OpenID metadata (public cloud).
pub const OPENID_METADATA_URL: &str = "https://login.botframework.com/v1/.well-known/openidconfiguration";
/// The issuer of Bot Connector tokens (public cloud).
pub const ISSUER: &str = "https://api.botframework.com";
/// The scope of the bot's own access token (public cloud).
pub const TOKEN_SCOPE: &str = "https://api.botframework.com/.default";
/// Where Teams' Connector lives: the token is only ever sent below these.
pub const SERVICE_URL_ALLOWLIST: &str = "https://smba.trafficmanager.net/";
/// The global serviceUrl Microsoft documents for proactive messages, used for a channel no
/// activity has come from yet.
pub const SERVICE_URL: &str = "https://smba.trafficmanager.net/teams/";

/// The token endpoint of a single-tenant app.
pub fn token_url_for(tenant: &str) -> String {
    format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token")
}

/// A URL Baton calls: `https://…`, or `http://` to a loopback address (the tests' stand-in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebUrl {
    text: String,
    https: bool,
    host: String,
    port: u16,
    path: String,
}

impl WebUrl {
    /// Parses and checks a URL; the error says what is wrong in words.
    pub fn parse(text: &str) -> Result<WebUrl, String> {
        let uri: hyper::Uri = text.parse().map_err(|_| format!("'{text}' is not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("'{text}' must start with https://")),
        };
        let authority = uri.authority().ok_or_else(|| format!("'{text}' has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("'{text}' must not carry a user name"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() {
            return Err(format!("'{text}' has no host"));
        }
        if !https && !is_loopback(&host) {
            return Err(format!(
                "'{text}' must use https:// (plain http is only accepted for loopback addresses)"
            ));
        }
        if uri.query().is_some() {
            return Err(format!("'{text}' must not have a query"));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(WebUrl {
            text: text.to_string(),
            https,
            host,
            port,
            path: uri.path().to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `self` lies below `base`: same scheme, host and port, and a path that starts
    /// with the base's path.
    pub fn is_below(&self, base: &WebUrl) -> bool {
        self.https == base.https
            && self.host == base.host
            && self.port == base.port
            && self.path.starts_with(&base.path)
    }

    /// The URL with `/` appended when it has none (a serviceUrl to which `v3/…` is added).
    pub fn with_slash(&self) -> String {
        if self.text.ends_with('/') {
            self.text.clone()
        } else {
            format!("{}/", self.text)
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `s` is a GUID (`8-4-4-4-12` hex digits).
pub fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `s` is a Teams channel's conversation id, `19:…@thread.tacv2` (or the older
/// `@thread.skype`), without a `;messageid=` thread suffix.
pub fn is_channel_id(s: &str) -> bool {
    s.starts_with("19:")
        && s.contains("@thread.")
        && s.len() <= 256
        && !s.contains(';')
        && s.bytes().all(|b| b.is_ascii_graphic())
}

/// TLS for the messaging endpoint, when Baton terminates it itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointTls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Everything the Teams adapter needs.
#[derive(Clone, Debug)]
pub struct TeamsConfig {
    /// The bot's Microsoft App ID (the Entra application's client id).
    pub app_id: String,
    pub app_secret: SecretString,
    /// The app's home tenant: its token endpoint.
    pub tenant_id: String,
    /// Tenants whose activities are served (default: the home tenant).
    pub allowed_tenants: Vec<String>,
    /// Where the messaging endpoint (`POST /api/messages`) listens.
    pub listen: SocketAddr,
    /// TLS on the endpoint; `None` when a reverse proxy terminates it.
    pub tls: Option<EndpointTls>,
    /// Channels (conversation ids `19:…@thread.tacv2`) whose messages are read as commands.
    pub channels: Vec<String>,
    /// Channels that receive a copy of every run message (cards there can be clicked).
    pub mirror_channels: Vec<String>,
    /// The serviceUrl for a channel no activity has come from since Baton started.
    pub service_url: String,
    /// OpenID metadata naming the JWKS that signs inbound tokens.
    pub openid_metadata_url: String,
    /// The issuer inbound tokens must name.
    pub issuer: String,
    /// The client-credentials token endpoint.
    pub token_url: String,
    /// The scope of the bot's access token.
    pub token_scope: String,
    /// URL prefixes the access token may be sent to.
    pub service_url_allowlist: Vec<String>,
    /// Least time between two edits of one card.
    pub edit_interval: Duration,
    /// Least time between two fetches of the JWKS prompted by an unknown key id.
    pub key_refetch_interval: Duration,
    /// How old the key set may grow before it is fetched again (at most a day).
    pub key_max_age: Duration,
    /// How long the endpoint waits for Baton's answer to a card click before answering Teams
    /// (which gives up after about 15 s).
    pub click_wait: Duration,
    /// How long one call to the Connector or the login services may take.
    pub request_timeout: Duration,
}

impl TeamsConfig {
    /// Settings with the public cloud's URLs and the defaults for everything else.
    pub fn new(app_id: &str, app_secret: SecretString, tenant_id: &str, listen: SocketAddr) -> TeamsConfig {
        TeamsConfig {
            app_id: app_id.to_string(),
            app_secret,
            tenant_id: tenant_id.to_string(),
            allowed_tenants: vec![tenant_id.to_ascii_lowercase()],
            listen,
            tls: None,
            channels: Vec::new(),
            mirror_channels: Vec::new(),
            service_url: SERVICE_URL.to_string(),
            openid_metadata_url: OPENID_METADATA_URL.to_string(),
            issuer: ISSUER.to_string(),
            token_url: token_url_for(tenant_id),
            token_scope: TOKEN_SCOPE.to_string(),
            service_url_allowlist: vec![SERVICE_URL_ALLOWLIST.to_string()],
            edit_interval: Duration::from_secs(1),
            key_refetch_interval: Duration::from_secs(60),
            key_max_age: super::keys::MAX_AGE,
            click_wait: Duration::from_secs(10),
            request_timeout: Duration::from_secs(15),
        }
    }

    /// Checks every setting and returns all problems at once, each with its key.
    pub fn validate(&self) -> Result<ValidConfig, Vec<(&'static str, String)>> {
        let mut errors: Vec<(&'static str, String)> = Vec::new();
        if !is_guid(&self.app_id) {
            errors.push((
                "app_id",
                format!("'{}' is not a Microsoft App ID (a GUID)", self.app_id),
            ));
        }
        if !is_guid(&self.tenant_id) {
            errors.push(("tenant_id", format!("'{}' is not a tenant id (a GUID)", self.tenant_id)));
        }
        for t in &self.allowed_tenants {
            if !is_guid(t) {
                errors.push(("allowed_tenants", format!("'{t}' is not a tenant id (a GUID)")));
            }
        }
        if self.allowed_tenants.is_empty() {
            errors.push(("allowed_tenants", "at least one tenant is needed".to_string()));
        }
        let mut seen: Vec<&str> = Vec::new();
        for (key, list) in [("channels", &self.channels), ("mirror_channels", &self.mirror_channels)] {
            for c in list {
                if !is_channel_id(c) {
                    errors.push((
                        key,
                        format!(
                            "'{}' is not a channel's conversation id like 19:…@thread.tacv2 (without ;messageid=)",
                            baton_actions::names::shown(c)
                        ),
                    ));
                } else if seen.contains(&c.as_str()) {
                    errors.push((key, format!("{c} is listed twice")));
                } else {
                    seen.push(c);
                }
            }
        }
        if self.channels.is_empty() && self.mirror_channels.is_empty() {
            errors.push((
                "channels",
                "at least one channel (or mirror channel) is needed".to_string(),
            ));
        }
        let mut url = |key: &'static str, text: &str| match WebUrl::parse(text) {
            Ok(u) => Some(u),
            Err(why) => {
                errors.push((key, why));
                None
            }
        };
        let openid = url("openid_metadata_url", &self.openid_metadata_url);
        let token = url("token_url", &self.token_url);
        let service = url("service_url", &self.service_url);
        let allow: Vec<WebUrl> = self
            .service_url_allowlist
            .iter()
            .filter_map(|u| url("service_url_allowlist", u))
            .collect();
        if self.service_url_allowlist.is_empty() {
            errors.push(("service_url_allowlist", "at least one URL is needed".to_string()));
        }
        if let Some(s) = &service
            && !allow.is_empty()
            && !allow.iter().any(|a| s.is_below(a))
        {
            errors.push((
                "service_url",
                format!("{} is not below any URL of service_url_allowlist", s.as_str()),
            ));
        }
        if self.issuer.trim().is_empty() {
            errors.push(("issuer", "must not be empty".to_string()));
        }
        if !self.token_scope.ends_with("/.default") {
            errors.push(("token_scope", format!("'{}' must end with /.default", self.token_scope)));
        }
        if let Some(tls) = &self.tls {
            for (key, path) in [("tls_cert", &tls.cert), ("tls_key", &tls.key)] {
                if !path.is_file() {
                    errors.push((key, format!("{} is not a readable file", path.display())));
                }
            }
        }
        for (key, d) in [
            ("edit_interval", self.edit_interval),
            ("click_wait", self.click_wait),
            ("request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                errors.push((key, "must be above zero".to_string()));
            }
        }
        if self.key_max_age.is_zero() || self.key_max_age > super::keys::MAX_AGE {
            errors.push((
                "key_max_age",
                "must be above zero and at most 24h (Microsoft: fetch the keys at least daily)".to_string(),
            ));
        }
        if self.click_wait > Duration::from_secs(14) {
            errors.push((
                "click_wait",
                "must be below 14s (Teams gives up after about 15 s)".to_string(),
            ));
        }
        match (errors.is_empty(), openid, token, service) {
            (true, Some(openid), Some(token), Some(service)) => Ok(ValidConfig {
                openid_metadata: openid,
                token,
                service_url: service,
                allowlist: allow,
                settings: self.clone(),
            }),
            _ => Err(errors),
        }
    }
}

/// Settings that passed [`TeamsConfig::validate`], with their URLs parsed.
#[derive(Clone, Debug)]
pub struct ValidConfig {
    pub openid_metadata: WebUrl,
    pub token: WebUrl,
    pub service_url: WebUrl,
    pub allowlist: Vec<WebUrl>,
    pub settings: TeamsConfig,
}

impl ValidConfig {
    /// Whether the access token may be sent to `url`.
    pub fn may_receive_token(&self, url: &WebUrl) -> bool {
        self.allowlist.iter().any(|a| url.is_below(a))
    }

    /// Whether activities from `channel` (a conversation id without `;messageid=`) are served.
    pub fn serves(&self, channel: &str) -> bool {
        self.is_command_channel(channel) || self.is_mirror_channel(channel)
    }

    pub fn is_command_channel(&self, channel: &str) -> bool {
        self.settings.channels.iter().any(|c| c == channel)
    }

    pub fn is_mirror_channel(&self, channel: &str) -> bool {
        self.settings.mirror_channels.iter().any(|c| c == channel)
    }

    pub fn tenant_allowed(&self, tenant: &str) -> bool {
        self.settings
            .allowed_tenants
            .iter()
            .any(|t| t.eq_ignore_ascii_case(tenant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "8d4e6f0a-5b1c-4c3e-9f27-6a1d2b3c4d5e";
    const TENANT: &str = "72f988bf-0000-4000-8000-00000000c0de";
    const CHANNEL: &str = "19:0f1e2d3c4b5a69788796a5b4c3d2e1f0@thread.tacv2";

    fn base() -> TeamsConfig {
        let mut c = TeamsConfig::new(
            APP,
            SecretString::from("s3cret"),
            TENANT,
            "127.0.0.1:3978".parse().expect("an address"),
        );
        c.channels.push(CHANNEL.to_string());
        c
    }

    fn check(c: TeamsConfig, expect: &[&str]) {
        let got: Vec<String> = match c.validate() {
            Ok(_) => Vec::new(),
            Err(list) => list.into_iter().map(|(k, m)| format!("{k}: {m}")).collect(),
        };
        assert_eq!(got, expect);
    }

    #[test]
    fn accepts_the_public_cloud_defaults() {
        check(base(), &[]);
        let v = base().validate().expect("valid");
        assert_eq!(
            v.token.as_str(),
            format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
        );
        assert!(v.may_receive_token(&WebUrl::parse("https://smba.trafficmanager.net/emea/").expect("a URL")));
        assert!(v.serves(CHANNEL) && v.is_command_channel(CHANNEL) && !v.is_mirror_channel(CHANNEL));
    }

    #[test]
    fn reports_every_problem_with_its_key() {
        let mut c = base();
        c.app_id = "baton".into();
        c.tenant_id = "contoso.com".into();
        c.channels = vec!["general".into(), CHANNEL.into(), format!("{CHANNEL};messageid=1")];
        c.mirror_channels = vec![CHANNEL.into()];
        c.openid_metadata_url = "http://login.botframework.com/v1/.well-known/openidconfiguration".into();
        c.token_url = "not a url".into();
        c.service_url = "https://evil.example/teams/".into();
        c.token_scope = "https://api.botframework.com".into();
        c.edit_interval = Duration::ZERO;
        c.key_max_age = Duration::from_secs(2 * 24 * 3600);
        c.click_wait = Duration::from_secs(20);
        check(
            c,
            &[
                "app_id: 'baton' is not a Microsoft App ID (a GUID)",
                "tenant_id: 'contoso.com' is not a tenant id (a GUID)",
                "channels: 'general' is not a channel's conversation id like 19:…@thread.tacv2 (without ;messageid=)",
                "channels: '19:0f1e2d3c4b5a69788796a5b4c3d2e1f0@thread.tacv2;messageid=1' is not a channel's conversation id like 19:…@thread.tacv2 (without ;messageid=)",
                "mirror_channels: 19:0f1e2d3c4b5a69788796a5b4c3d2e1f0@thread.tacv2 is listed twice",
                "openid_metadata_url: 'http://login.botframework.com/v1/.well-known/openidconfiguration' must use https:// (plain http is only accepted for loopback addresses)",
                "token_url: 'not a url' is not a URL",
                "service_url: https://evil.example/teams/ is not below any URL of service_url_allowlist",
                "token_scope: 'https://api.botframework.com' must end with /.default",
                "edit_interval: must be above zero",
                "key_max_age: must be above zero and at most 24h (Microsoft: fetch the keys at least daily)",
                "click_wait: must be below 14s (Teams gives up after about 15 s)",
            ],
        );
    }

    #[test]
    fn urls_are_matched_by_scheme_host_port_and_path() {
        let base = WebUrl::parse("https://smba.trafficmanager.net/").expect("a URL");
        let below = |u: &str| WebUrl::parse(u).map(|u| u.is_below(&base));
        assert_eq!(below("https://smba.trafficmanager.net/emea/"), Ok(true));
        assert_eq!(below("https://SMBA.trafficmanager.net:443/amer/"), Ok(true));
        assert_eq!(below("https://smba.trafficmanager.net.evil.example/"), Ok(false));
        assert_eq!(below("https://smba.trafficmanager.net:8443/"), Ok(false));
        assert_eq!(below("http://127.0.0.1:9/teams/"), Ok(false));
        assert!(below("https://smba.trafficmanager.net@evil.example/").is_err());
        assert!(below("http://smba.trafficmanager.net/").is_err());
        assert!(below("ftp://smba.trafficmanager.net/").is_err());
        let local = WebUrl::parse("http://127.0.0.1:4000/teams/").expect("loopback http is accepted");
        assert!(
            WebUrl::parse("http://127.0.0.1:4000/teams/x")
                .expect("a URL")
                .is_below(&local)
        );
        assert!(
            !WebUrl::parse("http://127.0.0.1:4000/other/")
                .expect("a URL")
                .is_below(&local)
        );
        assert_eq!(local.with_slash(), "http://127.0.0.1:4000/teams/");
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let mut c = base();
        c.app_secret = SecretString::from("hunter2-teams-secret");
        let shown = format!("{c:?} {:?}", c.validate());
        assert!(!shown.contains("hunter2-teams-secret"), "{shown}");
    }
}

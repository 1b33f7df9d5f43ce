//! A small private PKI for sites without an enterprise CA, for demos and for tests (rcgen): a CA,
//! the bot's client certificate, and one server certificate per agent host.
//!
//! Layout of the output folder (keys are written with mode 0600 on Unix):
//! `ca.crt`, `ca.key`, `bot.crt`, `bot.key`, and `<host>.crt` / `<host>.key` per agent.

use baton_runbook::Fqdn;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{} already holds a CA (ca.crt); refusing to overwrite it", dir.display())]
    Exists { dir: PathBuf },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot generate the {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
}

/// What to put in the certificates besides the defaults.
#[derive(Clone, Debug, Default)]
pub struct PkiOptions {
    /// Also name `localhost` and `127.0.0.1` in every agent certificate (tests, demos).
    pub loopback: bool,
    /// The common name of the bot's client certificate; `baton-bot` when `None`.
    pub bot_name: Option<String>,
}

/// The paths of one agent's certificate and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The files `init` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiFiles {
    pub ca_cert: PathBuf,
    /// Keep it offline once the agents' certificates are made.
    pub ca_key: PathBuf,
    pub bot_cert: PathBuf,
    pub bot_key: PathBuf,
    pub agents: BTreeMap<Fqdn, AgentFiles>,
}

impl PkiFiles {
    /// The paths [`init`] writes in `out_dir`, to use a folder made earlier.
    pub fn in_dir(out_dir: &Path, agent_hosts: &[Fqdn]) -> PkiFiles {
        PkiFiles {
            ca_cert: out_dir.join("ca.crt"),
            ca_key: out_dir.join("ca.key"),
            bot_cert: out_dir.join("bot.crt"),
            bot_key: out_dir.join("bot.key"),
            agents: agent_hosts
                .iter()
                .map(|h| {
                    (
                        h.clone(),
                        AgentFiles {
                            cert: out_dir.join(format!("{h}.crt")),
                            key: out_dir.join(format!("{h}.key")),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// The common name of the bot's client certificate unless [`PkiOptions::bot_name`] says otherwise.
pub const BOT_NAME: &str = "baton-bot";

/// Validity: from a day ago (clock skew between hosts) for `years` years.
fn validity(params: &mut CertificateParams, years: i32) {
    use chrono::Datelike;
    let today = chrono::Utc::now().date_naive();
    let start = today.pred_opt().unwrap_or(today);
    let month = |d: chrono::NaiveDate| u8::try_from(d.month()).expect("a month fits in a u8");
    let day = |d: chrono::NaiveDate| u8::try_from(d.day()).expect("a day fits in a u8");
    params.not_before = rcgen::date_time_ymd(start.year(), month(start), day(start));
    // Day 28 exists in every month, so the end date is always valid.
    params.not_after = rcgen::date_time_ymd(today.year() + years, month(today), day(today).min(28));
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn generate(what: &str) -> Result<KeyPair, PkiError> {
    KeyPair::generate().map_err(|source| PkiError::Generate {
        what: format!("key of {what}"),
        source,
    })
}

fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), PkiError> {
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)
}

fn write_key(path: &Path, key: &KeyPair) -> Result<(), PkiError> {
    let pem = SecretString::from(key.serialize_pem());
    write_file(path, pem.expose_secret().as_bytes(), true)
}

/// Makes a CA, the bot's client certificate and a server certificate for each host in
/// `agent_hosts` (SAN: the host's FQDN, plus loopback names if asked), and writes them to
/// `out_dir` (created if missing). Refuses to overwrite an existing `ca.crt`.
pub fn init(out_dir: &Path, agent_hosts: &[Fqdn], options: &PkiOptions) -> Result<PkiFiles, PkiError> {
    std::fs::create_dir_all(out_dir).map_err(|source| PkiError::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let files = PkiFiles::in_dir(out_dir, agent_hosts);
    if files.ca_cert.exists() {
        return Err(PkiError::Exists {
            dir: out_dir.to_path_buf(),
        });
    }

    let ca_key = generate("the CA")?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = name("Baton CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca_params, 10);
    let ca_cert = ca_params.self_signed(&ca_key).map_err(|source| PkiError::Generate {
        what: "CA certificate".into(),
        source,
    })?;
    let issuer = Issuer::new(ca_params, ca_key);

    let bot_name = options.bot_name.as_deref().unwrap_or(BOT_NAME);
    let bot_key = generate("the bot")?;
    let mut bot_params = CertificateParams::default();
    bot_params.distinguished_name = name(bot_name);
    bot_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    bot_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    bot_params.use_authority_key_identifier_extension = true;
    validity(&mut bot_params, 2);
    let bot_cert = bot_params
        .signed_by(&bot_key, &issuer)
        .map_err(|source| PkiError::Generate {
            what: "bot certificate".into(),
            source,
        })?;

    write_file(&files.ca_cert, ca_cert.pem().as_bytes(), false)?;
    write_key(&files.ca_key, issuer.key())?;
    write_file(&files.bot_cert, bot_cert.pem().as_bytes(), false)?;
    write_key(&files.bot_key, &bot_key)?;

    for (host, paths) in &files.agents {
        let key = generate(host.as_str())?;
        let mut sans = vec![host.to_string()];
        if options.loopback {
            sans.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
        }
        let mut params = CertificateParams::new(sans).map_err(|source| PkiError::Generate {
            what: format!("certificate of {host}"),
            source,
        })?;
        params.distinguished_name = name(host.as_str());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, 2);
        let cert = params.signed_by(&key, &issuer).map_err(|source| PkiError::Generate {
            what: format!("certificate of {host}"),
            source,
        })?;
        write_file(&paths.cert, cert.pem().as_bytes(), false)?;
        write_key(&paths.key, &key)?;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_ca_a_bot_and_agents_with_private_keys_protected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hosts = [
            Fqdn::parse("edge2a.contoso.com").expect("valid"),
            Fqdn::parse("mgmt1.contoso.com").expect("valid"),
        ];
        let files = init(
            dir.path(),
            &hosts,
            &PkiOptions {
                loopback: true,
                bot_name: None,
            },
        )
        .expect("init");
        assert_eq!(files.agents.len(), 2);
        let edge = &files.agents[&hosts[0]];
        let der = baton_tls::load_certs(&edge.cert).expect("loads")[0].clone();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parses");
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .expect("valid extension")
            .expect("present")
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            sans,
            [
                "DNSName(edge2a.contoso.com)",
                "DNSName(localhost)",
                "IPAddress(7f:00:00:01)"
            ]
        );
        assert_eq!(
            baton_tls::subject(&baton_tls::load_certs(&files.bot_cert).expect("loads")[0]).as_deref(),
            Some("CN=baton-bot")
        );
        // The pieces make working TLS configurations on both sides.
        baton_tls::server_config(&edge.cert, &edge.key, &files.ca_cert).expect("server config");
        baton_tls::client_config(&files.bot_cert, &files.bot_key, &files.ca_cert).expect("client config");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [&files.ca_key, &files.bot_key, &edge.key] {
                let mode = std::fs::metadata(key).expect("exists").permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", key.display());
            }
        }
        // Nothing that describes the files shows key material.
        assert!(!format!("{files:?}").contains("PRIVATE KEY"));
        assert!(matches!(
            init(dir.path(), &hosts, &PkiOptions::default()),
            Err(PkiError::Exists { .. })
        ));
    }
}

//! TLS material shared by the agent (`baton-agent`, server side) and the dispatcher
//! (`baton-actions`, client side): PEM loading, the mutual-TLS rustls configurations (ring
//! provider, TLS 1.2 and 1.3), and certificate fingerprints and subjects for pinning.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} holds no usable {what}: {why}", path.display())]
    Pem {
        path: PathBuf,
        what: &'static str,
        why: String,
    },
    #[error("{} holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("the CA certificate in {} is not usable: {why}", path.display())]
    Ca { path: PathBuf, why: String },
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

/// The crypto provider both sides use. It is passed explicitly so that another crate enabling a
/// second rustls provider cannot make the process default ambiguous.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file, in order (leaf first for a chain).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: "certificate",
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1). The error never shows key material.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: "private key",
        why: e.to_string(),
    })
}

/// The trust anchors of a PEM file (one or more CA certificates).
pub fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Ca {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

fn unusable_pair<'a>(cert: &'a Path, key: &'a Path) -> impl Fn(rustls::Error) -> TlsError + 'a {
    move |e| {
        TlsError::Config(format!(
            "{} and {} do not make a usable pair: {e}",
            cert.display(),
            key.display()
        ))
    }
}

/// The agent's side: its own certificate and key, and client certificates required to chain to
/// the CA in `client_ca`.
pub fn server_config(cert: &Path, key: &Path, client_ca: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let roots = load_roots(client_ca)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(unusable_pair(cert, key))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The bot's side: its client certificate and key, and agents verified against the CA in `ca`.
pub fn client_config(cert: &Path, key: &Path, ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = load_roots(ca)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
        .map_err(unusable_pair(cert, key))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The SHA-256 fingerprint of a DER certificate, lower-case hex without separators.
pub fn sha256_hex(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Normalises a configured fingerprint: `AB:CD:…` or `abcd…` -> `abcd…`; `None` unless it is
/// 64 hex digits.
pub fn normalize_fingerprint(s: &str) -> Option<String> {
    let hex: String = s
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// The subject of a DER certificate as `CN=baton-bot, O=Contoso` (attributes in certificate
/// order), or `None` if it cannot be parsed.
pub fn subject(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.subject().to_string())
}

/// Compares two subjects ignoring case and the spaces after separators.
pub fn same_subject(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.split(',').map(|p| p.trim().to_ascii_lowercase()).collect::<Vec<_>>();
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_and_subjects_normalise() {
        let colons = "AB:".repeat(31) + "AB";
        assert_eq!(normalize_fingerprint(&colons), Some("ab".repeat(32)));
        assert_eq!(normalize_fingerprint("abc"), None);
        assert_eq!(normalize_fingerprint(&"zz".repeat(32)), None);
        assert!(same_subject("CN=baton-bot, O=Contoso", "cn=baton-bot,o=contoso"));
        assert!(!same_subject("CN=baton-bot", "CN=baton-bot2"));
    }

    #[test]
    fn key_material_never_shows_in_debug_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let edge = baton_runbook::Fqdn::parse("edge2a.contoso.com").expect("valid");
        let files = baton_pki::init(dir.path(), std::slice::from_ref(&edge), &Default::default()).expect("pki");
        let pem = std::fs::read_to_string(&files.bot_key).expect("key file");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let key = load_key(&files.bot_key).expect("loads");
        let shown = format!("{key:?}");
        assert!(
            !shown.contains(&body[..24]) && !shown.contains("PRIVATE KEY"),
            "{shown}"
        );
    }

    #[test]
    fn missing_and_empty_files_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.pem");
        assert!(
            load_certs(&missing)
                .expect_err("missing")
                .to_string()
                .starts_with("cannot read")
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem").expect("writes");
        assert!(
            load_certs(&empty)
                .expect_err("empty")
                .to_string()
                .ends_with("holds no certificate")
        );
        let err = load_key(&empty).expect_err("no key").to_string();
        assert!(err.contains("holds no usable private key"), "{err}");
    }
}

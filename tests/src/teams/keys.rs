//! RSA-2048 signing keys of the Teams stand-in: generation, the self-signed certificate whose
//! SHA-1 thumbprint is the `x5t`, the published JWK, and RS256 signing as the Bot Connector
//! signs its tokens.

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

/// One RSA-2048 key pair with its certificate, as a Bot Framework signing key is published.
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    n: String,
    e: String,
    x5t: String,
    x5c: String,
    public_pem: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private half is never formatted.
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("x5t", &self.x5t)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a fresh key named `kid`. This is CPU work (a few hundred milliseconds with
    /// `rsa` optimised): call it from [`SigningKey::generate_async`] inside async code.
    pub fn generate(kid: &str) -> Result<SigningKey> {
        let private = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).context("generating an RSA-2048 key")?;
        let public = RsaPublicKey::from(&private);
        let pkcs1 = private.to_pkcs1_der().context("encoding the key as PKCS#1")?;
        let pkcs8 = private.to_pkcs8_der().context("encoding the key as PKCS#8")?;
        let cert_der = self_signed_certificate(pkcs8.as_bytes(), kid)?;
        Ok(SigningKey {
            kid: kid.to_string(),
            encoding: EncodingKey::from_rsa_der(pkcs1.as_bytes()),
            n: URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            e: URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
            x5t: URL_SAFE_NO_PAD.encode(Sha1::digest(&cert_der)),
            x5c: STANDARD.encode(&cert_der),
            public_pem: public
                .to_public_key_pem(LineEnding::LF)
                .context("encoding the public key as PEM")?,
        })
    }

    /// [`SigningKey::generate`] on the blocking pool.
    pub async fn generate_async(kid: &str) -> Result<SigningKey> {
        let kid = kid.to_string();
        tokio::task::spawn_blocking(move || SigningKey::generate(&kid))
            .await
            .context("the key generation task failed")?
    }

    /// The key id (`kid`) in the JWKS and in token headers.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The base64url SHA-1 thumbprint of the key's certificate (`x5t`).
    pub fn x5t(&self) -> &str {
        &self.x5t
    }

    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`), the bytes an HS256
    /// key-confusion attack signs with.
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// The key's JWKS entry, with the Bot Framework's extra `endorsements` list.
    pub fn jwk(&self, endorsements: &[String]) -> Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.x5t,
            "n": self.n,
            "e": self.e,
            "x5c": [self.x5c],
            "endorsements": endorsements,
        })
    }

    /// The header the Bot Connector puts on its tokens: `{typ:"JWT", alg:"RS256", kid, x5t}`.
    pub fn header(&self) -> Header {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        header.x5t = Some(self.x5t.clone());
        header
    }

    /// Signs `claims` with RS256 under [`SigningKey::header`].
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(&self.header(), claims)
    }

    /// Signs `claims` with RS256 under a header of the caller's (e.g. another key's `kid`).
    pub fn sign_with_header(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding)
            .expect("RS256 signing with a freshly generated key and JSON claims cannot fail")
    }
}

/// A self-signed certificate for the key, so the JWK carries `x5c` and `x5t` as Microsoft's do.
fn self_signed_certificate(pkcs8: &[u8], kid: &str) -> Result<Vec<u8>> {
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.to_vec());
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256)
        .context("loading the RSA key into rcgen")?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).context("certificate parameters")?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("Baton Teams stand-in signing key {kid}"),
    );
    let cert = params
        .self_signed(&key_pair)
        .context("self-signing the key's certificate")?;
    Ok(cert.der().to_vec())
}

/// The base64url encoding JWTs use, for hand-built tokens.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

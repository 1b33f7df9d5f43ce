//! DNS for the runbook's steps 4 and 5: RFC 2136 dynamic updates signed with TSIG (HMAC-SHA256),
//! and the plain queries that confirm them, read the federation records for `verify` and
//! `!status xmpp`.
//!
//! Messages are built, signed and checked with hickory-proto; the exchange itself is one DNS
//! message each way over TCP (RFC 7766 framing), so that the bot sees the raw answer. That
//! matters for a rejected key: a server that refuses the key answers *unsigned* (RFC 8945
//! 5.3.2), and hickory 0.25's verifier reports such an answer as a truncated-HMAC error
//! (hickory-dns issue 1981). Reading the TSIG error code first turns it into "the DNS server
//! rejected TSIG key 'baton': …".

use crate::names::{Fqdn, shown};
use base64::Engine as _;
use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::dnssec::rdata::tsig::{TSIG, TsigAlgorithm};
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info};

/// How far the clocks of the bot and the DNS server may differ, in seconds (RFC 8945 advises 300).
const TSIG_FUDGE: u16 = 300;

/// TSIG error codes (RFC 8945 section 3).
const BADSIG: u16 = 16;
const BADKEY: u16 = 17;
const BADTIME: u16 = 18;
const BADTRUNC: u16 = 22;

/// Everything that can go wrong talking to a DNS server. Messages name the server and the
/// record, never the secret.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("the DNS server rejected TSIG key '{key}': {why}")]
    KeyRejected { key: String, why: String },
    #[error(
        "the DNS server {server} refused to change {name} {rtype} (REFUSED): its update policy does not let key '{key}' change that record"
    )]
    Refused {
        server: SocketAddr,
        name: Fqdn,
        rtype: &'static str,
        key: String,
    },
    #[error("the DNS server {server} is not authoritative for zone {zone} (NOTAUTH)")]
    NotAuthoritative { server: SocketAddr, zone: Fqdn },
    #[error("the DNS server {server} answered {rcode} to {what}")]
    Rcode {
        server: SocketAddr,
        rcode: String,
        what: String,
    },
    #[error("{name} is not in zone {zone}, so this updater may not change it")]
    OutsideZone { name: Fqdn, zone: Fqdn },
    #[error("no answer from the DNS server {server} within {}s", .after.as_secs_f32())]
    Timeout { server: SocketAddr, after: Duration },
    #[error("cannot reach the DNS server {server}: {source}")]
    Unreachable { server: SocketAddr, source: std::io::Error },
    #[error("the DNS server {server} sent an answer that cannot be used: {why}")]
    BadAnswer { server: SocketAddr, why: String },
    #[error("after the update, {name} {rtype} is {got} but {expected} was expected")]
    Mismatch {
        name: Fqdn,
        rtype: &'static str,
        expected: String,
        got: String,
    },
    #[error("the secret of TSIG key '{key}' is not valid base64 (paste the `secret` value that tsig-keygen prints)")]
    BadSecret { key: String },
    #[error("'{shown}' is not a valid TSIG key name: use 1 to 253 letters, digits, '-', '_' or '.'")]
    BadKeyName { shown: String },
    #[error("cannot find the DNS server '{shown}': {why}")]
    UnknownServer { shown: String, why: String },
    #[error("cannot build the DNS message: {0}")]
    Encode(String),
}

/// A TSIG key: its name as the server knows it and the shared secret. `Debug` never shows the
/// secret, and the secret is zeroed when the key is dropped.
pub struct TsigKey {
    name: String,
    secret: SecretBox<[u8]>,
}

impl TsigKey {
    /// Takes the key name and the base64 `secret` that BIND's `tsig-keygen` prints.
    pub fn from_base64(name: &str, secret: &SecretString) -> Result<TsigKey, DnsError> {
        let name = name.strip_suffix('.').unwrap_or(name);
        let valid_name = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| !l.is_empty() && l.len() <= 63)
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid_name {
            return Err(DnsError::BadKeyName { shown: shown(name) });
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(secret.expose_secret().trim())
            .map_err(|_| DnsError::BadSecret { key: name.to_string() })?;
        if decoded.is_empty() {
            return Err(DnsError::BadSecret { key: name.to_string() });
        }
        Ok(TsigKey {
            name: name.to_ascii_lowercase(),
            secret: SecretBox::new(decoded.into_boxed_slice()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A signer for one exchange. hickory keeps its own copy of the key bytes, which lives only
    /// as long as the exchange.
    fn signer(&self) -> Result<TSigner, DnsError> {
        let name = Name::from_ascii(format!("{}.", self.name)).map_err(|e| DnsError::Encode(e.to_string()))?;
        TSigner::new(
            self.secret.expose_secret().to_vec(),
            TsigAlgorithm::HmacSha256,
            name,
            TSIG_FUDGE,
        )
        .map_err(|e| DnsError::Encode(e.to_string()))
    }
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// One A record as a server answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ARecord {
    pub address: Ipv4Addr,
    pub ttl: u32,
}

/// One SRV record as a server answered it; `target` is lower-case without the trailing dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
    pub ttl: u32,
}

impl fmt::Display for SrvRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} {}", self.priority, self.weight, self.port, self.target)
    }
}

/// What an ensure-style update did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The record set already was exactly as asked: nothing was sent.
    Unchanged,
    /// The record set was replaced; `before` is what it held, in presentation form.
    Replaced { before: Vec<String> },
}

/// Asks one DNS server (an authoritative server or a resolver) for A and SRV records over TCP.
#[derive(Clone, Debug)]
pub struct DnsQuery {
    server: SocketAddr,
    timeout: Duration,
}

impl DnsQuery {
    pub fn new(server: SocketAddr, timeout: Duration) -> DnsQuery {
        DnsQuery { server, timeout }
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The A records of `name`; none when the name or the type does not exist.
    pub async fn a(&self, name: &Fqdn) -> Result<Vec<ARecord>, DnsError> {
        let answer = self.ask(name, RecordType::A).await?;
        Ok(answer
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(ARecord {
                    address: a.0,
                    ttl: r.ttl(),
                }),
                _ => None,
            })
            .collect())
    }

    /// The SRV records of `name`; none when the name or the type does not exist.
    pub async fn srv(&self, name: &Fqdn) -> Result<Vec<SrvRecord>, DnsError> {
        let answer = self.ask(name, RecordType::SRV).await?;
        Ok(answer
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::SRV(s) => Some(SrvRecord {
                    priority: s.priority(),
                    weight: s.weight(),
                    port: s.port(),
                    target: presentation(s.target()),
                    ttl: r.ttl(),
                }),
                _ => None,
            })
            .collect())
    }

    async fn ask(&self, name: &Fqdn, rtype: RecordType) -> Result<Message, DnsError> {
        let mut query = Message::new();
        query
            .set_id(rand::random())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(to_name(name)?, rtype));
        let bytes = query.to_vec().map_err(|e| DnsError::Encode(e.to_string()))?;
        let raw = exchange(self.server, &bytes, self.timeout).await?;
        let answer = parse_answer(self.server, &raw, &query)?;
        match answer.response_code() {
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(answer),
            rcode => Err(DnsError::Rcode {
                server: self.server,
                rcode: rcode_name(rcode),
                what: format!("the query {name} {rtype}"),
            }),
        }
    }
}

/// Sends TSIG-signed RFC 2136 updates for one zone to its primary server, and confirms every
/// change by asking that server afterwards.
#[derive(Debug)]
pub struct DnsUpdater {
    zone: Fqdn,
    key: TsigKey,
    query: DnsQuery,
}

impl DnsUpdater {
    /// `timeout` bounds each exchange with the server (an update makes up to three).
    pub fn new(server: SocketAddr, zone: Fqdn, key: TsigKey, timeout: Duration) -> DnsUpdater {
        DnsUpdater {
            zone,
            key,
            query: DnsQuery::new(server, timeout),
        }
    }

    pub fn server(&self) -> SocketAddr {
        self.query.server
    }

    pub fn zone(&self) -> &Fqdn {
        &self.zone
    }

    pub fn key_name(&self) -> &str {
        self.key.name()
    }

    /// The A records of `name`, from the authoritative server.
    pub async fn a(&self, name: &Fqdn) -> Result<Vec<ARecord>, DnsError> {
        self.query.a(name).await
    }

    /// The SRV records of `name`, from the authoritative server.
    pub async fn srv(&self, name: &Fqdn) -> Result<Vec<SrvRecord>, DnsError> {
        self.query.srv(name).await
    }

    /// Makes `address` the only A record of `name`: one atomic update deletes the RRset and adds
    /// the new record, then the server is asked and must answer exactly that.
    pub async fn set_a(&self, name: &Fqdn, address: Ipv4Addr, ttl: u32) -> Result<Change, DnsError> {
        self.check_in_zone(name)?;
        let before = self.query.a(name).await?;
        if let [only] = before.as_slice()
            && only.address == address
            && only.ttl == ttl
        {
            debug!(name = %name, address = %address, "A record already in place");
            return Ok(Change::Unchanged);
        }
        let record = Record::from_rdata(to_name(name)?, ttl, RData::A(A(address)));
        self.replace_rrset(name, "A", record).await?;
        let after = self.query.a(name).await?;
        let got: Vec<String> = after.iter().map(|r| format!("{} (ttl {})", r.address, r.ttl)).collect();
        if !matches!(after.as_slice(), [only] if only.address == address && only.ttl == ttl) {
            return Err(DnsError::Mismatch {
                name: name.clone(),
                rtype: "A",
                expected: format!("{address} (ttl {ttl})"),
                got: listing(&got),
            });
        }
        info!(server = %self.server(), name = %name, address = %address, "A record replaced and confirmed");
        Ok(Change::Replaced {
            before: before.iter().map(|r| r.address.to_string()).collect(),
        })
    }

    /// Makes the SRV RRset of `name` exactly one record with these values. When it already is,
    /// nothing is sent and the answer is [`Change::Unchanged`]; otherwise one atomic update
    /// replaces the RRset (removing duplicates and stale targets), and the server is asked and
    /// must answer exactly that record.
    pub async fn ensure_srv(
        &self,
        name: &Fqdn,
        priority: u16,
        weight: u16,
        port: u16,
        target: &Fqdn,
        ttl: u32,
    ) -> Result<Change, DnsError> {
        self.check_in_zone(name)?;
        let wanted = SrvRecord {
            priority,
            weight,
            port,
            target: target.to_string(),
            ttl,
        };
        let before = self.query.srv(name).await?;
        if before == [wanted.clone()] {
            debug!(name = %name, "SRV record already in place, once");
            return Ok(Change::Unchanged);
        }
        let rdata = RData::SRV(SRV::new(priority, weight, port, to_name(target)?));
        self.replace_rrset(name, "SRV", Record::from_rdata(to_name(name)?, ttl, rdata))
            .await?;
        let after = self.query.srv(name).await?;
        if after != [wanted.clone()] {
            let got: Vec<String> = after.iter().map(|r| format!("{r} (ttl {})", r.ttl)).collect();
            return Err(DnsError::Mismatch {
                name: name.clone(),
                rtype: "SRV",
                expected: format!("exactly one {wanted} (ttl {ttl})"),
                got: listing(&got),
            });
        }
        info!(server = %self.server(), name = %name, target = %target, port, "SRV record ensured and confirmed");
        Ok(Change::Replaced {
            before: before.iter().map(ToString::to_string).collect(),
        })
    }

    fn check_in_zone(&self, name: &Fqdn) -> Result<(), DnsError> {
        let zone = self.zone.as_str();
        let inside = name.as_str() == zone || name.as_str().strip_suffix(zone).is_some_and(|head| head.ends_with('.'));
        if inside {
            Ok(())
        } else {
            Err(DnsError::OutsideZone {
                name: name.clone(),
                zone: self.zone.clone(),
            })
        }
    }

    /// One signed update: delete the RRset of `record`'s name and type, add `record`.
    async fn replace_rrset(&self, name: &Fqdn, rtype: &'static str, record: Record) -> Result<(), DnsError> {
        let server = self.server();
        let mut update = Message::new();
        update
            .set_id(rand::random())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Update)
            .set_recursion_desired(false);
        let mut zone = Query::new();
        zone.set_name(to_name(&self.zone)?)
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        update.add_zone(zone);
        let mut delete = Record::update0(record.name().clone(), 0, record.record_type());
        delete.set_dns_class(DNSClass::ANY);
        update.add_update(delete);
        update.add_update(record);

        let signer = self.key.signer()?;
        let now = unix_now();
        let verifier = update
            .finalize(&signer, now)
            .map_err(|e| DnsError::Encode(e.to_string()))?;
        let bytes = update.to_vec().map_err(|e| DnsError::Encode(e.to_string()))?;
        let raw = exchange(server, &bytes, self.query.timeout).await?;
        let answer = parse_answer(server, &raw, &update)?;

        // A server that refuses the key answers unsigned with the TSIG error set (RFC 8945
        // 5.3.2); read that before the signature check, which would only say the MAC is short.
        if let Some(tsig) = tsig_of(&answer)
            && let Some(code) = tsig_error(tsig)
            && code != 0
        {
            return Err(DnsError::KeyRejected {
                key: self.key.name.clone(),
                why: tsig_error_meaning(code),
            });
        }
        match verifier {
            Some(mut verify) => {
                if let Err(e) = verify(&raw) {
                    return Err(classify_unverified(&self.key.name, server, &answer, &e.to_string()));
                }
            }
            None => {
                return Err(DnsError::Encode(
                    "hickory returned no TSIG verifier for a signed message".into(),
                ));
            }
        }
        match answer.response_code() {
            ResponseCode::NoError => Ok(()),
            ResponseCode::Refused => Err(DnsError::Refused {
                server,
                name: name.clone(),
                rtype,
                key: self.key.name.clone(),
            }),
            ResponseCode::NotAuth | ResponseCode::NotZone => Err(DnsError::NotAuthoritative {
                server,
                zone: self.zone.clone(),
            }),
            rcode => Err(DnsError::Rcode {
                server,
                rcode: rcode_name(rcode),
                what: format!("the update of {name} {rtype}"),
            }),
        }
    }
}

/// Turns a failed signature check of an answer into an error. hickory 0.25 reports an unsigned
/// answer whose TSIG carries no MAC (the way servers reject a key) as a request to support
/// truncated HMACs; that is a rejected key, not a protocol fault.
fn classify_unverified(key: &str, server: SocketAddr, answer: &Message, hickory_error: &str) -> DnsError {
    let unsigned_rejection = hickory_error.contains("truncated HMAC")
        || matches!(
            answer.response_code(),
            ResponseCode::BADSIG | ResponseCode::BADKEY | ResponseCode::BADTIME
        );
    if unsigned_rejection {
        return DnsError::KeyRejected {
            key: key.to_string(),
            why: "it answered without a signature".to_string(),
        };
    }
    let rcode = answer.response_code();
    let why = match tsig_of(answer) {
        None => format!("the answer ({}) is not signed with TSIG key '{key}'", rcode_name(rcode)),
        Some(_) => format!(
            "the TSIG signature of the answer ({}) does not verify: {hickory_error}",
            rcode_name(rcode)
        ),
    };
    DnsError::BadAnswer { server, why }
}

/// The short upper-case name operators know from dig (`REFUSED`, `SERVFAIL`).
fn rcode_name(rcode: ResponseCode) -> String {
    format!("{rcode:?}").to_ascii_uppercase()
}

fn tsig_error_meaning(code: u16) -> String {
    match code {
        BADSIG => "the secret does not match the server's (BADSIG)".to_string(),
        BADKEY => "the server does not know a key of that name and algorithm (BADKEY)".to_string(),
        BADTIME => "the clocks of the bot and the server differ by more than 5 minutes (BADTIME)".to_string(),
        BADTRUNC => "the server refuses truncated signatures (BADTRUNC)".to_string(),
        other => format!("TSIG error {other}"),
    }
}

fn tsig_of(message: &Message) -> Option<&TSIG> {
    message.signature().iter().find_map(|r| match r.data() {
        RData::DNSSEC(DNSSECRData::TSIG(tsig)) => Some(tsig),
        _ => None,
    })
}

/// The Error field of a TSIG record. hickory 0.25 has no getter for it, so the RDATA is encoded
/// again and read at its fixed place: algorithm name, time (6), fudge (2), MAC size (2), MAC,
/// original id (2), error (2).
fn tsig_error(tsig: &TSIG) -> Option<u16> {
    let rdata = tsig.to_bytes().ok()?;
    let mut at = 0usize;
    loop {
        let len = usize::from(*rdata.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        at += len;
    }
    at += 6 + 2;
    let mac_len = usize::from(u16::from_be_bytes([*rdata.get(at)?, *rdata.get(at + 1)?]));
    at += 2 + mac_len + 2;
    Some(u16::from_be_bytes([*rdata.get(at)?, *rdata.get(at + 1)?]))
}

/// Checks that `raw` parses and answers `request`.
fn parse_answer(server: SocketAddr, raw: &[u8], request: &Message) -> Result<Message, DnsError> {
    let bad = |why: String| DnsError::BadAnswer { server, why };
    let answer = Message::from_vec(raw).map_err(|e| bad(format!("it does not parse: {e}")))?;
    if answer.id() != request.id() || answer.message_type() != MessageType::Response {
        return Err(bad("it is not the answer to the request sent".to_string()));
    }
    if answer.op_code() != request.op_code() {
        return Err(bad(format!(
            "it answers a {:?}, not a {:?}",
            answer.op_code(),
            request.op_code()
        )));
    }
    Ok(answer)
}

/// One DNS message each way over TCP, with a two-byte length prefix (RFC 1035 4.2.2).
async fn exchange(server: SocketAddr, request: &[u8], timeout: Duration) -> Result<Vec<u8>, DnsError> {
    let len =
        u16::try_from(request.len()).map_err(|_| DnsError::Encode("the message is longer than 65535 bytes".into()))?;
    let talk = async {
        let mut stream = TcpStream::connect(server).await?;
        let mut framed = Vec::with_capacity(request.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(request);
        stream.write_all(&framed).await?;
        let answer_len = stream.read_u16().await?;
        let mut answer = vec![0u8; usize::from(answer_len)];
        stream.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(timeout, talk).await {
        Err(_) => Err(DnsError::Timeout { server, after: timeout }),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(DnsError::BadAnswer {
            server,
            why: "it closed the connection without a complete answer".to_string(),
        }),
        Ok(Err(source)) => Err(DnsError::Unreachable { server, source }),
        Ok(Ok(answer)) => Ok(answer),
    }
}

/// Turns a server as the configuration names it (`198.51.100.53:53`, `ns1.contoso.com:53`,
/// `ns1.contoso.com`: port 53 when none is given) into a socket address, asking the system
/// resolver for a name. The first address wins.
pub async fn resolve_server(server: &str) -> Result<SocketAddr, DnsError> {
    if let Ok(addr) = server.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = server.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    let with_port = match server.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => server.to_string(),
        _ => format!("{server}:53"),
    };
    let unknown = |why: String| DnsError::UnknownServer {
        shown: shown(server),
        why,
    };
    let host = with_port.rsplit_once(':').map(|(h, _)| h).unwrap_or(&with_port);
    Fqdn::parse(host).map_err(|e| unknown(e.to_string()))?;
    let mut addrs = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| unknown(e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| unknown("the name has no address".to_string()))
}

fn to_name(name: &Fqdn) -> Result<Name, DnsError> {
    Name::from_ascii(format!("{name}.")).map_err(|e| DnsError::Encode(format!("{name}: {e}")))
}

/// `xmpp.contoso.com` for the wire name `xmpp.contoso.com.`; `.` for the root.
fn presentation(name: &Name) -> String {
    let s = name.to_ascii().to_ascii_lowercase();
    match s.strip_suffix('.') {
        Some("") | None => s,
        Some(trimmed) => trimmed.to_string(),
    }
}

fn listing(items: &[String]) -> String {
    if items.is_empty() {
        "empty".to_string()
    } else {
        items.join(", ")
    }
}

fn unix_now() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::dnssec::rdata::tsig::make_tsig_record;

    const SECRET: &str = "vokJY8NOJ0VOCVAbyRlfmnyVQHxg3/o/s21fC6cdq0I=";

    fn key(name: &str, secret: &str) -> Result<TsigKey, DnsError> {
        TsigKey::from_base64(name, &SecretString::from(secret.to_string()))
    }

    fn fqdn(s: &str) -> Fqdn {
        Fqdn::parse(s).expect("test names are valid")
    }

    #[test]
    fn keys_parse_and_never_show_their_secret() {
        let k = key("baton.", SECRET).expect("valid key");
        assert_eq!(k.name(), "baton");
        let updater = DnsUpdater::new(
            "127.0.0.1:53".parse().expect("addr"),
            fqdn("contoso.test"),
            k,
            Duration::from_secs(1),
        );
        let debug = format!("{updater:?}");
        assert!(debug.contains("baton") && debug.contains("[redacted]"), "{debug}");
        assert!(!debug.contains(SECRET) && !debug.contains("vokJY8"), "{debug}");

        let err = key("baton", "not base64 !!").expect_err("bad secret").to_string();
        assert_eq!(
            err,
            "the secret of TSIG key 'baton' is not valid base64 (paste the `secret` value that tsig-keygen prints)"
        );
        assert!(key("baton", "").is_err());
        let err = key("bad key\n", SECRET).expect_err("bad name").to_string();
        assert_eq!(
            err,
            "'bad key\\n' is not a valid TSIG key name: use 1 to 253 letters, digits, '-', '_' or '.'"
        );
    }

    /// An answer as BIND sends it when it rejects a key: unsigned, TSIG error set, empty MAC.
    fn rejection(request: &Message, error: u16) -> Vec<u8> {
        let mut answer = Message::new();
        answer
            .set_id(request.id())
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Update);
        answer.set_response_code(ResponseCode::NotAuth);
        let tsig = TSIG::new(
            TsigAlgorithm::HmacSha256,
            u64::from(unix_now()),
            300,
            Vec::new(),
            request.id(),
            error,
            Vec::new(),
        );
        let name = Name::from_ascii("baton.").expect("valid name");
        answer.add_tsig(make_tsig_record(name, tsig));
        answer.to_vec().expect("encodes")
    }

    #[test]
    fn an_unsigned_badkey_answer_reads_as_a_rejected_key() {
        let k = key("baton", SECRET).expect("valid key");
        let mut request = Message::new();
        request.set_id(4242).set_op_code(OpCode::Update);
        let verifier = request
            .finalize(&k.signer().expect("signer"), unix_now())
            .expect("signs");
        let raw = rejection(&request, BADKEY);
        let answer = Message::from_vec(&raw).expect("parses");

        // The fact behind hickory-dns issue 1981: hickory 0.25 calls this a truncated HMAC.
        let mut verify = verifier.expect("a TSIG signer returns a verifier");
        let hickory_error = verify(&raw)
            .expect_err("an unsigned answer does not verify")
            .to_string();
        assert!(hickory_error.contains("truncated HMAC"), "{hickory_error}");

        assert_eq!(tsig_of(&answer).and_then(tsig_error), Some(BADKEY));
        let server: SocketAddr = "127.0.0.1:53".parse().expect("addr");
        assert_eq!(
            classify_unverified("baton", server, &answer, &hickory_error).to_string(),
            "the DNS server rejected TSIG key 'baton': it answered without a signature"
        );
        assert_eq!(
            DnsError::KeyRejected {
                key: "baton".into(),
                why: tsig_error_meaning(BADSIG)
            }
            .to_string(),
            "the DNS server rejected TSIG key 'baton': the secret does not match the server's (BADSIG)"
        );
    }

    #[test]
    fn tsig_error_is_read_whatever_the_mac_length() {
        for (mac, error) in [(vec![], 0u16), (vec![7u8; 32], 18), (vec![1u8; 3], 65535)] {
            let tsig = TSIG::new(TsigAlgorithm::HmacSha256, 1, 300, mac, 1, error, vec![0, 0, 1, 2, 3, 4]);
            assert_eq!(tsig_error(&tsig), Some(error));
        }
    }

    #[tokio::test]
    async fn names_outside_the_zone_are_refused_before_anything_is_sent() {
        // Port 9 on loopback: if anything were sent, the error would be a network one.
        let updater = DnsUpdater::new(
            "127.0.0.1:9".parse().expect("addr"),
            fqdn("contoso.test"),
            key("baton", SECRET).expect("key"),
            Duration::from_secs(1),
        );
        for name in ["xmpp.contoso.com", "xmpp.evilcontoso.test"] {
            let err = updater
                .set_a(&fqdn(name), Ipv4Addr::LOCALHOST, 300)
                .await
                .expect_err("outside");
            assert_eq!(
                err.to_string(),
                format!("{name} is not in zone contoso.test, so this updater may not change it")
            );
        }
    }

    #[test]
    fn rcodes_read_as_dig_prints_them() {
        let names: Vec<String> = [
            ResponseCode::Refused,
            ResponseCode::ServFail,
            ResponseCode::NotAuth,
            ResponseCode::NXDomain,
        ]
        .into_iter()
        .map(rcode_name)
        .collect();
        assert_eq!(names, ["REFUSED", "SERVFAIL", "NOTAUTH", "NXDOMAIN"]);
    }

    #[tokio::test]
    async fn servers_resolve_with_port_53_by_default() {
        let check = |s: &str| {
            let s = s.to_string();
            async move {
                resolve_server(&s)
                    .await
                    .map(|a| a.to_string())
                    .unwrap_or_else(|e| e.to_string())
            }
        };
        assert_eq!(check("127.0.0.1:5353").await, "127.0.0.1:5353");
        assert_eq!(check("127.0.0.1").await, "127.0.0.1:53");
        assert_eq!(check("[::1]:53").await, "[::1]:53");
        assert_eq!(
            check("ns1;rm.contoso.com:53").await,
            "cannot find the DNS server 'ns1;rm.contoso.com:53': 'ns1;rm.contoso.com' is not a valid host name: labels may hold only letters, digits and '-'"
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out_naming_itself() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let server = listener.local_addr().expect("addr");
        let silent = tokio::spawn(async move {
            let kept = listener.accept().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(kept);
        });
        let q = DnsQuery::new(server, Duration::from_millis(200));
        let err = q.a(&fqdn("xmpp.contoso.test")).await.expect_err("times out");
        assert_eq!(
            err.to_string(),
            format!("no answer from the DNS server {server} within 0.2s")
        );
        silent.abort();
    }

    #[tokio::test]
    async fn garbage_answers_are_errors_not_panics() {
        for reply in [vec![0u8, 3, 1, 2, 3], vec![0u8, 0], vec![0u8, 12], vec![0xFFu8; 40]] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
            let server = listener.local_addr().expect("addr");
            let reply2 = reply.clone();
            let peer = tokio::spawn(async move {
                if let Ok((mut s, _)) = listener.accept().await {
                    let mut len = [0u8; 2];
                    let _ = s.read_exact(&mut len).await;
                    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    let _ = s.read_exact(&mut body).await;
                    let _ = s.write_all(&reply2).await;
                }
            });
            let q = DnsQuery::new(server, Duration::from_secs(2));
            let err = q
                .srv(&fqdn("_xmpp-server._tcp.contoso.test"))
                .await
                .expect_err("garbage");
            assert!(matches!(err, DnsError::BadAnswer { .. }), "{reply:?}: {err}");
            peer.abort();
        }
    }
}

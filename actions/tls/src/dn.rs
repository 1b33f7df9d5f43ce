//! Distinguished names compared structurally: RFC 4514 strings (the agent's subject pins) and
//! certificate subjects (through x509-parser) become the same value, a set of relative
//! distinguished names each holding a set of (attribute type, value) pairs, so that a pin
//! matches only a subject with exactly those attributes, whatever order the CA wrote them in.
//!
//! A certificate whose single common name is `baton-bot, OU=Ops` is the name
//! `{ {CN: "baton-bot, OU=Ops"} }`; the pin `CN=baton-bot, OU=Ops` is
//! `{ {CN: "baton-bot"}, {OU: "Ops"} }`. They differ, so the first cannot pass for the second.
//!
//! Values compare as X.520's caseIgnoreMatch does for the attributes pins use: case-insensitive,
//! with leading and trailing spaces ignored and inner runs of spaces counted as one.

use std::fmt;

/// Attribute types a pin may name by keyword, with their object identifiers. Any other type is
/// written as a dotted OID (`2.5.4.97=…`).
const KEYWORDS: &[(&str, &str)] = &[
    ("CN", "2.5.4.3"),
    ("SN", "2.5.4.4"),
    ("SERIALNUMBER", "2.5.4.5"),
    ("C", "2.5.4.6"),
    ("L", "2.5.4.7"),
    ("ST", "2.5.4.8"),
    ("STREET", "2.5.4.9"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("TITLE", "2.5.4.12"),
    ("GN", "2.5.4.42"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("EMAILADDRESS", "1.2.840.113549.1.9.1"),
];

/// Why a name does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not a distinguished name (RFC 4514): {why}")]
pub struct DnError {
    text: String,
    why: String,
}

/// One attribute of a relative distinguished name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Ava {
    /// The attribute type as a dotted OID.
    oid: String,
    /// The value as compared (see [`fold`]).
    folded: String,
    /// The value as written, for display.
    value: String,
}

/// A distinguished name: relative distinguished names in RFC 4514 order (most specific first),
/// each with its attributes sorted. Equality ignores the order of the RDNs and of the
/// attributes inside each, and the case and extra spaces of values.
#[derive(Clone, Debug)]
pub struct DistinguishedName {
    rdns: Vec<Vec<Ava>>,
}

impl DistinguishedName {
    /// Parses an RFC 4514 string such as `CN=baton-bot, OU=Ops, O=Contoso`. Spaces around the
    /// separators are allowed; `+` joins attributes of one RDN; `\,` `\+` `\"` `\\` `\<` `\>`
    /// `\;` `\=` `\#` `\ ` and `\XX` (hex bytes of UTF-8) escape; `#` followed by hex is the BER
    /// encoding of a string value. Anything else is refused with the reason.
    pub fn parse(text: &str) -> Result<DistinguishedName, DnError> {
        let err = |why: String| DnError { text: shown(text), why };
        if text.trim().is_empty() {
            return Err(err("it is empty".into()));
        }
        let mut rdns = Vec::new();
        let mut rdn = Vec::new();
        let mut rest = text;
        loop {
            let (ava, after, sep) = parse_ava(rest).map_err(err)?;
            rdn.push(ava);
            rest = after;
            match sep {
                Some('+') => {}
                Some(_) => {
                    rdns.push(finish_rdn(std::mem::take(&mut rdn)).map_err(err)?);
                }
                None => {
                    rdns.push(finish_rdn(std::mem::take(&mut rdn)).map_err(err)?);
                    break;
                }
            }
        }
        Ok(DistinguishedName { rdns })
    }

    /// The subject of a DER certificate, or `None` if the certificate does not parse.
    pub fn of_certificate(der: &[u8]) -> Option<DistinguishedName> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut rdns: Vec<Vec<Ava>> = cert
            .subject()
            .iter()
            .map(|rdn| {
                let mut avas: Vec<Ava> = rdn
                    .iter()
                    .map(|atv| {
                        let value = attribute_text(atv.attr_value());
                        Ava {
                            oid: atv.attr_type().to_id_string(),
                            folded: fold(&value),
                            value,
                        }
                    })
                    .collect();
                avas.sort();
                avas
            })
            .collect();
        // A certificate lists the RDNs from the root down; RFC 4514 writes them the other way.
        rdns.reverse();
        Some(DistinguishedName { rdns })
    }

    fn canonical(&self) -> Vec<Vec<(&str, &str)>> {
        let mut rdns: Vec<Vec<(&str, &str)>> = self
            .rdns
            .iter()
            .map(|rdn| rdn.iter().map(|a| (a.oid.as_str(), a.folded.as_str())).collect())
            .collect();
        rdns.sort();
        rdns
    }
}

impl PartialEq for DistinguishedName {
    fn eq(&self, other: &Self) -> bool {
        self.canonical() == other.canonical()
    }
}

impl Eq for DistinguishedName {}

/// The name in RFC 4514 form (`CN=baton-bot, OU=Ops`), with every special character of a value
/// escaped, so that what the agent logs parses back to the same name.
impl fmt::Display for DistinguishedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.rdns.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            for (j, ava) in rdn.iter().enumerate() {
                if j > 0 {
                    f.write_str("+")?;
                }
                let keyword = KEYWORDS.iter().find(|(_, oid)| *oid == ava.oid).map(|(k, _)| *k);
                write!(f, "{}={}", keyword.unwrap_or(&ava.oid), escape(&ava.value))?;
            }
        }
        Ok(())
    }
}

/// Pins are echoed in configuration errors: keep them short and free of control characters.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(200).flat_map(char::escape_debug).collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// The comparison form of a value: trimmed, inner runs of white space as one space, lower case.
fn fold(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

fn escape(value: &str) -> String {
    let mut out = String::new();
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The text of a certificate's attribute value: the string types as text, anything else as
/// RFC 4514's `#` and the hex of its encoding (which no text pin equals).
fn attribute_text(value: &x509_parser::der_parser::asn1_rs::Any<'_>) -> String {
    use x509_parser::der_parser::asn1_rs::Tag;
    let data = value.data;
    let text = match value.tag() {
        Tag::BmpString => {
            let units: Vec<u16> = data.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            data.len()
                .is_multiple_of(2)
                .then(|| String::from_utf16(&units).ok())
                .flatten()
        }
        Tag::UniversalString => data
            .len()
            .is_multiple_of(4)
            .then(|| {
                data.chunks_exact(4)
                    .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                    .collect::<Option<String>>()
            })
            .flatten(),
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::T61String | Tag::VisibleString => {
            std::str::from_utf8(data).ok().map(str::to_string)
        }
        _ => None,
    };
    text.unwrap_or_else(|| {
        let mut der = vec![u8::try_from(value.tag().0).unwrap_or(0)];
        der.extend(ber_length(data.len()));
        der.extend_from_slice(data);
        format!("#{}", hex::encode(der))
    })
}

fn ber_length(n: usize) -> Vec<u8> {
    if n < 0x80 {
        return vec![u8::try_from(n).expect("below 0x80")];
    }
    let bytes: Vec<u8> = n.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
    let mut out = vec![0x80 | u8::try_from(bytes.len()).expect("a usize has at most 8 bytes")];
    out.extend(bytes);
    out
}

fn finish_rdn(mut avas: Vec<Ava>) -> Result<Vec<Ava>, String> {
    avas.sort();
    if avas.windows(2).any(|w| w[0].oid == w[1].oid) {
        return Err("one RDN names the same attribute type twice".into());
    }
    Ok(avas)
}

/// Parses `type=value` at the start of `s`; returns it, the text after its separator, and the
/// separator (`,` or `+`), or `None` at the end.
fn parse_ava(s: &str) -> Result<(Ava, &str, Option<char>), String> {
    if s.trim().is_empty() {
        return Err("an attribute is missing after a separator".into());
    }
    let Some((kind, rest)) = s.split_once('=') else {
        return Err(format!("'{}' has no '='", shown(s.trim())));
    };
    let oid = attribute_oid(kind.trim())?;
    let (value, rest, sep) = parse_value(rest)?;
    if value.is_empty() {
        return Err(format!("{} has an empty value", kind.trim()));
    }
    Ok((
        Ava {
            folded: fold(&value),
            oid,
            value,
        },
        rest,
        sep,
    ))
}

fn attribute_oid(kind: &str) -> Result<String, String> {
    if kind.is_empty() {
        return Err("an attribute type is missing before '='".into());
    }
    let upper = kind.to_ascii_uppercase();
    let upper = upper.strip_prefix("OID.").unwrap_or(&upper);
    if let Some((_, oid)) = KEYWORDS
        .iter()
        .find(|(k, _)| *k == upper || (upper == "E" && *k == "EMAILADDRESS"))
    {
        return Ok((*oid).to_string());
    }
    let dotted = !upper.is_empty()
        && upper.split('.').count() >= 2
        && upper
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0')));
    if dotted {
        return Ok(upper.to_string());
    }
    Err(format!(
        "unknown attribute type '{}' (use one of {} or a dotted OID)",
        shown(kind),
        KEYWORDS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
    ))
}

/// Parses a value up to an unescaped `,` or `+`.
fn parse_value(s: &str) -> Result<(String, &str, Option<char>), String> {
    let trimmed = s.trim_start_matches(' ');
    if let Some(hex) = trimmed.strip_prefix('#') {
        let end = hex.find([',', '+']).unwrap_or(hex.len());
        let value = ber_string(hex[..end].trim_end_matches(' '))?;
        let sep = hex[end..].chars().next();
        let rest = sep.map_or("", |c| &hex[end + c.len_utf8()..]);
        return Ok((value, rest, sep));
    }
    let mut bytes: Vec<u8> = Vec::new();
    // Bytes up to the last character that counts: unescaped trailing spaces do not.
    let mut significant = 0;
    let mut chars = trimmed.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            ',' | '+' => {
                let value = utf8(bytes, significant)?;
                return Ok((value, &trimmed[i + 1..], Some(c)));
            }
            '\\' => {
                let Some((_, next)) = chars.next() else {
                    return Err("the value ends with a lone '\\'".into());
                };
                if "\"+,;<>\\ #=".contains(next) {
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(next.encode_utf8(&mut buf).as_bytes());
                } else {
                    let low = chars.next().map(|(_, c)| c);
                    let byte = match (next.to_digit(16), low.and_then(|c| c.to_digit(16))) {
                        (Some(h), Some(l)) => u8::try_from(h * 16 + l).expect("two hex digits make a byte"),
                        _ => return Err(format!("'\\{next}' is not an escape (use \\, \\+ \\\\ or \\XX)")),
                    };
                    bytes.push(byte);
                }
                significant = bytes.len();
            }
            '"' | ';' | '<' | '>' | '=' => {
                return Err(format!("'{c}' in a value must be escaped as '\\{c}'"));
            }
            c if c.is_control() => return Err("a value holds a control character".into()),
            c => {
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                if c != ' ' {
                    significant = bytes.len();
                }
            }
        }
    }
    Ok((utf8(bytes, significant)?, "", None))
}

fn utf8(mut bytes: Vec<u8>, significant: usize) -> Result<String, String> {
    bytes.truncate(significant);
    String::from_utf8(bytes).map_err(|_| "escaped bytes are not UTF-8".to_string())
}

/// `#` followed by the hex of a BER-encoded string: its text.
fn ber_string(hex: &str) -> Result<String, String> {
    let der = hex::decode(hex).map_err(|_| format!("'#{}' is not hex", shown(hex)))?;
    let (tag, len, body) = match der.as_slice() {
        [tag, len, body @ ..] if *len < 0x80 => (*tag, usize::from(*len), body),
        [tag, 0x81, len, body @ ..] => (*tag, usize::from(*len), body),
        _ => return Err("'#' values must be a short BER-encoded string".into()),
    };
    if body.len() != len {
        return Err("the BER length of a '#' value does not match its content".into());
    }
    match tag {
        0x0c | 0x13 | 0x16 | 0x14 | 0x1a => {
            String::from_utf8(body.to_vec()).map_err(|_| "a '#' value is not text".to_string())
        }
        _ => Err(format!("a '#' value has tag {tag:#04x}, not a string type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dn(s: &str) -> DistinguishedName {
        DistinguishedName::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(s: &str) -> String {
        DistinguishedName::parse(s).expect_err("invalid").to_string()
    }

    #[test]
    fn names_compare_attribute_by_attribute_in_any_order() {
        assert_eq!(dn("CN=baton-bot, OU=Ops"), dn("ou=ops,cn=Baton-Bot"));
        assert_eq!(dn("CN=baton-bot,OU=Ops"), dn("  CN = baton-bot ,  OU=Ops  "));
        assert_eq!(dn("CN=a+OU=b, O=c"), dn("O=c, OU=b+CN=a"));
        assert_eq!(dn("2.5.4.3=baton-bot"), dn("CN=baton-bot"));
        assert_eq!(dn("CN=baton  bot"), dn("CN=baton bot"));
        assert_ne!(dn("CN=baton-bot, OU=Ops"), dn("CN=baton-bot"));
        assert_ne!(dn("CN=baton-bot, OU=Ops"), dn("CN=baton-bot, OU=Ops, O=Contoso"));
        // Two RDNs are not one multi-valued RDN.
        assert_ne!(dn("CN=a, OU=b"), dn("CN=a+OU=b"));
        // The spoof: one CN that contains a comma is a different name.
        assert_ne!(dn("CN=baton-bot\\, OU\\=Ops"), dn("CN=baton-bot, OU=Ops"));
        assert_eq!(dn("CN=baton-bot\\, OU\\=Ops"), dn("CN=baton-bot\\2C OU\\3DOps"));
        assert_eq!(dn("CN=#0c096261746f6e2d626f74"), dn("CN=baton-bot"));
        assert_eq!(dn("CN=caf\\C3\\A9"), dn("CN=café"));
        assert_eq!(dn("CN=\\ x\\ "), dn("CN=\\ x\\ "));
    }

    #[test]
    fn names_that_do_not_parse_say_why() {
        expect_test::expect![[r#"
            [
                "'' is not a distinguished name (RFC 4514): it is empty",
                "'baton-bot' is not a distinguished name (RFC 4514): 'baton-bot' has no '='",
                "'CN=' is not a distinguished name (RFC 4514): CN has an empty value",
                "'XX=1' is not a distinguished name (RFC 4514): unknown attribute type 'XX' (use one of CN, SN, SERIALNUMBER, C, L, ST, STREET, O, OU, TITLE, GN, DC, UID, EMAILADDRESS or a dotted OID)",
                "'CN=a;b' is not a distinguished name (RFC 4514): ';' in a value must be escaped as '\\;'",
                "'CN=a\\\\' is not a distinguished name (RFC 4514): the value ends with a lone '\\'",
                "'CN=a\\\\q1' is not a distinguished name (RFC 4514): '\\q' is not an escape (use \\, \\+ \\\\ or \\XX)",
                "'CN=a+CN=b' is not a distinguished name (RFC 4514): one RDN names the same attribute type twice",
                "'CN=#zz' is not a distinguished name (RFC 4514): '#zz' is not hex",
                "'CN=\\\\FF' is not a distinguished name (RFC 4514): escaped bytes are not UTF-8",
                "'CN=a,' is not a distinguished name (RFC 4514): an attribute is missing after a separator",
            ]
        "#]]
        .assert_debug_eq(
            &[
                "", "baton-bot", "CN=", "XX=1", "CN=a;b", "CN=a\\", "CN=a\\q1", "CN=a+CN=b", "CN=#zz", "CN=\\FF",
                "CN=a,",
            ]
            .map(err),
        );
    }

    #[test]
    fn display_escapes_and_parses_back() {
        for s in [
            "CN=baton-bot\\, OU\\=Ops",
            "CN=\\#x\\ , O=a\\+b",
            "CN=a+OU=b, 1.2.3.4=x",
        ] {
            let name = dn(s);
            assert_eq!(dn(&name.to_string()), name, "{name}");
        }
        assert_eq!(dn("cn=baton-bot,ou=Ops").to_string(), "CN=baton-bot, OU=Ops");
    }
}

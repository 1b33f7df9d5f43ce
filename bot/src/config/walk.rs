//! A small walker over a spanned TOML document that collects every error with its key path and
//! line, instead of stopping at the first one as serde does.

use serde::de::DeserializeOwned;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One configuration problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The key path, e.g. `people.alice.identities`.
    pub path: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.path.is_empty()) {
            (Some(line), false) => write!(f, "line {line}: {}: {}", self.path, self.message),
            (Some(line), true) => write!(f, "line {line}: {}", self.message),
            (None, false) => write!(f, "{}: {}", self.path, self.message),
            (None, true) => write!(f, "{}", self.message),
        }
    }
}

/// Collects errors, turning byte offsets into line numbers.
pub struct Errors<'s> {
    src: &'s str,
    pub list: Vec<ConfigError>,
}

impl<'s> Errors<'s> {
    pub fn new(src: &'s str) -> Errors<'s> {
        Errors { src, list: Vec::new() }
    }

    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.src.len());
        self.src.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
    }

    pub fn at(&mut self, path: &str, span: Option<Range<usize>>, message: impl Into<String>) {
        let line = span.map(|s| self.line_of(s.start));
        self.list.push(ConfigError {
            path: path.to_string(),
            line,
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

pub fn join(path: &str, key: &str) -> String {
    let simple = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if simple {
        key.to_string()
    } else {
        format!("\"{}\"", key.escape_debug())
    };
    if path.is_empty() { key } else { format!("{path}.{key}") }
}

/// Deserializes one value with serde, recording a failure at the value's line.
pub fn value<T: DeserializeOwned>(e: &mut Errors<'_>, path: &str, v: &Spanned<DeValue<'_>>) -> Option<T> {
    match T::deserialize(toml::de::ValueDeserializer::from(v.clone())) {
        Ok(t) => Some(t),
        Err(err) => {
            let message = super::redact::value_error(path, err.message().trim().to_string());
            e.at(path, err.span().or_else(|| Some(v.span())), message);
            None
        }
    }
}

/// A table being read: remembers which keys were used so that unknown keys can be reported.
pub struct Table<'a, 'i> {
    pub path: String,
    pub span: Range<usize>,
    map: &'a DeTable<'i>,
    used: RefCell<BTreeSet<String>>,
}

impl<'a, 'i> Table<'a, 'i> {
    pub fn root(doc: &'a Spanned<DeTable<'i>>) -> Table<'a, 'i> {
        Table {
            path: String::new(),
            span: doc.span(),
            map: doc.get_ref(),
            used: RefCell::default(),
        }
    }

    /// Views `v` as a table, or records that it should have been one.
    pub fn of(e: &mut Errors<'_>, path: String, v: &'a Spanned<DeValue<'i>>) -> Option<Table<'a, 'i>> {
        match v.get_ref() {
            DeValue::Table(map) => Some(Table {
                path,
                span: v.span(),
                map,
                used: RefCell::default(),
            }),
            other => {
                e.at(
                    &path,
                    Some(v.span()),
                    format!("expected a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    fn raw(&self, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
        self.used.borrow_mut().insert(key.to_string());
        self.map.get(key)
    }

    /// Span of a key's value, for errors found after reading it.
    pub fn span_of(&self, key: &str) -> Option<Range<usize>> {
        self.map.get(key).map(|v| v.span()).or_else(|| Some(self.span.clone()))
    }

    pub fn key_path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// An optional value.
    pub fn opt<T: DeserializeOwned>(&self, e: &mut Errors<'_>, key: &str) -> Option<T> {
        self.raw(key).and_then(|v| value(e, &self.key_path(key), v))
    }

    /// A required value: missing is an error.
    pub fn req<T: DeserializeOwned>(&self, e: &mut Errors<'_>, key: &str) -> Option<T> {
        match self.raw(key) {
            Some(v) => value(e, &self.key_path(key), v),
            None => {
                e.at(&self.key_path(key), Some(self.span.clone()), "is missing");
                None
            }
        }
    }

    /// A sub-table, if present.
    pub fn sub(&self, e: &mut Errors<'_>, key: &str) -> Option<Table<'a, 'i>> {
        self.raw(key).and_then(|v| Table::of(e, self.key_path(key), v))
    }

    /// The raw value of a key, for callers that look at its shape first.
    pub fn get(&self, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
        self.raw(key)
    }

    /// Every entry, for tables whose keys are names (`[people.alice]`, `[inventory.pools.X]`).
    pub fn entries(&self) -> Vec<(String, &'a Spanned<DeValue<'i>>)> {
        let mut used = self.used.borrow_mut();
        self.map
            .iter()
            .map(|(k, v)| {
                used.insert(k.get_ref().to_string());
                (k.get_ref().to_string(), v)
            })
            .collect()
    }

    /// Reports keys nobody read: typos must not pass silently.
    pub fn finish(self, e: &mut Errors<'_>) {
        let used = self.used.into_inner();
        for (k, _) in self.map.iter() {
            if !used.contains(k.get_ref().as_ref()) {
                let path = join(&self.path, k.get_ref());
                e.at(&path, Some(k.span()), "unknown key");
            }
        }
    }
}

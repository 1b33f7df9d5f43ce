//! The journal's chain and what vouches for it from outside the store: every row carries an
//! HMAC-SHA256 over the row before it, under a key kept outside the store (a secret like the
//! others); a seal in the store's metadata, made with the key, says how many rows predate keyed
//! chains; a checkpoint file outside the store records the last row Baton wrote (its number and
//! MAC, itself MACed), so a journal cut short or a lost WAL is told apart from a quiet one; and
//! every outbox row carries a MAC, so a message inserted by hand is never posted as Baton's.
//!
//! What this protects, and what it cannot, is in the README's security section.

use super::{ChainReport, StoreError};
use crate::outbox::Row;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The shortest key accepted (characters of the secret; `openssl rand -hex 32` gives 64).
pub const MIN_KEY_LEN: usize = 32;

/// How many problems a report lists before it counts the rest (a wrong key fails every row).
const MAX_PROBLEMS: usize = 20;

/// The key of the chain: only its id (a MAC of a constant) is ever shown.
#[derive(Clone)]
pub struct ChainKey {
    secret: SecretString,
    id: String,
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChainKey({})", self.id)
    }
}

impl ChainKey {
    /// A key from its secret text; refused when shorter than [`MIN_KEY_LEN`] (without quoting it).
    pub fn new(secret: SecretString) -> Result<ChainKey, String> {
        let len = secret.expose_secret().chars().count();
        if len < MIN_KEY_LEN {
            return Err(format!(
                "the journal's key must be at least {MIN_KEY_LEN} characters (it has {len}); make one with `openssl rand -hex 32`"
            ));
        }
        let mut key = ChainKey {
            secret,
            id: String::new(),
        };
        key.id = format!("k:{}", &key.mac("baton/key-id/v1", &[])[..12]);
        Ok(key)
    }

    /// Reads the key file at `path`, or makes one (32 random bytes in hex, readable by this user
    /// only) when there is none: the default for a SQLite store whose configuration names no key.
    pub fn load_or_create(path: &Path) -> Result<ChainKey, StoreError> {
        if !path.exists() {
            super::sqlite::make_folder(path)?;
            let mut bytes = [0u8; 32];
            rand::fill(&mut bytes);
            write_private(path, &hex::encode(bytes)).map_err(|e| key_error(path, e.to_string()))?;
            tracing::info!(key = %path.display(), "made a key for the journal's chain");
        }
        ChainKey::load(path)
    }

    /// Reads the key file at `path` (a missing file is an error: `baton audit` never makes one).
    pub fn load(path: &Path) -> Result<ChainKey, StoreError> {
        let text = std::fs::read_to_string(path).map_err(|e| key_error(path, e.to_string()))?;
        let text = text.trim_end_matches(['\r', '\n']).to_string();
        ChainKey::new(SecretString::from(text)).map_err(|why| key_error(path, why))
    }

    /// Safe to show: names the key without revealing anything of it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// HMAC-SHA256 over a domain and length-prefixed parts, in hex.
    fn mac(&self, domain: &str, parts: &[&[u8]]) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(self.secret.expose_secret().as_bytes())
            .expect("HMAC takes a key of any length");
        m.update(domain.as_bytes());
        for p in parts {
            m.update(&(p.len() as u64).to_le_bytes());
            m.update(p);
        }
        hex::encode(m.finalize().into_bytes())
    }

    fn verify(&self, domain: &str, parts: &[&[u8]], claimed: &str) -> bool {
        let Ok(claimed) = hex::decode(claimed) else {
            return false;
        };
        let mut m = Hmac::<Sha256>::new_from_slice(self.secret.expose_secret().as_bytes())
            .expect("HMAC takes a key of any length");
        m.update(domain.as_bytes());
        for p in parts {
            m.update(&(p.len() as u64).to_le_bytes());
            m.update(p);
        }
        // Constant time, so a forger learns nothing from how long a refusal takes.
        m.verify_slice(&claimed).is_ok()
    }
}

fn key_error(path: &Path, why: String) -> StoreError {
    StoreError::Key {
        path: path.display().to_string(),
        why,
    }
}

/// Writes `text` to a new file readable by this user only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// The chain before keys: unkeyed SHA-256, still checked for rows that predate the seal.
pub fn legacy_link(prev: &str, seq: i64, at: &str, kind: &str, body: &str) -> String {
    let mut h = Sha256::new();
    for part in [prev, &seq.to_string(), at, kind, body] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// One journal row as the chain sees it: seq, at, kind, body, prev_hash, hash.
pub type ChainRow = (i64, String, String, String, String, String);

/// The record outside the store of the last row Baton wrote.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    store: String,
    seq: i64,
    hash: String,
    at: String,
    mac: String,
}

/// A store's chain: its key, and where its checkpoint lives.
#[derive(Debug)]
pub struct Chain {
    key: ChainKey,
    checkpoint: Option<PathBuf>,
    /// Whether a missing checkpoint is a problem (a SQLite file) or only a note (a replica's
    /// view of a PostgreSQL store, which another replica may have written alone).
    checkpoint_required: bool,
    /// The head of the last commit, not yet in the checkpoint (see [`Chain::anchor_later`]).
    pending: Option<Head>,
}

/// A committed head waiting to be written to the checkpoint.
#[derive(Debug)]
struct Head {
    store_id: String,
    seq: i64,
    hash: String,
    run_ended: bool,
}

/// A copy has the key and the checkpoint's place, never a head waiting to be written: only the
/// store that committed it writes it, so no copy can put an older head back later.
impl Clone for Chain {
    fn clone(&self) -> Chain {
        Chain::new(self.key.clone(), self.checkpoint.clone(), self.checkpoint_required)
    }
}

/// A head committed last is written before the chain goes with its store (a command that
/// commits and exits, or the daemon's last job). A copy has none to write.
impl Drop for Chain {
    fn drop(&mut self) {
        self.settle();
    }
}

impl Chain {
    pub fn new(key: ChainKey, checkpoint: Option<PathBuf>, checkpoint_required: bool) -> Chain {
        Chain {
            key,
            checkpoint,
            checkpoint_required,
            pending: None,
        }
    }

    /// The SQLite default: the key in `<store>.key` (made if missing) and the checkpoint in
    /// `<store>.head`, both beside the store.
    pub fn beside(store: &Path) -> Result<Chain, StoreError> {
        let key = ChainKey::load_or_create(&beside(store, ".key"))?;
        Ok(Chain::new(key, Some(beside(store, ".head")), true))
    }

    pub fn key_id(&self) -> &str {
        self.key.id()
    }

    pub fn checkpoint_path(&self) -> Option<&Path> {
        self.checkpoint.as_deref()
    }

    /// The MAC of a journal row, linking it to the one before.
    pub fn link(&self, prev: &str, seq: i64, at: &str, kind: &str, body: &str) -> String {
        self.key.mac(
            "baton/journal/v1",
            &[
                prev.as_bytes(),
                &seq.to_le_bytes(),
                at.as_bytes(),
                kind.as_bytes(),
                body.as_bytes(),
            ],
        )
    }

    fn outbox_parts(store_id: &str, id: i64, row: &Row) -> Vec<Vec<u8>> {
        let card = row
            .card
            .as_ref()
            .map(|c| serde_json::to_string(c).expect("a card is plain data and always serializes"))
            .unwrap_or_default();
        vec![
            store_id.as_bytes().to_vec(),
            id.to_le_bytes().to_vec(),
            row.room.platform.as_str().as_bytes().to_vec(),
            row.room.id.as_bytes().to_vec(),
            row.run.map(|r| r.0 as i64).unwrap_or(-1).to_le_bytes().to_vec(),
            row.lane.as_str().as_bytes().to_vec(),
            serde_json::to_string(&row.body)
                .expect("a message is plain data and always serializes")
                .into_bytes(),
            card.into_bytes(),
        ]
    }

    /// The MAC of an outbox row (its id included, so a row cannot be copied under another id).
    pub fn outbox_mac(&self, store_id: &str, id: i64, row: &Row) -> String {
        let parts = Chain::outbox_parts(store_id, id, row);
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        self.key.mac("baton/outbox/v1", &refs)
    }

    /// Whether an outbox row as read back is one this store's Baton wrote.
    pub fn outbox_genuine(&self, store_id: &str, id: i64, row: &Row, mac: Option<&str>) -> bool {
        let Some(mac) = mac else { return false };
        let parts = Chain::outbox_parts(store_id, id, row);
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        self.key.verify("baton/outbox/v1", &refs, mac)
    }

    /// The seal of a store whose first `legacy` rows predate keyed chains, the last of them
    /// with hash `legacy_head` (`GENESIS` when none).
    pub fn seal(&self, store_id: &str, legacy: i64, legacy_head: &str) -> String {
        let mac = self.key.mac(
            "baton/seal/v1",
            &[store_id.as_bytes(), &legacy.to_le_bytes(), legacy_head.as_bytes()],
        );
        format!("{legacy}:{mac}")
    }

    /// For `baton store seal`: checks the rows (all of them unkeyed when the store has no seal
    /// yet, as its seal says otherwise; the checkpoint left out, since adopting is what replaces
    /// it) and returns the seal to keep, the rows it counts as legacy, and the head.
    pub fn adoption(&self, store_id: &str, seal: Option<&str>, rows: Vec<ChainRow>) -> Result<Adoption, String> {
        let seal = match seal {
            Some(s) => s.to_string(),
            None => {
                let (n, head) = rows
                    .last()
                    .map(|r| (r.0, r.5.clone()))
                    .unwrap_or((0, GENESIS.to_string()));
                self.seal(store_id, n, &head)
            }
        };
        let report = self.report(store_id, Some(&seal), CheckpointRead::NotConfigured, rows);
        if !report.intact() {
            return Err(report.problems.join("; "));
        }
        Ok(Adoption {
            seal,
            legacy_rows: report.legacy_rows as i64,
            head_seq: report.head_seq,
            head: report.head,
        })
    }

    /// Notes the head of a commit for the checkpoint, which [`Chain::settle`] writes once the
    /// commit's answer has gone back: the daemon acts on a commit as soon as it is in the
    /// journal, and the checkpoint may lag the journal (never lead it) anyway. Heads noted
    /// before a settle collapse into the last one.
    pub fn anchor_later(&mut self, store_id: &str, seq: i64, hash: &str, run_ended: bool) {
        let run_ended = run_ended || self.pending.as_ref().is_some_and(|h| h.run_ended);
        self.pending = Some(Head {
            store_id: store_id.to_string(),
            seq,
            hash: hash.to_string(),
            run_ended,
        });
    }

    /// Writes the head noted by [`Chain::anchor_later`], if any (the store's thread calls it
    /// after each job, and dropping the chain with its store calls it last).
    pub fn settle(&mut self) {
        if let Some(h) = self.pending.take() {
            self.anchor(&h.store_id, h.seq, &h.hash, h.run_ended);
        }
    }

    /// Records the head outside the store now (and forgets a head noted earlier, which is
    /// older). A failure is logged, never fatal: the journal is committed already, and the
    /// next commit writes the checkpoint again. When a run ended in this commit the head is
    /// also logged, a second record outside the store (the log collector's) to compare with
    /// what `baton audit` prints.
    pub fn anchor(&mut self, store_id: &str, seq: i64, hash: &str, run_ended: bool) {
        self.pending = None;
        if run_ended {
            tracing::info!(store = store_id, seq, mac = hash, key = self.key.id(), "journal head");
        }
        let Some(path) = &self.checkpoint else { return };
        let mac = self.key.mac(
            "baton/checkpoint/v1",
            &[store_id.as_bytes(), &seq.to_le_bytes(), hash.as_bytes()],
        );
        let c = Checkpoint {
            store: store_id.to_string(),
            seq,
            hash: hash.to_string(),
            at: super::sqlite::millis(chrono::Utc::now()),
            mac,
        };
        let text = serde_json::to_string(&c).expect("a checkpoint is plain data and always serializes");
        // Written beside and renamed over, so a reader sees the old one or the new one. No
        // fsync: after a power cut the checkpoint may lag the journal (never lead it), which
        // is what the check allows.
        let tmp = beside(path, ".tmp");
        let written = std::fs::write(&tmp, text + "\n").and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::warn!(checkpoint = %path.display(), error = %e, "cannot write the journal's checkpoint");
        }
    }

    /// The checkpoint as read now (before the rows, so that a Baton committing meanwhile can
    /// only make the rows longer than the checkpoint, never shorter).
    pub fn read_checkpoint(&self) -> CheckpointRead {
        let Some(path) = &self.checkpoint else {
            return CheckpointRead::NotConfigured;
        };
        match std::fs::read_to_string(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CheckpointRead::Missing(path.clone()),
            Err(e) => CheckpointRead::Bad(format!("the checkpoint {} cannot be read: {e}", path.display())),
            Ok(text) => match serde_json::from_str::<Checkpoint>(text.trim()) {
                Ok(c) => CheckpointRead::Found(path.clone(), c.store, c.seq, c.hash, c.at, c.mac),
                Err(e) => CheckpointRead::Bad(format!(
                    "the checkpoint {} is not one Baton wrote ({e})",
                    path.display()
                )),
            },
        }
    }

    /// Verifies the rows (in `seq` order) against the seal, the key and the checkpoint read
    /// before them.
    pub fn report(
        &self,
        store_id: &str,
        seal: Option<&str>,
        checkpoint: CheckpointRead,
        rows: Vec<ChainRow>,
    ) -> ChainReport {
        let mut report = ChainReport {
            key_id: self.key.id().to_string(),
            ..ChainReport::default()
        };
        let mut problems = Vec::new();
        // Which rows predate the key, as the seal says (a seal must verify for its word to count).
        let legacy = match seal {
            None if rows.is_empty() => 0,
            None => {
                problems.push(
                    "the store has no seal: its journal predates keyed chains or the seal was removed; check it with `baton audit`, then adopt it with `baton store seal`"
                        .to_string(),
                );
                i64::MAX
            }
            Some(seal) => match seal
                .split_once(':')
                .and_then(|(n, mac)| Some((n.parse::<i64>().ok()?, mac)))
            {
                Some((n, mac)) if n >= 0 => {
                    let head = if n == 0 {
                        GENESIS.to_string()
                    } else {
                        rows.iter().find(|r| r.0 == n).map(|r| r.5.clone()).unwrap_or_default()
                    };
                    let expected = self.key.verify(
                        "baton/seal/v1",
                        &[store_id.as_bytes(), &n.to_le_bytes(), head.as_bytes()],
                        mac,
                    );
                    if !expected {
                        problems.push(format!(
                            "the store's seal does not verify with this key ({}): the key is not the store's, or the seal or the rows before it were edited",
                            self.key.id()
                        ));
                    }
                    n
                }
                _ => {
                    problems.push("the store's seal is not one Baton wrote".to_string());
                    0
                }
            },
        };
        report.legacy_rows = rows.iter().filter(|r| r.0 <= legacy).count();
        let (mut expected_seq, mut prev) = (1i64, GENESIS.to_string());
        for row in &rows {
            let (seq, at, kind, body, prev_hash, hash) = row;
            let seq = *seq;
            report.rows += 1;
            if seq != expected_seq {
                problems.push(if seq - 1 == expected_seq {
                    format!("row {expected_seq} is missing")
                } else {
                    format!("rows {expected_seq} to {} are missing", seq - 1)
                });
            }
            if *prev_hash != prev {
                problems.push(format!(
                    "row {seq} does not follow the row before it (rows removed, inserted or reordered)"
                ));
            }
            let genuine = if seq <= legacy {
                legacy_link(prev_hash, seq, at, kind, body) == *hash
            } else {
                self.key.verify(
                    "baton/journal/v1",
                    &[
                        prev_hash.as_bytes(),
                        &seq.to_le_bytes(),
                        at.as_bytes(),
                        kind.as_bytes(),
                        body.as_bytes(),
                    ],
                    hash,
                )
            };
            if !genuine {
                problems.push(format!(
                    "row {seq} ({kind}) was altered or written without the journal's key: its content does not match its MAC"
                ));
            }
            expected_seq = seq + 1;
            prev = hash.clone();
        }
        let last = rows.last().map(|r| (r.0, r.5.clone()));
        report.head_seq = last.as_ref().map(|l| l.0).unwrap_or(0);
        report.head = last
            .as_ref()
            .map(|l| l.1.clone())
            .unwrap_or_else(|| GENESIS.to_string());
        match checkpoint {
            CheckpointRead::NotConfigured => {}
            CheckpointRead::Missing(path) => {
                if last.is_some() {
                    let text = format!(
                        "no checkpoint at {}: nothing outside the store vouches for the journal's end, so a journal cut short or a lost WAL cannot be ruled out; if the checkpoint was moved on purpose, adopt the journal as it is with `baton store seal`",
                        path.display()
                    );
                    if self.checkpoint_required {
                        problems.push(text);
                    } else {
                        report.notes.push(text);
                    }
                }
            }
            CheckpointRead::Bad(why) => problems.push(why),
            CheckpointRead::Found(path, store, seq, hash, at, mac) => {
                let shown = path.display();
                let made = self.key.verify(
                    "baton/checkpoint/v1",
                    &[store.as_bytes(), &seq.to_le_bytes(), hash.as_bytes()],
                    &mac,
                );
                if !made {
                    problems.push(format!(
                        "the checkpoint {shown} was not written with this key ({})",
                        self.key.id()
                    ));
                } else if store != store_id {
                    problems.push(format!(
                        "the checkpoint {shown} belongs to another store ({store}, this one is {store_id})"
                    ));
                } else {
                    report.checkpoint_seq = Some(seq);
                    match rows.iter().find(|r| r.0 == seq) {
                        _ if seq == 0 => {}
                        None => problems.push(format!(
                            "the journal ends at row {} but the checkpoint {shown} says row {seq} was written (at {at}): rows were removed or lost (a journal cut short, or a lost WAL)",
                            report.head_seq
                        )),
                        Some(r) if r.5 != hash => problems.push(format!(
                            "row {seq} is not the row the checkpoint {shown} vouches for: the journal was rewritten"
                        )),
                        Some(_) => {}
                    }
                }
            }
        }
        if problems.len() > MAX_PROBLEMS {
            let more = problems.len() - MAX_PROBLEMS;
            problems.truncate(MAX_PROBLEMS);
            problems.push(format!("and {more} more problems"));
        }
        report.problems = problems;
        report
    }
}

/// How an outbox row whose MAC does not verify is marked: never posted.
pub const FORGED: &str = "forged: its MAC does not verify (not written by this store's Baton); not posted";

/// Logs an outbox row refused as forged: where it was to go, never its text.
pub fn refuse_forged(q: &crate::outbox::Queued) {
    tracing::error!(
        id = q.id,
        room = %q.row.room,
        "an undelivered message in the store was not written by Baton (its MAC does not verify): not posted; `baton audit` lists it"
    );
}

/// What [`Chain::adoption`] decided.
#[derive(Debug)]
pub struct Adoption {
    pub seal: String,
    pub legacy_rows: i64,
    pub head_seq: i64,
    pub head: String,
}

/// What [`Chain::read_checkpoint`] found.
#[derive(Debug)]
pub enum CheckpointRead {
    NotConfigured,
    Missing(PathBuf),
    Bad(String),
    /// Path, store id, seq, hash, time written, MAC.
    Found(PathBuf, String, i64, String, String, String),
}

/// `baton.sqlite` -> `baton.sqlite<suffix>`.
pub fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> ChainKey {
        ChainKey::new(SecretString::from(text.to_string())).expect("long enough")
    }

    fn rows(chain: &Chain, n: i64) -> Vec<ChainRow> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let (at, kind, body) = ("2026-12-01T00:00:00.000Z", "expired", format!("{{\"run\":{seq}}}"));
                let hash = chain.link(&prev, seq, at, kind, &body);
                let row = (seq, at.to_string(), kind.to_string(), body, prev.clone(), hash.clone());
                prev = hash;
                row
            })
            .collect()
    }

    #[test]
    fn short_keys_are_refused_without_being_quoted() {
        let err = ChainKey::new(SecretString::from("hunter2-hunter2".to_string())).expect_err("too short");
        assert!(err.contains("at least 32") && !err.contains("hunter2"), "{err}");
        let k = key("0123456789abcdef0123456789abcdef");
        assert!(k.id().starts_with("k:") && k.id().len() == 14, "{}", k.id());
        assert!(!format!("{k:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn a_keyed_chain_verifies_only_under_its_key() {
        let chain = Chain::new(key("a-key-of-thirty-two-characters!!"), None, false);
        let rows = rows(&chain, 3);
        let seal = chain.seal("s1", 0, GENESIS);
        let report = chain.report("s1", Some(&seal), CheckpointRead::NotConfigured, rows.clone());
        assert!(report.intact(), "{:?}", report.problems);
        assert_eq!((report.rows, report.head_seq, report.legacy_rows), (3, 3, 0));
        let other = Chain::new(key("another-key-of-thirty-two-chars!"), None, false);
        let report = other.report("s1", Some(&seal), CheckpointRead::NotConfigured, rows.clone());
        assert!(
            report.problems[0].contains("seal does not verify"),
            "{:?}",
            report.problems
        );
        assert_eq!(report.problems.len(), 4, "the seal and each row: {:?}", report.problems);
        // A seal for another store does not transfer.
        let report = chain.report("s2", Some(&seal), CheckpointRead::NotConfigured, rows);
        assert!(!report.intact());
    }

    #[test]
    fn a_forged_row_with_a_recomputed_unkeyed_hash_is_named() {
        let chain = Chain::new(key("a-key-of-thirty-two-characters!!"), None, false);
        let mut rows = rows(&chain, 2);
        let prev = rows[1].5.clone();
        let body = r#"{"approved":{"run":1,"by":"xmpp:mallory@contoso.com"}}"#.to_string();
        let forged = legacy_link(&prev, 3, "2026-12-01T00:00:01.000Z", "approved", &body);
        rows.push((
            3,
            "2026-12-01T00:00:01.000Z".into(),
            "approved".into(),
            body,
            prev,
            forged,
        ));
        let seal = chain.seal("s1", 0, GENESIS);
        let report = chain.report("s1", Some(&seal), CheckpointRead::NotConfigured, rows);
        assert_eq!(
            report.problems,
            ["row 3 (approved) was altered or written without the journal's key: its content does not match its MAC"]
        );
    }

    #[test]
    fn legacy_rows_verify_unkeyed_up_to_the_seal_and_the_seal_pins_them() {
        let chain = Chain::new(key("a-key-of-thirty-two-characters!!"), None, false);
        let mut legacy = Vec::new();
        let mut prev = GENESIS.to_string();
        for seq in 1..=2i64 {
            let hash = legacy_link(&prev, seq, "t", "expired", "{}");
            legacy.push((
                seq,
                "t".to_string(),
                "expired".to_string(),
                "{}".to_string(),
                prev.clone(),
                hash.clone(),
            ));
            prev = hash;
        }
        let keyed = chain.link(&prev, 3, "t", "expired", "{}");
        legacy.push((3, "t".into(), "expired".into(), "{}".into(), prev.clone(), keyed));
        let seal = chain.seal("s1", 2, &prev);
        let report = chain.report("s1", Some(&seal), CheckpointRead::NotConfigured, legacy.clone());
        assert!(report.intact(), "{:?}", report.problems);
        assert_eq!(report.legacy_rows, 2);
        // Without a seal the rows are not trusted.
        let report = chain.report("s1", None, CheckpointRead::NotConfigured, legacy.clone());
        assert!(report.problems[0].contains("no seal"), "{:?}", report.problems);
        // A seal claiming every row is legacy does not verify (rewriting the whole journal
        // unkeyed is therefore caught too).
        let forged = format!("3:{}", &seal[2..]);
        let report = chain.report("s1", Some(&forged), CheckpointRead::NotConfigured, legacy);
        assert!(
            report.problems.iter().any(|p| p.contains("seal does not verify")),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn the_checkpoint_catches_a_journal_cut_short_and_a_rewritten_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let head = dir.path().join("b.sqlite.head");
        let mut chain = Chain::new(key("a-key-of-thirty-two-characters!!"), Some(head.clone()), true);
        let all = rows(&chain, 5);
        let seal = chain.seal("s1", 0, GENESIS);
        chain.anchor("s1", 5, &all[4].5, false);
        let report = chain.report("s1", Some(&seal), chain.read_checkpoint(), all.clone());
        assert!(
            report.intact() && report.checkpoint_seq == Some(5),
            "{:?}",
            report.problems
        );
        let cut = all[..3].to_vec();
        let report = chain.report("s1", Some(&seal), chain.read_checkpoint(), cut);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(
            report.problems[0].starts_with("the journal ends at row 3 but the checkpoint")
                && report.problems[0].contains("says row 5 was written"),
            "{:?}",
            report.problems
        );
        // A checkpoint edited by hand to match a shorter journal does not verify.
        let text = std::fs::read_to_string(&head).expect("reads");
        std::fs::write(&head, text.replace("\"seq\":5", "\"seq\":3")).expect("edits");
        let report = chain.report("s1", Some(&seal), chain.read_checkpoint(), all.clone());
        assert!(
            report.problems[0].contains("was not written with this key"),
            "{:?}",
            report.problems
        );
        std::fs::remove_file(&head).expect("removes");
        let report = chain.report("s1", Some(&seal), chain.read_checkpoint(), all.clone());
        assert!(
            report.problems[0].starts_with("no checkpoint at"),
            "{:?}",
            report.problems
        );
        let optional = Chain::new(key("a-key-of-thirty-two-characters!!"), Some(head), false);
        let report = optional.report("s1", Some(&seal), optional.read_checkpoint(), all);
        assert!(report.intact() && report.notes.len() == 1, "{report:?}");
    }

    #[test]
    fn a_wrong_key_lists_a_bounded_number_of_problems() {
        let chain = Chain::new(key("a-key-of-thirty-two-characters!!"), None, false);
        let other = Chain::new(key("another-key-of-thirty-two-chars!"), None, false);
        let report = other.report(
            "s1",
            Some(&chain.seal("s1", 0, GENESIS)),
            CheckpointRead::NotConfigured,
            rows(&chain, 100),
        );
        assert_eq!(report.problems.len(), MAX_PROBLEMS + 1);
        assert_eq!(report.problems.last().map(String::as_str), Some("and 81 more problems"));
    }

    #[test]
    fn a_key_file_is_made_private_once_and_then_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.sqlite.key");
        let made = ChainKey::load_or_create(&path).expect("makes");
        let again = ChainKey::load_or_create(&path).expect("reads");
        assert_eq!(made.id(), again.id(), "the same key the second time");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let missing = ChainKey::load(&dir.path().join("nope.key")).expect_err("missing");
        assert!(missing.to_string().contains("nope.key"), "{missing}");
        std::fs::write(dir.path().join("short.key"), "hunter2\n").expect("writes");
        let short = ChainKey::load(&dir.path().join("short.key")).expect_err("short");
        assert!(!short.to_string().contains("hunter2"), "{short}");
    }
}

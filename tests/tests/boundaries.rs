//! Crate boundaries, checked against `cargo metadata`: the runbook model and the approval policy
//! link no runtime, network, TLS or database crate, and the agent links none of the bot's
//! executors, the PKI generator or the Lync simulator. The build enforces the boundaries (a crate
//! cannot name what it does not depend on); this test keeps anyone from quietly adding such a
//! dependency.
//!
//! The dependency graph is the resolved one for the platforms Baton builds for: this machine's
//! and `x86_64-pc-windows-gnu` (the agent's Windows service build). Only normal dependencies
//! count, followed transitively; dev and build dependencies are not linked into the crate.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::process::Command;

/// What a pure crate may not link: a runtime, sockets, HTTP, TLS, a database, DNS, certificates.
const NO_IO: &[&str] = &[
    "tokio",
    "hyper",
    "rustls",
    "tokio-rustls",
    "rusqlite",
    "hickory-proto",
    "rcgen",
    "mio",
    "socket2",
];

/// Each crate, and the crates that may not be among its transitive normal dependencies.
const RULES: &[(&str, &[&str])] = &[
    ("baton-runbook", NO_IO),
    ("baton-policies", NO_IO),
    (
        "baton-agent",
        &[
            "baton",
            "baton-actions",
            "baton-pki",
            "baton-lync-sim",
            "hickory-proto",
            "quick-xml",
            "rcgen",
        ],
    ),
];

/// The platform this test runs on, as `rustc -vV` names it.
fn host_triple() -> Result<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .with_context(|| format!("running {rustc} -vV"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{rustc} -vV names no host"))
}

/// The workspace's `cargo metadata`, resolved for this machine and the Windows build.
fn metadata() -> Result<Value> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = Command::new(&cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--manifest-path",
            manifest,
        ])
        .args(["--filter-platform", &host_triple()?])
        .args(["--filter-platform", "x86_64-pc-windows-gnu"])
        .output()
        .with_context(|| format!("running {cargo} metadata"))?;
    if !out.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).context("reading cargo metadata's JSON")
}

/// For each crate of `forbidden` among `root`'s transitive normal dependencies, one shortest
/// chain that brings it in (`baton-runbook -> serde -> tokio`).
fn forbidden_chains(metadata: &Value, root: &str, forbidden: &[&str]) -> Result<Vec<String>> {
    let packages = metadata["packages"]
        .as_array()
        .ok_or_else(|| anyhow!("metadata lists no packages"))?;
    let name_of: BTreeMap<&str, &str> = packages
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let members = metadata["workspace_members"]
        .as_array()
        .ok_or_else(|| anyhow!("metadata lists no workspace members"))?;
    let root_id = members
        .iter()
        .filter_map(Value::as_str)
        .find(|id| name_of.get(id) == Some(&root))
        .ok_or_else(|| anyhow!("{root} is not a workspace member"))?;
    // Package id -> its normal dependencies (on any of the filtered platforms).
    let mut normal: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let nodes = metadata["resolve"]["nodes"]
        .as_array()
        .ok_or_else(|| anyhow!("metadata has no resolved graph"))?;
    for node in nodes {
        let id = node["id"].as_str().ok_or_else(|| anyhow!("a node without an id"))?;
        let deps = node["deps"].as_array().map(Vec::as_slice).unwrap_or_default();
        let linked = deps.iter().filter(|d| {
            d["dep_kinds"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null()))
        });
        normal.insert(id, linked.filter_map(|d| d["pkg"].as_str()).collect());
    }
    // Breadth first, so the chain reported is a shortest one.
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([root_id]);
    let mut chains = Vec::new();
    while let Some(id) = queue.pop_front() {
        let name = name_of.get(id).copied().unwrap_or(id);
        if id != root_id && forbidden.contains(&name) {
            let mut chain = vec![name];
            let mut at = id;
            while let Some(&p) = parent.get(at) {
                chain.push(name_of.get(p).copied().unwrap_or(p));
                at = p;
            }
            chain.reverse();
            chains.push(chain.join(" -> "));
        }
        for &dep in normal.get(id).map(Vec::as_slice).unwrap_or_default() {
            if dep != root_id && !parent.contains_key(dep) {
                parent.insert(dep, id);
                queue.push_back(dep);
            }
        }
    }
    chains.sort();
    Ok(chains)
}

#[test]
fn pure_crates_and_the_agent_link_only_what_they_may() -> Result<()> {
    let metadata = metadata()?;
    let mut violations = Vec::new();
    for (root, forbidden) in RULES {
        violations.extend(forbidden_chains(&metadata, root, forbidden)?);
    }
    assert!(
        violations.is_empty(),
        "forbidden dependencies:\n  {}",
        violations.join("\n  ")
    );
    Ok(())
}

/// The check above can fail: on the same graph it names the forbidden crates of a crate that
/// does link them, and it ignores dev dependencies.
#[test]
fn the_check_names_the_offending_crates() -> Result<()> {
    let metadata = metadata()?;
    assert_eq!(
        forbidden_chains(&metadata, "baton-actions", &["tokio", "hickory-proto", "rcgen"])?,
        ["baton-actions -> hickory-proto", "baton-actions -> tokio"]
    );
    assert_eq!(
        forbidden_chains(&metadata, "baton-agent", &["baton-runbook", "serde"])?,
        ["baton-agent -> baton-runbook", "baton-agent -> serde"]
    );
    // baton-runbook's tests use expect-test, and baton-tls's tests use baton-pki (rcgen): dev
    // dependencies, not linked.
    assert!(forbidden_chains(&metadata, "baton-runbook", &["expect-test"])?.is_empty());
    assert!(forbidden_chains(&metadata, "baton-tls", &["baton-pki", "rcgen"])?.is_empty());
    // A dependency of a dependency is found, with the chain that brings it in.
    let chains = forbidden_chains(&metadata, "baton-agent", &["mio"])?;
    assert_eq!(chains.len(), 1, "{chains:?}");
    assert!(
        chains[0].starts_with("baton-agent -> ") && chains[0].ends_with(" -> mio"),
        "{chains:?}"
    );
    Ok(())
}

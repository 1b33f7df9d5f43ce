//! Build script: records the git commit this binary is built from as `BATON_GIT_COMMIT`, for
//! `--version`, the build-info metric and the agents' health answers (baton-agent builds with this script too). The commit comes from
//! `git rev-parse --short HEAD` when the sources are a git checkout, else from the
//! `BATON_GIT_COMMIT` environment variable (the Dockerfile passes it: its build context has no
//! `.git`), else it is "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// A commit name as it may appear in a version line: short, and nothing but [0-9A-Za-z._-].
fn plausible(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

fn main() {
    println!("cargo:rerun-if-env-changed=BATON_GIT_COMMIT");
    let from_git = git(&["rev-parse", "--short", "HEAD"]).filter(|c| plausible(c));
    if from_git.is_some() {
        // Build again when HEAD moves: to another branch, or to a new commit on this one.
        let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
        watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
        for name in watched {
            if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    let commit = from_git
        .or_else(|| std::env::var("BATON_GIT_COMMIT").ok().filter(|c| plausible(c)))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=BATON_GIT_COMMIT={commit}");
}

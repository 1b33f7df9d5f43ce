//! Build script: records the git commit this binary is built from as `BATON_GIT_COMMIT`, for
//! `--version`, the build-info metric and the agents' health answers (baton-agent builds with this script too). The commit comes from
//! `git rev-parse --short HEAD` when the sources are a git checkout, else from the
//! `BATON_GIT_COMMIT` environment variable (the Dockerfile passes it: its build context has no
//! `.git`), else it is "unknown". For the release `baton` it also sets the link layout
//! ([`link_layout`]: the symbol order and packed relocations).

use std::process::Command;

/// What `program args` prints, trimmed, when it succeeds and prints something.
fn stdout_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn git(args: &[&str]) -> Option<String> {
    stdout_of("git", args)
}

/// The minor number of a version "<major>.<minor>[.…]" whose major is `major`.
fn minor_of(version: &str, major: &str) -> Option<u32> {
    let mut parts = version.split('.');
    (parts.next()? == major).then_some(())?;
    parts.next()?.parse().ok()
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
        // Only files that exist: cargo takes a missing one as changed, and would run this
        // script and build the crate again every time (a repository without packed refs).
        for name in watched {
            if let Some(path) = git(&["rev-parse", "--git-path", &name])
                && std::path::Path::new(&path).exists()
            {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    let commit = from_git
        .or_else(|| std::env::var("BATON_GIT_COMMIT").ok().filter(|c| plausible(c)))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=BATON_GIT_COMMIT={commit}");
    if std::env::var("CARGO_PKG_NAME").as_deref() == Ok("baton") {
        link_layout();
    }
}

/// The release `baton`'s code layout: the functions a run executes are linked first, side by
/// side, so that the pages a run touches are few (see `symbol-order.txt` and
/// `scripts/order-symbols.sh`, which writes it). Only where the linker is LLD (rustc's default
/// linker for x86_64-unknown-linux-gnu since Rust 1.90, unless a build chooses its linker);
/// elsewhere the layout is the linker's own. Names the file lists that a build lacks are
/// skipped. `BATON_LINK_MAP=<path>` also writes the linker's map there (the script reads the
/// names of a build from it); `BATON_NO_SYMBOL_ORDER=1` links without the order. Packs the
/// relative relocations too, where the binary runs on the glibc it is built with (2.36 or
/// later); `BATON_NO_PACKED_RELOCS=1` leaves them unpacked.
fn link_layout() {
    if std::env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    println!("cargo:rerun-if-env-changed=BATON_LINK_MAP");
    println!("cargo:rerun-if-env-changed=BATON_NO_SYMBOL_ORDER");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let order = std::path::Path::new(&dir).join("symbol-order.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    // A linker chosen by hand (`-C linker`, `-C link-arg`, `-C linker-features`, or cargo's
    // linker setting) may not be LLD: it links without the order.
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    let chosen = std::env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|f| f.contains("link"))
        || std::env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some();
    let lld = std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu")
        && !chosen
        && rustc_minor().is_some_and(|minor| minor >= 90);
    if !lld {
        return;
    }
    if let Ok(map) = std::env::var("BATON_LINK_MAP") {
        println!("cargo:rustc-link-arg-bin=baton=-Wl,-Map={map}");
    }
    if order.is_file() && std::env::var_os("BATON_NO_SYMBOL_ORDER").is_none() {
        println!(
            "cargo:rustc-link-arg-bin=baton=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=baton=-Wl,--no-warn-symbol-ordering");
    }
    // Relative relocations packed (DT_RELR): the loader then reads a few KiB of them instead of
    // the 0.8 MiB `.rela.dyn` it reads whole at every start. The binary then needs glibc 2.36 or
    // later, so only a build for the machine it runs on, whose glibc has it, packs them.
    println!("cargo:rerun-if-env-changed=BATON_NO_PACKED_RELOCS");
    let native = std::env::var("HOST").ok() == std::env::var("TARGET").ok();
    if native
        && host_glibc_minor().is_some_and(|minor| minor >= 36)
        && std::env::var_os("BATON_NO_PACKED_RELOCS").is_none()
    {
        println!("cargo:rustc-link-arg-bin=baton=-Wl,-z,pack-relative-relocs");
    }
}

/// The minor version of the build machine's glibc (`getconf GNU_LIBC_VERSION`: "glibc 2.36").
fn host_glibc_minor() -> Option<u32> {
    let text = stdout_of("getconf", &["GNU_LIBC_VERSION"])?;
    minor_of(text.strip_prefix("glibc ")?, "2")
}

/// The minor version of the compiler building this (`rustc 1.95.0 (...)` gives 95).
fn rustc_minor() -> Option<u32> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let text = stdout_of(&rustc, &["--version"])?;
    minor_of(text.split_whitespace().nth(1)?, "1")
}

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
/// `scripts/order-symbols.sh`, which writes it). The order needs LLD:
///
/// - x86_64-unknown-linux-gnu: rustc's default linker since Rust 1.90; the order is
///   `symbol-order.txt`;
/// - x86_64-unknown-linux-musl (the static binary of the container image): rustc links it with
///   `cc` and GNU ld, so the release `baton` is linked with rustc's own LLD instead (the
///   `gcc-ld/ld.lld` of its sysroot, as rustc does for the gnu target); the order is
///   `symbol-order.musl.txt`, since the two builds name their functions differently.
///
/// Elsewhere, or where a build chooses its linker, the layout is the linker's own. Names the
/// file lists that a build lacks are skipped. `BATON_LINK_MAP=<path>` also writes the linker's
/// map there (the script reads the names of a build from it); `BATON_NO_SYMBOL_ORDER=1` links
/// without the order. Packs the relative relocations too, where the binary relocates itself
/// (static musl) or runs on the glibc it is built with (2.36 or later);
/// `BATON_NO_PACKED_RELOCS=1` leaves them unpacked.
fn link_layout() {
    if std::env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    println!("cargo:rerun-if-env-changed=BATON_LINK_MAP");
    println!("cargo:rerun-if-env-changed=BATON_NO_SYMBOL_ORDER");
    println!("cargo:rerun-if-env-changed=BATON_NO_PACKED_RELOCS");
    let target = std::env::var("TARGET").unwrap_or_default();
    let (file, musl) = match target.as_str() {
        "x86_64-unknown-linux-gnu" => ("symbol-order.txt", false),
        "x86_64-unknown-linux-musl" => ("symbol-order.musl.txt", true),
        _ => return,
    };
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let order = std::path::Path::new(&dir).join(file);
    // Without the file yet, its folder: cargo takes a missing file as changed every time.
    let watched = if order.is_file() {
        order.as_path()
    } else {
        std::path::Path::new(&dir)
    };
    println!("cargo:rerun-if-changed={}", watched.display());
    // A linker chosen by hand (`-C linker`, `-C link-arg`, `-C linker-features`, or cargo's
    // linker setting) may not be LLD: it links without the order.
    let linker_var = format!("CARGO_TARGET_{}_LINKER", target.to_uppercase().replace('-', "_"));
    println!("cargo:rerun-if-env-changed={linker_var}");
    let chosen = std::env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|f| f.contains("link"))
        || std::env::var_os(&linker_var).is_some();
    if chosen || rustc_minor().is_none_or(|minor| minor < 90) {
        return;
    }
    if musl {
        let Some(gcc_ld) = rust_lld_dir() else {
            return;
        };
        println!("cargo:rustc-link-arg-bin=baton=-B{}", gcc_ld.display());
        println!("cargo:rustc-link-arg-bin=baton=-fuse-ld=lld");
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
    // Relative relocations packed (DT_RELR): the program is relocated from a few KiB of them
    // instead of the 0.8 MiB `.rela.dyn` read whole at every start. A static musl binary
    // relocates itself (musl 1.2.4 and later, which rustc has bundled since before 1.90). A
    // dynamic glibc one needs glibc 2.36 or later where it runs, so only a build for the machine
    // it runs on, whose glibc has it, packs them.
    let native = std::env::var("HOST").ok() == std::env::var("TARGET").ok();
    let packable = musl || (native && host_glibc_minor().is_some_and(|minor| minor >= 36));
    if packable && std::env::var_os("BATON_NO_PACKED_RELOCS").is_none() {
        println!("cargo:rustc-link-arg-bin=baton=-Wl,-z,pack-relative-relocs");
    }
}

/// The folder of rustc's `ld.lld` for `cc -fuse-ld=lld` (`<sysroot>/lib/rustlib/<host>/bin/gcc-ld`,
/// which runs the sysroot's `rust-lld`), if this toolchain has one.
fn rust_lld_dir() -> Option<std::path::PathBuf> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = stdout_of(&rustc, &["--print", "sysroot"])?;
    let host = std::env::var("HOST").ok()?;
    let dir = std::path::Path::new(&sysroot)
        .join("lib/rustlib")
        .join(host)
        .join("bin/gcc-ld");
    dir.join("ld.lld").is_file().then_some(dir)
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

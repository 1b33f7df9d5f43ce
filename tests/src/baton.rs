//! Runs the real `baton` binary for end-to-end tests: locates the built binaries, drives
//! `baton demo` through its stdin, collects its stdout line by line, and kills it with SIGKILL
//! for crash tests. Every wait is bounded.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A binary of the workspace, built next to the test executable (`target/<profile>/<name>`).
/// The test script builds them first (`cargo build --workspace --bins`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests",
        path.display()
    );
    path
}

/// A running `baton` process with its stdout collected.
pub struct Baton {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(reader: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            match line {
                Ok(l) => into.lock().unwrap_or_else(|p| p.into_inner()).push(l),
                Err(_) => return,
            }
        }
    });
}

impl Baton {
    /// Starts `baton <args>` with piped stdin/stdout/stderr. Its log filter is `warn`, or
    /// `$BATON_TEST_LOG` when set (e.g. `info,baton=debug` to see a failing test's story).
    pub fn start(args: &[&str]) -> anyhow::Result<Baton> {
        Baton::start_logging(args, &std::env::var("BATON_TEST_LOG").unwrap_or_else(|_| "warn".into()))
    }

    /// Starts `baton <args>` with this log filter (`RUST_LOG`).
    pub fn start_logging(args: &[&str], filter: &str) -> anyhow::Result<Baton> {
        let mut child = Command::new(bin("baton"))
            .args(args)
            .env("RUST_LOG", filter)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting baton")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().context("stdout is piped")?, lines.clone());
        collect(child.stderr.take().context("stderr is piped")?, stderr.clone());
        let stdin = child.stdin.take();
        Ok(Baton {
            child,
            stdin,
            lines,
            stderr,
        })
    }

    /// Starts `baton demo --store STORE <extra>`.
    pub fn demo(store: &Path, extra: &[&str]) -> anyhow::Result<Baton> {
        let store = store.to_str().context("the store path is UTF-8")?;
        let mut args = vec!["demo", "--store", store];
        args.extend_from_slice(extra);
        Baton::start(&args)
    }

    /// Sends one chat line.
    pub fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// Ends the input: the demo exits once its runs have finished.
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// The process id (for /proc readings such as resident memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
    }

    /// Waits until a stdout line contains `needle`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.lines().iter().any(|l| l.contains(needle)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!(
            "no line with {needle:?} within {timeout:?}; stdout:\n{}\nstderr:\n{}",
            self.lines().join("\n"),
            self.stderr()
        )
    }

    /// SIGKILL: no chance to clean up, as in a crash or a power cut.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(50));
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.kill9();
                bail!(
                    "baton did not exit within {timeout:?}; stdout:\n{}\nstderr:\n{}",
                    self.lines().join("\n"),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Baton {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `baton <args>` to completion with no input; returns (status, stdout, stderr).
pub fn run(args: &[&str], timeout: Duration) -> anyhow::Result<(ExitStatus, String, String)> {
    let mut b = Baton::start(args)?;
    b.close_stdin();
    let status = b.wait_exit(timeout)?;
    Ok((status, b.lines().join("\n"), b.stderr()))
}

/// Counts executions per idempotency key in the simulated executor's record.
pub fn executions(record: &Path) -> anyhow::Result<Vec<(String, i64)>> {
    let conn = rusqlite::Connection::open(record)?;
    let mut stmt = conn.prepare("SELECT key, COUNT(*) FROM executions GROUP BY key ORDER BY key")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

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
/// The test script builds them first (`cargo build --workspace --bins`). `BATON_BIN` names
/// another `baton` to start instead (the benchmarks measure the static musl build with it).
pub fn bin(name: &str) -> PathBuf {
    // Another build of the bot, e.g. the static one the image ships:
    // BATON_BIN=target/x86_64-unknown-linux-musl/release/baton cargo bench ...
    if name == "baton"
        && let Some(path) = std::env::var_os("BATON_BIN")
    {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "BATON_BIN={} is not a file", path.display());
        return path;
    }
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
    /// When each stdout line was read (benchmarks time the bot's lines by it).
    arrived: Arc<Mutex<Vec<Instant>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(
    reader: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
    arrived: Option<Arc<Mutex<Vec<Instant>>>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            match line {
                Ok(l) => {
                    let at = Instant::now();
                    let mut lines = into.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(arrived) = &arrived {
                        arrived.lock().unwrap_or_else(|p| p.into_inner()).push(at);
                    }
                    lines.push(l);
                }
                Err(_) => return,
            }
        }
    });
}

impl Baton {
    /// Starts `baton <args>` with piped stdin/stdout/stderr. Its log filter is `warn`, or
    /// `$BATON_TEST_LOG` when set (e.g. `info,baton=debug` to see a failing test's story).
    pub fn start(args: &[&str]) -> anyhow::Result<Baton> {
        Baton::spawn(
            args,
            Some(std::env::var("BATON_TEST_LOG").unwrap_or_else(|_| "warn".into())),
        )
    }

    /// Starts `baton <args>` with the log filter `filter` (e.g. `debug` to check what the logs
    /// never contain).
    pub fn start_logging(args: &[&str], filter: &str) -> anyhow::Result<Baton> {
        Baton::spawn(args, Some(filter.to_string()))
    }

    /// Starts `baton <args>` without `RUST_LOG`, so that the configuration's `[log]` applies.
    pub fn start_with_config_logs(args: &[&str]) -> anyhow::Result<Baton> {
        Baton::spawn(args, None)
    }

    fn spawn(args: &[&str], rust_log: Option<String>) -> anyhow::Result<Baton> {
        let mut command = Command::new(bin("baton"));
        command.args(args);
        match rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting baton")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(
            child.stdout.take().context("stdout is piped")?,
            lines.clone(),
            Some(arrived.clone()),
        );
        collect(child.stderr.take().context("stderr is piped")?, stderr.clone(), None);
        let stdin = child.stdin.take();
        Ok(Baton {
            child,
            stdin,
            lines,
            arrived,
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

    /// The stdout lines so far, each with the moment the harness read it.
    pub fn timed_lines(&self) -> Vec<(Instant, String)> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let arrived = self.arrived.lock().unwrap_or_else(|p| p.into_inner());
        arrived.iter().copied().zip(lines.iter().cloned()).collect()
    }

    /// The stderr lines so far (the logs).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone()
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

    /// Waits until a stderr (log) line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr_lines().iter().any(|l| l.contains(needle)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!(
            "no log line with {needle:?} within {timeout:?}; stderr:\n{}",
            self.stderr()
        )
    }

    /// SIGTERM: what `docker stop` and systemd send.
    pub fn terminate(&self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill")?;
        anyhow::ensure!(status.success(), "kill -TERM failed: {status}");
        Ok(())
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

/// Waits (at most `timeout`) until every message the store's outbox holds is recorded as
/// delivered: a crash after that point tests resuming, not the instant between posting a
/// message and recording it (delivery is at least once; that instant may repeat one line).
pub fn wait_outbox_recorded(store: &Path, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let conn = rusqlite::Connection::open_with_flags(store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let waiting: i64 = conn.query_row("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL", [], |r| {
            r.get(0)
        })?;
        if waiting == 0 {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!("{waiting} outbox rows still unrecorded after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Counts executions per idempotency key in the simulated executor's record.
pub fn executions(record: &Path) -> anyhow::Result<Vec<(String, i64)>> {
    let conn = rusqlite::Connection::open(record)?;
    let mut stmt = conn.prepare("SELECT key, COUNT(*) FROM executions GROUP BY key ORDER BY key")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The keys of the simulated executor's record that started and have not ended (`ok = -1`):
/// actions in flight, or cut short by a crash.
pub fn started_not_ended(record: &Path) -> anyhow::Result<Vec<String>> {
    if !record.exists() {
        return Ok(Vec::new());
    }
    let conn = rusqlite::Connection::open_with_flags(record, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mut stmt = conn.prepare("SELECT key FROM executions WHERE ok = -1 ORDER BY id")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Waits (at most `timeout`) until the simulated executor's record shows an action in flight.
pub fn wait_action_in_flight(record: &Path, timeout: Duration) -> anyhow::Result<Vec<String>> {
    let started = Instant::now();
    loop {
        let keys = started_not_ended(record)?;
        if !keys.is_empty() {
            return Ok(keys);
        }
        if started.elapsed() > timeout {
            bail!("no simulated action in flight within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

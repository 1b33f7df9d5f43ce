//! Runs one executor process: no shell, parameters on stdin and in the environment, a hard
//! deadline at which the process and all its children are killed (a process group on Unix, a
//! Job Object on Windows), and bounded tails of its output.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Exactly what is started: the program, its arguments, the variables added to the agent's
/// environment, and what is written to its standard input (`None`: no input at all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
}

/// How the process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    /// Ended by a signal (Unix) without an exit code.
    Signal(Option<i32>),
    /// Killed, with its children, at the deadline.
    TimedOut,
    /// Could not be started at all.
    SpawnFailed(String),
}

/// The end of a stream: at most `limit` bytes are kept, the oldest are dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tail {
    bytes: Vec<u8>,
    limit: usize,
    dropped: u64,
}

impl Tail {
    pub fn new(limit: usize) -> Tail {
        Tail {
            bytes: Vec::new(),
            limit,
            dropped: 0,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        if self.bytes.len() > self.limit {
            let cut = self.bytes.len() - self.limit;
            self.bytes.drain(..cut);
            self.dropped += cut as u64;
        }
    }

    /// The last non-empty line, trimmed.
    pub fn last_line(&self) -> Option<String> {
        String::from_utf8_lossy(&self.bytes)
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .map(str::to_string)
    }

    /// At most the last `max` bytes as text, marked when cut.
    pub fn text(&self, max: usize) -> String {
        let start = self.bytes.len().saturating_sub(max);
        let text = String::from_utf8_lossy(&self.bytes[start..]).into_owned();
        if start > 0 || self.dropped > 0 {
            format!("…{text}")
        } else {
            text
        }
    }
}

/// Everything known about a finished process.
#[derive(Clone, Debug)]
pub struct Finished {
    pub exit: Exit,
    pub stdout: Tail,
    pub stderr: Tail,
    pub elapsed: Duration,
    pub pid: Option<u32>,
}

/// Bytes of standard output kept (the result is its last line).
pub const STDOUT_KEPT: usize = 64 * 1024;
/// Bytes of standard error kept.
pub const STDERR_KEPT: usize = 8 * 1024;
/// How long the output pipes may stay open after the process has ended or been killed.
const DRAIN: Duration = Duration::from_secs(2);

/// Owns the process tree: killing it kills the process and every descendant still in its
/// group (Unix) or job (Windows). Dropping it kills them too, so a cancelled run leaves nothing.
struct Tree {
    #[cfg(unix)]
    pgid: Option<i32>,
    #[cfg(windows)]
    job: Option<crate::windows::Job>,
}

impl Tree {
    fn adopt(child: &tokio::process::Child) -> Tree {
        #[cfg(unix)]
        {
            Tree {
                pgid: child.id().and_then(|p| i32::try_from(p).ok()),
            }
        }
        #[cfg(windows)]
        {
            let job = crate::windows::Job::new().and_then(|job| child.raw_handle().map(|h| (job, h))).and_then(|(job, h)| {
                match job.assign(h) {
                    Ok(()) => Some(job),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot put the action's process in a job object; only it will be killed");
                        None
                    }
                }
            });
            Tree { job }
        }
    }

    fn kill(&self) {
        #[cfg(unix)]
        if let Some(pgid) = self.pgid {
            // SAFETY: kill(2) with a negative pid signals the process group the child leads
            // (it was started with process_group(0)); it touches no memory.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        #[cfg(windows)]
        if let Some(job) = &self.job {
            job.terminate();
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn read_into(stream: Option<impl AsyncRead + Unpin>, limit: usize) -> Tail {
    let mut tail = Tail::new(limit);
    let Some(mut stream) = stream else { return tail };
    let mut buf = vec![0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return tail,
            Ok(n) => tail.push(&buf[..n]),
        }
    }
}

/// Starts `inv` and waits until it ends or `timeout` passes; then the whole tree is killed.
pub async fn run(inv: &Invocation, timeout: Duration) -> Finished {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(&inv.program);
    cmd.args(&inv.args)
        .envs(inv.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(if inv.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    #[cfg(windows)]
    cmd.creation_flags(crate::windows::CREATE_NO_WINDOW);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Finished {
                exit: Exit::SpawnFailed(format!("cannot start {}: {e}", inv.program.display())),
                stdout: Tail::new(0),
                stderr: Tail::new(0),
                elapsed: started.elapsed(),
                pid: None,
            };
        }
    };
    let tree = Tree::adopt(&child);
    let pid = child.id();
    if let (Some(mut stdin), Some(data)) = (child.stdin.take(), inv.stdin.clone()) {
        // A child that does not read its input must not block the run: write in the background
        // and ignore a closed pipe.
        tokio::spawn(async move {
            let _ = stdin.write_all(&data).await;
            let _ = stdin.shutdown().await;
        });
    }
    let out = tokio::spawn(read_into(child.stdout.take(), STDOUT_KEPT));
    let err = tokio::spawn(read_into(child.stderr.take(), STDERR_KEPT));
    let exit = tokio::select! {
        status = child.wait() => match status {
            Ok(s) => match s.code() {
                Some(c) => Exit::Code(c),
                None => Exit::Signal(signal_of(&s)),
            },
            Err(e) => Exit::SpawnFailed(format!("cannot wait for {}: {e}", inv.program.display())),
        },
        () = tokio::time::sleep(timeout) => {
            tree.kill();
            let _ = child.wait().await;
            Exit::TimedOut
        }
    };
    // Children left behind by a process that ended hold its pipes open: end them too.
    tree.kill();
    let collect = |task: tokio::task::JoinHandle<Tail>| async move {
        tokio::time::timeout(DRAIN, task)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    };
    let (stdout, stderr) = tokio::join!(collect(out), collect(err));
    Finished {
        exit,
        stdout,
        stderr,
        elapsed: started.elapsed(),
        pid,
    }
}

#[cfg(unix)]
fn signal_of(s: &std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    s.signal()
}

#[cfg(not(unix))]
fn signal_of(_: &std::process::ExitStatus) -> Option<i32> {
    None
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn sh(script: &str, stdin: Option<&str>) -> Invocation {
        Invocation {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("BATON_X".into(), "x y".into())],
            stdin: stdin.map(|s| s.as_bytes().to_vec()),
        }
    }

    fn alive(pid: u32) -> bool {
        // A zombie (state Z) is dead; only its parent has not collected it yet.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit_once(") ")
                    .map(|(_, rest)| !rest.starts_with('Z'))
                    .unwrap_or(false)
            })
            .unwrap_or(false)
    }

    #[tokio::test]
    async fn output_environment_and_input_reach_the_caller() {
        let f = run(
            &sh(
                "read line; echo \"got $line $BATON_X\"; echo oops >&2; exit 3",
                Some("hello\n"),
            ),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(f.exit, Exit::Code(3));
        assert_eq!(f.stdout.last_line().as_deref(), Some("got hello x y"));
        assert_eq!(f.stderr.text(100), "oops\n");
    }

    #[tokio::test]
    async fn the_deadline_kills_the_process_and_its_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pids = dir.path().join("pids");
        let script = format!("sleep 30 & echo $! > {0}; echo $$ >> {0}; wait", pids.display());
        let started = Instant::now();
        let f = run(&sh(&script, None), Duration::from_millis(500)).await;
        assert_eq!(f.exit, Exit::TimedOut);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the run ends at the deadline, not when sleep ends"
        );
        let text = std::fs::read_to_string(&pids).expect("the script wrote its pids");
        let pids: Vec<u32> = text.lines().map(|l| l.trim().parse().expect("a pid")).collect();
        assert_eq!(pids.len(), 2);
        for pid in pids {
            let deadline = Instant::now() + Duration::from_secs(5);
            while alive(pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(!alive(pid), "process {pid} is gone");
        }
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_failure() {
        let inv = Invocation {
            program: "/nonexistent/prog".into(),
            args: vec![],
            env: vec![],
            stdin: None,
        };
        let f = run(&inv, Duration::from_secs(1)).await;
        assert!(
            matches!(&f.exit, Exit::SpawnFailed(m) if m.starts_with("cannot start /nonexistent/prog")),
            "{:?}",
            f.exit
        );
    }

    #[test]
    fn tails_are_bounded() {
        let mut t = Tail::new(8);
        t.push(b"first line\nsecond\n");
        assert_eq!(t.text(100), "…\nsecond\n");
        assert_eq!(t.last_line().as_deref(), Some("second"));
        assert_eq!(t.text(3), "…nd\n");
    }
}

//! The command grammar: chat text -> [`Command`]. Pure, total (never panics), linear time (the
//! `regex` crate), and strict: anything addressed to the bot that is not a well-formed command
//! becomes a [`CommandError`] with the usage to type instead.
//!
//! Only a pool name (checked against a narrow pattern here, and against the inventory by the
//! engine), a plan hash prefix (hex digits) and free-text reasons (sanitised, length-capped, only ever shown in chat) leave this
//! module. Nothing typed here reaches a command line.
//!
//! [`USAGE`] is the one table of commands: the help, the usage errors, the right the policy
//! checks, the run a command names and its audit text all come from its entry.

use crate::run::RunId;
use baton_policies::Right;
use regex::Regex;
use std::sync::LazyLock;

/// A parsed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Failover {
        pool: String,
        reason: Option<String>,
    },
    Plan {
        pool: String,
    },
    Approve {
        run: RunId,
        /// The start of the plan's SHA-256 the approver saw (lower-case hex, 6 to 64 digits).
        plan: Option<String>,
    },
    Deny {
        run: RunId,
        reason: Option<String>,
    },
    /// Active runs.
    Status,
    StatusRun {
        run: RunId,
    },
    /// The live outside-in view of federation.
    StatusXmpp,
    Abort {
        run: RunId,
        reason: Option<String>,
    },
    Retry {
        run: RunId,
    },
    Runs,
    Help,
}

/// One command of the grammar, as the parser, the help, the policy and the audit trail see it.
///
/// [`USAGE`] holds one entry per command word. Adding a command is a variant of [`Command`], an
/// entry here (its words, its right, its parse and audit functions) and its handler in the
/// engine; the help, the usage errors, the policy check and the audit text follow from the entry.
pub struct Usage {
    /// The word after the prefix (typed in any case).
    pub name: &'static str,
    /// The arguments, as help and usage errors show them.
    pub args: &'static str,
    /// One line of help.
    pub summary: &'static str,
    /// What the policy must grant the sender before the engine acts on the command.
    pub right: Right,
    /// Reads the arguments into a command, or says what is wrong with them.
    parse: fn(&Call) -> Result<Command, String>,
    /// This entry's commands, with what the audit trail records of them; `None` for the others.
    audit: fn(&Command) -> Option<Audit>,
}

impl Usage {
    /// How to type the command: `!deny <run> [reason]`.
    pub fn call(&self, prefix: &str) -> String {
        if self.args.is_empty() {
            format!("{prefix}{}", self.name)
        } else {
            format!("{prefix}{} {}", self.name, self.args)
        }
    }
}

/// A command being parsed: the prefix, the command word (lower-case) and its arguments (trimmed).
struct Call<'a> {
    prefix: &'a str,
    name: &'a str,
    args: &'a str,
}

impl<'a> Call<'a> {
    /// The first argument and the rest.
    fn words(&self) -> (&'a str, &'a str) {
        split(self.args)
    }
}

/// What the audit trail records of a command besides its word: the run it names, and its
/// arguments without free text (reasons are left out).
struct Audit {
    run: Option<RunId>,
    args: String,
}

impl Audit {
    fn bare() -> Option<Audit> {
        Some(Audit {
            run: None,
            args: String::new(),
        })
    }

    fn run(run: RunId) -> Option<Audit> {
        Some(Audit {
            run: Some(run),
            args: run.0.to_string(),
        })
    }

    fn args(args: String) -> Option<Audit> {
        Some(Audit { run: None, args })
    }
}

/// Every command, one entry per command word, in the order help lists them.
pub const USAGE: &[Usage] = &[
    Usage {
        name: "failover",
        args: "xmpp <Pool> [reason]",
        summary: "plan moving XMPP federation to <Pool> and ask for approval",
        right: Right::Request,
        parse: |c| {
            let (pool, reason) = route_and_pool(c)?;
            Ok(Command::Failover {
                pool: pool.to_string(),
                reason: clean_reason(reason),
            })
        },
        audit: |cmd| match cmd {
            Command::Failover { pool, .. } => Audit::args(format!("xmpp {pool}")),
            _ => None,
        },
    },
    Usage {
        name: "plan",
        args: "xmpp <Pool>",
        summary: "show the exact plan for <Pool> without starting anything",
        right: Right::View,
        parse: |c| {
            let (pool, rest) = route_and_pool(c)?;
            if !rest.is_empty() {
                return Err(format!("{}plan takes no reason", c.prefix));
            }
            Ok(Command::Plan { pool: pool.to_string() })
        },
        audit: |cmd| match cmd {
            Command::Plan { pool } => Audit::args(format!("xmpp {pool}")),
            _ => None,
        },
    },
    Usage {
        name: "approve",
        args: "<run> [<plan hash prefix>]",
        summary: "approve a pending run (not your own)",
        right: Right::Approve,
        parse: |c| {
            let (first, more) = c.words();
            let run = run_id(first)?;
            let (hash, extra) = split(more);
            if !extra.is_empty() {
                return Err(format!(
                    "{}approve takes a run number and at most a plan hash prefix",
                    c.prefix
                ));
            }
            let plan = match hash {
                "" => None,
                h if PLAN_PREFIX.is_match(h) => Some(h.to_ascii_lowercase()),
                h => return Err(format!("'{}' is not a plan hash prefix (6 to 64 hex digits)", shown(h))),
            };
            Ok(Command::Approve { run, plan })
        },
        audit: |cmd| match cmd {
            Command::Approve { run, plan: None } => Audit::run(*run),
            Command::Approve { run, plan: Some(p) } => Some(Audit {
                run: Some(*run),
                args: format!("{} {p}", run.0),
            }),
            _ => None,
        },
    },
    Usage {
        name: "deny",
        args: "<run> [reason]",
        summary: "refuse a pending run; it ends",
        right: Right::Deny,
        parse: |c| {
            let (first, more) = c.words();
            Ok(Command::Deny {
                run: run_id(first)?,
                reason: clean_reason(more),
            })
        },
        audit: |cmd| match cmd {
            Command::Deny { run, .. } => Audit::run(*run),
            _ => None,
        },
    },
    Usage {
        name: "status",
        args: "[<run> | xmpp]",
        summary: "active runs, one run's steps, or federation seen from outside",
        right: Right::View,
        parse: |c| {
            let (first, more) = c.words();
            if first.is_empty() {
                Ok(Command::Status)
            } else if !more.is_empty() {
                Err(format!("{}status takes one argument", c.prefix))
            } else if first.eq_ignore_ascii_case("xmpp") {
                Ok(Command::StatusXmpp)
            } else {
                run_id(first).map(|run| Command::StatusRun { run })
            }
        },
        audit: |cmd| match cmd {
            Command::Status => Audit::bare(),
            Command::StatusRun { run } => Audit::run(*run),
            Command::StatusXmpp => Audit::args("xmpp".to_string()),
            _ => None,
        },
    },
    Usage {
        name: "abort",
        args: "<run> [reason]",
        summary: "stop a run before its next step (a step in flight finishes)",
        right: Right::Abort,
        parse: |c| {
            let (first, more) = c.words();
            Ok(Command::Abort {
                run: run_id(first)?,
                reason: clean_reason(more),
            })
        },
        audit: |cmd| match cmd {
            Command::Abort { run, .. } => Audit::run(*run),
            _ => None,
        },
    },
    Usage {
        name: "retry",
        args: "<run>",
        summary: "run a failed step again",
        right: Right::Retry,
        parse: |c| one_run(c).map(|run| Command::Retry { run }),
        audit: |cmd| match cmd {
            Command::Retry { run } => Audit::run(*run),
            _ => None,
        },
    },
    Usage {
        name: "runs",
        args: "",
        summary: "recent runs",
        right: Right::View,
        parse: |c| {
            if !c.args.is_empty() {
                return Err(format!("{}runs takes no arguments", c.prefix));
            }
            Ok(Command::Runs)
        },
        audit: |cmd| matches!(cmd, Command::Runs).then(Audit::bare).flatten(),
    },
    Usage {
        name: "help",
        args: "",
        summary: "this help",
        right: Right::View,
        // Words after `help` are ignored: whoever asks gets the help.
        parse: |_| Ok(Command::Help),
        audit: |cmd| matches!(cmd, Command::Help).then(Audit::bare).flatten(),
    },
];

impl Command {
    /// The command's entry in [`USAGE`].
    pub fn usage(&self) -> &'static Usage {
        self.entry().0
    }

    /// What the policy must grant the sender.
    pub fn right(&self) -> Right {
        self.usage().right
    }

    /// The run the command names, if any.
    pub fn run(&self) -> Option<RunId> {
        self.entry().1.run
    }

    /// The command as the audit trail records it, without the prefix or free text: `approve 7`,
    /// `failover xmpp EdgePool2`.
    pub fn describe(&self) -> String {
        let (usage, audit) = self.entry();
        if audit.args.is_empty() {
            usage.name.to_string()
        } else {
            format!("{} {}", usage.name, audit.args)
        }
    }

    fn entry(&self) -> (&'static Usage, Audit) {
        USAGE
            .iter()
            .find_map(|u| (u.audit)(self).map(|a| (u, a)))
            .expect("every command has an entry in USAGE (the table tests check each variant)")
    }
}

/// The help text, with the configured prefix.
pub fn help_text(prefix: &str) -> String {
    let mut out = String::from("Baton commands:");
    for u in USAGE {
        out.push_str(&format!("\n  {:<36} {}", u.call(prefix), u.summary));
    }
    out
}

/// Why a message addressed to the bot is not a command. The text is what the user reads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("that message is too long for a command ({len} bytes; at most {MAX_LEN}). Try {prefix}help")]
    TooLong { len: usize, prefix: String },
    #[error("unknown command {prefix}{word}. Try {prefix}help")]
    Unknown { word: String, prefix: String },
    #[error("{problem}. Usage: {usage}")]
    Usage { problem: String, usage: String },
}

/// Longest message parsed as a command; longer ones are refused without looking further.
pub const MAX_LEN: usize = 2000;
/// Longest reason kept; longer ones are cut.
pub const MAX_REASON: usize = 200;

static HEAD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)^([A-Za-z][A-Za-z0-9_-]{0,31})(?:\s+(.*?))?\s*$").expect("the command head pattern is valid")
});
static POOL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$").expect("the pool pattern is valid"));
static RUN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^#?([0-9]{1,9})$").expect("the run pattern is valid"));
static PLAN_PREFIX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[0-9A-Fa-f]{6,64}$").expect("the plan hash prefix pattern is valid"));
static WORDS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)^(\S+)(?:\s+(.*))?$").expect("the words pattern is valid"));

/// Parses `text`. Returns `None` when the text is not addressed to the bot (it does not start
/// with `prefix` directly followed by a letter), so ordinary conversation is ignored.
pub fn parse(prefix: &str, text: &str) -> Option<Result<Command, CommandError>> {
    let text = text.trim_start();
    let rest = text.strip_prefix(prefix)?;
    if !rest.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    if text.len() > MAX_LEN {
        return Some(Err(CommandError::TooLong {
            len: text.len(),
            prefix: prefix.to_string(),
        }));
    }
    Some(parse_addressed(prefix, rest))
}

fn parse_addressed(prefix: &str, rest: &str) -> Result<Command, CommandError> {
    let Some(caps) = HEAD.captures(rest) else {
        let word: String = rest
            .chars()
            .take_while(|c| !c.is_whitespace())
            .take(32)
            .flat_map(char::escape_debug)
            .collect();
        return Err(CommandError::Unknown {
            word,
            prefix: prefix.to_string(),
        });
    };
    let name = caps.get(1).map_or("", |m| m.as_str()).to_ascii_lowercase();
    let Some(usage) = USAGE.iter().find(|u| u.name == name) else {
        return Err(CommandError::Unknown {
            word: shown(&name),
            prefix: prefix.to_string(),
        });
    };
    let call = Call {
        prefix,
        name: &name,
        args: caps.get(2).map_or("", |m| m.as_str()).trim(),
    };
    (usage.parse)(&call).map_err(|problem| CommandError::Usage {
        problem,
        usage: usage.call(prefix),
    })
}

/// `xmpp <Pool> [rest]`, shared by `failover` and `plan`: the pool and the rest.
fn route_and_pool<'a>(c: &Call<'a>) -> Result<(&'a str, &'a str), String> {
    let (route, rest) = c.words();
    let (pool, rest) = split(rest);
    if route.is_empty() {
        return Err(format!("{}{} needs the route and the target pool", c.prefix, c.name));
    }
    if !route.eq_ignore_ascii_case("xmpp") {
        return Err(format!("Baton knows one route, xmpp, not '{}'", shown(route)));
    }
    if pool.is_empty() {
        return Err("name the pool that should take over".to_string());
    }
    if !POOL.is_match(pool) {
        return Err(format!("'{}' is not a pool name", shown(pool)));
    }
    Ok((pool, rest))
}

/// A run number and nothing else.
fn one_run(c: &Call) -> Result<RunId, String> {
    let (first, more) = c.words();
    let run = run_id(first)?;
    if !more.is_empty() {
        return Err(format!("{}{} takes one run number", c.prefix, c.name));
    }
    Ok(run)
}

/// The first word and the rest.
fn split(s: &str) -> (&str, &str) {
    match WORDS.captures(s) {
        Some(c) => (
            c.get(1).map_or("", |m| m.as_str()),
            c.get(2).map_or("", |m| m.as_str()).trim(),
        ),
        None => ("", ""),
    }
}

fn run_id(s: &str) -> Result<RunId, String> {
    if s.is_empty() {
        return Err("which run? Give its number, e.g. 7".to_string());
    }
    let n: u64 = RUN
        .captures(s)
        .and_then(|c| c.get(1))
        .and_then(|m| m.as_str().parse().ok())
        .ok_or_else(|| format!("'{}' is not a run number", shown(s)))?;
    if n == 0 {
        return Err("runs are numbered from 1".to_string());
    }
    Ok(RunId(n))
}

/// A reason as shown back in chat: control characters become spaces, spaces collapse, and it is
/// cut at [`MAX_REASON`] characters.
fn clean_reason(s: &str) -> Option<String> {
    let flat: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let words: Vec<&str> = flat.split_whitespace().collect();
    if words.is_empty() {
        return None;
    }
    let joined = words.join(" ");
    if joined.chars().count() > MAX_REASON {
        Some(format!("{}…", joined.chars().take(MAX_REASON).collect::<String>()))
    } else {
        Some(joined)
    }
}

/// Echoes user text safely inside an error: 40 characters at most, control characters escaped.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(40).flat_map(char::escape_debug).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests;

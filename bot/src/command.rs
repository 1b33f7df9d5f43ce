//! The command grammar: chat text -> [`Command`]. Pure, total (never panics), linear time (the
//! `regex` crate), and strict: anything addressed to the bot that is not a well-formed command
//! becomes a [`CommandError`] with the usage to type instead.
//!
//! Only a pool name (checked against a narrow pattern here, and against the inventory by the
//! engine) and free-text reasons (sanitised, length-capped, only ever shown in chat) leave this
//! module. Nothing typed here reaches a command line.

use crate::run::RunId;
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
    },
    Retry {
        run: RunId,
    },
    Runs,
    Help,
}

/// One line of help per command; `help_text` and usage errors are built from it.
pub struct Usage {
    pub name: &'static str,
    pub args: &'static str,
    pub summary: &'static str,
}

pub const USAGE: &[Usage] = &[
    Usage {
        name: "failover",
        args: "xmpp <Pool> [reason]",
        summary: "plan moving XMPP federation to <Pool> and ask for approval",
    },
    Usage {
        name: "plan",
        args: "xmpp <Pool>",
        summary: "show the exact plan for <Pool> without starting anything",
    },
    Usage {
        name: "approve",
        args: "<run>",
        summary: "approve a pending run (not your own)",
    },
    Usage {
        name: "deny",
        args: "<run> [reason]",
        summary: "refuse a pending run; it ends",
    },
    Usage {
        name: "status",
        args: "[<run> | xmpp]",
        summary: "active runs, one run's steps, or federation seen from outside",
    },
    Usage {
        name: "abort",
        args: "<run>",
        summary: "stop a run before its next step (a step in flight finishes)",
    },
    Usage {
        name: "retry",
        args: "<run>",
        summary: "run a failed step again",
    },
    Usage {
        name: "runs",
        args: "",
        summary: "recent runs",
    },
    Usage {
        name: "help",
        args: "",
        summary: "this help",
    },
];

/// The help text, with the configured prefix.
pub fn help_text(prefix: &str) -> String {
    let mut out = String::from("Baton commands:");
    for u in USAGE {
        let call = if u.args.is_empty() {
            format!("{prefix}{}", u.name)
        } else {
            format!("{prefix}{} {}", u.name, u.args)
        };
        out.push_str(&format!("\n  {call:<36} {}", u.summary));
    }
    out
}

fn usage_of(prefix: &str, name: &str) -> String {
    let u = USAGE
        .iter()
        .find(|u| u.name == name)
        .expect("usage_of is only called with names from USAGE");
    if u.args.is_empty() {
        format!("{prefix}{}", u.name)
    } else {
        format!("{prefix}{} {}", u.name, u.args)
    }
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
    let args = caps.get(2).map_or("", |m| m.as_str()).trim();
    let usage = |problem: String| CommandError::Usage {
        problem,
        usage: usage_of(prefix, &name),
    };
    let (first, more) = split(args);
    match name.as_str() {
        "failover" | "plan" => {
            let (route, rest) = (first, more);
            let (pool, reason) = split(rest);
            if route.is_empty() {
                return Err(usage(format!("{prefix}{name} needs the route and the target pool")));
            }
            if !route.eq_ignore_ascii_case("xmpp") {
                return Err(usage(format!("Baton knows one route, xmpp, not '{}'", shown(route))));
            }
            if pool.is_empty() {
                return Err(usage("name the pool that should take over".to_string()));
            }
            if !POOL.is_match(pool) {
                return Err(usage(format!("'{}' is not a pool name", shown(pool))));
            }
            if name == "plan" {
                if !reason.is_empty() {
                    return Err(usage(format!("{prefix}plan takes no reason")));
                }
                return Ok(Command::Plan { pool: pool.to_string() });
            }
            Ok(Command::Failover {
                pool: pool.to_string(),
                reason: clean_reason(reason),
            })
        }
        "approve" | "abort" | "retry" => {
            let run = run_id(first).map_err(usage)?;
            if !more.is_empty() {
                return Err(usage(format!("{prefix}{name} takes one run number")));
            }
            Ok(match name.as_str() {
                "approve" => Command::Approve { run },
                "abort" => Command::Abort { run },
                _ => Command::Retry { run },
            })
        }
        "deny" => {
            let run = run_id(first).map_err(usage)?;
            Ok(Command::Deny {
                run,
                reason: clean_reason(more),
            })
        }
        "status" => {
            if first.is_empty() {
                Ok(Command::Status)
            } else if !more.is_empty() {
                Err(usage(format!("{prefix}status takes one argument")))
            } else if first.eq_ignore_ascii_case("xmpp") {
                Ok(Command::StatusXmpp)
            } else {
                run_id(first).map(|run| Command::StatusRun { run }).map_err(usage)
            }
        }
        "runs" | "help" => {
            if !args.is_empty() && name == "runs" {
                return Err(usage(format!("{prefix}runs takes no arguments")));
            }
            Ok(if name == "runs" { Command::Runs } else { Command::Help })
        }
        _ => Err(CommandError::Unknown {
            word: shown(&name),
            prefix: prefix.to_string(),
        }),
    }
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

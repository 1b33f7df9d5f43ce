//! Checks of the embedded PowerShell scripts, which cannot run here: every script, as the agent
//! assembles it for each action and module, is parsed with a PowerShell grammar
//! (tree-sitter-powershell) and must have no syntax error; it may call only the commands its
//! action names (a per-action allowlist, every entry used), only by a literal name (no `&` or
//! `.` invocation, no `Invoke-Expression`, nothing built from strings), use only a few .NET
//! types, and read data only from `$env:BATON_PARAMS` (no other environment variable or
//! automatic input; every other variable is one the script assigns itself).

use crate::config::LyncModule;
use baton_runbook::catalog::Action;
use std::collections::BTreeSet;
use tree_sitter::{Node, Parser, Tree};

/// Commands every script may call: the prelude's JSON handling and pipeline plumbing.
const COMMON: &[&str] = &["ConvertFrom-Json", "ConvertTo-Json", "Import-Module", "Out-Null"];

/// The commands each action's script calls, besides [`COMMON`] and its own functions.
fn allowed(action: &Action) -> &'static [&'static str] {
    match action {
        Action::ServicesStop { .. } => &["Get-CsWindowsService", "Stop-CsWindowsService", "ForEach-Object"],
        Action::ServicesStart { .. } => &["Get-CsWindowsService", "Start-CsWindowsService", "ForEach-Object"],
        Action::ServicesStatus { .. } => &["Get-CsWindowsService", "ForEach-Object"],
        Action::RouteGet { .. } => &["Get-CsSite"],
        Action::RouteSet { .. } => &["Get-CsSite", "Set-CsSite", "Get-Command"],
        Action::DnsSetA { .. } => &[
            "Get-DnsServerResourceRecord",
            "Remove-DnsServerResourceRecord",
            "Add-DnsServerResourceRecordA",
            "New-TimeSpan",
            "ForEach-Object",
        ],
        Action::DnsEnsureSrv { .. } => &[
            "Get-DnsServerResourceRecord",
            "Add-DnsServerResourceRecord",
            "New-TimeSpan",
            "ForEach-Object",
            "Where-Object",
        ],
        Action::Health { .. } | Action::PortCheck { .. } | Action::Verify { .. } => &[],
    }
}

/// .NET types a script may name: result shaping and the console.
const TYPES: &[&str] = &["ordered", "string", "int", "Console"];

/// Variables a script may read without assigning them: its parameters' source, PowerShell's
/// constants and pipeline item, and the preferences it sets.
const GIVEN: &[&str] = &[
    "env:BATON_PARAMS",
    "_",
    "null",
    "true",
    "false",
    "ErrorActionPreference",
    "ProgressPreference",
];

fn parse(script: &str) -> Tree {
    let mut parser = Parser::new();
    parser
        .set_language(&tree_sitter_powershell::LANGUAGE.into())
        .expect("the PowerShell grammar matches this tree-sitter");
    parser
        .parse(script, None)
        .expect("the parser has a language and no timeout")
}

fn text<'a>(node: Node<'_>, script: &'a str) -> &'a str {
    &script[node.byte_range()]
}

fn at(node: Node<'_>) -> String {
    let p = node.start_position();
    format!("line {}:{}", p.row + 1, p.column + 1)
}

fn walk<'t>(node: Node<'t>, out: &mut Vec<Node<'t>>) {
    out.push(node);
    let mut cursor = node.walk();
    for child in node.children(&mut cursor) {
        walk(child, out);
    }
}

/// A variable's name as written, without `$`, braces or case: `$env:BATON_PARAMS` ->
/// `env:baton_params`.
fn variable_name(raw: &str) -> String {
    let name = raw.trim_start_matches(['$', '@']);
    let name = name.strip_prefix('{').and_then(|n| n.strip_suffix('}')).unwrap_or(name);
    name.to_ascii_lowercase()
}

/// Every problem of one script: syntax errors, commands outside `allowed` (and allowed ones
/// never used, when `exact`), computed invocations, foreign types and variables read from
/// outside.
fn problems(script: &str, allowed: &[&str], exact: bool) -> Vec<String> {
    let tree = parse(script);
    let mut nodes = Vec::new();
    walk(tree.root_node(), &mut nodes);
    let mut out = Vec::new();
    for n in nodes.iter().filter(|n| n.is_error() || n.is_missing()) {
        let what = if n.is_missing() { "missing" } else { "syntax error at" };
        out.push(format!(
            "{what} {} near {:?}",
            at(*n),
            text(*n, script).chars().take(40).collect::<String>()
        ));
    }
    let functions: BTreeSet<String> = nodes
        .iter()
        .filter(|n| n.kind() == "function_name")
        .map(|n| text(*n, script).to_ascii_lowercase())
        .collect();
    let allow: BTreeSet<String> = COMMON
        .iter()
        .chain(allowed)
        .map(|c| c.to_ascii_lowercase())
        .chain(functions.iter().cloned())
        .collect();
    let mut called = BTreeSet::new();
    for n in nodes.iter().filter(|n| n.kind() == "command") {
        let mut cursor = n.walk();
        if n.children(&mut cursor)
            .any(|c| c.kind() == "command_invokation_operator")
        {
            out.push(format!(
                "{}: '&' or '.' invokes {:?}: commands are called by name only",
                at(*n),
                text(*n, script)
            ));
            continue;
        }
        match n.child_by_field_name("command_name") {
            Some(name) if name.kind() == "command_name" => {
                let name = text(name, script);
                called.insert(name.to_ascii_lowercase());
                if !allow.contains(&name.to_ascii_lowercase()) {
                    out.push(format!("{}: calls {name}, which this script may not", at(*n)));
                }
            }
            _ => out.push(format!(
                "{}: a command whose name is computed: {:?}",
                at(*n),
                text(*n, script)
            )),
        }
    }
    if exact {
        for c in allowed {
            if !called.contains(&c.to_ascii_lowercase()) {
                out.push(format!("allowed {c} is never called: remove it from the allowlist"));
            }
        }
    }
    for n in nodes.iter().filter(|n| n.kind() == "type_literal") {
        let name = text(*n, script).trim_matches(['[', ']']);
        if !TYPES.iter().any(|t| t.eq_ignore_ascii_case(name)) {
            out.push(format!("{}: uses the type [{name}]", at(*n)));
        }
    }
    // Variables: those the script assigns (plain assignment, foreach, parameters) and the given
    // ones; anything else is data from outside.
    let mut assigned: BTreeSet<String> = BTreeSet::new();
    for n in &nodes {
        let target = match n.kind() {
            "left_assignment_expression" | "script_parameter" => {
                let mut inner = Vec::new();
                walk(*n, &mut inner);
                inner.into_iter().find(|v| v.kind() == "variable")
            }
            "foreach_statement" => {
                let mut cursor = n.walk();
                n.children(&mut cursor).find(|c| c.kind() == "variable")
            }
            _ => None,
        };
        if let Some(v) = target {
            assigned.insert(variable_name(text(v, script)));
        }
    }
    let given: BTreeSet<String> = GIVEN.iter().map(|g| g.to_ascii_lowercase()).collect();
    for n in nodes.iter().filter(|n| n.kind() == "variable") {
        let name = variable_name(text(*n, script));
        if name.starts_with("env:") && name != "env:baton_params" {
            out.push(format!(
                "{}: reads the environment variable {}",
                at(*n),
                text(*n, script)
            ));
        } else if !assigned.contains(&name) && !given.contains(&name) {
            out.push(format!(
                "{}: reads {}, which the script never assigns",
                at(*n),
                text(*n, script)
            ));
        }
    }
    // The parameters come from one place: `$P = $env:BATON_PARAMS | ConvertFrom-Json`, once.
    let reads = nodes
        .iter()
        .filter(|n| n.kind() == "variable" && variable_name(text(**n, script)) == "env:baton_params")
        .count();
    let p_assignments = nodes
        .iter()
        .filter(|n| n.kind() == "left_assignment_expression" && variable_name(text(**n, script).trim()) == "p")
        .count();
    if reads != 1 || p_assignments != 1 || !script.contains("$P = $env:BATON_PARAMS | ConvertFrom-Json") {
        out.push(format!(
            "the parameters must be read once, as `$P = $env:BATON_PARAMS | ConvertFrom-Json` ({reads} reads of BATON_PARAMS, {p_assignments} assignments of $P)"
        ));
    }
    out
}

#[test]
fn every_embedded_script_parses_and_calls_only_what_its_action_allows() {
    for module in [LyncModule::Lync, LyncModule::SkypeForBusiness] {
        for action in crate::invoke::tests::catalog() {
            let script = crate::invoke::script(module, &action).expect("an agent action has a script");
            let found = problems(&script, allowed(&action), true);
            assert!(
                found.is_empty(),
                "{} ({}):\n{}\n---\n{script}",
                action.id(),
                module.name(),
                found.join("\n")
            );
        }
    }
}

#[test]
fn every_script_file_parses_on_its_own() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/scripts");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("the scripts folder") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|e| e == "ps1") {
            let text = std::fs::read_to_string(&path).expect("a script");
            let tree = parse(&text);
            assert!(
                !tree.root_node().has_error(),
                "{}: {}",
                path.display(),
                tree.root_node().to_sexp()
            );
            seen += 1;
        }
    }
    assert!(seen >= 10, "found {seen} scripts");
}

#[test]
fn the_check_fails_on_broken_or_overreaching_scripts() {
    let stop = crate::invoke::tests::catalog().remove(0);
    let good = crate::invoke::script(LyncModule::Lync, &stop).expect("services.stop");
    let check = |extra: &str| problems(&format!("{good}{extra}\n"), allowed(&stop), false);
    assert!(check("").is_empty(), "{:?}", check(""));
    let cases = [
        ("function Broken { if ($P.host { }", "syntax error at"),
        (
            "Invoke-Expression $P.host",
            "calls Invoke-Expression, which this script may not",
        ),
        ("iex 'Stop-Computer'", "calls iex, which this script may not"),
        (
            "Restart-Computer -Force",
            "calls Restart-Computer, which this script may not",
        ),
        ("& $P.command", "'&' or '.' invokes"),
        (". ('Stop-' + 'Computer')", "'&' or '.' invokes"),
        ("& 'Stop-Computer'", "'&' or '.' invokes"),
        ("[scriptblock]::Create($P.host).Invoke()", "uses the type [scriptblock]"),
        ("$path = $env:PATH", "reads the environment variable $env:PATH"),
        (
            "$x = ${env:COMPUTERNAME}",
            "reads the environment variable ${env:COMPUTERNAME}",
        ),
        ("Write-Result $args", "reads $args, which the script never assigns"),
        ("Write-Result $input", "reads $input, which the script never assigns"),
        (
            "$P = Get-Content C:\\params.json | ConvertFrom-Json",
            "calls Get-Content",
        ),
        (
            "$P = $env:BATON_PARAMS | ConvertFrom-Json",
            "the parameters must be read once",
        ),
    ];
    for (extra, needle) in cases {
        let found = check(extra);
        assert!(found.iter().any(|p| p.contains(needle)), "{extra:?} -> {found:?}");
    }
    // A command the action does not name is refused even when another action may call it.
    let status = crate::invoke::tests::catalog().remove(2);
    let script = crate::invoke::script(LyncModule::Lync, &status).expect("services.status");
    let found = problems(&format!("{script}Stop-CsWindowsService\n"), allowed(&status), true);
    assert!(
        found
            .iter()
            .any(|p| p.contains("calls Stop-CsWindowsService, which this script may not")),
        "{found:?}"
    );
}

//! Imports point down the flow (DESIGN.md, "Shape of the code"):
//!
//! ```text
//! edges (main.rs, cli, slack) → app → engine → faults, probes → report → schedule, gameday
//!   → spec → load → store → config → run          (clock, suggest, tls: small helpers, anywhere)
//! ```
//!
//! - `schedule` and `gameday` are the domain of planned runs (the `when` grammar, plans): the
//!   application layer uses them; the drivers that post to Slack and start runs through the
//!   application layer (the scheduler, the game-day driver) are in the Slack edge.
//! - `load` (the HTTP load generator) sits below `spec`: it knows nothing of experiments, and
//!   the experiment model embeds its plan (rate schedule, thresholds).
//! - A few edge files are the composition roots of a process (they build the engine and the
//!   target registry the application layer runs on): they may also name `engine` and `faults`,
//!   and nothing else above the table's line; see `COMPOSITION_ROOTS`.
//!
//! This test reads every file under `src/`, collects the `crate::<module>` paths each top-level
//! module names (in `use` items, multi-line `use crate::{...}` groups, inline paths such as
//! `crate::slack::foo(...)`, and path strings such as `with = "crate::spec::duration_serde"`;
//! `chaosbot::<module>` in `main.rs`), and fails on every edge the table below does not allow,
//! with file and line. Comments and other string literals are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may import: what is lower in the flow, nothing above it, and
/// siblings only where named. A module missing here fails the test: place it in the flow.
const ALLOWED: &[(&str, &[&str])] = &[
    // Bottom: the run types every layer shares, and helpers that import nothing else.
    ("run", &[]),
    ("suggest", &[]),
    // TLS client settings and their checks (probes, rollbacks and the load attack use them).
    ("tls", &[]),
    ("clock", &["run"]),
    // Settings, validated once at start: they name nothing above the run types.
    ("config", &["run", "clock", "suggest", "tls"]),
    ("store", &["config", "run", "clock", "suggest", "tls"]),
    // The load generator: a library that knows nothing of experiments.
    (
        "load",
        &["store", "config", "run", "clock", "suggest", "tls"],
    ),
    (
        "spec",
        &["load", "store", "config", "run", "clock", "suggest", "tls"],
    ),
    // Planned runs: the `when` of schedules, game-day plans.
    ("schedule", LOWER_THAN_SCHEDULE),
    ("gameday", LOWER_THAN_SCHEDULE),
    // The views: they read the store and the run types and write no transport's markup.
    (
        "report",
        &[
            "schedule", "gameday", "spec", "load", "store", "config", "run", "clock", "suggest",
            "tls",
        ],
    ),
    (
        "probes",
        &[
            "spec", "load", "store", "config", "run", "clock", "suggest", "tls",
        ],
    ),
    (
        "faults",
        &[
            "probes", "spec", "load", "store", "config", "run", "clock", "suggest", "tls",
        ],
    ),
    // The data plane: the faults of its host.
    (
        "agent",
        &[
            "faults", "probes", "load", "spec", "store", "config", "run", "clock", "suggest", "tls",
        ],
    ),
    // The run lifecycle: it knows nothing about Slack or who may do what.
    (
        "engine",
        &[
            "agent", "faults", "probes", "report", "spec", "load", "store", "config", "run",
            "clock", "suggest", "tls",
        ],
    ),
    // Use cases, transport-neutral.
    (
        "app",
        &[
            "engine", "report", "schedule", "gameday", "spec", "load", "store", "config", "run",
            "clock", "suggest", "tls",
        ],
    ),
    // Edges: parse, authorize, render; they call the use cases, not the machinery.
    // The live run pages: an edge on its own; Slack links to them and `serve` mounts them.
    ("web", EDGE),
    ("slack", SLACK),
    // `chaosbot serve` starts the Slack edge.
    ("cli", CLI),
    // The binary and the module map wire everything.
    ("main", ALL),
    ("lib", ALL),
];

const LOWER_THAN_SCHEDULE: &[&str] = &[
    "spec", "load", "store", "config", "run", "clock", "suggest", "tls",
];

const EDGE: &[&str] = &[
    "app", "report", "schedule", "gameday", "spec", "load", "store", "config", "run", "clock",
    "suggest", "tls",
];

const SLACK: &[&str] = &[
    "web", "app", "report", "schedule", "gameday", "spec", "load", "store", "config", "run",
    "clock", "suggest", "tls",
];

const CLI: &[&str] = &[
    "slack", "web", "app", "report", "schedule", "gameday", "spec", "load", "store", "config",
    "run", "clock", "suggest", "tls",
];

const ALL: &[&str] = &[
    "cli", "slack", "web", "app", "engine", "schedule", "gameday", "agent", "faults", "probes",
    "load", "report", "spec", "store", "config", "run", "clock", "suggest", "tls",
];

/// Files that build a process (the engine and the target registry the application layer runs
/// on, the demo's own service and proxy): besides their module's row, they may name these.
const COMPOSITION_ROOTS: &[(&str, &[&str])] = &[
    ("src/cli/run.rs", &["engine", "faults"]),
    ("src/cli/agents.rs", &["engine"]),
    ("src/cli/agent.rs", &["agent"]),
    ("src/cli/demo.rs", &["engine", "faults", "probes"]),
    ("src/cli/history.rs", &["engine", "faults"]),
    ("src/slack/server.rs", &["engine", "faults"]),
    ("src/slack/edge/mod.rs", &["engine"]),
];

// KNOWN_VIOLATIONS — edges that still exist on this branch and are being moved on others.
// (importing file, imported module). Remove an entry once its edge is gone (the test says
// which entries are stale); never add one for new code.
const KNOWN_VIOLATIONS: &[(&str, &str)] = &[];

/// One `crate::<module>` a file names.
#[derive(Debug)]
struct Use {
    file: String,
    line: usize,
    module: String,
}

/// `src` with comments and string literals blanked (newlines kept, so lines still count), and
/// the string literals that are exactly a crate path (`"crate::spec::duration_serde"`).
fn code_of(src: &str) -> (String, Vec<(String, usize)>) {
    let b: Vec<char> = src.chars().collect();
    let n = b.len();
    let mut out = String::with_capacity(src.len());
    let mut paths = Vec::new();
    let mut line = 1;
    let blank = |out: &mut String, line: &mut usize, s: &[char]| {
        for c in s {
            if *c == '\n' {
                *line += 1;
                out.push('\n');
            } else {
                out.push(' ');
            }
        }
    };
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < n {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            let end = (i..n).find(|&j| b[j] == '\n').unwrap_or(n);
            blank(&mut out, &mut line, &b[i..end]);
            i = end;
            continue;
        }
        if c == '/' && next == Some('*') {
            let (mut depth, mut j) = (0, i);
            while j < n {
                if b[j] == '/' && b.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if b[j] == '*' && b.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
                if depth == 0 {
                    break;
                }
            }
            blank(&mut out, &mut line, &b[i..j.min(n)]);
            i = j.min(n);
            continue;
        }
        let starts_word = i == 0 || !is_ident(b[i - 1]);
        // Raw strings: r"..", r#".."#, br#".."#.
        if starts_word && (c == 'r' || (c == 'b' && next == Some('r'))) {
            let mut j = if c == 'b' { i + 2 } else { i + 1 };
            let mut hashes = 0;
            while j < n && b[j] == '#' {
                hashes += 1;
                j += 1;
            }
            if j < n && b[j] == '"' {
                let start = j + 1;
                let mut k = start;
                let end = loop {
                    if k >= n {
                        break n;
                    }
                    if b[k] == '"' && (0..hashes).all(|h| b.get(k + 1 + h) == Some(&'#')) {
                        break k;
                    }
                    k += 1;
                };
                let close = (end + 1 + hashes).min(n);
                blank(&mut out, &mut line, &b[i..close]);
                i = close;
                continue;
            }
        }
        if c == '"' {
            let at_line = line;
            let mut j = i + 1;
            while j < n && b[j] != '"' {
                j += if b[j] == '\\' { 2 } else { 1 };
            }
            let text: String = b[i + 1..j.min(n)].iter().collect();
            if is_crate_path(&text) {
                paths.push((text, at_line));
            }
            let close = (j + 1).min(n);
            blank(&mut out, &mut line, &b[i..close]);
            i = close;
            continue;
        }
        if c == '\'' {
            // A char literal ('x', '\n', '\''), not a lifetime ('a).
            if next == Some('\\') {
                let end = (i + 2..n).find(|&j| b[j] == '\'').unwrap_or(n - 1);
                blank(&mut out, &mut line, &b[i..=end]);
                i = end + 1;
                continue;
            }
            if b.get(i + 2) == Some(&'\'') {
                blank(&mut out, &mut line, &b[i..i + 3]);
                i += 3;
                continue;
            }
        }
        if c == '\n' {
            line += 1;
        }
        out.push(c);
        i += 1;
    }
    (out, paths)
}

fn is_crate_path(s: &str) -> bool {
    let mut parts = s.split("::");
    parts.next() == Some("crate")
        && s.contains("::")
        && parts.all(|p| {
            !p.is_empty()
                && p.chars().all(|c| c.is_alphanumeric() || c == '_')
                && !p.starts_with(|c: char| c.is_ascii_digit())
        })
}

fn ident_at(code: &[char], i: usize) -> Option<String> {
    let first = *code.get(i)?;
    if !(first.is_alphabetic() || first == '_') {
        return None;
    }
    Some(
        code[i..]
            .iter()
            .take_while(|c| c.is_alphanumeric() || **c == '_')
            .collect(),
    )
}

fn skip_ws(code: &[char], mut i: usize) -> usize {
    while i < code.len() && code[i].is_whitespace() {
        i += 1;
    }
    i
}

/// The modules named right after each `<prefix>::` in `code` (a path or a `{...}` group), with
/// the line each is named on.
fn modules_after(code: &str, prefix: &str) -> Vec<(String, usize)> {
    let chars: Vec<char> = code.chars().collect();
    let p: Vec<char> = prefix.chars().collect();
    let line_at = |i: usize| chars[..i].iter().filter(|c| **c == '\n').count() + 1;
    let mut found = Vec::new();
    let mut i = 0;
    while i + p.len() <= chars.len() {
        // `$crate::` in a macro is this crate too.
        let before_ok = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if !(before_ok && chars[i..i + p.len()] == p[..]) {
            i += 1;
            continue;
        }
        let mut j = skip_ws(&chars, i + p.len());
        if !(chars.get(j) == Some(&':') && chars.get(j + 1) == Some(&':')) {
            i += p.len();
            continue;
        }
        j = skip_ws(&chars, j + 2);
        if chars.get(j) == Some(&'{') {
            // A group: the first identifier of each item at depth 1.
            let (mut depth, mut item_start, mut k) = (0usize, true, j);
            while k < chars.len() {
                let c = chars[k];
                match c {
                    '{' => {
                        depth += 1;
                        item_start = depth == 1;
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    _ if depth == 1 && item_start => {
                        if let Some(name) = ident_at(&chars, k) {
                            found.push((name.clone(), line_at(k)));
                            item_start = false;
                            k += name.chars().count();
                            continue;
                        }
                        if !c.is_whitespace() {
                            item_start = false;
                        }
                    }
                    _ => {}
                }
                k += 1;
            }
            i = k.max(i + 1);
        } else {
            if let Some(name) = ident_at(&chars, j) {
                // `crate::name!` is an exported macro (they live at the crate root, in no module).
                let after = skip_ws(&chars, j + name.chars().count());
                if chars.get(after) != Some(&'!') {
                    found.push((name, line_at(j)));
                }
            }
            i = j.max(i + 1);
        }
    }
    found
}

/// The top-level module a file under `src/` belongs to: `src/slack/qa.rs` → `slack`,
/// `src/config.rs` → `config`, `src/main.rs` → `main`.
fn top_module(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .unwrap_or_default();
    first.strip_suffix(".rs").unwrap_or(&first).to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::<module>` (and, in `main.rs`, `chaosbot::<module>`) under `src/`, by module.
fn uses(src_dir: &Path) -> BTreeMap<String, Vec<Use>> {
    let mut files = Vec::new();
    rust_files(src_dir, &mut files);
    files.sort();
    let mut by_module: BTreeMap<String, Vec<Use>> = BTreeMap::new();
    for path in files {
        let rel = path.strip_prefix(src_dir).expect("under src/");
        let module = top_module(rel);
        let file = format!("src/{}", rel.display());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let (code, path_strings) = code_of(&text);
        let mut named = modules_after(&code, "crate");
        if module == "main" {
            named.extend(modules_after(&code, "chaosbot"));
        }
        for (s, line) in path_strings {
            named.extend(s.split("::").nth(1).map(|m| (m.to_string(), line)));
        }
        let list = by_module.entry(module.clone()).or_default();
        for (imported, line) in named {
            if imported != module && imported != "self" {
                list.push(Use {
                    file: file.clone(),
                    line,
                    module: imported,
                });
            }
        }
    }
    by_module
}

/// (file, imported module) → the lines that name it.
type Edges = BTreeMap<(String, String), Vec<usize>>;

/// Edges the table does not allow, and the modules it does not place.
fn violations(by_module: &BTreeMap<String, Vec<Use>>) -> (Edges, Vec<String>) {
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, to)| (*m, to.iter().copied().collect()))
        .collect();
    let mut bad = Edges::new();
    let mut unplaced = Vec::new();
    for (module, list) in by_module {
        let Some(ok) = allowed.get(module.as_str()) else {
            unplaced.push(format!("src/{module}: not in the layering table"));
            continue;
        };
        for u in list {
            let rooted = COMPOSITION_ROOTS
                .iter()
                .any(|(f, may)| *f == u.file && may.contains(&u.module.as_str()));
            if !ok.contains(u.module.as_str()) && !rooted {
                bad.entry((u.file.clone(), u.module.clone()))
                    .or_default()
                    .push(u.line);
            }
        }
    }
    (bad, unplaced)
}

#[test]
fn imports_point_down_the_flow() {
    let src_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let by_module = uses(&src_dir);
    // The scan must see the code: a few edges every version of chaosbot has.
    let sees = |from: &str, to: &str| {
        by_module
            .get(from)
            .is_some_and(|l| l.iter().any(|u| u.module == to))
    };
    assert!(sees("store", "run") && sees("engine", "store") && sees("main", "cli"));

    let (bad, unplaced) = violations(&by_module);
    let known: BTreeSet<(&str, &str)> = KNOWN_VIOLATIONS.iter().copied().collect();
    let mut report = unplaced;
    for ((file, module), lines) in &bad {
        if known.contains(&(file.as_str(), module.as_str())) {
            continue;
        }
        for line in lines {
            report.push(format!(
                "{file}:{line}: `{}` imports `{module}`, which is above it or beside it",
                top_module(Path::new(file.trim_start_matches("src/")))
            ));
        }
    }
    let stale: Vec<String> = KNOWN_VIOLATIONS
        .iter()
        .filter(|(f, m)| !bad.contains_key(&(f.to_string(), m.to_string())))
        .map(|(f, m)| format!("KNOWN_VIOLATIONS has ({f:?}, {m:?}), which is gone: remove it"))
        .collect();
    report.extend(stale);
    assert!(
        report.is_empty(),
        "imports against the flow (see ALLOWED in tests/layering.rs):\n{}",
        report.join("\n")
    );
}

#[test]
fn the_scan_reads_paths_not_comments_or_strings() {
    let src = r##"
use crate::run::Entry;
use crate::{
    store::{self, DynStore},
    config::Config,
};
// use crate::slack::ignored;
/* crate::engine::ignored /* nested */ */
fn f<'a>(x: &'a str) -> char {
    let _ = "crate::gameday is only text";
    let _ = r#"crate::schedule"#;
    crate::report::summarize(x);
    '"'
}
#[serde(with = "crate::spec::duration_serde")]
struct S;
"##;
    let (code, strings) = code_of(src);
    let mut named: Vec<(String, usize)> = modules_after(&code, "crate");
    named.extend(
        strings
            .iter()
            .filter_map(|(s, l)| s.split("::").nth(1).map(|m| (m.to_string(), *l))),
    );
    assert_eq!(
        named,
        vec![
            ("run".to_string(), 2),
            ("store".to_string(), 4),
            ("config".to_string(), 5),
            ("report".to_string(), 12),
            ("spec".to_string(), 15),
        ]
    );
}

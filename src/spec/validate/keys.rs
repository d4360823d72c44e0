//! Unknown keys and wrong shapes found while serde reads the raw types, turned into located
//! problems with "did you mean" hints from the keys the level accepts.

use crate::spec::locate::{DeError, Node, Seg, path_string};
use crate::spec::raw::{STEP_KEYS, fault_attributes};
use crate::spec::{Problem, did_you_mean};

/// Turns a deserialization error into a problem; unknown keys get "did you mean" hints from
/// the keys of their level (for a fault step: the keys of its fault kind). The second value is
/// the path of the suggested key, so that it is not also reported missing.
pub(crate) fn de_problem(file: &str, e: &DeError, root: &Node) -> (Problem, Option<String>) {
    let path = e.path.clone().unwrap_or_default();
    let where_ = match path.split_last() {
        Some((_, parent)) if e.unknown.is_some() && !parent.is_empty() => {
            format!(" in `{}`", path_string(parent))
        }
        _ if e.unknown.is_some() => String::new(),
        _ if path.is_empty() => " (the whole file)".into(),
        _ => format!(" at `{}`", path_string(&path)),
    };
    let Some((field, expected)) = &e.unknown else {
        let hint = if e.message.starts_with("expected a sequence") {
            "write a list here: `[a, b]`, or one `- item` per line"
        } else if e.message.starts_with("expected a string") {
            "write a single value here, not a list or a map"
        } else {
            "fix the shape of this value; docs/experiment-format.md shows every key with an example"
        };
        let p = Problem::at(file, e.pos, format!("{}{where_}", e.message), hint);
        return (p, None);
    };
    let parent = path.split_last().map(|(_, p)| p).unwrap_or_default();
    let mut allowed: Vec<&str> = expected.to_vec();
    let mut kind_note = String::new();
    if is_step_path(parent)
        && let Some(kind) = root
            .at(parent)
            .and_then(|s| s.get("fault"))
            .and_then(Node::scalar)
        && let Some(attrs) = fault_attributes(kind)
    {
        allowed = STEP_KEYS.to_vec();
        allowed.extend(attrs.iter().map(|(a, _)| *a));
        kind_note = format!(" for a `{kind}` fault");
    }
    let suggestion = did_you_mean(field, allowed.iter().copied());
    let hint = match &suggestion {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("keys allowed here{kind_note}: {}", allowed.join(", ")),
    };
    let p = Problem::at(
        file,
        e.pos,
        format!("unknown key `{field}`{where_}{kind_note}"),
        hint,
    );
    let suggested = suggestion.map(|s| {
        let mut path = parent.to_vec();
        path.push(Seg::Key(s));
        path_string(&path)
    });
    (p, suggested)
}

fn is_step_path(p: &[Seg]) -> bool {
    matches!(p, [.., Seg::Key(k), Seg::Index(_)] if k == "method" || k == "parallel" || k == "sequence" || k == "during")
}

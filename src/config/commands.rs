//! `[[targets.command]]`: commands that probes, method actions and rollbacks may run.
//!
//! A command is declared by the operator with its whole command line, so an experiment can
//! only name it, never change what runs. `chaosbot import chaostoolkit` writes one per command
//! a Chaos Toolkit process provider runs, marked `generated = true`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CommandTarget {
    pub name: String,
    /// The program and its arguments, run directly (no shell).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// A command line for `/bin/sh -c` (when the words need a shell: pipes, globs, `$VAR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// Written by an importer rather than by hand (shown so operators review it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generated: bool,
}

impl CommandTarget {
    /// Exactly one of `argv` (non-empty) or `shell`; the reason otherwise.
    pub fn check(&self) -> Result<(), String> {
        match (self.argv.is_empty(), &self.shell) {
            (false, None) => Ok(()),
            (true, Some(s)) if !s.trim().is_empty() => Ok(()),
            (false, Some(_)) => Err(format!(
                "command target `{}` has both `argv` and `shell`; keep one",
                self.name
            )),
            _ => Err(format!(
                "command target `{}` needs `argv = [\"program\", \"arg\", ...]` or `shell = \"...\"`",
                self.name
            )),
        }
    }

    /// The command line as people read it.
    pub fn display(&self) -> String {
        match &self.shell {
            Some(s) => s.clone(),
            None => self.argv.join(" "),
        }
    }
}

/// The default limit of one command run when the step or probe names none.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

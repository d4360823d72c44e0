//! The agent's revert journal: `state_dir/journal.jsonl`, one JSON object per line, each
//! fsynced before the agent acts on it.
//!
//! ```text
//! {"op":"apply","fault_id":"..","run_id":"..","epoch":3,"step":"..","target":"..","family":"process","detail":{..},"deadline_ms":..}
//! {"op":"done","fault_id":"..","reason":"lease expired","at_ms":..}
//! ```
//!
//! An `apply` is written (and synced) after the family's `prepare` and before its `inject`, so
//! a crash at any point leaves what recovery needs. At start every `apply` without its `done`
//! is undone with the family's `recover`, then the file is emptied. A torn last line (a crash
//! mid-write) is skipped with a warning. The journal file is emptied again whenever no fault
//! is held, so it stays short.
//!
//! One agent per state dir: `state_dir/agent.lock` is held with an exclusive `flock` for the
//! life of the process.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const JOURNAL_FILE: &str = "journal.jsonl";
pub const LOCK_FILE: &str = "agent.lock";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "another chaosbot agent already uses state dir {dir} (it holds {dir}/agent.lock); stop it first, or give this one its own state_dir"
    )]
    Locked { dir: PathBuf },
    #[error(
        "state dir {dir}: {what}: {source}. Check that the directory exists and is writable by the agent's user"
    )]
    Io {
        dir: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Entry {
    Apply(ApplyEntry),
    Done {
        fault_id: String,
        reason: String,
        at_ms: i64,
    },
}

/// What recovery needs to undo one fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyEntry {
    pub fault_id: String,
    pub run_id: String,
    pub epoch: u64,
    pub step: String,
    pub target: String,
    pub family: String,
    pub detail: serde_json::Value,
    pub deadline_ms: i64,
}

/// The open journal and the state dir's lock (released when dropped, i.e. at exit).
pub struct Journal {
    dir: PathBuf,
    file: File,
    _lock: File,
}

impl Journal {
    /// Takes the state dir's lock, reads the journal and returns the faults applied and not
    /// done (to recover), with the journal open for appending.
    pub fn open(dir: &Path) -> Result<(Journal, Vec<ApplyEntry>), JournalError> {
        let io = |what| {
            let dir = dir.to_path_buf();
            move |source| JournalError::Io { dir, what, source }
        };
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(io("cannot create it"))?;
        if created {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io("cannot restrict it to its owner"))?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(io("cannot open agent.lock"))?;
        // SAFETY: flock on a descriptor this function owns; no memory is shared.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return Err(if err.kind() == std::io::ErrorKind::WouldBlock {
                JournalError::Locked {
                    dir: dir.to_path_buf(),
                }
            } else {
                io("cannot lock agent.lock")(err)
            });
        }
        let path = dir.join(JOURNAL_FILE);
        let existed = path.exists();
        let pending = if existed {
            read_pending(&path).map_err(io("cannot read journal.jsonl"))?
        } else {
            Vec::new()
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("cannot open journal.jsonl"))?;
        if !existed {
            // The new file's directory entry must survive a crash too.
            sync_dir(dir).map_err(io("cannot sync the directory"))?;
        }
        Ok((
            Journal {
                dir: dir.to_path_buf(),
                file,
                _lock: lock,
            },
            pending,
        ))
    }

    /// Appends one entry and syncs it to disk before returning.
    pub fn append(&mut self, entry: &Entry) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(entry).map_err(|e| JournalError::Io {
            dir: self.dir.clone(),
            what: "cannot encode an entry",
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| JournalError::Io {
                dir: self.dir.clone(),
                what: "cannot write journal.jsonl",
                source,
            })
    }

    /// Empties the journal (nothing in it is needed any more) and syncs.
    pub fn compact(&mut self) -> Result<(), JournalError> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_all())
            .map_err(|source| JournalError::Io {
                dir: self.dir.clone(),
                what: "cannot empty journal.jsonl",
                source,
            })
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The `apply` entries without a `done`, in journal order. Unparseable lines are skipped with a
/// warning (the last one may be torn by a crash mid-write; an `apply` is only acted on after
/// its line is whole and synced, so a torn one was never applied).
fn read_pending(path: &Path) -> std::io::Result<Vec<ApplyEntry>> {
    let reader = std::io::BufReader::new(File::open(path)?);
    let mut pending: Vec<ApplyEntry> = Vec::new();
    for (n, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Entry>(&line) {
            Ok(Entry::Apply(a)) => {
                pending.retain(|p| p.fault_id != a.fault_id);
                pending.push(a);
            }
            Ok(Entry::Done { fault_id, .. }) => pending.retain(|p| p.fault_id != fault_id),
            Err(e) => tracing::warn!(
                journal = %path.display(),
                line = n + 1,
                error = %e,
                "skipping an unreadable journal line (torn by a crash mid-write?)"
            ),
        }
    }
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(id: &str) -> Entry {
        Entry::Apply(ApplyEntry {
            fault_id: id.into(),
            run_id: "r-1".into(),
            epoch: 1,
            step: "s".into(),
            target: "t".into(),
            family: "process".into(),
            detail: serde_json::json!({"pids": [1]}),
            deadline_ms: 5,
        })
    }

    #[test]
    fn pending_is_apply_without_done_and_a_torn_line_is_skipped() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        {
            let (mut j, pending) = Journal::open(dir.path())?;
            assert!(pending.is_empty());
            j.append(&apply("a"))?;
            j.append(&apply("b"))?;
            j.append(&Entry::Done {
                fault_id: "a".into(),
                reason: "deadline".into(),
                at_ms: 9,
            })?;
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL_FILE))?;
        f.write_all(b"{\"op\":\"apply\",\"fault_id\":\"c\",\"ru")?;
        let (mut j, pending) = Journal::open(dir.path())?;
        let ids: Vec<_> = pending.iter().map(|p| p.fault_id.as_str()).collect();
        assert_eq!(ids, ["b"]);
        j.compact()?;
        drop(j);
        let (_j, pending) = Journal::open(dir.path())?;
        assert!(pending.is_empty());
        Ok(())
    }

    #[test]
    fn a_second_journal_on_the_same_dir_is_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let _first = Journal::open(dir.path())?;
        match Journal::open(dir.path()) {
            Err(JournalError::Locked { .. }) => Ok(()),
            Err(e) => anyhow::bail!("unexpected error: {e}"),
            Ok(_) => anyhow::bail!("the second open should be refused"),
        }
    }
}

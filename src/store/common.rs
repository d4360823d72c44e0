//! What both backends share: row shapes, their conversion into the store's records, the SQL
//! that reads the same on SQLite and Postgres, and the rules (transition checks, abort wording).
//!
//! JSON columns are read and written through `sqlx::types::Json`, which is TEXT on SQLite and
//! JSONB on Postgres, so one row type decodes on both.

use std::collections::BTreeMap;

use sqlx::types::Json;

use super::{AbortRequest, FaultRecord, RunRecord, StoreError, StoreResult};
use crate::run::{Entry, Event};
use crate::run::{RollbackOutcome, RunState, Verdict};

/// Columns of `runs` read into [`RunRow`]. A macro so it can be `concat!`ed into `'static` SQL.
macro_rules! run_columns {
    () => {
        "id, experiment, title, spec, params, seed, requested_by, source, state, verdict, \
         rollback, reason, owner, lease_until_ms, created_ms, started_ms, finished_ms, epoch"
    };
}
pub(crate) use run_columns;

/// SQL predicate for "a worker holds this run".
macro_rules! active_predicate {
    () => {
        "state NOT IN ('queued', 'done')"
    };
}

pub(crate) const SELECT_RUN: &str = concat!("SELECT ", run_columns!(), " FROM runs WHERE id = $1");

pub(crate) const LIST_RUNS: &str = concat!(
    "SELECT ",
    run_columns!(),
    " FROM runs WHERE ($1 IS NULL OR experiment = $1) ORDER BY created_ms DESC, num DESC LIMIT $2"
);

/// Runs created in `[$1, $2)`, oldest first (period summaries, the weekly digest).
pub(crate) const RUNS_BETWEEN: &str = concat!(
    "SELECT ",
    run_columns!(),
    " FROM runs WHERE created_ms >= $1 AND created_ms < $2 ORDER BY created_ms, num"
);

pub(crate) const COUNT_ACTIVE: &str =
    concat!("SELECT COUNT(*) FROM runs WHERE ", active_predicate!());

pub(crate) const CLAIM_UPDATE: &str = concat!(
    "UPDATE runs SET state = 'checking_steady_state', owner = $2, lease_until_ms = $3, \
     started_ms = $4, epoch = epoch + 1 WHERE id = $1 AND state = 'queued' RETURNING ",
    run_columns!()
);

pub(crate) const RENEW_LEASE: &str = concat!(
    "UPDATE runs SET lease_until_ms = $3 WHERE id = $1 AND owner = $2 AND ",
    active_predicate!()
);

/// Takes over active run `$1` for `$2` (lease `$3`) if it is still under epoch `$4`, raising
/// the epoch: exactly one recoverer wins, and the old owner's fenced writes fail from now on.
pub(crate) const ADOPT_ORPHAN: &str = concat!(
    "UPDATE runs SET owner = $2, lease_until_ms = $3, epoch = epoch + 1 \
     WHERE id = $1 AND epoch = $4 AND ",
    active_predicate!(),
    " RETURNING ",
    run_columns!()
);

pub(crate) const SET_STATE: &str = "UPDATE runs SET state = $2 WHERE id = $1";

/// A transition to `done` outside `finish_run` still ends ownership.
pub(crate) const SET_STATE_DONE: &str = "UPDATE runs SET state = 'done', owner = NULL, \
     lease_until_ms = NULL, finished_ms = $2 WHERE id = $1";

pub(crate) const FINISH_RUN: &str = "UPDATE runs SET state = 'done', verdict = $2, rollback = $3, \
     reason = $4, finished_ms = $5, owner = NULL, lease_until_ms = NULL WHERE id = $1";

/// Dense sequence numbers: the caller holds the run's write lock, so MAX(seq) is stable.
pub(crate) const APPEND: &str = "INSERT INTO journal (run_id, seq, at_ms, kind, data) \
     SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4 FROM journal WHERE run_id = $1 \
     RETURNING seq";

pub(crate) const JOURNAL: &str =
    "SELECT run_id, seq, at_ms, data FROM journal WHERE run_id = $1 AND seq > $2 ORDER BY seq";

pub(crate) const INSERT_ABORT: &str =
    "INSERT INTO abort_requests (run_id, requested_by, reason, at_ms) VALUES ($1, $2, $3, $4)";

pub(crate) const PENDING_ABORT: &str = "SELECT run_id, requested_by, reason, at_ms \
     FROM abort_requests WHERE run_id = $1 ORDER BY id LIMIT 1";

/// Inserts nothing (and returns no row) when the run does not exist.
pub(crate) const INSERT_FAULT: &str = "INSERT INTO faults \
     (run_id, step, target, family, detail, injected_ms, deadline_ms, owner) \
     SELECT id, $2, $3, $4, $5, $6, $7, $8 FROM runs WHERE id = $1 RETURNING id";

/// Idempotent: a second call keeps the first revert time.
pub(crate) const MARK_FAULT_REVERTED: &str =
    "UPDATE faults SET reverted_ms = COALESCE(reverted_ms, $2) WHERE id = $1";

pub(crate) const OPEN_FAULTS: &str = "SELECT id, run_id, step, target, family, detail, \
     injected_ms, deadline_ms, reverted_ms, owner FROM faults \
     WHERE run_id = $1 AND reverted_ms IS NULL ORDER BY id";

pub(crate) const ACTIVE_OWNERS: &str = concat!(
    "SELECT DISTINCT owner FROM runs WHERE owner IS NOT NULL AND ",
    active_predicate!(),
    " ORDER BY owner"
);

/// `list_runs` limit when the filter says 0.
pub(crate) const DEFAULT_LIST_LIMIT: u32 = 50;

pub(crate) fn list_limit(limit: u32) -> i64 {
    if limit == 0 {
        DEFAULT_LIST_LIMIT.into()
    } else {
        limit.into()
    }
}

pub(crate) fn lease_until(now_ms: i64, lease: std::time::Duration) -> i64 {
    now_ms.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
}

#[derive(sqlx::FromRow)]
pub(crate) struct RunRow {
    id: String,
    experiment: String,
    title: String,
    spec: Json<serde_json::Value>,
    params: Json<BTreeMap<String, String>>,
    seed: i64,
    requested_by: String,
    source: String,
    state: String,
    verdict: Option<String>,
    rollback: Option<String>,
    reason: Option<String>,
    owner: Option<String>,
    lease_until_ms: Option<i64>,
    created_ms: i64,
    started_ms: Option<i64>,
    finished_ms: Option<i64>,
    epoch: i64,
}

impl TryFrom<RunRow> for RunRecord {
    type Error = StoreError;

    fn try_from(r: RunRow) -> StoreResult<RunRecord> {
        let state = parse_state(&r.id, &r.state)?;
        let verdict = match r.verdict.as_deref() {
            None => None,
            Some(v) => Some(Verdict::parse(v).ok_or_else(|| {
                StoreError::Corrupt(format!("run `{}` has unknown verdict `{v}`", r.id))
            })?),
        };
        let rollback = match r.rollback.as_deref() {
            None => None,
            Some(v) => Some(RollbackOutcome::parse(v).ok_or_else(|| {
                StoreError::Corrupt(format!("run `{}` has unknown rollback `{v}`", r.id))
            })?),
        };
        Ok(RunRecord {
            id: r.id,
            experiment: r.experiment,
            title: r.title,
            spec: r.spec.0,
            params: r.params.0,
            // Stored bit-for-bit (see the migration).
            seed: r.seed as u64,
            requested_by: r.requested_by,
            source: crate::run::RunSource::parse(&r.source),
            state,
            verdict,
            rollback,
            reason: r.reason,
            owner: r.owner,
            lease_until_ms: r.lease_until_ms,
            created_ms: r.created_ms,
            started_ms: r.started_ms,
            finished_ms: r.finished_ms,
            epoch: u64::try_from(r.epoch).unwrap_or(0),
        })
    }
}

pub(crate) fn runs(rows: Vec<RunRow>) -> StoreResult<Vec<RunRecord>> {
    rows.into_iter().map(RunRecord::try_from).collect()
}

pub(crate) fn parse_state(id: &str, s: &str) -> StoreResult<RunState> {
    RunState::parse(s)
        .ok_or_else(|| StoreError::Corrupt(format!("run `{id}` has unknown state `{s}`")))
}

#[derive(sqlx::FromRow)]
pub(crate) struct JournalRow {
    run_id: String,
    seq: i64,
    at_ms: i64,
    data: Json<Event>,
}

impl From<JournalRow> for Entry {
    fn from(r: JournalRow) -> Entry {
        Entry {
            run_id: r.run_id,
            seq: r.seq,
            at_ms: r.at_ms,
            event: r.data.0,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct FaultRow {
    id: i64,
    run_id: String,
    step: String,
    target: String,
    family: String,
    detail: Json<serde_json::Value>,
    injected_ms: i64,
    deadline_ms: i64,
    reverted_ms: Option<i64>,
    owner: String,
}

impl From<FaultRow> for FaultRecord {
    fn from(r: FaultRow) -> FaultRecord {
        FaultRecord {
            id: r.id,
            run_id: r.run_id,
            step: r.step,
            target: r.target,
            family: r.family,
            detail: r.detail.0,
            injected_ms: r.injected_ms,
            deadline_ms: r.deadline_ms,
            reverted_ms: r.reverted_ms,
            owner: r.owner,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AbortRow {
    run_id: String,
    requested_by: String,
    reason: String,
    at_ms: i64,
}

impl From<AbortRow> for AbortRequest {
    fn from(r: AbortRow) -> AbortRequest {
        AbortRequest {
            run_id: r.run_id,
            requested_by: r.requested_by,
            reason: r.reason,
            at_ms: r.at_ms,
        }
    }
}

/// The lifecycle and ownership rules of `transition`, given the run's locked row.
pub(crate) fn check_transition(
    id: &str,
    owner: &str,
    state: &str,
    row_owner: Option<&str>,
    to: RunState,
) -> StoreResult<RunState> {
    let from = parse_state(id, state)?;
    if row_owner != Some(owner) {
        return Err(StoreError::LeaseLost(id.to_string()));
    }
    if !from.can_go_to(to) {
        return Err(StoreError::BadTransition {
            id: id.to_string(),
            from,
            to,
        });
    }
    Ok(from)
}

/// The verdict reason of a queued run closed by an abort request.
pub(crate) fn queued_abort_reason(requested_by: &str, reason: &str) -> String {
    format!("aborted by {requested_by} before it started: {reason}")
}

pub(crate) fn verdict_event(verdict: Verdict, rollback: RollbackOutcome, reason: &str) -> Event {
    Event::Verdict {
        verdict,
        rollback,
        reason: reason.to_string(),
    }
}

/// The URL with any password masked, for error messages and logs.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_string(),
    }
}

/// A queued run (`runs` in the outer query) none of whose targets an active run holds.
macro_rules! not_held_predicate {
    () => {
        "NOT EXISTS (SELECT 1 FROM run_targets mine \
         JOIN run_targets theirs ON theirs.target = mine.target AND theirs.run_id <> mine.run_id \
         JOIN runs holder ON holder.id = theirs.run_id \
         WHERE mine.run_id = runs.id AND holder.state NOT IN ('queued', 'done'))"
    };
}
pub(crate) use not_held_predicate;

pub(crate) const INSERT_RUN_TARGET: &str =
    "INSERT INTO run_targets (run_id, target) VALUES ($1, $2) ON CONFLICT DO NOTHING";

/// The active runs holding `$1` (a target).
pub(crate) const TARGET_HOLDERS: &str = "SELECT t.target, r.id, r.requested_by, r.source \
     FROM run_targets t JOIN runs r ON r.id = t.run_id \
     WHERE t.target = $1 AND r.state NOT IN ('queued', 'done') ORDER BY r.created_ms, r.num";

/// The targets of run `$1`.
pub(crate) const RUN_TARGETS: &str =
    "SELECT target FROM run_targets WHERE run_id = $1 ORDER BY target";

/// How many queued runs older than `$1` share one of its targets.
pub(crate) const QUEUED_AHEAD: &str = "SELECT COUNT(DISTINCT q.id) FROM runs me \
     JOIN run_targets mt ON mt.run_id = me.id \
     JOIN run_targets qt ON qt.target = mt.target AND qt.run_id <> me.id \
     JOIN runs q ON q.id = qt.run_id \
     WHERE me.id = $1 AND q.state = 'queued' \
     AND (q.created_ms < me.created_ms OR (q.created_ms = me.created_ms AND q.num < me.num))";

/// Closes run `$1` as failed only if it is still queued (a claimer may just have taken it).
pub(crate) const FAIL_QUEUED: &str = "UPDATE runs SET state = 'done', verdict = 'failed', \
     rollback = 'nothing-to-revert', reason = $2, finished_ms = $3 \
     WHERE id = $1 AND state = 'queued'";

/// Queued runs created before `$1`, oldest first.
pub(crate) const QUEUED_BEFORE: &str =
    "SELECT id FROM runs WHERE state = 'queued' AND created_ms < $1 ORDER BY created_ms, num";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_masks_only_the_password() {
        assert_eq!(
            redact("postgres://bot:s3cret@db:5432/chaos"),
            "postgres://bot:***@db:5432/chaos"
        );
        assert_eq!(redact("postgres://bot@db/chaos"), "postgres://bot@db/chaos");
        assert_eq!(redact("sqlite://a.db"), "sqlite://a.db");
        assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
    }

    #[test]
    fn list_limit_defaults_to_50() {
        assert_eq!(list_limit(0), 50);
        assert_eq!(list_limit(7), 7);
    }
}

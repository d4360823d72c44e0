//! Postgres backend: for several replicas sharing one database.
//!
//! Concurrency comes from row locks. Every write that reads before it writes (a transition,
//! an append's `MAX(seq) + 1`, an abort) first locks the run's row `FOR UPDATE`, so writers of
//! one run queue up while other runs proceed. Claiming also takes a transaction-scoped advisory
//! lock, which makes the `max_active` count exact across replicas; the queued row itself is
//! picked `FOR UPDATE SKIP LOCKED` so a claimer never waits on a run someone else is touching.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use super::common::{self, AbortRow, FaultRow, JournalRow, RunRow, run_columns};
use super::{
    AbortOutcome, AbortRequest, AbortScope, FaultRecord, NewFault, NewRun, RunFilter, RunRecord,
    Store, StoreError, StoreResult,
};
use crate::run::{Entry, Event, now_ms};
use crate::run::{RollbackOutcome, RunState, Verdict};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// How long opening the store, or waiting for a pooled connection, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: u32 = 10;

/// Advisory lock key serializing claims ("chaosbot" in ASCII).
const CLAIM_LOCK_KEY: i64 = 0x6368_616f_7362_6f74;

const INSERT_RUN: &str = "INSERT INTO runs (id, experiment, title, spec, params, seed, \
     requested_by, source, state, created_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9)";

const OLDEST_QUEUED: &str = "SELECT id FROM runs WHERE state = 'queued' \
     ORDER BY created_ms, num LIMIT 1 FOR UPDATE SKIP LOCKED";

const QUEUED_BY_ID: &str =
    "SELECT id FROM runs WHERE state = 'queued' AND id = $1 FOR UPDATE SKIP LOCKED";

const LOCK_RUN: &str = "SELECT state, owner FROM runs WHERE id = $1 FOR UPDATE";

/// Locked in one order (oldest first) so two concurrent aborts cannot deadlock.
const LOCK_ABORTABLE_RUNS: &str =
    "SELECT id, state FROM runs WHERE state <> 'done' ORDER BY created_ms, num FOR UPDATE";

const ORPHANED: &str = concat!(
    "SELECT ",
    run_columns!(),
    " FROM runs WHERE state NOT IN ('queued', 'done') \
     AND (lease_until_ms IS NULL OR lease_until_ms < $1 OR owner = ANY($2)) \
     ORDER BY created_ms, num"
);

pub struct PostgresStore {
    pub(super) pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database named by a `postgres://` URL and applies the migrations.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let shown = common::redact(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::UnsupportedUrl(shown.clone()))?;
        let connect_error = |source| StoreError::Connect {
            url: shown.clone(),
            source,
        };

        // One direct attempt first: the pool would retry a refused connection until its
        // timeout and then report only "timed out", hiding the reason (refused, bad password,
        // no such database).
        let probe = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
            .await
            .map_err(|_| {
                connect_error(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                )))
            })?
            .map_err(connect_error)?;
        // The probe has done its job; a failed goodbye does not matter.
        let _ = probe.close().await;

        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        MIGRATOR.run(&pool).await?;
        tracing::info!(url = %shown, "postgres store open");
        Ok(PostgresStore { pool })
    }
}

/// Appends with the next sequence number. The caller must hold the run's row lock.
async fn append_locked(conn: &mut PgConnection, id: &str, event: &Event) -> StoreResult<Entry> {
    let at_ms = now_ms();
    let seq: i64 = sqlx::query_scalar(common::APPEND)
        .bind(id)
        .bind(at_ms)
        .bind(event.kind())
        .bind(Json(event))
        .fetch_one(&mut *conn)
        .await?;
    Ok(Entry {
        run_id: id.to_string(),
        seq,
        at_ms,
        event: event.clone(),
    })
}

/// Locks the run's row for the rest of the transaction; returns its state and owner.
async fn lock_run(conn: &mut PgConnection, id: &str) -> StoreResult<(String, Option<String>)> {
    sqlx::query_as(LOCK_RUN)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NoSuchRun(id.to_string()))
}

async fn finish_locked(
    conn: &mut PgConnection,
    id: &str,
    verdict: Verdict,
    rollback: RollbackOutcome,
    reason: &str,
) -> StoreResult<Entry> {
    sqlx::query(common::FINISH_RUN)
        .bind(id)
        .bind(verdict.as_str())
        .bind(rollback.as_str())
        .bind(reason)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    append_locked(conn, id, &common::verdict_event(verdict, rollback, reason)).await
}

/// The advisory lock that orders run creation against `set_halt` (key: "halt" in ASCII).
const HALT_LOCK_SHARED: &str = "SELECT pg_advisory_xact_lock_shared(1751215220)";
const HALT_LOCK_EXCLUSIVE: &str = "SELECT pg_advisory_xact_lock(1751215220)";

impl PostgresStore {
    /// A transaction that may put a halt in force, holding the halt lock exclusively until it
    /// commits (`create_run` takes it shared).
    pub(crate) async fn begin_halt_change(
        &self,
    ) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(HALT_LOCK_EXCLUSIVE).execute(&mut *tx).await?;
        Ok(tx)
    }

    /// Claims the oldest queued run, or the queued run `only` names, within `max_active`.
    async fn claim(
        &self,
        only: Option<&str>,
        owner: &str,
        lease: Duration,
        max_active: u32,
    ) -> StoreResult<Option<RunRecord>> {
        let mut tx = self.pool.begin().await?;
        // Held to commit: the count below stays true until our claim is visible.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CLAIM_LOCK_KEY)
            .execute(&mut *tx)
            .await?;
        let active: i64 = sqlx::query_scalar(common::COUNT_ACTIVE)
            .fetch_one(&mut *tx)
            .await?;
        if active >= i64::from(max_active) {
            return Ok(None);
        }
        let candidate = match only {
            None => {
                sqlx::query_scalar(OLDEST_QUEUED)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            Some(id) => {
                sqlx::query_scalar(QUEUED_BY_ID)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
            }
        };
        let Some(id): Option<String> = candidate else {
            return Ok(None);
        };
        let now = now_ms();
        let row: RunRow = sqlx::query_as(common::CLAIM_UPDATE)
            .bind(&id)
            .bind(owner)
            .bind(common::lease_until(now, lease))
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        let record = RunRecord::try_from(row)?;
        let event = Event::StateChanged {
            from: RunState::Queued,
            to: RunState::CheckingSteadyState,
        };
        append_locked(&mut tx, &id, &event).await?;
        tx.commit().await?;
        tracing::debug!(run = %id, owner, "claimed run");
        Ok(Some(record))
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_run(&self, run: NewRun, submitted: Event) -> StoreResult<RunRecord> {
        let created_ms = now_ms();
        let mut tx = self.pool.begin().await?;
        // The halt is checked where the run is created, under the lock `set_halt` takes
        // exclusively: either this run commits first (and the `abort all` that follows the
        // halt sees and aborts it), or this check sees the halt.
        sqlx::query(HALT_LOCK_SHARED).execute(&mut *tx).await?;
        let halt: Option<super::schedules::HaltRow> =
            sqlx::query_as(super::schedules::CURRENT_HALT)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(h) = halt {
            return Err(StoreError::Halted(Box::new(
                super::schedules::halt_from_row(h),
            )));
        }
        sqlx::query(INSERT_RUN)
            .bind(&run.id)
            .bind(&run.experiment)
            .bind(&run.title)
            .bind(Json(&run.spec))
            .bind(Json(&run.params))
            .bind(run.seed as i64)
            .bind(&run.requested_by)
            .bind(run.source.to_string())
            .bind(created_ms)
            .execute(&mut *tx)
            .await?;
        // The row is new and uncommitted: nobody else can append to it yet.
        append_locked(&mut tx, &run.id, &submitted).await?;
        tx.commit().await?;
        Ok(RunRecord {
            id: run.id,
            experiment: run.experiment,
            title: run.title,
            spec: run.spec,
            params: run.params,
            seed: run.seed,
            requested_by: run.requested_by,
            source: run.source,
            state: RunState::Queued,
            verdict: None,
            rollback: None,
            reason: None,
            owner: None,
            lease_until_ms: None,
            created_ms,
            started_ms: None,
            finished_ms: None,
        })
    }

    async fn get_run(&self, id: &str) -> StoreResult<Option<RunRecord>> {
        let row: Option<RunRow> = sqlx::query_as(common::SELECT_RUN)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(RunRecord::try_from).transpose()
    }

    async fn list_runs(&self, filter: RunFilter) -> StoreResult<Vec<RunRecord>> {
        let rows: Vec<RunRow> = sqlx::query_as(common::LIST_RUNS)
            .bind(filter.experiment)
            .bind(common::list_limit(filter.limit))
            .fetch_all(&self.pool)
            .await?;
        common::runs(rows)
    }

    async fn runs_between(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<RunRecord>> {
        let rows: Vec<RunRow> = sqlx::query_as(common::RUNS_BETWEEN)
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all(&self.pool)
            .await?;
        common::runs(rows)
    }

    async fn claim_next(
        &self,
        owner: &str,
        lease: Duration,
        max_active: u32,
    ) -> StoreResult<Option<RunRecord>> {
        self.claim(None, owner, lease, max_active).await
    }

    async fn claim_run(
        &self,
        id: &str,
        owner: &str,
        lease: Duration,
        max_active: u32,
    ) -> StoreResult<Option<RunRecord>> {
        self.claim(Some(id), owner, lease, max_active).await
    }

    async fn renew_lease(&self, id: &str, owner: &str, lease: Duration) -> StoreResult<()> {
        let done = sqlx::query(common::RENEW_LEASE)
            .bind(id)
            .bind(owner)
            .bind(common::lease_until(now_ms(), lease))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        match self.get_run(id).await? {
            None => Err(StoreError::NoSuchRun(id.to_string())),
            Some(_) => Err(StoreError::LeaseLost(id.to_string())),
        }
    }

    async fn transition(&self, id: &str, owner: &str, to: RunState) -> StoreResult<Entry> {
        let mut tx = self.pool.begin().await?;
        let (state, row_owner) = lock_run(&mut tx, id).await?;
        let from = common::check_transition(id, owner, &state, row_owner.as_deref(), to)?;
        if to == RunState::Done {
            sqlx::query(common::SET_STATE_DONE)
                .bind(id)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(common::SET_STATE)
                .bind(id)
                .bind(to.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let entry = append_locked(&mut tx, id, &Event::StateChanged { from, to }).await?;
        tx.commit().await?;
        Ok(entry)
    }

    async fn finish_run(
        &self,
        id: &str,
        verdict: Verdict,
        rollback: RollbackOutcome,
        reason: &str,
    ) -> StoreResult<Entry> {
        let mut tx = self.pool.begin().await?;
        let (state, _) = lock_run(&mut tx, id).await?;
        if state == RunState::Done.as_str() {
            tracing::warn!(run = id, %verdict, "finishing a run that is already done");
        }
        let entry = finish_locked(&mut tx, id, verdict, rollback, reason).await?;
        tx.commit().await?;
        Ok(entry)
    }

    async fn append(&self, id: &str, event: &Event) -> StoreResult<Entry> {
        let mut tx = self.pool.begin().await?;
        lock_run(&mut tx, id).await?;
        let entry = append_locked(&mut tx, id, event).await?;
        tx.commit().await?;
        Ok(entry)
    }

    async fn journal(&self, id: &str, after_seq: i64) -> StoreResult<Vec<Entry>> {
        let rows: Vec<JournalRow> = sqlx::query_as(common::JOURNAL)
            .bind(id)
            .bind(after_seq)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(Entry::from).collect())
    }

    async fn request_abort(
        &self,
        scope: AbortScope,
        requested_by: &str,
        reason: &str,
    ) -> StoreResult<AbortOutcome> {
        let mut tx = self.pool.begin().await?;
        let targets: Vec<(String, String)> = match &scope {
            AbortScope::Run(id) => {
                let (state, _) = lock_run(&mut tx, id).await?;
                vec![(id.clone(), state)]
            }
            AbortScope::All => {
                sqlx::query_as(LOCK_ABORTABLE_RUNS)
                    .fetch_all(&mut *tx)
                    .await?
            }
        };
        let mut outcome = AbortOutcome::default();
        let asked = Event::AbortRequested {
            by: requested_by.to_string(),
            reason: reason.to_string(),
        };
        for (id, state) in targets {
            match common::parse_state(&id, &state)? {
                RunState::Done => {}
                RunState::Queued => {
                    append_locked(&mut tx, &id, &asked).await?;
                    let why = common::queued_abort_reason(requested_by, reason);
                    finish_locked(
                        &mut tx,
                        &id,
                        Verdict::Aborted,
                        RollbackOutcome::NothingToRevert,
                        &why,
                    )
                    .await?;
                    outcome.cancelled_queued.push(id);
                }
                _ => {
                    sqlx::query(common::INSERT_ABORT)
                        .bind(&id)
                        .bind(requested_by)
                        .bind(reason)
                        .bind(now_ms())
                        .execute(&mut *tx)
                        .await?;
                    append_locked(&mut tx, &id, &asked).await?;
                    outcome.signalled_running.push(id);
                }
            }
        }
        tx.commit().await?;
        tracing::info!(?scope, requested_by, ?outcome, "abort requested");
        Ok(outcome)
    }

    async fn pending_abort(&self, id: &str) -> StoreResult<Option<AbortRequest>> {
        let row: Option<AbortRow> = sqlx::query_as(common::PENDING_ABORT)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(AbortRequest::from))
    }

    async fn record_fault(&self, fault: NewFault) -> StoreResult<i64> {
        let id: Option<i64> = sqlx::query_scalar(common::INSERT_FAULT)
            .bind(&fault.run_id)
            .bind(&fault.step)
            .bind(&fault.target)
            .bind(&fault.family)
            .bind(Json(&fault.detail))
            .bind(now_ms())
            .bind(fault.deadline_ms)
            .bind(&fault.owner)
            .fetch_optional(&self.pool)
            .await?;
        id.ok_or(StoreError::NoSuchRun(fault.run_id))
    }

    async fn mark_fault_reverted(&self, fault_id: i64) -> StoreResult<()> {
        let done = sqlx::query(common::MARK_FAULT_REVERTED)
            .bind(fault_id)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NoSuchFault(fault_id));
        }
        Ok(())
    }

    async fn open_faults(&self, run_id: &str) -> StoreResult<Vec<FaultRecord>> {
        let rows: Vec<FaultRow> = sqlx::query_as(common::OPEN_FAULTS)
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(FaultRecord::from).collect())
    }

    async fn orphaned_runs(
        &self,
        now_ms: i64,
        dead_owners: &[String],
    ) -> StoreResult<Vec<RunRecord>> {
        let rows: Vec<RunRow> = sqlx::query_as(ORPHANED)
            .bind(now_ms)
            .bind(dead_owners)
            .fetch_all(&self.pool)
            .await?;
        common::runs(rows)
    }

    async fn active_owners(&self) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(common::ACTIVE_OWNERS)
            .fetch_all(&self.pool)
            .await?)
    }
}

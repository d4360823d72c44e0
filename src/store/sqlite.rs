//! SQLite backend: one file in WAL mode, the embedded default for a single process.
//!
//! Every write runs in a `BEGIN IMMEDIATE` transaction. SQLite then takes its one write lock
//! up front, so read-then-write sequences (claiming, `MAX(seq) + 1`) are serialized across the
//! pool's connections, and a deferred transaction never fails half-way trying to upgrade its
//! read lock. Waiting for the lock is bounded by the busy timeout.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{SqliteConnection, SqlitePool};

use super::common::{self, AbortRow, FaultRow, JournalRow, RunRow, run_columns};
use super::{
    AbortOutcome, AbortRequest, AbortScope, FaultRecord, NewFault, NewRun, RunFilter, RunRecord,
    Store, StoreError, StoreResult,
};
use crate::run::{Entry, Event, now_ms};
use crate::run::{RollbackOutcome, RunState, Verdict};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a writer waits for another connection's write transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: u32 = 8;

const INSERT_RUN: &str = "INSERT INTO runs (id, num, experiment, title, spec, params, seed, \
     requested_by, source, state, created_ms) \
     SELECT $1, COALESCE(MAX(num), 0) + 1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9 FROM runs";

const OLDEST_QUEUED: &str =
    "SELECT id FROM runs WHERE state = 'queued' ORDER BY created_ms, num LIMIT 1";

const QUEUED_BY_ID: &str = "SELECT id FROM runs WHERE state = 'queued' AND id = $1";

const RUN_STATE: &str = "SELECT state, owner FROM runs WHERE id = $1";

const ABORTABLE_RUNS: &str =
    "SELECT id, state FROM runs WHERE state <> 'done' ORDER BY created_ms, num";

/// Dead owners are bound as one JSON array (SQLite has no array parameters).
const ORPHANED: &str = concat!(
    "SELECT ",
    run_columns!(),
    " FROM runs WHERE state NOT IN ('queued', 'done') \
     AND (lease_until_ms IS NULL OR lease_until_ms < $1 \
          OR owner IN (SELECT value FROM json_each($2))) \
     ORDER BY created_ms, num"
);

pub struct SqliteStore {
    pub(super) pool: SqlitePool,
}

/// Applies the migrations. sqlx takes no lock on SQLite, so two processes opening a fresh
/// file at once (two `chaosbot run` in two terminals) race to create the tables; the loser's
/// migration transaction rolls back, and on a retry it finds them applied.
async fn migrate(pool: &SqlitePool) -> StoreResult<()> {
    let mut attempt = 0u64;
    loop {
        match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 10 => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "migration raced another process; retrying");
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl SqliteStore {
    /// Opens (creating it if missing) the database named by a `sqlite://PATH` or
    /// `sqlite::memory:` URL and applies the migrations.
    pub async fn open(url: &str) -> StoreResult<Self> {
        // Switching a fresh file to WAL needs a moment of exclusive access, which SQLite's busy
        // handler does not wait for: another process opening it at the same instant gets
        // SQLITE_BUSY. That is transient, so try again briefly.
        let mut attempt = 0u64;
        loop {
            match Self::open_once(url).await {
                Err(StoreError::Connect {
                    source: sqlx::Error::Database(db),
                    ..
                }) if attempt < 10 && db.code().as_deref() == Some("5") => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn open_once(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|_| StoreError::UnsupportedUrl(url.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL is durable across application crashes; only an OS crash can
            // lose the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);

        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = if in_memory {
            // An in-memory database lives as long as its connection: keep exactly one, forever.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(MAX_CONNECTIONS)
        }
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Connect {
            url: url.to_string(),
            source,
        })?;

        migrate(&pool).await?;
        tracing::info!(url, "sqlite store open");
        Ok(SqliteStore { pool })
    }

    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// A transaction that may put a halt in force: SQLite serializes writers, so a write
    /// transaction is all the exclusion `create_run` needs.
    pub(crate) async fn begin_halt_change(
        &self,
    ) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.begin_write().await
    }
}

async fn append_in(conn: &mut SqliteConnection, id: &str, event: &Event) -> StoreResult<Entry> {
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

async fn run_state(conn: &mut SqliteConnection, id: &str) -> StoreResult<(String, Option<String>)> {
    sqlx::query_as(RUN_STATE)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NoSuchRun(id.to_string()))
}

async fn finish_in(
    conn: &mut SqliteConnection,
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
    append_in(conn, id, &common::verdict_event(verdict, rollback, reason)).await
}

impl SqliteStore {
    /// Claims the oldest queued run, or the queued run `only` names, within `max_active`.
    async fn claim(
        &self,
        only: Option<&str>,
        owner: &str,
        lease: Duration,
        max_active: u32,
    ) -> StoreResult<Option<RunRecord>> {
        // The write lock is held from the count to the commit, so no other claimer can slip in
        // between and exceed `max_active` or take the same run.
        let mut tx = self.begin_write().await?;
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
        append_in(&mut tx, &id, &event).await?;
        tx.commit().await?;
        tracing::debug!(run = %id, owner, "claimed run");
        Ok(Some(record))
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_run(&self, run: NewRun, submitted: Event) -> StoreResult<RunRecord> {
        let created_ms = now_ms();
        let mut tx = self.begin_write().await?;
        // The halt is checked where the run is created: writers are serialized, so no
        // `abort all` can land between this check and the insert.
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
        append_in(&mut tx, &run.id, &submitted).await?;
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
        let mut tx = self.begin_write().await?;
        let (state, row_owner) = run_state(&mut tx, id).await?;
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
        let entry = append_in(&mut tx, id, &Event::StateChanged { from, to }).await?;
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
        let mut tx = self.begin_write().await?;
        let (state, _) = run_state(&mut tx, id).await?;
        if state == RunState::Done.as_str() {
            tracing::warn!(run = id, %verdict, "finishing a run that is already done");
        }
        let entry = finish_in(&mut tx, id, verdict, rollback, reason).await?;
        tx.commit().await?;
        Ok(entry)
    }

    async fn append(&self, id: &str, event: &Event) -> StoreResult<Entry> {
        let mut tx = self.begin_write().await?;
        run_state(&mut tx, id).await?;
        let entry = append_in(&mut tx, id, event).await?;
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
        let mut tx = self.begin_write().await?;
        let targets: Vec<(String, String)> = match &scope {
            AbortScope::Run(id) => {
                let (state, _) = run_state(&mut tx, id).await?;
                vec![(id.clone(), state)]
            }
            AbortScope::All => sqlx::query_as(ABORTABLE_RUNS).fetch_all(&mut *tx).await?,
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
                    append_in(&mut tx, &id, &asked).await?;
                    let why = common::queued_abort_reason(requested_by, reason);
                    finish_in(
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
                    append_in(&mut tx, &id, &asked).await?;
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
            .bind(Json(dead_owners))
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

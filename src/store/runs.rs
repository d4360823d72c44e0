//! The core store, once for both backends: runs and their leases, journals, abort requests
//! and faults ([`RunStore`], [`JournalStore`], [`AbortStore`], [`FaultStore`] and [`Store`]).
//!
//! `impl_run_store!` is expanded for each backend. What differs between them, the dialect
//! points, each backend defines on its store type (`sqlite.rs`, `postgres.rs`):
//!
//! - `begin_write()`: how a write transaction begins (SQLite `BEGIN IMMEDIATE` takes the one
//!   write lock up front; Postgres relies on row locks).
//! - `LOCK_RUN`, `LOCK_ABORTABLE_RUNS`, `OLDEST_QUEUED`, `QUEUED_BY_ID`: reads that lock the
//!   rows they return where the backend locks rows (`FOR UPDATE [SKIP LOCKED]` on Postgres;
//!   plain reads on SQLite, whose write transaction already excludes every other writer).
//! - `lock_claims()`: what makes a claim's `max_active` count exact until commit.
//! - `lock_halt_shared()`: the halt lock `create_run` holds while it checks for a halt
//!   (`set_halt` takes it exclusively through `begin_halt_change()`).
//! - `INSERT_RUN` (SQLite numbers runs itself), `ORPHANED` and `dead_owners_param()` (how a
//!   list of owners is bound).

use std::time::Duration;

use sqlx::types::Json;

use super::common::{self, AbortRow, FaultRow, JournalRow, RunRow};
use super::schedules;
use super::{
    AbortOutcome, AbortRequest, AbortScope, FaultRecord, Fence, NewFault, NewRun, QueuePlace,
    RunFilter, RunRecord, StoreError, StoreResult, TargetHold,
};
use super::{AbortStore, FaultStore, JournalStore, RunStore, Store};
use crate::run::{Entry, Event, RunSource, now_ms};
use crate::run::{RollbackOutcome, RunState, Verdict};

/// Implements the core store for `$store`, whose pool holds `$db` connections.
macro_rules! impl_run_store {
    ($store:ty, $db:ty, $backend:literal) => {
        impl $store {
            /// Appends with the next sequence number. The caller holds the run's write lock
            /// (SQLite: the write transaction; Postgres: the run's row lock, or a row not yet
            /// committed).
            async fn append_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: &str,
                event: &Event,
            ) -> StoreResult<Entry> {
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

            /// The run's state and owner, its row locked for the rest of the transaction.
            async fn lock_run(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: &str,
            ) -> StoreResult<(String, Option<String>)> {
                sqlx::query_as(Self::LOCK_RUN)
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await?
                    .ok_or_else(|| StoreError::NoSuchRun(id.to_string()))
            }

            /// Locks the run's row and checks that `fence` still holds it: the run is active,
            /// owned by `fence.owner` under `fence.epoch`. `LeaseLost` otherwise.
            async fn check_fence(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: &str,
                fence: &Fence,
            ) -> StoreResult<()> {
                let (state, owner, epoch): (String, Option<String>, i64) =
                    sqlx::query_as(Self::LOCK_RUN_FENCE)
                        .bind(id)
                        .fetch_optional(&mut *conn)
                        .await?
                        .ok_or_else(|| StoreError::NoSuchRun(id.to_string()))?;
                let active = state != RunState::Done.as_str() && state != RunState::Queued.as_str();
                if active
                    && owner.as_deref() == Some(fence.owner.as_str())
                    && u64::try_from(epoch).ok() == Some(fence.epoch)
                {
                    return Ok(());
                }
                tracing::warn!(
                    run = id,
                    fence_owner = %fence.owner,
                    fence_epoch = fence.epoch,
                    row_owner = ?owner,
                    row_epoch = epoch,
                    %state,
                    "fenced write refused: the run is no longer ours"
                );
                Err(StoreError::LeaseLost(id.to_string()))
            }

            async fn finish_in(
                conn: &mut <$db as sqlx::Database>::Connection,
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
                let event = common::verdict_event(verdict, rollback, reason);
                Self::append_in(conn, id, &event).await
            }

            /// Claims the oldest queued run, or the queued run `only` names, within `max_active`.
            async fn claim(
                &self,
                only: Option<&str>,
                owner: &str,
                lease: Duration,
                max_active: u32,
            ) -> StoreResult<Option<RunRecord>> {
                let mut tx = self.begin_write().await?;
                // Held to commit: no other claimer can slip in between the count and our claim
                // and exceed `max_active` or take the same run.
                Self::lock_claims(&mut tx).await?;
                let active: i64 = sqlx::query_scalar(common::COUNT_ACTIVE)
                    .fetch_one(&mut *tx)
                    .await?;
                if active >= i64::from(max_active) {
                    return Ok(None);
                }
                let candidate = match only {
                    None => {
                        sqlx::query_scalar(Self::OLDEST_QUEUED)
                            .fetch_optional(&mut *tx)
                            .await?
                    }
                    Some(id) => {
                        sqlx::query_scalar(Self::QUEUED_BY_ID)
                            .bind(id)
                            .fetch_optional(&mut *tx)
                            .await?
                    }
                };
                let Some(id): Option<String> = candidate else {
                    return Ok(None);
                };
                let now = now_ms();
                let clock = Self::db_clock_ms(&mut tx).await?;
                let row: RunRow = sqlx::query_as(common::CLAIM_UPDATE)
                    .bind(&id)
                    .bind(owner)
                    .bind(common::lease_until(clock, lease))
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                let record = RunRecord::try_from(row)?;
                let event = Event::StateChanged {
                    from: RunState::Queued,
                    to: RunState::CheckingSteadyState,
                };
                Self::append_in(&mut tx, &id, &event).await?;
                tx.commit().await?;
                tracing::debug!(run = %id, owner, "claimed run");
                Ok(Some(record))
            }
        }

        #[async_trait::async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<super::Change>> {
                self.change_feed()
            }
        }

        #[async_trait::async_trait]
        impl RunStore for $store {
            async fn create_run(&self, run: NewRun, submitted: Event) -> StoreResult<RunRecord> {
                let created_ms = now_ms();
                let mut tx = self.begin_write().await?;
                // The halt is checked where the run is created, under the lock `set_halt`
                // takes: either this run commits first (and the `abort all` that follows the
                // halt sees and aborts it), or this check sees the halt.
                Self::lock_halt_shared(&mut tx).await?;
                let halt: Option<schedules::HaltRow> = sqlx::query_as(schedules::CURRENT_HALT)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(h) = halt {
                    return Err(StoreError::Halted(Box::new(schedules::halt_from_row(h))));
                }
                sqlx::query(Self::INSERT_RUN)
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
                if let Event::Submitted { targets, .. } = &submitted {
                    for t in targets {
                        sqlx::query(common::INSERT_RUN_TARGET)
                            .bind(&run.id)
                            .bind(t)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                // The row is new and uncommitted: nobody else can append to it yet.
                Self::append_in(&mut tx, &run.id, &submitted).await?;
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
                    epoch: 0,
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
                let mut conn = self.pool.acquire().await?;
                let clock = Self::db_clock_ms(&mut conn).await?;
                let done = sqlx::query(common::RENEW_LEASE)
                    .bind(id)
                    .bind(owner)
                    .bind(common::lease_until(clock, lease))
                    .execute(&mut *conn)
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
                let (state, row_owner) = Self::lock_run(&mut tx, id).await?;
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
                let entry = Self::append_in(&mut tx, id, &Event::StateChanged { from, to }).await?;
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
                let (state, _) = Self::lock_run(&mut tx, id).await?;
                if state == RunState::Done.as_str() {
                    tracing::warn!(run = id, %verdict, "finishing a run that is already done");
                }
                let entry = Self::finish_in(&mut tx, id, verdict, rollback, reason).await?;
                tx.commit().await?;
                Ok(entry)
            }

            async fn orphaned_runs(
                &self,
                now_ms: i64,
                dead_owners: &[String],
            ) -> StoreResult<Vec<RunRecord>> {
                let rows: Vec<RunRow> = sqlx::query_as(Self::ORPHANED)
                    .bind(now_ms)
                    .bind(Self::dead_owners_param(dead_owners))
                    .fetch_all(&self.pool)
                    .await?;
                common::runs(rows)
            }

            async fn adopt_orphan(
                &self,
                id: &str,
                owner: &str,
                lease: Duration,
                seen_epoch: u64,
            ) -> StoreResult<Option<RunRecord>> {
                let mut tx = self.begin_write().await?;
                let clock = Self::db_clock_ms(&mut tx).await?;
                let row: Option<RunRow> = sqlx::query_as(common::ADOPT_ORPHAN)
                    .bind(id)
                    .bind(owner)
                    .bind(common::lease_until(clock, lease))
                    .bind(i64::try_from(seen_epoch).unwrap_or(i64::MAX))
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                let record = row.map(RunRecord::try_from).transpose()?;
                if let Some(r) = &record {
                    tracing::info!(run = id, owner, epoch = r.epoch, "adopted an orphaned run");
                }
                Ok(record)
            }

            async fn finish_fenced(
                &self,
                id: &str,
                fence: &Fence,
                verdict: Verdict,
                rollback: RollbackOutcome,
                reason: &str,
            ) -> StoreResult<Entry> {
                let mut tx = self.begin_write().await?;
                Self::check_fence(&mut tx, id, fence).await?;
                let entry = Self::finish_in(&mut tx, id, verdict, rollback, reason).await?;
                tx.commit().await?;
                Ok(entry)
            }

            async fn clock_ms(&self) -> StoreResult<i64> {
                let mut conn = self.pool.acquire().await?;
                Self::db_clock_ms(&mut conn).await
            }

            async fn active_owners(&self) -> StoreResult<Vec<String>> {
                Ok(sqlx::query_scalar(common::ACTIVE_OWNERS)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn target_holders(&self, targets: &[String]) -> StoreResult<Vec<TargetHold>> {
                let mut out = Vec::new();
                for t in targets {
                    let rows: Vec<(String, String, String, String)> =
                        sqlx::query_as(common::TARGET_HOLDERS)
                            .bind(t)
                            .fetch_all(&self.pool)
                            .await?;
                    out.extend(rows.into_iter().map(|(target, run_id, requested_by, source)| {
                        TargetHold {
                            target,
                            run_id,
                            requested_by,
                            source: RunSource::parse(&source),
                        }
                    }));
                }
                Ok(out)
            }

            async fn queue_place(&self, id: &str) -> StoreResult<QueuePlace> {
                let targets: Vec<String> = sqlx::query_scalar(common::RUN_TARGETS)
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await?;
                let holders = self
                    .target_holders(&targets)
                    .await?
                    .into_iter()
                    .filter(|h| h.run_id != id)
                    .collect();
                let ahead: i64 = sqlx::query_scalar(common::QUEUED_AHEAD)
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(QueuePlace {
                    holders,
                    ahead: u64::try_from(ahead).unwrap_or(0),
                })
            }

            async fn fail_queued(&self, id: &str, reason: &str) -> StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(common::FAIL_QUEUED)
                    .bind(id)
                    .bind(reason)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if done == 0 {
                    return Ok(false);
                }
                let event =
                    common::verdict_event(Verdict::Failed, RollbackOutcome::NothingToRevert, reason);
                Self::append_in(&mut tx, id, &event).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn queued_before(&self, created_before_ms: i64) -> StoreResult<Vec<String>> {
                Ok(sqlx::query_scalar(common::QUEUED_BEFORE)
                    .bind(created_before_ms)
                    .fetch_all(&self.pool)
                    .await?)
            }
        }

        #[async_trait::async_trait]
        impl JournalStore for $store {
            async fn append(&self, id: &str, event: &Event) -> StoreResult<Entry> {
                let mut tx = self.begin_write().await?;
                Self::lock_run(&mut tx, id).await?;
                let entry = Self::append_in(&mut tx, id, event).await?;
                tx.commit().await?;
                Ok(entry)
            }

            async fn append_fenced(
                &self,
                id: &str,
                fence: &Fence,
                event: &Event,
            ) -> StoreResult<Entry> {
                let mut tx = self.begin_write().await?;
                Self::check_fence(&mut tx, id, fence).await?;
                let entry = Self::append_in(&mut tx, id, event).await?;
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
        }

        #[async_trait::async_trait]
        impl AbortStore for $store {
            async fn request_abort(
                &self,
                scope: AbortScope,
                requested_by: &str,
                reason: &str,
            ) -> StoreResult<AbortOutcome> {
                let mut tx = self.begin_write().await?;
                let targets: Vec<(String, String)> = match &scope {
                    AbortScope::Run(id) => {
                        let (state, _) = Self::lock_run(&mut tx, id).await?;
                        vec![(id.clone(), state)]
                    }
                    AbortScope::All => {
                        sqlx::query_as(Self::LOCK_ABORTABLE_RUNS)
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
                            Self::append_in(&mut tx, &id, &asked).await?;
                            let why = common::queued_abort_reason(requested_by, reason);
                            Self::finish_in(
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
                            Self::append_in(&mut tx, &id, &asked).await?;
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
        }

        #[async_trait::async_trait]
        impl FaultStore for $store {
            async fn record_fault(&self, fault: NewFault) -> StoreResult<i64> {
                let mut tx = self.begin_write().await?;
                if let Some(epoch) = fault.epoch {
                    let fence = Fence {
                        owner: fault.owner.clone(),
                        epoch,
                    };
                    Self::check_fence(&mut tx, &fault.run_id, &fence).await?;
                }
                let id: Option<i64> = sqlx::query_scalar(common::INSERT_FAULT)
                    .bind(&fault.run_id)
                    .bind(&fault.step)
                    .bind(&fault.target)
                    .bind(&fault.family)
                    .bind(Json(&fault.detail))
                    .bind(now_ms())
                    .bind(fault.deadline_ms)
                    .bind(&fault.owner)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
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
        }
    };
}

impl_run_store!(super::sqlite::SqliteStore, sqlx::Sqlite, "sqlite");
impl_run_store!(super::postgres::PostgresStore, sqlx::Postgres, "postgres");

//! Persistence of schedules: the schedules themselves, one row per fire a scheduler acted on,
//! and the halt that `abort all` puts in force.
//!
//! A fire happens once across replicas because its row is the lock: the heads-up is posted by
//! whoever inserts the row (`ON CONFLICT DO NOTHING`), the fire is run by whoever sets
//! `claimed_ms` (a conditional `UPDATE ... WHERE claimed_ms IS NULL`), and a Skip only counts
//! while the fire is unclaimed. Each of these is a single statement, atomic on both backends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{StoreError, StoreResult};

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: i64,
    pub experiment: String,
    /// As typed.
    pub when_text: String,
    /// The normalized 5-field cron expression.
    pub expr: String,
    /// IANA zone name.
    pub tz: String,
    pub params: BTreeMap<String, String>,
    pub team: String,
    pub channel: String,
    pub created_by: String,
    pub created_ms: i64,
    pub removed_ms: Option<i64>,
    /// The latest fire a scheduler claimed (ran, skipped or missed), if any.
    pub last_claimed_fire_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSchedule {
    pub experiment: String,
    pub when_text: String,
    pub expr: String,
    pub tz: String,
    pub params: BTreeMap<String, String>,
    pub team: String,
    pub channel: String,
    pub created_by: String,
    pub created_ms: i64,
}

/// What happened to one fire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fire {
    pub schedule_id: i64,
    pub fire_ms: i64,
    pub heads_up_ms: Option<i64>,
    pub claimed_ms: Option<i64>,
    pub claimed_by: Option<String>,
    pub run_id: Option<String>,
    /// Why it did not run (a Skip, outside the allowed hours, a halt, a busy target, missed).
    pub skipped: Option<String>,
    pub skipped_by: Option<String>,
}

/// The outcome of a Skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipOutcome {
    Skipped,
    /// It was skipped before (by a Skip, or by the scheduler with a reason).
    AlreadySkipped(Fire),
    /// A scheduler already claimed it (it ran or is starting).
    AlreadyClaimed(Fire),
}

/// A halt: while one is in force, no run starts from Slack or a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halt {
    pub id: i64,
    pub halted_by: String,
    pub reason: String,
    pub since_ms: i64,
    pub lifted_by: Option<String>,
    pub lifted_ms: Option<i64>,
}

#[async_trait::async_trait]
pub trait ScheduleStore: Send + Sync {
    async fn create_schedule(&self, s: &NewSchedule) -> StoreResult<Schedule>;

    async fn get_schedule(&self, id: i64) -> StoreResult<Option<Schedule>>;

    /// Schedules not removed, oldest first.
    async fn list_schedules(&self) -> StoreResult<Vec<Schedule>>;

    /// Marks a schedule removed. `false` when it does not exist or was removed before.
    async fn remove_schedule(&self, id: i64, by: &str, at_ms: i64) -> StoreResult<bool>;

    async fn get_fire(&self, schedule_id: i64, fire_ms: i64) -> StoreResult<Option<Fire>>;

    /// Records that the heads-up of a fire is being posted. `true` for exactly one caller.
    async fn claim_heads_up(&self, schedule_id: i64, fire_ms: i64, at_ms: i64)
    -> StoreResult<bool>;

    /// Claims a fire for `owner`. `Some(fire)` (as it stands after the claim, with any Skip)
    /// for exactly one caller, `None` for everyone else.
    async fn claim_fire(
        &self,
        schedule_id: i64,
        fire_ms: i64,
        owner: &str,
        at_ms: i64,
    ) -> StoreResult<Option<Fire>>;

    /// Skips an unclaimed fire (whether or not its heads-up went out).
    async fn skip_fire(
        &self,
        schedule_id: i64,
        fire_ms: i64,
        by: &str,
        reason: &str,
    ) -> StoreResult<SkipOutcome>;

    /// Records what a claimed fire did: the run it started, or why it did not run.
    async fn finish_fire(
        &self,
        schedule_id: i64,
        fire_ms: i64,
        run_id: Option<&str>,
        skipped: Option<&str>,
    ) -> StoreResult<()>;

    /// Puts a halt in force. When one already is, it stays as it was and is returned.
    async fn set_halt(&self, by: &str, reason: &str, at_ms: i64) -> StoreResult<Halt>;

    /// Lifts the halt in force, returning it (lifted), or `None` when none was.
    async fn lift_halt(&self, by: &str, at_ms: i64) -> StoreResult<Option<Halt>>;

    async fn current_halt(&self) -> StoreResult<Option<Halt>>;
}

// ---- implementations (the SQL is shared: `$n` placeholders, `ON CONFLICT DO NOTHING` and
// `RETURNING` work on SQLite and Postgres alike) ----

const INSERT_SCHEDULE: &str = "INSERT INTO schedules \
     (experiment, when_text, expr, tz, params, team, channel, created_by, created_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id";

const GET_SCHEDULE: &str = "SELECT s.id, s.experiment, s.when_text, s.expr, s.tz, s.params, s.team, \
     s.channel, s.created_by, s.created_ms, s.removed_ms, \
     (SELECT MAX(f.fire_ms) FROM schedule_fires f \
      WHERE f.schedule_id = s.id AND f.claimed_ms IS NOT NULL) \
     FROM schedules s WHERE s.id = $1";
// The last column is the latest claimed fire: where the scheduler picks up after a restart.
const LIST_SCHEDULES: &str = "SELECT s.id, s.experiment, s.when_text, s.expr, s.tz, s.params, s.team, \
     s.channel, s.created_by, s.created_ms, s.removed_ms, \
     (SELECT MAX(f.fire_ms) FROM schedule_fires f \
      WHERE f.schedule_id = s.id AND f.claimed_ms IS NOT NULL) \
     FROM schedules s WHERE s.removed_ms IS NULL ORDER BY s.id";

const REMOVE_SCHEDULE: &str = "UPDATE schedules SET removed_ms = $2, removed_by = $3 \
     WHERE id = $1 AND removed_ms IS NULL";

const GET_FIRE: &str = "SELECT schedule_id, fire_ms, heads_up_ms, claimed_ms, claimed_by, run_id, \
     skipped, skipped_by FROM schedule_fires WHERE schedule_id = $1 AND fire_ms = $2";

const HEADS_UP: &str = "INSERT INTO schedule_fires (schedule_id, fire_ms, heads_up_ms) \
     VALUES ($1, $2, $3) ON CONFLICT (schedule_id, fire_ms) DO NOTHING";

const ENSURE_FIRE: &str = "INSERT INTO schedule_fires (schedule_id, fire_ms) VALUES ($1, $2) \
     ON CONFLICT (schedule_id, fire_ms) DO NOTHING";

const CLAIM_FIRE: &str = "UPDATE schedule_fires SET claimed_ms = $3, claimed_by = $4 \
     WHERE schedule_id = $1 AND fire_ms = $2 AND claimed_ms IS NULL";

const SKIP_FIRE: &str = "UPDATE schedule_fires SET skipped = $3, skipped_by = $4 \
     WHERE schedule_id = $1 AND fire_ms = $2 AND claimed_ms IS NULL AND skipped IS NULL";

const FINISH_FIRE: &str = "UPDATE schedule_fires SET run_id = $3, skipped = COALESCE($4, skipped) \
     WHERE schedule_id = $1 AND fire_ms = $2";

pub(crate) const CURRENT_HALT: &str = "SELECT id, halted_by, reason, since_ms, lifted_by, lifted_ms \
     FROM halts WHERE lifted_ms IS NULL ORDER BY id DESC LIMIT 1";

const INSERT_HALT: &str = "INSERT INTO halts (halted_by, reason, since_ms) VALUES ($1, $2, $3) \
     RETURNING id, halted_by, reason, since_ms, lifted_by, lifted_ms";

const LIFT_HALTS: &str = "UPDATE halts SET lifted_by = $1, lifted_ms = $2 WHERE lifted_ms IS NULL";

type ScheduleRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
);

fn schedule_from_row(r: ScheduleRow) -> StoreResult<Schedule> {
    let params: BTreeMap<String, String> = serde_json::from_str(&r.5)
        .map_err(|e| StoreError::Corrupt(format!("params of schedule {}: {e}", r.0)))?;
    Ok(Schedule {
        id: r.0,
        experiment: r.1,
        when_text: r.2,
        expr: r.3,
        tz: r.4,
        params,
        team: r.6,
        channel: r.7,
        created_by: r.8,
        created_ms: r.9,
        removed_ms: r.10,
        last_claimed_fire_ms: r.11,
    })
}

type FireRow = (
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn fire_from_row(r: FireRow) -> Fire {
    Fire {
        schedule_id: r.0,
        fire_ms: r.1,
        heads_up_ms: r.2,
        claimed_ms: r.3,
        claimed_by: r.4,
        run_id: r.5,
        skipped: r.6,
        skipped_by: r.7,
    }
}

pub(crate) type HaltRow = (i64, String, String, i64, Option<String>, Option<i64>);

pub(crate) fn halt_from_row(r: HaltRow) -> Halt {
    Halt {
        id: r.0,
        halted_by: r.1,
        reason: r.2,
        since_ms: r.3,
        lifted_by: r.4,
        lifted_ms: r.5,
    }
}

/// One implementation for both backends: the SQL is the same, only the pool type differs.
macro_rules! impl_schedule_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl ScheduleStore for $store {
            async fn create_schedule(&self, s: &NewSchedule) -> StoreResult<Schedule> {
                let params = serde_json::to_string(&s.params)
                    .map_err(|e| StoreError::Corrupt(format!("schedule params: {e}")))?;
                let (id,): (i64,) = sqlx::query_as(INSERT_SCHEDULE)
                    .bind(&s.experiment)
                    .bind(&s.when_text)
                    .bind(&s.expr)
                    .bind(&s.tz)
                    .bind(&params)
                    .bind(&s.team)
                    .bind(&s.channel)
                    .bind(&s.created_by)
                    .bind(s.created_ms)
                    .fetch_one(&self.pool)
                    .await?;
                self.get_schedule(id)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt(format!("schedule {id} vanished")))
            }

            async fn get_schedule(&self, id: i64) -> StoreResult<Option<Schedule>> {
                let row: Option<ScheduleRow> = sqlx::query_as(GET_SCHEDULE)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(schedule_from_row).transpose()
            }

            async fn list_schedules(&self) -> StoreResult<Vec<Schedule>> {
                let rows: Vec<ScheduleRow> =
                    sqlx::query_as(LIST_SCHEDULES).fetch_all(&self.pool).await?;
                rows.into_iter().map(schedule_from_row).collect()
            }

            async fn remove_schedule(&self, id: i64, by: &str, at_ms: i64) -> StoreResult<bool> {
                let done = sqlx::query(REMOVE_SCHEDULE)
                    .bind(id)
                    .bind(at_ms)
                    .bind(by)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn get_fire(&self, schedule_id: i64, fire_ms: i64) -> StoreResult<Option<Fire>> {
                let row: Option<FireRow> = sqlx::query_as(GET_FIRE)
                    .bind(schedule_id)
                    .bind(fire_ms)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(fire_from_row))
            }

            async fn claim_heads_up(
                &self,
                schedule_id: i64,
                fire_ms: i64,
                at_ms: i64,
            ) -> StoreResult<bool> {
                let done = sqlx::query(HEADS_UP)
                    .bind(schedule_id)
                    .bind(fire_ms)
                    .bind(at_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn claim_fire(
                &self,
                schedule_id: i64,
                fire_ms: i64,
                owner: &str,
                at_ms: i64,
            ) -> StoreResult<Option<Fire>> {
                sqlx::query(ENSURE_FIRE)
                    .bind(schedule_id)
                    .bind(fire_ms)
                    .execute(&self.pool)
                    .await?;
                let done = sqlx::query(CLAIM_FIRE)
                    .bind(schedule_id)
                    .bind(fire_ms)
                    .bind(at_ms)
                    .bind(owner)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() != 1 {
                    return Ok(None);
                }
                self.get_fire(schedule_id, fire_ms).await
            }

            async fn skip_fire(
                &self,
                schedule_id: i64,
                fire_ms: i64,
                by: &str,
                reason: &str,
            ) -> StoreResult<SkipOutcome> {
                sqlx::query(ENSURE_FIRE)
                    .bind(schedule_id)
                    .bind(fire_ms)
                    .execute(&self.pool)
                    .await?;
                let done = sqlx::query(SKIP_FIRE)
                    .bind(schedule_id)
                    .bind(fire_ms)
                    .bind(reason)
                    .bind(by)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 1 {
                    return Ok(SkipOutcome::Skipped);
                }
                let fire = self.get_fire(schedule_id, fire_ms).await?.ok_or_else(|| {
                    StoreError::Corrupt(format!("fire {schedule_id}/{fire_ms} vanished"))
                })?;
                Ok(if fire.skipped.is_some() {
                    SkipOutcome::AlreadySkipped(fire)
                } else {
                    SkipOutcome::AlreadyClaimed(fire)
                })
            }

            async fn finish_fire(
                &self,
                schedule_id: i64,
                fire_ms: i64,
                run_id: Option<&str>,
                skipped: Option<&str>,
            ) -> StoreResult<()> {
                sqlx::query(FINISH_FIRE)
                    .bind(schedule_id)
                    .bind(fire_ms)
                    .bind(run_id)
                    .bind(skipped)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn set_halt(&self, by: &str, reason: &str, at_ms: i64) -> StoreResult<Halt> {
                // The same lock `create_run` takes: a run is created either before the halt
                // (and `abort all`, which follows it, aborts the run) or sees it and is refused.
                let mut tx = self.begin_halt_change().await?;
                let current: Option<HaltRow> = sqlx::query_as(CURRENT_HALT)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(h) = current {
                    tx.commit().await?;
                    return Ok(halt_from_row(h));
                }
                let row: HaltRow = sqlx::query_as(INSERT_HALT)
                    .bind(by)
                    .bind(reason)
                    .bind(at_ms)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(halt_from_row(row))
            }

            async fn lift_halt(&self, by: &str, at_ms: i64) -> StoreResult<Option<Halt>> {
                let Some(mut h) = self.current_halt().await? else {
                    return Ok(None);
                };
                // Lifts every unlifted row: two replicas halting at once may have written two.
                sqlx::query(LIFT_HALTS)
                    .bind(by)
                    .bind(at_ms)
                    .execute(&self.pool)
                    .await?;
                h.lifted_by = Some(by.to_string());
                h.lifted_ms = Some(at_ms);
                Ok(Some(h))
            }

            async fn current_halt(&self) -> StoreResult<Option<Halt>> {
                let row: Option<HaltRow> = sqlx::query_as(CURRENT_HALT)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(halt_from_row))
            }
        }
    };
}

impl_schedule_store!(super::sqlite::SqliteStore);
impl_schedule_store!(super::postgres::PostgresStore);

//! Persistence of game days: an agenda of experiments run one after another in one channel.
//!
//! A game day is a row that records every step it took (the item it is on, the run id of each
//! item, when the next item may start), so a restarted process resumes it where it was. The
//! replica that drives it holds a lease on the row, taken with one conditional `UPDATE`: of
//! several replicas asking at once, exactly one gets it, and another takes over only after the
//! holder stopped renewing.

use serde::{Deserialize, Serialize};

use super::{StoreError, StoreResult};

/// Where a game day is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GamedayState {
    Running,
    /// Every agenda item ran.
    Done,
    /// Stopped by a person, or because an item could not run.
    Stopped,
}

impl GamedayState {
    pub fn as_str(self) -> &'static str {
        match self {
            GamedayState::Running => "running",
            GamedayState::Done => "done",
            GamedayState::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Option<GamedayState> {
        match s {
            "running" => Some(GamedayState::Running),
            "done" => Some(GamedayState::Done),
            "stopped" => Some(GamedayState::Stopped),
            _ => None,
        }
    }
}

impl std::fmt::Display for GamedayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A game day as the store knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GamedayRecord {
    pub id: String,
    pub plan: String,
    /// The validated plan (JSON of the game day plan).
    pub plan_json: serde_json::Value,
    pub team: String,
    pub channel: String,
    pub started_by: String,
    pub state: GamedayState,
    /// The agenda item being run or waited for (0-based).
    pub current: usize,
    /// One entry per agenda item: its run id once submitted.
    pub run_ids: Vec<Option<String>>,
    /// The current item is not submitted before this.
    pub wait_until_ms: Option<i64>,
    pub owner: Option<String>,
    pub lease_until_ms: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub finished_ms: Option<i64>,
    /// Set once the closing summary is queued.
    pub closed_ms: Option<i64>,
    pub stopped_by: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewGameday {
    pub id: String,
    pub plan: String,
    pub plan_json: serde_json::Value,
    pub team: String,
    pub channel: String,
    pub started_by: String,
    pub items: usize,
    pub created_ms: i64,
}

/// A step of progress, written by the lease holder only.
#[derive(Debug, Clone, PartialEq)]
pub struct GamedayProgress {
    pub current: usize,
    pub run_ids: Vec<Option<String>>,
    pub wait_until_ms: Option<i64>,
}

#[async_trait::async_trait]
pub trait GamedayStore: Send + Sync {
    /// Inserts a running game day, owned by nobody yet.
    async fn create_gameday(&self, g: &NewGameday) -> StoreResult<GamedayRecord>;

    async fn get_gameday(&self, id: &str) -> StoreResult<Option<GamedayRecord>>;

    /// Newest first, at most `limit`.
    async fn list_gamedays(&self, limit: u32) -> StoreResult<Vec<GamedayRecord>>;

    /// Game days whose closing summary is not queued yet (running, or stopped and not closed).
    async fn open_gamedays(&self) -> StoreResult<Vec<GamedayRecord>>;

    /// Takes (or renews) the lease of an open game day for `owner` until `lease_until_ms`:
    /// granted when nobody holds it, `owner` holds it, or the holder's lease ended before
    /// `now_ms`. Atomic: of concurrent callers, at most one is granted.
    async fn claim_gameday(
        &self,
        id: &str,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> StoreResult<bool>;

    /// Gives the lease up (on shutdown), so another process need not wait for it to end.
    async fn release_gameday(&self, id: &str, owner: &str) -> StoreResult<()>;

    /// Records progress and renews the lease. `false` (nothing written) when `owner` no longer
    /// holds the lease or the game day is not running any more (someone stopped it).
    async fn save_gameday_progress(
        &self,
        id: &str,
        owner: &str,
        progress: &GamedayProgress,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> StoreResult<bool>;

    /// Stops a running game day (a person's request, or an item that could not run).
    /// `None` if there is no such game day; the record otherwise (unchanged when it was not
    /// running).
    async fn stop_gameday(
        &self,
        id: &str,
        by: &str,
        reason: &str,
        now_ms: i64,
    ) -> StoreResult<Option<GamedayRecord>>;

    /// Marks a running game day done (every item ran). `false` when it was not running.
    async fn finish_gameday(&self, id: &str, owner: &str, now_ms: i64) -> StoreResult<bool>;

    /// Records that the closing summary is queued; the game day leaves `open_gamedays`.
    async fn close_gameday(&self, id: &str, owner: &str, now_ms: i64) -> StoreResult<bool>;

    /// Whether a post named `key` was ever queued in the outbox, whatever became of it
    /// (pending, delivered or failed): one query, so a delivery finishing between two checks
    /// cannot make a message look never sent.
    async fn post_queued(&self, key: &str) -> StoreResult<bool>;
}

// ---- one implementation for both backends (`$n` placeholders, plain conditional updates) ----

macro_rules! select_gamedays {
    ($tail:literal) => {
        concat!(
            "SELECT id, plan, plan_json, team, channel, started_by, state, current_item, ",
            "run_ids, wait_until_ms, owner, lease_until_ms, created_ms, updated_ms, finished_ms, ",
            "closed_ms, stopped_by, reason FROM gamedays ",
            $tail
        )
    };
}

const INSERT: &str = "INSERT INTO gamedays (id, plan, plan_json, team, channel, started_by, \
     state, current_item, run_ids, created_ms, updated_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, 'running', 0, $7, $8, $8)";
const BY_ID: &str = select_gamedays!("WHERE id = $1");
const LIST: &str = select_gamedays!("ORDER BY created_ms DESC, id DESC LIMIT $1");
const OPEN: &str = select_gamedays!("WHERE closed_ms IS NULL ORDER BY created_ms, id");
const CLAIM: &str = "UPDATE gamedays SET owner = $2, lease_until_ms = $4 \
     WHERE id = $1 AND closed_ms IS NULL \
     AND (owner IS NULL OR owner = $2 OR lease_until_ms IS NULL OR lease_until_ms < $3)";
const RELEASE: &str =
    "UPDATE gamedays SET owner = NULL, lease_until_ms = NULL WHERE id = $1 AND owner = $2";
const SAVE: &str = "UPDATE gamedays SET current_item = $3, run_ids = $4, wait_until_ms = $5, \
     updated_ms = $6, lease_until_ms = $7 \
     WHERE id = $1 AND owner = $2 AND state = 'running'";
const STOP: &str = "UPDATE gamedays SET state = 'stopped', stopped_by = $2, reason = $3, \
     finished_ms = $4, updated_ms = $4 WHERE id = $1 AND state = 'running'";
const FINISH: &str = "UPDATE gamedays SET state = 'done', finished_ms = $3, updated_ms = $3 \
     WHERE id = $1 AND owner = $2 AND state = 'running'";
const POST_QUEUED: &str = "SELECT COUNT(*) FROM slack_outbox WHERE msg_key = $1 AND kind = 'post'";
const CLOSE: &str = "UPDATE gamedays SET closed_ms = $3, updated_ms = $3, owner = NULL, \
     lease_until_ms = NULL WHERE id = $1 AND owner = $2 AND state <> 'running' \
     AND closed_ms IS NULL";

/// A row as selected (more columns than sqlx's tuples take, hence a struct).
#[derive(sqlx::FromRow)]
struct GamedayRow {
    id: String,
    plan: String,
    plan_json: String,
    team: String,
    channel: String,
    started_by: String,
    state: String,
    current_item: i64,
    run_ids: String,
    wait_until_ms: Option<i64>,
    owner: Option<String>,
    lease_until_ms: Option<i64>,
    created_ms: i64,
    updated_ms: i64,
    finished_ms: Option<i64>,
    closed_ms: Option<i64>,
    stopped_by: Option<String>,
    reason: Option<String>,
}

fn gameday_from(row: GamedayRow) -> StoreResult<GamedayRecord> {
    let id = row.id;
    let corrupt = |what: String| StoreError::Corrupt(format!("game day `{id}`: {what}"));
    let state =
        GamedayState::parse(&row.state).ok_or_else(|| corrupt(format!("state `{}`", row.state)))?;
    let plan_json =
        serde_json::from_str(&row.plan_json).map_err(|e| corrupt(format!("plan: {e}")))?;
    let run_ids =
        serde_json::from_str(&row.run_ids).map_err(|e| corrupt(format!("run ids: {e}")))?;
    let current = usize::try_from(row.current_item)
        .map_err(|_| corrupt(format!("item {}", row.current_item)))?;
    Ok(GamedayRecord {
        id,
        plan: row.plan,
        plan_json,
        team: row.team,
        channel: row.channel,
        started_by: row.started_by,
        state,
        current,
        run_ids,
        wait_until_ms: row.wait_until_ms,
        owner: row.owner,
        lease_until_ms: row.lease_until_ms,
        created_ms: row.created_ms,
        updated_ms: row.updated_ms,
        finished_ms: row.finished_ms,
        closed_ms: row.closed_ms,
        stopped_by: row.stopped_by,
        reason: row.reason,
    })
}

fn encode(v: &impl Serialize) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))
}

macro_rules! impl_gameday_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl GamedayStore for $store {
            async fn create_gameday(&self, g: &NewGameday) -> StoreResult<GamedayRecord> {
                let run_ids: Vec<Option<String>> = vec![None; g.items];
                sqlx::query(INSERT)
                    .bind(&g.id)
                    .bind(&g.plan)
                    .bind(encode(&g.plan_json)?)
                    .bind(&g.team)
                    .bind(&g.channel)
                    .bind(&g.started_by)
                    .bind(encode(&run_ids)?)
                    .bind(g.created_ms)
                    .execute(&self.pool)
                    .await?;
                self.get_gameday(&g.id).await?.ok_or_else(|| {
                    StoreError::Corrupt(format!("game day `{}` vanished after insert", g.id))
                })
            }

            async fn get_gameday(&self, id: &str) -> StoreResult<Option<GamedayRecord>> {
                let row: Option<GamedayRow> = sqlx::query_as(BY_ID)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(gameday_from).transpose()
            }

            async fn list_gamedays(&self, limit: u32) -> StoreResult<Vec<GamedayRecord>> {
                let rows: Vec<GamedayRow> = sqlx::query_as(LIST)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(gameday_from).collect()
            }

            async fn open_gamedays(&self) -> StoreResult<Vec<GamedayRecord>> {
                let rows: Vec<GamedayRow> = sqlx::query_as(OPEN).fetch_all(&self.pool).await?;
                rows.into_iter().map(gameday_from).collect()
            }

            async fn claim_gameday(
                &self,
                id: &str,
                owner: &str,
                now_ms: i64,
                lease_until_ms: i64,
            ) -> StoreResult<bool> {
                let done = sqlx::query(CLAIM)
                    .bind(id)
                    .bind(owner)
                    .bind(now_ms)
                    .bind(lease_until_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn release_gameday(&self, id: &str, owner: &str) -> StoreResult<()> {
                sqlx::query(RELEASE)
                    .bind(id)
                    .bind(owner)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn save_gameday_progress(
                &self,
                id: &str,
                owner: &str,
                p: &GamedayProgress,
                now_ms: i64,
                lease_until_ms: i64,
            ) -> StoreResult<bool> {
                let current = i64::try_from(p.current)
                    .map_err(|_| StoreError::Corrupt(format!("item {}", p.current)))?;
                let done = sqlx::query(SAVE)
                    .bind(id)
                    .bind(owner)
                    .bind(current)
                    .bind(encode(&p.run_ids)?)
                    .bind(p.wait_until_ms)
                    .bind(now_ms)
                    .bind(lease_until_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn stop_gameday(
                &self,
                id: &str,
                by: &str,
                reason: &str,
                now_ms: i64,
            ) -> StoreResult<Option<GamedayRecord>> {
                sqlx::query(STOP)
                    .bind(id)
                    .bind(by)
                    .bind(reason)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                self.get_gameday(id).await
            }

            async fn finish_gameday(
                &self,
                id: &str,
                owner: &str,
                now_ms: i64,
            ) -> StoreResult<bool> {
                let done = sqlx::query(FINISH)
                    .bind(id)
                    .bind(owner)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn post_queued(&self, key: &str) -> StoreResult<bool> {
                let n: i64 = sqlx::query_scalar(POST_QUEUED)
                    .bind(key)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n > 0)
            }

            async fn close_gameday(&self, id: &str, owner: &str, now_ms: i64) -> StoreResult<bool> {
                let done = sqlx::query(CLOSE)
                    .bind(id)
                    .bind(owner)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

impl_gameday_store!(super::sqlite::SqliteStore);
impl_gameday_store!(super::postgres::PostgresStore);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for s in [
            GamedayState::Running,
            GamedayState::Done,
            GamedayState::Stopped,
        ] {
            assert_eq!(GamedayState::parse(s.as_str()), Some(s));
        }
        assert_eq!(GamedayState::parse("paused"), None);
    }
}

//! Postgres backend: for several replicas sharing one database.
//!
//! Concurrency comes from row locks. Every write that reads before it writes (a transition,
//! an append's `MAX(seq) + 1`, an abort) first locks the run's row `FOR UPDATE`, so writers of
//! one run queue up while other runs proceed. Claiming also takes a transaction-scoped advisory
//! lock, which makes the `max_active` count exact across replicas; the queued row itself is
//! picked `FOR UPDATE SKIP LOCKED` so a claimer never waits on a run someone else is touching.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, Postgres, Transaction};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::common::{self, run_columns};
use super::{Change, StoreError, StoreResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// How long opening the store, or waiting for a pooled connection, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections in the pool unless the config says otherwise (`database_pool`).
pub const DEFAULT_POOL: u32 = 10;

/// Well below the shortest run lease, far above any transaction of ours (they are short).
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "5s";

/// Advisory lock key serializing claims ("chaosbot" in ASCII).
const CLAIM_LOCK_KEY: i64 = 0x6368_616f_7362_6f74;

pub struct PostgresStore {
    pub(super) pool: PgPool,
    /// Wake-ups from the database (see `wakeups.rs`), fed by a listener task.
    changes: broadcast::Sender<Change>,
    /// Stops the listener task when the store is dropped.
    stop_listener: CancellationToken,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.stop_listener.cancel();
    }
}

impl PostgresStore {
    /// Connects to the database named by a `postgres://` URL and applies the migrations.
    pub async fn open(url: &str) -> StoreResult<Self> {
        Self::open_with_pool(url, DEFAULT_POOL).await
    }

    /// Like [`PostgresStore::open`], keeping at most `pool` connections (plus the listener's).
    pub async fn open_with_pool(url: &str, pool: u32) -> StoreResult<Self> {
        let shown = common::redact(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::UnsupportedUrl(shown.clone()))?
            // A replica that stops mid-transaction (paused, or stuck) must not hold its runs'
            // row locks past a lease: the server ends such a session, and recovery goes on.
            .options([(
                "idle_in_transaction_session_timeout",
                IDLE_IN_TRANSACTION_TIMEOUT,
            )]);
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
            .max_connections(pool)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        MIGRATOR.run(&pool).await?;
        let (changes, _) = broadcast::channel(1024);
        let stop_listener = CancellationToken::new();
        tokio::spawn(super::wakeups::listen(
            pool.clone(),
            changes.clone(),
            stop_listener.clone(),
        ));
        tracing::info!(url = %shown, "postgres store open");
        Ok(PostgresStore {
            pool,
            changes,
            stop_listener,
        })
    }
}

/// The advisory lock that orders run creation against `set_halt` (key: "halt" in ASCII).
const HALT_LOCK_SHARED: &str = "SELECT pg_advisory_xact_lock_shared(1751215220)";
const HALT_LOCK_EXCLUSIVE: &str = "SELECT pg_advisory_xact_lock(1751215220)";

/// The dialect points of the shared bodies (see `runs.rs`).
impl PostgresStore {
    pub(super) const INSERT_RUN: &str = "INSERT INTO runs (id, experiment, title, spec, \
         params, seed, requested_by, source, state, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9)";

    /// The oldest queued run whose targets no active run holds.
    pub(super) const OLDEST_QUEUED: &str = concat!(
        "SELECT id FROM runs WHERE state = 'queued' AND ",
        common::not_held_predicate!(),
        " ORDER BY created_ms, num LIMIT 1 FOR UPDATE SKIP LOCKED"
    );

    pub(super) const QUEUED_BY_ID: &str = concat!(
        "SELECT id FROM runs WHERE state = 'queued' AND id = $1 AND ",
        common::not_held_predicate!(),
        " FOR UPDATE SKIP LOCKED"
    );

    pub(super) const LOCK_RUN: &str = "SELECT state, owner FROM runs WHERE id = $1 FOR UPDATE";

    pub(super) const LOCK_RUN_FENCE: &str =
        "SELECT state, owner, epoch FROM runs WHERE id = $1 FOR UPDATE";

    /// The database server's clock: leases mean the same on every replica's host.
    pub(super) async fn db_clock_ms(conn: &mut PgConnection) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT")
                .fetch_one(&mut *conn)
                .await?,
        )
    }

    /// Locked in one order (oldest first) so two concurrent aborts cannot deadlock.
    pub(super) const LOCK_ABORTABLE_RUNS: &str =
        "SELECT id, state FROM runs WHERE state <> 'done' ORDER BY created_ms, num FOR UPDATE";

    pub(super) const ORPHANED: &str = concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE state NOT IN ('queued', 'done') \
         AND (lease_until_ms IS NULL OR lease_until_ms < $1 OR owner = ANY($2)) \
         ORDER BY created_ms, num"
    );

    /// A plain transaction: writers of one run queue up on its row lock.
    pub(super) async fn begin_write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// The claim lock, held to commit: the `max_active` count stays true across replicas
    /// until our claim is visible.
    pub(super) async fn lock_claims(conn: &mut PgConnection) -> StoreResult<()> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CLAIM_LOCK_KEY)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// The halt lock, shared: run creations proceed together, `set_halt` waits for them.
    pub(super) async fn lock_halt_shared(conn: &mut PgConnection) -> StoreResult<()> {
        sqlx::query(HALT_LOCK_SHARED).execute(&mut *conn).await?;
        Ok(())
    }

    /// A transaction that may put a halt in force, holding the halt lock exclusively until it
    /// commits (`create_run` takes it shared).
    pub(crate) async fn begin_halt_change(&self) -> StoreResult<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(HALT_LOCK_EXCLUSIVE).execute(&mut *tx).await?;
        Ok(tx)
    }

    pub(super) fn change_feed(&self) -> Option<broadcast::Receiver<Change>> {
        Some(self.changes.subscribe())
    }

    pub(super) fn dead_owners_param(owners: &[String]) -> &[String] {
        owners
    }
}

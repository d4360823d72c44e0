//! SQLite backend: one file in WAL mode, the embedded default for a single process.
//!
//! Every write runs in a `BEGIN IMMEDIATE` transaction. SQLite then takes its one write lock
//! up front, so read-then-write sequences (claiming, `MAX(seq) + 1`) are serialized across the
//! pool's connections, and a deferred transaction never fails half-way trying to upgrade its
//! read lock. Waiting for the lock is bounded by the busy timeout. That lock is all the
//! exclusion the shared bodies need, so the dialect points below take no other lock.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

use super::StoreError;
use super::StoreResult;
use super::common::{not_held_predicate, run_columns};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a writer waits for another connection's write transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: u32 = 8;

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
}

/// Held by a `chaosbot serve` on a SQLite file for as long as it runs: the lock on a file
/// beside the database (the OS drops it when the process dies, even by `kill -9`).
#[derive(Debug)]
pub struct ServeLock {
    _file: std::fs::File,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeLockError {
    #[error(
        "another `chaosbot serve` is already running on the SQLite database {db} (it holds {lock}). \
         SQLite serves one process: stop the other one, or use Postgres \
         (DATABASE_URL=postgres://USER@HOST/DB) to run several replicas"
    )]
    Held { db: String, lock: String },
    #[error(
        "cannot take the lock {lock} beside the SQLite database: {source}. Check that its directory is writable"
    )]
    Io {
        lock: String,
        #[source]
        source: std::io::Error,
    },
}

impl ServeLock {
    /// Takes the serve lock of the database `url` names; `None` for an in-memory database
    /// or a URL that is not SQLite (nothing to share).
    pub fn take(url: &str) -> Result<Option<ServeLock>, ServeLockError> {
        let Ok(options) = SqliteConnectOptions::from_str(url) else {
            return Ok(None);
        };
        if !url.starts_with("sqlite:") || url.contains(":memory:") || url.contains("mode=memory") {
            return Ok(None);
        }
        let db = options.get_filename().to_path_buf();
        let mut lock = db.clone().into_os_string();
        lock.push(".serve-lock");
        let lock = std::path::PathBuf::from(lock);
        let shown = lock.display().to_string();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(|source| ServeLockError::Io {
                lock: shown.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(ServeLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Err(ServeLockError::Held {
                db: db.display().to_string(),
                lock: shown,
            }),
            Err(std::fs::TryLockError::Error(source)) => Err(ServeLockError::Io {
                lock: shown,
                source,
            }),
        }
    }
}

/// The dialect points of the shared bodies (see `runs.rs`).
impl SqliteStore {
    pub(super) const INSERT_RUN: &str = "INSERT INTO runs (id, num, experiment, title, spec, \
         params, seed, requested_by, source, state, created_ms) \
         SELECT $1, COALESCE(MAX(num), 0) + 1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9 FROM runs";

    // The reads that lock rows on Postgres are plain reads here: the write transaction they
    // run in is the lock.
    /// The oldest queued run whose targets no active run holds.
    pub(super) const OLDEST_QUEUED: &str = concat!(
        "SELECT id FROM runs WHERE state = 'queued' AND ",
        not_held_predicate!(),
        " ORDER BY created_ms, num LIMIT 1"
    );

    pub(super) const QUEUED_BY_ID: &str = concat!(
        "SELECT id FROM runs WHERE state = 'queued' AND id = $1 AND ",
        not_held_predicate!()
    );

    pub(super) const LOCK_RUN: &str = "SELECT state, owner FROM runs WHERE id = $1";

    pub(super) const LOCK_RUN_FENCE: &str = "SELECT state, owner, epoch FROM runs WHERE id = $1";

    /// One process on one host: its own clock is the database's.
    pub(super) async fn db_clock_ms(_conn: &mut SqliteConnection) -> StoreResult<i64> {
        Ok(crate::run::now_ms())
    }

    pub(super) const LOCK_ABORTABLE_RUNS: &str =
        "SELECT id, state FROM runs WHERE state <> 'done' ORDER BY created_ms, num";

    pub(super) const ORPHANED: &str = concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE state NOT IN ('queued', 'done') \
         AND (lease_until_ms IS NULL OR lease_until_ms < $1 \
              OR owner IN (SELECT value FROM json_each($2))) \
         ORDER BY created_ms, num"
    );

    /// Takes the write lock at once (`BEGIN IMMEDIATE`).
    pub(super) async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Nothing more to take: the write transaction already keeps other claimers out.
    pub(super) async fn lock_claims(_conn: &mut SqliteConnection) -> StoreResult<()> {
        Ok(())
    }

    /// Nothing more to take: `set_halt` writes under the same write lock.
    pub(super) async fn lock_halt_shared(_conn: &mut SqliteConnection) -> StoreResult<()> {
        Ok(())
    }

    /// A transaction that may put a halt in force: SQLite serializes writers, so a write
    /// transaction is all the exclusion `create_run` needs.
    pub(crate) async fn begin_halt_change(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.begin_write().await
    }

    /// One process: it knows its own changes.
    pub(super) fn change_feed(&self) -> Option<tokio::sync::broadcast::Receiver<super::Change>> {
        None
    }

    /// Dead owners are bound as one JSON array (SQLite has no array parameters).
    pub(super) fn dead_owners_param(owners: &[String]) -> Json<&[String]> {
        Json(owners)
    }
}

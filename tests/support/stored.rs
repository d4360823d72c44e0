//! Puts a journal made for a test ([`super::journal`], or a test's own) into a SQLite store
//! as a run, as if it were going on now. Also included by the pages benchmark.

use chaosbot::run::{Entry, Event};
use chaosbot::store::{DynStore, NewRun};

/// Stores `entries` as run `id` in `store` (the SQLite database at `db_url`): created through
/// the store from its first entry (a submission), the rest written in one transaction (fast
/// enough for a ten-hour journal), every time moved so the journal ends now; a verdict is left
/// out, so the run is still going. With `targets`, the submission names those instead of its
/// own (a run holding a target keeps others on it queued). Returns the last seq.
pub async fn store_journal(
    store: &DynStore,
    db_url: &str,
    id: &str,
    entries: &[Entry],
    targets: &[&str],
) -> i64 {
    let (run, mut submitted) = new_run(id, entries);
    if let Event::Submitted { targets: held, .. } = &mut submitted
        && !targets.is_empty()
    {
        *held = targets.iter().map(|t| t.to_string()).collect();
    }
    store
        .create_run(run, submitted)
        .await
        .expect("the run is created");
    let shift = chaosbot::run::now_ms() - entries.last().map(|e| e.at_ms).unwrap_or(0);
    let pool = sqlx::SqlitePool::connect(db_url)
        .await
        .expect("the test database opens");
    let mut tx = pool.begin().await.expect("a transaction");
    let rest = entries[1..]
        .iter()
        .filter(|e| !matches!(e.event, Event::Verdict { .. }));
    let mut last = 1;
    for (i, e) in rest.enumerate() {
        last = i as i64 + 2;
        sqlx::query(
            "INSERT INTO journal (run_id, seq, at_ms, kind, data) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(last)
        .bind(e.at_ms + shift)
        .bind(e.event.kind())
        .bind(sqlx::types::Json(&e.event))
        .execute(&mut *tx)
        .await
        .expect("an entry is written");
    }
    let started = entries[0].at_ms + shift;
    sqlx::query("UPDATE journal SET at_ms = $1 WHERE run_id = $2 AND seq = 1")
        .bind(started)
        .bind(id)
        .execute(&mut *tx)
        .await
        .expect("the submission is retimed");
    sqlx::query("UPDATE runs SET created_ms = $1 WHERE id = $2")
        .bind(started)
        .bind(id)
        .execute(&mut *tx)
        .await
        .expect("the run is retimed");
    tx.commit().await.expect("committed");
    pool.close().await;
    last
}

/// Run `id` as its journal's first entry (a submission) describes it, and that entry, for
/// `create_run`.
pub fn new_run(id: &str, entries: &[Entry]) -> (NewRun, Event) {
    let Some(Event::Submitted {
        experiment,
        title,
        requested_by,
        source,
        params,
        seed,
        ..
    }) = entries.first().map(|e| e.event.clone())
    else {
        panic!("the journal starts with its submission");
    };
    let run = NewRun {
        id: id.into(),
        experiment,
        title,
        spec: serde_json::Value::Null,
        params,
        seed,
        requested_by,
        source,
    };
    (run, entries[0].event.clone())
}

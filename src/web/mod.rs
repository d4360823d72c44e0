//! The live run pages `chaosbot serve` answers besides Slack: `/runs/<id>` (the chart, the
//! verdict, the timeline and the Q&A, following the run while it goes on), its
//! `/chart.svg`, its `/events` (server-sent events from the journal) and `/body` (the live
//! part the page's script swaps in), and `/runs` (recent runs, for operators).
//!
//! An edge like the Slack one: it reads the store and renders [`crate::report`]'s views.
//! Every route checks a signed, expiring link first ([`link`]); without one that checks,
//! nothing about a run is sent.

mod cache;
pub mod html;
pub mod link;
mod sse;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt as _;
use serde::Deserialize;
use tokio::sync::{OwnedMutexGuard, broadcast};
use tracing::warn;

use crate::report::{chart, record};
use crate::run::{Entry, RunState};
use crate::store::{DynStore, RunFilter, RunRecord, StoreError};
use cache::{Cache, Drawn, RunCache};
use link::{LinkError, Links, Scope};

/// How many runs the operator's list shows.
const LIST_LIMIT: u32 = 50;
/// Store reads of a page give up after this (a page is no reason to queue on a sick database).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Hands out a receiver of the journal entries this process appends (the engine's broadcast).
pub type Subscribe = Arc<dyn Fn() -> broadcast::Receiver<Entry> + Send + Sync>;

/// What the routes share.
pub struct Pages {
    pub store: DynStore,
    /// `None`: no key is configured, and every page is refused.
    pub links: Option<Links>,
    pub subscribe: Subscribe,
    /// How often a live stream looks at the journal besides wake-ups: the fallback for
    /// entries no wake-up told (SQLite, or a Postgres notification lost while the store's
    /// listener reconnected).
    pub sweep: Duration,
    csp: String,
    cache: Cache,
}

impl Pages {
    pub fn new(store: DynStore, links: Option<Links>, subscribe: Subscribe) -> Arc<Pages> {
        let csp = format!(
            "default-src 'none'; script-src '{}'; style-src 'unsafe-inline'; img-src 'self' data:; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            html::script_hash()
        );
        Arc::new(Pages {
            store,
            links,
            subscribe,
            sweep: Duration::from_secs(1),
            csp,
            cache: Cache::default(),
        })
    }
}

/// The routes under `/runs`, to merge into the server's router.
pub fn router(pages: Arc<Pages>) -> Router {
    Router::new()
        .route("/runs", get(list))
        .route("/runs/{id}", get(page))
        .route("/runs/{id}/body", get(body))
        .route("/runs/{id}/chart.svg", get(chart_svg))
        .route("/runs/{id}/events", get(sse::events))
        .with_state(pages)
}

/// The link's query (`after` only for `/events`).
#[derive(Debug, Default, Deserialize)]
pub struct LinkQuery {
    pub exp: Option<String>,
    pub sig: Option<String>,
    pub after: Option<String>,
}

impl LinkQuery {
    /// The query to repeat on the page's own requests (chart, body, events).
    fn repeat(&self) -> String {
        format!(
            "exp={}&sig={}",
            self.exp.as_deref().unwrap_or(""),
            self.sig.as_deref().unwrap_or("")
        )
    }
}

fn now_unix() -> i64 {
    crate::run::now_ms().div_euclid(1000)
}

/// Headers every page carries: not cached, not framed, no referrer (the link is a
/// credential), and the script allowed by its hash only.
fn with_headers(
    pages: &Pages,
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Response {
    let mut resp = (status, body.into()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&pages.csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

const HTML: &str = "text/html; charset=utf-8";

/// Why a page is not sent.
enum Refusal {
    /// No key is configured: no link can check.
    NoKey,
    Link(LinkError),
    NotFound,
    Store(anyhow::Error),
}

impl Refusal {
    /// The page that says so, and why, in the log.
    fn respond(self, pages: &Pages, route: &'static str, run_id: &str) -> Response {
        let (status, text) = match self {
            Refusal::NoKey => {
                warn!(
                    route,
                    "run pages are off: no [server] page_secret and no Slack signing secret"
                );
                (
                    StatusCode::FORBIDDEN,
                    html::refusal("Run pages are not set up on this chaosbot (it has no link key)"),
                )
            }
            Refusal::Link(why) => {
                warn!(route, run_id, error = %why, "run page link refused");
                let what = match why {
                    LinkError::Expired { .. } => "This link has expired".to_string(),
                    LinkError::Missing => "This address needs a signed link".to_string(),
                    other => format!("This link is invalid: {other}"),
                };
                (StatusCode::FORBIDDEN, html::refusal(&what))
            }
            Refusal::NotFound => (StatusCode::NOT_FOUND, html::not_found(run_id)),
            Refusal::Store(e) => {
                warn!(route, run_id, error = %format!("{e:#}"), "cannot read the database for a run page");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    html::unavailable("chaosbot cannot read this from its database right now."),
                )
            }
        };
        with_headers(pages, status, HTML, text)
    }
}

/// Checks the link for `scope`.
fn check(pages: &Pages, scope: &Scope, q: &LinkQuery) -> Result<(), Refusal> {
    let links = pages.links.as_ref().ok_or(Refusal::NoKey)?;
    links
        .verify(scope, q.exp.as_deref(), q.sig.as_deref(), now_unix())
        .map_err(Refusal::Link)
}

/// Everything one run page shows: the run and its Q&A as read now, its journal as kept and
/// brought up to date ([`cache`]).
struct Loaded {
    run: RunRecord,
    journal: OwnedMutexGuard<RunCache>,
    questions: Vec<crate::store::learning::Question>,
}

async fn load(pages: &Pages, id: &str) -> anyhow::Result<Option<Loaded>> {
    use anyhow::Context as _;
    let read = async {
        let mut journal = pages.cache.lock(id).await;
        // Only what was appended since the last request; the journal before the run, so the
        // run is at least as new as what it shows.
        let new = pages.store.journal(id, journal.last_seq()).await?;
        journal.journal.extend(new);
        let Some(run) = pages.store.get_run(id).await? else {
            drop(journal);
            pages.cache.forget(id);
            return Ok::<_, StoreError>(None);
        };
        let questions = pages.store.questions(id).await?;
        Ok(Some(Loaded {
            run,
            journal,
            questions,
        }))
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .context("the database did not answer in time")?
        .context("reading the run, its journal and its Q&A")
}

/// The run's view: built and drawn, or as drawn before when the run had ended by then.
fn view_parts(l: &mut Loaded) -> Drawn {
    let seq = l.journal.last_seq();
    let ended = l.run.finished_ms.is_some() || l.run.state == RunState::Done;
    let kept = l.journal.drawn.as_ref().filter(|d| ended && d.seq == seq);
    let mut view = match kept {
        Some(d) => d.clone(),
        None => {
            let now = crate::run::now_ms();
            let record = record::build(&l.run, &l.journal.journal, &[], &[], now);
            let c = chart::build(&l.run, &l.journal.journal, now);
            let drawn = Drawn {
                seq,
                record,
                svg: chart::render_svg(&c).map_err(|e| e.to_string()),
                empty: c.empty_reason(),
            };
            if ended {
                l.journal.drawn = Some(drawn.clone());
            }
            drawn
        }
    };
    view.record.questions = record::record_questions(&l.questions);
    view
}

/// [`view_parts`] off the async workers (a long run's chart takes a while to draw); the
/// loaded run comes back with it.
async fn draw(mut l: Loaded) -> anyhow::Result<(Loaded, Drawn)> {
    use anyhow::Context as _;
    tokio::task::spawn_blocking(move || {
        let d = view_parts(&mut l);
        (l, d)
    })
    .await
    .context("drawing the run's view stopped")
}

/// Loads the run for a route whose link checks.
async fn checked_run(pages: &Pages, id: &str, q: &LinkQuery) -> Result<Loaded, Refusal> {
    check(pages, &Scope::Run(id), q)?;
    load(pages, id)
        .await
        .map_err(Refusal::Store)?
        .ok_or(Refusal::NotFound)
}

fn run_view<'a>(l: &'a Loaded, d: &'a Drawn, query: &'a str) -> html::RunView<'a> {
    html::RunView {
        run: &l.run,
        record: &d.record,
        chart_svg: d.svg.clone(),
        empty_reason: d.empty.clone(),
        last_seq: d.seq,
        query,
    }
}

/// `/runs/<id>`: the status and the page's head as soon as the run's row is read (and the link
/// checks); the chart, numbers, timeline and Q&A follow in the same answer once drawn.
async fn page(
    State(pages): State<Arc<Pages>>,
    Path(id): Path<String>,
    Query(q): Query<LinkQuery>,
) -> Response {
    if let Err(r) = check(&pages, &Scope::Run(&id), &q) {
        return r.respond(&pages, "page", &id);
    }
    let run = match tokio::time::timeout(READ_TIMEOUT, pages.store.get_run(&id)).await {
        Ok(Ok(Some(run))) => run,
        Ok(Ok(None)) => return Refusal::NotFound.respond(&pages, "page", &id),
        Ok(Err(e)) => return Refusal::Store(e.into()).respond(&pages, "page", &id),
        Err(_) => {
            return Refusal::Store(anyhow::anyhow!("the database did not answer in time"))
                .respond(&pages, "page", &id);
        }
    };
    let head = html::run_page_head(&run);
    let rest = {
        let pages = pages.clone();
        async move {
            let text = match load(&pages, &id).await {
                Ok(Some(l)) => match draw(l).await {
                    Ok((l, d)) => {
                        let query = q.repeat();
                        html::run_page_rest(&run_view(&l, &d, &query))
                    }
                    Err(e) => {
                        warn!(run_id = %id, error = %format!("{e:#}"), "cannot draw a run page");
                        html::run_page_failed("chaosbot could not draw this run.")
                    }
                },
                Ok(None) => html::run_page_failed("This run is no longer in chaosbot's database."),
                Err(e) => {
                    warn!(run_id = %id, error = %format!("{e:#}"), "cannot read the database for a run page");
                    html::run_page_failed(
                        "chaosbot cannot read this run from its database right now.",
                    )
                }
            };
            Ok::<_, Infallible>(Bytes::from(text))
        }
    };
    let stream = futures::stream::once(std::future::ready(Ok::<_, Infallible>(Bytes::from(head))))
        .chain(futures::stream::once(rest));
    with_headers(&pages, StatusCode::OK, HTML, Body::from_stream(stream))
}

async fn body(
    State(pages): State<Arc<Pages>>,
    Path(id): Path<String>,
    Query(q): Query<LinkQuery>,
) -> Response {
    let l = match checked_run(&pages, &id, &q).await {
        Ok(l) => l,
        Err(r) => return r.respond(&pages, "body", &id),
    };
    match draw(l).await {
        Ok((l, d)) => {
            let query = q.repeat();
            let text = html::run_body(&run_view(&l, &d, &query));
            with_headers(&pages, StatusCode::OK, HTML, text)
        }
        Err(e) => Refusal::Store(e).respond(&pages, "body", &id),
    }
}

async fn chart_svg(
    State(pages): State<Arc<Pages>>,
    Path(id): Path<String>,
    Query(q): Query<LinkQuery>,
) -> Response {
    let l = match checked_run(&pages, &id, &q).await {
        Ok(l) => l,
        Err(r) => return r.respond(&pages, "chart", &id),
    };
    let svg = match draw(l).await {
        Ok((_, d)) => d.svg,
        Err(e) => Err(format!("{e:#}")),
    };
    match svg {
        Ok(svg) => with_headers(&pages, StatusCode::OK, "image/svg+xml", svg),
        Err(e) => {
            warn!(run_id = %id, error = %e, "cannot draw the run chart");
            with_headers(
                &pages,
                StatusCode::INTERNAL_SERVER_ERROR,
                HTML,
                html::unavailable(&format!("The chart cannot be drawn: {e}.")),
            )
        }
    }
}

async fn list(State(pages): State<Arc<Pages>>, Query(q): Query<LinkQuery>) -> Response {
    if let Err(r) = check(&pages, &Scope::Runs, &q) {
        return r.respond(&pages, "list", "-");
    }
    // `check` passed: there is a key and `exp` parses.
    let (Some(links), Some(exp)) = (
        pages.links.as_ref(),
        q.exp.as_deref().and_then(|e| e.trim().parse::<i64>().ok()),
    ) else {
        return StatusCode::FORBIDDEN.into_response();
    };
    let read = pages.store.list_runs(RunFilter {
        experiment: None,
        limit: LIST_LIMIT,
    });
    let runs = match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Refusal::Store(e.into()).respond(&pages, "list", "-"),
        Err(_) => {
            return Refusal::Store(anyhow::anyhow!("the database did not answer in time"))
                .respond(&pages, "list", "-");
        }
    };
    // Each run's link lives as long as the operator's link, not longer.
    let rows: Vec<html::RunRow> = runs
        .iter()
        .map(|run| html::RunRow {
            run,
            href: links.run_path(&run.id, exp),
        })
        .collect();
    let expires = chrono::DateTime::from_timestamp(exp, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| exp.to_string());
    with_headers(
        &pages,
        StatusCode::OK,
        HTML,
        html::runs_page(&rows, &expires),
    )
}

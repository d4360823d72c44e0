//! The run pages' markup: plain HTML and CSS, the chart inline as SVG, and a small script
//! that follows the run's live events. Everything that comes from the journal, the run or the
//! Q&A is escaped here (`esc`); the chart's SVG escapes its own text (plotters does).

use std::fmt::Write as _;

use crate::report::record::{LearningRecord, utc};
use crate::store::RunRecord;

/// Escapes text for HTML content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2433;background:#f6f7f9}\
header,main,footer{max-width:1240px;margin:0 auto;padding:12px 20px}\
h1{font-size:1.45em;margin:.4em 0}h2{font-size:1.1em;margin:1.4em 0 .4em}\
.meta{color:#5b6475}.pill{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:600;background:#e4e7ec}\
.held{background:#d3f2dc;color:#11602b}.deviated{background:#ffe9c7;color:#7a4a00}\
.aborted,.failed{background:#ffd9d9;color:#8a1010}\
.chart{background:#fff;border:1px solid #dde1e7;border-radius:6px;overflow-x:auto}.chart svg{max-width:100%;height:auto}\
.empty{padding:10px 14px;background:#fff8e0;border:1px solid #f0dc9a;border-radius:6px}\
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #dde1e7;padding:4px 8px;text-align:right}\
td:first-child,th:first-child{text-align:left}\
ol.timeline{padding-left:1.2em}ol.timeline li{margin:2px 0}.t{color:#5b6475;font-variant-numeric:tabular-nums}\
.q{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:8px 12px;margin:6px 0}.votes{font-weight:600}\
.a{margin-top:4px;padding-left:10px;border-left:3px solid #9cc3ff}\
#live-status{font-size:.9em;color:#5b6475}\
a{color:#0b57d0}";

/// Follows the run's events; at most two refreshes of the live part per second (an entry
/// shows within half a second plus one `/body` request).
/// The page's CSP allows this exact script by its hash (see [`script_hash`]).
pub const SCRIPT: &str = r#"(function () {
  var body = document.getElementById("run-body");
  var status = document.getElementById("live-status");
  if (!body || !window.EventSource || body.dataset.done === "1") { return; }
  var q = location.search;
  var base = location.pathname;
  var es = new EventSource(base + "/events" + q + "&after=" + body.dataset.seq);
  var last = 0, timer = null, busy = false, again = false;
  function refresh() {
    timer = null;
    if (busy) { again = true; return; }
    busy = true; last = Date.now();
    fetch(base + "/body" + q, { cache: "no-store" }).then(function (r) {
      return r.ok ? r.text() : null;
    }).then(function (html) {
      if (html !== null) {
        var now = document.getElementById("run-body");
        if (now) { now.outerHTML = html; }
      }
    }).catch(function () {}).then(function () {
      busy = false;
      if (again) { again = false; schedule(); }
    });
  }
  function schedule() {
    if (timer) { return; }
    timer = setTimeout(refresh, Math.max(0, 500 - (Date.now() - last)));
  }
  es.addEventListener("open", function () { status.textContent = "live"; });
  es.addEventListener("entry", schedule);
  es.addEventListener("done", function () {
    status.textContent = "the run is over";
    es.close();
    schedule();
  });
  es.addEventListener("expired", function () {
    status.textContent = "this link expired: ask for a new one";
    es.close();
  });
  es.onerror = function () {
    if (es.readyState === 2) { status.textContent = "not live (reload to retry)"; }
    else { status.textContent = "reconnecting…"; }
  };
})();"#;

/// `sha256-…` of [`SCRIPT`], for the Content-Security-Policy.
pub fn script_hash() -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(SCRIPT.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

fn document(title: &str, head_extra: &str, body: &str, script: bool) -> String {
    let mut out = document_start(title, head_extra);
    out.push_str(body);
    out.push_str(&document_end(script));
    out
}

/// A document up to and including `<body>`.
fn document_start(title: &str, head_extra: &str) -> String {
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">{head_extra}\
         <title>{}</title><style>{STYLE}</style></head><body>",
        esc(title)
    );
    out
}

/// The end of a document, with the page's script when `script`.
fn document_end(script: bool) -> String {
    let mut out = String::new();
    if script {
        out.push_str("<script>");
        out.push_str(SCRIPT);
        out.push_str("</script>");
    }
    out.push_str("</body></html>\n");
    out
}

fn verdict_class(v: &str) -> &'static str {
    match v {
        "held" => "held",
        "deviated" => "deviated",
        "aborted" => "aborted",
        _ => "failed",
    }
}

fn offset(ms: i64) -> String {
    crate::report::chart::clock(ms as f64 / 1000.0)
}

/// What the live part of a run page is drawn from.
pub struct RunView<'a> {
    pub run: &'a RunRecord,
    pub record: &'a LearningRecord,
    /// The chart as SVG, or why it could not be drawn.
    pub chart_svg: Result<String, String>,
    /// Why the chart has nothing to plot, when it has nothing.
    pub empty_reason: Option<String>,
    /// The journal's last sequence number shown.
    pub last_seq: i64,
    /// `?exp=…&sig=…` of this page, for the chart's download link.
    pub query: &'a str,
}

/// The live part of a run page (`/runs/<id>/body`): replaced whole on each refresh.
pub fn run_body(v: &RunView) -> String {
    let r = v.record;
    let done = r.run.finished_ms.is_some();
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<div id=\"run-body\" data-seq=\"{}\" data-done=\"{}\">",
        v.last_seq,
        if done { 1 } else { 0 }
    );
    // The verdict, or where the run stands.
    out.push_str("<p class=\"status\">");
    match &r.outcome.verdict {
        Some(verdict) => {
            let _ = write!(
                out,
                "<span class=\"pill {}\" id=\"verdict\">{}</span> rollback <strong>{}</strong>",
                verdict_class(verdict),
                esc(&verdict.to_uppercase()),
                esc(r.outcome.rollback.as_deref().unwrap_or("-"))
            );
        }
        None => {
            let _ = write!(
                out,
                "<span class=\"pill\" id=\"verdict\">{}</span>",
                esc(&r.run.state.replace('_', " "))
            );
        }
    }
    if let Some(ms) = r.run.duration_ms {
        let _ = write!(out, " · ran {}", esc(&offset(ms)));
    }
    out.push_str("</p>");
    if let Some(reason) = &r.outcome.reason {
        let _ = write!(out, "<p><strong>Why:</strong> {}</p>", esc(reason));
    }

    out.push_str("<h2>Chart</h2>");
    if let Some(why) = &v.empty_reason {
        let _ = write!(
            out,
            "<p class=\"empty\" id=\"chart-empty\">{}</p>",
            esc(why)
        );
    }
    match &v.chart_svg {
        Ok(svg) => {
            out.push_str("<div class=\"chart\" id=\"chart\">");
            // The SVG document without its XML declaration, inline.
            let start = svg.find("<svg").unwrap_or(0);
            out.push_str(&svg[start..]);
            let _ = write!(
                out,
                "</div><p class=\"meta\"><a href=\"{}/chart.svg?{}\" download>chart as SVG</a></p>",
                esc(&v.run.id),
                esc(v.query)
            );
        }
        Err(e) => {
            let _ = write!(
                out,
                "<p class=\"empty\" id=\"chart-empty\">The chart cannot be drawn: {}</p>",
                esc(e)
            );
        }
    }

    if !r.numbers.probes.is_empty() {
        out.push_str(
            "<h2>Numbers</h2><table><tr><th>probe</th><th>before p50 / p99</th>\
             <th>during p50 / p99</th><th>after p50 / p99</th><th>failed</th></tr>",
        );
        for p in &r.numbers.probes {
            let phase = |s: &crate::report::PhaseStats| {
                if s.samples == 0 {
                    "–".to_string()
                } else {
                    format!("{:.1} / {:.1} ms", s.p50_ms, s.p99_ms)
                }
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} of {}</td></tr>",
                esc(&p.probe),
                phase(&p.before),
                phase(&p.during),
                phase(&p.after),
                p.before.failed + p.during.failed + p.after.failed,
                p.before.samples + p.during.samples + p.after.samples
            );
        }
        out.push_str("</table>");
    }

    out.push_str("<h2>Timeline</h2><ol class=\"timeline\" id=\"timeline\">");
    for t in &r.timeline {
        let _ = write!(
            out,
            "<li><span class=\"t\">+{}</span> {}</li>",
            esc(&offset(t.offset_ms)),
            esc(&t.text)
        );
    }
    if r.timeline.is_empty() {
        out.push_str("<li>Nothing yet.</li>");
    }
    out.push_str("</ol>");

    out.push_str("<h2>Q&amp;A</h2><div id=\"qa\">");
    if r.questions.is_empty() {
        out.push_str(if done {
            "<p class=\"meta\">No questions yet: ask in the run's Slack thread.</p>"
        } else {
            "<p class=\"meta\">Questions open in the run's Slack thread when it ends.</p>"
        });
    }
    for q in &r.questions {
        let _ = write!(
            out,
            "<div class=\"q\"><span class=\"votes\">▲ {}</span> {} <span class=\"meta\">— {}, {}</span>",
            q.votes,
            esc(&q.text),
            esc(&q.asked_by),
            esc(&utc(q.asked_ms))
        );
        if let Some(a) = &q.answer {
            let _ = write!(
                out,
                "<div class=\"a\">{} <span class=\"meta\">— {}{}</span></div>",
                esc(&a.text),
                esc(&a.by),
                if a.auto { " (from the journal)" } else { "" }
            );
        }
        out.push_str("</div>");
    }
    out.push_str("</div></div>");
    out
}

/// The whole run page (`/runs/<id>`): [`run_page_head`] and [`run_page_rest`].
pub fn run_page(v: &RunView) -> String {
    let mut out = run_page_head(v.run);
    out.push_str(&run_page_rest(v));
    out
}

/// The start of a run page, from the run's row alone: sent at once, before the journal is
/// read and the chart drawn.
pub fn run_page_head(run: &RunRecord) -> String {
    let params: Vec<String> = run
        .params
        .iter()
        .map(|(k, val)| format!("{k}={val}"))
        .collect();
    let mut out = document_start(&format!("{} · chaosbot", run.title), "");
    let _ = write!(
        out,
        "<header><h1 id=\"title\">{}</h1><p class=\"meta\">run <code>{}</code> · experiment \
         <code>{}</code> · started by {} · submitted {} · seed {}{} · \
         <span id=\"live-status\">{}</span></p></header><main>",
        esc(&run.title),
        esc(&run.id),
        esc(&run.experiment),
        esc(&run.requested_by),
        esc(&utc(run.created_ms)),
        run.seed,
        if params.is_empty() {
            String::new()
        } else {
            format!(" · {}", esc(&params.join(" ")))
        },
        if run.finished_ms.is_some() {
            "the run is over"
        } else {
            "not live (scripts are off)"
        }
    );
    out
}

/// The rest of a run page after [`run_page_head`]: the live part, the footer, the script.
pub fn run_page_rest(v: &RunView) -> String {
    let mut out = run_body(v);
    out.push_str(FOOTER);
    out.push_str(&document_end(true));
    out
}

/// The rest of a run page whose journal could not be read after its head was sent (the
/// status is sent by then): what went wrong, in the page.
pub fn run_page_failed(what: &str) -> String {
    let mut out = format!(
        "<p class=\"empty\" id=\"chart-empty\">{} Reload in a moment; if it persists, tell \
         chaosbot's operator.</p>",
        esc(what)
    );
    out.push_str(FOOTER);
    out.push_str(&document_end(false));
    out
}

const FOOTER: &str = "</main><footer class=\"meta\">The page follows the run's journal while it \
     goes on. Its link expires; the run's Slack message always carries a fresh one.</footer>";

/// One row of the operator's list.
pub struct RunRow<'a> {
    pub run: &'a RunRecord,
    /// Path and query of the run's page.
    pub href: String,
}

/// The operator's list of recent runs (`/runs`).
pub fn runs_page(rows: &[RunRow], expires: &str) -> String {
    let mut body = String::from(
        "<header><h1>Recent runs</h1></header><main><table id=\"runs\"><tr><th>run</th>\
         <th>title</th><th>state</th><th>verdict</th><th>submitted</th><th>by</th></tr>",
    );
    for row in rows {
        let r = row.run;
        let _ = write!(
            body,
            "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&row.href),
            esc(&r.id),
            esc(&r.title),
            esc(r.state.as_str()),
            esc(&r
                .verdict
                .map(|v| v.to_string())
                .unwrap_or_else(|| "–".into())),
            esc(&utc(r.created_ms)),
            esc(&r.requested_by)
        );
    }
    if rows.is_empty() {
        body.push_str("<tr><td colspan=\"6\">No runs yet.</td></tr>");
    }
    let _ = write!(
        body,
        "</table><p class=\"meta\">This operator link and the run links on it expire {}.</p></main>",
        esc(expires)
    );
    document("Recent runs · chaosbot", "", &body, false)
}

/// The page a refused link gets: what was wrong and how to get a working link.
pub fn refusal(what: &str) -> String {
    let body = format!(
        "<header><h1>This link does not open the page</h1></header><main><p id=\"refusal\">{}.</p>\
         <p>Run pages open only through the signed links chaosbot hands out, and those expire. \
         For a run: open the link in the run's parent message in Slack (it is renewed when the \
         message is), or ask <code>/chaos summary</code> in the channel. For the list of runs: \
         an operator runs <code>chaosbot page-link</code>.</p></main>",
        esc(what)
    );
    document("Link refused · chaosbot", "", &body, false)
}

/// A page that says a run is not there.
pub fn not_found(run_id: &str) -> String {
    let body = format!(
        "<header><h1>No such run</h1></header><main><p>There is no run <code>{}</code> in this \
         chaosbot's database.</p></main>",
        esc(run_id)
    );
    document("No such run · chaosbot", "", &body, false)
}

/// A page for a failure on chaosbot's side.
pub fn unavailable(what: &str) -> String {
    let body = format!(
        "<header><h1>The page cannot be shown right now</h1></header><main><p>{}</p>\
         <p>Reload in a moment; if it persists, tell chaosbot's operator.</p></main>",
        esc(what)
    );
    document("Unavailable · chaosbot", "", &body, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_html_would_read() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn the_script_hash_is_base64_sha256() {
        let h = script_hash();
        assert!(h.starts_with("sha256-") && h.len() == 7 + 44, "{h}");
    }
}

//! Renders what a run looks like in a Slack channel, from the real Block Kit that chaosbot
//! produces for a real run: runs the demo experiment (built-in service, real proxy, real
//! latency) as if started from Slack, then writes an HTML page of the parent message (live and
//! final) and its thread. The README's picture is a screenshot of that page:
//!
//! ```sh
//! cargo run --example slack_preview -- target/slack-preview.html
//! chromium --headless --no-sandbox --disable-gpu --screenshot=docs/slack-run.png \
//!     --window-size=900,1900 target/slack-preview.html
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chaosbot::config::{Config, HttpEndpoint, ProxyTarget};
use chaosbot::engine::{Engine, EngineOptions, SubmitRequest};
use chaosbot::faults::TargetRegistry;
use chaosbot::run::Event;
use chaosbot::slack::{SlackOrigin, render};
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;

fn mrkdwn(text: &str) -> String {
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let mut out = String::new();
    let mut rest = escaped.as_str();
    // ```pre``` blocks first, then inline marks on the rest.
    while let Some(start) = rest.find("```") {
        out.push_str(&inline(&rest[..start]));
        let after = &rest[start + 3..];
        let end = after.find("```").unwrap_or(after.len());
        out.push_str(&format!("<pre>{}</pre>", &after[..end]));
        rest = after.get(end + 3..).unwrap_or("");
    }
    out.push_str(&inline(rest));
    out
}

fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut bold = false;
    let mut code = false;
    let text = text.replace("&lt;@U0DEMO&gt;", "<span class=mention>@dana</span>");
    for c in text.chars() {
        match c {
            '*' if !code => {
                out.push_str(if bold { "</b>" } else { "<b>" });
                bold = !bold;
            }
            '`' => {
                out.push_str(if code { "</code>" } else { "<code>" });
                code = !code;
            }
            '\n' => out.push_str("<br>"),
            c => out.push(c),
        }
    }
    out
}

fn text_of(v: &Value) -> String {
    mrkdwn(v["text"].as_str().unwrap_or(""))
}

fn blocks_html(blocks: &Value) -> String {
    let mut html = String::new();
    for b in blocks.as_array().into_iter().flatten() {
        match b["type"].as_str() {
            Some("header") => {
                html.push_str(&format!("<div class=header>{}</div>", text_of(&b["text"])))
            }
            Some("section") => {
                if let Some(fields) = b["fields"].as_array() {
                    html.push_str("<div class=fields>");
                    for f in fields {
                        html.push_str(&format!("<div>{}</div>", text_of(f)));
                    }
                    html.push_str("</div>");
                } else {
                    html.push_str(&format!("<div class=section>{}</div>", text_of(&b["text"])));
                }
            }
            Some("context") => html.push_str(&format!(
                "<div class=context>{}</div>",
                text_of(&b["elements"][0])
            )),
            Some("actions") => {
                for e in b["elements"].as_array().into_iter().flatten() {
                    html.push_str(&format!(
                        "<button class={}>{}</button>",
                        e["style"].as_str().unwrap_or("plain"),
                        text_of(&e["text"])
                    ));
                }
            }
            _ => {}
        }
    }
    html
}

fn message(who: &str, time: &str, blocks: &Value) -> String {
    format!(
        "<div class=msg><div class=avatar>🧪</div><div><div class=who>{who} <span class=app>APP</span> <span class=time>{time}</span></div>{}</div></div>",
        blocks_html(blocks)
    )
}

async fn demo_service() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_r: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/slack-preview.html".into());
    let dir = tempfile::tempdir()?;
    let service = demo_service().await;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut cfg = Config::default();
    cfg.targets.proxy.push(ProxyTarget {
        name: "demo-api".into(),
        listen,
        upstream: service.to_string(),
        description: String::new(),
        agent: None,
    });
    cfg.targets.http.push(HttpEndpoint {
        name: "demo-http".into(),
        url: format!("http://{listen}"),
        ..HttpEndpoint::default()
    });
    let exp = chaosbot::spec::parse_experiment(
        include_str!("../experiments/demo-latency.yaml"),
        "demo-latency.yaml",
        &cfg,
        &[("duration".into(), "4s".into())],
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let cfg = Arc::new(cfg);
    let store =
        chaosbot::store::open(&format!("sqlite://{}", dir.path().join("p.db").display())).await?;
    let engine = Engine::new(
        store.clone(),
        TargetRegistry::new(cfg.clone()),
        EngineOptions::new(cfg.guard_rails.clone()),
    );
    engine.start().await?;
    let origin = SlackOrigin {
        team: "T0DEMO".into(),
        channel: "C0CHAOS".into(),
        user: "U0DEMO".into(),
    };
    let id = engine
        .submit(
            &exp,
            SubmitRequest {
                requested_by: origin.user.clone(),
                source: chaosbot::run::RunSource::Slack(origin.clone()),
                seed: Some(42),
            },
        )
        .await?;
    let run = engine.wait(&id).await?;
    engine
        .shutdown("preview done", Duration::from_secs(5))
        .await;
    let entries = store.journal(&id, 0).await?;
    let method_ms = i64::try_from(exp.method_duration().as_millis())?;

    // The parent as the channel saw it mid-run (at the first breach), and at the end.
    let cut = entries
        .iter()
        .position(|e| matches!(e.event, Event::ToleranceExceeded { .. }))
        .map_or(entries.len(), |i| (i + 4).min(entries.len()));
    let mut live_run = run.clone();
    live_run.verdict = None;
    live_run.rollback = None;
    live_run.reason = None;
    live_run.finished_ms = None;
    let live_summary = chaosbot::report::summarize(&live_run, &entries[..cut]);
    let live = render::parent(&live_run, &entries[..cut], &live_summary, method_ms);
    let summary = chaosbot::report::summarize(&run, &entries);
    let last = render::parent(&run, &entries, &summary, method_ms);

    let mut thread = String::new();
    for e in &entries {
        if let Some(r) = render::thread_reply(e) {
            thread.push_str(&message("chaosbot", "", &r.blocks));
        }
    }
    for part in render::summary(&summary).pages() {
        thread.push_str(&message("chaosbot", "", &part));
    }
    let html = format!(
        r#"<!doctype html><meta charset=utf-8><style>
body{{font-family:Lato,'Noto Sans',Arial,sans-serif;font-size:15px;margin:0;background:#fff;color:#1d1c1d;width:880px}}
h2{{font-size:13px;color:#616061;margin:18px 20px 4px;text-transform:uppercase;letter-spacing:.05em}}
.msg{{display:flex;gap:10px;padding:8px 20px}} .avatar{{width:36px;height:36px;border-radius:6px;background:#e8f5fa;display:flex;align-items:center;justify-content:center;font-size:20px}}
.who{{font-weight:900}} .app{{font-size:10px;background:#ddd;border-radius:3px;padding:0 3px;color:#555;font-weight:700}} .time{{color:#616061;font-weight:400;font-size:12px}}
.header{{font-size:18px;font-weight:900;margin:4px 0}} .fields{{display:grid;grid-template-columns:1fr 1fr;gap:8px;margin:6px 0}}
.section{{margin:6px 0}} .context{{color:#616061;font-size:12px;margin:6px 0}} code{{background:#f4ecec;color:#c01343;border-radius:3px;padding:1px 3px;font-size:12px}}
pre{{background:#f8f8f8;border:1px solid #ddd;border-radius:4px;padding:8px;font-size:12px;white-space:pre-wrap}}
button{{border-radius:4px;padding:4px 14px;font-weight:700;font-size:14px;border:1px solid #ccc;background:#fff;margin:6px 0}} button.danger{{color:#e01e5a;border-color:#e01e5a}}
.thread{{border-left:3px solid #e8e8e8;margin-left:40px}} .mention{{background:#e8f5fa;color:#1264a3;border-radius:3px;padding:0 2px}}
</style>
<h2>#chaos — the parent message while the run goes on</h2>{}
<h2>the same message when the run is done (updated in place)</h2>{}
<h2>its thread</h2><div class=thread>{}</div>"#,
        message("chaosbot", "14:02", &live.blocks),
        message("chaosbot", "14:02", &last.blocks),
        thread
    );
    std::fs::write(&out, html)?;
    println!(
        "wrote {out} (run {id}: {})",
        run.verdict.map(|v| v.to_string()).unwrap_or_default()
    );
    Ok(())
}

//! Steady-state probes: one sample is one HTTP request or one TCP connect, judged against the
//! probe's expectations. Every sample uses a fresh connection, so it sees what a new client of
//! the service sees (including faults that apply per connection).

use std::time::{Duration, Instant};

use crate::spec::model::{Expect, Probe, ProbeKind};

pub mod command;
pub mod expect;
pub mod http;

/// The result of sampling a probe once.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub ok: bool,
    pub latency: Duration,
    /// "200", "connected", or why it failed.
    pub detail: String,
    /// The output an `expect` judged (`{status, headers, body}`, `{status, stdout, stderr}`);
    /// None when nothing answered or the probe has no `expect`.
    pub output: Option<serde_json::Value>,
}

impl Sample {
    fn fail(latency: Duration, detail: impl Into<String>) -> Sample {
        Sample {
            ok: false,
            latency,
            detail: detail.into(),
            output: None,
        }
    }
}

/// Samples the probe once, within its timeout.
pub async fn sample(probe: &Probe) -> Sample {
    let started = Instant::now();
    let outcome = tokio::time::timeout(probe.timeout, sample_kind(probe, started)).await;
    match outcome {
        Ok(s) => s,
        Err(_) => Sample::fail(
            started.elapsed(),
            format!(
                "no answer within {}",
                humantime::format_duration(probe.timeout)
            ),
        ),
    }
}

async fn sample_kind(probe: &Probe, started: Instant) -> Sample {
    match &probe.kind {
        ProbeKind::Http {
            url,
            tls,
            method,
            headers,
            endpoint_headers,
            body,
            expect_status,
            max_latency,
            body_contains,
        } => {
            let result = match (
                http::HttpClient::fresh_connections(tls),
                endpoint_headers.over(headers),
            ) {
                (Ok(client), Ok(headers)) => {
                    client
                        .exchange(url, method, &headers, body.as_deref())
                        .await
                }
                (Err(e), _) => Err(e.to_string()),
                (_, Err(e)) => Err(e.to_string()),
            };
            let latency = started.elapsed();
            match result {
                Err(e) => Sample::fail(latency, e),
                Ok(answer) if probe.expect.is_some() => {
                    let output = http_output(&answer);
                    judged(probe.expect.as_ref(), &output, latency, *max_latency)
                }
                Ok(http::Answer { status, body, .. }) => {
                    if !expect_status.contains(&status) {
                        return Sample::fail(
                            latency,
                            format!("status {status}, expected {}", list(expect_status)),
                        );
                    }
                    if let Some(needle) = body_contains
                        && !body.contains(needle.as_str())
                    {
                        return Sample::fail(
                            latency,
                            format!("status {status} but the body lacks `{needle}`"),
                        );
                    }
                    judge_latency(latency, *max_latency, status.to_string())
                }
            }
        }
        ProbeKind::Tcp {
            address,
            max_latency,
        } => match tokio::net::TcpStream::connect(address.as_str()).await {
            Ok(_) => judge_latency(started.elapsed(), *max_latency, "connected".into()),
            Err(e) => Sample::fail(started.elapsed(), format!("connect to {address}: {e}")),
        },
        ProbeKind::Command { command } => match command::run(command, probe.timeout).await {
            Err(e) => Sample::fail(started.elapsed(), e),
            Ok(out) => judged(
                Some(probe.expect.as_ref().unwrap_or(&Expect::Status(vec![0]))),
                &out.to_json(),
                started.elapsed(),
                None,
            ),
        },
    }
}

/// An http answer as Chaos Toolkit's http provider returns it: `{status, headers, body}`,
/// the body parsed when the answer says `Content-Type: application/json` (exactly).
pub fn http_output(a: &http::Answer) -> serde_json::Value {
    let headers: serde_json::Map<String, serde_json::Value> = a
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let body = match a.header("content-type") {
        Some("application/json") => serde_json::from_str(&a.body)
            .unwrap_or_else(|_| serde_json::Value::String(a.body.clone())),
        _ => serde_json::Value::String(a.body.clone()),
    };
    serde_json::json!({"status": a.status, "headers": headers, "body": body})
}

fn judged(
    expect: Option<&Expect>,
    output: &serde_json::Value,
    latency: Duration,
    max_latency: Option<Duration>,
) -> Sample {
    let mut s = match expect.map(|e| expect::judge(e, output)) {
        Some(Err(why)) => Sample::fail(latency, why),
        Some(Ok(detail)) => judge_latency(latency, max_latency, detail),
        None => judge_latency(latency, max_latency, "answered".into()),
    };
    s.output = Some(output.clone());
    s
}

fn judge_latency(latency: Duration, max: Option<Duration>, detail: String) -> Sample {
    match max {
        Some(max) if latency > max => Sample::fail(
            latency,
            format!(
                "{detail} in {:.1} ms, above the {:.0} ms limit",
                ms(latency),
                ms(max)
            ),
        ),
        _ => Sample {
            ok: true,
            latency,
            detail,
            output: None,
        },
    }
}

fn list(codes: &[u16]) -> String {
    codes
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" or ")
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

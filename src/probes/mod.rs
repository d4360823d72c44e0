//! Steady-state probes: one sample is one HTTP request or one TCP connect, judged against the
//! probe's expectations. Every sample uses a fresh connection, so it sees what a new client of
//! the service sees (including faults that apply per connection).

use std::time::{Duration, Instant};

use crate::spec::model::{Probe, ProbeKind};

pub mod http;

/// The result of sampling a probe once.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub ok: bool,
    pub latency: Duration,
    /// "200", "connected", or why it failed.
    pub detail: String,
}

impl Sample {
    fn fail(latency: Duration, detail: impl Into<String>) -> Sample {
        Sample {
            ok: false,
            latency,
            detail: detail.into(),
        }
    }
}

/// Samples the probe once, within its timeout.
pub async fn sample(probe: &Probe) -> Sample {
    let started = Instant::now();
    let outcome = tokio::time::timeout(probe.timeout, sample_kind(&probe.kind, started)).await;
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

async fn sample_kind(kind: &ProbeKind, started: Instant) -> Sample {
    match kind {
        ProbeKind::Http {
            url,
            tls,
            method,
            expect_status,
            max_latency,
            body_contains,
        } => {
            let result = match http::HttpClient::fresh_connections(tls) {
                Ok(client) => client.request(url, method).await,
                Err(e) => Err(e.to_string()),
            };
            let latency = started.elapsed();
            match result {
                Err(e) => Sample::fail(latency, e),
                Ok((status, body)) => {
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
    }
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

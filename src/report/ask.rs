//! Answers, from the journal, the questions about a run that ask for a number it holds: latency
//! percentiles, error rates, how long detection and recovery took, when a fault started or
//! ended, who started the run, how long it took. Every answer quotes the journal entries it comes
//! from (their sequence numbers and times), so people can check it.
//!
//! Recognition is by keywords, on purpose: a question that does not clearly ask for one of these
//! numbers is left to the speaker rather than answered wrongly.

use crate::report::text::{Line, journal_time};
use crate::report::{PhaseStats, RunSummary};
use crate::run::{Entry, Event, SamplePhase};

/// What a question asks for (a question may ask for several).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// A latency percentile (`p99`, `median`, "latency").
    Latency,
    ErrorRate,
    TimeToDetect,
    TimeToRecover,
    FaultStart,
    FaultEnd,
    WhoStarted,
    RunDuration,
}

/// Percentiles a question can name, as (label, which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pct {
    P50,
    P90,
    P95,
    P99,
    P999,
    Max,
}

impl Pct {
    fn label(self) -> &'static str {
        match self {
            Pct::P50 => "p50",
            Pct::P90 => "p90",
            Pct::P95 => "p95",
            Pct::P99 => "p99",
            Pct::P999 => "p99.9",
            Pct::Max => "max",
        }
    }
}

fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '.' || c == '%'))
        .map(|w| w.trim_matches('.').to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

fn has(ws: &[String], any: &[&str]) -> bool {
    ws.iter().any(|w| any.iter().any(|a| w.starts_with(a)))
}

fn percentiles(ws: &[String]) -> Vec<Pct> {
    let mut out = Vec::new();
    for w in ws {
        let p = match w.as_str() {
            "p50" | "median" => Pct::P50,
            "p90" => Pct::P90,
            "p95" => Pct::P95,
            "p99" => Pct::P99,
            "p99.9" | "p999" => Pct::P999,
            "max" | "maximum" | "worst" | "slowest" => Pct::Max,
            _ => continue,
        };
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The topics a question asks about, in a stable order.
pub fn topics(question: &str) -> Vec<Topic> {
    let ws = words(question);
    let mut out = Vec::new();
    // "Why ...", "should we ..." ask for judgement, not a number: the speaker answers those.
    if ws
        .first()
        .is_some_and(|w| ["why", "should", "could", "would", "shall"].contains(&w.as_str()))
        || ws.iter().any(|w| w == "why")
    {
        return out;
    }
    fn push(out: &mut Vec<Topic>, t: Topic) {
        if !out.contains(&t) {
            out.push(t)
        }
    }
    if !percentiles(&ws).is_empty() || has(&ws, &["latenc", "percentile"]) {
        push(&mut out, Topic::Latency);
    }
    if has(&ws, &["error", "fail", "success", "5xx", "4xx"]) {
        push(&mut out, Topic::ErrorRate);
    }
    if has(&ws, &["detect", "notice", "ttd", "mttd"]) {
        push(&mut out, Topic::TimeToDetect);
    }
    if has(&ws, &["recover", "ttr", "mttr"]) {
        push(&mut out, Topic::TimeToRecover);
    }
    let about_fault = has(
        &ws,
        &["fault", "latency", "toxic", "inject", "attack", "chaos"],
    );
    if ws.iter().any(|w| w == "who")
        && has(
            &ws,
            &[
                "start", "ran", "run", "launch", "kick", "trigger", "request",
            ],
        )
    {
        push(&mut out, Topic::WhoStarted);
    } else if has(&ws, &["when", "time"]) || ws.iter().any(|w| w == "what") {
        let asks_when = ws
            .iter()
            .any(|w| w == "when" || w == "time" || w == "timestamp");
        if asks_when && about_fault && has(&ws, &["start", "begin", "began", "inject"]) {
            push(&mut out, Topic::FaultStart);
        }
        if asks_when && about_fault && has(&ws, &["end", "stop", "revert", "remov", "finish"]) {
            push(&mut out, Topic::FaultEnd);
        }
    }
    if ws.windows(2).any(|w| w[0] == "how" && w[1] == "long")
        && has(&ws, &["run", "experiment", "take", "took", "last"])
        && !out.contains(&Topic::TimeToDetect)
        && !out.contains(&Topic::TimeToRecover)
    {
        push(&mut out, Topic::RunDuration);
    }
    out
}

fn at(ms: i64) -> String {
    journal_time(ms)
}

/// `line` followed by " (quote of `e`)".
fn cited(line: Line, e: &Entry) -> Line {
    line.text(" (").cite(e.seq, e.at_ms).text(")")
}

fn fmt_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

fn phase_pct(st: &PhaseStats, p: Pct) -> Option<f64> {
    match p {
        Pct::P50 => Some(st.p50_ms),
        Pct::P95 => Some(st.p95_ms),
        Pct::P99 => Some(st.p99_ms),
        Pct::Max => Some(st.max_ms),
        Pct::P90 | Pct::P999 => None,
    }
}

fn phases_asked(ws: &[String]) -> Vec<SamplePhase> {
    let mut out = Vec::new();
    if has(ws, &["before", "baseline", "steady"]) {
        out.push(SamplePhase::Before);
    }
    if has(ws, &["during", "fault", "while", "injected"]) {
        out.push(SamplePhase::During);
    }
    if has(ws, &["after", "revert", "recover"]) {
        out.push(SamplePhase::After);
    }
    if out.is_empty() {
        out = vec![SamplePhase::Before, SamplePhase::During, SamplePhase::After];
    }
    out
}

fn phase_stats(p: &crate::report::ProbeStats, phase: SamplePhase) -> &PhaseStats {
    match phase {
        SamplePhase::Before => &p.before,
        SamplePhase::During => &p.during,
        SamplePhase::After => &p.after,
    }
}

/// The first entry of each kind the numbers come from, for the quote.
fn sample_span(entries: &[Entry], phase: SamplePhase, probe: &str) -> Option<(i64, i64)> {
    let seqs: Vec<i64> = entries
        .iter()
        .filter_map(|e| match &e.event {
            Event::ProbeSample {
                probe: p,
                phase: ph,
                ..
            } if p == probe && *ph == phase => Some(e.seq),
            _ => None,
        })
        .collect();
    Some((*seqs.first()?, *seqs.last()?))
}

fn latency(out: &mut Vec<Line>, ws: &[String], s: &RunSummary, entries: &[Entry]) {
    let mut asked = percentiles(ws);
    if asked.is_empty() {
        asked = vec![Pct::P50, Pct::P95, Pct::P99];
    }
    for probe in &s.probes {
        for phase in phases_asked(ws) {
            let st = phase_stats(probe, phase);
            if st.samples == 0 {
                continue;
            }
            let nums: Vec<String> = asked
                .iter()
                .filter_map(|p| phase_pct(st, *p).map(|v| format!("{} {v:.1} ms", p.label())))
                .collect();
            if nums.is_empty() {
                continue;
            }
            let span = sample_span(entries, phase, &probe.probe)
                .map(|(a, b)| format!(" (journal #{a}–#{b})"))
                .unwrap_or_default();
            out.push(Line::from("probe ").code(&probe.probe).text(format!(
                " {}: {} over {} samples{span}",
                phase_label(phase),
                nums.join(" · "),
                st.samples
            )));
        }
    }
    for (l, e) in s.loads.iter().zip(load_reports(entries)) {
        let lat = &l.stats.latency;
        let nums: Vec<String> = asked
            .iter()
            .map(|p| {
                let v = match p {
                    Pct::P50 => lat.p50_ms,
                    Pct::P90 => lat.p90_ms,
                    Pct::P95 => lat.p95_ms,
                    Pct::P99 => lat.p99_ms,
                    Pct::P999 => lat.p999_ms,
                    Pct::Max => lat.max_ms,
                };
                format!("{} {v:.1} ms", p.label())
            })
            .collect();
        let line = Line::from("load ")
            .code(&l.step)
            .text(" on ")
            .code(&l.target)
            .text(format!(
                ": {} over {} requests, from each request's intended send time",
                nums.join(" · "),
                l.stats.requests,
            ));
        out.push(cited(line, e));
    }
}

fn load_reports(entries: &[Entry]) -> impl Iterator<Item = &Entry> {
    entries
        .iter()
        .filter(|e| matches!(e.event, Event::LoadReport { .. }))
}

fn phase_label(p: SamplePhase) -> &'static str {
    match p {
        SamplePhase::Before => "before the fault",
        SamplePhase::During => "during the fault",
        SamplePhase::After => "after the revert",
    }
}

fn error_rate(out: &mut Vec<Line>, ws: &[String], s: &RunSummary, entries: &[Entry]) {
    for probe in &s.probes {
        for phase in phases_asked(ws) {
            let st = phase_stats(probe, phase);
            if st.samples == 0 {
                continue;
            }
            let span = sample_span(entries, phase, &probe.probe)
                .map(|(a, b)| format!(" (journal #{a}–#{b})"))
                .unwrap_or_default();
            out.push(Line::from("probe ").code(&probe.probe).text(format!(
                " {}: {} of {} samples failed ({:.1}%){span}",
                phase_label(phase),
                st.failed,
                st.samples,
                st.failed as f64 * 100.0 / st.samples as f64
            )));
        }
    }
    for (l, e) in s.loads.iter().zip(load_reports(entries)) {
        let mut line = Line::from("load ").code(&l.step).text(format!(
            ": {} of {} requests failed ({:.2}%)",
            l.stats.errors,
            l.stats.requests,
            l.stats.error_rate() * 100.0
        ));
        if !l.stats.status_counts.is_empty() {
            let codes: Vec<String> = l
                .stats
                .status_counts
                .iter()
                .map(|(c, n)| format!("{c}: {n}"))
                .collect();
            line = line.text(format!("; status {}", codes.join(", ")));
        }
        out.push(cited(line, e));
    }
}

fn first(entries: &[Entry], pred: impl Fn(&Event) -> bool) -> Option<&Entry> {
    entries.iter().find(|e| pred(&e.event))
}

fn time_to_detect(out: &mut Vec<Line>, entries: &[Entry]) {
    let injected = first(entries, |e| matches!(e, Event::FaultInjected { .. }));
    let Some(injected) = injected else {
        out.push("no fault was injected in this run, so there was nothing to detect".into());
        return;
    };
    let trouble = entries.iter().find(|e| {
        e.seq > injected.seq
            && matches!(
                &e.event,
                Event::ProbeSample {
                    phase: SamplePhase::During,
                    ok: false,
                    ..
                } | Event::ToleranceExceeded { .. }
            )
    });
    match trouble {
        Some(t) => {
            let line = Line::from(format!(
                "time to detect: {} — from the first fault injected",
                fmt_ms(t.at_ms - injected.at_ms)
            ));
            let line = cited(line, injected)
                .text(" to the first sign of trouble, ")
                .then(describe(&t.event));
            out.push(cited(line, t));
        }
        None => {
            let line = Line::from(
                "time to detect: none — no probe saw trouble after the fault was injected",
            );
            out.push(cited(line, injected).text("; the hypothesis held"));
        }
    }
}

fn describe(e: &Event) -> Line {
    match e {
        Event::ProbeSample { probe, detail, .. } => Line::from("probe ")
            .code(probe)
            .text(format!(" failed ({detail})")),
        Event::ToleranceExceeded { probe, detail } => Line::new()
            .code(probe)
            .text(format!(" breached the hypothesis ({detail})")),
        _ => Line::from(e.kind()),
    }
}

fn time_to_recover(out: &mut Vec<Line>, s: &RunSummary, entries: &[Entry]) {
    let last_reverted = entries
        .iter()
        .rev()
        .find(|e| matches!(e.event, Event::FaultReverted { .. }));
    let Some(rev) = last_reverted else {
        out.push("no fault was reverted in this run, so there is no recovery to time".into());
        return;
    };
    match s.time_to_recover_ms {
        Some(ms) => {
            let back = entries.iter().find(|e| {
                e.at_ms == rev.at_ms + ms
                    && matches!(
                        e.event,
                        Event::ProbeSample {
                            phase: SamplePhase::After,
                            ok: true,
                            ..
                        }
                    )
            });
            let line = Line::from(format!(
                "time to recover: {} — from the last fault removed",
                fmt_ms(ms)
            ));
            let line = cited(line, rev).text(" to the steady state being back");
            out.push(match back {
                Some(b) => cited(line, b),
                None => line,
            });
        }
        None => {
            let line =
                Line::from("time to recover: not measured — after the last fault was removed");
            out.push(cited(line, rev).text(" no probe showed the steady state back for good"));
        }
    }
}

fn fault_times(out: &mut Vec<Line>, entries: &[Entry], start: bool) {
    let mut any = false;
    let fault =
        |step: &str, target: &str| Line::from("fault ").code(step).text(" on ").code(target);
    for e in entries {
        match &e.event {
            Event::FaultInjected {
                step,
                target,
                summary,
                ..
            } if start => {
                any = true;
                out.push(fault(step, target).text(format!(
                    " started at {} ({summary}; journal #{})",
                    at(e.at_ms),
                    e.seq
                )));
            }
            Event::FaultReverted { step, target } if !start => {
                any = true;
                out.push(fault(step, target).text(format!(
                    " ended (reverted) at {} (journal #{})",
                    at(e.at_ms),
                    e.seq
                )));
            }
            Event::FaultRevertFailed {
                step,
                target,
                error,
            } if !start => {
                any = true;
                out.push(fault(step, target).text(format!(
                    " could NOT be reverted at {}: {error} (journal #{})",
                    at(e.at_ms),
                    e.seq
                )));
            }
            _ => {}
        }
    }
    if !any {
        out.push(if start {
            "no fault was injected in this run".into()
        } else {
            "no fault was reverted in this run".into()
        });
    }
}

fn who_started(out: &mut Vec<Line>, entries: &[Entry]) {
    if let Some(e) = first(entries, |e| matches!(e, Event::Submitted { .. }))
        && let Event::Submitted {
            requested_by,
            source,
            ..
        } = &e.event
    {
        let line = Line::from("the run was started by ").person(requested_by);
        let line = match source.slack() {
            Some(o) => line.text(" from Slack, channel ").channel(&o.channel),
            None => line.text(" from ").code(source.to_string()),
        };
        out.push(cited(line.text(format!(" at {}", at(e.at_ms))), e));
    }
}

fn run_duration(out: &mut Vec<Line>, entries: &[Entry]) {
    let submitted = entries.first();
    let verdict = entries
        .iter()
        .rev()
        .find(|e| matches!(e.event, Event::Verdict { .. }));
    if let (Some(a), Some(b)) = (submitted, verdict) {
        let line = Line::from(format!(
            "the run took {} from submission",
            fmt_ms(b.at_ms - a.at_ms)
        ));
        out.push(cited(cited(line, a).text(" to its verdict"), b));
    }
}

/// The journal-backed answer to `question`, one line per number, or `None` when it does not ask
/// for a number the journal holds (the speaker answers those). The edges render the lines.
pub fn answer(question: &str, summary: &RunSummary, entries: &[Entry]) -> Option<Vec<Line>> {
    let asked = topics(question);
    if asked.is_empty() {
        return None;
    }
    let ws = words(question);
    let mut lines = Vec::new();
    for t in asked {
        match t {
            Topic::Latency => latency(&mut lines, &ws, summary, entries),
            Topic::ErrorRate => error_rate(&mut lines, &ws, summary, entries),
            Topic::TimeToDetect => time_to_detect(&mut lines, entries),
            Topic::TimeToRecover => time_to_recover(&mut lines, summary, entries),
            Topic::FaultStart => fault_times(&mut lines, entries, true),
            Topic::FaultEnd => fault_times(&mut lines, entries, false),
            Topic::WhoStarted => who_started(&mut lines, entries),
            Topic::RunDuration => run_duration(&mut lines, entries),
        }
    }
    (!lines.is_empty()).then_some(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_what_is_asked() {
        assert_eq!(
            topics("What was the p99 during the fault?"),
            vec![Topic::Latency]
        );
        assert_eq!(topics("what was the error rate?"), vec![Topic::ErrorRate]);
        assert_eq!(
            topics("How long did it take to detect?"),
            vec![Topic::TimeToDetect]
        );
        assert_eq!(
            topics("how long until we recovered"),
            vec![Topic::TimeToRecover]
        );
        assert_eq!(topics("When did the fault start?"), vec![Topic::FaultStart]);
        assert_eq!(
            topics("when was the fault reverted?"),
            vec![Topic::FaultEnd]
        );
        assert_eq!(topics("Who started this run?"), vec![Topic::WhoStarted]);
        assert_eq!(
            topics("how long did the experiment take?"),
            vec![Topic::RunDuration]
        );
        assert_eq!(
            topics("p99 and error rate please"),
            vec![Topic::Latency, Topic::ErrorRate]
        );
        // Questions for the speaker.
        assert!(topics("Should we add a circuit breaker to checkout?").is_empty());
        assert!(topics("Why did the cache not help here?").is_empty());
        assert!(topics("why did the error rate go up so fast?").is_empty());
    }
}

//! A run's journal in Chaos Toolkit's journal shape (`journal.json`), so its reporting tools
//! read chaosbot runs. The fields are those chaostoolkit-lib writes (`chaoslib/run.py`
//! `initialize_run_journal`, `activity.execute_activity`, `hypothesis.run_steady_state_hypothesis`):
//! `status`, `deviated`, `steady_states.before/during/after`, `run[]`, `rollbacks[]`, with
//! each activity run's `activity`, `status`, `output`, `start`, `end` and `duration`.

use serde_json::{Map, Value, json};

use crate::run::{Entry, Event, SamplePhase, Verdict};
use crate::spec::model::{Action, Experiment, ProbeKind, RollbackAction, Sampling};
use crate::store::RunRecord;

/// The journal of `run` from its entries.
pub fn journal(run: &RunRecord, entries: &[Entry]) -> Value {
    let exp: Option<Experiment> = serde_json::from_value(run.spec.clone()).ok();
    let before_after = exp
        .as_ref()
        .is_some_and(|e| e.sampling == Sampling::BeforeAfter);
    let activity_of_probe = |name: &str| -> Value {
        let provider = exp
            .as_ref()
            .and_then(|e| e.hypothesis.iter().find(|p| p.name == name))
            .map(|p| probe_provider(&p.kind))
            .unwrap_or(Value::Null);
        json!({"type": "probe", "name": name, "provider": provider})
    };

    let mut before: Vec<Value> = Vec::new();
    let mut during: Vec<Value> = Vec::new();
    let mut after: Vec<Value> = Vec::new();
    let mut runs: Vec<Value> = Vec::new();
    let mut rollbacks: Vec<Value> = Vec::new();
    let mut previous_ms = run.started_ms.unwrap_or(run.created_ms);
    for e in entries {
        let start = iso(previous_ms);
        let end = iso(e.at_ms);
        let duration = (e.at_ms - previous_ms).max(0) as f64 / 1000.0;
        match &e.event {
            Event::ProbeSample {
                probe,
                phase,
                ok,
                detail,
                ..
            } => {
                let r = json!({
                    "activity": activity_of_probe(probe),
                    // A failed sample without output got no answer; its output follows if it had one.
                    "status": if *ok { "succeeded" } else { "failed" },
                    "output": {"detail": detail},
                    "start": start,
                    "end": end,
                    "duration": duration,
                    "tolerance_met": ok,
                });
                match phase {
                    SamplePhase::Before => before.push(r),
                    SamplePhase::During if before_after => after.push(r),
                    SamplePhase::During => during.push(json!({
                        "steady_state_met": ok,
                        "probes": [r],
                    })),
                    // The verify phase: chaosbot's own re-check after the revert.
                    SamplePhase::After if before_after => {}
                    SamplePhase::After => after.push(r),
                }
            }
            Event::ProbeOutput { phase, output, .. } => {
                // Follows its sample: the output the tolerance judged.
                let list = match phase {
                    SamplePhase::Before => &mut before,
                    SamplePhase::During if before_after => &mut after,
                    SamplePhase::After if !before_after => &mut after,
                    _ => continue,
                };
                if let Some(last) = list.last_mut() {
                    last["output"] = output.clone();
                    last["status"] = Value::String("succeeded".into());
                }
            }
            Event::ActionRan {
                step,
                ok,
                detail,
                output,
            } => {
                let provider = exp
                    .as_ref()
                    .and_then(|x| x.action_steps().into_iter().find(|a| &a.name == step))
                    .map(|a| action_provider(&a.action))
                    .unwrap_or(Value::Null);
                let mut r = json!({
                    "activity": {"type": "action", "name": step, "provider": provider},
                    "status": if *ok { "succeeded" } else { "failed" },
                    "output": output.clone().unwrap_or(Value::Null),
                    "start": start,
                    "end": end,
                    "duration": duration,
                });
                if !ok {
                    r["exception"] = json!([detail]);
                }
                runs.push(r);
            }
            Event::FaultInjected { step, target, .. } => runs.push(json!({
                "activity": {"type": "action", "name": step, "provider": {"type": "chaosbot", "target": target}},
                "status": "succeeded",
                "output": null,
                "start": end,
                "end": end,
                "duration": 0.0,
            })),
            Event::StepFailed { step, error } => runs.push(json!({
                "activity": {"type": "action", "name": step},
                "status": "failed",
                "output": null,
                "exception": [error],
                "start": start,
                "end": end,
                "duration": duration,
            })),
            Event::RollbackAction { name, ok, detail } => {
                let provider = exp
                    .as_ref()
                    .and_then(|x| x.rollbacks.iter().find(|r| &r.name == name))
                    .map(|r| rollback_provider(&r.action))
                    .unwrap_or(Value::Null);
                let mut r = json!({
                    "activity": {"type": "action", "name": name, "provider": provider},
                    "status": if *ok { "succeeded" } else { "failed" },
                    "output": {"detail": detail},
                    "start": start,
                    "end": end,
                    "duration": duration,
                });
                if !ok {
                    r["exception"] = json!([detail]);
                }
                rollbacks.push(r);
            }
            _ => {}
        }
        previous_ms = e.at_ms;
    }

    let state = |probes: Vec<Value>| -> Value {
        if probes.is_empty() {
            return Value::Null;
        }
        let met = probes
            .iter()
            .all(|p| p["tolerance_met"] == Value::Bool(true));
        json!({"steady_state_met": met, "probes": probes})
    };
    let (status, deviated) = match run.verdict {
        Some(Verdict::Held) => ("completed", false),
        // chaoslib `run_hypothesis_after`: a deviation with a probe that failed to run (no
        // answer, a timeout) is a failed experiment.
        Some(Verdict::Deviated) if after.iter().any(|p| p["status"] != "succeeded") => {
            ("failed", true)
        }
        Some(Verdict::Deviated) => ("completed", true),
        // The steady state did not hold before the method, the probes having answered:
        // Chaos Toolkit calls that a completed experiment whose steady state was not met.
        Some(Verdict::Failed)
            if runs.is_empty()
                && !before.is_empty()
                && before.iter().all(|p| p["status"] == "succeeded") =>
        {
            ("completed", false)
        }
        Some(Verdict::Failed) => ("failed", false),
        Some(Verdict::Aborted) => ("aborted", false),
        None => ("interrupted", false),
    };
    let end_ms = run.finished_ms.unwrap_or(previous_ms);
    let start_ms = run.started_ms.unwrap_or(run.created_ms);
    let mut out = Map::new();
    out.insert(
        "chaoslib-version".into(),
        Value::String(format!("chaosbot {}", env!("CARGO_PKG_VERSION"))),
    );
    out.insert(
        "platform".into(),
        Value::String(std::env::consts::OS.into()),
    );
    out.insert(
        "node".into(),
        Value::String(run.owner.clone().unwrap_or_default()),
    );
    out.insert("experiment".into(), experiment_json(run, exp.as_ref()));
    out.insert("start".into(), Value::String(iso(start_ms)));
    out.insert("end".into(), Value::String(iso(end_ms)));
    out.insert(
        "duration".into(),
        json!((end_ms - start_ms).max(0) as f64 / 1000.0),
    );
    out.insert("status".into(), Value::String(status.into()));
    out.insert("deviated".into(), Value::Bool(deviated));
    out.insert(
        "steady_states".into(),
        json!({"before": state(before), "after": state(after), "during": during}),
    );
    out.insert("run".into(), Value::Array(runs));
    out.insert("rollbacks".into(), Value::Array(rollbacks));
    out.insert(
        "chaosbot".into(),
        json!({
            "run_id": run.id,
            "verdict": run.verdict.map(|v| v.to_string()),
            "rollback": run.rollback.map(|r| r.to_string()),
            "reason": run.reason,
        }),
    );
    Value::Object(out)
}

fn experiment_json(run: &RunRecord, exp: Option<&Experiment>) -> Value {
    let Some(e) = exp else {
        return json!({"title": run.title});
    };
    let probes: Vec<Value> = e
        .hypothesis
        .iter()
        .map(|p| json!({"type": "probe", "name": p.name, "provider": probe_provider(&p.kind)}))
        .collect();
    let method: Vec<Value> = e
        .action_steps()
        .iter()
        .map(|a| json!({"type": "action", "name": a.name, "provider": action_provider(&a.action)}))
        .chain(e.fault_steps().iter().map(|f| {
            json!({"type": "action", "name": f.name, "provider": {"type": "chaosbot", "target": f.target, "fault": f.fault.kind_name()}})
        }))
        .collect();
    let rollbacks: Vec<Value> = e
        .rollbacks
        .iter()
        .map(
            |r| json!({"type": "action", "name": r.name, "provider": rollback_provider(&r.action)}),
        )
        .collect();
    json!({
        "title": e.title,
        "description": e.description,
        "tags": e.tags,
        "steady-state-hypothesis": {"title": e.title, "probes": probes},
        "method": method,
        "rollbacks": rollbacks,
    })
}

fn probe_provider(k: &ProbeKind) -> Value {
    match k {
        ProbeKind::Http { url, method, .. } => {
            json!({"type": "http", "url": url, "method": method})
        }
        ProbeKind::Tcp { address, .. } => json!({"type": "tcp", "address": address}),
        ProbeKind::Command { command } => process(command),
    }
}

fn action_provider(a: &Action) -> Value {
    match a {
        Action::Http(h) => json!({"type": "http", "url": h.url, "method": h.method}),
        Action::Command(c) => process(c),
    }
}

fn rollback_provider(r: &RollbackAction) -> Value {
    match r {
        RollbackAction::Http { url, method, .. } => {
            json!({"type": "http", "url": url, "method": method})
        }
        RollbackAction::Command { command, .. } => process(command),
    }
}

fn process(c: &crate::spec::model::CommandRun) -> Value {
    match &c.shell {
        Some(s) => json!({"type": "process", "path": "/bin/sh", "arguments": ["-c", s]}),
        None => json!({
            "type": "process",
            "path": c.argv.first().cloned().unwrap_or_default(),
            "arguments": c.argv.iter().skip(1).collect::<Vec<_>>(),
        }),
    }
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

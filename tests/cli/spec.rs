//! Experiment YAML → validated model: fixtures under tests/fixtures/spec/.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chaosbot::config::Config;
use chaosbot::faults::network::{Direction, ToxicKind};
use chaosbot::spec::model::{FaultSpec, ProbeKind, RollbackAction, Step, StopRule};
use chaosbot::spec::{Problem, load_catalog, load_experiment, parse_experiment, parse_override};

fn cfg() -> Config {
    Config::from_toml(
        r#"
        [guard_rails]
        max_run_duration = "10m"
        [[targets.proxy]]
        name = "payments"
        listen = "127.0.0.1:18081"
        upstream = "127.0.0.1:8081"
        [[targets.proxy]]
        name = "inventory"
        listen = "127.0.0.1:18082"
        upstream = "127.0.0.1:8082"
        [[targets.http]]
        name = "shop"
        url = "http://127.0.0.1:18080/"
        "#,
    )
    .unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/spec")
        .join(name)
}

fn problems(name: &str) -> Vec<Problem> {
    let err = load_experiment(&fixture(name), &cfg(), &[]).unwrap_err();
    for p in &err.problems {
        eprintln!("{p}");
    }
    err.problems
}

/// The one problem whose message contains `needle`.
fn find<'a>(ps: &'a [Problem], needle: &str) -> &'a Problem {
    let found: Vec<&Problem> = ps.iter().filter(|p| p.message.contains(needle)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one problem with `{needle}` in {ps:#?}"
    );
    found[0]
}

fn at(p: &Problem, line: usize, column: usize) {
    assert_eq!((p.line, p.column), (line, column), "{p}");
}

fn hint(p: &Problem) -> &str {
    p.hint.as_deref().unwrap_or_default()
}

#[test]
fn valid_experiment_resolves_to_the_model() {
    let e = load_experiment(&fixture("valid.yaml"), &cfg(), &[]).unwrap();
    assert_eq!(e.name, "checkout-latency");
    assert_eq!(e.title, "Checkout tolerates slow payments");
    assert_eq!(e.owner, "@sre-payments");
    assert_eq!(e.tags, vec!["payments", "latency"]);
    assert!(e.description.starts_with("Payments answer slowly"));
    assert_eq!(e.recovery_timeout, Duration::from_secs(10));
    assert_eq!(e.params["latency"], "250ms");
    assert_eq!(e.params["duration"], "30s");
    assert_eq!(e.params["tox"], "1.0");

    assert_eq!(e.hypothesis.len(), 2);
    let p = &e.hypothesis[0];
    assert_eq!(p.name, "checkout-ok");
    assert_eq!(p.interval, Duration::from_millis(500));
    assert_eq!(p.timeout, Duration::from_secs(2));
    assert_eq!(p.tolerance.max_failure_ratio, 0.0);
    assert_eq!(
        p.kind,
        ProbeKind::Http {
            url: "http://127.0.0.1:18080/health".into(),
            tls: Default::default(),
            method: "GET".into(),
            headers: Default::default(),
            endpoint_headers: Default::default(),
            body: None,
            expect_status: vec![200],
            max_latency: Some(Duration::from_millis(100)),
            body_contains: Some("ok".into()),
        }
    );
    assert_eq!(
        e.hypothesis[1].kind,
        ProbeKind::Tcp {
            address: "127.0.0.1:18081".into(),
            max_latency: Some(Duration::from_millis(50)),
        }
    );
    assert_eq!(e.hypothesis[1].interval, Duration::from_secs(1));

    assert_eq!(e.method.len(), 3);
    let Step::Fault(f) = &e.method[0] else {
        panic!("{:?}", e.method[0])
    };
    assert_eq!(f.name, "slow-payments");
    assert_eq!(f.target, "payments");
    assert_eq!(f.duration, Duration::from_secs(30));
    assert_eq!(
        f.fault,
        FaultSpec::Network {
            toxic: ToxicKind::Latency {
                latency: Duration::from_millis(250),
                jitter: Duration::from_millis(10),
            },
            direction: Direction::Downstream,
            toxicity: 1.0,
        }
    );
    assert_eq!(
        e.method[1],
        Step::Wait {
            duration: Duration::from_secs(5)
        }
    );
    let Step::Parallel(group) = &e.method[2] else {
        panic!("{:?}", e.method[2])
    };
    assert_eq!(group.len(), 2);
    let Step::Fault(b) = &group[1] else { panic!() };
    assert_eq!(
        b.fault,
        FaultSpec::Network {
            toxic: ToxicKind::ResetPeer {
                timeout: Duration::ZERO
            },
            direction: Direction::Downstream,
            toxicity: 1.0,
        }
    );
    assert_eq!(e.method_duration(), Duration::from_secs(55));
    assert_eq!(e.targets(), vec!["inventory", "payments"]);

    assert_eq!(e.stop_conditions.len(), 2);
    assert_eq!(e.stop_conditions[0].rule, StopRule::ConsecutiveFailures(5));
    assert_eq!(
        e.stop_conditions[1].rule,
        StopRule::FailureRatio {
            ratio: 0.5,
            window: Duration::from_secs(10),
            min_samples: 5
        }
    );
    assert_eq!(e.rollbacks.len(), 1);
    assert_eq!(
        e.rollbacks[0].action,
        RollbackAction::Http {
            url: "http://127.0.0.1:18080/admin/flush".into(),
            tls: Default::default(),
            method: "POST".into(),
            body: Some(String::new()),
            headers: Default::default(),
            endpoint_headers: Default::default(),
            expect_status: vec![200, 204],
            timeout: Duration::from_secs(5),
        }
    );
}

#[test]
fn unknown_keys_at_every_level_are_all_reported_with_did_you_mean() {
    let ps = problems("unknown_keys.yaml");
    assert_eq!(ps.len(), 4, "{ps:#?}");
    let p = find(&ps, "unknown key `paht`");
    at(p, 7, 30);
    assert_eq!(hint(p), "did you mean `path`?");
    let p = find(&ps, "unknown key `durration`");
    at(p, 13, 5);
    assert!(p.message.contains("`latency` fault"), "{p}");
    assert_eq!(hint(p), "did you mean `duration`?");
    let p = find(&ps, "unknown fault kind `bandwith`");
    at(p, 16, 12);
    assert_eq!(hint(p), "did you mean `bandwidth`?");
    let p = find(&ps, "unknown key `stop_condition`");
    at(p, 18, 1);
    assert_eq!(hint(p), "did you mean `stop_conditions`?");
    for p in &ps {
        assert!(p.file.ends_with("unknown_keys.yaml"), "{p}");
    }
}

#[test]
fn attributes_must_fit_the_fault_kind() {
    let ps = problems("wrong_attribute.yaml");
    let p = find(&ps, "`latency` is not an attribute of a `bandwidth` fault");
    at(p, 13, 5);
    assert!(hint(p).contains("takes: rate_kbps"), "{p}");
    at(find(&ps, "a `bandwidth` fault needs `rate_kbps`"), 9, 5);
    let p = find(&ps, "a `latency` fault needs `latency`");
    at(p, 14, 5);
    assert!(hint(p).contains("latency: 100ms"));
}

#[test]
fn undeclared_targets_endpoints_probes_and_duplicates() {
    let ps = problems("targets.yaml");
    let p = find(&ps, "endpoint `shopp` is not declared");
    at(p, 7, 24);
    assert_eq!(hint(p), "did you mean `shop`?");
    at(find(&ps, "probe name `checkout-ok` is used twice"), 8, 13);
    let p = find(&ps, "target `nowhere` is not declared");
    at(p, 9, 21);
    assert!(hint(p).contains("payments, inventory, shop"));
    let p = find(&ps, "target `paymnts` is not declared");
    at(p, 12, 13);
    assert_eq!(hint(p), "did you mean `payments`?");
    at(find(&ps, "step name `s1` is used twice"), 15, 11);
    let p = find(&ps, "`shop` is an http endpoint, not a proxied target");
    at(p, 16, 13);
    assert!(hint(p).contains("faults need a proxied target"));
    let p = find(&ps, "names probe `checkout-okk`, which does not exist");
    at(p, 20, 12);
    assert_eq!(hint(p), "did you mean `checkout-ok`?");
    at(find(&ps, "`consecutive_failures: 0`"), 21, 27);
    at(find(&ps, "`failure_ratio: 1.5` is outside 0..1"), 23, 20);
    assert_eq!(ps.len(), 9, "{ps:#?}");
}

#[test]
fn durations_and_ratios_out_of_range() {
    let ps = problems("durations.yaml");
    at(
        find(&ps, "probe interval 10ms is below the minimum of 50ms"),
        9,
        17,
    );
    let p = find(&ps, "`-5ms` is negative");
    at(p, 14, 14);
    at(find(&ps, "fault duration is zero"), 19, 15);
    at(find(&ps, "`duration: 30h` is longer than a day"), 23, 15);
    at(find(&ps, "`toxicity: 2` is outside 0..1"), 28, 15);
    assert_eq!(ps.len(), 5, "{ps:#?}");
}

#[test]
fn run_longer_than_the_guard_rail_is_refused() {
    let ps = problems("too_long.yaml");
    let p = find(&ps, "above the operator's limit of 10m");
    at(p, 8, 1);
    // 8m + max(1m, 3m) + 10s recovery
    assert!(p.message.contains("11m 10s"), "{p}");
    assert!(hint(p).contains("guard_rails.max_run_duration"));
    let mut c = cfg();
    c.guard_rails.max_run_duration = Duration::from_secs(3600);
    load_experiment(&fixture("too_long.yaml"), &c, &[]).unwrap();
}

#[test]
fn overlapping_faults_in_a_parallel_group() {
    let ps = problems("overlap.yaml");
    assert_eq!(ps.len(), 5, "{ps:#?}");
    // `j` runs while `i` is held (its `during`); `k` is upstream, no clash.
    let p = find(
        &ps,
        "steps `i` and `j` run at the same time on `inventory` (downstream)",
    );
    at(p, 27, 27);
    // `f` and `g` are one sequence (one after the other); `h` runs beside both.
    let p = find(
        &ps,
        "steps `f` and `h` run at the same time on `payments` (downstream)",
    );
    at(p, 20, 27);
    find(
        &ps,
        "steps `g` and `h` run at the same time on `payments` (downstream)",
    );
    // `b` is in a nested group: still at the same time as `a`; `c` is upstream, no clash.
    let p = find(
        &ps,
        "steps `a` and `b` run at the same time on `payments` (downstream)",
    );
    at(p, 12, 31);
    let p = find(
        &ps,
        "steps `d` and `e` run at the same time on `inventory`, and one of them is `down`",
    );
    at(p, 15, 27);
}

#[test]
fn parameter_problems() {
    let ps = problems("params_bad.yaml");
    assert_eq!(ps.len(), 2, "{ps:#?}");
    let p = find(
        &ps,
        "parameter `latency`: default `5s` is above the maximum 2s",
    );
    at(p, 5, 38);
    assert!(hint(p).contains("between 0ms and 2s"));
    let p = find(&ps, "`${latncy}` names no declared parameter");
    at(p, 15, 14);
    assert_eq!(hint(p), "did you mean `${latency}`?");
}

#[test]
fn malformed_yaml_is_located_by_the_parser() {
    let ps = problems("malformed.yaml");
    assert_eq!(ps.len(), 1);
    assert!(ps[0].message.contains("not valid YAML"), "{}", ps[0]);
    assert_eq!(ps[0].line, 7);
}

#[test]
fn empty_method_no_probes_and_bad_name() {
    let ps = problems("empty_method.yaml");
    assert_eq!(ps.len(), 3, "{ps:#?}");
    at(find(&ps, "name `Empty_Method` is not a slug"), 1, 7);
    at(find(&ps, "the hypothesis has no probes"), 5, 11);
    at(find(&ps, "the method has no steps"), 6, 9);
}

#[test]
fn missing_required_fields() {
    let text = "title: t\nhypothesis:\n  probes:\n    - http: {endpoint: shop}\nmethod:\n  - target: payments\n    fault: latency\n    latency: 1s\n";
    let err = parse_experiment(text, "x.yaml", &cfg(), &[]).unwrap_err();
    let ps = &err.problems;
    at(find(ps, "the experiment is missing `name`"), 1, 1);
    at(find(ps, "the experiment is missing `owner`"), 1, 1);
    at(find(ps, "this probe is missing `name`"), 4, 7);
    at(find(ps, "this step is missing `name`"), 6, 5);
    at(find(ps, "this fault step is missing `duration`"), 6, 5);
    assert_eq!(ps.len(), 5, "{ps:#?}");
}

#[test]
fn overrides_within_bounds_change_the_model() {
    let o = vec![
        parse_override("latency=1500ms").unwrap(),
        parse_override("tox=0.25").unwrap(),
    ];
    let e = load_experiment(&fixture("valid.yaml"), &cfg(), &o).unwrap();
    assert_eq!(e.params["latency"], "1500ms");
    assert_eq!(e.params["tox"], "0.25");
    let Step::Fault(f) = &e.method[0] else {
        panic!()
    };
    let FaultSpec::Network {
        toxic, toxicity, ..
    } = &f.fault
    else {
        panic!("not a network fault: {f:?}");
    };
    assert_eq!(*toxicity, 0.25);
    assert_eq!(
        *toxic,
        ToxicKind::Latency {
            latency: Duration::from_millis(1500),
            jitter: Duration::from_millis(10)
        }
    );
}

#[test]
fn overrides_out_of_bounds_unknown_or_mistyped_are_refused() {
    let o = vec![
        ("latency".to_string(), "3s".to_string()),
        ("durtion".to_string(), "10s".to_string()),
        ("tox".to_string(), "lots".to_string()),
    ];
    let err = load_experiment(&fixture("valid.yaml"), &cfg(), &o).unwrap_err();
    let ps = &err.problems;
    assert_eq!(ps.len(), 3, "{ps:#?}");
    for p in ps {
        assert_eq!((p.file.as_str(), p.line), ("--set", 0), "{p}");
    }
    let p = find(ps, "`latency=3s`: `3s` is above the maximum 2s");
    assert_eq!(hint(p), "`latency` must be a duration between 0ms and 2s");
    let p = find(ps, "no parameter `durtion`");
    assert_eq!(hint(p), "did you mean `duration`?");
    let p = find(ps, "`tox=lots`: `lots` is not a number");
    assert!(hint(p).contains("between 0 and 1"), "{p}");
}

#[test]
fn unreadable_file_is_one_problem() {
    let err = load_experiment(&fixture("nope.yaml"), &cfg(), &[]).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert!(err.problems[0].message.contains("cannot read"));
}

#[test]
fn catalog_with_a_good_and_a_bad_file() {
    let c = load_catalog(&fixture("catalog"), &cfg());
    assert_eq!(c.entries.len(), 1, "{:#?}", c.problems);
    let entry = &c.entries[0];
    assert_eq!(entry.experiment.name, "checkout-latency");
    let names: Vec<&str> = entry.parameters.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["latency", "duration", "tox"]);
    assert_eq!(entry.parameters[0].min.as_deref(), Some("0ms"));
    assert_eq!(entry.parameters[0].description, "Added delay");
    assert_eq!(c.problems.len(), 1, "{:#?}", c.problems);
    let p = &c.problems[0];
    assert!(p.file.ends_with("broken.yml"), "{p}");
    assert_eq!((p.line, p.column), (11, 12));
    assert_eq!(hint(p), "did you mean `latency`?");

    assert_eq!(c.find("checkout-latency").unwrap().path, entry.path);
    let err = c.find("checkout-latncy").unwrap_err();
    assert_eq!(
        err,
        "no experiment `checkout-latncy`; did you mean `checkout-latency`?"
    );
    assert!(
        c.find("zzz")
            .unwrap_err()
            .contains("the catalog has: checkout-latency")
    );

    let e = c
        .resolve(
            "checkout-latency",
            &cfg(),
            &[("duration".into(), "1m".into())],
        )
        .unwrap();
    assert_eq!(e.method_duration(), Duration::from_secs(85));
    let err = c
        .resolve(
            "checkout-latency",
            &cfg(),
            &[("duration".into(), "1h".into())],
        )
        .unwrap_err();
    assert!(err.problems[0].message.contains("above the maximum 5m"));
}

#[test]
fn missing_catalog_folder_says_so() {
    let c = load_catalog(&fixture("no-such-folder"), &cfg());
    assert!(c.entries.is_empty());
    assert_eq!(c.problems.len(), 1);
    assert!(c.problems[0].message.contains("does not exist"));
}

#[test]
fn revert_goes_with_during_and_takes_its_two_values() {
    let ps = problems("during_bad.yaml");
    assert_eq!(ps.len(), 2, "{ps:#?}");
    let p = find(&ps, "`revert` goes with `during`");
    at(p, 9, 77);
    assert!(hint(p).contains("add `during: [...]`"));
    let p = find(&ps, "unknown revert `later`");
    assert!(hint(p).contains("at_close"));
}

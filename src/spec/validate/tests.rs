//! Checks of the whole pass, through [`crate::spec::parse_experiment`].

use crate::config::Config;
use crate::spec::parse_experiment;

fn cfg() -> Config {
    Config::from_toml(
        "[[targets.proxy]]\nname = \"payments\"\nlisten = \"127.0.0.1:18081\"\nupstream = \"127.0.0.1:8081\"\n",
    )
    .unwrap()
}

fn problems(text: &str) -> Vec<String> {
    let err = parse_experiment(text, "t.yaml", &cfg(), &[]).unwrap_err();
    err.problems.iter().map(|p| p.to_string()).collect()
}

const HEAD: &str = "name: x\ntitle: t\nowner: o\nhypothesis:\n  probes:\n    - {name: p, tcp: {target: payments}}\n";

#[test]
fn wrong_shapes_are_located_and_the_rest_still_checked() {
    let ps = problems(&format!(
        "{HEAD}tags: payments\nmethod:\n  - {{name: a, target: payments, fault: down, duration: 1s}}\n  - wait: {{x: 1}}\n  - name: b\n    target: payments\n    fault: down\n    duration: 1s\n    toxicity: [1]\n"
    ));
    assert_eq!(ps.len(), 3, "{ps:#?}");
    assert!(
        ps[0].starts_with("t.yaml:7:7: expected a sequence, found string"),
        "{ps:#?}"
    );
    assert!(
        ps[1].starts_with("t.yaml:10:12: expected a string, found a map"),
        "{ps:#?}"
    );
    assert!(ps[2].starts_with("t.yaml:15:15:"), "{ps:#?}");
}

#[test]
fn wait_steps_take_nothing_else() {
    let ps = problems(&format!("{HEAD}method:\n  - wait: 5s\n    name: w\n"));
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert!(
        ps[0].starts_with("t.yaml:9:5: a `wait` step takes no `name`"),
        "{ps:#?}"
    );
}

#[test]
fn whole_scalar_parameters_stay_numbers_and_text_is_spliced() {
    let text = format!(
        "{HEAD}parameters:\n  n: {{type: integer, default: 5}}\n  who: {{type: string, default: ops}}\ndescription: \"owned by ${{who}}\"\nmethod:\n  - {{name: a, target: payments, fault: bandwidth, rate_kbps: \"${{n}}\", duration: 1s}}\nstop_conditions:\n  - probe: p\n    consecutive_failures: ${{n}}\n"
    );
    let e = parse_experiment(&text, "t.yaml", &cfg(), &[]).unwrap();
    assert_eq!(e.description, "owned by ops");
    assert_eq!(
        e.stop_conditions[0].rule,
        crate::spec::model::StopRule::ConsecutiveFailures(5)
    );
}

fn load_problems(method: &str, stops: &str) -> Vec<String> {
    let cfg = Config::from_toml(
        "[[targets.proxy]]\nname = \"payments\"\nlisten = \"127.0.0.1:18081\"\nupstream = \"127.0.0.1:8081\"\n[[targets.http]]\nname = \"shop\"\nurl = \"http://127.0.0.1:18080\"\n[[targets.http]]\nname = \"secure\"\nurl = \"https://127.0.0.1:18443\"\n",
    )
    .unwrap();
    let text = format!("{HEAD}method:\n{method}{stops}");
    match parse_experiment(&text, "t.yaml", &cfg, &[]) {
        Ok(_) => vec![],
        Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn load_steps_parse_into_the_model() {
    let cfg = Config::from_toml(
        "[[targets.proxy]]\nname = \"payments\"\nlisten = \"127.0.0.1:18081\"\nupstream = \"127.0.0.1:8081\"\n[[targets.http]]\nname = \"shop\"\nurl = \"http://127.0.0.1:18080/\"\n",
    )
    .unwrap();
    let text = format!(
        "{HEAD}method:\n  - name: l\n    target: shop\n    fault: load\n    path: /search?q=1\n    method: post\n    headers: {{x-a: b}}\n    body: hi\n    ramp: {{from: 10, to: 100}}\n    thresholds: [\"p99 < 300ms\", \"error_rate < 1%\"]\n    duration: 10s\nstop_conditions:\n  - load: l\n    threshold: \"error_rate < 20%\"\n"
    );
    let e = parse_experiment(&text, "t.yaml", &cfg, &[]).unwrap();
    let f = e.fault_steps()[0].clone();
    let crate::spec::model::FaultSpec::Load {
        url,
        method,
        headers,
        schedule,
        connections,
        thresholds,
        ..
    } = &f.fault
    else {
        panic!("{f:?}")
    };
    assert_eq!(url, "http://127.0.0.1:18080/search?q=1");
    assert_eq!(method, "POST");
    assert_eq!(headers["x-a"], "b");
    assert_eq!(*connections, 10);
    assert_eq!(thresholds.len(), 2);
    assert_eq!(
        *schedule,
        crate::load::Schedule::Ramp {
            from: 10.0,
            to: 100.0,
            over: std::time::Duration::from_secs(10)
        }
    );
    assert!(matches!(
        e.stop_conditions[0].rule,
        crate::spec::model::StopRule::LoadThreshold(_)
    ));
}

#[test]
fn load_mistakes_are_located_with_hints() {
    let ps = load_problems(
        "  - name: l\n    target: shop\n    fault: load\n    rate: 10\n    thresholds: [\"p99 < 300ms\", \"eror_rate < 1%\"]\n    duration: 5s\n",
        "stop_conditions:\n  - load: lod\n    threshold: \"p99 < soon\"\n",
    );
    assert_eq!(ps.len(), 3, "{ps:#?}");
    assert!(
        ps[0].starts_with("t.yaml:12:33: `eror_rate` is not a load metric")
            && ps[0].contains("did you mean `error_rate`?"),
        "{ps:#?}"
    );
    assert!(
        ps[1].contains("load step `lod`, which does not exist")
            && ps[1].contains("did you mean `l`?"),
        "{ps:#?}"
    );
    assert!(ps[2].contains("p99 < soon"), "{ps:#?}");

    let ps = load_problems(
        "  - {name: l, target: payments, fault: load, rate: 10, duration: 5s}\n  - {name: m, target: secure, fault: load, ramp: {from: 1, to: 2}, rate: 3, duration: 5s}\n  - {name: n, target: shop, fault: load, toxicity: 1, duration: 5s}\n  - {name: o, target: shop, fault: load, rate: 1, latency: 1s, duration: 5s}\n",
        "",
    );
    let all = ps.join("\n");
    assert!(
        all.contains(
            "`payments` is a proxy target; load steps call a declared [[targets.http]] endpoint"
        ),
        "{all}"
    );
    assert!(all.contains("either `rate` or `ramp`, not both"), "{all}");
    assert!(
        all.contains("`toxicity` is not an attribute of a `load` fault"),
        "{all}"
    );
    assert!(
        all.contains("a `load` fault needs `rate` or `ramp`"),
        "{all}"
    );
    assert!(
        all.contains("`latency` is not an attribute of a `load` fault"),
        "{all}"
    );
    // An https:// endpoint takes load (over TLS) like an http:// one.
    let ps = load_problems(
        "  - {name: s, target: secure, fault: load, rate: 5, duration: 5s}\n",
        "",
    );
    assert!(ps.is_empty(), "{ps:#?}");
}

#[test]
fn the_step_keys_and_attributes_are_the_raw_step_fields() {
    use crate::spec::raw::{FAULT_KINDS, RawStep, STEP_KEYS, fault_attributes};
    let mut ours: Vec<&str> = STEP_KEYS.to_vec();
    // `wait`, `parallel` and `sequence` steps, and action steps (`http`, `command`).
    ours.extend(["wait", "parallel", "sequence", "http", "command"]);
    for kind in FAULT_KINDS {
        let attrs = fault_attributes(kind).unwrap_or_default();
        ours.extend(attrs.iter().map(|(a, _)| *a));
    }
    ours.sort_unstable();
    ours.dedup();
    let mut fields = crate::spec::locate::fields_of::<RawStep>().to_vec();
    fields.sort_unstable();
    assert_eq!(ours, fields);
}

#[test]
fn a_toxiproxy_target_takes_network_faults_and_refuses_what_toxiproxy_cannot_do() {
    let cfg = Config::from_toml(
        "[[targets.proxy]]\nname = \"shop\"\ntoxiproxy = \"http://127.0.0.1:8474\"\n[[targets.http]]\nname = \"shop-http\"\nurl = \"http://127.0.0.1:26379\"\n",
    )
    .unwrap();
    let head = "name: x\ntitle: t\nowner: o\nhypothesis:\n  probes:\n    - {name: p, http: {endpoint: shop-http}}\n";
    let ok = format!(
        "{head}method:\n  - {{name: a, target: shop, fault: latency, latency: 100ms, toxicity: 0.5, duration: 1s}}\n  - {{name: b, target: shop, fault: down, duration: 1s}}\n"
    );
    parse_experiment(&ok, "t.yaml", &cfg, &[]).unwrap();
    let bad = format!(
        "{head}method:\n  - name: b\n    target: shop\n    fault: down\n    toxicity: 0.5\n    duration: 1s\n"
    );
    let err = parse_experiment(&bad, "t.yaml", &cfg, &[]).unwrap_err();
    let ps: Vec<String> = err.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert!(
        ps[0].starts_with("t.yaml:11:15: `down` with toxicity 0.5 has no Toxiproxy equivalent")
            && ps[0].contains("http://127.0.0.1:8474"),
        "{ps:#?}"
    );
    let tcp = "name: x\ntitle: t\nowner: o\nhypothesis:\n  probes:\n    - {name: p, tcp: {target: shop}}\nmethod:\n  - {name: b, target: shop, fault: down, duration: 1s}\n";
    let err = parse_experiment(tcp, "t.yaml", &cfg, &[]).unwrap_err();
    assert!(
        err.problems[0]
            .to_string()
            .contains("is a proxy on the Toxiproxy server at http://127.0.0.1:8474"),
        "{:?}",
        err.problems
    );
}

#[test]
fn on_owner_loss_is_revert_or_continue_and_a_bad_value_lists_both() {
    use crate::spec::model::OnOwnerLoss;
    let method = "method:\n  - {name: a, target: payments, fault: down, duration: 1s}\n";
    let e = parse_experiment(&format!("{HEAD}{method}"), "t.yaml", &cfg(), &[]).unwrap();
    assert_eq!(e.on_owner_loss, OnOwnerLoss::Revert, "the default");
    let text = format!("{HEAD}{method}on_owner_loss: continue\n");
    let e = parse_experiment(&text, "t.yaml", &cfg(), &[]).unwrap();
    assert_eq!(e.on_owner_loss, OnOwnerLoss::Continue);

    let ps = problems(&format!("{HEAD}{method}on_owner_loss: contnue\n"));
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert!(
        ps[0].starts_with("t.yaml:9:16: unknown on_owner_loss `contnue`"),
        "{ps:#?}"
    );
    assert!(ps[0].contains("did you mean `continue`?"), "{ps:#?}");
    let ps = problems(&format!("{HEAD}{method}on_owner_loss: resume\n"));
    assert!(
        ps[0].contains("use `revert`") && ps[0].contains("or `continue`"),
        "{ps:#?}"
    );
}

fn net_cfg() -> Config {
    Config::from_toml(
        "[[targets.proxy]]\nname = \"payments\"\nlisten = \"127.0.0.1:18081\"\nupstream = \"127.0.0.1:8081\"\n\n[[targets.host]]\nname = \"box\"\n\n[targets.host.network]\nmax_loss_percent = 40\n\n[[targets.host]]\nname = \"bare\"\n",
    )
    .unwrap()
}

#[test]
fn host_network_steps_parse_and_bad_scopes_are_located() {
    use crate::spec::model::{FaultSpec, NetAction, Step};
    let text = format!(
        "{HEAD}method:\n  - {{name: a, target: box, fault: blackhole, destinations: [10.0.0.0/24, db.internal], ports: 5432, protocol: tcp, duration: 1s}}\n  - {{name: b, target: box, fault: loss, percent: 30, ports: 8000-8099, direction: ingress, duration: 1s}}\n"
    );
    let e = parse_experiment(&text, "t.yaml", &net_cfg(), &[]).unwrap();
    let Step::Fault(a) = &e.method[0] else {
        panic!("a fault step")
    };
    let FaultSpec::HostNetwork { action, scope } = &a.fault else {
        panic!("a host network fault: {:?}", a.fault)
    };
    assert_eq!(*action, NetAction::Blackhole);
    assert_eq!(scope.destinations, ["10.0.0.0/24", "db.internal"]);
    assert_eq!(scope.ports.as_deref(), Some("5432"));
    assert_eq!(scope.protocol, "tcp");
    assert_eq!(scope.direction, "egress");
    let Step::Fault(b) = &e.method[1] else {
        panic!("a fault step")
    };
    assert!(matches!(
        &b.fault,
        FaultSpec::HostNetwork { action: NetAction::Loss { percent, .. }, scope } if *percent == 30.0 && scope.direction == "ingress"
    ));

    let err = parse_experiment(
        &format!(
            "{HEAD}method:\n  - {{name: a, target: box, fault: reject, duration: 1s}}\n  - {{name: b, target: box, fault: blackhole, ports: 90-80, destinations: [10.0.0.0/40], duration: 1s}}\n  - {{name: c, target: box, fault: loss, percent: 50, ports: 53, duration: 1s}}\n  - {{name: d, target: bare, fault: blackhole, ports: 53, duration: 1s}}\n  - {{name: e, target: box, fault: reject, ports: 53, protocol: sctp, direction: sideways, duration: 1s}}\n  - {{name: f, target: box, fault: rate_limit, rate_kbps: 0, ports: 53, duration: 1s}}\n  - {{name: g, target: box, fault: rate_limit, ports: 53, duration: 1s}}\n  - {{name: h, target: box, fault: dns, names: [\"db..internal\"], duration: 1s}}\n  - {{name: i, target: box, fault: dns, duration: 1s}}\n  - {{name: j, target: box, fault: dns, names: [db.internal], protocol: icmp, duration: 1s}}\n"
        ),
        "t.yaml",
        &net_cfg(),
        &[],
    )
    .unwrap_err();
    let ps: Vec<String> = err.problems.iter().map(|p| p.to_string()).collect();
    let has = |s: &str| ps.iter().any(|p| p.contains(s));
    assert!(has("covers every peer and every port"), "{ps:#?}");
    assert!(has("not a port or a port range"), "{ps:#?}");
    assert!(has("10.0.0.0/40"), "{ps:#?}");
    assert!(has("above the guard rail of `box` (40 %)"), "{ps:#?}");
    assert!(
        has("host `bare` does not allow host network faults"),
        "{ps:#?}"
    );
    assert!(has("protocol `sctp`"), "{ps:#?}");
    assert!(has("direction `sideways`"), "{ps:#?}");
    assert!(has("`rate_kbps` is zero"), "{ps:#?}");
    assert!(has("rate_kbps"), "{ps:#?}");
    assert_eq!(
        ps.iter().filter(|p| p.contains("rate_kbps")).count(),
        2,
        "{ps:#?}"
    );
    assert!(has("`db..internal` is not a DNS name"), "{ps:#?}");
    assert!(has("a `dns` fault needs `names`"), "{ps:#?}");
    assert!(has("protocol `icmp` cannot be used"), "{ps:#?}");

    // The fault of a one-step method.
    let fault_of = |step: &str| -> FaultSpec {
        let text = format!("{HEAD}method:\n  - {step}\n");
        let e = parse_experiment(&text, "t.yaml", &net_cfg(), &[]).unwrap();
        let Step::Fault(a) = &e.method[0] else {
            panic!("a fault step")
        };
        a.fault.clone()
    };
    let dns = fault_of("{name: a, target: box, fault: dns, names: [DB.Internal.], duration: 1s}");
    assert!(
        matches!(&dns, FaultSpec::HostNetwork { action: NetAction::DnsFail { names }, .. } if names == &["db.internal"]),
        "{dns:?}"
    );
    let rate = fault_of(
        "{name: a, target: box, fault: rate_limit, rate_kbps: 500, destinations: [10.0.0.0/24], duration: 1s}",
    );
    assert!(matches!(
        &rate,
        FaultSpec::HostNetwork {
            action: NetAction::RateLimit { rate_kbps: 500 },
            ..
        }
    ));
}

#[test]
fn namespace_of_names_a_process_target_on_the_hosts_agent() {
    use crate::spec::model::{FaultSpec, Step};
    let cfg = Config::from_toml(
        "[[targets.proxy]]\nname = \"payments\"\nlisten = \"127.0.0.1:18081\"\nupstream = \"127.0.0.1:8081\"\n\n[[agents]]\nname = \"a1\"\nurl = \"https://10.0.0.9:7411\"\nsecret = \"s\"\n\n[[agents]]\nname = \"a2\"\nurl = \"https://10.0.0.8:7411\"\nsecret = \"s\"\n\n[[targets.host]]\nname = \"box\"\nagent = \"a1\"\n\n[[targets.process]]\nname = \"checkout\"\nagent = \"a1\"\ncomm = \"checkout\"\n\n[[targets.process]]\nname = \"far\"\nagent = \"a2\"\ncomm = \"far\"\n",
    )
    .unwrap();
    let step = |ns: &str| {
        format!(
            "{HEAD}method:\n  - {{name: a, target: box, fault: blackhole, ports: 5432, namespace_of: {ns}, duration: 1s}}\n"
        )
    };
    let e = parse_experiment(&step("checkout"), "t.yaml", &cfg, &[]).unwrap();
    let Step::Fault(a) = &e.method[0] else {
        panic!("a fault step")
    };
    let FaultSpec::HostNetwork { scope, .. } = &a.fault else {
        panic!("a host network fault: {:?}", a.fault)
    };
    assert_eq!(scope.namespace_of.as_deref(), Some("checkout"));
    let problems = |text: String| -> Vec<String> {
        parse_experiment(&text, "t.yaml", &cfg, &[])
            .unwrap_err()
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect()
    };
    let ps = problems(step("chekout"));
    assert!(
        ps[0].contains("`namespace_of: chekout` is not a declared process target")
            && ps[0].contains("did you mean `checkout`?"),
        "{ps:#?}"
    );
    let ps = problems(step("far"));
    assert!(
        ps[0].contains("process `far` is on a2, but host `box` is on a1"),
        "{ps:#?}"
    );
}

#[test]
fn shaped_host_network_kinds_parse_and_bad_values_are_located() {
    use crate::spec::model::{FaultSpec, NetAction, Step};
    let text = format!(
        "{HEAD}method:\n  - {{name: a, target: box, fault: delay, latency: 100ms, jitter: 10ms, correlation: 25, ports: 5432, duration: 1s}}\n  - {{name: b, target: box, fault: reorder, percent: 25, latency: 10ms, ports: 5432, duration: 1s}}\n  - {{name: c, target: box, fault: corrupt, percent: 5, ports: 5432, duration: 1s}}\n"
    );
    let e = parse_experiment(&text, "t.yaml", &net_cfg(), &[]).unwrap();
    let actions: Vec<NetAction> = e
        .method
        .iter()
        .map(|s| match s {
            Step::Fault(f) => match &f.fault {
                FaultSpec::HostNetwork { action, .. } => action.clone(),
                other => panic!("a host network fault: {other:?}"),
            },
            other => panic!("a fault step: {other:?}"),
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            NetAction::Delay {
                latency_ms: 100.0,
                jitter_ms: 10.0,
                correlation: 25.0
            },
            NetAction::Reorder {
                percent: 25.0,
                latency_ms: 10.0
            },
            NetAction::Corrupt { percent: 5.0 },
        ]
    );
    let bad = format!(
        "{HEAD}method:\n  - {{name: a, target: box, fault: delay, latency: 10ms, jitter: 20ms, ports: 53, duration: 1s}}\n  - {{name: b, target: box, fault: delay, latency: 20s, ports: 53, duration: 1s}}\n  - {{name: c, target: box, fault: delay, ports: 53, duration: 1s}}\n  - {{name: d, target: box, fault: reorder, percent: 25, latency: 0s, ports: 53, duration: 1s}}\n  - {{name: e, target: box, fault: corrupt, percent: 150, ports: 53, duration: 1s}}\n  - {{name: f, target: box, fault: delay, latency: 10ms, correlation: 101, ports: 53, duration: 1s}}\n  - {{name: g, target: box, fault: delay, latency: 10ms, duration: 1s}}\n"
    );
    let ps: Vec<String> = parse_experiment(&bad, "t.yaml", &net_cfg(), &[])
        .unwrap_err()
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect();
    let has = |s: &str| ps.iter().any(|p| p.contains(s));
    assert!(has("jitter 20ms is more than the latency 10ms"), "{ps:#?}");
    assert!(
        has("a delay of 20000 ms is above the guard rail of `box` (10000 ms)"),
        "{ps:#?}"
    );
    assert!(has("a `delay` fault needs `latency`"), "{ps:#?}");
    assert!(has("reorder needs a latency"), "{ps:#?}");
    assert!(has("`percent: 150` is over 100"), "{ps:#?}");
    assert!(has("`correlation: 101` is over 100"), "{ps:#?}");
    assert!(has("the scope covers every peer and every port"), "{ps:#?}");
}

#[test]
fn a_dns_answer_takes_an_address_and_egress_only() {
    use crate::spec::model::{FaultSpec, NetAction, Step};
    let step = |extra: &str| {
        format!(
            "{HEAD}method:\n  - {{name: a, target: box, fault: dns, names: [db.internal], {extra}duration: 1s}}\n"
        )
    };
    let e = parse_experiment(&step("answer: 10.0.9.9, "), "t.yaml", &net_cfg(), &[]).unwrap();
    let Step::Fault(f) = &e.method[0] else {
        panic!("a fault step")
    };
    assert!(
        matches!(&f.fault, FaultSpec::HostNetwork { action: NetAction::DnsAnswer { names, answer }, .. } if names == &["db.internal"] && answer.to_string() == "10.0.9.9"),
        "{:?}",
        f.fault
    );
    let problems = |text: String| -> String {
        parse_experiment(&text, "t.yaml", &net_cfg(), &[])
            .unwrap_err()
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let ps = problems(step("answer: db.elsewhere, "));
    assert!(
        ps.contains("`answer: db.elsewhere` is not an IP address"),
        "{ps}"
    );
    let ps = problems(step("answer: 10.0.9.9, direction: ingress, "));
    assert!(ps.contains("egress) only"), "{ps}");
}

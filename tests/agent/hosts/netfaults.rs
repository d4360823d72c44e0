//! Host network faults (nftables) put in place by the agent inside its host's namespace, seen
//! from the test's own traffic across the veth link: a blackhole cuts one port while another
//! port and the control channel keep working; a reject refuses at once; loss drops its share of
//! UDP datagrams; kill -9 of the agent then a start removes the rules; a team's own table and
//! qdisc are left exactly as they were. Skipped (with `SKIP:`) without namespaces or `nft`.

use std::time::{Duration, Instant};

use super::fixture::{AGENT_NAME, Site, wait_until};
use super::netsite::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackhole_cuts_one_port_while_another_and_the_control_channel_work() {
    let Some(mut net) = net_site("").await else {
        return;
    };
    let proxy = net.addr(super::fixture::PROXY_PORT);
    let other = net.addr(OTHER_PORT);
    assert!(connect(proxy).is_ok() && connect(other).is_ok());
    let mut s = scope(
        Some(&super::fixture::PROXY_PORT.to_string()),
        "tcp",
        "ingress",
    );
    s.destinations = vec![net.site.host.controller_ip().to_string()];
    let started = Instant::now();
    let (fid, rid) = net
        .apply(NetAction::Blackhole, s)
        .await
        .unwrap_or_else(|e| panic!("apply: {e}\n{}", net.site.agent_log()));
    eprintln!("blackhole applied in {:?} (request)", started.elapsed());
    assert_eq!(chaosbot_tables(&net.site).len(), 1);
    match connect(proxy) {
        Err((std::io::ErrorKind::TimedOut, _)) => {}
        other => panic!("the blackholed port times out, got {other:?}"),
    }
    assert!(connect(other).is_ok(), "another port still answers");
    net.site
        .api
        .hello()
        .await
        .expect("the control channel still works");
    net.revert(&fid, &rid).await;
    assert!(chaosbot_tables(&net.site).is_empty(), "the table is gone");
    assert!(connect(proxy).is_ok(), "the port answers after the revert");

    // All TCP from the controller: every port is cut but the agent's own.
    let mut s = scope(None, "tcp", "ingress");
    s.destinations = vec![net.site.host.controller_ip().to_string()];
    let (fid, rid) = net.apply(NetAction::Blackhole, s).await.expect("apply");
    assert!(connect(proxy).is_err() && connect(other).is_err());
    net.site
        .api
        .hello()
        .await
        .expect("the control channel is exempted");
    net.revert(&fid, &rid).await;
    assert!(connect(other).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_lease_removes_the_rules() {
    let Some(mut net) = net_site("").await else {
        return;
    };
    let other = net.addr(OTHER_PORT);
    net.apply_leased(
        NetAction::Blackhole,
        scope(Some(&OTHER_PORT.to_string()), "tcp", "ingress"),
        1_000,
    )
    .await
    .expect("apply");
    assert!(connect(other).is_err());
    let gone = wait_until(Duration::from_secs(3), || {
        chaosbot_tables(&net.site).is_empty()
    });
    assert!(
        gone,
        "the lease lapsed and the table went: {:?}",
        chaosbot_tables(&net.site)
    );
    assert!(connect(other).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reject_refuses_connections_at_once() {
    let Some(mut net) = net_site("").await else {
        return;
    };
    let other = net.addr(OTHER_PORT);
    let (fid, rid) = net
        .apply(
            NetAction::Reject,
            scope(Some(&OTHER_PORT.to_string()), "tcp", "ingress"),
        )
        .await
        .unwrap_or_else(|e| panic!("apply: {e}\n{}", net.site.agent_log()));
    match connect(other) {
        Err((std::io::ErrorKind::ConnectionRefused, took)) => {
            assert!(took < Duration::from_millis(200), "refused after {took:?}")
        }
        other => panic!("connection refused, got {other:?}"),
    }
    net.revert(&fid, &rid).await;
    assert!(connect(other).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_drops_its_share_of_datagrams() {
    let Some(mut net) = net_site("max_loss_percent = 50").await else {
        return;
    };
    let to = net.addr(UDP_PORT);
    const N: u32 = 2000;
    let before = udp_echoes(to, N);
    assert!(before >= N - N / 100, "without the fault: {before}/{N}");
    let (fid, rid) = net
        .apply(
            NetAction::Loss {
                percent: 30.0,
                correlation: 0.0,
            },
            scope(Some(&UDP_PORT.to_string()), "udp", "ingress"),
        )
        .await
        .unwrap_or_else(|e| panic!("apply: {e}\n{}", net.site.agent_log()));
    let got = udp_echoes(to, N);
    let loss = 100.0 * f64::from(N - got) / f64::from(N);
    eprintln!("loss 30 %: observed {loss:.1} % over {N} datagrams");
    // 2000 draws at p = 0.3: one standard deviation is about 1 point.
    assert!((25.0..=35.0).contains(&loss), "observed loss {loss:.1} %");
    assert_eq!(chaosbot_tables(&net.site).len(), 1);
    net.revert(&fid, &rid).await;
    // Above the host's max_loss_percent: refused, nothing applied.
    let err = net
        .apply(
            NetAction::Loss {
                percent: 80.0,
                correlation: 0.0,
            },
            scope(Some("9101"), "udp", "ingress"),
        )
        .await
        .expect_err("above the guard rail");
    assert!(err.contains("guard rail"), "{err}");
    assert!(chaosbot_tables(&net.site).is_empty());
    assert!(udp_echoes(to, N) >= N - N / 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_scopes_are_refused_and_nothing_is_applied() {
    let Some(mut net) = net_site("interfaces = [\"veth0\"]").await else {
        return;
    };
    let cases: Vec<(NetAction, NetScope, &str)> = vec![
        (
            NetAction::Blackhole,
            scope(None, "all", "egress"),
            "every peer and every port",
        ),
        (
            NetAction::Blackhole,
            scope(Some("90-80"), "tcp", "egress"),
            "not a port",
        ),
        (
            NetAction::Blackhole,
            NetScope {
                destinations: vec!["10.1.0.0/99".into()],
                ..scope(None, "tcp", "egress")
            },
            "10.1.0.0/99",
        ),
        (
            NetAction::Blackhole,
            NetScope {
                destinations: vec!["no-such-host.invalid".into()],
                ..scope(None, "tcp", "egress")
            },
            "does not resolve",
        ),
        (
            NetAction::Blackhole,
            NetScope {
                interface: Some("nosuch0".into()),
                ..scope(Some("80"), "tcp", "egress")
            },
            "does not exist",
        ),
        (
            NetAction::Blackhole,
            NetScope {
                interface: Some("lo".into()),
                ..scope(Some("80"), "tcp", "egress")
            },
            "not allowed",
        ),
        (
            NetAction::Loss {
                percent: 101.0,
                correlation: 0.0,
            },
            scope(Some("80"), "udp", "egress"),
            "at most 100",
        ),
    ];
    for (action, s, want) in cases {
        let err = net.apply(action, s).await.expect_err("refused");
        assert!(err.contains(want), "wanted `{want}` in: {err}");
        assert!(chaosbot_tables(&net.site).is_empty(), "nothing applied");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_rules_in_place_then_start_removes_them() {
    let Some(mut net) = net_site("").await else {
        return;
    };
    let other = net.addr(OTHER_PORT);
    net.apply(
        NetAction::Blackhole,
        scope(Some(&OTHER_PORT.to_string()), "tcp", "ingress"),
    )
    .await
    .unwrap_or_else(|e| panic!("apply: {e}\n{}", net.site.agent_log()));
    // A table of this agent's that no journal names (a crash between nft and the journal).
    let stray = format!("{}0000deadbeef", hostnet::prefix_for(AGENT_NAME));
    let (ok, out) = nft_in(&net.site, &["add", "table", "inet", &stray]);
    assert!(ok, "{out}");
    net.site.agent.as_mut().expect("agent").kill9();
    assert_eq!(
        chaosbot_tables(&net.site).len(),
        2,
        "rules outlive a kill -9"
    );
    assert!(connect(other).is_err());
    net.site.start_agent().await;
    assert!(
        chaosbot_tables(&net.site).is_empty(),
        "the start removed the rules: {:?}\n{}",
        chaosbot_tables(&net.site),
        net.site.agent_log()
    );
    assert!(connect(other).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teams_own_table_and_qdisc_are_untouched() {
    let Some(mut net) = net_site("").await else {
        return;
    };
    let team = "table inet team {\n chain c {\n  type filter hook input priority 0; policy accept;\n  tcp dport 9999 counter drop\n }\n}\n";
    let path = net.site.dir.path().join("team.nft");
    std::fs::write(&path, team).expect("write the team's rules");
    let (ok, out) = nft_in(&net.site, &["-f", &path.display().to_string()]);
    assert!(ok, "{out}");
    in_ns(
        &net.site,
        &[
            "tc", "qdisc", "add", "dev", "veth0", "root", "tbf", "rate", "1gbit", "burst", "128kb",
            "latency", "50ms",
        ],
    );
    let snapshot = |site: &Site| {
        (
            nft_in(site, &["list", "table", "inet", "team"]).1,
            in_ns(site, &["tc", "qdisc", "show", "dev", "veth0"]),
        )
    };
    let before = snapshot(&net.site);
    let (fid, rid) = net
        .apply(
            NetAction::Blackhole,
            scope(Some(&OTHER_PORT.to_string()), "tcp", "ingress"),
        )
        .await
        .unwrap_or_else(|e| panic!("apply: {e}\n{}", net.site.agent_log()));
    assert_eq!(snapshot(&net.site), before, "inject left them alone");
    net.revert(&fid, &rid).await;
    assert_eq!(snapshot(&net.site), before, "revert left them alone");
    assert!(chaosbot_tables(&net.site).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_puts_a_blackhole_step_on_the_agents_host_and_takes_it_away() {
    let Some(net) = net_site("").await else {
        return;
    };
    let other = net.addr(OTHER_PORT);
    let step = format!(
        "  - {{name: cut-other, target: {HOST_TARGET}, fault: blackhole, ports: {OTHER_PORT}, protocol: tcp, direction: ingress, duration: 3s}}\n"
    );
    let exp = net.site.experiment(
        "net-cut",
        &super::fixture::experiment_yaml("net-cut", &step),
    );
    let mut controller = net.site.start_run(&exp);
    assert_eq!(
        net.site.wait_faults(1, Duration::from_secs(30)).await,
        1,
        "controller log:\n{}\nagent log:\n{}",
        controller.log(),
        net.site.agent_log()
    );
    assert_eq!(chaosbot_tables(&net.site).len(), 1);
    assert!(connect(other).is_err(), "the step cuts the port");
    let code = controller.wait_exit(Duration::from_secs(60));
    assert!(code.is_ok(), "the run ends: {code:?}\n{}", controller.log());
    assert!(
        chaosbot_tables(&net.site).is_empty(),
        "the step's table is gone"
    );
    assert!(connect(other).is_ok());
}

/// `namespace_of`: a blackhole inside a container's network namespace (a process the test
/// starts in a namespace of its own) cuts that container's traffic, while the same traffic on
/// the host keeps working; revert, and a kill -9 of the agent then a start, take it away there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_in_a_process_namespace_cuts_only_that_process() {
    // The same server on loopback in both namespaces: the container's app, and the host's own.
    let Some(ContainerSite {
        mut net,
        container,
        pid_file,
        app: _app,
        host_lo: _host_lo,
    }) = container_site().await
    else {
        return;
    };
    let lo = LO;
    let (ctr, host) = (container.name.as_str(), net.site.host.name.clone());
    assert!(connects_in(ctr, lo, OTHER_PORT) && connects_in(&host, lo, OTHER_PORT));

    let cut = |ns: Option<&str>| {
        let mut s = scope(Some(&OTHER_PORT.to_string()), "tcp", "egress");
        s.destinations = vec![lo.into()];
        s.namespace_of = ns.map(str::to_string);
        s
    };
    let (fid, rid) = net
        .apply(NetAction::Blackhole, cut(Some("app")))
        .await
        .unwrap_or_else(|e| panic!("apply: {e}\n{}", net.site.agent_log()));
    assert_eq!(
        chaosbot_tables_in(ctr).len(),
        1,
        "the table is in the container"
    );
    assert!(chaosbot_tables(&net.site).is_empty(), "and not on the host");
    assert!(!connects_in(ctr, lo, OTHER_PORT), "the container is cut");
    assert!(connects_in(&host, lo, OTHER_PORT), "the host is not");
    net.site
        .api
        .hello()
        .await
        .expect("the control channel works");
    net.revert(&fid, &rid).await;
    assert!(chaosbot_tables_in(ctr).is_empty(), "the revert removed it");
    assert!(connects_in(ctr, lo, OTHER_PORT));

    // kill -9 of the agent with the rule in place; the start removes it from the container.
    net.apply(NetAction::Blackhole, cut(Some("app")))
        .await
        .unwrap_or_else(|e| panic!("apply: {e}\n{}", net.site.agent_log()));
    net.site.agent.as_mut().expect("agent").kill9();
    assert!(
        !connects_in(ctr, lo, OTHER_PORT),
        "the rule outlives a kill -9"
    );
    net.site.start_agent().await;
    assert!(
        chaosbot_tables_in(ctr).is_empty(),
        "the start removed the container's rule: {}",
        net.site.agent_log()
    );
    assert!(connects_in(ctr, lo, OTHER_PORT));

    // A process in the host's own namespace is refused: the fault would cut the whole host.
    std::fs::write(&pid_file, _host_lo.pid().to_string()).expect("write the pid file");
    let err = net
        .apply(NetAction::Blackhole, cut(Some("app")))
        .await
        .expect_err("refused");
    assert!(err.contains("shares the host's network namespace"), "{err}");
    std::fs::write(&pid_file, "999999999").expect("write the pid file");
    let err = net
        .apply(NetAction::Blackhole, cut(Some("app")))
        .await
        .expect_err("refused");
    assert!(err.contains("app"), "{err}");
    let err = net
        .apply(NetAction::Blackhole, cut(Some("nosuch")))
        .await
        .expect_err("refused");
    assert!(err.contains("not a process target of this agent"), "{err}");
    assert!(chaosbot_tables(&net.site).is_empty() && chaosbot_tables_in(ctr).is_empty());
    let _ = std::fs::remove_file(&pid_file);
}

/// `rate_limit`: TCP into the host's port goes at about the rate (policed: what is over it is
/// dropped, and TCP backs off), other ports at full speed; the revert lifts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_a_port_near_its_rate() {
    let Some(mut net) = net_site("").await else {
        return;
    };
    let sink = net.addr(SINK_PORT);
    let free = send_rate(sink, 4 << 20);
    // 256 KB/s, and 1 MiB through it: about four seconds.
    let rate_kbps = 256u64;
    let mut s = scope(Some(&SINK_PORT.to_string()), "tcp", "ingress");
    s.destinations = vec![net.site.host.controller_ip().to_string()];
    let (fid, rid) = net
        .apply(NetAction::RateLimit { rate_kbps }, s)
        .await
        .unwrap_or_else(|e| panic!("apply: {e}\n{}", net.site.agent_log()));
    // nftables' bucket starts full (about a second of the rate): drain it, then measure.
    let _ = send_rate(sink, (rate_kbps * 1000) as usize);
    let limited = send_rate(sink, 1 << 20);
    let want = (rate_kbps * 1000) as f64;
    eprintln!(
        "free {:.0} KB/s, limited {:.0} KB/s (rate {rate_kbps} KB/s)",
        free / 1000.0,
        limited / 1000.0
    );
    assert!(
        limited > want * 0.5 && limited < want * 1.15,
        "limited to {:.0} B/s, rate {want} B/s",
        limited
    );
    assert!(
        free > want * 4.0,
        "the link itself is faster: {free:.0} B/s"
    );
    assert!(
        connect(net.addr(OTHER_PORT)).is_ok(),
        "other ports are untouched"
    );
    net.revert(&fid, &rid).await;
    assert!(chaosbot_tables(&net.site).is_empty());
    let after = send_rate(sink, 4 << 20);
    assert!(after > want * 4.0, "the revert lifted it: {after:.0} B/s");
}

/// `dns`: the host's own resolver (glibc, through /etc/resolv.conf) fails at once for the
/// named names while other names still resolve, over UDP and over TCP, and resolves them
/// again after the revert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_fault_fails_the_named_lookups_only() {
    let Some(mut net) = net_site("").await else {
        return;
    };
    let resolver = HostResolver::new(&net.site);
    let (db, other) = ("db.chaos.test", "cache.chaos.test");
    let answer = Some(DNS_ANSWER.to_string());
    assert_eq!(lookup_in(&net.site, db).0, answer, "the resolver works");
    let (fid, rid) = net
        .apply(
            NetAction::DnsFail {
                names: vec![
                    db.into(),
                    "a-much-longer-name.with.several.labels.chaos.test".into(),
                ],
            },
            scope(None, "all", "egress"),
        )
        .await
        .unwrap_or_else(|e| panic!("apply: {e}\n{}", net.site.agent_log()));
    let (got, took) = lookup_in(&net.site, db);
    assert_eq!(got, None, "the named lookup fails");
    assert!(
        took < Duration::from_millis(1500),
        "and fails at once, not by the resolver's 2 s timeout: {took:?}"
    );
    let long = "a-much-longer-name.with.several.labels.chaos.test";
    assert_eq!(
        lookup_in(&net.site, long).0,
        None,
        "a name longer than 16 bytes too"
    );
    assert_eq!(
        lookup_in(&net.site, other).0,
        answer,
        "another name resolves"
    );
    assert_eq!(
        lookup_in(&net.site, &format!("x{db}")).0,
        answer,
        "the match is exact"
    );
    // A resolver told to ask over TCP: the query's segment is reset.
    resolver.over_tcp(true);
    let (got, took) = lookup_in(&net.site, db);
    assert_eq!(got, None, "the named lookup fails over TCP too");
    assert!(took < Duration::from_millis(1500), "at once: {took:?}");
    assert_eq!(lookup_in(&net.site, long).0, None, "the long name too");
    assert_eq!(
        lookup_in(&net.site, other).0,
        answer,
        "another name resolves over TCP"
    );
    resolver.over_tcp(false);
    net.revert(&fid, &rid).await;
    assert!(chaosbot_tables(&net.site).is_empty());
    assert_eq!(
        lookup_in(&net.site, db).0,
        answer,
        "resolves after the revert"
    );
    resolver.over_tcp(true);
    assert_eq!(
        lookup_in(&net.site, db).0,
        answer,
        "and over TCP after the revert"
    );
    resolver.over_tcp(false);

    let err = net
        .apply(
            NetAction::DnsFail {
                names: vec!["bad name!".into()],
            },
            scope(None, "all", "egress"),
        )
        .await
        .expect_err("refused");
    assert!(err.contains("not a DNS name"), "{err}");
    assert!(chaosbot_tables(&net.site).is_empty());
}

/// `duplicate`: about its share of the host's outgoing datagrams arrive twice (the echo's
/// answers, sent by the host), none is lost, over IPv4 and over IPv6; its tables go on revert
/// and at a start after kill -9 like the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_sends_its_share_twice() {
    let Some(mut net) = net_site("").await else {
        return;
    };
    let to = net.addr(UDP_PORT);
    const N: u32 = 2000;
    let mut s = scope(None, "udp", "egress");
    s.destinations = vec![net.site.host.controller_ip().to_string()];
    let (fid, rid) = net
        .apply(NetAction::Duplicate { percent: 30.0 }, s.clone())
        .await
        .unwrap_or_else(|e| panic!("apply: {e}\n{}", net.site.agent_log()));
    let (distinct, total) = udp_echo_counts(to, N);
    let dup = 100.0 * f64::from(total - distinct) / f64::from(distinct.max(1));
    eprintln!("duplicate 30 %: {distinct} answers, {total} datagrams: {dup:.1} % twice");
    assert!(distinct >= N - N / 100, "nothing lost: {distinct}/{N}");
    // 2000 draws at p = 0.3: one standard deviation is about 1 point.
    assert!(
        (25.0..=35.0).contains(&dup),
        "observed {dup:.1} % duplicated"
    );
    net.revert(&fid, &rid).await;
    assert!(
        chaosbot_tables(&net.site).is_empty(),
        "the ip table is gone"
    );
    let (distinct, total) = udp_echo_counts(to, N);
    assert_eq!(distinct, total, "no duplicates after the revert");

    net.apply(NetAction::Duplicate { percent: 30.0 }, s.clone())
        .await
        .unwrap_or_else(|e| panic!("apply: {e}\n{}", net.site.agent_log()));
    net.site.agent.as_mut().expect("agent").kill9();
    assert_eq!(chaosbot_tables(&net.site).len(), 1);
    net.site.start_agent().await;
    assert!(
        chaosbot_tables(&net.site).is_empty(),
        "the start removed it: {}",
        net.site.agent_log()
    );

    // IPv6: the ip6 table's `dup to ip6 daddr`, only for the IPv6 peer named.
    let mut v6 = s.clone();
    v6.destinations = vec![net.site.host.controller_ip6().to_string()];
    let (fid, rid) = net
        .apply(NetAction::Duplicate { percent: 30.0 }, v6)
        .await
        .unwrap_or_else(|e| panic!("apply v6: {e}\n{}", net.site.agent_log()));
    let (distinct, total) = udp_echo_counts(net.addr6(UDP_PORT), N);
    let dup = 100.0 * f64::from(total - distinct) / f64::from(distinct.max(1));
    eprintln!("duplicate 30 % over IPv6: {distinct} answers, {total} datagrams: {dup:.1} % twice");
    assert!(distinct >= N - N / 100, "nothing lost: {distinct}/{N}");
    assert!(
        (25.0..=35.0).contains(&dup),
        "observed {dup:.1} % duplicated over IPv6"
    );
    let (d4, t4) = udp_echo_counts(to, N / 4);
    assert_eq!(d4, t4, "the IPv4 peer is not named: nothing duplicated");
    net.revert(&fid, &rid).await;
    assert!(chaosbot_tables(&net.site).is_empty());

    let mut inbound = s.clone();
    inbound.direction = "ingress".into();
    let err = net
        .apply(NetAction::Duplicate { percent: 30.0 }, inbound)
        .await
        .expect_err("refused");
    assert!(err.contains("egress only"), "{err}");
    assert!(chaosbot_tables(&net.site).is_empty());
}

/// `dns` with an `answer`: the host's own resolver gets the given address for the named
/// names (from the agent's answering socket, reached by a redirect of those queries only),
/// other names resolve as before, and after the revert the named ones resolve as before too,
/// also for a resolver that asks from the same source port again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_answer_sends_the_named_lookups_elsewhere() {
    let Some(mut net) = net_site("").await else {
        return;
    };
    let (ok, out) = nft_in(
        &net.site,
        &[
            "add table inet team_nat; add chain inet team_nat out { type nat hook output priority 100; policy accept; }",
        ],
    );
    assert!(ok, "the team's own nat chain: {out}");
    let (db, other) = ("db.chaos.test", "cache.chaos.test");
    let real = Some(DNS_ANSWER.to_string());
    // A resolver asking from one fixed port, on a host with a nat chain of its own: the
    // redirected flow's conntrack entry outlives the revert (up to 30 s), but the kernel no
    // longer applies the redirect of a deleted chain, so the next query goes where it should.
    const FIXED_PORT: u16 = 40_053;
    // The name server over IPv4, then over IPv6 (its queries go to the ::1 socket).
    let servers: [std::net::IpAddr; 2] = [
        net.site.host.controller_ip().into(),
        net.site.host.controller_ip6().into(),
    ];
    let mut resolver: Option<HostResolver> = None;
    for server in servers {
        drop(resolver.take()); // one resolv.conf at a time
        resolver = Some(HostResolver::at(&net.site, server));
        assert_eq!(
            lookup_in(&net.site, db).0,
            real,
            "the resolver at {server} works"
        );
        let (fid, rid) = net
            .apply(
                NetAction::DnsAnswer {
                    names: vec![db.into()],
                    answer: "10.77.0.5".parse().expect("address"),
                },
                scope(None, "all", "egress"),
            )
            .await
            .unwrap_or_else(|e| panic!("apply: {e}\n{}", net.site.agent_log()));
        assert_eq!(
            lookup_in(&net.site, db).0.as_deref(),
            Some("10.77.0.5"),
            "the named name resolves elsewhere (name server {server}): {}",
            net.site.agent_log()
        );
        assert_eq!(lookup_in(&net.site, other).0, real, "another name does not");
        assert_eq!(
            lookup_from_port(&net.site, server, db, FIXED_PORT).as_deref(),
            Some("10.77.0.5")
        );
        // Over TCP the named name cannot be sent elsewhere (a connection is redirected at
        // its SYN, before the name): it fails rather than reach the real answer.
        if let Some(r) = &resolver {
            r.over_tcp(true);
            assert_eq!(lookup_in(&net.site, db).0, None, "over TCP it fails");
            assert_eq!(
                lookup_in(&net.site, other).0,
                real,
                "others resolve over TCP"
            );
            r.over_tcp(false);
        }
        net.revert(&fid, &rid).await;
        assert!(chaosbot_tables(&net.site).is_empty());
        assert_eq!(
            lookup_in(&net.site, db).0,
            real,
            "as before after the revert"
        );
        assert_eq!(
            lookup_from_port(&net.site, server, db, FIXED_PORT),
            real,
            "and from the same port too: {}",
            net.site.agent_log()
        );
    }

    let err = net
        .apply(
            NetAction::DnsAnswer {
                names: vec![db.into()],
                answer: "10.77.0.5".parse().expect("address"),
            },
            scope(None, "udp", "ingress"),
        )
        .await
        .expect_err("refused");
    assert!(err.contains("egress) only"), "{err}");
    assert!(chaosbot_tables(&net.site).is_empty());
}

//! Host faults: process signals (`kill`, `pause`) and resource stress (`cpu`, `memory`,
//! `disk`, `io`), each checked against the guard rails its declared target sets.

use super::cx::Cx;
use crate::spec::did_you_mean;
use crate::spec::model::{
    Cidr, DiskAmount, FaultSpec, MemoryAmount, NetAction, NetScope, ProcessAction, ResourceKind,
    Signal, parse_port_range,
};
use crate::spec::raw::RawStep;

/// The process and resource kinds: their attributes checked against the target's guard rails.
pub(super) fn host_fault_spec(
    cx: &mut Cx,
    path: &str,
    k: &str,
    s: &RawStep,
    target: Option<&str>,
) -> Option<FaultSpec> {
    match k {
        "kill" => kill(cx, path, s, target),
        "pause" => Some(FaultSpec::Process {
            action: ProcessAction::Pause,
        }),
        "cpu" => cpu(cx, path, s, target),
        "memory" => memory(cx, path, s, target),
        "disk" => disk(cx, path, s, target),
        "io" => io(cx, path, s, target),
        "blackhole" => host_network(cx, path, s, target, NetAction::Blackhole),
        "reject" => host_network(cx, path, s, target, NetAction::Reject),
        "loss" => {
            let percent = cx.number(&format!("{path}.percent"), &s.percent, 0.0, 100.0, "30");
            let correlation = correlation(cx, path, s);
            host_network(
                cx,
                path,
                s,
                target,
                NetAction::Loss {
                    percent: percent?,
                    correlation: correlation?,
                },
            )
        }
        "dns" => {
            let names = dns_names(cx, &format!("{path}.names"), &s.names)?;
            if let Some(p) = s.protocol.as_deref()
                && !["udp", "tcp", "all"].contains(&p.trim().to_ascii_lowercase().as_str())
            {
                cx.at(
                    &format!("{path}.protocol"),
                    format!("a dns fault acts on queries over UDP and TCP; protocol `{p}` cannot be used"),
                    "remove `protocol` (both), or write udp or tcp",
                );
                return None;
            }
            let Some(text) = s.answer.as_deref() else {
                return host_network(cx, path, s, target, NetAction::DnsFail { names });
            };
            let Ok(answer) = text.trim().parse::<std::net::IpAddr>() else {
                cx.at(
                    &format!("{path}.answer"),
                    format!("`answer: {text}` is not an IP address"),
                    "write the address the names should resolve to, e.g. `answer: 10.0.9.9`",
                );
                return None;
            };
            if s.direction
                .as_deref()
                .is_some_and(|d| d.trim().eq_ignore_ascii_case("ingress"))
            {
                cx.at(
                    &format!("{path}.direction"),
                    "a dns answer acts on the host's own lookups (egress) only",
                    "remove `direction: ingress`",
                );
                return None;
            }
            host_network(cx, path, s, target, NetAction::DnsAnswer { names, answer })
        }
        "duplicate" => {
            let percent = cx.number(&format!("{path}.percent"), &s.percent, 0.0, 100.0, "10")?;
            if s.direction
                .as_deref()
                .is_some_and(|d| d.trim().eq_ignore_ascii_case("ingress"))
            {
                cx.at(
                    &format!("{path}.direction"),
                    "duplicate acts on the host's outgoing packets only",
                    "remove `direction: ingress` (duplicate the peer's side with a fault on its own host)",
                );
                return None;
            }
            host_network(cx, path, s, target, NetAction::Duplicate { percent })
        }
        "delay" => {
            let d = |cx: &mut Cx, key: &str, v: &Option<String>, default| {
                cx.duration(&format!("{path}.{key}"), v, default)
            };
            let latency = d(cx, "latency", &s.latency, None);
            let jitter = d(cx, "jitter", &s.jitter, Some(std::time::Duration::ZERO));
            let correlation = correlation(cx, path, s);
            let (latency, jitter, correlation) = (latency?, jitter?, correlation?);
            if latency.is_zero() {
                cx.at(
                    &format!("{path}.latency"),
                    "a delay of 0 does nothing",
                    "write the added delay, e.g. `latency: 100ms`",
                );
                return None;
            }
            if jitter > latency {
                cx.at(
                    &format!("{path}.jitter"),
                    format!(
                        "jitter {} is more than the latency {}",
                        humantime::format_duration(jitter),
                        humantime::format_duration(latency)
                    ),
                    "a delay is latency ± jitter and cannot go below zero; use a jitter of at most the latency",
                );
                return None;
            }
            let latency_ms = latency.as_secs_f64() * 1000.0;
            let jitter_ms = jitter.as_secs_f64() * 1000.0;
            delay_within_rail(
                cx,
                &format!("{path}.latency"),
                target,
                latency_ms + jitter_ms,
            )?;
            host_network(
                cx,
                path,
                s,
                target,
                NetAction::Delay {
                    latency_ms,
                    jitter_ms,
                    correlation,
                },
            )
        }
        "reorder" => {
            let percent = cx.number(&format!("{path}.percent"), &s.percent, 0.0, 100.0, "25");
            let latency = cx.duration(&format!("{path}.latency"), &s.latency, None);
            let (percent, latency) = (percent?, latency?);
            if latency.is_zero() {
                cx.at(
                    &format!("{path}.latency"),
                    "reorder needs a latency: the packets that do not go at once wait that long",
                    "write e.g. `latency: 10ms`",
                );
                return None;
            }
            let latency_ms = latency.as_secs_f64() * 1000.0;
            delay_within_rail(cx, &format!("{path}.latency"), target, latency_ms)?;
            host_network(
                cx,
                path,
                s,
                target,
                NetAction::Reorder {
                    percent,
                    latency_ms,
                },
            )
        }
        "corrupt" => {
            let percent = cx.number(&format!("{path}.percent"), &s.percent, 0.0, 100.0, "5")?;
            host_network(cx, path, s, target, NetAction::Corrupt { percent })
        }
        "rate_limit" => {
            let rate_kbps = cx.positive(&format!("{path}.rate_kbps"), &s.rate_kbps, "500")?;
            host_network(cx, path, s, target, NetAction::RateLimit { rate_kbps })
        }
        _ => None,
    }
}

/// `kill`: a signal (TERM unless named), and a restart only where the target declares how.
fn kill(cx: &mut Cx, path: &str, s: &RawStep, target: Option<&str>) -> Option<FaultSpec> {
    let at = |key: &str| format!("{path}.{key}");
    let signal = match s.signal.as_deref() {
        None => Some(Signal::Term),
        Some(text) => match Signal::parse(text) {
            Some(sig) => Some(sig),
            None => {
                let up = text.trim().to_ascii_uppercase();
                let bare = up.strip_prefix("SIG").unwrap_or(&up).to_string();
                let hint = match did_you_mean(&bare, Signal::NAMES.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("signals a kill step may send: {}", Signal::NAMES.join(", ")),
                };
                cx.at(&at("signal"), format!("unknown signal `{text}`"), hint);
                None
            }
        },
    };
    let restart = match s.restart.as_deref().map(str::trim) {
        None | Some("false") => Some(false),
        Some("true") => Some(true),
        Some(other) => {
            cx.at(
                &at("restart"),
                format!("`restart: {other}` is not true or false"),
                "write `restart: true` to run the target's restart_command when the step ends",
            );
            None
        }
    };
    if restart == Some(true)
        && let Some(t) = target
        && cx
            .cfg
            .process_target(t)
            .is_some_and(|p| p.restart_command.is_none())
    {
        cx.at(
            &at("restart"),
            format!("target `{t}` declares no `restart_command`"),
            "ask the operator to add `restart_command` to the target, or remove `restart: true`",
        );
        return None;
    }
    Some(FaultSpec::Process {
        action: ProcessAction::Kill {
            signal: signal?,
            restart: restart?,
        },
    })
}

/// `cpu`: busy workers (within the target's guard rail) at a duty cycle.
fn cpu(cx: &mut Cx, path: &str, s: &RawStep, target: Option<&str>) -> Option<FaultSpec> {
    let at = |key: &str| format!("{path}.{key}");
    let workers = match &s.workers {
        None => Some(1),
        Some(_) => cx.positive(&at("workers"), &s.workers, "1"),
    };
    let max = target
        .and_then(|t| cx.cfg.host_target(t))
        .map(|h| h.cpu_worker_limit());
    if let (Some(w), Some(max)) = (workers, max)
        && w > u64::from(max)
    {
        cx.at(
            &at("workers"),
            format!(
                "{w} cpu workers is above the guard rail of `{}` ({max})",
                target.unwrap_or_default()
            ),
            format!("use at most {max}, or ask the operator to raise max_cpu_workers"),
        );
        return None;
    }
    let percent = cx.number(&at("percent"), &s.percent, 0.0, 100.0, "50");
    Some(FaultSpec::Resource {
        stress: ResourceKind::Cpu {
            workers: u32::try_from(workers?).unwrap_or(u32::MAX),
            percent: percent?,
        },
    })
}

/// `memory`: `mib` (within the target's guard rail) or a `fraction` of what is available.
fn memory(cx: &mut Cx, path: &str, s: &RawStep, target: Option<&str>) -> Option<FaultSpec> {
    let at = |key: &str| format!("{path}.{key}");
    if !cx.one_of(
        path,
        "memory",
        ("mib", s.mib.is_some()),
        ("fraction", s.fraction.is_some()),
    ) {
        return None;
    }
    let host = target.and_then(|t| cx.cfg.host_target(t)).cloned();
    let amount = if s.mib.is_some() {
        let mib = cx.positive(&at("mib"), &s.mib, "256")?;
        if let Some(h) = &host
            && let Some(max) = h.max_memory_mib
            && mib > max
        {
            cx.at(
                &at("mib"),
                format!(
                    "{mib} MiB is beyond the memory guard rail of `{}` (max_memory_mib = {max})",
                    h.name
                ),
                format!("use at most {max}, or ask the operator to raise max_memory_mib"),
            );
            return None;
        }
        MemoryAmount::Mib(mib)
    } else {
        MemoryAmount::Fraction(cx.number(&at("fraction"), &s.fraction, 0.0, 1.0, "0.5")?)
    };
    Some(FaultSpec::Resource {
        stress: ResourceKind::Memory { amount },
    })
}

/// `disk`: `mib` to write, or fill `until_percent` (within the target's guard rail).
fn disk(cx: &mut Cx, path: &str, s: &RawStep, target: Option<&str>) -> Option<FaultSpec> {
    let at = |key: &str| format!("{path}.{key}");
    if !cx.one_of(
        path,
        "disk",
        ("mib", s.mib.is_some()),
        ("until_percent", s.until_percent.is_some()),
    ) {
        return None;
    }
    let amount = if s.mib.is_some() {
        DiskAmount::Mib(cx.positive(&at("mib"), &s.mib, "256")?)
    } else {
        let p = cx.number(&at("until_percent"), &s.until_percent, 0.0, 100.0, "80")?;
        if let Some(d) = target.and_then(|t| cx.cfg.disk_target(t))
            && p > d.max_fill_percent
        {
            let (name, max) = (d.name.clone(), d.max_fill_percent);
            cx.at(
                &at("until_percent"),
                format!("filling to {p}% is beyond the guard rail of `{name}` (max_fill_percent = {max})"),
                format!("use at most {max}"),
            );
            return None;
        }
        DiskAmount::UntilPercent(p)
    };
    Some(FaultSpec::Resource {
        stress: ResourceKind::Disk { amount },
    })
}

/// `io`: fsync'd writes at `mib_per_s` (within the target's guard rail).
fn io(cx: &mut Cx, path: &str, s: &RawStep, target: Option<&str>) -> Option<FaultSpec> {
    let at = |key: &str| format!("{path}.{key}");
    let block_kib = match &s.block_kib {
        None => Some(64),
        Some(_) => cx.positive(&at("block_kib"), &s.block_kib, "64"),
    };
    if let Some(b) = block_kib
        && b > 65536
    {
        cx.at(
            &at("block_kib"),
            format!("`block_kib: {b}` is over 65536 (64 MiB)"),
            "use blocks of 4 to 65536 KiB, like `block_kib: 64`",
        );
        return None;
    }
    let rate = cx.positive(&at("mib_per_s"), &s.mib_per_s, "20")?;
    if let Some(d) = target.and_then(|t| cx.cfg.disk_target(t))
        && rate > d.max_io_mib_per_s
    {
        let (name, max) = (d.name.clone(), d.max_io_mib_per_s);
        cx.at(
            &at("mib_per_s"),
            format!(
                "{rate} MiB/s is beyond the io guard rail of `{name}` (max_io_mib_per_s = {max})"
            ),
            format!("use at most {max}, or ask the operator to raise max_io_mib_per_s"),
        );
        return None;
    }
    Some(FaultSpec::Resource {
        stress: ResourceKind::Io {
            block_kib: block_kib?,
            mib_per_s: rate,
        },
    })
}

/// `blackhole`, `reject`, `loss`: the scope's syntax and the host's guard rails, checked before
/// the run (host names resolve, and interfaces are checked, on the agent when injected).
fn host_network(
    cx: &mut Cx,
    path: &str,
    s: &RawStep,
    target: Option<&str>,
    action: NetAction,
) -> Option<FaultSpec> {
    let at = |key: &str| format!("{path}.{key}");
    let mut ok = true;
    let protocol = s
        .protocol
        .as_deref()
        .unwrap_or("all")
        .trim()
        .to_ascii_lowercase();
    if !["tcp", "udp", "icmp", "all"].contains(&protocol.as_str()) {
        cx.at(
            &at("protocol"),
            format!("protocol `{protocol}` is not one of tcp, udp, icmp, all"),
            "write `protocol: tcp` (or udp, icmp, all)",
        );
        ok = false;
    }
    let direction = s
        .direction
        .as_deref()
        .unwrap_or("egress")
        .trim()
        .to_ascii_lowercase();
    if !["egress", "ingress"].contains(&direction.as_str()) {
        cx.at(
            &at("direction"),
            format!("direction `{direction}` is not egress or ingress"),
            "write `direction: egress` (the host's outgoing traffic) or `direction: ingress`",
        );
        ok = false;
    }
    if let Some(p) = &s.ports
        && parse_port_range(p).is_none()
    {
        cx.at(
            &at("ports"),
            format!("ports `{p}` is not a port or a port range (1..65535, low-high)"),
            "write e.g. `ports: 5432` or `ports: 8000-8099`",
        );
        ok = false;
    }
    let destinations = s.destinations.clone().unwrap_or_default();
    let mut every_peer = destinations.is_empty();
    for d in &destinations {
        // Something numeric must be a CIDR or address; anything else is a host name.
        let numeric =
            d.contains('/') || d.contains(':') || d.chars().all(|c| c.is_ascii_digit() || c == '.');
        match Cidr::parse(d) {
            Ok(c) => every_peer |= c.is_everything(),
            Err(why) if numeric => {
                cx.at(
                    &at("destinations"),
                    format!("destination `{d}` is not a CIDR or an address ({why})"),
                    "write e.g. 10.0.0.0/24, 10.0.0.5 or a host name",
                );
                ok = false;
            }
            Err(_) => {}
        }
    }
    if let Some(name) = &s.namespace_of {
        ok &= namespace_of(cx, &at("namespace_of"), name, target);
    }
    let rails = target
        .and_then(|t| cx.cfg.host_target(t))
        .map(|h| (h.name.clone(), h.network.clone(), h.agent.is_some()));
    if let Some((name, rails, on_agent)) = rails {
        match rails {
            // The agent's own agent.toml holds the guard rails it enforces when injecting.
            None if on_agent => {}
            None => {
                cx.at(
                    &at("fault"),
                    format!("host `{name}` does not allow host network faults (it has no [targets.host.network] section)"),
                    "ask the operator to add [targets.host.network] to the host target",
                );
                ok = false;
            }
            Some(r) => {
                let narrowed_by_names = matches!(
                    action,
                    NetAction::DnsFail { .. } | NetAction::DnsAnswer { .. }
                );
                if every_peer
                    && s.ports.is_none()
                    && protocol == "all"
                    && !narrowed_by_names
                    && !r.allow_everything
                {
                    cx.at(
                        path,
                        format!("the scope covers every peer and every port of host `{name}`"),
                        "narrow it with `destinations` or `ports`, or ask the operator to set allow_everything = true",
                    );
                    ok = false;
                }
                if let (NetAction::Loss { percent, .. }, Some(max)) = (&action, r.max_loss_percent)
                    && *percent > max
                {
                    cx.at(
                        &at("percent"),
                        format!("loss {percent} % is above the guard rail of `{name}` ({max} %)"),
                        format!("use at most {max}, or ask the operator to raise max_loss_percent"),
                    );
                    ok = false;
                }
            }
        }
    }
    ok.then(|| FaultSpec::HostNetwork {
        action,
        scope: NetScope {
            destinations,
            ports: s.ports.clone(),
            protocol,
            direction,
            interface: s.interface.clone(),
            namespace_of: s.namespace_of.clone(),
        },
    })
}

/// `correlation` in percent (0 when not given).
fn correlation(cx: &mut Cx, path: &str, s: &RawStep) -> Option<f64> {
    match s.correlation.as_deref().map(str::trim) {
        None | Some("0") => Some(0.0),
        Some(_) => cx.number(
            &format!("{path}.correlation"),
            &s.correlation,
            0.0,
            100.0,
            "25",
        ),
    }
}

/// A packet delay of `ms` is within the host's `max_delay_ms` (hosts whose rails live on
/// their agent are checked there, when injecting).
fn delay_within_rail(cx: &mut Cx, at: &str, target: Option<&str>, ms: f64) -> Option<()> {
    let Some(h) = target.and_then(|t| cx.cfg.host_target(t)) else {
        return Some(());
    };
    let Some(max) = h.network.as_ref().map(|r| r.max_delay()) else {
        return Some(());
    };
    if ms > max as f64 {
        let name = h.name.clone();
        cx.at(
            at,
            format!("a delay of {ms} ms is above the guard rail of `{name}` ({max} ms)"),
            format!("use at most {max} ms (latency plus jitter), or ask the operator to raise max_delay_ms"),
        );
        return None;
    }
    Some(())
}

/// `dns`: at least one name, each a valid DNS name.
fn dns_names(cx: &mut Cx, at: &str, names: &Option<Vec<String>>) -> Option<Vec<String>> {
    let Some(names) = names.as_ref().filter(|n| !n.is_empty()) else {
        cx.at(
            at,
            "a dns fault needs the names whose lookups fail",
            "write e.g. `names: [db.internal, cache.internal]`",
        );
        return None;
    };
    let mut out = Vec::new();
    for n in names {
        match crate::spec::model::dns_name(n) {
            Ok(name) => out.push(name),
            Err(why) => {
                cx.at(
                    at,
                    format!("`{n}` is not a DNS name: {why}"),
                    "write the name as the application looks it up, e.g. db.internal",
                );
                return None;
            }
        }
    }
    Some(out)
}

/// `namespace_of`: a declared process target on the same agent as the host, whose network
/// namespace the fault acts in.
fn namespace_of(cx: &mut Cx, at: &str, name: &str, host: Option<&str>) -> bool {
    let Some(process) = cx.cfg.process_target(name) else {
        let names: Vec<&str> = cx
            .cfg
            .targets
            .process
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        let hint = match did_you_mean(name, names.iter().copied()) {
            Some(n) => format!("did you mean `{n}`?"),
            None if names.is_empty() => {
                "declare the process as a [[targets.process]] (on the host's agent) first".into()
            }
            None => format!("declared process targets: {}", names.join(", ")),
        };
        cx.at(
            at,
            format!("`namespace_of: {name}` is not a declared process target"),
            hint,
        );
        return false;
    };
    let host_agent = host
        .and_then(|h| cx.cfg.host_target(h))
        .map(|h| h.agent.clone());
    if let Some(host_agent) = host_agent
        && host_agent != process.agent
    {
        let agent = |a: &Option<String>| a.clone().unwrap_or_else(|| "the local agent".into());
        cx.at(
            at,
            format!(
                "process `{name}` is on {}, but host `{}` is on {}",
                agent(&process.agent),
                host.unwrap_or_default(),
                agent(&host_agent)
            ),
            "a host network fault enters the namespace of a process on the same host; name a host target of the process's agent",
        );
        return false;
    }
    true
}

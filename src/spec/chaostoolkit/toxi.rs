//! `chaostoxi` activities (Chaos Toolkit's Toxiproxy extension, chaostoolkit-toxiproxy) as
//! chaosbot proxy faults on the same Toxiproxy server.
//!
//! A toxic lives from the activity that creates it to the one that deletes it (or
//! `enable_proxy` after `disable_proxy`, or `reset`): it becomes one fault step held while the
//! activities between run. One the method never removes (its rollbacks do, or nothing does)
//! is held to the end of the method and left in place through the hypothesis' after round,
//! then reverted by the close before the rollbacks run, as Chaos Toolkit's order has it.
//! Each proxy becomes a `[[targets.proxy]]` naming the server (`toxiproxy_url`, or
//! `toxiproxy_host` and `toxiproxy_port` from `configuration`) and the proxy.

use serde_json::{Map, Value, json};

use super::{Importer, Role, scalar_text, slug, unique_name};
use crate::spec::locate::Node;

/// What one chaostoxi activity does to the toxics in place.
pub(super) enum Toxi {
    /// A toxic (or a disabled proxy) from here on: the fault step, without `during`.
    Start { key: String, step: Value },
    /// The toxic (or disabled proxy) of this key comes off.
    End(String),
    /// `reset`: every toxic comes off, every proxy is enabled.
    EndAll,
}

/// The functions imported, for the message about one that is not.
const KNOWN: &[&str] = &[
    "chaostoxi.toxic.actions: create_toxic, create_latency_toxic, create_bandwith_degradation_toxic, create_slow_connection_close_toxic, create_timeout_toxic, create_slicer_toxic, create_limiter_toxic, delete_toxic",
    "chaostoxi.proxy.actions: disable_proxy, enable_proxy, reset",
];

pub(super) struct ToxiTarget {
    pub name: String,
    pub url: String,
    pub proxy: String,
}

pub(super) fn is_chaostoxi(provider: &Node) -> bool {
    provider.get("type").and_then(Node::scalar) == Some("python")
        && provider
            .get("module")
            .and_then(Node::scalar)
            .is_some_and(|m| m == "chaostoxi" || m.starts_with("chaostoxi."))
}

/// The key of a toxic, and of a disabled proxy.
fn toxic_key(proxy: &str, toxic: &str) -> String {
    format!("toxic {proxy}/{toxic}")
}
fn down_key(proxy: &str) -> String {
    format!("down {proxy}")
}

impl Importer<'_> {
    /// One chaostoxi activity (its provider is `python` with a `chaostoxi` module).
    pub(super) fn chaostoxi(&mut self, p: &str, n: &Node, role: Role) -> Option<Toxi> {
        let provider = n.get("provider")?;
        let pp = format!("{p}/provider");
        let name = n
            .get("name")
            .map(|x| scalar_text(&self.value(x)))
            .unwrap_or_default();
        let module = provider
            .get("module")
            .and_then(Node::scalar)
            .unwrap_or_default()
            .to_string();
        let func = provider
            .get("func")
            .and_then(Node::scalar)
            .unwrap_or_default()
            .to_string();
        let fpos = provider.get("func").map(|f| f.pos).unwrap_or(provider.pos);
        let args = match provider
            .get("arguments")
            .map(|a| self.subst(&self.value(a)))
        {
            Some(Value::Object(m)) => m,
            None | Some(Value::Null) => Map::new(),
            Some(_) => {
                self.problem(
                    provider.pos,
                    &format!("{pp}/arguments"),
                    format!("the arguments of `{module}.{func}` are not a map"),
                    "write them by name, like `{\"for_proxy\": \"db\", \"toxic_name\": \"slow\", \"latency\": 300}`",
                );
                return None;
            }
        };
        // A secret would become a proxy or toxic name written into the config.
        let mut used = Vec::new();
        super::secrets_in(&Value::Object(args.clone()), &mut used);
        if !used.is_empty() {
            self.secret_misplaced(provider.pos, &pp, &name, &used);
            return None;
        }
        if role == Role::Hypothesis {
            self.problem(
                provider.pos,
                &pp,
                format!("hypothesis probe `{name}` calls `{module}.{func}`, which changes the system"),
                "the steady-state hypothesis only observes: move the Toxiproxy action to the method",
            );
            return None;
        }
        let known_module = matches!(
            (module.as_str(), func.as_str()),
            (
                "chaostoxi.toxic.actions",
                "create_toxic"
                    | "create_latency_toxic"
                    | "create_bandwith_degradation_toxic"
                    | "create_slow_connection_close_toxic"
                    | "create_timeout_toxic"
                    | "create_slicer_toxic"
                    | "create_limiter_toxic"
                    | "delete_toxic"
            ) | (
                "chaostoxi.proxy.actions",
                "disable_proxy" | "enable_proxy" | "reset"
            )
        );
        if !known_module {
            let hint = if matches!(
                func.as_str(),
                "create_proxy" | "modify_proxy" | "delete_proxy"
            ) {
                "chaosbot acts on declared proxies only: create the proxy on the Toxiproxy server beforehand and remove this activity (its toxics still import)".to_string()
            } else {
                format!("the chaostoxi functions imported are {}", KNOWN.join("; "))
            };
            self.problem(
                fpos,
                &format!("{pp}/func"),
                format!("`{module}.{func}` (activity `{name}`) is not a chaostoxi function chaosbot imports"),
                &hint,
            );
            return None;
        }
        let arg = |me: &mut Self, key: &str| -> Option<Value> {
            match args.get(key) {
                Some(v) if !v.is_null() => Some(v.clone()),
                _ => {
                    me.problem(
                        provider.pos,
                        &format!("{pp}/arguments/{key}"),
                        format!("`{func}` (activity `{name}`) needs the argument `{key}`"),
                        &format!("add `\"{key}\": ...` under `arguments`"),
                    );
                    None
                }
            }
        };
        let int = |me: &mut Self, key: &str, v: Option<Value>| -> Option<u64> {
            let v = v?;
            match v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            {
                Some(i) => Some(i),
                None => {
                    me.problem(
                        provider.pos,
                        &format!("{pp}/arguments/{key}"),
                        format!(
                            "`{key}` of `{func}` is not a whole number (`{}`)",
                            scalar_text(&v)
                        ),
                        "Toxiproxy's attributes are whole numbers (milliseconds, KB/s, bytes)",
                    );
                    None
                }
            }
        };
        match func.as_str() {
            "delete_toxic" => {
                let proxy = scalar_text(&arg(self, "for_proxy")?);
                let toxic = scalar_text(&arg(self, "toxic_name")?);
                return Some(Toxi::End(toxic_key(&proxy, &toxic)));
            }
            "enable_proxy" => {
                let proxy = scalar_text(&arg(self, "proxy_name")?);
                return Some(Toxi::End(down_key(&proxy)));
            }
            "reset" => return Some(Toxi::EndAll),
            _ => {}
        }
        if role == Role::Rollback {
            self.problem(
                fpos,
                &format!("{pp}/func"),
                format!("rollback `{name}` calls `{func}`, which adds a fault"),
                "a rollback puts things back: there, chaosbot imports delete_toxic, enable_proxy and reset",
            );
            return None;
        }
        let (proxy, key, mut step) = if func == "disable_proxy" {
            let proxy = scalar_text(&arg(self, "proxy_name")?);
            (proxy.clone(), down_key(&proxy), json!({"fault": "down"}))
        } else {
            let proxy = arg(self, "for_proxy").map(|v| scalar_text(&v));
            let toxic = arg(self, "toxic_name").map(|v| scalar_text(&v));
            let ms = |i: u64| format!("{i}ms");
            let (kind, attrs): (String, Map<String, Value>) = match func.as_str() {
                "create_toxic" => {
                    let kind = arg(self, "toxic_type").map(|v| scalar_text(&v));
                    let a = match args.get("attributes") {
                        Some(Value::Object(m)) => m.clone(),
                        _ => Map::new(),
                    };
                    (kind?, a)
                }
                other => {
                    let mut a = Map::new();
                    let pairs: &[(&str, &str)] = match other {
                        "create_latency_toxic" => &[("latency", "latency"), ("jitter", "jitter")],
                        "create_bandwith_degradation_toxic" => &[("rate", "rate")],
                        "create_slow_connection_close_toxic" => &[("delay", "delay")],
                        "create_timeout_toxic" => &[("timeout", "timeout")],
                        "create_slicer_toxic" => &[
                            ("average_size", "average_size"),
                            ("size_variation", "size_variation"),
                            ("delay", "delay"),
                        ],
                        _ => &[("bytes_limit", "bytes")],
                    };
                    for (from, to) in pairs {
                        match args.get(*from) {
                            Some(v) => {
                                a.insert((*to).to_string(), v.clone());
                            }
                            // Defaults of chaostoxi's signatures.
                            None if *from == "jitter" => {
                                a.insert("jitter".into(), json!(0));
                            }
                            None => {
                                arg(self, from);
                            }
                        }
                    }
                    let kind = match other {
                        "create_latency_toxic" => "latency",
                        "create_bandwith_degradation_toxic" => "bandwidth",
                        "create_slow_connection_close_toxic" => "slow_close",
                        "create_timeout_toxic" => "timeout",
                        "create_slicer_toxic" => "slicer",
                        _ => "limit_data",
                    };
                    (kind.to_string(), a)
                }
            };
            let at = |me: &mut Self, k: &str| int(me, k, attrs.get(k).cloned());
            let mut step = Map::new();
            step.insert("fault".into(), Value::String(kind.clone()));
            // Toxiproxy's units: milliseconds, KB/s, bytes; the slicer's delay microseconds.
            match kind.as_str() {
                "latency" => {
                    step.insert("latency".into(), Value::String(ms(at(self, "latency")?)));
                    let j = int(
                        self,
                        "jitter",
                        Some(attrs.get("jitter").cloned().unwrap_or(json!(0))),
                    )?;
                    step.insert("jitter".into(), Value::String(ms(j)));
                }
                "bandwidth" => {
                    step.insert("rate_kbps".into(), json!(at(self, "rate")?));
                }
                "slow_close" => {
                    step.insert("delay".into(), Value::String(ms(at(self, "delay")?)));
                }
                "timeout" | "reset_peer" => {
                    step.insert("timeout".into(), Value::String(ms(at(self, "timeout")?)));
                }
                "slicer" => {
                    step.insert("average_size".into(), json!(at(self, "average_size")?));
                    let v = int(
                        self,
                        "size_variation",
                        Some(attrs.get("size_variation").cloned().unwrap_or(json!(0))),
                    )?;
                    step.insert("size_variation".into(), json!(v));
                    let d = int(
                        self,
                        "delay",
                        Some(attrs.get("delay").cloned().unwrap_or(json!(0))),
                    )?;
                    step.insert("delay".into(), Value::String(format!("{d}us")));
                }
                "limit_data" => {
                    step.insert("bytes".into(), json!(at(self, "bytes")?));
                }
                other => {
                    self.problem(
                        provider.pos,
                        &format!("{pp}/arguments/toxic_type"),
                        format!("`{other}` is not a Toxiproxy toxic type"),
                        "Toxiproxy's toxics are latency, bandwidth, slow_close, timeout, reset_peer, slicer and limit_data",
                    );
                    return None;
                }
            }
            if let Some(stream) = args.get("stream").map(scalar_text) {
                step.insert("direction".into(), Value::String(stream));
            }
            if let Some(t) = args.get("toxicity").and_then(Value::as_f64) {
                step.insert("toxicity".into(), json!(t));
            }
            let (proxy, toxic) = (proxy?, toxic?);
            (
                proxy.clone(),
                toxic_key(&proxy, &toxic),
                Value::Object(step),
            )
        };
        let target = self.toxi_target(provider, &pp, &proxy)?;
        let base = name.clone();
        let unique = unique_name(&slug(&base), &self.step_names);
        self.step_names.push(unique.clone());
        step["name"] = Value::String(unique);
        step["target"] = Value::String(target);
        Some(Toxi::Start { key, step })
    }

    /// The `[[targets.proxy]]` of a proxy on the experiment's Toxiproxy server.
    fn toxi_target(&mut self, provider: &Node, pp: &str, proxy: &str) -> Option<String> {
        let cfg = |k: &str| {
            self.config
                .get(k)
                .map(scalar_text)
                .filter(|s| !s.is_empty())
        };
        let url = match (cfg("toxiproxy_url"), cfg("toxiproxy_host")) {
            (Some(u), _) => u.trim_end_matches('/').to_string(),
            (None, Some(h)) => {
                let port = cfg("toxiproxy_port").unwrap_or_else(|| "8474".into());
                format!("http://{h}:{port}")
            }
            (None, None) => {
                self.problem(
                    provider.pos,
                    pp,
                    "chaostoxi activities need the Toxiproxy server: `configuration` has neither `toxiproxy_url` nor `toxiproxy_host`",
                    "add `\"toxiproxy_host\": \"127.0.0.1\"` (and `\"toxiproxy_port\"`, 8474 by default) to `configuration`",
                );
                return None;
            }
        };
        match url::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.path() == "/" => {}
            _ => {
                self.problem(
                    provider.pos,
                    pp,
                    format!("the Toxiproxy server `{url}` is not an http(s) address without a path"),
                    "chaosbot reaches Toxiproxy's API at the root of its address: give `toxiproxy_host` and `toxiproxy_port`, or a `toxiproxy_url` like http://10.0.0.5:8474",
                );
                return None;
            }
        }
        if let Some(t) = self.toxi.iter().find(|t| t.url == url && t.proxy == proxy) {
            return Some(t.name.clone());
        }
        let taken = self.target_names();
        let name = unique_name(&format!("toxiproxy-{}", slug(proxy)), &taken);
        self.toxi.push(ToxiTarget {
            name: name.clone(),
            url,
            proxy: proxy.to_string(),
        });
        Some(name)
    }
}

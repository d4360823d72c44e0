//! `manifest.yml` validates against Slack's official app-manifest schema (draft 7), in its
//! HTTP form and in its Socket Mode variant, and declares what the server actually serves.

use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

fn to_json(y: &Yaml) -> serde_json::Value {
    use serde_json::Value;
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::from(s.clone()),
        Yaml::Boolean(b) => Value::from(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), to_json(v)))
                .collect(),
        ),
        _ => Value::Null,
    }
}

fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("manifest.yml"))
        .expect("manifest.yml at the top level");
    let docs = YamlLoader::load_from_str(&text).expect("manifest.yml is YAML");
    to_json(&docs[0])
}

fn validator() -> jsonschema::Validator {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/slack/manifest.schema.1.0.0.json");
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("Slack's schema at {}: {e}", path.display())),
    )
    .unwrap();
    jsonschema::draft7::new(&schema).expect("the schema compiles")
}

fn errors(v: &jsonschema::Validator, doc: &serde_json::Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn manifest_is_valid_for_slack() {
    let m = manifest();
    let v = validator();
    let errs = errors(&v, &m);
    assert!(errs.is_empty(), "{errs:#?}");

    // The schema itself catches mistakes (a sanity check that validation is real).
    let mut broken = m.clone();
    broken["features"]["slash_commands"][0]["command"] = "chaos".into();
    assert!(!errors(&v, &broken).is_empty());
}

#[test]
fn socket_mode_variant_is_valid_too() {
    let mut m = manifest();
    m["settings"]["socket_mode_enabled"] = true.into();
    for pointer in [
        "/features/slash_commands/0",
        "/settings/event_subscriptions",
        "/settings/interactivity",
    ] {
        let obj = m.pointer_mut(pointer).unwrap().as_object_mut().unwrap();
        obj.remove("url");
        obj.remove("request_url");
    }
    let errs = errors(&validator(), &m);
    assert!(errs.is_empty(), "{errs:#?}");
}

#[test]
fn manifest_points_at_the_routes_and_events_chaosbot_handles() {
    let m = manifest();
    let url = |v: &serde_json::Value| v.as_str().unwrap().to_string();
    assert!(url(&m["features"]["slash_commands"][0]["url"]).ends_with("/slack/commands"));
    assert_eq!(m["features"]["slash_commands"][0]["command"], "/chaos");
    assert!(url(&m["settings"]["event_subscriptions"]["request_url"]).ends_with("/slack/events"));
    assert!(url(&m["settings"]["interactivity"]["request_url"]).ends_with("/slack/interactions"));
    assert_eq!(m["settings"]["interactivity"]["is_enabled"], true);
    let events = m["settings"]["event_subscriptions"]["bot_events"]
        .as_array()
        .unwrap();
    assert!(events.contains(&"app_mention".into()));
    let scopes = m["oauth_config"]["scopes"]["bot"].as_array().unwrap();
    for s in ["commands", "chat:write", "app_mentions:read"] {
        assert!(scopes.contains(&s.into()), "missing scope {s}");
    }
}

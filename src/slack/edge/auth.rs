//! Who may do what, from `[slack]` in the config. Refusals say why and whom to ask.
//!
//! - `operators` may start anything anywhere, abort any run, and `abort all`.
//! - `allow` rules decide who may start which experiments (names or `*` globs) where.
//! - Whoever started a run may abort it.
//! - With neither rules nor operators, nobody may start anything (fail closed), and the refusal
//!   tells the operator what to add.

use crate::config::SlackConfig;

/// Requests from a workspace other than the configured `team_id` are refused.
pub fn check_team(cfg: &SlackConfig, team: &str) -> Result<(), String> {
    match &cfg.team_id {
        Some(t) if t != team => Err(format!(
            "this chaosbot serves another Slack workspace, not `{team}`; install the app in your own workspace"
        )),
        _ => Ok(()),
    }
}

pub fn is_operator(cfg: &SlackConfig, user: &str) -> bool {
    cfg.operators.iter().any(|o| o == user)
}

/// Whom to ask, as Slack text: the configured contact, else the operators.
pub fn whom_to_ask(cfg: &SlackConfig) -> String {
    if let Some(c) = cfg.contact.as_deref().filter(|c| !c.trim().is_empty()) {
        return c.to_string();
    }
    if cfg.operators.is_empty() {
        return "whoever runs this chaosbot".to_string();
    }
    let ops: Vec<String> = cfg.operators.iter().map(|o| format!("<@{o}>")).collect();
    ops.join(" or ")
}

pub fn may_start(
    cfg: &SlackConfig,
    user: &str,
    channel: &str,
    experiment: &str,
) -> Result<(), String> {
    if is_operator(cfg, user) {
        return Ok(());
    }
    if cfg.allow.is_empty() && cfg.operators.is_empty() {
        return Err(format!(
            "nobody may start experiments from Slack yet: the config has no `operators` and no \
             `allow` rules in its `[slack]` section. Ask whoever runs this chaosbot to add, for \
             example, `operators = [\"{user}\"]` under `[slack]`, or a rule:\n```[[slack.allow]]\n\
             experiments = [\"{experiment}\"]\nusers = [\"{user}\"]\nchannels = [\"{channel}\"]```"
        ));
    }
    let for_exp: Vec<_> = cfg
        .allow
        .iter()
        .filter(|r| r.experiments.iter().any(|p| glob_match(p, experiment)))
        .collect();
    let for_user: Vec<_> = for_exp
        .iter()
        .filter(|r| r.users.is_empty() || r.users.iter().any(|u| u == user))
        .collect();
    if for_user
        .iter()
        .any(|r| r.channels.is_empty() || r.channels.iter().any(|c| c == channel))
    {
        return Ok(());
    }
    let why = if for_exp.is_empty() {
        format!("no `allow` rule covers experiment `{experiment}`")
    } else if for_user.is_empty() {
        format!("you are not among the users allowed to start `{experiment}`")
    } else {
        let mut chans: Vec<String> = for_user
            .iter()
            .flat_map(|r| r.channels.iter().map(|c| format!("<#{c}>")))
            .collect();
        chans.dedup();
        format!("`{experiment}` may only be started in {}", chans.join(", "))
    };
    Err(format!(
        "<@{user}> may not start `{experiment}` here: {why}. Ask {} for access.",
        whom_to_ask(cfg)
    ))
}

/// The requester of a run, or an operator, may abort it.
pub fn may_abort(
    cfg: &SlackConfig,
    user: &str,
    run_id: &str,
    requested_by: &str,
) -> Result<(), String> {
    if is_operator(cfg, user) || user == requested_by {
        return Ok(());
    }
    Err(format!(
        "only <@{requested_by}>, who started run `{run_id}`, or an operator may abort it. Ask them, or {}.",
        whom_to_ask(cfg)
    ))
}

pub fn may_abort_all(cfg: &SlackConfig, user: &str) -> Result<(), String> {
    if is_operator(cfg, user) {
        return Ok(());
    }
    Err(format!(
        "only operators may abort all runs; abort your own with `abort <run-id>`, or ask {}.",
        whom_to_ask(cfg)
    ))
}

/// `*` matches any run of characters; everything else literally.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AllowRule;

    fn cfg() -> SlackConfig {
        SlackConfig {
            operators: vec!["UOP".into()],
            allow: vec![
                AllowRule {
                    experiments: vec!["checkout-*".into()],
                    users: vec![],
                    channels: vec!["CSRE".into()],
                },
                AllowRule {
                    experiments: vec!["db-failover".into()],
                    users: vec!["UDBA".into()],
                    channels: vec![],
                },
            ],
            contact: Some("#sre-oncall".into()),
            ..Default::default()
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("checkout-*", "checkout-latency"));
        assert!(glob_match("*-latency", "checkout-latency"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxc"));
        assert!(!glob_match("checkout-*", "payments"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn start_rules() {
        let c = cfg();
        assert!(may_start(&c, "UOP", "CANY", "anything").is_ok());
        assert!(may_start(&c, "U1", "CSRE", "checkout-latency").is_ok());
        let e = may_start(&c, "U1", "COTHER", "checkout-latency").unwrap_err();
        assert!(e.contains("<#CSRE>") && e.contains("#sre-oncall"), "{e}");
        let e = may_start(&c, "U1", "CSRE", "db-failover").unwrap_err();
        assert!(e.contains("not among the users"), "{e}");
        assert!(may_start(&c, "UDBA", "CX", "db-failover").is_ok());
        let e = may_start(&c, "U1", "CSRE", "other").unwrap_err();
        assert!(e.contains("no `allow` rule"), "{e}");
    }

    #[test]
    fn unconfigured_refuses_with_instructions() {
        let e = may_start(&SlackConfig::default(), "U1", "C1", "x").unwrap_err();
        assert!(
            e.contains("operators = [\"U1\"]") && e.contains("[[slack.allow]]"),
            "{e}"
        );
    }

    #[test]
    fn abort_rules_and_team() {
        let c = cfg();
        assert!(may_abort(&c, "U1", "r-1", "U1").is_ok());
        assert!(may_abort(&c, "UOP", "r-1", "U1").is_ok());
        assert!(
            may_abort(&c, "U2", "r-1", "U1")
                .unwrap_err()
                .contains("<@U1>")
        );
        assert!(may_abort_all(&c, "UOP").is_ok());
        assert!(may_abort_all(&c, "U1").is_err());
        let mut c = cfg();
        c.contact = None;
        assert!(whom_to_ask(&c).contains("<@UOP>"));
        c.team_id = Some("T1".into());
        assert!(check_team(&c, "T1").is_ok());
        assert!(check_team(&c, "T2").is_err());
    }
}

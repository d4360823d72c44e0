//! Who may do what, in Slack's words. The rules themselves are policy and live in
//! [`crate::app::policy`]; this module says a [`Denial`] the way Slack users read it (mentions,
//! channel links, whom to ask) and checks the workspace.

use crate::app::Denial;
use crate::app::policy;
use crate::config::SlackConfig;

pub use crate::app::policy::{glob_match, is_operator};

/// Requests from a workspace other than the configured `team_id` are refused.
pub fn check_team(cfg: &SlackConfig, team: &str) -> Result<(), String> {
    match &cfg.team_id {
        Some(t) if t != team => Err(format!(
            "this chaosbot serves another Slack workspace, not `{team}`; install the app in your own workspace"
        )),
        _ => Ok(()),
    }
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

/// A denial as Slack text for `user` (who asked).
pub fn denial_text(cfg: &SlackConfig, user: &str, d: &Denial) -> String {
    let whom = whom_to_ask(cfg);
    let not_here = |experiment: &str, why: String| {
        format!("<@{user}> may not start `{experiment}` here: {why}. Ask {whom} for access.")
    };
    match d {
        Denial::Unconfigured {
            user,
            channel,
            experiment,
        } => format!(
            "nobody may start experiments from Slack yet: the config has no `operators` and no \
             `allow` rules in its `[slack]` section. Ask whoever runs this chaosbot to add, for \
             example, `operators = [\"{user}\"]` under `[slack]`, or a rule:\n```[[slack.allow]]\n\
             experiments = [\"{experiment}\"]\nusers = [\"{user}\"]\nchannels = [\"{channel}\"]```"
        ),
        Denial::NoRule { experiment } => not_here(
            experiment,
            format!("no `allow` rule covers experiment `{experiment}`"),
        ),
        Denial::NotAmongUsers { experiment } => not_here(
            experiment,
            format!("you are not among the users allowed to start `{experiment}`"),
        ),
        Denial::OnlyInChannels {
            experiment,
            channels,
        } => {
            let chans: Vec<String> = channels.iter().map(|c| format!("<#{c}>")).collect();
            not_here(
                experiment,
                format!("`{experiment}` may only be started in {}", chans.join(", ")),
            )
        }
        Denial::NotRequester {
            run_id,
            requested_by,
        } => format!(
            "only <@{requested_by}>, who started run `{run_id}`, or an operator may abort it. Ask them, or {whom}."
        ),
        Denial::NotOperator => format!(
            "only operators may abort all runs; abort your own with `abort <run-id>`, or ask {whom}."
        ),
        Denial::NotCreator {
            schedule_id,
            created_by,
        } => format!(
            "only <@{created_by}>, who created schedule `{schedule_id}`, or an operator may remove it. Ask them, or {whom}."
        ),
        Denial::NotStarter {
            gameday_id,
            started_by,
        } => format!(
            "only <@{started_by}>, who started game day `{gameday_id}`, or an operator may stop it. Ask them, or {whom}."
        ),
    }
}

pub fn may_start(
    cfg: &SlackConfig,
    user: &str,
    channel: &str,
    experiment: &str,
) -> Result<(), String> {
    policy::may_start(cfg, user, channel, experiment).map_err(|d| denial_text(cfg, user, &d))
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
    let d = Denial::NotRequester {
        run_id: run_id.to_string(),
        requested_by: requested_by.to_string(),
    };
    Err(denial_text(cfg, user, &d))
}

pub fn may_abort_all(cfg: &SlackConfig, user: &str) -> Result<(), String> {
    if is_operator(cfg, user) {
        return Ok(());
    }
    Err(denial_text(cfg, user, &Denial::NotOperator))
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

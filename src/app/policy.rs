//! Who may do what, from `[slack]` in the config. The rules are policy, so they live here; the
//! edges turn a [`Denial`] into words (the Slack edge names whom to ask, in Slack markup).
//!
//! - `operators` may start anything anywhere, abort any run, and `abort all`.
//! - `allow` rules decide who may start which experiments (names or `*` globs) where.
//! - Whoever started a run may abort it.
//! - With neither rules nor operators, nobody may start anything (fail closed).
//! - The terminal is trusted: whoever runs the CLI already holds the store.

use crate::config::SlackConfig;
use crate::run::SlackOrigin;
use crate::store::RunRecord;

/// Who asks for a use case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// `chaosbot …` in a terminal, by this name.
    Terminal(String),
    /// A person in a Slack channel.
    Slack(SlackOrigin),
}

impl Caller {
    /// The name journaled as the requester.
    pub fn user(&self) -> &str {
        match self {
            Caller::Terminal(by) => by,
            Caller::Slack(o) => &o.user,
        }
    }
}

/// Why a caller may not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// Neither operators nor allow rules are configured.
    #[error("nobody may start experiments yet: the config has no operators and no allow rules")]
    Unconfigured {
        user: String,
        channel: String,
        experiment: String,
    },
    #[error("no allow rule covers experiment `{experiment}`")]
    NoRule { experiment: String },
    #[error("you are not among the users allowed to start `{experiment}`")]
    NotAmongUsers { experiment: String },
    #[error("`{experiment}` may only be started in {}", channels.join(", "))]
    OnlyInChannels {
        experiment: String,
        channels: Vec<String>,
    },
    #[error("only {requested_by}, who started run `{run_id}`, or an operator may abort it")]
    NotRequester {
        run_id: String,
        requested_by: String,
    },
    #[error("only operators may do this")]
    NotOperator,
    #[error(
        "only {created_by}, who created schedule `{schedule_id}`, or an operator may remove it"
    )]
    NotCreator {
        schedule_id: i64,
        created_by: String,
    },
    #[error("only {started_by}, who started game day `{gameday_id}`, or an operator may stop it")]
    NotStarter {
        gameday_id: String,
        started_by: String,
    },
}

pub fn is_operator(cfg: &SlackConfig, user: &str) -> bool {
    cfg.operators.iter().any(|o| o == user)
}

/// Whether `user` may start `experiment` in `channel`.
pub fn may_start(
    cfg: &SlackConfig,
    user: &str,
    channel: &str,
    experiment: &str,
) -> Result<(), Denial> {
    if is_operator(cfg, user) {
        return Ok(());
    }
    if cfg.allow.is_empty() && cfg.operators.is_empty() {
        return Err(Denial::Unconfigured {
            user: user.to_string(),
            channel: channel.to_string(),
            experiment: experiment.to_string(),
        });
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
    let experiment = experiment.to_string();
    Err(if for_exp.is_empty() {
        Denial::NoRule { experiment }
    } else if for_user.is_empty() {
        Denial::NotAmongUsers { experiment }
    } else {
        let mut channels: Vec<String> = for_user
            .iter()
            .flat_map(|r| r.channels.iter().cloned())
            .collect();
        channels.dedup();
        Denial::OnlyInChannels {
            experiment,
            channels,
        }
    })
}

/// The requester of a run, or an operator, may abort it.
pub fn may_abort(cfg: &SlackConfig, caller: &Caller, run: &RunRecord) -> Result<(), Denial> {
    match caller {
        Caller::Terminal(_) => Ok(()),
        Caller::Slack(o) if is_operator(cfg, &o.user) || o.user == run.requested_by => Ok(()),
        Caller::Slack(_) => Err(Denial::NotRequester {
            run_id: run.id.clone(),
            requested_by: run.requested_by.clone(),
        }),
    }
}

/// Operators (and the terminal) may abort all runs, put the halt in force and lift it.
pub fn may_abort_all(cfg: &SlackConfig, caller: &Caller) -> Result<(), Denial> {
    match caller {
        Caller::Terminal(_) => Ok(()),
        Caller::Slack(o) if is_operator(cfg, &o.user) => Ok(()),
        Caller::Slack(_) => Err(Denial::NotOperator),
    }
}

/// The creator of a schedule or game day, or an operator.
pub fn is_owner_or_operator(cfg: &SlackConfig, caller: &Caller, owner: &str) -> bool {
    match caller {
        Caller::Terminal(_) => true,
        Caller::Slack(o) => o.user == owner || is_operator(cfg, &o.user),
    }
}

/// Whether `caller` may see `run`: runs of their workspace; runs started elsewhere (the CLI)
/// for operators only. The terminal sees every run.
pub fn visible(cfg: &SlackConfig, caller: &Caller, run: &RunRecord) -> bool {
    match caller {
        Caller::Terminal(_) => true,
        Caller::Slack(c) => visible_to(cfg, run, &c.team, &c.user),
    }
}

/// [`visible`] for a person of `team`.
pub fn visible_to(cfg: &SlackConfig, run: &RunRecord, team: &str, user: &str) -> bool {
    match run.source.slack() {
        Some(o) => o.team == team,
        None => is_operator(cfg, user),
    }
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
            ..Default::default()
        }
    }

    fn slack(user: &str) -> Caller {
        Caller::Slack(SlackOrigin {
            team: "T1".into(),
            channel: "C1".into(),
            user: user.into(),
        })
    }

    #[test]
    fn start_denials_say_which_rule_is_missing() {
        let c = cfg();
        assert_eq!(may_start(&c, "U1", "CSRE", "checkout-latency"), Ok(()));
        assert_eq!(
            may_start(&c, "U1", "COTHER", "checkout-latency"),
            Err(Denial::OnlyInChannels {
                experiment: "checkout-latency".into(),
                channels: vec!["CSRE".into()],
            })
        );
        assert!(matches!(
            may_start(&c, "U1", "CSRE", "db-failover"),
            Err(Denial::NotAmongUsers { .. })
        ));
        assert!(matches!(
            may_start(&c, "U1", "CSRE", "other"),
            Err(Denial::NoRule { .. })
        ));
        assert!(matches!(
            may_start(&SlackConfig::default(), "U1", "C1", "x"),
            Err(Denial::Unconfigured { .. })
        ));
    }

    #[test]
    fn the_terminal_and_operators_may_abort_and_halt() {
        let c = cfg();
        let terminal = Caller::Terminal("ops".into());
        assert_eq!(may_abort_all(&c, &terminal), Ok(()));
        assert_eq!(may_abort_all(&c, &slack("UOP")), Ok(()));
        assert_eq!(may_abort_all(&c, &slack("U1")), Err(Denial::NotOperator));
        assert!(is_owner_or_operator(&c, &terminal, "U1"));
        assert!(is_owner_or_operator(&c, &slack("U1"), "U1"));
        assert!(!is_owner_or_operator(&c, &slack("U2"), "U1"));
    }
}

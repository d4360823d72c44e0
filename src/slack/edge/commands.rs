//! The `/chaos` command grammar (whatever name the command is installed under):
//!
//! ```text
//! help | (empty)
//! list
//! start [<experiment> [key=value ...]]
//! abort <run-id> [reason...] | abort all [reason...]
//! status
//! summary <run-id> | summary day|week|month|<N>|<N>d
//! report <run-id> [as file]
//! qa <run-id>
//! learn <run-id> [change:] <text...>
//! schedule <experiment> <when> [key=value ...] | schedules | unschedule <id> | resume
//! gameday [list] | gameday <plan> | gameday stop <gameday-id> [reason...]
//! ```

/// Longer command texts are refused before they are tokenized.
pub const MAX_TEXT_CHARS: usize = 2000;

pub const SUBCOMMANDS: &[&str] = &[
    "help",
    "list",
    "start",
    "abort",
    "status",
    "summary",
    "report",
    "qa",
    "learn",
    // Schedules and the halt (issue 5).
    "schedule",
    "schedules",
    "unschedule",
    "resume",
    // Game days.
    "gameday",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    List,
    /// `experiment: None` opens the start form.
    Start {
        experiment: Option<String>,
        params: Vec<(String, String)>,
    },
    Abort {
        target: AbortTarget,
        reason: Option<String>,
    },
    Status,
    Summary {
        run: String,
    },
    /// The run's Q&A board, to the caller.
    Qa {
        run: String,
    },
    /// A "what we learned" (or, with `change:`, "what we change") note on a run.
    Learn {
        run: String,
        kind: crate::store::learning::LearningKind,
        text: String,
    },
    /// `when` is the words between the experiment and the first `key=value`.
    Schedule {
        experiment: String,
        when: String,
        params: Vec<(String, String)>,
    },
    Schedules,
    Unschedule {
        id: String,
    },
    Resume,
    /// `summary week` and the like: a period, not a run (run ids start with `r-`, period
    /// words never do).
    SummaryPeriod {
        period: crate::report::period::PeriodSpec,
    },
    /// The run's learning record, as messages or (`as file`) as a file.
    Report {
        run: String,
        as_file: bool,
    },
    Gameday(GamedayCommand),
}

/// `gameday …`: list the plans, start one, or stop a running game day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GamedayCommand {
    List,
    Start { plan: String },
    Stop { id: String, reason: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortTarget {
    Run(String),
    All,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error(
        "the command text is {len} characters long; the limit is {MAX_TEXT_CHARS}. Shorten it (parameters are `key=value`)"
    )]
    TooLong { len: usize },
    #[error("{}", unknown_message(word, suggestion.as_deref()))]
    Unknown {
        word: String,
        suggestion: Option<String>,
    },
    #[error("`{command}` needs {what}. Usage: `{usage}`")]
    MissingArgument {
        command: &'static str,
        what: &'static str,
        usage: &'static str,
    },
    #[error("`{token}` is not a parameter: write parameters as `key=value`, e.g. `latency=500ms`")]
    BadParameter { token: String },
    #[error("parameter `{key}` is given twice; give each parameter once")]
    DuplicateParameter { key: String },
    #[error("{0}")]
    BadPeriod(#[from] crate::report::period::PeriodError),
    #[error("`{command}` does not understand `{extra}`. Usage: `{usage}`")]
    Unexpected {
        command: &'static str,
        extra: String,
        usage: &'static str,
    },
    #[error("`{command}` takes no arguments, but got `{extra}`. Usage: `{usage}`")]
    Extra {
        command: &'static str,
        extra: String,
        usage: &'static str,
    },
}

fn unknown_message(word: &str, suggestion: Option<&str>) -> String {
    let list = SUBCOMMANDS.join(", ");
    match suggestion {
        Some(s) => format!("unknown command `{word}`; did you mean `{s}`? Commands: {list}"),
        None => format!("unknown command `{word}`. Commands: {list}"),
    }
}

/// The closest subcommand to a mistyped word, if any is close.
pub fn closest_subcommand(word: &str) -> Option<String> {
    crate::suggest::closest(word, SUBCOMMANDS.iter().copied()).map(str::to_string)
}

pub fn parse(text: &str) -> Result<Command, CommandError> {
    let len = text.chars().count();
    if len > MAX_TEXT_CHARS {
        return Err(CommandError::TooLong { len });
    }
    let mut words = text.split_whitespace();
    let Some(first) = words.next() else {
        return Ok(Command::Help);
    };
    let rest: Vec<&str> = words.collect();
    let no_args = |command: &'static str, usage: &'static str, cmd: Command| {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(CommandError::Extra {
                command,
                extra: rest.join(" "),
                usage,
            })
        }
    };
    match first.to_lowercase().as_str() {
        "help" | "-h" | "--help" | "?" => Ok(Command::Help),
        "list" | "ls" => no_args("list", "list", Command::List),
        "status" => no_args("status", "status", Command::Status),
        "start" | "run" => {
            let Some((name, params)) = rest.split_first() else {
                return Ok(Command::Start {
                    experiment: None,
                    params: vec![],
                });
            };
            Ok(Command::Start {
                experiment: Some((*name).to_string()),
                params: parse_params(params.iter().copied())?,
            })
        }
        "abort" | "stop" => {
            let Some((target, reason)) = rest.split_first() else {
                return Err(CommandError::MissingArgument {
                    command: "abort",
                    what: "a run id or `all`",
                    usage: "abort <run-id> [reason] | abort all [reason]",
                });
            };
            let target = if target.eq_ignore_ascii_case("all") {
                AbortTarget::All
            } else {
                AbortTarget::Run((*target).to_string())
            };
            let reason = (!reason.is_empty()).then(|| reason.join(" "));
            Ok(Command::Abort { target, reason })
        }
        "summary" | "show" => match rest.as_slice() {
            [word] => match crate::report::period::PeriodSpec::parse(word)? {
                Some(period) => Ok(Command::SummaryPeriod { period }),
                None => Ok(Command::Summary {
                    run: (*word).to_string(),
                }),
            },
            [] => Err(CommandError::MissingArgument {
                command: "summary",
                what: "a run id or a period",
                usage: SUMMARY_USAGE,
            }),
            [_, extra @ ..] => Err(CommandError::Unexpected {
                command: "summary",
                extra: extra.join(" "),
                usage: SUMMARY_USAGE,
            }),
        },
        "report" | "record" => match rest.as_slice() {
            [] => Err(CommandError::MissingArgument {
                command: "report",
                what: "a run id",
                usage: REPORT_USAGE,
            }),
            [run] => Ok(Command::Report {
                run: (*run).to_string(),
                as_file: false,
            }),
            [run, how @ ..]
                if matches!(
                    how.iter()
                        .map(|w| w.to_lowercase())
                        .collect::<Vec<_>>()
                        .join(" ")
                        .as_str(),
                    "as file" | "file" | "--file"
                ) =>
            {
                Ok(Command::Report {
                    run: (*run).to_string(),
                    as_file: true,
                })
            }
            [_, extra @ ..] => Err(CommandError::Unexpected {
                command: "report",
                extra: extra.join(" "),
                usage: REPORT_USAGE,
            }),
        },
        "qa" | "questions" => match rest.as_slice() {
            [run] => Ok(Command::Qa {
                run: (*run).to_string(),
            }),
            [] => Err(CommandError::MissingArgument {
                command: "qa",
                what: "a run id",
                usage: "qa <run-id>",
            }),
            [_, extra @ ..] => Err(CommandError::Extra {
                command: "qa",
                extra: extra.join(" "),
                usage: "qa <run-id>",
            }),
        },
        "learn" | "learned" => {
            const USAGE: &str =
                "learn <run-id> <what we learned> | learn <run-id> change: <what we change>";
            let Some(run) = rest.first() else {
                return Err(CommandError::MissingArgument {
                    command: "learn",
                    what: "a run id and the note",
                    usage: USAGE,
                });
            };
            // The note keeps its own spacing and lines: take it from the text, not the words.
            let after_run = text
                .trim_start()
                .split_once(char::is_whitespace)
                .map(|(_, r)| r.trim_start())
                .and_then(|r| r.split_once(char::is_whitespace).map(|(_, n)| n.trim()))
                .unwrap_or("");
            let (kind, note) = split_learning_kind(after_run);
            if note.is_empty() {
                return Err(CommandError::MissingArgument {
                    command: "learn",
                    what: "the note after the run id",
                    usage: USAGE,
                });
            }
            Ok(Command::Learn {
                run: (*run).to_string(),
                kind,
                text: note.to_string(),
            })
        }
        "schedule" => {
            const USAGE: &str = "schedule <experiment> <when> [key=value …], e.g. schedule checkout-latency every tue,thu at 14:00 latency=300ms";
            let Some((name, rest)) = rest.split_first() else {
                return Err(CommandError::MissingArgument {
                    command: "schedule",
                    what: "an experiment and a time",
                    usage: USAGE,
                });
            };
            let split = rest
                .iter()
                .position(|w| w.contains('='))
                .unwrap_or(rest.len());
            if split == 0 {
                return Err(CommandError::MissingArgument {
                    command: "schedule",
                    what: "a time after the experiment",
                    usage: USAGE,
                });
            }
            Ok(Command::Schedule {
                experiment: (*name).to_string(),
                when: rest[..split].join(" "),
                params: parse_params(rest[split..].iter().copied())?,
            })
        }
        "schedules" => no_args("schedules", "schedules", Command::Schedules),
        "unschedule" => match rest.as_slice() {
            [id] => Ok(Command::Unschedule {
                id: (*id).to_string(),
            }),
            [] => Err(CommandError::MissingArgument {
                command: "unschedule",
                what: "a schedule id (`schedules` lists them)",
                usage: "unschedule <id>",
            }),
            [_, extra @ ..] => Err(CommandError::Extra {
                command: "unschedule",
                extra: extra.join(" "),
                usage: "unschedule <id>",
            }),
        },
        "resume" => no_args("resume", "resume", Command::Resume),
        "gameday" | "game-day" => parse_gameday(&rest),
        _ => Err(CommandError::Unknown {
            word: first.to_string(),
            suggestion: closest_subcommand(first),
        }),
    }
}

/// `change: text` is a "what we change" note; `learned: text` or plain text a "what we learned".
fn split_learning_kind(note: &str) -> (crate::store::learning::LearningKind, &str) {
    use crate::store::learning::LearningKind;
    let lower = note.to_lowercase();
    for (prefix, kind) in [
        ("change:", LearningKind::Change),
        ("changes:", LearningKind::Change),
        ("learned:", LearningKind::Learned),
        ("learnt:", LearningKind::Learned),
    ] {
        if lower.starts_with(prefix) {
            return (kind, note[prefix.len()..].trim());
        }
    }
    (LearningKind::Learned, note)
}
const SUMMARY_USAGE: &str = "summary <run-id> | summary day|week|month|<days>";
const REPORT_USAGE: &str = "report <run-id> [as file]";

fn parse_gameday(rest: &[&str]) -> Result<Command, CommandError> {
    const USAGE: &str = "gameday | gameday <plan> | gameday stop <gameday-id> [reason]";
    let cmd = match rest {
        [] => GamedayCommand::List,
        [list] if list.eq_ignore_ascii_case("list") => GamedayCommand::List,
        [stop, rest @ ..] if stop.eq_ignore_ascii_case("stop") => {
            let Some((id, reason)) = rest.split_first() else {
                return Err(CommandError::MissingArgument {
                    command: "gameday stop",
                    what: "a game-day id (like `g-abc123defg`)",
                    usage: USAGE,
                });
            };
            GamedayCommand::Stop {
                id: (*id).to_string(),
                reason: (!reason.is_empty()).then(|| reason.join(" ")),
            }
        }
        [plan] => GamedayCommand::Start {
            plan: (*plan).to_string(),
        },
        [_, extra @ ..] => {
            return Err(CommandError::Extra {
                command: "gameday",
                extra: extra.join(" "),
                usage: USAGE,
            });
        }
    };
    Ok(Command::Gameday(cmd))
}

/// `key=value` tokens (from the command line, or lines of the start form).
pub fn parse_params<'a>(
    tokens: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<(String, String)>, CommandError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for token in tokens {
        let token = token.trim();
        if token.is_empty() {
            continue;
        }
        let Some((k, v)) = token.split_once('=') else {
            return Err(CommandError::BadParameter {
                token: token.to_string(),
            });
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || v.is_empty() {
            return Err(CommandError::BadParameter {
                token: token.to_string(),
            });
        }
        if out.iter().any(|(existing, _)| existing == k) {
            return Err(CommandError::DuplicateParameter { key: k.to_string() });
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qa_and_learn() {
        use crate::store::learning::LearningKind;
        assert_eq!(parse("qa r-1"), Ok(Command::Qa { run: "r-1".into() }));
        assert!(matches!(
            parse("qa"),
            Err(CommandError::MissingArgument { .. })
        ));
        assert_eq!(
            parse("learn r-1  retries  hid the fault\nfor 30 s"),
            Ok(Command::Learn {
                run: "r-1".into(),
                kind: LearningKind::Learned,
                text: "retries  hid the fault\nfor 30 s".into()
            })
        );
        assert_eq!(
            parse("learn r-1 Change: alert on p99 > 300ms"),
            Ok(Command::Learn {
                run: "r-1".into(),
                kind: LearningKind::Change,
                text: "alert on p99 > 300ms".into()
            })
        );
        assert!(matches!(
            parse("learn r-1"),
            Err(CommandError::MissingArgument { .. })
        ));
        assert!(matches!(
            parse("learn r-1 change:"),
            Err(CommandError::MissingArgument { .. })
        ));
    }

    #[test]
    fn help_and_empty() {
        assert_eq!(parse(""), Ok(Command::Help));
        assert_eq!(parse("   "), Ok(Command::Help));
        assert_eq!(parse("help"), Ok(Command::Help));
        assert_eq!(parse("HELP me"), Ok(Command::Help));
    }

    #[test]
    fn start_with_and_without_params() {
        assert_eq!(
            parse("start checkout-latency latency=500ms  tox=0.5"),
            Ok(Command::Start {
                experiment: Some("checkout-latency".into()),
                params: vec![
                    ("latency".into(), "500ms".into()),
                    ("tox".into(), "0.5".into())
                ],
            })
        );
        assert_eq!(
            parse("start"),
            Ok(Command::Start {
                experiment: None,
                params: vec![]
            })
        );
        assert!(matches!(
            parse("start x latency"),
            Err(CommandError::BadParameter { .. })
        ));
        assert!(matches!(
            parse("start x =5"),
            Err(CommandError::BadParameter { .. })
        ));
        assert!(matches!(
            parse("start x a=1 a=2"),
            Err(CommandError::DuplicateParameter { .. })
        ));
    }

    #[test]
    fn abort_forms() {
        assert_eq!(
            parse("abort r-abc too noisy"),
            Ok(Command::Abort {
                target: AbortTarget::Run("r-abc".into()),
                reason: Some("too noisy".into())
            })
        );
        assert_eq!(
            parse("abort ALL"),
            Ok(Command::Abort {
                target: AbortTarget::All,
                reason: None
            })
        );
        let err = parse("abort").unwrap_err();
        assert!(err.to_string().contains("run id"), "{err}");
    }

    #[test]
    fn summary_status_list() {
        assert_eq!(
            parse("summary r-1"),
            Ok(Command::Summary { run: "r-1".into() })
        );
        assert!(matches!(
            parse("summary"),
            Err(CommandError::MissingArgument { .. })
        ));
        assert!(matches!(
            parse("summary a b"),
            Err(CommandError::Unexpected { .. })
        ));
        assert_eq!(parse("status"), Ok(Command::Status));
        assert_eq!(parse("list"), Ok(Command::List));
        assert!(matches!(parse("list x"), Err(CommandError::Extra { .. })));
    }

    #[test]
    fn unknown_suggests_closest() {
        let err = parse("strat checkout").unwrap_err();
        assert_eq!(
            err,
            CommandError::Unknown {
                word: "strat".into(),
                suggestion: Some("start".into())
            }
        );
        assert!(err.to_string().contains("did you mean `start`"));
        assert_eq!(closest_subcommand("stauts").as_deref(), Some("status"));
        assert_eq!(closest_subcommand("xyzzyq"), None);
    }

    #[test]
    fn schedule_forms() {
        assert_eq!(
            parse("schedule slow-api every tue,thu at 14:00 in Europe/Berlin duration=2s"),
            Ok(Command::Schedule {
                experiment: "slow-api".into(),
                when: "every tue,thu at 14:00 in Europe/Berlin".into(),
                params: vec![("duration".into(), "2s".into())],
            })
        );
        assert_eq!(
            parse("schedule x */5 9 * * 1-5"),
            Ok(Command::Schedule {
                experiment: "x".into(),
                when: "*/5 9 * * 1-5".into(),
                params: vec![],
            })
        );
        let e = parse("schedule x a=1").unwrap_err();
        assert!(e.to_string().contains("a time after the experiment"), "{e}");
        assert!(matches!(
            parse("schedule"),
            Err(CommandError::MissingArgument { .. })
        ));
        assert!(matches!(
            parse("schedule x every day at 10:00 a=1 stray"),
            Err(CommandError::BadParameter { .. })
        ));
        assert_eq!(parse("schedules"), Ok(Command::Schedules));
        assert_eq!(
            parse("unschedule 4"),
            Ok(Command::Unschedule { id: "4".into() })
        );
        assert!(matches!(
            parse("unschedule"),
            Err(CommandError::MissingArgument { .. })
        ));
        assert_eq!(parse("resume"), Ok(Command::Resume));
        assert_eq!(
            closest_subcommand("unshedule").as_deref(),
            Some("unschedule")
        );
    }

    #[test]
    fn gameday_forms() {
        assert_eq!(parse("gameday"), Ok(Command::Gameday(GamedayCommand::List)));
        assert_eq!(
            parse("gameday list"),
            Ok(Command::Gameday(GamedayCommand::List))
        );
        assert_eq!(
            parse("gameday api-day"),
            Ok(Command::Gameday(GamedayCommand::Start {
                plan: "api-day".into()
            }))
        );
        assert_eq!(
            parse("gameday stop g-1 enough for today"),
            Ok(Command::Gameday(GamedayCommand::Stop {
                id: "g-1".into(),
                reason: Some("enough for today".into())
            }))
        );
        let err = parse("gameday stop").unwrap_err();
        assert!(err.to_string().contains("game-day id"), "{err}");
        assert!(matches!(
            parse("gameday a b"),
            Err(CommandError::Extra { .. })
        ));
        assert_eq!(closest_subcommand("gamday").as_deref(), Some("gameday"));
    }

    #[test]
    fn giant_text_refused() {
        let text = format!("start x {}", "a=b ".repeat(600));
        assert!(matches!(parse(&text), Err(CommandError::TooLong { .. })));
    }

    #[test]
    fn summary_periods_and_report() {
        use crate::report::period::PeriodSpec;
        assert_eq!(
            parse("summary week"),
            Ok(Command::SummaryPeriod {
                period: PeriodSpec::Week
            })
        );
        assert_eq!(
            parse("summary 10d"),
            Ok(Command::SummaryPeriod {
                period: PeriodSpec::Days(10)
            })
        );
        assert_eq!(
            parse("summary r-abcdefghjk"),
            Ok(Command::Summary {
                run: "r-abcdefghjk".into()
            })
        );
        let err = parse("summary 0d").unwrap_err();
        assert!(err.to_string().contains("between 1 and"), "{err}");
        let err = parse("summary 3w").unwrap_err();
        assert!(err.to_string().contains("`week`"), "{err}");
        assert_eq!(
            parse("report r-1"),
            Ok(Command::Report {
                run: "r-1".into(),
                as_file: false
            })
        );
        assert_eq!(
            parse("report r-1 as file"),
            Ok(Command::Report {
                run: "r-1".into(),
                as_file: true
            })
        );
        let err = parse("report r-1 as pdf").unwrap_err();
        assert!(
            err.to_string().contains("does not understand `as pdf`"),
            "{err}"
        );
        assert!(matches!(
            parse("report"),
            Err(CommandError::MissingArgument { .. })
        ));
    }
}

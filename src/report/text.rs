//! Transport-neutral text. A view says what it means in pieces (plain words, a name from the
//! experiment, a person, a channel, a quote of a journal entry) and each edge styles them its
//! own way: Slack mrkdwn in `slack/`, Markdown here for the terminal and the exported record.
//! Views never write a transport's markup themselves.

use std::fmt;

/// One piece of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// A name from the experiment or the run (probe, step, target, run source).
    Code(String),
    /// Who did something: a chat user id (`U…`) or a name such as `cli`.
    Person(String),
    /// A chat channel id.
    Channel(String),
    /// A quote of one journal entry, so a reader can check the number.
    Cite {
        seq: i64,
        at_ms: i64,
    },
}

impl Piece {
    /// The words of a journal quote, the same on every transport.
    pub fn cite_words(seq: i64, at_ms: i64) -> String {
        format!("journal #{seq} at {}", journal_time(at_ms))
    }
}

/// A journal time to the millisecond, in UTC.
pub fn journal_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%H:%M:%S%.3f UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// A line of pieces, built left to right.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Line(pub Vec<Piece>);

impl Line {
    pub fn new() -> Line {
        Line::default()
    }

    pub fn text(mut self, s: impl AsRef<str>) -> Line {
        let s = s.as_ref();
        if let Some(Piece::Text(last)) = self.0.last_mut() {
            last.push_str(s);
        } else if !s.is_empty() {
            self.0.push(Piece::Text(s.to_string()));
        }
        self
    }

    pub fn code(mut self, s: impl Into<String>) -> Line {
        self.0.push(Piece::Code(s.into()));
        self
    }

    pub fn person(mut self, id: impl Into<String>) -> Line {
        self.0.push(Piece::Person(id.into()));
        self
    }

    pub fn channel(mut self, id: impl Into<String>) -> Line {
        self.0.push(Piece::Channel(id.into()));
        self
    }

    pub fn cite(mut self, seq: i64, at_ms: i64) -> Line {
        self.0.push(Piece::Cite { seq, at_ms });
        self
    }

    /// `other`'s pieces after these.
    pub fn then(mut self, other: Line) -> Line {
        for p in other.0 {
            self = match p {
                Piece::Text(t) => self.text(t),
                p => {
                    self.0.push(p);
                    self
                }
            };
        }
        self
    }

    pub fn pieces(&self) -> &[Piece] {
        &self.0
    }
}

impl From<&str> for Line {
    fn from(s: &str) -> Line {
        Line::new().text(s)
    }
}

impl From<String> for Line {
    fn from(s: String) -> Line {
        Line::new().text(s)
    }
}

/// Markdown: names as code, people as `@id`, channels as `#id`.
impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            match p {
                Piece::Text(t) => f.write_str(t)?,
                Piece::Code(c) => write!(f, "`{c}`")?,
                Piece::Person(who) => write!(f, "@{who}")?,
                Piece::Channel(c) => write!(f, "#{c}")?,
                Piece::Cite { seq, at_ms } => f.write_str(&Piece::cite_words(*seq, *at_ms))?,
            }
        }
        Ok(())
    }
}

/// Lines as a Markdown list.
pub fn markdown_list(lines: &[Line]) -> String {
    lines
        .iter()
        .map(|l| format!("- {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One line for people about an agent event (lost, back, note), the same in every view.
pub fn agent_event(event: &crate::run::Event) -> Option<String> {
    use crate::run::Event;
    match event {
        Event::AgentLost { agent, error } => Some(format!("agent `{agent}` lost: {error}")),
        Event::AgentBack { agent, reverted } if reverted.is_empty() => Some(format!(
            "agent `{agent}` back: every fault of this run is still in place"
        )),
        Event::AgentBack { agent, reverted } => {
            let what: Vec<String> = reverted
                .iter()
                .map(|r| format!("`{}` at {} ({})", r.step, clock_time(r.at_ms), r.reason))
                .collect();
            Some(format!(
                "agent `{agent}` back: it reverted {}",
                what.join(", ")
            ))
        }
        Event::AgentNote { agent, text } => Some(format!("agent `{agent}`: {text}")),
        _ => None,
    }
}

/// One line for people about a run adopted after its owner was lost, the same in every view.
pub fn adopted(event: &crate::run::Event) -> Option<String> {
    match event {
        crate::run::Event::Adopted {
            previous,
            by,
            detail,
        } => Some(format!(
            "owner lost: {previous} stopped; {by} adopted the run and continues ({detail})"
        )),
        _ => None,
    }
}

/// "14:03:05" (UTC): to the second, for sentences.
pub fn clock_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_renders_markdown() {
        let l = Line::new()
            .text("started by ")
            .person("UALICE")
            .text(" in ")
            .channel("C1")
            .text(" (")
            .cite(3, 0)
            .text(")")
            .then(Line::from(", probe ").code("api"));
        assert_eq!(
            l.to_string(),
            "started by @UALICE in #C1 (journal #3 at 00:00:00.000 UTC), probe `api`"
        );
        // Adjacent words stay one piece.
        assert_eq!(Line::from("a").text("b").pieces().len(), 1);
        assert_eq!(
            markdown_list(&[Line::from("x"), Line::from("y")]),
            "- x\n- y"
        );
    }
}

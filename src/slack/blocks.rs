//! Block Kit answers within Slack's limits: at most 50 blocks per message, at most 3000
//! characters per section text. Longer content is split on line boundaries; what still does
//! not fit is dropped with a note saying so.

use serde_json::{Value, json};

use crate::report::text::{Line, Piece};

pub const MAX_BLOCKS: usize = 50;
pub const MAX_SECTION_CHARS: usize = 3000;
/// Slack truncates longer top-level `text`; keep ours short (it is the notification text).
pub const MAX_TEXT_CHARS: usize = 3000;

/// A view's line as mrkdwn: names in code, people as mentions, channels as links.
pub fn mrkdwn(line: &Line) -> String {
    let mut out = String::new();
    for p in line.pieces() {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Code(c) => {
                out.push('`');
                out.push_str(c);
                out.push('`');
            }
            Piece::Person(who) => out.push_str(&super::qa::mention(who)),
            Piece::Channel(c) => {
                out.push_str("<#");
                out.push_str(c);
                out.push('>');
            }
            Piece::Cite { seq, at_ms } => out.push_str(&Piece::cite_words(*seq, *at_ms)),
        }
    }
    out
}

/// Lines as a bulleted mrkdwn list.
pub fn mrkdwn_list(lines: &[Line]) -> String {
    lines
        .iter()
        .map(|l| format!("• {}", mrkdwn(l)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An ephemeral answer being built: a plain-text fallback and mrkdwn sections.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub text: String,
    sections: Vec<String>,
}

impl Reply {
    pub fn new(text: impl Into<String>) -> Reply {
        Reply {
            text: text.into(),
            sections: Vec::new(),
        }
    }

    /// A one-section answer whose text is also the fallback.
    pub fn simple(text: impl Into<String>) -> Reply {
        let text = text.into();
        Reply::new(text.clone()).section(text)
    }

    /// An error answer: a warning sign and the message.
    pub fn error(text: impl AsRef<str>) -> Reply {
        Reply::simple(format!(":warning: {}", text.as_ref()))
    }

    pub fn section(mut self, mrkdwn: impl Into<String>) -> Reply {
        self.sections.push(mrkdwn.into());
        self
    }

    pub fn push(&mut self, mrkdwn: impl Into<String>) {
        self.sections.push(mrkdwn.into());
    }

    /// The Block Kit blocks, within limits.
    pub fn blocks(&self) -> Vec<Value> {
        let mut chunks: Vec<String> = Vec::new();
        for s in &self.sections {
            chunks.extend(split_text(s, MAX_SECTION_CHARS));
        }
        let total = chunks.len();
        let mut blocks: Vec<Value> = Vec::new();
        for (i, chunk) in chunks.into_iter().enumerate() {
            if blocks.len() == MAX_BLOCKS - 1 && i < total - 1 {
                blocks.push(section(&format!(
                    "_… {} more section(s) left out: Slack shows at most {MAX_BLOCKS} blocks per message._",
                    total - i
                )));
                break;
            }
            blocks.push(section(&chunk));
        }
        blocks
    }

    /// The whole content as messages of at most [`MAX_BLOCKS`] blocks each: nothing left out
    /// (for the thread, where a long summary becomes several replies).
    pub fn pages(&self) -> Vec<Value> {
        let blocks: Vec<Value> = self
            .sections
            .iter()
            .flat_map(|s| split_text(s, MAX_SECTION_CHARS))
            .map(|chunk| section(&chunk))
            .collect();
        blocks
            .chunks(MAX_BLOCKS)
            .map(|page| Value::Array(page.to_vec()))
            .collect()
    }

    /// `{"response_type":"ephemeral","text":..,"blocks":[..]}`.
    pub fn ephemeral(&self) -> Value {
        json!({
            "response_type": "ephemeral",
            "text": truncate(&self.text, MAX_TEXT_CHARS),
            "blocks": self.blocks(),
        })
    }
}

pub fn section(mrkdwn: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn}})
}

/// Cuts `s` to at most `max` characters, marking the cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Splits on line boundaries into pieces of at most `max` characters (a single longer line is
/// cut). Empty input gives one empty piece, so a section is never silently dropped.
pub fn split_text(s: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0usize;
    for line in s.split('\n') {
        let mut line = line.to_string();
        let mut len = line.chars().count();
        while len > max {
            if cur_len > 0 {
                out.push(std::mem::take(&mut cur));
                cur_len = 0;
            }
            let head: String = line.chars().take(max).collect();
            line = line.chars().skip(max).collect();
            len -= max;
            out.push(head);
        }
        let extra = if cur_len == 0 { len } else { len + 1 };
        if cur_len + extra > max {
            out.push(std::mem::take(&mut cur));
            cur_len = 0;
        }
        if cur_len > 0 {
            cur.push('\n');
            cur_len += 1;
        }
        cur.push_str(&line);
        cur_len += len;
    }
    if !cur.is_empty() || out.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_lines_as_mrkdwn() {
        let l = Line::from("started by ")
            .person("UALICE")
            .text(" and ")
            .person("cli")
            .text(" in ")
            .channel("C1")
            .text(", probe ")
            .code("api")
            .text(" (")
            .cite(2, 1_000)
            .text(")");
        assert_eq!(
            mrkdwn_list(&[l, Line::from("x")]),
            "• started by <@UALICE> and `cli` in <#C1>, probe `api` (journal #2 at 00:00:01.000 UTC)\n• x"
        );
    }

    #[test]
    fn long_sections_split_and_blocks_capped() {
        let line = "x".repeat(100);
        let long = vec![line.as_str(); 100].join("\n"); // ~10 100 chars
        let r = Reply::new("t").section(long.clone());
        let blocks = r.blocks();
        assert_eq!(blocks.len(), 4);
        for b in &blocks {
            assert!(b["text"]["text"].as_str().unwrap().chars().count() <= MAX_SECTION_CHARS);
        }
        let mut r = Reply::new("t");
        for _ in 0..80 {
            r.push("a");
        }
        let blocks = r.blocks();
        assert_eq!(blocks.len(), MAX_BLOCKS);
        assert!(
            blocks[49]["text"]["text"]
                .as_str()
                .unwrap()
                .contains("left out")
        );
        let pages = r.pages();
        assert_eq!(
            pages.len(),
            2,
            "80 sections make two messages, none dropped"
        );
        assert_eq!(pages[0].as_array().unwrap().len(), MAX_BLOCKS);
        assert_eq!(pages[1].as_array().unwrap().len(), 30);
        let one_line = "y".repeat(7000);
        assert_eq!(split_text(&one_line, 3000).len(), 3);
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}

//! Problems found in definition files, each with file:line:col and a hint.

use std::fmt::{self, Write as _};

use anstyle::{AnsiColor, Style};
use serde::Serialize;

use super::def::Loc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in one definition file.
#[derive(Clone, Debug, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Path as shown to people: relative to the project root.
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The offending source line, unless it may hold a secret.
    #[serde(skip)]
    pub source_line: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl Diagnostic {
    /// Render in the style of rustc: headline, location, source line, caret, hint.
    pub fn render(&self) -> String {
        let (label, colour) = match self.severity {
            Severity::Error => ("error", AnsiColor::Red),
            Severity::Warning => ("warning", AnsiColor::Yellow),
        };
        let head = Style::new().bold().fg_color(Some(colour.into()));
        let bold = Style::new().bold();
        let blue = Style::new().bold().fg_color(Some(AnsiColor::Blue.into()));
        let mut out = String::new();
        let _ = writeln!(out, "{head}{label}{head:#}{bold}: {}{bold:#}", self.message);
        let gutter = self.line.to_string().len();
        let pad = " ".repeat(gutter);
        let _ = writeln!(
            out,
            "{pad}{blue}-->{blue:#} {}:{}:{}",
            self.file, self.line, self.column
        );
        if let Some(src) = &self.source_line {
            let caret_at = usize::try_from(self.column.saturating_sub(1)).unwrap_or(0);
            let width = src
                .chars()
                .skip(caret_at)
                .take_while(|c| !c.is_whitespace() && *c != ':' && *c != ',' && *c != ']')
                .count()
                .max(1);
            let _ = writeln!(out, "{pad} {blue}|{blue:#}");
            let _ = writeln!(out, "{blue}{}{blue:#} {blue}|{blue:#} {src}", self.line);
            let _ = writeln!(
                out,
                "{pad} {blue}|{blue:#} {}{head}{}{head:#}",
                " ".repeat(caret_at),
                "^".repeat(width)
            );
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "{pad} {blue}={blue:#} {bold}hint{bold:#}: {hint}");
        }
        out
    }
}

/// A definition file being checked, so diagnostics can quote it.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// Path relative to the project root, as shown to people.
    pub display: String,
    pub path: std::path::PathBuf,
    pub text: String,
}

impl SourceFile {
    /// The file's name without `.yaml` / `.yml`.
    pub fn stem(&self) -> &str {
        self.path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
    }
}

/// Collects diagnostics across every file of a project.
#[derive(Debug, Default)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    fn push(
        &mut self,
        severity: Severity,
        file: &SourceFile,
        loc: Loc,
        message: impl Into<String>,
        hint: Option<String>,
        quote: bool,
    ) {
        let source_line = if quote && loc.line > 0 {
            file.text
                .lines()
                .nth(usize::try_from(loc.line - 1).unwrap_or(usize::MAX))
                .map(str::to_string)
        } else {
            None
        };
        // A value echoed back (a name, a source line) can be any size: keep
        // what people read to a few lines.
        self.items.push(Diagnostic {
            severity,
            file: file.display.clone(),
            line: loc.line.max(1),
            column: loc.column.max(1),
            message: clip(&message.into(), MAX_ECHO).into_owned(),
            hint: hint.map(|h| clip(&h, MAX_ECHO).into_owned()),
            source_line: source_line.map(|l| clip(&l, MAX_ECHO).into_owned()),
        });
    }

    pub fn error(
        &mut self,
        file: &SourceFile,
        loc: Loc,
        message: impl Into<String>,
        hint: impl Into<Hint>,
    ) {
        self.push(Severity::Error, file, loc, message, hint.into().0, true);
    }

    /// An error about a line that may hold a secret: the line is not quoted.
    pub fn error_redacted(
        &mut self,
        file: &SourceFile,
        loc: Loc,
        message: impl Into<String>,
        hint: impl Into<Hint>,
    ) {
        self.push(Severity::Error, file, loc, message, hint.into().0, false);
    }

    pub fn warning(
        &mut self,
        file: &SourceFile,
        loc: Loc,
        message: impl Into<String>,
        hint: impl Into<Hint>,
    ) {
        self.push(Severity::Warning, file, loc, message, hint.into().0, true);
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }
}

/// An optional hint; lets callers pass `None`, a `&str` or a `String`.
pub struct Hint(Option<String>);

impl From<Option<String>> for Hint {
    fn from(h: Option<String>) -> Self {
        Hint(h)
    }
}
impl From<String> for Hint {
    fn from(h: String) -> Self {
        Hint(Some(h))
    }
}
impl From<&str> for Hint {
    fn from(h: &str) -> Self {
        Hint(Some(h.to_string()))
    }
}

/// How much of a message, hint or quoted line is shown.
pub const MAX_ECHO: usize = 400;

/// `text` cut to at most `max` characters, saying how much was left out.
pub fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(text),
        Some((cut, _)) => std::borrow::Cow::Owned(format!(
            "{}... ({} more bytes)",
            &text[..cut],
            text.len() - cut
        )),
    }
}

/// "did you mean `x`?" for a word that is close to one of `candidates`.
/// Words longer than any name are never close (and comparing them costs
/// time in proportion to their length).
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    const LONGEST_NAME: usize = 128;
    if word.len() > LONGEST_NAME {
        return None;
    }
    candidates
        .into_iter()
        .filter(|c| c.len() <= LONGEST_NAME)
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

/// A hint that suggests the closest candidate, or lists them all.
pub fn suggest(word: &str, candidates: &[&str]) -> String {
    did_you_mean(word, candidates.iter().copied()).unwrap_or_else(|| {
        let listed: Vec<_> = candidates.iter().map(|c| clip(c, 64)).collect();
        format!("expected one of: {}", listed.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_on_a_character() {
        assert_eq!(clip("short", 10), "short");
        let long = "é".repeat(1000);
        let cut = clip(&long, 5);
        assert!(cut.starts_with("ééééé... ("), "{cut}");
        assert!(cut.ends_with("more bytes)"));
        assert_eq!(did_you_mean(&"x".repeat(10_000), ["x"]), None);
        assert_eq!(
            did_you_mean("prod", ["production"]).as_deref(),
            Some("did you mean `production`?")
        );
    }
}

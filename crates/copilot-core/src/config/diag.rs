//! Problems found in definition files, each with file:line:col and a hint.
//!
//! A [`Diagnostic`] is a [`miette::Diagnostic`]: its severity, its help
//! (the hint), and one label over the offending value in the quoted source
//! line, whose span contents carry the real line and column. [`Rustc`]
//! renders any miette diagnostic the way copilot always has: headline,
//! `--> file:line:col`, the source line, a caret under the whole value, the
//! hint.

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
    /// How many characters the offending value spans (0: unknown, the caret
    /// then runs to the end of the word).
    #[serde(skip)]
    pub len: u64,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

/// The quoted source line, as miette reads source code: one line whose
/// span contents say which line of the file it is.
impl miette::SourceCode for Diagnostic {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        _context_lines_before: usize,
        _context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let text = self.source_line.as_deref().unwrap_or_default();
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.file.clone(),
            text.as_bytes(),
            miette::SourceSpan::new(0.into(), text.len()),
            usize::try_from(self.line.saturating_sub(1)).unwrap_or(0),
            span.offset(),
            1,
        )))
    }
}

impl miette::Diagnostic for Diagnostic {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.hint
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display + 'a>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source_line
            .as_ref()
            .map(|_| self as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        self.source_line.as_ref()?;
        let (offset, len) = self.span();
        Some(Box::new(std::iter::once(miette::LabeledSpan::new(
            None, offset, len,
        ))))
    }
}

impl Diagnostic {
    /// Where the offending value is in the quoted line: byte offset and
    /// length, the length from the definition's span where it is known.
    fn span(&self) -> (usize, usize) {
        let Some(src) = &self.source_line else {
            return (0, 0);
        };
        let at = usize::try_from(self.column.saturating_sub(1)).unwrap_or(0);
        let chars = usize::try_from(self.len).unwrap_or(0);
        let width = if chars > 0 {
            chars
        } else {
            src.chars()
                .skip(at)
                .take_while(|c| !c.is_whitespace() && *c != ':' && *c != ',' && *c != ']')
                .count()
        };
        // Characters to bytes, within the line.
        let byte = |n: usize| src.char_indices().nth(n).map_or(src.len(), |(i, _)| i);
        let start = byte(at);
        let end = byte(at + width.max(1))
            .max(start + 1)
            .min(src.len().max(start + 1));
        (start, end - start)
    }

    /// `file:line:col: message`, on one line.
    pub fn located(&self) -> String {
        format!(
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }

    /// Render in the style of rustc: headline, location, source line, caret, hint.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = Rustc::render(&mut out, self, (&self.file, self.line, self.column));
        out
    }
}

/// Renders a miette diagnostic in the style of rustc. miette's own handlers
/// draw boxes; people and CI logs here read `--> file:line:col` and a caret.
pub struct Rustc;

impl Rustc {
    /// Write `d` (its source code the quoted line, whose span contents say
    /// where it is) at `at` (file, line, column).
    pub fn render(
        out: &mut String,
        d: &dyn miette::Diagnostic,
        at: (&str, u64, u64),
    ) -> fmt::Result {
        let (label, colour) = match d.severity().unwrap_or(miette::Severity::Error) {
            miette::Severity::Warning => ("warning", AnsiColor::Yellow),
            miette::Severity::Advice => ("note", AnsiColor::Cyan),
            miette::Severity::Error => ("error", AnsiColor::Red),
        };
        let head = Style::new().bold().fg_color(Some(colour.into()));
        let bold = Style::new().bold();
        let blue = Style::new().bold().fg_color(Some(AnsiColor::Blue.into()));
        let (file, line, column) = at;
        writeln!(out, "{head}{label}{head:#}{bold}: {d}{bold:#}")?;
        let gutter = line.to_string().len();
        let pad = " ".repeat(gutter);
        writeln!(out, "{pad}{blue}-->{blue:#} {file}:{line}:{column}")?;
        let quoted = d.source_code().zip(d.labels().and_then(|mut l| l.next()));
        if let Some((source, label)) = quoted
            && let Ok(contents) = source.read_span(label.inner(), 0, 0)
        {
            let text = String::from_utf8_lossy(contents.data());
            let number = contents.line() + 1;
            let before = text[..label.offset().min(text.len())].chars().count();
            let end = (label.offset() + label.len()).min(text.len());
            let under = text[label.offset().min(end)..end].chars().count().max(1);
            writeln!(out, "{pad} {blue}|{blue:#}")?;
            writeln!(out, "{blue}{number}{blue:#} {blue}|{blue:#} {text}")?;
            writeln!(
                out,
                "{pad} {blue}|{blue:#} {}{head}{}{head:#}",
                " ".repeat(before),
                "^".repeat(under)
            )?;
        }
        if let Some(help) = d.help() {
            writeln!(out, "{pad} {blue}={blue:#} {bold}hint{bold:#}: {help}")?;
        }
        Ok(())
    }

    /// The rustc-style rendering, as the old one did it; kept for tests.
    #[cfg(test)]
    fn legacy(d: &Diagnostic) -> String {
        let (label, colour) = match d.severity {
            Severity::Error => ("error", AnsiColor::Red),
            Severity::Warning => ("warning", AnsiColor::Yellow),
        };
        let head = Style::new().bold().fg_color(Some(colour.into()));
        let bold = Style::new().bold();
        let blue = Style::new().bold().fg_color(Some(AnsiColor::Blue.into()));
        let mut out = String::new();
        let _ = writeln!(out, "{head}{label}{head:#}{bold}: {}{bold:#}", d.message);
        let gutter = d.line.to_string().len();
        let pad = " ".repeat(gutter);
        let _ = writeln!(
            out,
            "{pad}{blue}-->{blue:#} {}:{}:{}",
            d.file, d.line, d.column
        );
        if let Some(src) = &d.source_line {
            let caret_at = usize::try_from(d.column.saturating_sub(1)).unwrap_or(0);
            let width = src
                .chars()
                .skip(caret_at)
                .take_while(|c| !c.is_whitespace() && *c != ':' && *c != ',' && *c != ']')
                .count()
                .max(1);
            let _ = writeln!(out, "{pad} {blue}|{blue:#}");
            let _ = writeln!(out, "{blue}{}{blue:#} {blue}|{blue:#} {src}", d.line);
            let _ = writeln!(
                out,
                "{pad} {blue}|{blue:#} {}{head}{}{head:#}",
                " ".repeat(caret_at),
                "^".repeat(width)
            );
        }
        if let Some(hint) = &d.hint {
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
            len: loc.len,
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

    fn diagnostic(source: &str, column: u64, len: u64) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            file: "arenas/canary.yaml".into(),
            line: 12,
            column,
            message: "`5 minutes` is not a duration".into(),
            hint: Some("write a number and a unit".into()),
            source_line: Some(source.into()),
            len,
        }
    }

    #[test]
    fn the_rustc_rendering_through_miette_is_the_one_people_know() {
        let plain = |text: String| anstream::adapter::strip_str(&text).to_string();
        // Without a known length the caret runs to the end of the word, as before.
        let d = diagnostic("  bake: 5m,", 9, 0);
        assert_eq!(d.render(), Rustc::legacy(&d));
        let d = Diagnostic {
            source_line: None,
            ..diagnostic("", 1, 0)
        };
        assert_eq!(d.render(), Rustc::legacy(&d));
        // With the value's span the caret covers all of it, spaces included.
        let d = diagnostic("    - { weight: 10, bake: 5 minutes }", 27, 9);
        let text = plain(d.render());
        let caret = format!("   | {}{}\n", " ".repeat(26), "^".repeat(9));
        assert!(
            text.contains(&format!(
                "12 |     - {{ weight: 10, bake: 5 minutes }}\n{caret}"
            )),
            "{text}"
        );
        assert!(text.contains("--> arenas/canary.yaml:12:27"), "{text}");
        assert!(text.contains("= hint: write a number and a unit"), "{text}");
        // A miette report shows the same labels and help.
        let labels: Vec<miette::LabeledSpan> = miette::Diagnostic::labels(&d).unwrap().collect();
        assert_eq!((labels[0].offset(), labels[0].len()), (26, 9));
        assert_eq!(
            miette::Diagnostic::help(&d).unwrap().to_string(),
            "write a number and a unit"
        );
    }

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

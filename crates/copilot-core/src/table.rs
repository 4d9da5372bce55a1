//! Aligned tables for terminals, through `tabled`: columns padded to their
//! widest cell and, on a terminal, cut to its width (the widest columns give
//! way first, with `…` where text was cut). Cells are plain text: tables
//! never carry colour, so piped output stays clean.

use std::io::IsTerminal as _;

use tabled::builder::Builder;
use tabled::settings::object::Columns;
use tabled::settings::peaker::Priority;
use tabled::settings::{Padding, Style, Width};

/// The gap between two columns.
const GAP: usize = 2;
/// No column is cut below this many characters.
const MIN_COLUMN: usize = 6;

/// A table of text cells with a header row.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(header: I) -> Self {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, cells: I) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as it should appear on stdout: cut to the terminal's
    /// width when stdout is one (or to `COLUMNS` when set), whole otherwise.
    pub fn render(&self) -> String {
        self.render_within(stdout_width())
    }

    /// The table cut to at most `width` characters a line, when given.
    pub fn render_within(&self, width: Option<usize>) -> String {
        let cols = self.header.len();
        if cols == 0 {
            return String::new();
        }
        let mut builder = Builder::default();
        builder.push_record(self.header.iter().map(|h| one_line(h)));
        for row in &self.rows {
            let mut cells: Vec<String> = row.iter().take(cols).map(|c| one_line(c)).collect();
            cells.resize(cols, String::new());
            builder.push_record(cells);
        }
        let mut table = builder.build();
        table.with(Style::empty()).with(Padding::zero());
        if cols > 1 {
            table.modify(Columns::new(..cols - 1), Padding::new(0, GAP, 0, 0));
        }
        if let Some(width) = width {
            let floor = cols * (MIN_COLUMN + GAP);
            table.with(
                Width::truncate(width.max(floor))
                    .suffix("…")
                    .priority(Priority::max(true)),
            );
        }
        let mut out = String::new();
        for line in table.to_string().lines() {
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Newlines and tabs inside a cell would break the grid.
fn one_line(cell: &str) -> String {
    cell.replace(['\n', '\r', '\t'], " ")
}

fn stdout_width() -> Option<usize> {
    if let Some(cols) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|c| *c > 0)
    {
        return Some(cols);
    }
    if !std::io::stdout().is_terminal() {
        return None;
    }
    console::Term::stdout()
        .size_checked()
        .map(|(_, cols)| usize::from(cols))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(["ARENA", "RELEASE", "SUMMARY"]);
        t.row(["production", "v1.2.3", "serving since 2026-11-24 10:00Z"]);
        t.row(["canary", "v1.3.0-rc.1", "line one\nline two"]);
        t
    }

    #[test]
    fn pads_columns_to_the_widest_cell_with_two_spaces() {
        assert_eq!(
            sample().render_within(None),
            "ARENA       RELEASE      SUMMARY\n\
             production  v1.2.3       serving since 2026-11-24 10:00Z\n\
             canary      v1.3.0-rc.1  line one line two\n"
        );
    }

    #[test]
    fn cuts_to_the_width_widest_column_first() {
        let text = sample().render_within(Some(40));
        for line in text.lines() {
            assert!(line.chars().count() <= 40, "{line:?}");
        }
        assert!(text.contains('…'), "{text}");
        assert!(text.starts_with("ARENA"), "{text}");
        assert!(
            text.contains("production"),
            "the narrow columns stay whole: {text}"
        );
    }

    #[test]
    fn short_rows_are_padded_and_an_empty_header_renders_nothing() {
        let mut t = Table::new(["A", "B"]);
        t.row(["x"]);
        assert_eq!(t.render_within(None), "A  B\nx\n");
        assert_eq!(Table::default().render_within(None), "");
    }
}

//! Human output: aligned tables, relative times, short durations and sizes, and colour when
//! standard output is a terminal (and `NO_COLOR` is unset).

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime};

/// A terminal colour for a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    /// No colour.
    Plain,
    /// Success.
    Green,
    /// Redirects, slow.
    Yellow,
    /// Errors.
    Red,
    /// Secondary information.
    Dim,
}

impl Colour {
    fn code(self) -> &'static str {
        match self {
            Colour::Plain => "",
            Colour::Green => "\x1b[32m",
            Colour::Yellow => "\x1b[33m",
            Colour::Red => "\x1b[31m",
            Colour::Dim => "\x1b[2m",
        }
    }
}

/// True when colours should be written.
pub fn colours_on() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// One table cell.
#[derive(Debug, Clone)]
pub struct Cell {
    text: String,
    colour: Colour,
}

impl Cell {
    /// A cell without colour.
    pub fn plain(text: impl Into<String>) -> Self {
        Cell {
            text: text.into(),
            colour: Colour::Plain,
        }
    }

    /// A coloured cell.
    pub fn coloured(text: impl Into<String>, colour: Colour) -> Self {
        Cell {
            text: text.into(),
            colour,
        }
    }
}

/// A table printed with each column as wide as its widest cell.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
    /// Columns aligned right (numbers).
    right: Vec<bool>,
}

impl Table {
    /// A table with these column headers; headers starting with `>` are right-aligned.
    pub fn new(headers: &[&'static str]) -> Self {
        Table {
            right: headers.iter().map(|h| h.starts_with('>')).collect(),
            headers: headers.iter().map(|h| h.trim_start_matches('>')).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    /// Writes the table.
    pub fn print(&self, out: &mut impl Write, use_colour: bool) -> std::io::Result<()> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.text.chars().count());
                }
            }
        }
        let header: Vec<Cell> = self.headers.iter().map(|h| Cell::plain(*h)).collect();
        for (n, row) in std::iter::once(&header).chain(&self.rows).enumerate() {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let width = widths.get(i).copied().unwrap_or(0);
                let pad = width.saturating_sub(cell.text.chars().count());
                let last = i + 1 == row.len();
                let (before, after) = if self.right.get(i).copied().unwrap_or(false) {
                    (pad, 0)
                } else {
                    (0, if last { 0 } else { pad })
                };
                line.push_str(&" ".repeat(before));
                let colour = if n == 0 { Colour::Dim } else { cell.colour };
                if use_colour && colour != Colour::Plain {
                    line.push_str(colour.code());
                    line.push_str(&cell.text);
                    line.push_str("\x1b[0m");
                } else {
                    line.push_str(&cell.text);
                }
                line.push_str(&" ".repeat(after));
                if !last {
                    line.push_str("  ");
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// `12s ago`, `3m ago`, `2h ago`, `4d ago` (or `in 5s` for clock skew).
pub fn relative(t: SystemTime, now: SystemTime) -> String {
    match now.duration_since(t) {
        Ok(ago) => format!("{} ago", short_span(ago)),
        Err(e) => format!("in {}", short_span(e.duration())),
    }
}

fn short_span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// A latency: `830ns`, `12.3µs`, `4.5ms`, `1.20s`.
pub fn nanos(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.1}µs", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

/// A size: `512B`, `1.5KiB`, `3.2MiB`.
pub fn bytes(n: u64) -> String {
    match n {
        0..=1023 => format!("{n}B"),
        1024..=1_048_575 => format!("{:.1}KiB", n as f64 / 1024.0),
        _ => format!("{:.1}MiB", n as f64 / 1_048_576.0),
    }
}

/// The colour of an HTTP status.
pub fn status_colour(status: u32, error: bool) -> Colour {
    match status {
        _ if error => Colour::Red,
        200..=299 => Colour::Green,
        300..=499 => Colour::Yellow,
        _ => Colour::Red,
    }
}

/// Cuts `s` to `max` characters with an ellipsis.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_skip_colour_when_asked() {
        let mut t = Table::new(&["NAME", ">COUNT"]);
        t.row(vec![Cell::plain("a"), Cell::coloured("1234", Colour::Red)]);
        t.row(vec![Cell::plain("longer"), Cell::plain("5")]);
        let mut out = Vec::new();
        t.print(&mut out, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NAME    COUNT\na        1234\nlonger      5\n"
        );
    }

    #[test]
    fn human_units() {
        assert_eq!(nanos(830), "830ns");
        assert_eq!(nanos(4_500_000), "4.5ms");
        assert_eq!(nanos(1_200_000_000), "1.20s");
        assert_eq!(bytes(1536), "1.5KiB");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(relative(now - Duration::from_secs(125), now), "2m ago");
        assert_eq!(cut("abcdef", 4), "abc…");
    }
}

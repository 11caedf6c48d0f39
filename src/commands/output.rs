//! Printing results: aligned columns for a terminal, or one JSON document for
//! scripts. Building the text is pure (and tested here); only [`emit`] writes
//! to stdout.

use std::io::Write;

use serde::Serialize;

use crate::{cli::OutputFormat, source::short_sha};

use super::CommandError;

/// Columns with a header row, rendered left-aligned with two spaces between
/// columns (like `kubectl get`). The last column is not padded.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rendered table, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let last = row.len().saturating_sub(1);
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i < last {
                    line.push_str(&" ".repeat(widths[i] - width(cell) + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `name: value` lines with the values aligned, for a single result.
pub fn render_fields(fields: &[(&str, String)]) -> String {
    let name_width = fields
        .iter()
        .map(|(name, _)| width(name))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (name, value) in fields {
        out.push_str(&format!(
            "{name}:{}{value}\n",
            " ".repeat(name_width - width(name) + 2)
        ));
    }
    out
}

fn width(text: &str) -> usize {
    text.chars().count()
}

/// `text` on one line of at most `max` terminal columns (characters), with
/// `…` when cut; newlines and tabs become spaces. (Condition messages are cut
/// differently, to a byte bound, by the controller's status writer.)
pub fn truncate_to_width(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The first 12 characters of a commit, as people quote them; `-` for none.
pub fn short_commit(commit: Option<&str>) -> String {
    commit
        .map(|c| short_sha(c, 12))
        .unwrap_or_else(|| "-".into())
}

/// Milliseconds as `850ms`, `12.3s` or `4m05s`.
pub fn human_duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// Prints `value` as JSON, or the table `build` makes, to stdout.
pub fn emit<T: Serialize>(
    format: OutputFormat,
    value: &T,
    build: impl FnOnce(&T) -> String,
) -> Result<(), CommandError> {
    write_stdout(match format {
        OutputFormat::Json => {
            let mut json =
                serde_json::to_string_pretty(value).expect("command reports serialize to JSON");
            json.push('\n');
            json
        }
        OutputFormat::Table => build(value),
    })
}

/// Writes `text` to stdout.
pub fn write_stdout(text: String) -> Result<(), CommandError> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // `projectsync history ... | head` closes the pipe early: not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(|source| CommandError::Io {
            action: "write to stdout".into(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_and_lines_have_no_trailing_spaces() {
        let mut table = Table::new(&["NAME", "COMMIT", "NOTE"]);
        table.row(vec!["main".into(), "abc".into(), "".into()]);
        table.row(vec![
            "feature/long-name".into(),
            "def".into(),
            "tracked".into(),
        ]);
        assert_eq!(
            table.render(),
            "NAME               COMMIT  NOTE\nmain               abc\nfeature/long-name  def     tracked\n"
        );
    }

    #[test]
    fn fields_align_their_values() {
        assert_eq!(
            render_fields(&[("sync", "1".into()), ("commit", "abc".into())]),
            "sync:    1\ncommit:  abc\n"
        );
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis_and_durations_read_naturally() {
        assert_eq!(truncate_to_width("abc", 5), "abc");
        assert_eq!(truncate_to_width("abcdefgh", 5), "abcd…");
        assert_eq!(truncate_to_width("a\nb", 5), "a b");
        assert_eq!(human_duration(850), "850ms");
        assert_eq!(human_duration(12_340), "12.3s");
        assert_eq!(human_duration(245_000), "4m05s");
        assert_eq!(short_commit(Some("0123456789abcdef")), "0123456789ab");
        assert_eq!(short_commit(None), "-");
    }
}

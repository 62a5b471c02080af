//! Outside text shown to people: control characters escaped, so a hostile path or name cannot forge
//! lines or drive a terminal (the text alert format, tables, status).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Displays its text with control characters escaped (`\n`, `\u{1b}`).
pub struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// `s` with control characters escaped, borrowed when there are none.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        Cow::Owned(Escaped(s).to_string())
    } else {
        Cow::Borrowed(s)
    }
}

/// A table cell for a value that may be missing: `-`, or the value escaped.
pub fn cell(v: Option<&str>) -> String {
    v.map_or_else(|| "-".to_string(), |s| escape_controls(s).into_owned())
}

/// Rows aligned in columns under `header`: each line starts with `indent` spaces and its cells,
/// padded to their column's width, are `gap` spaces apart. Cells are shown as given (escape outside
/// text first: [`cell`]).
pub fn table<R: AsRef<[String]>>(header: &[&str], rows: &[R], indent: usize, gap: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r.as_ref()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = " ".repeat(indent);
        for (i, (c, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                s.push_str(&" ".repeat(gap));
            }
            let _ = write!(s, "{c:<w$}");
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.as_ref().iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_controls("a\nb\u{1b}[31mc é"), "a\\nb\\u{1b}[31mc é");
        assert!(matches!(escape_controls("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn a_table_aligns_columns_to_the_widest_cell() {
        let rows = vec![
            vec!["a".to_string(), cell(None)],
            vec!["long name".to_string(), cell(Some("x\ty"))],
        ];
        assert_eq!(
            table(&["name", "value"], &rows, 2, 1),
            "  name      value\n  a         -\n  long name x\\ty\n"
        );
    }
}

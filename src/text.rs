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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_controls("a\nb\u{1b}[31mc é"), "a\\nb\\u{1b}[31mc é");
        assert!(matches!(escape_controls("plain"), Cow::Borrowed("plain")));
    }
}

//! Locating configuration errors: the file, the line and (where serde knows it) the
//! column. Errors found while deserializing carry serde_yaml_ng's location; errors
//! found afterwards name a key, and the key's line is looked up in the text.

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration problem, with the file and (where known) the line at fault.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A problem found after parsing: the key it is about (its last segment is looked
/// up in the text for the line) and what is wrong. Shown as `<key>: <message>`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct KeyError {
    pub key: String,
    pub message: String,
}

impl KeyError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        KeyError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Turns problems into [`ConfigError`]s located in one config text.
pub(super) struct Locator<'a> {
    pub text: &'a str,
    pub source: &'a Path,
}

impl Locator<'_> {
    /// An error about the file as a whole (no line).
    pub fn file(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.source.to_path_buf(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// An error about a key, at the line where the key first appears.
    pub fn key(&self, e: KeyError) -> ConfigError {
        ConfigError {
            file: self.source.to_path_buf(),
            line: find_key_line(self.text, &e.key),
            column: None,
            message: format!("{}: {}", e.key, e.message),
        }
    }

    /// A deserialization error, at serde's location (a duplicate key: at the
    /// duplicate itself), with internal type names replaced by what they mean.
    pub fn serde(&self, e: serde_yaml_ng::Error) -> ConfigError {
        let loc = e.location();
        let mut message = e.to_string();
        if let Some(l) = &loc {
            let suffix = format!(" at line {} column {}", l.line(), l.column());
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_string();
            }
        }
        // Internal type names mean nothing to the user.
        let message = message
            .replace("struct RawConfig", "a mapping of configuration keys")
            .replace("struct RawPrometheus", "a mapping (the prometheus section)")
            .replace("struct RawStorage", "a mapping (the storage section)")
            .replace("struct RawMetric", "a mapping (a metric)")
            .replace("struct RawTls", "a mapping (the tls section)")
            .replace("struct RawCompaction", "a mapping (the compaction section)");
        let (mut line, mut column) = (
            loc.as_ref().map(|l| l.line()),
            loc.as_ref().map(|l| l.column()),
        );
        // serde reports a duplicate key at its mapping; point at the duplicate itself.
        if let (Some(start), Some(name)) = (line, duplicate_field(&message)) {
            if let Some(dup) = second_key_line(self.text, start, &name) {
                line = Some(dup);
                column = None;
            }
        }
        ConfigError {
            file: self.source.to_path_buf(),
            line,
            column,
            message,
        }
    }
}

fn duplicate_field(message: &str) -> Option<String> {
    let rest = message.split("duplicate field `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

/// The 1-based line of the second `key:` at or after line `start`, at the indentation
/// of the first one.
fn second_key_line(text: &str, start: usize, key: &str) -> Option<usize> {
    let mut first_indent = None;
    for (i, l) in text.lines().enumerate().skip(start.saturating_sub(1)) {
        let trimmed = l.trim_start().trim_start_matches("- ");
        let indent = l.len() - l.trim_start().len();
        let k = trimmed
            .strip_prefix(key)
            .map(|r| r.trim_start().starts_with(':'))
            .unwrap_or(false)
            || trimmed
                .strip_prefix(&format!("\"{key}\""))
                .map(|r| r.trim_start().starts_with(':'))
                .unwrap_or(false);
        if !k {
            continue;
        }
        match first_indent {
            None => first_indent = Some(indent),
            Some(fi) if fi == indent => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// The 1-based line where `key:` first appears, for errors found after parsing.
fn find_key_line(text: &str, key: &str) -> Option<usize> {
    let key = key.rsplit('.').next().unwrap_or(key);
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(key) && t[key.len()..].trim_start().starts_with(':')
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "a:\n  b: 1\n  # b: in a comment\n  - c: 2\n  b: 3\n";

    #[test]
    fn keys_are_found_by_their_last_segment() {
        assert_eq!(find_key_line(TEXT, "a"), Some(1));
        assert_eq!(find_key_line(TEXT, "a.b"), Some(2));
        assert_eq!(find_key_line(TEXT, "c"), Some(4));
        assert_eq!(find_key_line(TEXT, "d"), None);
        let at = Locator {
            text: TEXT,
            source: Path::new("x.yaml"),
        };
        assert_eq!(
            at.key(KeyError::new("a.c", "wrong")).to_string(),
            "x.yaml:4: a.c: wrong"
        );
        assert_eq!(at.file("empty").to_string(), "x.yaml: empty");
    }

    #[test]
    fn a_duplicate_is_found_at_the_first_ones_indentation() {
        assert_eq!(second_key_line(TEXT, 1, "b"), Some(5));
        assert_eq!(second_key_line(TEXT, 3, "b"), None);
        assert_eq!(
            duplicate_field("x: duplicate field `timeout` here").as_deref(),
            Some("timeout")
        );
        assert_eq!(duplicate_field("unknown field `x`"), None);
    }
}

//! User-facing diagnostics: a message, an optional source location, and a caret snippet.
//!
//! Every user error that can point at a spec file renders through [`Diagnostic`], so the
//! CLI prints one shape for Starlark syntax errors, bad values, cycles and template errors.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A place in a source file: 1-based line and column, plus what is needed to draw a caret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceLocation {
    /// The file as the user knows it (the path given on the command line, or `@tend//x.star`).
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The text of the line, without its newline.
    pub line_text: String,
    /// How many characters of the line the caret underlines (at least 1).
    pub width: usize,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// An error (or note) about a spec, ready to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// One lowercase sentence saying what is wrong.
    pub message: String,
    /// Where it is wrong, when that is known.
    pub location: Option<SourceLocation>,
    /// Extra lines printed after the snippet, such as a hint.
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// A diagnostic with a message and a location.
    pub fn new(message: impl Into<String>, location: Option<SourceLocation>) -> Self {
        Diagnostic {
            message: message.into(),
            location,
            notes: Vec::new(),
        }
    }

    /// Adds a note printed under the snippet.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(loc) = &self.location {
            let gutter = loc.line.to_string().len();
            let pad = " ".repeat(gutter);
            write!(f, "\n{pad}--> {loc}")?;
            write!(f, "\n{pad} |")?;
            write!(f, "\n{} | {}", loc.line, loc.line_text)?;
            let lead: String = loc
                .line_text
                .chars()
                .take(loc.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n{pad} | {lead}{}", "^".repeat(loc.width.max(1)))?;
        }
        for note in &self.notes {
            write!(f, "\n  = {note}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_caret_under_the_span() {
        let d = Diagnostic::new(
            "size must not be negative, got -1",
            Some(SourceLocation {
                file: "main.star".into(),
                line: 3,
                column: 5,
                line_text: "    size = -1,".into(),
                width: 9,
            }),
        )
        .with_note("help: use size = 0 to stop every instance");
        assert_eq!(
            d.to_string(),
            "error: size must not be negative, got -1\n --> main.star:3:5\n  |\n3 |     size = -1,\n  |     ^^^^^^^^^\n  = help: use size = 0 to stop every instance"
        );
    }
}

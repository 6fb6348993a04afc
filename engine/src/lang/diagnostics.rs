//! Turning Starlark errors and spans into tend's [`Diagnostic`]s.

use starlark::codemap::FileSpan;

use crate::diagnostic::{Diagnostic, SourceLocation};

/// The location of a Starlark span, with its line text for the caret snippet.
pub fn location(span: &FileSpan) -> SourceLocation {
    let resolved = span.resolve_span();
    let line_text = span
        .file
        .source_line(resolved.begin.line)
        .trim_end_matches(['\r', '\n'])
        .to_owned();
    let line_chars = line_text.chars().count();
    let width = if resolved.end.line == resolved.begin.line {
        resolved.end.column.saturating_sub(resolved.begin.column)
    } else {
        line_chars.saturating_sub(resolved.begin.column)
    };
    SourceLocation {
        file: span.filename().to_owned(),
        line: resolved.begin.line + 1,
        column: resolved.begin.column + 1,
        line_text,
        width: width.max(1),
    }
}

/// Converts a Starlark error (syntax, type, `fail()`, a builtin's complaint) into a diagnostic
/// that points at the innermost span and lists the calls that led there.
pub fn from_starlark(error: &starlark::Error) -> Diagnostic {
    let message = error.without_diagnostic().to_string();
    let message = tidy_message(&message);
    let mut diagnostic = Diagnostic::new(message, error.span().map(location));
    let frames = &error.call_stack().frames;
    for frame in frames.iter().rev().skip(1) {
        if let Some(loc) = &frame.location {
            diagnostic =
                diagnostic.with_note(format!("in {} called at {}", frame.name, location(loc)));
        }
    }
    diagnostic
}

/// Messages from the languages' own crates, as tend writes its own: tend's start lowercase
/// (Starlark's and Nickel's are capitalised). Lines are kept (a test failure carries a diff),
/// without trailing spaces or blank lines.
pub(crate) fn tidy_message(message: &str) -> String {
    let joined = message
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let mut chars = joined.chars();
    match chars.next() {
        Some(first) if chars.clone().next().is_some_and(|c| c.is_lowercase()) => {
            first.to_lowercase().chain(chars).collect()
        }
        _ => joined,
    }
}

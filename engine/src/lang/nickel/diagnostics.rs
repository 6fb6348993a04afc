//! Turning Nickel's errors and positions into tend's [`Diagnostic`]s, with files named as
//! the user knows them.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use nickel_lang_core::error::{Error, IntoDiagnostics, LabelStyle, ParseError};
use nickel_lang_core::files::{FileId, Files};
use nickel_lang_core::position::RawSpan;

use super::shipped;
use crate::diagnostic::{Diagnostic, SourceLocation};
use crate::lang::diagnostics::tidy_message;

/// The files of one evaluation and how to show them.
pub struct Sources {
    /// The spec, resolved.
    pub main: PathBuf,
    /// The spec as the user named it.
    pub main_display: String,
    /// The spec's root, resolved.
    pub root: PathBuf,
    /// The root as the user named it.
    pub root_display: PathBuf,
}

/// Who wrote a file: the user, tend (the shipped contract), or nobody a user can open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    User,
    Tend,
    Hidden,
}

impl Sources {
    fn owner(&self, name: &OsStr) -> Owner {
        let path = Path::new(name);
        if path == shipped::contract_path() {
            Owner::Tend
        } else if path.starts_with(shipped::folder()) || !path.is_absolute() {
            Owner::Hidden
        } else {
            Owner::User
        }
    }

    /// A file's name as the user knows it.
    fn display(&self, name: &OsStr) -> String {
        let path = Path::new(name);
        if path == self.main {
            return self.main_display.clone();
        }
        if path == shipped::contract_path() {
            return "@tend//tend.ncl".to_owned();
        }
        match path.strip_prefix(&self.root) {
            Ok(inside) => self.root_display.join(inside).display().to_string(),
            Err(_) => path.display().to_string(),
        }
    }

    /// The place a span starts, with its line for the caret (found from the span itself,
    /// so a location costs the length of its line, not of its file).
    pub fn location(&self, files: &Files, span: RawSpan) -> Option<SourceLocation> {
        let source = files.source(span.src_id);
        let start = span.start.to_usize().min(source.len());
        let end = span.end.to_usize().clamp(start, source.len());
        let line_start = source.get(..start)?.rfind('\n').map_or(0, |i| i + 1);
        let line_end = source
            .get(start..)?
            .find('\n')
            .map_or(source.len(), |i| start + i);
        let line_text = source
            .get(line_start..line_end)?
            .trim_end_matches('\r')
            .to_owned();
        // Nickel's own index answers in O(log n); an error at the very end of the file (or
        // in an empty one) is past it, and is counted here instead.
        let indexed = (start < source.len())
            .then(|| files.location(span.src_id, span.start).ok())
            .flatten();
        let (line, column) = match indexed {
            Some(place) => (place.line.to_usize(), place.column.to_usize()),
            None => (
                source.get(..start)?.matches('\n').count(),
                source.get(line_start..start)?.chars().count(),
            ),
        };
        let spanned = source.get(start..end.min(line_end)).unwrap_or_default();
        Some(SourceLocation {
            file: self.display(files.name(span.src_id)),
            line: line + 1,
            column: column + 1,
            line_text,
            width: spanned.chars().count().max(1),
        })
    }

    /// Whether a file is one of the user's own (not the shipped contract or program).
    pub fn is_user_file(&self, files: &Files, id: FileId) -> bool {
        self.owner(files.name(id)) == Owner::User
    }

    /// A Nickel error as one diagnostic: its message, at the first place in the user's own
    /// files that it names (else in the shipped contract), the rest as notes.
    pub fn diagnostic(&self, mut files: Files, error: Error) -> Diagnostic {
        // A file that ends too soon is named with no place in it: its end is the place.
        let ended_early = match &error {
            Error::ParseErrors(parse) => parse.errors.iter().find_map(|e| match e {
                ParseError::UnexpectedEOF(file, _) => Some(*file),
                _ => None,
            }),
            _ => None,
        };
        let reported = error.into_diagnostics(&mut files);
        let Some(first) = reported.into_iter().next() else {
            return Diagnostic::new("the Nickel program failed to evaluate", None);
        };
        let rank = |label: &nickel_lang_core::error::Label<FileId>| {
            let user = self.is_user_file(&files, label.file_id);
            let primary = label.style == LabelStyle::Primary;
            match (user, primary) {
                (true, true) => 0,
                (true, false) => 1,
                (false, true) => 2,
                (false, false) => 3,
            }
        };
        let shown = |label: &nickel_lang_core::error::Label<FileId>| {
            self.owner(files.name(label.file_id)) != Owner::Hidden
        };
        let chosen = first
            .labels
            .iter()
            .enumerate()
            .filter(|(_, l)| shown(l))
            .min_by_key(|(i, l)| (rank(l), *i))
            .map(|(i, _)| i);
        // Nickel writes a generic first line ("contract broken by the value of `size`") and
        // the contract's own words on the next: one sentence here.
        let message = first
            .message
            .lines()
            .map(|l| tidy_message(l.trim()))
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>();
        let own_words = message.len() > 1;
        let mut message = in_tend_words(message.join(": "))
            .replace(&self.main.display().to_string(), &self.main_display);
        let location = chosen
            .and_then(|i| {
                let label = &first.labels[i];
                self.location(
                    &files,
                    RawSpan::from_range(label.file_id, label.range.clone()),
                )
            })
            .or_else(|| {
                let file = ended_early?;
                let end = files.source(file).len();
                self.location(&files, RawSpan::from_range(file, end..end))
            });
        if let Some(importer) = chosen.map(|i| Path::new(files.name(first.labels[i].file_id))) {
            if let Some(said) = self.import_words(&message, importer) {
                message = said;
            }
        }
        // What the shipped contract expected, in its own words (`Number`, `Array String`),
        // unless the contract said what was wrong itself.
        for label in &first.labels {
            let in_contract = self.owner(files.name(label.file_id)) == Owner::Tend;
            if own_words || !in_contract || !label.message.starts_with("expected") {
                continue;
            }
            let span = RawSpan::from_range(label.file_id, label.range.clone());
            let expected = files.source_slice(span).trim().replace("Contract", "");
            if !expected.is_empty() && expected.len() <= 40 && !expected.contains('\n') {
                message = format!("{message}: {} `{expected}`", label.message.trim());
            }
        }
        let mut diagnostic = Diagnostic::new(message, location);
        for (i, label) in first.labels.iter().enumerate() {
            let user = self.is_user_file(&files, label.file_id);
            if Some(i) == chosen || !user || label.message.trim().is_empty() {
                continue;
            }
            let place = self
                .location(
                    &files,
                    RawSpan::from_range(label.file_id, label.range.clone()),
                )
                .map(|l| format!(" at {l}"))
                .unwrap_or_default();
            diagnostic = diagnostic.with_note(format!("{}{place}", tidy_message(&label.message)));
        }
        // Hints for the user; not those for whoever wrote the contract, which ships in tend.
        for note in first.notes.iter().filter(|n| !n.contains("contract might")) {
            diagnostic = diagnostic.with_note(tidy_message(note));
        }
        diagnostic
    }

    /// Nickel's words for an import it could not read ("could not find import (looked in
    /// [...])", with absolute paths), said as tend says it: an import that leads outside the
    /// spec's folder is refused, whether it names a path there or a link to one.
    fn import_words(&self, message: &str, importer: &Path) -> Option<String> {
        let rest = message.strip_prefix("import of ")?;
        let (name, _) = rest.split_once(" failed: could not find import")?;
        let wanted = importer.parent()?.join(name);
        let lexical = normalize(&wanted);
        let leaves = !lexical.starts_with(&self.root)
            || wanted
                .canonicalize()
                .is_ok_and(|real| !real.starts_with(&self.root));
        Some(if leaves {
            format!(
                "import of {name} leads outside the spec's folder {}: imports stay inside it",
                self.root_shown()
            )
        } else {
            format!("import of {name} failed: there is no such file")
        })
    }

    /// The spec's folder as the user named it; `.` when they named none.
    pub fn root_shown(&self) -> String {
        match self.root_display.as_os_str().is_empty() {
            true => ".".to_owned(),
            false => self.root_display.display().to_string(),
        }
    }

    /// The first file the evaluation read from disk outside the spec's root, if any.
    pub fn outside_root(&self, files: &Files) -> Option<String> {
        files
            .filenames()
            .filter(|name| self.owner(name) == Owner::User)
            .map(Path::new)
            .find(|path| !path.starts_with(&self.root))
            .map(|path| path.display().to_string())
    }
}

/// Nickel's words for a wrong provider ("extra field `dokcer`" in `provider`) as tend says
/// it for a Starlark spec.
fn in_tend_words(message: String) -> String {
    let unknown = message
        .strip_prefix("contract broken by the value of `provider`: extra field `")
        .and_then(|rest| rest.strip_suffix('`'));
    match unknown {
        Some(name) => {
            crate::lang::convert::ConvertError::UnknownProvider(name.to_owned()).to_string()
        }
        None => message,
    }
}

/// A path with `.` and `..` taken out, without reading the disk.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

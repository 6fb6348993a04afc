//! The Nickel front end: evaluates a `.ncl` spec, checked by the contract shipped in the
//! binary (`tend.ncl`), into the same [`Spec`] as the Starlark front end.
//!
//! The contract checks the shape of what the program evaluates to; each group is then read
//! into the parts a Starlark `group()` call gets and goes through the same checks
//! ([`super::declare`]), so both languages give the same model, the same hashes and the
//! same plans. Every problem is a [`Diagnostic`] with `file:line:column`.

mod diagnostics;
mod reading;
mod shapes;
mod shipped;

use std::path::Path;

use nickel_lang_core::eval::cache::CacheImpl;
use nickel_lang_core::program::{Program, ProgramBuilder};

use super::{check, Diagnostics, LangError};
use crate::diagnostic::Diagnostic;
use crate::spec::{validate, Spec};
use diagnostics::Sources;

/// A Nickel spec to evaluate: its text and where it is.
pub(super) struct NickelSource<'a> {
    /// The spec file, resolved (imports are relative to it).
    pub canonical: &'a Path,
    /// The file as the user named it, for messages.
    pub display: &'a str,
    /// Its text.
    pub text: String,
    /// The folder no import may leave, resolved.
    pub root: &'a Path,
    /// The same folder as the user named it.
    pub root_display: &'a Path,
    /// The spec's folder name, the default project name.
    pub folder: &'a str,
}

/// Evaluates a Nickel spec and checks it like any spec.
pub(super) fn evaluate(source: NickelSource<'_>) -> Result<Spec, LangError> {
    let sources = Sources {
        main: source.canonical.to_path_buf(),
        main_display: source.display.to_owned(),
        root: source.root.to_path_buf(),
        root_display: source.root_display.to_path_buf(),
    };
    let mut program: Program<CacheImpl> = ProgramBuilder::new()
        .add_source_string(shipped::wrapper(source.canonical), shipped::wrapper_path())
        .add_import_paths([shipped::folder()])
        .build()
        .map_err(|e| Diagnostic::new(format!("cannot evaluate {}: {e}", source.display), None))?;
    let fail = |program: &Program<CacheImpl>, error: nickel_lang_core::error::Error| {
        LangError::from(sources.diagnostic(program.files(), error))
    };
    if let Err(error) = program.compile() {
        return Err(fail(&program, error));
    }
    let text = source.text;
    let user = source.canonical.to_path_buf();
    program
        .custom_transform(0, |cache, _, value| {
            shipped::register(cache, &user, text.clone());
            Ok::<_, std::convert::Infallible>(value)
        })
        .map_err(|e| Diagnostic::new(format!("cannot evaluate {}: {e:?}", source.display), None))?;
    let value = match program.eval_full_for_export() {
        Ok(value) => value,
        Err(error) => return Err(fail(&program, error)),
    };
    let files = program.files();
    if let Some(outside) = sources.outside_root(&files) {
        return Err(Diagnostic::new(
            format!(
                "the spec imports {outside}, which is outside its root {}",
                source.root_display.display()
            ),
            None,
        )
        .with_note("help: keep imported files in the spec's folder")
        .into());
    }
    let read = reading::read(&value, program.pos_table(), &files, &sources)
        .map_err(|e| Diagnostic::new(e, None))?;
    let spec = build(read, source.folder)?;
    check(&spec)?;
    Ok(spec)
}

/// Builds the model from the evaluated record, reporting each problem at its field.
fn build(read: reading::Read, folder: &str) -> Result<Spec, LangError> {
    let project = match read.string("project") {
        Some(name) => {
            validate::project_name(&name)
                .map_err(|e| Diagnostic::new(e.to_string(), read.at("project")))?;
            name
        }
        None => validate::project_name_from_folder(folder),
    };
    let ports = match read.string("ports") {
        Some(range) => Some(
            range
                .parse::<crate::spec::PortRange>()
                .map_err(|e| Diagnostic::new(e.to_string(), read.at("ports")))?,
        ),
        None => None,
    };
    let mut groups = Vec::new();
    let mut problems = Vec::new();
    for name in read.group_names() {
        match reading::group(&read, &name) {
            Ok(group) => groups.push(group),
            Err(problem) => problems.push(problem),
        }
    }
    if !problems.is_empty() {
        return Err(LangError::Spec(Diagnostics(problems)));
    }
    Ok(Spec {
        project,
        ports,
        groups,
    })
}

#[cfg(test)]
mod tests;

//! The Nickel front end: evaluates a `.ncl` spec, checked by the contract shipped in the
//! binary (`tend.ncl`), into the same [`Spec`] as the Starlark front end.
//!
//! The contract checks the shape of what the program evaluates to; each group is then read
//! into the parts a Starlark `group()` call gets and goes through the same checks
//! ([`super::declare`]), so both languages give the same model, the same hashes and the
//! same plans. Every problem is a [`Diagnostic`] with `file:line:column`.

mod confine;
mod diagnostics;
mod reading;
mod shapes;
pub(crate) mod shipped;

use std::path::PathBuf;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use nickel_lang_core::eval::cache::CacheImpl;
use nickel_lang_core::program::{Program, ProgramBuilder};

use super::{check, resident_bytes, Diagnostics, EvalBudget, LangError};
use crate::diagnostic::Diagnostic;
use crate::spec::{validate, Spec};
use diagnostics::Sources;

/// A Nickel spec to evaluate: its text and where it is.
pub(super) struct NickelSource {
    /// The spec file, resolved (imports are relative to it).
    pub canonical: PathBuf,
    /// The file as the user named it, for messages.
    pub display: String,
    /// Its text.
    pub text: String,
    /// The folder no import may leave, resolved.
    pub root: PathBuf,
    /// The same folder as the user named it.
    pub root_display: PathBuf,
    /// The spec's folder name, the default project name.
    pub folder: String,
}

/// Evaluates a Nickel spec and checks it like any spec, on a thread of its own watched
/// against `budget`: Nickel cannot be told to stop, so a runaway spec is abandoned (and an
/// error) when it takes too long or too much memory.
pub(super) fn evaluate(source: NickelSource, budget: EvalBudget) -> Result<Spec, LangError> {
    let display = source.display.clone();
    let (done, result) = std::sync::mpsc::channel();
    let started = Instant::now();
    let memory_at_start = resident_bytes();
    std::thread::Builder::new()
        .name("nickel".to_owned())
        // Nickel recurses on nested records; Starlark specs nest thousands deep.
        .stack_size(256 << 20)
        .spawn(move || {
            let _ = done.send(evaluate_here(source));
        })
        .map_err(|e| Diagnostic::new(format!("cannot evaluate {display}: {e}"), None))?;
    loop {
        match result.recv_timeout(Duration::from_millis(20)) {
            Ok(result) => return result,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Diagnostic::new(
                    format!("internal error (a bug in tend): evaluating {display} failed"),
                    None,
                )
                .into())
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        let grown = resident_bytes().saturating_sub(memory_at_start);
        let why = if started.elapsed() > budget.time {
            format!("ran for {}s", budget.time.as_secs())
        } else if grown > budget.memory_bytes {
            format!("took {} MiB more memory", grown >> 20)
        } else {
            continue;
        };
        return Err(Diagnostic::new(
            format!("{display} {why} without finishing its evaluation and was abandoned"),
            None,
        )
        .with_note("help: look for a recursion that never reaches its base case")
        .into());
    }
}

fn evaluate_here(source: NickelSource) -> Result<Spec, LangError> {
    // Where the kernel cannot confine the thread, the check after evaluation still refuses
    // the spec (failed or not, so a file's text never becomes the error), but only once the
    // file was read.
    let confined = confine::reads_to(&source.root);
    let sources = Sources {
        main: source.canonical.clone(),
        main_display: source.display.clone(),
        root: source.root.clone(),
        root_display: source.root_display.clone(),
    };
    let mut program: Program<CacheImpl> = ProgramBuilder::new()
        .add_source_string(shipped::wrapper(&source.canonical), shipped::wrapper_path())
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
    let user = source.canonical.clone();
    program
        .custom_transform(0, |cache, _, value| {
            shipped::register(cache, &user, text.clone());
            Ok::<_, std::convert::Infallible>(value)
        })
        .map_err(|e| Diagnostic::new(format!("cannot evaluate {}: {e:?}", source.display), None))?;
    let evaluated = program.eval_full_for_export();
    let files = program.files();
    if let Some(outside) = sources.outside_root(&files).filter(|_| !confined) {
        return Err(Diagnostic::new(
            format!(
                "the spec imports {outside}, which is outside its folder {}",
                sources.root_shown()
            ),
            None,
        )
        .with_note("help: keep imported files in the spec's folder")
        .into());
    }
    let value = match evaluated {
        Ok(value) => value,
        Err(error) => return Err(fail(&program, error)),
    };
    let read = reading::read(&value, program.pos_table(), &files, &sources)?;
    let spec = build(read, &source.folder)?;
    check(&spec)?;
    Ok(spec)
}

/// Builds the model from the evaluated record, reporting each problem at its field.
fn build(read: reading::Read<'_>, folder: &str) -> Result<Spec, LangError> {
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

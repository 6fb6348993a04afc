//! The front ends: evaluate a spec, Starlark (`.star`) or Nickel (`.ncl`), into a checked
//! [`Spec`].
//!
//! Both read a group into the same parts and check them with the same functions
//! (`declare`, `convert`), then the same whole-spec checks; so one infrastructure written
//! in either language gives the same model. Everything reported about a spec is a
//! [`Diagnostic`] with `file:line:column` and a caret.

mod builtins;
mod convert;
mod declare;
mod diagnostics;
mod loader;
#[cfg(feature = "nickel")]
mod nickel;
mod recorder;
pub mod stdlib;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use starlark::environment::{Globals, GlobalsBuilder, LibraryExtension};

use crate::diagnostic::Diagnostic;
use crate::graph::{GraphError, GroupGraph};
use crate::spec::{validate, Spec};
// What `tend test` (crate::testing) builds its evaluations from.
pub(crate) use builtins::tend_builtins;
pub(crate) use diagnostics::from_starlark;
pub(crate) use loader::{Loader, ModuleKey};
pub(crate) use recorder::EvalContext;

/// How a spec is evaluated.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// The folder no load may leave; defaults to the spec's own folder.
    pub root: Option<PathBuf>,
    /// The most steps (function calls and loop iterations) one Starlark module may take.
    pub max_steps: u64,
    /// How long, and how much more memory, a Nickel spec may take to evaluate (Nickel has
    /// no step count to limit).
    pub budget: EvalBudget,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            root: None,
            max_steps: 10_000_000,
            budget: EvalBudget::default(),
        }
    }
}

/// The most a Nickel spec's evaluation may take before it is abandoned as runaway: a spec of
/// 10,000 groups takes under a second and a few tens of MiB.
#[derive(Clone, Copy, Debug)]
pub struct EvalBudget {
    /// Wall-clock time.
    pub time: std::time::Duration,
    /// Growth of the process's resident memory while it evaluates.
    pub memory_bytes: u64,
}

impl Default for EvalBudget {
    fn default() -> Self {
        EvalBudget {
            time: std::time::Duration::from_secs(30),
            memory_bytes: 1 << 30,
        }
    }
}

/// One or more problems with a spec, each with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Why a spec could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum LangError {
    /// The spec itself is wrong.
    #[error("{0}")]
    Spec(Diagnostics),
    /// The spec file could not be read.
    #[error("cannot read spec {path}: {source}")]
    Read {
        /// The path given.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
}

impl From<Diagnostic> for LangError {
    fn from(d: Diagnostic) -> Self {
        LangError::Spec(Diagnostics(vec![d]))
    }
}

fn globals() -> Globals {
    GlobalsBuilder::extended_by(&[
        LibraryExtension::StructType,
        LibraryExtension::Json,
        LibraryExtension::Print,
    ])
    .with(builtins::tend_builtins)
    .build()
}

/// Evaluates the spec at `path` (with its loads) and checks it: names, allocations,
/// dependencies, templates and cycles.
pub fn evaluate_file(path: &Path, options: &EvalOptions) -> Result<Spec, LangError> {
    let read_error = |source| LangError::Read {
        path: path.to_owned(),
        source,
    };
    let source = std::fs::read_to_string(path).map_err(read_error)?;
    let root_display = match &options.root {
        Some(root) => root.clone(),
        None => path.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    let root_for_fs = if root_display.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        root_display.clone()
    };
    let root = root_for_fs.canonicalize().map_err(read_error)?;
    let canonical = path.canonicalize().map_err(read_error)?;
    if !canonical.starts_with(&root) {
        return Err(Diagnostic::new(
            format!(
                "the spec {} is outside its root {}",
                path.display(),
                root_display.display()
            ),
            None,
        )
        .into());
    }
    let folder = canonical
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if is_nickel(path) {
        return evaluate_nickel(
            &canonical,
            &path.display().to_string(),
            source,
            (&root, &root_display),
            &folder,
            options.budget,
        );
    }
    evaluate(
        ModuleKey::File(canonical),
        path.display().to_string(),
        source,
        root,
        root_display,
        &folder,
        options,
    )
}

/// Whether a spec file is Nickel, by its extension.
pub fn is_nickel(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("ncl"))
}

/// The spec a command reads when given none: `./main.star`, else `./main.ncl`.
pub fn default_spec_path() -> PathBuf {
    let star = PathBuf::from("main.star");
    let ncl = PathBuf::from("main.ncl");
    if !star.exists() && ncl.exists() {
        ncl
    } else {
        star
    }
}

/// `root` is the folder no import may leave, resolved and as the user named it.
#[cfg(feature = "nickel")]
fn evaluate_nickel(
    canonical: &Path,
    display: &str,
    text: String,
    root: (&Path, &Path),
    folder: &str,
    budget: EvalBudget,
) -> Result<Spec, LangError> {
    nickel::evaluate(
        nickel::NickelSource {
            canonical: canonical.to_path_buf(),
            display: display.to_owned(),
            text,
            root: root.0.to_path_buf(),
            root_display: root.1.to_path_buf(),
            folder: folder.to_owned(),
        },
        budget,
    )
}

#[cfg(not(feature = "nickel"))]
fn evaluate_nickel(
    _canonical: &Path,
    display: &str,
    _text: String,
    _root: (&Path, &Path),
    _folder: &str,
    _budget: EvalBudget,
) -> Result<Spec, LangError> {
    Err(Diagnostic::new(
        format!("{display} is a Nickel spec, and this tend was built without Nickel (cargo feature `nickel`)"),
        None,
    )
    .into())
}

/// Evaluates spec text that is not on disk (tests, benchmarks). Loads resolve under `root`.
pub fn evaluate_source(
    display: &str,
    source: &str,
    root: &Path,
    options: &EvalOptions,
) -> Result<Spec, LangError> {
    let canonical_root = root.canonicalize().map_err(|source| LangError::Read {
        path: root.to_owned(),
        source,
    })?;
    let folder = canonical_root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if is_nickel(Path::new(display)) {
        return evaluate_nickel(
            &canonical_root.join(display),
            display,
            source.to_owned(),
            (&canonical_root, root),
            &folder,
            options.budget,
        );
    }
    evaluate(
        ModuleKey::File(canonical_root.join(display)),
        display.to_owned(),
        source.to_owned(),
        canonical_root,
        root.to_owned(),
        &folder,
        options,
    )
}

fn evaluate(
    key: ModuleKey,
    display: String,
    source: String,
    root: PathBuf,
    root_display: PathBuf,
    folder: &str,
    options: &EvalOptions,
) -> Result<Spec, LangError> {
    let globals = globals();
    let context = EvalContext::default();
    let loader = Loader {
        root,
        root_display,
        globals: &globals,
        context: &context,
        max_steps: options.max_steps,
        cache: RefCell::new(HashMap::new()),
        loading: RefCell::new(Vec::new()),
    };
    loader.eval_module(key, display, source)?;
    drop(loader);
    let recorded = context.recorder.into_recorded();
    let project = match recorded.project {
        Some((name, _)) => name,
        None => validate::project_name_from_folder(folder),
    };
    let spec = Spec {
        project,
        ports: recorded.ports,
        groups: recorded.groups,
    };
    check(&spec)?;
    Ok(spec)
}

/// Whole-spec checks, reported at the offending group's declaration.
fn check(spec: &Spec) -> Result<(), LangError> {
    let problems: Vec<Diagnostic> = validate::spec(spec)
        .into_iter()
        .map(|p| {
            Diagnostic::new(
                p.error.to_string(),
                spec.groups[p.group_index].origin.clone(),
            )
        })
        .collect();
    if !problems.is_empty() {
        return Err(LangError::Spec(Diagnostics(problems)));
    }
    match GroupGraph::build(spec) {
        Ok(_) => Ok(()),
        Err(GraphError::Cycle { groups }) => {
            let first = groups.first().and_then(|g| spec.group(g));
            let path = groups
                .iter()
                .chain(groups.first())
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" -> ");
            Err(Diagnostic::new(
                format!("dependency cycle: {path}"),
                first.and_then(|g| g.origin.clone()),
            )
            .with_note("help: a group cannot wait for a group that waits for it; remove one depends_on or groups.X read")
            .into())
        }
        Err(other) => Err(Diagnostic::new(other.to_string(), None).into()),
    }
}

#[cfg(test)]
mod tests;

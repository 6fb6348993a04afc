//! Resolving and evaluating modules: the spec, its `load()`s and the stdlib.
//!
//! `@tend//x.star` is the embedded stdlib; `//x.star` is relative to the spec root; any other
//! path is relative to the loading file. No path may leave the root, even through a symlink.
//! Loads are resolved before a module runs, so a bad load points at its `load` statement.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use starlark::codemap::{FileSpan, FileSpanRef};
use starlark::environment::{FrozenModule, Globals, Module};
use starlark::eval::{BeforeStmtFunc, Evaluator, ReturnFileLoader};
use starlark::syntax::{AstModule, Dialect};

use super::diagnostics::{from_starlark, location};
use super::recorder::EvalContext;
use super::stdlib;
use crate::diagnostic::Diagnostic;

/// Why running a module failed.
enum RunError {
    /// The step limit was hit (Starlark gives no location for it).
    StepLimit,
    /// Any other error, already a diagnostic.
    Failed(Diagnostic),
}

/// Where a module comes from; also its cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ModuleKey {
    /// A stdlib module by name.
    Stdlib(String),
    /// A file, by canonical path.
    File(PathBuf),
}

/// Evaluates modules for one spec, sharing the recorder, the globals and a cache.
pub struct Loader<'a> {
    /// The spec root, canonical.
    pub root: PathBuf,
    /// The spec root as the user wrote it, for display.
    pub root_display: PathBuf,
    /// Builtins and the standard Starlark library.
    pub globals: &'a Globals,
    /// What builtins reach: the group recorder, and test settings in a test module.
    pub context: &'a EvalContext,
    /// Step limit per module (function calls and loop iterations).
    pub max_steps: u64,
    /// Modules already evaluated.
    pub cache: RefCell<HashMap<ModuleKey, FrozenModule>>,
    /// Modules being evaluated, to report load cycles.
    pub loading: RefCell<Vec<(ModuleKey, String)>>,
}

/// The Starlark dialect of specs: standard Starlark with f-strings and top-level `if`/`for`.
fn dialect() -> Dialect {
    Dialect {
        enable_f_strings: true,
        enable_top_level_stmt: true,
        ..Dialect::Standard
    }
}

/// Joins and removes `.` and `..` without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                let at_top = out.as_os_str().is_empty() || out.ends_with("..");
                if at_top {
                    out.push("..");
                } else {
                    out.pop();
                }
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

impl Loader<'_> {
    /// Evaluates the module `key` from `source`, shown to the user as `display`.
    pub fn eval_module(
        &self,
        key: ModuleKey,
        display: String,
        source: String,
    ) -> Result<FrozenModule, Diagnostic> {
        if let Some(module) = self.cache.borrow().get(&key) {
            return Ok(module.clone());
        }
        let ast = AstModule::parse(&display, source.clone(), &dialect())
            .map_err(|e| from_starlark(&e))?;
        let loads: Vec<(String, FileSpan)> = ast
            .loads()
            .into_iter()
            .map(|l| (l.module_id.to_owned(), l.span.clone()))
            .collect();
        self.loading
            .borrow_mut()
            .push((key.clone(), display.clone()));
        let result = self.eval_with_loads(ast, &key, &loads, (&display, &source));
        self.loading.borrow_mut().pop();
        let module = result?;
        self.cache.borrow_mut().insert(key, module.clone());
        Ok(module)
    }

    fn eval_with_loads(
        &self,
        ast: AstModule,
        key: &ModuleKey,
        loads: &[(String, FileSpan)],
        (display, source): (&str, &str),
    ) -> Result<FrozenModule, Diagnostic> {
        let mut loaded = Vec::new();
        for (module_id, span) in loads {
            let at = || Some(location(span));
            let (child, child_display, child_source) = self
                .resolve(key, module_id)
                .map_err(|message| Diagnostic::new(message, at()))?;
            if let Some(cycle) = self.cycle_through(&child, &child_display) {
                return Err(Diagnostic::new(format!("load cycle: {cycle}"), at()));
            }
            let module = self.eval_module(child, child_display, child_source)?;
            loaded.push((module_id.clone(), module));
        }
        let modules: HashMap<&str, &FrozenModule> =
            loaded.iter().map(|(id, m)| (id.as_str(), m)).collect();
        let evaluated = self.run(ast, &modules, self.context, None);
        match evaluated {
            Err(RunError::StepLimit) => {
                let last = RefCell::new(None);
                if let Ok(again) = AstModule::parse(display, source.to_owned(), &dialect()) {
                    let scratch = EvalContext::default();
                    let _ = self.run(again, &modules, &scratch, Some(&last));
                }
                Err(Diagnostic::new(
                    format!(
                        "the spec took more than {} steps and was stopped here: is a loop running away?",
                        self.max_steps
                    ),
                    last.into_inner().map(|span| location(&span)),
                )
                .with_note("help: raise the limit with --max-steps if the spec really needs it"))
            }
            Err(RunError::Failed(d)) => Err(d),
            Ok(module) => Ok(module),
        }
    }

    /// Runs one parsed module. With `trace`, remembers the span of the last statement run,
    /// to say where a runaway spec was stopped.
    fn run(
        &self,
        ast: AstModule,
        modules: &HashMap<&str, &FrozenModule>,
        context: &EvalContext,
        trace: Option<&RefCell<Option<FileSpan>>>,
    ) -> Result<FrozenModule, RunError> {
        let file_loader = ReturnFileLoader { modules };
        let remember = |span: FileSpanRef, _: bool, _: &mut Evaluator<'_, '_, '_>| {
            if let Some(cell) = trace {
                *cell.borrow_mut() = Some(span.to_file_span());
            }
        };
        let internal =
            |e: String| RunError::Failed(Diagnostic::new(format!("internal error: {e}"), None));
        Module::with_temp_heap(|module| {
            {
                let mut eval = Evaluator::new(&module);
                eval.set_loader(&file_loader);
                eval.extra = Some(context);
                if trace.is_some() {
                    eval.before_stmt_for_dap(BeforeStmtFunc::Fn(&remember));
                }
                eval.set_max_tick_count(self.max_steps)
                    .map_err(|e| internal(e.to_string()))?;
                eval.eval_module(ast, self.globals).map_err(|e| {
                    if e.to_string().contains("ticks has been exceeded") {
                        RunError::StepLimit
                    } else {
                        RunError::Failed(from_starlark(&e))
                    }
                })?;
            }
            module
                .freeze()
                .map_err(|e| internal(format!("cannot freeze module: {e:?}")))
        })
    }

    /// The chain `a -> b -> a` when `key` is already being loaded.
    fn cycle_through(&self, key: &ModuleKey, display: &str) -> Option<String> {
        let loading = self.loading.borrow();
        let start = loading.iter().position(|(k, _)| k == key)?;
        let mut names: Vec<&str> = loading[start..].iter().map(|(_, d)| d.as_str()).collect();
        names.push(display);
        Some(names.join(" -> "))
    }

    /// Finds the module a `load()` in `from` names: its key, display name and source.
    fn resolve(
        &self,
        from: &ModuleKey,
        module_id: &str,
    ) -> Result<(ModuleKey, String, String), String> {
        if let Some(name) = module_id.strip_prefix("@tend//") {
            return match stdlib::source(name) {
                Some(source) => Ok((
                    ModuleKey::Stdlib(name.to_owned()),
                    module_id.to_owned(),
                    source.to_owned(),
                )),
                None => Err(format!(
                    "no stdlib module {module_id:?}: the stdlib has {}",
                    stdlib::names().join(", ")
                )),
            };
        }
        if module_id.starts_with('@') {
            return Err(format!(
                "cannot load {module_id:?}: only @tend// names a library; use //path for files in the spec root"
            ));
        }
        let relative = match (module_id.strip_prefix("//"), from) {
            (Some(rooted), _) => normalize(Path::new(rooted)),
            (None, ModuleKey::Stdlib(_)) => {
                return Err(format!(
                    "stdlib modules can only load @tend// modules, not {module_id:?}"
                ))
            }
            (None, ModuleKey::File(path)) => {
                let dir = path.parent().unwrap_or(&self.root);
                let inside = dir.strip_prefix(&self.root).unwrap_or(Path::new(""));
                normalize(&inside.join(module_id))
            }
        };
        if relative.is_absolute() || relative.starts_with("..") {
            return Err(format!(
                "cannot load {module_id:?}: it is outside the spec root {}",
                self.root_display.display()
            ));
        }
        let full = self.root.join(&relative);
        let display = self.root_display.join(&relative).display().to_string();
        let canonical = full
            .canonicalize()
            .map_err(|_| format!("cannot load {module_id:?}: no file at {display}"))?;
        if !canonical.starts_with(&self.root) {
            return Err(format!(
                "cannot load {module_id:?}: it resolves outside the spec root {}",
                self.root_display.display()
            ));
        }
        let source = std::fs::read_to_string(&canonical)
            .map_err(|e| format!("cannot load {module_id:?}: cannot read {display}: {e}"))?;
        Ok((ModuleKey::File(canonical), display, source))
    }
}

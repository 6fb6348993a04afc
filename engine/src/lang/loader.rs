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
use starlark::eval::{BeforeStmtFunc, BeforeStmtFuncDyn, Evaluator, ReturnFileLoader};
use starlark::syntax::{AstModule, Dialect};

use super::diagnostics::{from_starlark, location};
use super::recorder::EvalContext;
use super::stdlib;
use crate::diagnostic::Diagnostic;

/// Why running a module failed.
enum RunError {
    /// The step or the memory limit was hit (Starlark gives no location for either).
    Limit(Limit),
    /// Any other error, already a diagnostic.
    Failed(Diagnostic),
}

/// A limit a module ran into.
#[derive(Clone, Copy)]
enum Limit {
    Steps,
    Memory,
}

/// What the memory check says when a module's heap grew past its limit.
const OVER_MEMORY: &str = "tend: the spec's memory limit was reached";

/// Stops a module before a statement once it holds more than `limit` bytes: in its heap,
/// or in what the process took on since it started (a list's items live outside the heap).
/// Starlark checks its own heap limit only every thousand steps, and a loop of a few steps
/// can double a string until it takes the machine.
struct MemoryCheck {
    limit: usize,
    /// The process's resident memory when the module started.
    baseline: u64,
    /// When resident memory is read next (at most every millisecond).
    next_look: std::time::Instant,
}

impl MemoryCheck {
    fn new(limit: usize) -> MemoryCheck {
        MemoryCheck {
            limit,
            baseline: super::resident_bytes(),
            next_look: std::time::Instant::now(),
        }
    }

    /// True when the module took more than its limit.
    fn over(&mut self, heap: usize) -> bool {
        if heap > self.limit {
            return true;
        }
        let now = std::time::Instant::now();
        if now < self.next_look {
            return false;
        }
        self.next_look = now + std::time::Duration::from_millis(1);
        let grown = super::resident_bytes().saturating_sub(self.baseline);
        usize::try_from(grown).unwrap_or(usize::MAX) > self.limit
    }
}

/// The check before each statement, sharing its state with the one after the module.
struct BeforeEach(std::rc::Rc<RefCell<MemoryCheck>>);

impl<'e> BeforeStmtFuncDyn<'e> for BeforeEach {
    fn call<'v>(
        &mut self,
        _span: FileSpanRef,
        _continued: bool,
        eval: &mut Evaluator<'v, '_, 'e>,
    ) -> starlark::Result<()> {
        if self.0.borrow_mut().over(eval.heap().allocated_bytes()) {
            return Err(starlark::Error::new_other(anyhow::anyhow!(OVER_MEMORY)));
        }
        Ok(())
    }
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
    /// Heap limit per module, in bytes.
    pub max_heap: usize,
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
        super::nesting::check(&display, &source, &super::nesting::STARLARK)?;
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
            Err(RunError::Limit(limit)) => {
                let last = RefCell::new(None);
                if let Ok(again) = AstModule::parse(display, source.to_owned(), &dialect()) {
                    let scratch = EvalContext::default();
                    let _ = self.run(again, &modules, &scratch, Some(&last));
                }
                Err(self.over(limit, last.into_inner().map(|span| location(&span))))
            }
            Err(RunError::Failed(d)) => Err(d),
            Ok(module) => Ok(module),
        }
    }

    /// The error of a module stopped by `limit` at `at`.
    fn over(&self, limit: Limit, at: Option<crate::diagnostic::SourceLocation>) -> Diagnostic {
        match limit {
            Limit::Steps => Diagnostic::new(
                format!(
                    "the spec took more than {} steps and was stopped here: is a loop running away?",
                    self.max_steps
                ),
                at,
            )
            .with_note("help: raise the limit with --max-steps if the spec really needs it"),
            Limit::Memory => Diagnostic::new(
                format!(
                    "the spec took more than {} MiB of memory and was stopped here: is a value growing without end?",
                    self.max_heap >> 20
                ),
                at,
            ),
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
                eval.set_max_heap_size(self.max_heap.max(1))
                    .map_err(|e| internal(e.to_string()))?;
                let memory = std::rc::Rc::new(RefCell::new(MemoryCheck::new(self.max_heap)));
                eval.before_stmt_for_dap(BeforeStmtFunc::from_dyn(Box::new(BeforeEach(
                    memory.clone(),
                ))));
                // Within one statement (a comprehension), every thousand steps.
                let every_thousand_steps = memory.clone();
                eval.set_check_cancelled(Box::new(move || {
                    every_thousand_steps
                        .try_borrow_mut()
                        .is_ok_and(|mut m| m.over(0))
                }));
                eval.eval_module(ast, self.globals).map_err(|e| {
                    let text = e.to_string();
                    if text.contains("ticks has been exceeded") {
                        RunError::Limit(Limit::Steps)
                    } else if text.contains(OVER_MEMORY)
                        || text.contains("Heap memory limit")
                        || text.contains("Evaluation cancelled")
                    {
                        RunError::Limit(Limit::Memory)
                    } else {
                        RunError::Failed(from_starlark(&e))
                    }
                })?;
                // The last statement is checked too, before freezing copies what it made.
                let mut memory = memory.borrow_mut();
                memory.next_look = std::time::Instant::now();
                if memory.over(eval.heap().allocated_bytes()) {
                    return Err(RunError::Limit(Limit::Memory));
                }
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

//! Running `*_test.star` files: every top-level `def test_*()` in isolation, each in a
//! fresh evaluation of its file, so no test sees another's state.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use starlark::environment::{Globals, GlobalsBuilder, LibraryExtension, Module};
use starlark::eval::Evaluator;

use super::builtins::test_builtins;
use super::{Snapshots, TestOutcome};
use crate::lang::{from_starlark, tend_builtins, EvalContext, EvalOptions, Loader, ModuleKey};

/// What the test builtins of one test file need.
pub struct TestSettings {
    /// The test file's folder: `spec()` paths are relative to it.
    pub dir: PathBuf,
    /// The same folder, resolved: no `spec()` path may leave it.
    pub root: PathBuf,
    /// The test file's name without `.star`, for snapshot names.
    pub stem: String,
    /// Where snapshots live and whether they may be written.
    pub snapshots: Snapshots,
    /// How specs are evaluated.
    pub options: EvalOptions,
}

fn test_globals() -> Globals {
    GlobalsBuilder::extended_by(&[
        LibraryExtension::StructType,
        LibraryExtension::Json,
        LibraryExtension::Print,
    ])
    .with(tend_builtins)
    .with(test_builtins)
    .build()
}

/// How `tend test` runs files.
#[derive(Clone, Debug)]
pub struct TestRun {
    /// `--update`: rewrite changed snapshots.
    pub update: bool,
    /// `CI=true`: never write snapshots.
    pub ci: bool,
    /// Evaluation limits.
    pub options: EvalOptions,
}

/// Runs every `def test_*()` of the test file at `path`, each in a fresh evaluation.
/// A file that does not load is one failed test named `<load>`.
pub fn run_test_file(path: &Path, run: &TestRun) -> Vec<TestOutcome> {
    let display = path.display().to_string();
    let failed = |name: &str, why: String| TestOutcome {
        file: display.clone(),
        name: name.to_owned(),
        failure: Some(why),
    };
    let Ok(source) = std::fs::read_to_string(path) else {
        return vec![failed("<load>", format!("cannot read {display}"))];
    };
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let root_dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir.clone()
    };
    let (Ok(root), Ok(canonical)) = (root_dir.canonicalize(), path.canonicalize()) else {
        return vec![failed("<load>", format!("cannot resolve {display}"))];
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let globals = test_globals();
    let context = || EvalContext {
        recorder: Default::default(),
        harness: Some(Box::new(TestSettings {
            dir: dir.clone(),
            root: root.clone(),
            stem: stem.clone(),
            snapshots: Snapshots::beside(path, run.update, run.ci),
            options: run.options.clone(),
        })),
    };
    let evaluate = |context: &EvalContext| {
        let loader = Loader {
            root: root.clone(),
            root_display: dir.clone(),
            globals: &globals,
            context,
            max_steps: run.options.max_steps,
            max_heap: usize::try_from(run.options.budget.memory_bytes).unwrap_or(usize::MAX),
            cache: RefCell::new(HashMap::new()),
            loading: RefCell::new(Vec::new()),
        };
        loader.eval_module(
            ModuleKey::File(canonical.clone()),
            display.clone(),
            source.clone(),
        )
    };
    let first = context();
    let module = match evaluate(&first) {
        Ok(m) => m,
        Err(d) => return vec![failed("<load>", d.to_string())],
    };
    let mut names: Vec<String> = module
        .names()
        .map(|n| n.as_str().to_owned())
        .filter(|n| n.starts_with("test_"))
        .filter(|n| {
            module
                .get(n)
                .is_ok_and(|v| v.value().get_type() == "function")
        })
        .collect();
    names.sort();
    let mut outcomes = Vec::new();
    for name in names {
        let context = context();
        let result = evaluate(&context).and_then(|module| {
            let function = module.get(&name).map_err(|e| {
                crate::diagnostic::Diagnostic::new(format!("internal error: {e}"), None)
            })?;
            Module::with_temp_heap(|m| {
                // SAFETY: the module's frozen heap now references the test module's heap, so
                // the function stays alive as long as `m`, which outlives every use below.
                let f = unsafe { function.owned_frozen_value(m.frozen_heap()) }.to_value();
                let mut eval = Evaluator::new(&m);
                eval.extra = Some(&context);
                eval.set_max_tick_count(run.options.max_steps)
                    .map_err(|e| {
                        crate::diagnostic::Diagnostic::new(format!("internal error: {e}"), None)
                    })?;
                let result = eval.eval_function(f, &[], &[]).map(|_| ()).map_err(|e| {
                    let mut d = from_starlark(&e);
                    if d.message.contains("ticks has been exceeded") {
                        d.message = format!(
                            "the test took more than {} steps and was stopped",
                            run.options.max_steps
                        );
                    }
                    d
                });
                drop(eval);
                result
            })
        });
        outcomes.push(TestOutcome {
            file: display.clone(),
            name,
            failure: result.err().map(|d| d.to_string()),
        });
    }
    outcomes
}

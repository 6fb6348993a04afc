//! What several commands share: loading a spec, the state folder, the runtime, providers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::exec::SecretSource;
use engine::fault::Fault;
use engine::graph::GroupGraph;
use engine::lang::{evaluate_file, EvalOptions};
use engine::spec::Spec;
use engine::store::StoreError;

use crate::cli::SpecArgs;
use crate::failure::Failure;

/// Evaluates and checks the spec, and builds its group graph.
pub fn load(args: &SpecArgs) -> Result<(Spec, GroupGraph), Failure> {
    let options = EvalOptions {
        root: args.root.clone(),
        max_steps: args.max_steps,
    };
    let spec = evaluate_file(&args.spec, &options)?;
    let graph = GroupGraph::build(&spec).map_err(|e| Failure::Spec(format!("error: {e}")))?;
    Ok((spec, graph))
}

/// `.tend/` beside the spec, unless given.
pub fn state_dir_for(spec: &Path, given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        spec.parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
            .join(".tend")
    })
}

/// The async runtime the engine runs on.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::Other {
            fault: Fault::Environment,
            message: format!("cannot start the async runtime: {e}"),
        })
}

/// Secrets come from tend's own environment, read when an instance is rendered.
pub fn secrets() -> SecretSource {
    Arc::new(|name: &str| std::env::var(name).ok())
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Other {
            fault: Fault::Environment,
            message: e.to_string(),
        }
    }
}

/// The reconciler's options for `apply` and `destroy` (and, with `Mode::Run`, `run`).
pub fn reconcile_options(
    parallelism: usize,
    mode: engine::reconcile::Mode,
) -> engine::reconcile::Options {
    engine::reconcile::Options {
        exec: engine::exec::ExecOptions {
            parallelism: parallelism.max(1),
            ..engine::exec::ExecOptions::default()
        },
        mode,
    }
}

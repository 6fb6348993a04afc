//! `tend destroy`

use engine::graph::GroupGraph;
use engine::plan::{plan, PlanInput};
use engine::provider::observe;
use engine::spec::Spec;
use engine::store::Store;

use crate::cli::ApplyArgs;
use crate::failure::Failure;

use super::apply::execute;
use super::setup::{load, runtime, state_dir_for};

/// Plans the removal of every instance of the project (dependents first) and runs it.
pub fn run(args: ApplyArgs) -> Result<i32, Failure> {
    let (spec, _) = load(&args.spec)?;
    let state_dir = state_dir_for(&args.spec.spec, args.state_dir.clone());
    let store = Store::new(&state_dir);
    let _lock = store.lock("destroy")?;
    let providers = providers::all(&state_dir);
    let nothing = Spec {
        project: spec.project.clone(),
        groups: Vec::new(),
    };
    let empty_graph =
        GroupGraph::build(&nothing).map_err(|e| Failure::Spec(format!("error: {e}")))?;
    let observed = runtime()?.block_on(observe(&nothing, &providers))?;
    let mut planned = plan(PlanInput {
        spec: &nothing,
        graph: &empty_graph,
        observed: &observed,
        expectations: &[],
        // The spec orders the destroys: dependents go first.
        previous: Some(&spec),
    });
    for action in &mut planned.actions {
        action.reason = "tend destroy removes every instance of the project".to_owned();
    }
    execute(
        &spec, &nothing, &store, providers, planned, &args, "Destroy",
    )
}

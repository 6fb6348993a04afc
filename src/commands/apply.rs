//! `tend apply [SPEC | PLANFILE]`

use engine::controller::report::{self, Phase};
use engine::exec::{groups_to_roll_back, spec_with_previous_templates, ExecOptions, Executor};
use engine::fault::Fault;
use engine::graph::GroupGraph;
use engine::plan::{plan, Plan, PlanInput, SavedPlan};
use engine::provider::{observe, ProviderSet};
use engine::spec::Spec;
use engine::store::{Store, StoreError};

use crate::cli::ApplyArgs;
use crate::failure::Failure;
use crate::progress::{confirm, run_plan};

use super::setup::{load, runtime, secrets, state_dir_for};

fn stale(why: &str) -> Failure {
    Failure::Other {
        fault: Fault::Spec,
        message: format!("the saved plan is stale: {why}; run `tend plan -o` again"),
    }
}

/// Plans (or reads a saved plan), confirms, executes, and records the applied spec.
pub fn run(args: ApplyArgs) -> Result<i32, Failure> {
    let saved = SavedPlan::read(&args.spec.spec).ok();
    let spec_args = match &saved {
        Some(s) => crate::cli::SpecArgs {
            spec: s.spec_path.clone().into(),
            root: args.spec.root.clone(),
            max_steps: args.spec.max_steps,
        },
        None => crate::cli::SpecArgs {
            spec: args.spec.spec.clone(),
            root: args.spec.root.clone(),
            max_steps: args.spec.max_steps,
        },
    };
    let (spec, graph) = load(&spec_args)?;
    if let Some(s) = &saved {
        if s.spec_fingerprint != spec.fingerprint() {
            return Err(stale(&format!(
                "{} changed since the plan was made",
                s.spec_path
            )));
        }
    }
    let state_dir = state_dir_for(&spec_args.spec, args.state_dir.clone());
    let store = Store::new(&state_dir);
    let _lock = match store.lock("apply") {
        Ok(lock) => lock,
        Err(StoreError::Locked { holder }) if holder.command == "run" => {
            if saved.is_some() {
                return Err(Failure::Other {
                    fault: Fault::Spec,
                    message: format!(
                        "`tend run` (pid {}) keeps this project: apply the spec, not a saved plan",
                        holder.pid
                    ),
                });
            }
            return hand_over(&spec, &store, &state_dir, holder.pid);
        }
        Err(e) => return Err(e.into()),
    };
    let providers = providers::all(&state_dir);
    let rt = runtime()?;
    let observed = rt.block_on(observe(&spec, &providers))?;
    let planned = match saved {
        Some(s) => {
            if s.observed_fingerprint != observed.fingerprint() {
                return Err(stale(
                    "the running instances changed since the plan was made",
                ));
            }
            s.plan
        }
        None => {
            let previous = store.last_applied()?.map(|a| a.spec);
            plan(PlanInput {
                spec: &spec,
                graph: &graph,
                observed: &observed,
                expectations: &[],
                previous: previous.as_ref(),
            })
        }
    };
    execute(&spec, &spec, &store, providers, planned, &args, "Apply")
}

/// While `tend run` keeps the project, apply never acts beside it: it commits the spec to
/// the store and waits until the controller reports that serial converged or failing.
fn hand_over(
    spec: &Spec,
    store: &Store,
    state_dir: &std::path::Path,
    pid: u32,
) -> Result<i32, Failure> {
    let applied = store.commit(spec)?;
    println!(
        "`tend run` (pid {pid}) keeps this project: handed it serial {}; waiting for it to converge.",
        applied.serial
    );
    let mut last = None;
    loop {
        let Some(report) = report::read(state_dir) else {
            return Err(Failure::Other {
                fault: Fault::Environment,
                message: "`tend run` stopped before it converged; run `tend apply` again"
                    .to_owned(),
            });
        };
        if report.serial >= applied.serial {
            if last != Some(report.phase) {
                println!("controller: {:?}", report.phase);
                last = Some(report.phase);
            }
            match report.phase {
                Phase::Converged => {
                    println!("Serial {} converged.", applied.serial);
                    return Ok(0);
                }
                Phase::Failing => {
                    for (group, why) in &report.failing {
                        println!("group {group} is failing: {why}");
                    }
                    return Ok(1);
                }
                Phase::Working => {}
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// After a failed rolling update with `on_failure = "rollback"`, puts the failed groups back
/// to the last applied version. Returns true when it ran and succeeded.
fn roll_back(
    spec: &Spec,
    store: &Store,
    providers: &ProviderSet,
    planned: &Plan,
    report: &engine::exec::ExecReport,
    options: &ExecOptions,
) -> Result<bool, Failure> {
    let previous = store.last_applied()?.map(|a| a.spec);
    let groups = groups_to_roll_back(spec, previous.as_ref(), planned, report);
    let Some(previous) = previous.filter(|_| !groups.is_empty()) else {
        return Ok(false);
    };
    println!(
        "
Rolling back {} to the last applied version.",
        groups.join(", ")
    );
    let rolled = spec_with_previous_templates(spec, &previous, &groups);
    let graph = GroupGraph::build(&rolled).map_err(|e| Failure::Spec(format!("error: {e}")))?;
    let rt = runtime()?;
    let observed = rt.block_on(observe(&rolled, providers))?;
    let mut back = plan(PlanInput {
        spec: &rolled,
        graph: &graph,
        observed: &observed,
        expectations: &[],
        previous: None,
    });
    // Only the failed groups move.
    back.retain(|a| groups.contains(&a.group));
    let executor = Executor::new(rolled, providers.clone(), options.clone(), secrets());
    let report = rt.block_on(run_plan(&executor, &back, "Rollback"));
    Ok(report.succeeded())
}

/// Prints the plan, asks, runs it with `spec` (which knows drain hooks and templates), and
/// commits `commit` when every action succeeded.
pub fn execute(
    spec: &Spec,
    commit: &Spec,
    store: &Store,
    providers: ProviderSet,
    planned: Plan,
    args: &ApplyArgs,
    verb: &str,
) -> Result<i32, Failure> {
    print!("{}", planned.to_text());
    if planned.is_empty() {
        store.commit(commit)?;
        return Ok(0);
    }
    let question = format!(
        "\n{verb} these {} actions to project {:?}?",
        planned.actions.len(),
        spec.project
    );
    match confirm(&question, args.yes) {
        Ok(true) => {}
        Ok(false) => {
            println!("{verb} cancelled.");
            return Ok(1);
        }
        Err(message) => {
            return Err(Failure::Other {
                fault: Fault::Spec,
                message,
            })
        }
    }
    println!();
    let options = ExecOptions {
        parallelism: args.parallelism.max(1),
        ..ExecOptions::default()
    };
    let executor = Executor::new(spec.clone(), providers.clone(), options.clone(), secrets());
    let report = runtime()?.block_on(run_plan(&executor, &planned, verb));
    if report.succeeded() {
        store.commit(commit)?;
        Ok(0)
    } else {
        roll_back(spec, store, &providers, &planned, &report, &options)?;
        Ok(1)
    }
}

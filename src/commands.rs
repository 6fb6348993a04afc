//! One function per command: read the spec, call the engine, print.

use std::path::{Path, PathBuf};

use engine::graph::GroupGraph;
use engine::lang::{evaluate_file, EvalOptions};
use engine::plan::{plan, PlanInput, SavedPlan};
use engine::provider::observe;
use engine::spec::Spec;

use crate::cli::{Cli, Command, GraphFormat, SpecArgs};
use crate::failure::Failure;

/// Runs a command; returns the exit status.
pub fn run(cli: Cli) -> Result<i32, Failure> {
    match cli.command {
        Command::Validate { spec, json } => validate(&spec, json),
        Command::Plan {
            spec,
            json,
            out,
            detailed_exitcode,
            state_dir,
        } => plan_command(&spec, json, out.as_deref(), detailed_exitcode, state_dir),
        Command::Graph { spec, format } => graph(&spec, format),
    }
}

fn load(args: &SpecArgs) -> Result<(Spec, GroupGraph), Failure> {
    let options = EvalOptions {
        root: args.root.clone(),
        max_steps: args.max_steps,
    };
    let spec = evaluate_file(&args.spec, &options)?;
    let graph = GroupGraph::build(&spec).map_err(|e| Failure::Spec(format!("error: {e}")))?;
    Ok((spec, graph))
}

fn validate(args: &SpecArgs, json: bool) -> Result<i32, Failure> {
    let (spec, graph) = load(args)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&spec).unwrap_or_default()
        );
    } else {
        let instances: usize = spec.groups.iter().map(|g| g.allocation.len()).sum();
        println!(
            "{} is valid: project {:?}, {} groups, {} instances; order: {}",
            args.spec.display(),
            spec.project,
            spec.groups.len(),
            instances,
            graph.order().join(", ")
        );
    }
    Ok(0)
}

/// `.tend/` beside the spec, unless given.
fn state_dir_for(spec: &Path, given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        spec.parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
            .join(".tend")
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Other {
            fault: engine::fault::Fault::Environment,
            message: format!("cannot start the async runtime: {e}"),
        })
}

fn plan_command(
    args: &SpecArgs,
    json: bool,
    out: Option<&Path>,
    detailed_exitcode: bool,
    state_dir: Option<PathBuf>,
) -> Result<i32, Failure> {
    let (spec, graph) = load(args)?;
    let providers = providers::all(&state_dir_for(&args.spec, state_dir));
    let observed = runtime()?.block_on(observe(&spec, &providers))?;
    let planned = plan(PlanInput {
        spec: &spec,
        graph: &graph,
        observed: &observed,
        expectations: &[],
        previous: None,
    });
    if json {
        println!("{}", planned.to_json());
    } else {
        print!("{}", planned.to_text());
    }
    if let Some(path) = out {
        let saved = SavedPlan {
            format: engine::plan::SAVED_PLAN_FORMAT,
            tend_version: env!("CARGO_PKG_VERSION").to_owned(),
            spec_path: args.spec.display().to_string(),
            spec_fingerprint: spec.fingerprint(),
            observed_fingerprint: observed.fingerprint(),
            spec,
            plan: planned.clone(),
        };
        saved.write(path)?;
        if !json {
            println!("Saved the plan to {}.", path.display());
        }
    }
    Ok(if detailed_exitcode && !planned.is_empty() {
        2
    } else {
        0
    })
}

fn graph(args: &SpecArgs, format: GraphFormat) -> Result<i32, Failure> {
    let (_, graph) = load(args)?;
    match format {
        GraphFormat::Dot => print!("{}", graph.to_dot()),
        GraphFormat::Mermaid => print!("{}", graph.to_mermaid()),
    }
    Ok(0)
}

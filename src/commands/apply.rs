//! `tend apply [SPEC | PLANFILE]`

use engine::fault::Fault;
use engine::plan::{Plan, SavedPlan, SavedPlanError};
use engine::reconcile::Preview;
use engine::spec::Spec;
use engine::store::StoreError;

use crate::cli::ApplyArgs;
use crate::failure::Failure;
use crate::progress::confirm;

use super::handover::hand_over;
use super::setup::{
    fenced, load, look, open_store, providers_for, runtime, Closing, Drive, OnCtrlC,
};

/// A saved plan that no longer matches: the command asked for it, so it is a usage error
/// whose help is the message's own (plan again).
fn stale(why: &str) -> Failure {
    Failure::Other {
        fault: Fault::Usage,
        message: format!("the saved plan is stale: {why}; run `tend plan -o` again"),
    }
}

/// Plans (or reads a saved plan), confirms, records the spec, and keeps the project until
/// it converges or nothing more can be done. While `tend run` keeps the project, hands it
/// the spec instead and follows it.
pub fn run(args: ApplyArgs) -> Result<i32, Failure> {
    // A file that is not a saved plan is a spec; a plan saved by another tend, or one
    // that does not read, is refused.
    let saved = match SavedPlan::read(&args.spec.spec) {
        Ok(saved) => Some(saved),
        Err(e @ (SavedPlanError::OtherFormat { .. } | SavedPlanError::Damaged { .. })) => {
            return Err(e.into())
        }
        Err(_) => None,
    };
    let spec_args = crate::cli::SpecArgs {
        spec: match &saved {
            Some(s) => s.spec_path.clone().into(),
            None => args.spec.spec.clone(),
        },
        root: args.spec.root.clone(),
        max_steps: args.spec.max_steps,
    };
    let (spec, _) = load(&spec_args)?;
    if let Some(s) = &saved {
        if s.spec_fingerprint != spec.fingerprint() {
            return Err(stale(&format!(
                "{} changed since the plan was made",
                s.spec_path
            )));
        }
    }
    let (state_dir, store) = open_store(&spec_args.spec, &args.store, &spec)?;
    let lock = match store.take("apply") {
        Ok(lock) => lock,
        Err(StoreError::Locked {
            holder: Some(holder),
        }) if holder.command == "run" => {
            if saved.is_some() {
                return Err(Failure::Other {
                    fault: Fault::Usage,
                    message: format!(
                        "{} keeps this project: apply the spec, not a saved plan",
                        holder.who()
                    ),
                });
            }
            if let Some(range) = args.ports {
                tracing::warn!(
                    "--ports {range} is not used: {} gives ports from its own range (its --ports, else the spec's project(ports = ...))",
                    holder.who()
                );
            }
            return hand_over(&spec, &store, &state_dir, &holder, &args);
        }
        Err(e) => return Err(e.into()),
    };
    let previous: Vec<Spec> = store.last_applied()?.map(|a| a.spec).into_iter().collect();
    let providers = fenced(
        providers_for(&spec_args.spec, &state_dir, &spec, &previous),
        &lock,
    );
    let rt = runtime()?;
    let _closing = Closing::new(&rt, &providers);
    let look = look(&rt, &spec, &previous, &store, &providers, OnCtrlC::Default)?;
    let planned = match &saved {
        Some(s) if s.observed_fingerprint != look.observed.fingerprint() => {
            return Err(stale(
                "the running instances changed since the plan was made",
            ));
        }
        Some(s) => s.plan.clone(),
        None => look.plan.clone(),
    };
    crate::out!("{}", planned.to_text());
    if nothing_to_do(&planned, &look) {
        store.commit(&spec)?;
        return Ok(0);
    }
    if !planned.is_empty() && !ask(&planned, &spec, "Apply", args.yes)? {
        return Ok(1);
    }
    crate::outln!();
    let applied = store.commit(&spec)?;
    Drive {
        spec,
        serial: applied.serial,
        previous,
        store: &store,
        providers,
        parallelism: args.parallelism,
        ports: args.ports,
        planned: &planned,
        verb: "Apply",
    }
    .run(&rt)
}

/// True when the look shows the project converged: no action, nothing held, every live
/// instance serving.
pub fn nothing_to_do(planned: &Plan, look: &Preview) -> bool {
    planned.is_empty()
        && planned.held.is_empty()
        && look
            .observed
            .iter()
            .all(|(_, i)| i.state == engine::provider::InstanceState::Running)
}

/// Asks before acting; false when the answer is no.
pub fn ask(planned: &Plan, spec: &Spec, verb: &str, yes: bool) -> Result<bool, Failure> {
    let question = format!(
        "\n{verb} these {} actions to project {:?}?",
        planned.actions.len(),
        spec.project
    );
    match confirm(&question, yes) {
        Ok(true) => Ok(true),
        Ok(false) => {
            crate::outln!("{verb} cancelled.");
            Ok(false)
        }
        Err(message) => Err(Failure::Other {
            fault: Fault::Usage,
            message,
        }),
    }
}

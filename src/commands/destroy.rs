//! `tend destroy`

use engine::spec::Spec;

use crate::cli::ApplyArgs;
use crate::failure::Failure;

use super::apply::ask;
use super::setup::{load, look, open_store, providers_for, runtime, Closing, Drive, OnCtrlC};

/// Removes every instance of the project, dependents first, through the same reconciler as
/// `apply`. Every provider that the spec or the last applied spec uses must answer: an
/// engine that is down is an error, never "no changes".
pub fn run(args: ApplyArgs) -> Result<i32, Failure> {
    let (spec, _) = load(&args.spec)?;
    let (state_dir, store) = open_store(&args.spec.spec, &args.store, &spec)?;
    let lock = store.take("destroy")?;
    let nothing = Spec {
        ports: None,
        project: spec.project.clone(),
        groups: Vec::new(),
    };
    // The spec orders the destroys (dependents first); the last applied spec names where
    // else instances may be.
    let mut previous = vec![spec.clone()];
    previous.extend(store.last_applied()?.map(|a| a.spec));
    let providers = super::setup::fenced(
        providers_for(&args.spec.spec, &state_dir, &nothing, &previous),
        &lock,
    );
    let rt = runtime()?;
    let _closing = Closing::new(&rt, &providers);
    let look = look(
        &rt,
        &nothing,
        &previous,
        &store,
        &providers,
        OnCtrlC::Default,
    )?;
    let mut planned = look.plan;
    for action in &mut planned.actions {
        action.reason = "tend destroy removes every instance of the project".to_owned();
    }
    crate::out!("{}", planned.to_text());
    if planned.is_empty() {
        store.commit(&nothing)?;
        return Ok(0);
    }
    if !ask(&planned, &spec, "Destroy", args.yes)? {
        return Ok(1);
    }
    crate::outln!();
    let applied = store.commit(&nothing)?;
    Drive {
        spec: nothing,
        serial: applied.serial,
        previous,
        store: &store,
        providers,
        parallelism: args.parallelism,
        ports: args.ports,
        planned: &planned,
        verb: "Destroy",
    }
    .run(&rt)
}

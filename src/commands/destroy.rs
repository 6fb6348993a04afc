//! `tend destroy`

use engine::clock::Clock;
use engine::reconcile::{preview, Mode, Reconciler};
use engine::spec::Spec;
use engine::store::Store;

use crate::cli::ApplyArgs;
use crate::failure::Failure;
use crate::progress::{printer, run_to_end};

use super::apply::ask;
use super::setup::{load, reconcile_options, runtime, secrets, state_dir_for};

/// Removes every instance of the project, dependents first, through the same reconciler as
/// `apply`. Every provider that the spec or the last applied spec uses must answer: an
/// engine that is down is an error, never "no changes".
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
    // The spec orders the destroys (dependents first); the last applied spec names where
    // else instances may be.
    let mut previous = vec![spec.clone()];
    previous.extend(store.last_applied()?.map(|a| a.spec));
    let rt = runtime()?;
    let look = rt.block_on(preview(
        &nothing,
        &previous,
        &providers,
        &secrets(),
        &Clock::real(),
    ))?;
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
    let (events, tally) = printer(planned.actions.len());
    rt.block_on(async {
        let mut reconciler = Reconciler::new(
            nothing,
            applied.serial,
            previous,
            store.clone(),
            providers,
            secrets(),
            Clock::real(),
            reconcile_options(args.parallelism, Mode::Apply),
            events,
        )?;
        run_to_end(&mut reconciler, &tally, "Destroy").await
    })
}

//! `tend plan`

use std::path::Path;

use engine::plan::{SavedPlan, SAVED_PLAN_FORMAT};

use crate::cli::{SpecArgs, StoreArgs};
use crate::failure::Failure;

use super::setup::{load, look, open_store, providers_for, runtime, Closing, OnCtrlC};

/// Plans, prints, and optionally saves the plan.
pub fn run(
    args: &SpecArgs,
    json: bool,
    out: Option<&Path>,
    detailed_exitcode: bool,
    store: &StoreArgs,
) -> Result<i32, Failure> {
    let (spec, _) = load(args)?;
    let (state_dir, store) = open_store(&args.spec, store, &spec)?;
    let previous: Vec<_> = store.last_applied()?.map(|a| a.spec).into_iter().collect();
    let providers = providers_for(&args.spec, &state_dir, &spec, &previous);
    let rt = runtime()?;
    let _closing = Closing::new(&rt, &providers);
    let look = look(&rt, &spec, &previous, &store, &providers, OnCtrlC::EndsLook)?;
    let planned = look.plan;
    if json {
        crate::outln!("{}", planned.to_json());
    } else {
        crate::out!("{}", planned.to_text());
    }
    if let Some(path) = out {
        let saved = SavedPlan {
            format: SAVED_PLAN_FORMAT,
            tend_version: env!("CARGO_PKG_VERSION").to_owned(),
            spec_path: args.spec.display().to_string(),
            spec_fingerprint: spec.fingerprint(),
            observed_fingerprint: look.observed.fingerprint(),
            spec,
            plan: planned.clone(),
        };
        saved.write(path)?;
        if !json {
            crate::outln!("Saved the plan to {}.", path.display());
        }
    }
    Ok(
        if detailed_exitcode && (!planned.is_empty() || !planned.held.is_empty()) {
            2
        } else {
            0
        },
    )
}

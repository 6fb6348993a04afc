//! `tend status`

use std::path::PathBuf;

use engine::provider::observe;
use engine::store::Store;

use crate::cli::SpecArgs;
use crate::failure::Failure;

use super::setup::{load, runtime, secrets, state_dir_for};

/// Shows what runs for the project, judged against the spec. While `tend run` holds the
/// project, its view (failing groups, backoffs) is shown too.
pub fn run(args: &SpecArgs, json: bool, state_dir: Option<PathBuf>) -> Result<i32, Failure> {
    let (spec, _) = load(args)?;
    let state_dir = state_dir_for(&args.spec, state_dir);
    let store = Store::new(&state_dir);
    let applied = store.last_applied()?;
    let providers = providers::all(&state_dir);
    let secret = secrets();
    let mut status = runtime()?.block_on(async {
        let observed = observe(&spec, &providers).await?;
        Ok::<_, engine::provider::ProviderError>(
            engine::status::build(&spec, &observed, applied.as_ref(), &secret).await,
        )
    })?;
    if let Some(controller) = engine::controller::report::read(&state_dir) {
        controller.annotate(&mut status);
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
    } else {
        print!("{}", status.to_text());
    }
    Ok(0)
}

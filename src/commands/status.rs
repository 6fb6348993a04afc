//! `tend status`

use crate::cli::{SpecArgs, StoreArgs};
use crate::failure::Failure;

use super::setup::{load, look, open_store, providers_for, runtime, Closing, OnCtrlC};

/// Shows what runs for the project, judged against the spec: each instance probed once
/// with its own checks, failed rollouts from the store, and, while `tend run` holds the
/// project, its view (phases, failing groups, backoffs).
pub fn run(args: &SpecArgs, json: bool, store: &StoreArgs) -> Result<i32, Failure> {
    let (spec, _) = load(args)?;
    let (state_dir, store) = open_store(&args.spec, store, &spec)?;
    let applied = store.last_applied()?;
    let previous: Vec<_> = applied.iter().map(|a| a.spec.clone()).collect();
    let providers = providers_for(&args.spec, &state_dir, &spec, &previous);
    let rt = runtime()?;
    let _closing = Closing::new(&rt, &providers);
    let look = look(&rt, &spec, &previous, &store, &providers, OnCtrlC::EndsLook)?;
    let mut status = engine::status::build(&spec, &look.observed, applied.as_ref(), &|id| {
        look.health.get(id).cloned()
    });
    status.note_failed_rollouts(&store.failed_rollouts()?);
    if let Some(controller) = engine::controller::report::read(&store) {
        controller.annotate(&mut status);
    }
    status.replicas = engine::controller::replicas::shown(&store)?;
    status.tools = rt.block_on(tools(&spec, &providers));
    if json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
    } else {
        crate::out!("{}", status.to_text());
    }
    Ok(0)
}

/// What the tools the spec's providers drive are: each provider's own word on it.
async fn tools(
    spec: &engine::spec::Spec,
    providers: &engine::provider::ProviderSet,
) -> std::collections::BTreeMap<String, String> {
    let mut kinds: Vec<&str> = spec
        .groups
        .iter()
        .map(|g| g.provider.kind.as_str())
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut tools = std::collections::BTreeMap::new();
    for kind in kinds {
        if let Ok(provider) = providers.get(kind) {
            if let Some(about) = provider.about().await {
                tools.insert(kind.to_owned(), about);
            }
        }
    }
    tools
}

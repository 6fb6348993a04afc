//! Looking once: what `tend plan`, `tend apply` (before it asks) and `tend destroy` show.
//! The same observe, the same health judgement (one probe per instance) and the same
//! planner as a round; nothing is started. A view that misses a provider which may hold the
//! project's instances is an error, never "no changes".

use std::collections::BTreeMap;

use crate::clock::Clock;
use crate::exec::{Catalog, SecretSource};
use crate::graph::GroupGraph;
use crate::plan::{plan, Plan, PlanInput};
use crate::provider::{observe, InstanceState, Observed, PartialView, ProviderError, ProviderSet};
use crate::spec::{Spec, SpecHash};
use crate::store::FailedRollout;

use super::monitor::Monitor;
use super::rollouts;

/// Why a preview failed.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// The spec names a provider this build lacks, or settings it refuses.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// A provider that may hold instances of the project did not answer.
    #[error(transparent)]
    Partial(#[from] PartialView),
    /// The spec's groups form a cycle.
    #[error("{0}")]
    Graph(String),
}

/// What a look showed.
#[derive(Clone, Debug)]
pub struct Preview {
    /// Every instance of the project, with health judged into its state.
    pub observed: Observed,
    /// The plan that makes it match the spec.
    pub plan: Plan,
    /// The last probe error of each instance that fails its checks.
    pub health: std::collections::BTreeMap<String, String>,
}

/// Observes the project (every provider that `spec` or a `previous` spec uses must answer),
/// probes each live instance with the checks of its own version until it has a verdict,
/// and plans as a round would: groups whose rollout `failed` (from the store) stay paused
/// or rolled back while that still holds for `spec`.
pub async fn preview(
    spec: &Spec,
    previous: &[Spec],
    failed: BTreeMap<String, FailedRollout>,
    providers: &ProviderSet,
    secret: &SecretSource,
    clock: &Clock,
) -> Result<Preview, PreviewError> {
    let failed = rollouts::still_holding(spec, failed);
    let kept = rollouts::effective(spec, &failed);
    let graph = GroupGraph::build(&kept).map_err(|e| PreviewError::Graph(e.to_string()))?;
    let mut observed = observe(spec, previous, providers).await?.complete()?;
    let catalog = rollouts::catalog(&kept, spec, previous, &failed);
    let mut monitor = Monitor::default();
    monitor.sync(&observed, &catalog, secret, &Default::default(), providers);
    monitor.probe_all(providers, clock).await;
    monitor.judge(&mut observed);
    let mut paused = rollouts::paused(spec, &kept, &failed, &catalog);
    for (group, p) in paused.iter_mut() {
        p.serving = serving_versions(&observed, group, &p.failed, &catalog);
    }
    let planned = plan(PlanInput {
        previous: previous.first(),
        paused: &paused,
        ..PlanInput::new(&kept, &graph, &observed)
    });
    let health = observed
        .iter()
        .filter_map(|(_, i)| Some((i.id.clone(), monitor.last_error(&i.id)?.to_owned())))
        .collect();
    Ok(Preview {
        observed,
        plan: planned,
        health,
    })
}

/// The versions of `group` that its running (healthy) instances have, most common first,
/// other than `failed` and known to `catalog`: what a paused group is made from.
fn serving_versions(
    observed: &Observed,
    group: &str,
    failed: &SpecHash,
    catalog: &Catalog,
) -> Vec<SpecHash> {
    let mut counts: BTreeMap<SpecHash, usize> = BTreeMap::new();
    for (_, i) in observed.iter() {
        if i.tags.group == group && i.state == InstanceState::Running {
            *counts.entry(SpecHash::from_tag(&i.tags.hash)).or_default() += 1;
        }
    }
    let mut versions: Vec<(SpecHash, usize)> = counts
        .into_iter()
        .filter(|(h, _)| h != failed && catalog.knows(group, h))
        .collect();
    versions.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    versions.into_iter().map(|(h, _)| h).collect()
}

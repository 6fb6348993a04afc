//! Looking once: what `tend plan`, `tend apply` (before it asks) and `tend destroy` show.
//! The same observe, the same health judgement (one probe per instance) and the same
//! planner as a round; nothing is started. A view that misses a provider which may hold the
//! project's instances is an error, never "no changes".

use crate::clock::Clock;
use crate::exec::{Catalog, SecretSource};
use crate::graph::GroupGraph;
use crate::plan::{plan, Plan, PlanInput};
use crate::provider::{observe, Observed, PartialView, ProviderError, ProviderSet};
use crate::spec::Spec;

use super::monitor::Monitor;

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

/// Observes the project (every provider that `spec` or a `previous` spec uses must answer), probes
/// each live instance once with the checks of its own version, and plans.
pub async fn preview(
    spec: &Spec,
    previous: &[Spec],
    providers: &ProviderSet,
    secret: &SecretSource,
    clock: &Clock,
) -> Result<Preview, PreviewError> {
    let graph = GroupGraph::build(spec).map_err(|e| PreviewError::Graph(e.to_string()))?;
    let mut observed = observe(spec, previous, providers).await?.complete()?;
    let mut catalog = Catalog::new(spec.clone());
    for p in previous {
        catalog.remember(p);
    }
    let mut monitor = Monitor::default();
    monitor.sync(&observed, &catalog, secret, &Default::default());
    monitor.probe_all(providers, clock).await;
    monitor.judge(&mut observed);
    let planned = plan(PlanInput {
        previous: previous.first(),
        ..PlanInput::new(spec, &graph, &observed)
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

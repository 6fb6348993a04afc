//! `on_failure = "rollback"`: which groups to put back, and the spec that puts them back.

use std::collections::BTreeSet;

use super::{ExecReport, Outcome};
use crate::plan::{ActionKind, Plan};
use crate::spec::{OnFailure, Spec, SpecHash, UpdatePolicy};

/// Groups whose rolling update failed and asked to be rolled back, and that `previous`
/// knows in another version.
pub fn groups_to_roll_back(
    spec: &Spec,
    previous: Option<&Spec>,
    plan: &Plan,
    report: &ExecReport,
) -> Vec<String> {
    let Some(previous) = previous else {
        return Vec::new();
    };
    let failed: BTreeSet<&str> = plan
        .actions
        .iter()
        .zip(&report.outcomes)
        .filter(|(a, o)| a.action == ActionKind::Replace && matches!(o, Outcome::Failed { .. }))
        .map(|(a, _)| a.group.as_str())
        .collect();
    failed
        .into_iter()
        .filter(|name| {
            let asks = spec.group(name).is_some_and(|g| {
                matches!(&g.update, UpdatePolicy::Rolling(r) if r.on_failure == OnFailure::Rollback)
            });
            let differs = match (spec.group(name), previous.group(name)) {
                (Some(now), Some(before)) => SpecHash::of(now) != SpecHash::of(before),
                _ => false,
            };
            asks && differs
        })
        .map(str::to_owned)
        .collect()
}

/// `spec` with the instance templates (provider and flavor) of `groups` taken from
/// `previous`: planning it replaces the new instances with the previous version.
pub fn spec_with_previous_templates(spec: &Spec, previous: &Spec, groups: &[String]) -> Spec {
    let mut rolled = spec.clone();
    for group in rolled
        .groups
        .iter_mut()
        .filter(|g| groups.contains(&g.name))
    {
        if let Some(before) = previous.group(&group.name) {
            group.provider = before.provider.clone();
            group.flavor = before.flavor.clone();
            group.reads_groups = before.reads_groups.clone();
        }
    }
    rolled
}

//! Failed rollouts: what a group is kept at after a batch of its rollout failed.
//!
//! With `on_failure = "pause"` the group keeps the spec's version but makes no progress;
//! with `"rollback"` its instances are made from the previous version again (found in the
//! store's history) until the group's spec changes. Both are recorded in the store, so a
//! restarted controller and the next `tend status` see them.

use std::collections::BTreeMap;

use crate::exec::Catalog;
use crate::plan::Paused;
use crate::spec::{OnFailure, Spec, SpecHash, UpdatePolicy};
use crate::store::{FailedRollout, Store, Version};

/// How many applied versions back the version before a failed one is looked for.
const HISTORY_DEPTH: usize = 50;

/// The spec as it is kept: groups that rolled back are made from their previous version.
pub fn effective(spec: &Spec, failed: &BTreeMap<String, FailedRollout>) -> Spec {
    let mut kept = spec.clone();
    for group in &mut kept.groups {
        let Some(f) = failed.get(&group.name) else {
            continue;
        };
        if let (true, Some(before)) = (f.holds(&SpecHash::of(group)), f.rolled_back_to()) {
            *group = group.with_template(&before.template);
        }
    }
    kept
}

/// The groups that make no progress: paused ones, and rolled back ones whose rollback
/// failed too. `kept` is the effective spec.
pub fn paused(
    spec: &Spec,
    kept: &Spec,
    failed: &BTreeMap<String, FailedRollout>,
    catalog: &Catalog,
) -> BTreeMap<String, Paused> {
    let mut out = BTreeMap::new();
    for group in &spec.groups {
        let Some(f) = failed.get(&group.name) else {
            continue;
        };
        if !f.holds(&SpecHash::of(group)) {
            continue;
        }
        let (Some(reason), Some(kept_group)) = (f.paused_because(), kept.group(&group.name)) else {
            continue;
        };
        let hash = SpecHash::of(kept_group);
        out.insert(
            group.name.clone(),
            Paused {
                fallback: f
                    .previous
                    .as_ref()
                    .map(|v| v.hash.clone())
                    .filter(|h| *h != hash),
                hash,
                failed: f.hash.clone(),
                reason,
                known: catalog.hashes(&group.name),
                serving: Vec::new(),
            },
        );
    }
    out
}

/// Failed rollouts that still hold for `spec`; the others are forgotten.
pub fn still_holding(
    spec: &Spec,
    failed: BTreeMap<String, FailedRollout>,
) -> BTreeMap<String, FailedRollout> {
    failed
        .into_iter()
        .filter(|(name, f)| spec.group(name).is_some_and(|g| f.holds(&SpecHash::of(g))))
        .collect()
}

/// What happens to `group` when a batch of its rollout failed with `reason`: a new failed
/// rollout, or the rollback itself failing. With `on_failure = "rollback"` the group goes
/// back to `serving`, the version its instances served stably with before; without one
/// it pauses (a version that was crashing is no place to go back to). `None` when the
/// failure is of a version the spec no longer asks for.
#[allow(clippy::too_many_arguments)]
pub fn on_batch_failed(
    spec: &Spec,
    serial: u64,
    failed: &BTreeMap<String, FailedRollout>,
    store: &Store,
    group: &str,
    made: &SpecHash,
    serving: Option<Version>,
    reason: &str,
    at_ms: u64,
) -> Option<FailedRollout> {
    let wanted = spec.group(group)?;
    let hash = SpecHash::of(wanted);
    if let Some(existing) = failed.get(group).filter(|f| f.holds(&hash)) {
        // The rollback's own replacement failed: stay where it is.
        return match existing.rolled_back_to() {
            Some(before) if before.hash == *made && existing.rollback_failed.is_none() => {
                let mut again = existing.clone();
                again.rollback_failed = Some(reason.to_owned());
                Some(again)
            }
            _ => None,
        };
    }
    if *made != hash {
        return None;
    }
    let serving = serving.filter(|v| v.hash != hash);
    let rolled_back = serving.is_some()
        && matches!(&wanted.update, UpdatePolicy::Rolling(r) if r.on_failure == OnFailure::Rollback);
    // Without a stable version, the newest other one from history still fills empty slots
    // of the paused group.
    let previous = serving.or_else(|| previous_version(store, serial, group, &hash));
    Some(FailedRollout {
        hash,
        serial,
        reason: reason.to_owned(),
        at_ms,
        previous,
        rolled_back,
        rollback_failed: None,
    })
}

/// Templates of the versions `wanted` (group, hash) found in the store's history, newest
/// first, looking back at most [`HISTORY_DEPTH`] applied versions.
pub fn find_versions(
    store: &Store,
    wanted: &std::collections::BTreeSet<(String, SpecHash)>,
) -> Vec<(String, Version)> {
    let mut found = Vec::new();
    let mut missing = wanted.clone();
    for serial in store.history().into_iter().rev().take(HISTORY_DEPTH) {
        if missing.is_empty() {
            break;
        }
        let Ok(Some(applied)) = store.applied(serial) else {
            continue;
        };
        for group in &applied.spec.groups {
            let key = (group.name.clone(), SpecHash::of(group));
            if missing.remove(&key) {
                found.push((
                    key.0,
                    Version {
                        hash: key.1,
                        template: group.template(),
                    },
                ));
            }
        }
    }
    found
}

/// The newest version of `group` in the store's history, up to `serial`, whose hash is
/// not `current`.
fn previous_version(
    store: &Store,
    serial: u64,
    group: &str,
    current: &SpecHash,
) -> Option<Version> {
    store
        .history()
        .into_iter()
        .rev()
        .filter(|s| *s <= serial)
        .take(HISTORY_DEPTH)
        .find_map(|s| {
            let applied = store.applied(s).ok().flatten()?;
            let before = applied.spec.group(group)?;
            let hash = SpecHash::of(before);
            (hash != *current).then(|| Version {
                hash,
                template: before.template(),
            })
        })
}

/// A catalog of `kept` that also knows the versions of the last applied specs and the
/// version before every failed rollout, so instances of those versions can be probed with
/// their own checks and made again.
pub fn catalog(
    kept: &Spec,
    spec: &Spec,
    previous: &[Spec],
    failed: &BTreeMap<String, FailedRollout>,
) -> Catalog {
    let mut catalog = Catalog::new(kept.clone());
    catalog.remember(spec);
    for earlier in previous {
        catalog.remember(earlier);
    }
    for (group, f) in failed {
        if let Some(before) = &f.previous {
            catalog.remember_template(group, before.hash.clone(), before.template.clone());
        }
    }
    catalog
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Allocation, Flavor, Group, ProviderSpec, Rolling};

    fn group(command: &str, on_failure: OnFailure) -> Group {
        Group {
            name: "web".into(),
            allocation: Allocation::Size(2),
            provider: ProviderSpec {
                kind: "sim".into(),
                props: Default::default(),
            },
            flavor: Flavor {
                command: vec![command.into()],
                ..Flavor::default()
            },
            depends_on: vec![],
            reads_groups: vec![],
            update: UpdatePolicy::Rolling(Rolling {
                on_failure,
                ..Rolling::default()
            }),
            origin: None,
            expose: None,
        }
    }

    fn spec(g: Group) -> Spec {
        Spec {
            project: "p".into(),
            groups: vec![g],
            ports: Default::default(),
        }
    }

    #[test]
    fn a_rollback_goes_to_the_version_that_served_and_holds_until_the_spec_changes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::new(dir.path());
        let good = spec(group("v1", OnFailure::Rollback));
        let crashing = spec(group("v2", OnFailure::Rollback));
        let bad = spec(group("v3", OnFailure::Rollback));
        let _ = store.commit(&good);
        let _ = store.commit(&crashing);
        let serial = store.commit(&bad).map(|a| a.serial).unwrap_or(0);
        let made = SpecHash::of(&bad.groups[0]);
        let served = Version {
            hash: SpecHash::of(&good.groups[0]),
            template: good.groups[0].template(),
        };
        let fail = |serving: Option<Version>| {
            on_batch_failed(
                &bad,
                serial,
                &BTreeMap::new(),
                &store,
                "web",
                &made,
                serving,
                "never healthy",
                1,
            )
            .unwrap_or_else(|| panic!("no failed rollout"))
        };
        // Back to what served, not merely to the spec applied before (v2 crashed).
        let f = fail(Some(served.clone()));
        assert_eq!(f.rolled_back_to(), Some(&served));
        let mut failed = BTreeMap::new();
        failed.insert("web".to_owned(), f);
        let kept = effective(&bad, &failed);
        assert_eq!(SpecHash::of(&kept.groups[0]), served.hash);
        let catalog = catalog(&kept, &bad, &[], &failed);
        assert!(paused(&bad, &kept, &failed, &catalog).is_empty());
        // It holds under a new serial with the same group spec; a changed one is tried.
        assert_eq!(effective(&bad, &failed), kept);
        let fixed = spec(group("v4", OnFailure::Rollback));
        assert_eq!(effective(&fixed, &failed), fixed);
        assert!(still_holding(&fixed, failed).is_empty());

        // Nothing served stably: no rollback, a pause; the spec before fills empty slots.
        let f = fail(None);
        assert_eq!(f.rolled_back_to(), None);
        assert!(f.paused_because().is_some());
        assert_eq!(
            f.previous.map(|v| v.hash),
            Some(SpecHash::of(&crashing.groups[0]))
        );
    }

    #[test]
    fn a_pause_keeps_the_spec_and_stops_progress() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::new(dir.path());
        let bad = spec(group("v2", OnFailure::Pause));
        let made = SpecHash::of(&bad.groups[0]);
        let f = on_batch_failed(
            &bad,
            1,
            &BTreeMap::new(),
            &store,
            "web",
            &made,
            None,
            "never healthy",
            1,
        )
        .unwrap_or_else(|| panic!("no failed rollout"));
        assert!(!f.rolled_back);
        let mut failed = BTreeMap::new();
        failed.insert("web".to_owned(), f);
        let kept = effective(&bad, &failed);
        assert_eq!(kept, bad);
        let catalog = catalog(&kept, &bad, &[], &failed);
        let p = paused(&bad, &kept, &failed, &catalog);
        assert_eq!(p.get("web").map(|p| p.hash.clone()), Some(made));
        // A failure of a version the spec no longer asks for changes nothing.
        let other = SpecHash::from_tag("0123456789ab");
        assert!(on_batch_failed(
            &bad,
            1,
            &BTreeMap::new(),
            &store,
            "web",
            &other,
            None,
            "x",
            1
        )
        .is_none());
    }
}

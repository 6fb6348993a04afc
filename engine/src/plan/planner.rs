//! The planner rules of DESIGN.md, applied group by group in dependency order.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::model::{Action, ActionKind, Expectation, Expected, Plan, Summary};
use crate::graph::GroupGraph;
use crate::provider::{tags, InstanceState, Observed, ObservedInstance};
use crate::spec::{Allocation, Group, Slot, Spec, SpecHash, UpdatePolicy};

/// Everything the planner reads.
#[derive(Clone, Copy)]
pub struct PlanInput<'a> {
    /// The desired state.
    pub spec: &'a Spec,
    /// Its group graph (built from `spec`).
    pub graph: &'a GroupGraph,
    /// What the providers report.
    pub observed: &'a Observed,
    /// Work in flight that the providers may not show yet.
    pub expectations: &'a [Expectation],
    /// The last applied spec, when known: orders destroys of removed groups.
    pub previous: Option<&'a Spec>,
}

/// An observed instance with its provider, as the planner sees it.
#[derive(Clone, Copy)]
struct Seen<'a> {
    provider: &'a str,
    instance: &'a ObservedInstance,
}

impl Seen<'_> {
    fn hash(&self) -> &str {
        self.instance.tag(tags::HASH).unwrap_or("")
    }
}

/// Plans the changes that make the observed state match the spec.
pub fn plan(input: PlanInput<'_>) -> Plan {
    let PlanInput {
        spec,
        graph,
        observed,
        expectations,
        previous,
    } = input;
    let being_destroyed: HashSet<&str> = expectations
        .iter()
        .filter_map(|e| match &e.expected {
            Expected::Destroy { instance } => Some(instance.as_str()),
            Expected::Create { .. } => None,
        })
        .collect();
    let being_created: HashSet<(&str, &Slot)> = expectations
        .iter()
        .filter(|e| matches!(e.expected, Expected::Create { .. }))
        .map(|e| (e.group.as_str(), &e.slot))
        .collect();

    let mut by_group: HashMap<&str, Vec<Seen<'_>>> = HashMap::new();
    for (provider, instance) in &observed.instances {
        if instance.tag(tags::PROJECT) != Some(spec.project.as_str())
            || being_destroyed.contains(instance.id.as_str())
        {
            continue;
        }
        let group = instance.tag(tags::GROUP).unwrap_or("");
        by_group
            .entry(group)
            .or_default()
            .push(Seen { provider, instance });
    }

    let mut builder = Builder::default();
    for name in graph.order() {
        let Some(group) = spec.group(name) else {
            continue;
        };
        let seen = by_group.remove(name.as_str()).unwrap_or_default();
        let in_flight = |slot: &Slot| being_created.contains(&(name.as_str(), slot));
        builder.plan_group(group, graph, seen, &in_flight);
    }

    let mut removed: Vec<(&str, Vec<Seen<'_>>)> = by_group.into_iter().collect();
    removed.sort_by(|a, b| a.0.cmp(b.0));
    for (name, seen) in removed {
        builder.plan_removed_group(name, seen);
    }

    let previous_graph = previous.and_then(|p| GroupGraph::build(p).ok());
    builder.order_destroys(graph, previous_graph.as_ref());
    builder.finish(&spec.project)
}

#[derive(Default)]
struct Builder {
    actions: Vec<Action>,
    unchanged: usize,
    /// Create, heal and replace actions per group.
    builds: HashMap<String, Vec<usize>>,
    /// Destroy actions per group.
    destroys: HashMap<String, Vec<usize>>,
}

/// Orders live instances of one slot: the one to keep first.
fn keep_rank(seen: &Seen<'_>, current: &SpecHash) -> (bool, u8, u64, String) {
    let state_rank = match seen.instance.state {
        InstanceState::Running => 0,
        InstanceState::Starting => 1,
        InstanceState::Unhealthy => 2,
        InstanceState::Dead => 3,
    };
    (
        seen.hash() != current.as_str(),
        state_rank,
        seen.instance.started_at,
        seen.instance.id.clone(),
    )
}

impl Builder {
    fn push(&mut self, action: Action) -> usize {
        let index = self.actions.len();
        let list = match action.action {
            ActionKind::Destroy => self.destroys.entry(action.group.clone()).or_default(),
            _ => self.builds.entry(action.group.clone()).or_default(),
        };
        list.push(index);
        self.actions.push(action);
        index
    }

    fn action(kind: ActionKind, group: &str, slot: Slot, provider: &str, reason: String) -> Action {
        Action {
            action: kind,
            group: group.to_owned(),
            slot,
            reason,
            after: Vec::new(),
            provider: provider.to_owned(),
            instance: None,
            hash: None,
            batch: None,
            surge: false,
        }
    }

    fn destroy(&mut self, group: &str, slot: Slot, seen: &Seen<'_>, reason: String) {
        let mut action = Self::action(ActionKind::Destroy, group, slot, seen.provider, reason);
        action.instance = Some(seen.instance.id.clone());
        self.push(action);
    }

    fn plan_group(
        &mut self,
        group: &Group,
        graph: &GroupGraph,
        seen: Vec<Seen<'_>>,
        in_flight: &dyn Fn(&Slot) -> bool,
    ) {
        let hash = SpecHash::of(group);
        let provider = group.provider.kind.as_str();
        let mut by_slot: BTreeMap<Slot, Vec<Seen<'_>>> = BTreeMap::new();
        for s in seen {
            let slot = group
                .allocation
                .parse_slot(s.instance.tag(tags::SLOT).unwrap_or(""));
            by_slot.entry(slot).or_default().push(s);
        }

        let dependency_builds: Vec<usize> = graph
            .dependencies(&group.name)
            .iter()
            .flat_map(|d| self.builds.get(*d).cloned().unwrap_or_default())
            .collect();
        let mut unavailable: Vec<usize> = Vec::new();
        let mut outdated: Vec<(Slot, Seen<'_>)> = Vec::new();

        for slot in group.slots() {
            let instances = by_slot.remove(&slot).unwrap_or_default();
            if in_flight(&slot) {
                self.unchanged += instances.len();
                continue;
            }
            let (mut live, mut dead): (Vec<_>, Vec<_>) = instances
                .into_iter()
                .partition(|s| s.instance.state.is_live());
            live.sort_by_cached_key(|s| keep_rank(s, &hash));
            dead.sort_by(|a, b| {
                (b.instance.started_at, &b.instance.id)
                    .cmp(&(a.instance.started_at, &a.instance.id))
            });
            let Some(keep) = live.first().copied() else {
                let mut action = match dead.first() {
                    Some(last) => {
                        let mut a = Self::action(
                            ActionKind::Heal,
                            &group.name,
                            slot.clone(),
                            provider,
                            "instance is dead".to_owned(),
                        );
                        a.instance = Some(last.instance.id.clone());
                        a
                    }
                    None => Self::action(
                        ActionKind::Create,
                        &group.name,
                        slot.clone(),
                        provider,
                        "no instance in slot".to_owned(),
                    ),
                };
                action.hash = Some(hash.clone());
                action.after = dependency_builds.clone();
                unavailable.push(self.push(action));
                for extra in dead.iter().skip(1) {
                    let reason = "dead instance left in slot".to_owned();
                    self.destroy(&group.name, slot.clone(), extra, reason);
                }
                continue;
            };
            for duplicate in &live[1..] {
                let reason = format!("duplicate in slot; keeping {}", keep.instance.id);
                self.destroy(&group.name, slot.clone(), duplicate, reason);
            }
            for gone in &dead {
                let reason = format!("dead instance; slot is served by {}", keep.instance.id);
                self.destroy(&group.name, slot.clone(), gone, reason);
            }
            if keep.instance.state == InstanceState::Unhealthy {
                let mut action = Self::action(
                    ActionKind::Heal,
                    &group.name,
                    slot.clone(),
                    keep.provider,
                    "instance is unhealthy past its failure threshold".to_owned(),
                );
                action.instance = Some(keep.instance.id.clone());
                action.hash = Some(hash.clone());
                action.after = dependency_builds.clone();
                unavailable.push(self.push(action));
            } else if keep.hash() != hash.as_str() {
                outdated.push((slot.clone(), keep));
            } else {
                self.unchanged += 1;
            }
        }

        self.plan_replaces(group, &hash, outdated, &dependency_builds, &unavailable);

        let mut extra: Vec<(Slot, Vec<Seen<'_>>)> = by_slot.into_iter().collect();
        extra.reverse();
        for (slot, instances) in extra {
            let reason = match (&group.allocation, &slot) {
                (Allocation::Size(n), Slot::Index(_)) => {
                    format!("scale down: slot {slot} is beyond size {n}")
                }
                (Allocation::Ids(_), _) => format!("id {:?} is no longer in ids", slot.to_string()),
                (Allocation::Size(_), Slot::Id(text)) => {
                    format!("slot {text:?} is not a slot of a sized group")
                }
            };
            let mut instances = instances;
            instances.sort_by(|a, b| a.instance.id.cmp(&b.instance.id));
            for s in &instances {
                self.destroy(&group.name, slot.clone(), s, reason.clone());
            }
        }
    }

    /// Replaces outdated instances in batches: `max_unavailable` in place plus `max_surge`
    /// created first, per batch; `ids` groups one slot at a time; `recreate` all at once.
    fn plan_replaces(
        &mut self,
        group: &Group,
        hash: &SpecHash,
        outdated: Vec<(Slot, Seen<'_>)>,
        dependency_builds: &[usize],
        unavailable: &[usize],
    ) {
        if outdated.is_empty() {
            return;
        }
        let (batch_size, surge_per_batch) = match (&group.update, &group.allocation) {
            (UpdatePolicy::Recreate, _) => (outdated.len(), 0),
            (UpdatePolicy::Rolling(_), Allocation::Ids(_)) => (1, 0),
            (UpdatePolicy::Rolling(r), Allocation::Size(_)) => {
                let size = (r.max_unavailable + r.max_surge).max(1) as usize;
                (size, r.max_surge as usize)
            }
        };
        let batches = outdated.len().div_ceil(batch_size);
        let mut previous_batch: Vec<usize> = Vec::new();
        for (number, chunk) in outdated.chunks(batch_size).enumerate() {
            let mut this_batch = Vec::new();
            for (position, (slot, seen)) in chunk.iter().enumerate() {
                let policy = match group.update {
                    UpdatePolicy::Recreate => "recreate".to_owned(),
                    UpdatePolicy::Rolling(_) => {
                        format!("rolling batch {} of {batches}", number + 1)
                    }
                };
                let mut action = Self::action(
                    ActionKind::Replace,
                    &group.name,
                    slot.clone(),
                    seen.provider,
                    format!(
                        "outdated: hash {} -> {hash} ({policy})",
                        display_hash(seen.hash())
                    ),
                );
                action.instance = Some(seen.instance.id.clone());
                action.hash = Some(hash.clone());
                action.batch = Some(number as u32 + 1);
                action.surge = position < surge_per_batch;
                action.after = if number == 0 {
                    dependency_builds
                        .iter()
                        .chain(unavailable)
                        .copied()
                        .collect()
                } else {
                    previous_batch.clone()
                };
                this_batch.push(self.push(action));
            }
            previous_batch = this_batch;
        }
    }

    fn plan_removed_group(&mut self, name: &str, seen: Vec<Seen<'_>>) {
        let reason = if name.is_empty() {
            "instance has no tend.group tag".to_owned()
        } else {
            format!("group {name:?} is no longer in the spec")
        };
        let mut seen = seen;
        seen.sort_by(|a, b| {
            let slot = |s: &Seen<'_>| {
                Allocation::Size(0).parse_slot(s.instance.tag(tags::SLOT).unwrap_or(""))
            };
            (slot(b), &b.instance.id).cmp(&(slot(a), &a.instance.id))
        });
        for s in &seen {
            let slot = Allocation::Size(0).parse_slot(s.instance.tag(tags::SLOT).unwrap_or(""));
            self.destroy(name, slot, s, reason.clone());
        }
    }

    /// Destroys run dependents first: a group's destroys wait for the destroys of every
    /// group that depends on it (in the spec, or in the previous spec for removed groups).
    fn order_destroys(&mut self, graph: &GroupGraph, previous: Option<&GroupGraph>) {
        let groups: Vec<String> = self.destroys.keys().cloned().collect();
        for group in groups {
            let mut dependents: Vec<&str> = graph.dependents(&group);
            if graph.order().iter().all(|g| *g != group) {
                if let Some(prev) = previous {
                    dependents = prev.dependents(&group);
                }
            }
            let mut waits: Vec<usize> = dependents
                .iter()
                .flat_map(|d| self.destroys.get(*d).cloned().unwrap_or_default())
                .collect();
            waits.sort_unstable();
            for index in self.destroys[&group].clone() {
                self.actions[index].after.extend(&waits);
            }
        }
    }

    fn finish(mut self, project: &str) -> Plan {
        let mut summary = Summary::default();
        for action in &mut self.actions {
            action.after.sort_unstable();
            action.after.dedup();
            match action.action {
                ActionKind::Create => summary.create += 1,
                ActionKind::Heal => summary.heal += 1,
                ActionKind::Replace => summary.replace += 1,
                ActionKind::Destroy => summary.destroy += 1,
            }
        }
        Plan {
            project: project.to_owned(),
            summary,
            unchanged: self.unchanged,
            actions: self.actions,
        }
    }
}

fn display_hash(hash: &str) -> &str {
    if hash.is_empty() {
        "(none)"
    } else {
        hash
    }
}

//! The planner rules of DESIGN.md, applied group by group in dependency order.

use std::collections::{HashMap, HashSet};

use super::model::{Action, ActionKind, Expectation, Expected, Plan, Summary};
use crate::graph::GroupGraph;
use crate::provider::{InstanceState, Observed, ObservedInstance};
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

/// An observed instance with its provider and the tags the planner reads, looked up once.
#[derive(Clone, Copy)]
struct Seen<'a> {
    provider: &'a str,
    instance: &'a ObservedInstance,
    slot: &'a str,
    hash: &'a str,
}

impl Seen<'_> {
    fn hash(&self) -> &str {
        self.hash
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

    // An observed state holds one project's instances; only a state made for another
    // project needs each instance checked, and then none of them is ours to touch.
    let foreign = observed.project != spec.project;
    let mut by_group: HashMap<&str, Vec<Seen<'_>>> = HashMap::new();
    for (provider, instance) in observed.iter() {
        let not_ours = foreign && instance.tags.project != spec.project;
        if not_ours || being_destroyed.contains(instance.id.as_str()) {
            continue;
        }
        let group = instance.tags.group.as_str();
        by_group.entry(group).or_default().push(Seen {
            provider,
            instance,
            slot: &instance.tags.slot,
            hash: &instance.tags.hash,
        });
    }

    let groups: HashMap<&str, &Group> = spec.groups.iter().map(|g| (g.name.as_str(), g)).collect();
    let mut builder = Builder::default();
    for name in graph.order() {
        let Some(group) = groups.get(name.as_str()) else {
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
fn keep_rank<'a>(seen: &Seen<'a>, current: &SpecHash) -> (bool, u8, u64, &'a str) {
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
        seen.instance.id.as_str(),
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
        // One sort puts each slot's instances together: live ones best first (the one to
        // keep), then dead ones newest first. No allocation per slot.
        let mut seen: Vec<(Slot, Seen<'_>)> = seen
            .into_iter()
            .map(|s| (group.allocation.parse_slot(s.slot), s))
            .collect();
        seen.sort_by(|(slot_a, a), (slot_b, b)| {
            slot_a
                .cmp(slot_b)
                .then_with(|| {
                    a.instance
                        .state
                        .is_live()
                        .cmp(&b.instance.state.is_live())
                        .reverse()
                })
                .then_with(|| {
                    if a.instance.state.is_live() {
                        keep_rank(a, &hash).cmp(&keep_rank(b, &hash))
                    } else {
                        (b.instance.started_at, &b.instance.id)
                            .cmp(&(a.instance.started_at, &a.instance.id))
                    }
                })
        });
        let mut claimed = vec![false; seen.len()];
        let mut cursor = 0;

        let dependency_builds: Vec<usize> = graph
            .dependencies(&group.name)
            .iter()
            .flat_map(|d| self.builds.get(*d).cloned().unwrap_or_default())
            .collect();
        let mut unavailable: Vec<usize> = Vec::new();
        let mut outdated: Vec<(Slot, Seen<'_>)> = Vec::new();

        // Allocated slots in order, merged with the sorted instances.
        let mut slots = group.slots();
        slots.sort();
        for slot in slots {
            while cursor < seen.len() && seen[cursor].0 < slot {
                cursor += 1;
            }
            let from = cursor;
            while cursor < seen.len() && seen[cursor].0 == slot {
                claimed[cursor] = true;
                cursor += 1;
            }
            let instances = &seen[from..cursor];
            if in_flight(&slot) {
                self.unchanged += instances.len();
                continue;
            }
            let live_count = instances
                .iter()
                .take_while(|(_, s)| s.instance.state.is_live())
                .count();
            let (live, dead) = instances.split_at(live_count);
            let Some((_, keep)) = live.first() else {
                let mut action = match dead.first() {
                    Some((_, last)) => {
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
                for (_, extra) in dead.iter().skip(1) {
                    let reason = "dead instance left in slot".to_owned();
                    self.destroy(&group.name, slot.clone(), extra, reason);
                }
                continue;
            };
            for (_, duplicate) in &live[1..] {
                let reason = format!("duplicate in slot; keeping {}", keep.instance.id);
                self.destroy(&group.name, slot.clone(), duplicate, reason);
            }
            for (_, gone) in dead {
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
                outdated.push((slot.clone(), *keep));
            } else {
                self.unchanged += 1;
            }
        }

        self.plan_replaces(group, &hash, outdated, &dependency_builds, &unavailable);

        // Instances in slots the allocation no longer has: highest slot first.
        let mut extra: Vec<&(Slot, Seen<'_>)> = seen
            .iter()
            .zip(&claimed)
            .filter(|(_, claimed)| !**claimed)
            .map(|(entry, _)| entry)
            .collect();
        extra.sort_by(|(slot_a, a), (slot_b, b)| {
            slot_b
                .cmp(slot_a)
                .then_with(|| a.instance.id.cmp(&b.instance.id))
        });
        for (slot, s) in extra {
            let reason = match (&group.allocation, slot) {
                (Allocation::Size(n), Slot::Index(_)) => {
                    format!("scale down: slot {slot} is beyond size {n}")
                }
                (Allocation::Ids(_), _) => {
                    format!("id {:?} is no longer in ids", slot.to_string())
                }
                (Allocation::Size(_), Slot::Id(text)) => {
                    format!("slot {text:?} is not a slot of a sized group")
                }
            };
            self.destroy(&group.name, slot.clone(), s, reason);
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
            let slot = |s: &Seen<'_>| Allocation::Size(0).parse_slot(s.slot);
            (slot(b), &b.instance.id).cmp(&(slot(a), &a.instance.id))
        });
        for s in &seen {
            let slot = Allocation::Size(0).parse_slot(s.slot);
            self.destroy(name, slot, s, reason.clone());
        }
    }

    /// Destroys run dependents first: a group's destroys wait for the destroys of every
    /// group that depends on it (in the spec, or in the previous spec for removed groups).
    fn order_destroys(&mut self, graph: &GroupGraph, previous: Option<&GroupGraph>) {
        let current: HashSet<&str> = graph.order().iter().map(String::as_str).collect();
        let groups: Vec<String> = self.destroys.keys().cloned().collect();
        for group in groups {
            let mut dependents: Vec<&str> = graph.dependents(&group);
            if !current.contains(group.as_str()) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::InstanceTags;
    use crate::spec::{Allocation, Flavor, ProviderSpec};

    #[test]
    fn instances_of_another_project_are_never_touched() {
        let spec = Spec {
            project: "mine".into(),
            groups: vec![Group {
                name: "web".into(),
                allocation: Allocation::Size(1),
                provider: ProviderSpec {
                    kind: "sim".into(),
                    props: Default::default(),
                },
                flavor: Flavor::default(),
                depends_on: vec![],
                reads_groups: vec![],
                update: UpdatePolicy::default(),
                origin: None,
            }],
        };
        let theirs = ObservedInstance {
            id: "sim-1".into(),
            tags: InstanceTags {
                project: "theirs".into(),
                group: "cache".into(),
                slot: "0".into(),
                hash: "x".into(),
            },
            labels: Default::default(),
            address: None,
            state: InstanceState::Running,
            started_at: 1,
        };
        // Built for the wrong project on purpose: the planner still checks every instance.
        let mut observed = Observed::new("theirs");
        observed.add("sim", vec![theirs]);
        let graph = GroupGraph::build(&spec).unwrap_or_else(|e| panic!("{e}"));
        let planned = plan(PlanInput {
            spec: &spec,
            graph: &graph,
            observed: &observed,
            expectations: &[],
            previous: None,
        });
        assert_eq!(planned.summary.destroy, 0);
        assert_eq!(planned.summary.create, 1);
    }
}

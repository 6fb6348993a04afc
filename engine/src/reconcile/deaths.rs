//! Healing a death without a look at the whole project.
//!
//! In a project of 500 instances or more (below that a full round costs little), when a
//! provider says an instance is gone, `tend run` plans its group again at once from
//! the last full look (with the instance dead, what finished actions removed taken out,
//! health judged now), and starts that group's heal. Asking every provider for every
//! instance can take long in a large project, and a death is the one event whose answer
//! is known without it. The full round that follows (spaced like any other) sees the new
//! instance, and everything else that changed.
//!
//! The plan is the one planner's, over the dead instance's group and the groups it depends
//! on, with every action in flight and every instance expected: a heal made this way keeps
//! the same promises as one from a full round. A look that missed a provider is never used,
//! nor one older than a failed action (which may have left an instance nothing expects).

use std::collections::BTreeSet;

use super::Reconciler;
use crate::graph::GroupGraph;
use crate::plan::{plan, ActionKind, Expectation, PlanInput};
use crate::provider::{InstanceState, Observed};
use crate::spec::Spec;

impl Reconciler {
    /// Keeps `observed` (a full, judged look) to plan deaths from until the next one.
    pub(super) fn remember_look(&mut self, observed: &Observed) {
        self.removed_since.clear();
        self.last_look = (self.options.mode == super::Mode::Run && observed.unobserved.is_empty())
            .then(|| observed.clone());
    }

    /// Plans and starts the heals of the instances providers said are gone since the last
    /// call, group by group, from the last full look. False when there is no such look to
    /// plan from: the caller runs a full round instead.
    pub fn heal_deaths(&mut self) -> bool {
        let dead = std::mem::take(&mut self.dead_since);
        if self.stopping || dead.is_empty() {
            return true;
        }
        // A small project's full round costs little, and is what the simulation checks.
        if self
            .last_look
            .as_ref()
            .is_none_or(|look| look.len() < super::SPACED_FROM)
        {
            return false;
        }
        // Deaths of instances tend just made count before their heals are planned: a slot
        // that keeps dying backs off, and one whose instance started in place died again
        // gets a new one.
        self.count_told_deaths(&dead);
        let Some(look) = &self.last_look else {
            return false;
        };
        let groups: BTreeSet<String> = look
            .iter()
            .filter(|(_, i)| dead.contains(&i.id))
            .map(|(_, i)| i.tags.group.clone())
            .collect();
        let Ok(graph) = GroupGraph::build(&self.kept) else {
            return false;
        };
        for group in groups {
            self.heal_group(&graph, &group);
        }
        true
    }

    /// Plans `group` (and the groups it depends on, for their order) from the last look,
    /// and starts its startable creates and heals.
    fn heal_group(&mut self, graph: &GroupGraph, group: &str) {
        let Some(look) = &self.last_look else {
            return;
        };
        // The group and everything it depends on, so creates wait as a full plan says.
        let mut needed: BTreeSet<String> = BTreeSet::new();
        let mut next = vec![group.to_owned()];
        while let Some(name) = next.pop() {
            if needed.insert(name.clone()) {
                next.extend(graph.dependencies(&name).into_iter().map(str::to_owned));
            }
        }
        let spec = Spec {
            project: self.kept.project.clone(),
            ports: self.kept.ports,
            groups: self
                .kept
                .groups
                .iter()
                .filter(|g| needed.contains(&g.name))
                .cloned()
                .collect(),
        };
        let Ok(sub_graph) = GroupGraph::build(&spec) else {
            return;
        };
        let mut observed = Observed::new(&look.project);
        for (provider, list) in &look.by_provider {
            let kept = list
                .iter()
                .filter(|i| needed.contains(&i.tags.group) && !self.removed_since.contains(&i.id))
                .cloned()
                .map(|mut i| {
                    if self.gone.contains_key(&i.id) {
                        i.state = InstanceState::Dead;
                    }
                    i
                })
                .collect();
            observed.add(provider, kept);
        }
        // Health as judged now, not at the last look.
        self.monitor.judge(&mut observed);
        let expectations: Vec<Expectation> = self
            .pending
            .iter()
            .filter(|p| needed.contains(&p.expectation.group))
            .map(|p| p.expectation.clone())
            .collect();
        let in_flight: Vec<_> = self
            .running
            .actions()
            .into_iter()
            .filter(|a| needed.contains(&a.group))
            .collect();
        let paused = self.paused_now();
        let planned = plan(PlanInput {
            expectations: &expectations,
            in_flight: &in_flight,
            paused: &paused,
            ..PlanInput::new(&spec, &sub_graph, &observed)
        });
        let now = self.clock.now();
        let heals: Vec<_> = planned
            .startable()
            .filter(|a| {
                a.group == group
                    && matches!(a.action, ActionKind::Heal | ActionKind::Create)
                    && self.may_try(a, now)
            })
            .cloned()
            .collect();
        if heals.is_empty() {
            return;
        }
        // What a full round queued for these slots was planned before the death: the heal
        // takes the slot now, and the next round plans the rest again.
        let slots: BTreeSet<(String, String)> = heals
            .iter()
            .map(|a| (a.group.clone(), a.slot.to_string()))
            .collect();
        self.queue
            .retain(|a| !slots.contains(&(a.group.clone(), a.slot.to_string())));
        // Started first: the queue is taken from its end.
        self.queue.extend(heals.into_iter().rev());
        self.start_queued();
    }
}

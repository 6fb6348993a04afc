//! Healing a death without a look at the whole project.
//!
//! In a project of 500 instances or more (below that a full round costs little; the
//! simulation lowers the bar to check every death healed so), when a
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
//!
//! The look is kept split by group and brought up to date in place (deaths marked, what
//! finished actions removed taken out, health judged), so a heal costs a plan of its
//! group, not a copy of the project.

use std::collections::{BTreeMap, BTreeSet};

use super::Reconciler;
use crate::graph::GroupGraph;
use crate::plan::{plan, ActionKind, Expectation, PlanInput};
use crate::provider::Observed;
use crate::spec::Spec;

/// The last full look, by group: each group's instances as one [`Observed`].
pub(super) type LookByGroup = BTreeMap<String, Observed>;

impl Reconciler {
    /// Keeps `observed` (a full, judged look) to plan deaths from until the next one.
    pub(super) fn remember_look(&mut self, observed: &Observed) {
        self.removed_since.clear();
        self.last_look = None;
        if self.options.mode != super::Mode::Run || !observed.unobserved.is_empty() {
            return;
        }
        let mut by_group = LookByGroup::new();
        for (provider, list) in &observed.by_provider {
            for instance in list {
                by_group
                    .entry(instance.tags.group.clone())
                    .or_insert_with(|| Observed::new(&observed.project))
                    .by_provider
                    .entry(provider.clone())
                    .or_default()
                    .push(instance.clone());
            }
        }
        self.last_look = Some(by_group);
    }

    /// Plans and starts the heals of the instances providers said are gone since the last
    /// call, group by group, from the last full look. False when there is no such look to
    /// plan from: the caller runs a full round instead.
    pub fn heal_deaths(&mut self) -> bool {
        let dead = std::mem::take(&mut self.dead_since);
        if self.stopping || dead.is_empty() {
            return true;
        }
        // A small project's full round costs little.
        if self
            .last_look
            .as_ref()
            .is_none_or(|look| look.values().map(Observed::len).sum::<usize>() < super::SPACED_FROM)
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
            .filter(|(_, observed)| observed.iter().any(|(_, i)| dead.contains(&i.id)))
            .map(|(group, _)| group.clone())
            .collect();
        let Ok(graph) = GroupGraph::build(&self.kept) else {
            return false;
        };
        for group in groups {
            self.heal_group(&graph, &group);
        }
        true
    }

    /// Brings `group`'s part of the last look up to date: instances told gone are dead,
    /// those finished actions removed are out, and health is as judged now.
    fn refresh_look(&mut self, group: &str) {
        let Some(observed) = self.last_look.as_mut().and_then(|l| l.get_mut(group)) else {
            return;
        };
        for list in observed.by_provider.values_mut() {
            list.retain(|i| !self.removed_since.contains(&i.id));
        }
        super::mark_gone(&self.gone, observed);
        self.monitor.judge(observed);
    }

    /// Plans `group` (and the groups it depends on, for their order) from the last look,
    /// and starts its startable creates and heals.
    fn heal_group(&mut self, graph: &GroupGraph, group: &str) {
        // The group and everything it depends on, so creates wait as a full plan says.
        let mut needed: BTreeSet<String> = BTreeSet::new();
        let mut next = vec![group.to_owned()];
        while let Some(name) = next.pop() {
            if needed.insert(name.clone()) {
                next.extend(graph.dependencies(&name).into_iter().map(str::to_owned));
            }
        }
        for name in &needed {
            self.refresh_look(name);
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
        let Some(look) = self.last_look.as_mut() else {
            return;
        };
        // The group's own look, with its dependencies' instances added for the plan and
        // taken out again after: only they are copied.
        let mut observed = look
            .remove(group)
            .unwrap_or_else(|| Observed::new(&spec.project));
        let own: BTreeMap<String, usize> = observed
            .by_provider
            .iter()
            .map(|(provider, list)| (provider.clone(), list.len()))
            .collect();
        for name in needed.iter().filter(|n| n.as_str() != group) {
            for (provider, list) in look.get(name).map(|o| &o.by_provider).into_iter().flatten() {
                observed
                    .by_provider
                    .entry(provider.clone())
                    .or_default()
                    .extend(list.iter().cloned());
            }
        }
        let planned = plan(PlanInput {
            expectations: &expectations,
            in_flight: &in_flight,
            paused: &paused,
            ..PlanInput::new(&spec, &sub_graph, &observed)
        });
        observed.by_provider.retain(|provider, list| {
            list.truncate(own.get(provider).copied().unwrap_or(0));
            !list.is_empty()
        });
        look.insert(group.to_owned(), observed);
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

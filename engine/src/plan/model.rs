//! What a plan is made of.

use serde::{Deserialize, Serialize};

use crate::spec::{Slot, SpecHash};

/// What an action does to a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Make an instance for an empty slot.
    Create,
    /// Replace a dead or unhealthy instance in its slot.
    Heal,
    /// Replace an outdated instance, paced by the update policy.
    Replace,
    /// Remove an instance that is not wanted.
    Destroy,
}

impl ActionKind {
    /// The one-character mark used in plan text.
    pub fn symbol(self) -> char {
        match self {
            ActionKind::Create => '+',
            ActionKind::Heal => '!',
            ActionKind::Replace => '~',
            ActionKind::Destroy => '-',
        }
    }

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Create => "create",
            ActionKind::Heal => "heal",
            ActionKind::Replace => "replace",
            ActionKind::Destroy => "destroy",
        }
    }
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// What it does.
    pub action: ActionKind,
    /// The group of the slot.
    pub group: String,
    /// The slot.
    pub slot: Slot,
    /// Why, in words an operator reads.
    pub reason: String,
    /// Indexes of single actions that must finish first: a wait on one action of its own
    /// group (the one rolling batch of one slot before it, say).
    pub after: Vec<usize>,
    /// Indexes in [`Plan::barriers`] of the sets of actions that must finish first (the
    /// builds of a group it depends on, say). Absent in JSON when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after_barriers: Vec<usize>,
    /// The provider that makes or holds the instance.
    pub provider: String,
    /// The existing instance acted on (destroyed, healed or replaced), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The spec hash of the instance to create, for create, heal and replace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<SpecHash>,
    /// The spec hash of `instance`, for heal and replace: a heal that makes another version
    /// than the one it replaces is part of a rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_hash: Option<SpecHash>,
    /// The rolling batch of a replace, counted from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
    /// A replace that creates the new instance before destroying the old one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub surge: bool,
    /// The provider holding `instance`, when it is not `provider`: the group moved to
    /// another provider, which makes the new instance while this one removes the old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_provider: Option<String>,
    /// Acts on an instance that fails its health check: counted against the group's
    /// budget of health replacements.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unhealthy: bool,
    /// Why it cannot start yet although nothing it waits for holds it (instances of the
    /// group that are unavailable for now, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits: Option<String>,
    /// Already running (plans made while actions are in flight): shown so what comes after
    /// it waits for it, never started again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_flight: bool,
}

impl Action {
    /// The provider that holds the instance acted on.
    pub fn holder(&self) -> &str {
        self.instance_provider.as_deref().unwrap_or(&self.provider)
    }

    /// True when it makes another version of its slot than the instance it replaces: a
    /// replace, or a heal of an instance of an older version. Such an action failing means
    /// the rollout failed.
    pub fn changes_version(&self) -> bool {
        match self.action {
            ActionKind::Replace => true,
            ActionKind::Heal => self.from_hash.is_some() && self.from_hash != self.hash,
            ActionKind::Create | ActionKind::Destroy => false,
        }
    }

    /// True when it leaves its slot without a serving instance while it runs: everything
    /// but destroys and replaces that surge.
    pub fn takes_slot_down(&self) -> bool {
        match self.action {
            ActionKind::Destroy => false,
            ActionKind::Replace => !self.surge,
            ActionKind::Create | ActionKind::Heal => true,
        }
    }
}

/// How many actions of each kind a plan holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Creates.
    pub create: usize,
    /// Replaces.
    pub replace: usize,
    /// Heals.
    pub heal: usize,
    /// Destroys.
    pub destroy: usize,
}

impl Summary {
    /// The number of actions.
    pub fn total(&self) -> usize {
        self.create + self.replace + self.heal + self.destroy
    }
}

/// An ordered DAG of actions for one project.
///
/// What an action waits for is `after` (single actions) together with the actions of every
/// barrier in `after_barriers`: [`Plan::waits_for`] gives the two as one list. A set that
/// many actions wait for is written once, as a barrier, so a group of m instances that
/// depends on a group of n makes n + m entries, not n × m.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The project planned.
    pub project: String,
    /// Counts by kind.
    pub summary: Summary,
    /// Instances left as they are.
    pub unchanged: usize,
    /// The actions, sorted; `after` and barriers refer to positions in this list.
    pub actions: Vec<Action>,
    /// Sets of actions that actions wait for, sorted by group, kind and batch;
    /// `after_barriers` refers to positions in this list.
    #[serde(default)]
    pub barriers: Vec<Barrier>,
    /// What holds a group back, by group: a paused rollout, too many unhealthy instances
    /// to replace any (degraded), a provider that cannot be observed.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub held: std::collections::BTreeMap<String, Hold>,
}

/// A set of actions of one group that other actions wait for, written once however many
/// wait: the builds of `db` that every create of `web` (which depends on `db`) waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Barrier {
    /// The group whose actions it holds.
    pub group: String,
    /// Which of its actions.
    pub kind: BarrierKind,
    /// The rolling batch, for `batch` barriers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
    /// Indexes of its actions, sorted. The planner makes no empty barrier; one would hold
    /// nothing back.
    pub actions: Vec<usize>,
}

/// Which actions of a group a barrier holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BarrierKind {
    /// Every create, heal and replace of the group (running ones included): what the
    /// builds of the groups that depend on it wait for.
    Builds,
    /// Every destroy of the group (running ones included): what the destroys of the
    /// groups it depends on wait for.
    Destroys,
    /// The replaces of one rolling batch: what the next batch waits for.
    Batch,
    /// The actions that bring an unavailable slot of the group back: what a rollout with
    /// no room left under `max_unavailable` waits for.
    Restoring,
    /// The replacements of unhealthy instances within the group's health budget: what the
    /// ones beyond the budget wait for.
    UnhealthyHeals,
}

/// Why a group makes no progress for now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Hold {
    /// Its rollout failed: no outdated instance is replaced until a new spec is applied.
    Paused {
        /// Why the rollout stopped.
        reason: String,
    },
    /// More than half of it fails its health checks at once (a shared dependency is the
    /// likely cause): none of those instances is replaced until the checks recover.
    Degraded {
        /// How many, of how many.
        reason: String,
    },
    /// A provider it uses, or used, cannot be observed: nothing is planned for it.
    Unobserved {
        /// The provider and its error.
        reason: String,
    },
}

impl Hold {
    /// The phase's name: `paused`, `degraded` or `unobserved`.
    pub fn name(&self) -> &'static str {
        match self {
            Hold::Paused { .. } => "paused",
            Hold::Degraded { .. } => "degraded",
            Hold::Unobserved { .. } => "unobserved",
        }
    }

    /// Why, in words.
    pub fn reason(&self) -> &str {
        match self {
            Hold::Paused { reason } | Hold::Degraded { reason } | Hold::Unobserved { reason } => {
                reason
            }
        }
    }
}

impl Plan {
    /// True when nothing needs to change.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Counts the actions by kind.
    pub fn count(actions: &[Action]) -> Summary {
        let mut summary = Summary::default();
        for a in actions {
            match a.action {
                ActionKind::Create => summary.create += 1,
                ActionKind::Heal => summary.heal += 1,
                ActionKind::Replace => summary.replace += 1,
                ActionKind::Destroy => summary.destroy += 1,
            }
        }
        summary
    }

    /// The actions that may start now, in plan order: not running, no `waits`, and
    /// nothing they wait for left (a barrier with no actions holds nothing back; one that
    /// does not exist holds the action back, as a plan that names it is not to be trusted).
    pub fn startable(&self) -> impl Iterator<Item = &Action> + '_ {
        self.actions.iter().filter(|a| {
            !a.in_flight
                && a.waits.is_none()
                && a.after.is_empty()
                && a.after_barriers.iter().all(|b| {
                    self.barriers
                        .get(*b)
                        .is_some_and(|barrier| barrier.actions.is_empty())
                })
        })
    }

    /// Every action that action `index` waits for, directly or through a barrier: sorted,
    /// without repeats. Empty for an index that is not in the plan.
    pub fn waits_for(&self, index: usize) -> Vec<usize> {
        let Some(action) = self.actions.get(index) else {
            return Vec::new();
        };
        let mut all = action.after.clone();
        for b in &action.after_barriers {
            if let Some(barrier) = self.barriers.get(*b) {
                all.extend(&barrier.actions);
            }
        }
        all.sort_unstable();
        all.dedup();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(slot: u32, after: Vec<usize>, after_barriers: Vec<usize>) -> Action {
        Action {
            action: ActionKind::Create,
            group: "g".into(),
            slot: Slot::Index(slot),
            reason: String::new(),
            after,
            after_barriers,
            provider: "sim".into(),
            instance: None,
            hash: None,
            from_hash: None,
            batch: None,
            surge: false,
            instance_provider: None,
            unhealthy: false,
            waits: None,
            in_flight: false,
        }
    }

    fn barrier(actions: Vec<usize>) -> Barrier {
        Barrier {
            group: "g".into(),
            kind: BarrierKind::Builds,
            batch: None,
            actions,
        }
    }

    fn plan(actions: Vec<Action>, barriers: Vec<Barrier>) -> Plan {
        Plan {
            project: "p".into(),
            summary: Plan::count(&actions),
            unchanged: 0,
            actions,
            barriers,
            held: Default::default(),
        }
    }

    fn startable_slots(plan: &Plan) -> Vec<String> {
        plan.startable().map(|a| a.slot.to_string()).collect()
    }

    #[test]
    fn waits_for_joins_direct_edges_and_barriers() {
        let plan = plan(
            vec![
                action(0, vec![], vec![]),
                action(1, vec![], vec![]),
                action(2, vec![1], vec![0, 1]),
                action(3, vec![], vec![1]),
            ],
            vec![barrier(vec![0, 1]), barrier(vec![1, 2])],
        );
        assert_eq!(plan.waits_for(2), [0, 1, 2]);
        assert_eq!(plan.waits_for(3), [1, 2]);
        assert!(plan.waits_for(0).is_empty());
        assert!(plan.waits_for(9).is_empty());
        assert_eq!(startable_slots(&plan), ["0", "1"]);
    }

    #[test]
    fn an_empty_barrier_holds_nothing_back_and_a_missing_one_holds_everything() {
        let plan = plan(
            vec![action(0, vec![], vec![0]), action(1, vec![], vec![1])],
            vec![barrier(vec![])],
        );
        assert_eq!(startable_slots(&plan), ["0"]);
    }
}

/// Work the executor has issued but the provider may not show yet. The planner counts it
/// as done, so nothing is provisioned twice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expectation {
    /// The group.
    pub group: String,
    /// The slot.
    pub slot: Slot,
    /// What was issued.
    pub expected: Expected,
}

/// The kind of an expectation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expected {
    /// An instance with this hash is being created in the slot.
    Create {
        /// Its spec hash.
        hash: SpecHash,
    },
    /// This instance is being destroyed.
    Destroy {
        /// Its id.
        instance: String,
    },
}

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
    /// Indexes of the actions that must finish first.
    pub after: Vec<usize>,
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
    /// Why it cannot start yet although nothing in `after` holds it (instances of the group
    /// that are unavailable for now, say).
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

    /// True when it may start now: not running, nothing before it, nothing it waits for.
    pub fn startable(&self) -> bool {
        !self.in_flight && self.after.is_empty() && self.waits.is_none()
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The project planned.
    pub project: String,
    /// Counts by kind.
    pub summary: Summary,
    /// Instances left as they are.
    pub unchanged: usize,
    /// The actions, sorted; `after` refers to positions in this list.
    pub actions: Vec<Action>,
    /// What holds a group back, by group: a paused rollout, too many unhealthy instances
    /// to replace any (degraded), a provider that cannot be observed.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub held: std::collections::BTreeMap<String, Hold>,
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

    /// Keeps the actions `keep` accepts, and everything they need to wait for stays
    /// consistent: `after` indexes are renumbered, and an action that waited for a dropped
    /// action is dropped too (it must not run early). The summary is recounted.
    pub fn retain(&mut self, keep: impl Fn(&Action) -> bool) {
        let mut kept: Vec<bool> = self.actions.iter().map(&keep).collect();
        // Actions are not in dependency order, so repeat until nothing changes.
        loop {
            let mut changed = false;
            for i in 0..self.actions.len() {
                if kept[i]
                    && self.actions[i]
                        .after
                        .iter()
                        .any(|d| !kept.get(*d).copied().unwrap_or(true))
                {
                    kept[i] = false;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let mut new_index = vec![usize::MAX; self.actions.len()];
        let mut next = 0;
        for (i, k) in kept.iter().enumerate() {
            if *k {
                new_index[i] = next;
                next += 1;
            }
        }
        let actions = std::mem::take(&mut self.actions);
        self.actions = actions
            .into_iter()
            .zip(&kept)
            .filter(|(_, k)| **k)
            .map(|(mut a, _)| {
                a.after = a
                    .after
                    .iter()
                    .filter_map(|d| new_index.get(*d).copied().filter(|n| *n != usize::MAX))
                    .collect();
                a
            })
            .collect();
        self.summary = Plan::count(&self.actions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(kind: ActionKind, slot: u32, after: Vec<usize>) -> Action {
        Action {
            action: kind,
            group: "g".into(),
            slot: Slot::Index(slot),
            reason: String::new(),
            after,
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

    #[test]
    fn retain_drops_what_waits_for_a_dropped_action_and_renumbers() {
        let mut plan = Plan {
            project: "p".into(),
            summary: Summary::default(),
            unchanged: 0,
            held: Default::default(),
            actions: vec![
                action(ActionKind::Create, 0, vec![]),
                action(ActionKind::Create, 1, vec![]),
                action(ActionKind::Replace, 2, vec![1]),
                action(ActionKind::Destroy, 3, vec![0]),
            ],
        };
        plan.retain(|a| a.slot != Slot::Index(1));
        let slots: Vec<String> = plan.actions.iter().map(|a| a.slot.to_string()).collect();
        assert_eq!(slots, ["0", "3"]);
        assert_eq!(plan.actions[1].after, [0]);
        assert_eq!(
            (
                plan.summary.create,
                plan.summary.destroy,
                plan.summary.replace
            ),
            (1, 1, 0)
        );
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

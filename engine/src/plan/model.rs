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
    /// The rolling batch of a replace, counted from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
    /// A replace that creates the new instance before destroying the old one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub surge: bool,
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
}

impl Plan {
    /// True when nothing needs to change.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
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

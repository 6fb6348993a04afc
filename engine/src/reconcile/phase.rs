//! Where each group stands after a round, and whether the project converged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::{Hold, Plan};
use crate::provider::{InstanceState, Observed};
use crate::spec::{Spec, SpecHash};
use crate::store::FailedRollout;

/// Where a group stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum GroupPhase {
    /// Every slot live, healthy and at the wanted hash; nothing to do.
    Converged,
    /// Actions are planned or running.
    Progressing,
    /// A batch of its rollout failed; it makes no progress until a new spec is applied.
    Paused {
        /// Why.
        reason: String,
    },
    /// A batch of its rollout failed; it went back to its previous version.
    RolledBack {
        /// Why.
        reason: String,
    },
    /// More than half of it fails its health checks; none of those is replaced.
    Degraded {
        /// Why.
        reason: String,
    },
    /// Its new instances keep failing; every retry waits the backoff cap.
    Failing {
        /// Why.
        reason: String,
    },
    /// A provider it uses cannot be observed; nothing is planned for it.
    Unobserved {
        /// Why.
        reason: String,
    },
}

impl GroupPhase {
    /// The phase's name: `converged`, `progressing`, `paused`, ...
    pub fn name(&self) -> &'static str {
        match self {
            GroupPhase::Converged => "converged",
            GroupPhase::Progressing => "progressing",
            GroupPhase::Paused { .. } => "paused",
            GroupPhase::RolledBack { .. } => "rolled_back",
            GroupPhase::Degraded { .. } => "degraded",
            GroupPhase::Failing { .. } => "failing",
            GroupPhase::Unobserved { .. } => "unobserved",
        }
    }

    /// Why, when the phase has a reason.
    pub fn reason(&self) -> Option<&str> {
        match self {
            GroupPhase::Converged | GroupPhase::Progressing => None,
            GroupPhase::Paused { reason }
            | GroupPhase::RolledBack { reason }
            | GroupPhase::Degraded { reason }
            | GroupPhase::Failing { reason }
            | GroupPhase::Unobserved { reason } => Some(reason),
        }
    }

    /// Every phase name, for metrics.
    pub const NAMES: [&'static str; 7] = [
        "converged",
        "progressing",
        "paused",
        "rolled_back",
        "degraded",
        "failing",
        "unobserved",
    ];
}

/// Judges each group of `spec` from a round's view and plan.
pub fn phases(
    spec: &Spec,
    kept: &Spec,
    observed: &Observed,
    plan: &Plan,
    failed: &BTreeMap<String, FailedRollout>,
    failing: &dyn Fn(&str) -> Option<String>,
) -> BTreeMap<String, GroupPhase> {
    let mut out = BTreeMap::new();
    for group in &spec.groups {
        let name = &group.name;
        let failed_rollout = failed.get(name).filter(|f| f.holds(&SpecHash::of(group)));
        let phase = if let Some(f) = failed_rollout {
            match f.paused_because() {
                Some(reason) => GroupPhase::Paused { reason },
                None => GroupPhase::RolledBack {
                    reason: f.reason.clone(),
                },
            }
        } else if let Some(hold) = plan.held.get(name) {
            match hold {
                Hold::Degraded { reason } => GroupPhase::Degraded {
                    reason: reason.clone(),
                },
                Hold::Unobserved { reason } => GroupPhase::Unobserved {
                    reason: reason.clone(),
                },
                Hold::Paused { reason } => GroupPhase::Paused {
                    reason: reason.clone(),
                },
            }
        } else if let Some(reason) = failing(name) {
            GroupPhase::Failing { reason }
        } else if plan.actions.iter().any(|a| a.group == *name) || !settled(kept, name, observed) {
            GroupPhase::Progressing
        } else {
            GroupPhase::Converged
        };
        out.insert(name.clone(), phase);
    }
    out
}

/// True when every live instance of group `name` serves at the group's hash.
fn settled(kept: &Spec, name: &str, observed: &Observed) -> bool {
    let Some(group) = kept.group(name) else {
        return true;
    };
    let hash = SpecHash::of(group);
    observed
        .iter()
        .filter(|(_, i)| i.tags.group == *name && i.state.is_live())
        .all(|(_, i)| i.state == InstanceState::Running && i.tags.hash == hash.as_str())
}

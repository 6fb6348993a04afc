//! Rollouts that failed: a group paused at the batch that failed, or rolled back to the
//! version before. Kept in the store so a restarted controller, `tend status` and the next
//! `tend apply` all see the same thing; it holds until the group's spec changes.

use serde::{Deserialize, Serialize};

use crate::spec::{SpecHash, Template};

/// A group whose rollout to `hash` failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedRollout {
    /// The spec hash the rollout was making.
    pub hash: SpecHash,
    /// The spec serial it happened under.
    pub serial: u64,
    /// Why the batch failed, in words.
    pub reason: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The version the group had before, from the store's history, when known: what a
    /// rollback goes back to, and what a paused group fills an empty slot with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Version>,
    /// True when the group went back to `previous` (`on_failure = "rollback"`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rolled_back: bool,
    /// When the rollback's own replacement failed too: why. The group then stays where it
    /// is, as a paused one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_failed: Option<String>,
}

/// One version of a group: its spec hash and instance template.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// Its spec hash.
    pub hash: SpecHash,
    /// Its instance template.
    pub template: Template,
}

impl FailedRollout {
    /// True while it still holds for a group whose spec hash is `hash`: until the group's
    /// spec changes.
    pub fn holds(&self, hash: &SpecHash) -> bool {
        self.hash == *hash
    }

    /// The version the group's instances are made from instead of the spec's, after a
    /// rollback.
    pub fn rolled_back_to(&self) -> Option<&Version> {
        self.previous.as_ref().filter(|_| self.rolled_back)
    }

    /// Why the group makes no progress, when it makes none: its rollout paused, or its
    /// rollback failed too.
    pub fn paused_because(&self) -> Option<String> {
        match (self.rolled_back_to(), &self.rollback_failed) {
            (None, _) => Some(self.reason.clone()),
            (Some(_), Some(again)) => {
                Some(format!("{}; the rollback failed too: {again}", self.reason))
            }
            (Some(_), None) => None,
        }
    }
}

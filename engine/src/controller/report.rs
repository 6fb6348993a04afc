//! `controller.json` in the state folder: what `tend run` is doing, for `tend apply` (which
//! hands it a spec and follows it) and `tend status` (phases, failing groups, backoffs).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::reconcile::GroupPhase;
use crate::status::Status;
use crate::store::write_atomic;

/// The controller's report, written after every round that changed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The controller's pid.
    pub pid: u32,
    /// Where it serves `/status` and `/events`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// The serial of the spec it keeps.
    pub serial: u64,
    /// True when every slot is live, healthy and at its group's hash.
    pub converged: bool,
    /// Where each group stands.
    pub groups: BTreeMap<String, GroupPhase>,
    /// Slots in backoff, by group.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backoff: BTreeMap<String, BTreeMap<String, String>>,
    /// Providers it cannot observe, with why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unobserved: BTreeMap<String, String>,
    /// Its balancers: where they listen (or why not) and the instances in rotation, without
    /// open connection counts (those change too often for a file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub balancers: Vec<crate::balancer::BalancerStatus>,
}

const FILE: &str = "controller.json";

impl Report {
    /// Writes the report durably.
    pub fn write(&self, state_dir: &Path) {
        if let Ok(text) = serde_json::to_string_pretty(self) {
            let _ = write_atomic(&state_dir.join(FILE), text.as_bytes());
        }
    }

    /// Adds the controller's view to a status.
    pub fn annotate(&self, status: &mut Status) {
        for group in &mut status.groups {
            if let Some(phase) = self.groups.get(&group.name) {
                group.phase = Some(phase.clone());
                if let GroupPhase::Failing { reason } = phase {
                    group.failing = Some(reason.clone());
                }
            }
            group.backoff = self.backoff.get(&group.name).cloned().unwrap_or_default();
        }
        status.balancers.clone_from(&self.balancers);
    }
}

/// The report of a controller that still runs, if there is one.
pub fn read(state_dir: &Path) -> Option<Report> {
    let text = std::fs::read_to_string(state_dir.join(FILE)).ok()?;
    let report: Report = serde_json::from_str(&text).ok()?;
    let alive = crate::procfs::stat(report.pid).is_some_and(|s| !s.is_zombie());
    alive.then_some(report)
}

/// Removes the report (when the controller stops).
pub fn clear(state_dir: &Path) {
    let _ = std::fs::remove_file(state_dir.join(FILE));
}

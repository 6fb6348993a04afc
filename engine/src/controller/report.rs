//! `controller.json` in the state folder: what `tend run` is doing, for `tend apply` (waiting
//! for convergence) and `tend status` (failing groups, backoffs).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::status::Status;
use crate::store::write_atomic;

/// Where the controller stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Working towards the spec of `serial`.
    Working,
    /// The project matches the spec of `serial`.
    Converged,
    /// Some group keeps failing; see `failing`.
    Failing,
}

/// The controller's report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The controller's pid.
    pub pid: u32,
    /// The serial of the spec it works on.
    pub serial: u64,
    /// Where it stands.
    pub phase: Phase,
    /// Failing groups and why.
    pub failing: BTreeMap<String, String>,
    /// Slots in backoff, by group.
    pub backoff: BTreeMap<String, BTreeMap<String, String>>,
    /// When the report was written.
    pub at_ms: u64,
}

const FILE: &str = "controller.json";

impl Report {
    /// Writes the report atomically.
    pub fn write(&self, state_dir: &Path) {
        if let Ok(text) = serde_json::to_string_pretty(self) {
            let _ = write_atomic(&state_dir.join(FILE), text.as_bytes());
        }
    }

    /// Adds the controller's view to a status.
    pub fn annotate(&self, status: &mut Status) {
        for group in &mut status.groups {
            group.failing = self.failing.get(&group.name).cloned();
            group.backoff = self.backoff.get(&group.name).cloned().unwrap_or_default();
        }
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

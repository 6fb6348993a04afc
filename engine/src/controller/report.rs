//! What `tend run` is doing, for `tend apply` (which hands it a spec and follows it) and
//! `tend status` (phases, failing groups, backoffs): `controller.json` in the state folder,
//! or the `status` key of an etcd store, written by the leader alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::reconcile::GroupPhase;
use crate::status::Status;
use crate::store::{write_atomic, Store, StoreError};

/// The controller's report, written after every round that changed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The controller's pid.
    pub pid: u32,
    /// The machine it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
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
    /// Writes the report durably (in etcd, fenced: only the leader's report lands).
    pub fn write(&self, store: &Store) -> Result<(), StoreError> {
        match store.remote() {
            Some(etcd) => etcd.save_report(&serde_json::to_value(self).unwrap_or_default()),
            None => {
                let text = serde_json::to_string_pretty(self).unwrap_or_default();
                write_atomic(&store.dir().join(FILE), text.as_bytes())
            }
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
            group.count();
        }
        status.balancers.clone_from(&self.balancers);
    }
}

/// The report of a controller that still runs (in etcd: of a project that has a leader),
/// if there is one.
pub fn read(store: &Store) -> Option<Report> {
    if let Some(etcd) = store.remote() {
        // The report of the controller that leads now: not one a dead leader left.
        let leader = etcd.leader().ok().flatten()?;
        let report: Report = serde_json::from_value(etcd.report().ok().flatten()?).ok()?;
        let same = report.pid == leader.pid
            && report.listen == leader.listen
            && report.host.as_deref() == Some(leader.host.as_str());
        return same.then_some(report);
    }
    let text = std::fs::read_to_string(store.dir().join(FILE)).ok()?;
    let report: Report = serde_json::from_str(&text).ok()?;
    let alive = crate::procfs::stat(report.pid).is_some_and(|s| !s.is_zombie());
    alive.then_some(report)
}

/// Removes the report of the local store (when the controller stops); in etcd the next
/// leader's report replaces it.
pub fn clear(store: &Store) {
    if store.remote().is_none() {
        let _ = std::fs::remove_file(store.dir().join(FILE));
    }
}

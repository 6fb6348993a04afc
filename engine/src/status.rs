//! The status of a project: groups, slots, instances, health, outdated hashes and orphans.
//! `tend status --json` prints it; `tend run` serves it on `/status` with its own additions.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::exec::{render_instance, SecretSource};
use crate::health::probe;
use crate::provider::{InstanceState, Observed, ObservedInstance};
use crate::spec::{Spec, SpecHash};
use crate::store::{now_ms, Applied};

/// One instance.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// The provider's id.
    pub id: String,
    /// Its slot.
    pub slot: String,
    /// How the provider sees it.
    pub state: InstanceState,
    /// `healthy`, `unhealthy: why`, `no check`, or `-` for dead instances.
    pub health: String,
    /// Its spec hash.
    pub hash: String,
    /// True when its hash is not its group's.
    pub outdated: bool,
    /// Where it is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// One group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupStatus {
    /// Its name.
    pub name: String,
    /// How many instances the allocation asks for.
    pub wanted: usize,
    /// The current spec hash.
    pub hash: String,
    /// Allocated slots with no live instance.
    pub missing: Vec<String>,
    /// Its instances, by slot.
    pub instances: Vec<InstanceStatus>,
    /// Set by `tend run` when the group keeps failing, with why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<String>,
    /// Set by `tend run`: slots waiting out a backoff, with when they retry and why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backoff: BTreeMap<String, String>,
}

/// The whole status.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// The project.
    pub project: String,
    /// The serial of the applied spec, if any.
    pub serial: Option<u64>,
    /// How long ago it was applied.
    pub applied_ms_ago: Option<u64>,
    /// Every group of the spec.
    pub groups: Vec<GroupStatus>,
    /// Instances of the project that no group owns.
    pub orphans: Vec<InstanceStatus>,
}

async fn health_of(spec: &Spec, instance: &ObservedInstance, secret: &SecretSource) -> String {
    if !instance.state.is_live() {
        return "-".to_owned();
    }
    let Some(group) = spec.group(&instance.tags.group) else {
        return "-".to_owned();
    };
    let Some(health) = &group.flavor.health else {
        return "no check".to_owned();
    };
    let slot = group.allocation.parse_slot(&instance.tags.slot);
    let empty = Observed::new(&spec.project);
    match render_instance(&spec.project, group, &slot, &empty, secret.as_ref()) {
        Ok(rendered) => match rendered.probe {
            Some(p) => match probe(&p, health.timeout.to_std().min(Duration::from_secs(2))).await {
                Ok(()) => "healthy".to_owned(),
                Err(e) => format!("unhealthy: {e}"),
            },
            None => "no check".to_owned(),
        },
        Err(e) => format!("unknown: {e}"),
    }
}

fn instance_status(i: &ObservedInstance, health: String, current: Option<&str>) -> InstanceStatus {
    InstanceStatus {
        id: i.id.clone(),
        slot: i.tags.slot.clone(),
        state: i.state,
        health,
        hash: i.tags.hash.clone(),
        outdated: current != Some(i.tags.hash.as_str()),
        address: i.address.clone(),
    }
}

/// Builds the status of `spec` from `observed`, probing the health of live instances.
pub async fn build(
    spec: &Spec,
    observed: &Observed,
    applied: Option<&Applied>,
    secret: &SecretSource,
) -> Status {
    let mut groups = Vec::new();
    for group in &spec.groups {
        let hash = SpecHash::of(group).to_string();
        let mut instances = Vec::new();
        for (_, i) in observed.iter().filter(|(_, i)| i.tags.group == group.name) {
            let health = health_of(spec, i, secret).await;
            instances.push(instance_status(i, health, Some(&hash)));
        }
        instances.sort_by_key(|i| (group.allocation.parse_slot(&i.slot), i.id.clone()));
        let missing = group
            .slots()
            .into_iter()
            .filter(|s| {
                !instances
                    .iter()
                    .any(|i| i.slot == s.to_string() && i.state.is_live())
            })
            .map(|s| s.to_string())
            .collect();
        groups.push(GroupStatus {
            name: group.name.clone(),
            wanted: group.allocation.len(),
            hash,
            missing,
            instances,
            failing: None,
            backoff: BTreeMap::new(),
        });
    }
    let orphans = observed
        .iter()
        .filter(|(_, i)| spec.group(&i.tags.group).is_none())
        .map(|(_, i)| instance_status(i, "-".to_owned(), None))
        .collect();
    Status {
        project: spec.project.clone(),
        serial: applied.map(|a| a.serial),
        applied_ms_ago: applied.map(|a| now_ms().saturating_sub(a.applied_at)),
        groups,
        orphans,
    }
}

impl Status {
    /// The status for people.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let applied = match (self.serial, self.applied_ms_ago) {
            (Some(serial), Some(ago)) => format!("serial {serial}, applied {}s ago", ago / 1000),
            _ => "never applied".to_owned(),
        };
        let _ = writeln!(out, "project {} ({applied})", self.project);
        for g in &self.groups {
            let live = g.instances.iter().filter(|i| i.state.is_live()).count();
            let _ = writeln!(
                out,
                "\ngroup {}: {live}/{} live, hash {}",
                g.name, g.wanted, g.hash
            );
            if let Some(why) = &g.failing {
                let _ = writeln!(out, "  FAILING: {why}");
            }
            for i in &g.instances {
                let outdated = if i.outdated { " (outdated)" } else { "" };
                let address = i
                    .address
                    .as_deref()
                    .map(|a| format!(" at {a}"))
                    .unwrap_or_default();
                let state = format!("{:?}", i.state).to_lowercase();
                let _ = writeln!(
                    out,
                    "  {:<6} {:<18} {:<9} {}{address}{outdated}",
                    i.slot, i.id, state, i.health
                );
            }
            if !g.missing.is_empty() {
                let _ = writeln!(out, "  missing slots: {}", g.missing.join(", "));
            }
            for (slot, why) in &g.backoff {
                let _ = writeln!(out, "  slot {slot} backing off: {why}");
            }
        }
        if !self.orphans.is_empty() {
            let _ = writeln!(
                out,
                "\norphans (tagged with the project, owned by no group):"
            );
            for i in &self.orphans {
                let _ = writeln!(out, "  {} slot {} hash {}", i.id, i.slot, i.hash);
            }
        }
        out
    }
}
